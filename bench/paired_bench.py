"""Two or more proxy set-ups side by side, in interleaved rounds: CPU per call, req/s and p50.

    .venv/bin/python bench/paired_bench.py mitmdump chatdebug
    .venv/bin/python bench/paired_bench.py chatdebug "chatdebug --retry-window 0.2" --rounds 8

On a shared machine the speed drifts by a factor of two within minutes, so one run of each
set-up after the other (as `bench/proxy_bench.py` does) compares two different machines. Here
every set-up runs at once, idle while another is measured, and each round measures them all
in turn, in a rotating order: the median of the per-round ratios is what a change is worth.
A round is the proxy bench's throughput phase (32 keep-alive clients; CPU per call counted until
its rows have landed and half a second after, and req/s), then sequential calls on one
connection (p50 latency), with the proxy bench's upstream and client, bounded per round.
A set-up is `mitmdump` or `chatdebug`, followed by options of its own, and may start with
NAME=value words for its environment (`PYTHONPATH=<a checkout>` runs that checkout's code).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from proxy_bench import (
    Bodies,
    Certs,
    Endpoint,
    Load,
    Result,
    Service,
    TreeSampler,
    client,
    complete,
    concurrent,
    landed_attempts,
    machine,
    sequential,
    start_chatdebug,
    start_mitmdump,
    start_upstream,
    trusting,
    wait_landed,
)

SETTLE = 0.5  # seconds after a round's load: the recording's tail (the last commit) is counted


@dataclass
class Setup:
    label: str
    service: Service
    endpoint: Endpoint
    sampler: TreeSampler
    cpu_ms: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)  # sequential calls, one connection


def start(label: str, index: int, workdir: Path, certs: Certs, upstream_port: int) -> Setup:
    words = shlex.split(label)
    env = dict(w.split("=", 1) for w in itertools.takewhile(lambda w: "=" in w, words))
    kind, *extra = words[len(env) :]
    home = workdir / f"setup-{index}"
    home.mkdir()
    url = f"https://127.0.0.1:{upstream_port}/v1/chat/completions"
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)  # the child's environment is copied from ours as it starts
    try:
        if kind == "mitmdump":
            service, proxy, ca = start_mitmdump(home, certs, extra)
            endpoint = Endpoint(url, trusting(ca), proxy, service.process.pid)
        elif kind == "chatdebug":
            service, proxy, ca, database = start_chatdebug(home, certs, upstream_port, extra)
            endpoint = Endpoint(url, trusting(ca), proxy, service.process.pid, database)
        else:
            raise SystemExit(f"unknown set-up {kind!r}: mitmdump or chatdebug, then options")
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return Setup(label, service, endpoint, TreeSampler(service.process.pid))


async def one_round(setup: Setup, load: Load, bodies: Bodies) -> None:
    ep = setup.endpoint
    before = landed_attempts(ep.database) if ep.database is not None else 0
    cpu = setup.sampler.cpu_seconds()
    result = Result(setup.label)
    _, _, ok = await concurrent(ep, load, bodies, result, None)
    if ep.database is not None:  # the recording's work is done when its rows have landed
        await asyncio.to_thread(wait_landed, ep.database, before + load.clients + ok)
    await asyncio.sleep(SETTLE)
    if result.errors:
        raise SystemExit(f"{setup.label}: errors {dict(result.errors)}")
    setup.cpu_ms.append((setup.sampler.cpu_seconds() - cpu) * 1000 / (ok + load.clients))
    setup.rps.append(result.rps or 0.0)
    await sequential(ep, load, bodies, result)
    if result.errors:
        raise SystemExit(f"{setup.label}: errors {dict(result.errors)}")
    setup.p50_ms.append(statistics.median(result.seq_ms))


async def run(setups: list[Setup], rounds: int, load: Load) -> None:
    bodies = Bodies()
    for setup in setups:  # warm-up: imports, caches, the first priced call
        async with client(setup.endpoint, 4) as http:
            for _ in range(50):
                await complete(http, setup.endpoint, bodies)
    for r in range(rounds):
        order = setups[r % len(setups) :] + setups[: r % len(setups)]
        for setup in order:
            await one_round(setup, load, bodies)
        line = " · ".join(
            f"{s.label}: {s.cpu_ms[-1]:.2f} ms, {s.rps[-1]:.0f}/s, p50 {s.p50_ms[-1]:.2f} ms" for s in setups
        )
        print(f"round {r + 1}: {line}", file=sys.stderr, flush=True)


def report(setups: list[Setup]) -> str:
    base = setups[0]
    lines = [
        "| set-up | CPU/call | req/s @32 | seq p50 | CPU ÷ first | req/s ÷ first | p50 ÷ first |",
        "| --- | --: | --: | --: | --: | --: | --: |",
    ]

    def ratio(mine: list[float], theirs: list[float]) -> str:  # the median of per-round ratios
        return f"{statistics.median(a / b for a, b in zip(mine, theirs, strict=True)):.2f}x"

    for s in setups:
        lines.append(
            f"| {s.label} | {statistics.median(s.cpu_ms):.2f} ms | {statistics.median(s.rps):.0f} "
            f"| {statistics.median(s.p50_ms):.2f} ms | {ratio(s.cpu_ms, base.cpu_ms)} "
            f"| {ratio(s.rps, base.rps)} | {ratio(s.p50_ms, base.p50_ms)} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("setups", nargs="+", help='e.g. mitmdump "chatdebug --retry-window 0.2"')
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--calls", type=int, default=600, help="concurrent calls per set-up per round")
    p.add_argument("--sequential", type=int, default=100, help="then sequential calls, for the p50")
    args = p.parse_args()
    load = Load(warmup=5, sequential=args.sequential, concurrent=args.calls, concurrent_seconds=20.0)
    workdir = Path(tempfile.mkdtemp(prefix="chatdebug-paired-"))
    print("## Machine\n")
    print("\n".join(machine()), flush=True)
    certs = Certs.make(workdir)
    upstream, port = start_upstream(workdir, certs)
    setups: list[Setup] = []
    try:
        for i, label in enumerate(args.setups):
            setups.append(start(label, i, workdir, certs, port))
        started = time.monotonic()
        asyncio.run(run(setups, args.rounds, load))
        print(
            f"\n## {args.rounds} rounds of {args.calls} calls at {load.clients} clients "
            f"({time.monotonic() - started:.0f} s)\n"
        )
        print(report(setups))
    finally:
        for setup in setups:
            setup.service.stop()
        upstream.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
