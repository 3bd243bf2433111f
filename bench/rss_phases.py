"""Where a proxy's memory grows, phase by phase: bare mitmdump against chatdebug-proxy.

    .venv/bin/python bench/rss_phases.py            # about 40 s on 2 cores

The proxy bench's peak RSS is one number; this asks when it comes. Each target starts fresh
(`bench/proxy_bench.py`'s processes, upstream and calls), idles a second, then takes the
sequential calls one at a time (RSS after 1, 10, 100 and 300 of them) and the throughput load
twice (32 keep-alive clients, 2,000 calls each). Growth that mitmdump shows too is the proxy's
(connections, TLS, the allocator); the rest is the recording: what its first call loads, what
the runs it keeps for the retry rules (`addons/tracker.py` `MAX_SETTLED`, two retry windows)
and its bounded caches hold. `--retry-window 0.2` (passed on to `chatdebug run`) lets settled
runs go at once: the difference is what they take.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import proxy_bench as pb

SEQUENTIAL_MARKS = (1, 10, 100, 300)
COLUMNS = ("idle", *(f"{n} calls" for n in SEQUENTIAL_MARKS), "+2,000 @32", "+2,000 more")


def rss_mib(pid: int) -> float:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in (process, *process.children(recursive=True))) / 2**20


async def phases(ep: pb.Endpoint) -> list[float]:
    assert ep.pid is not None
    bodies, result, load = pb.Bodies(), pb.Result("phases"), pb.Load()
    marks = [rss_mib(ep.pid)]
    async with pb.client(ep, 1) as http:
        done = 0
        for mark in SEQUENTIAL_MARKS:
            while done < mark:
                await pb.complete(http, ep, bodies)
                done += 1
            await asyncio.sleep(0.3)  # what the call left, once recorded
            marks.append(rss_mib(ep.pid))
    for _ in range(2):
        await pb.concurrent(ep, load, bodies, result, None)
        await asyncio.sleep(0.5)
        marks.append(rss_mib(ep.pid))
    if result.errors:
        raise RuntimeError(f"calls failed: {dict(result.errors)}")
    return marks


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--targets", default="mitmdump,chatdebug", help="mitmdump and/or chatdebug")
    args, chatdebug_args = p.parse_known_args()
    workdir = Path(tempfile.mkdtemp(prefix="chatdebug-rss-"))
    certs = pb.Certs.make(workdir)
    upstream, port = pb.start_upstream(workdir, certs)
    url = f"https://127.0.0.1:{port}/v1/chat/completions"
    rows: list[tuple[str, list[float]]] = []
    try:
        for name in args.targets.split(","):
            if name == "mitmdump":
                service, proxy, ca = pb.start_mitmdump(workdir, certs)
                ep = pb.Endpoint(url, pb.trusting(ca), proxy, service.process.pid)
                label = pb.LABELS[name]
            else:
                service, proxy, ca, database = pb.start_chatdebug(workdir, certs, port, chatdebug_args)
                ep = pb.Endpoint(url, pb.trusting(ca), proxy, service.process.pid, database)
                label = " ".join([pb.LABELS["chatdebug"], *chatdebug_args])
            try:
                time.sleep(1)  # idle: start-up done
                rows.append((label, asyncio.run(phases(ep))))
            finally:
                service.stop()
    finally:
        upstream.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print("RSS in MiB after each phase (the whole process tree)\n")
    print("| target | " + " | ".join(COLUMNS) + " |")
    print("| --- |" + " --: |" * len(COLUMNS))
    for label, marks in rows:
        print(f"| {label} | " + " | ".join(f"{m:.1f}" for m in marks) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
