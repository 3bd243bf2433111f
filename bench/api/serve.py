"""The API in a child process, as the sidecar serves it, and the client that times it.

python -m bench.api.serve URL    # prints the port, serves until stdin closes
"""

from __future__ import annotations

import asyncio
import http.client
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

from proxy.api.app import make_app
from proxy.api.context import ApiContext
from proxy.api.events import EventHub
from storage.backends import store_for

ROOT = Path(__file__).resolve().parents[2]


async def serve(url: str) -> None:
    """The real app over the store `url` names, on 127.0.0.1:0."""
    store = store_for(url)
    await store.open()

    async def ready() -> dict[str, bool]:
        return {"database": await store.ping(), "proxy": True}

    ctx = ApiContext(
        store=store,
        ca_path=Path(tempfile.gettempdir()) / "api_bench-no-ca.pem",
        token=None,
        ready=ready,
        delete_runs=store.delete_runs,
        hub=EventHub(store.get_object),
        metrics=lambda: b"",
    )
    runner = web.AppRunner(make_app(ctx), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await runner.cleanup()
    await store.close()


class Server:
    def __init__(self, url: str) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.api.serve", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.isdigit():
            self.stop()
            raise SystemExit(f"the API did not start (got {line!r})")
        self.port = int(line)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Client:
    """One keep-alive connection; a request is timed from sending to the last body byte."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def get(self, path: str) -> tuple[float, bytes]:
        t0 = time.perf_counter()
        self.conn.request("GET", path)
        response = self.conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter() - t0) * 1000
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:300]!r}")
        return elapsed, body


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
