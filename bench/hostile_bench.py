"""Hostile responses through bare mitmdump and through chatdebug-proxy: time and memory.

Two responses no provider should send, each fetched a few times through each proxy:

- **flood**: a 50 MiB `text/event-stream` body without a single newline (no event ever ends),
  chunked, 64 KiB per write;
- **bomb**: a gzip body that decodes to 1 GiB (about 1 MiB on the wire), `application/json`.

The client reads the raw bytes (it never decodes the bomb). Per response: wall time from
sending the request to its last byte (median of the runs), the proxy's CPU over the runs and
its peak RSS (process tree, sampled every 50 ms; a fresh proxy process for each kind of
response). The goal: within 1.2x of bare mitmdump's
time and memory.

    .venv/bin/python bench/hostile_bench.py            # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import statistics
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.proxy_bench import (  # noqa: E402
    FAKE_KEY,
    MODEL,
    Certs,
    Service,
    TreeSampler,
    child_env,
    start_chatdebug,
    start_mitmdump,
    trusting,
)

FLOOD_BYTES = 50 << 20
WRITE = 64 << 10
BOMB_BYTES = 1 << 30
RUNS = 3
GOAL = 1.2
KINDS = ("flood", "bomb")
TARGETS = ("mitmdump", "chatdebug")
LABELS = {"mitmdump": "bare mitmdump", "chatdebug": "chatdebug-proxy"}


# ---- the upstream (its own process: `--serve`) ---------------------------------------------------


def gzip_bomb() -> bytes:
    block = b" " * (1 << 20)
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    return b"".join(z.compress(block) for _ in range(BOMB_BYTES >> 20)) + z.flush()


async def serve(cert: Path, key: Path) -> None:
    from aiohttp import web

    bomb = gzip_bomb()
    piece = b"x" * WRITE

    async def chat(request: web.Request) -> web.StreamResponse:
        kind = (await request.json()).get("metadata", {}).get("kind")
        if kind == "bomb":
            headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
            return web.Response(body=bomb, headers=headers)
        if kind != "flood":  # the warm-up call that opens the connection
            return web.json_response({"object": "chat.completion", "choices": []})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"data: ")
        for _ in range(FLOOD_BYTES // WRITE):
            await response.write(piece)
        await response.write_eof()
        return response

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"upstream ready port={port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def start_upstream(workdir: Path, certs: Certs) -> tuple[Service, int]:
    args = [sys.executable, __file__, "--serve", "--cert", str(certs.cert_file), "--key", str(certs.key_file)]
    service = Service.spawn("hostile-upstream", args, workdir, child_env())

    def ready() -> str | None:
        for line in service.log().splitlines():
            if line.startswith("upstream ready port="):
                return line.split("=", 1)[1]
        return None

    return service, int(service.wait_for(ready, 60, "ready line"))


# ---- the load ----------------------------------------------------------------------------------


@dataclass
class Measured:
    seconds: list[float] = field(default_factory=list)
    received: int = 0
    cpu: float = 0.0
    peak_rss: int = 0
    error: str | None = None


async def fetch(client: httpx.AsyncClient, url: str, kind: str) -> int:
    body = {"model": MODEL, "messages": [{"role": "user", "content": kind}], "metadata": {"kind": kind}}
    body["stream"] = kind == "flood"
    headers = {"Authorization": f"Bearer {FAKE_KEY}", "Content-Type": "application/json"}
    received = 0
    async with client.stream("POST", url, content=orjson.dumps(body), headers=headers) as response:
        async for chunk in response.aiter_raw():
            received += len(chunk)
    return received


async def measure(url: str, proxy: str, verify: ssl.SSLContext, pid: int, kind: str) -> Measured:
    out = Measured()
    timeout = httpx.Timeout(120.0)
    async with httpx.AsyncClient(proxy=proxy, verify=verify, trust_env=False, timeout=timeout) as client:
        await fetch(client, url, "small")  # the connection, open before the clock starts
        with TreeSampler(pid) as tree:
            cpu = tree.cpu_seconds()
            for _ in range(RUNS):
                started = time.perf_counter()
                try:
                    out.received = await asyncio.wait_for(fetch(client, url, kind), 180)
                except Exception as e:
                    out.error = f"{type(e).__name__}: {e}"[:120]
                    break
                out.seconds.append(time.perf_counter() - started)
            out.cpu = tree.cpu_seconds() - cpu
        out.peak_rss = tree.peak
    return out


def run_target(name: str, kind: str, workdir: Path, certs: Certs, port: int) -> Measured:
    """One kind of response through a fresh proxy process: its peak RSS is that response's."""
    url = f"https://127.0.0.1:{port}/v1/chat/completions"
    run_dir = workdir / f"{name}-{kind}"
    run_dir.mkdir()
    if name == "mitmdump":
        service, proxy, ca = start_mitmdump(run_dir, certs)
    else:
        service, proxy, ca, _ = start_chatdebug(run_dir, certs, port)
    try:
        return asyncio.run(measure(url, proxy, trusting(ca), service.process.pid, kind))
    finally:
        service.stop()


# ---- output -------------------------------------------------------------------------------------


def table(results: dict[str, dict[str, Measured]]) -> list[str]:
    lines = [
        f"| response | target | time p50 | proxy CPU / response | peak RSS | received | time ÷ mitmdump "
        f"| RSS ÷ mitmdump | within {GOAL}x |",
        "| --- | --- | --: | --: | --: | --: | --: | --: | --- |",
    ]
    for kind in KINDS:
        base = results.get("mitmdump", {}).get(kind)
        for name, by_kind in results.items():
            m = by_kind[kind]
            if m.error or not m.seconds:
                lines.append(f"| {kind} | {LABELS[name]} | failed: {m.error} | | | | | | |")
                continue
            p50 = statistics.median(m.seconds)
            cells = [f"{p50 * 1000:.0f} ms", f"{m.cpu / len(m.seconds) * 1000:.0f} ms"]
            cells += [f"{m.peak_rss / 2**20:.0f} MiB", f"{m.received / 2**20:.1f} MiB"]
            if base is not None and base.seconds and name != "mitmdump":
                time_ratio = p50 / statistics.median(base.seconds)
                rss_ratio = m.peak_rss / base.peak_rss
                met = "yes" if time_ratio <= GOAL and rss_ratio <= GOAL else "NO"
                cells += [f"{time_ratio:.2f}x", f"{rss_ratio:.2f}x", met]
            else:
                cells += ["", "", ""]
            lines.append(f"| {kind} | {LABELS[name]} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cert", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--key", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        asyncio.run(serve(args.cert, args.key))
        return 0
    with tempfile.TemporaryDirectory(prefix="chatdebug-hostile-") as tmp:
        workdir = Path(tmp)
        certs = Certs.make(workdir)
        upstream, port = start_upstream(workdir, certs)
        try:
            results: dict[str, dict[str, Measured]] = {name: {} for name in TARGETS}
            for kind in KINDS:
                for name in TARGETS:
                    print(f"... {kind} through {LABELS[name]}", file=sys.stderr, flush=True)
                    results[name][kind] = run_target(name, kind, workdir, certs, port)
        finally:
            upstream.stop()
    print(
        f"Hostile responses, {RUNS} of each through each proxy: flood = {FLOOD_BYTES >> 20} MiB of "
        f"event stream without a newline; bomb = gzip decoding to {BOMB_BYTES >> 30} GiB\n"
    )
    print("\n".join(table(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
