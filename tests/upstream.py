"""A local LLM provider for tests: replays scripted replies byte for byte, over TLS or plain HTTP.

It runs in its own thread and loop so synchronous clients (SDKs, curl) and the sidecar process
can all talk to it. Tests queue `Reply`s; each incoming request takes the next one.
"""

from __future__ import annotations

import asyncio
import queue
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

FIXTURES = Path(__file__).parent / "fixtures"


@dataclass
class Gate:
    """Pause the reply here until `event` is set (or `timeout` passes)."""

    event: threading.Event
    timeout: float = 10.0


@dataclass
class Close:
    """Drop the connection here, without finishing the body."""


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[bytes | Gate | Close | float] = field(default_factory=list)  # float: sleep seconds

    @classmethod
    def sse(cls, body: bytes, *, split: int | None = None, status: int = 200) -> Reply:
        chunks: list[bytes | Gate | Close | float] = (
            [body[i : i + split] for i in range(0, len(body), split)] if split else [body]
        )
        return cls(status, {"Content-Type": "text/event-stream; charset=utf-8"}, chunks)

    @classmethod
    def json(cls, body: bytes, status: int = 200, **headers: str) -> Reply:
        return cls(status, {"Content-Type": "application/json", **headers}, [body])

    @classmethod
    def events(cls, events: list[bytes], status: int = 200) -> Reply:
        """One chunk per SSE event, as a provider flushes them."""
        return cls(status, {"Content-Type": "text/event-stream; charset=utf-8"}, list(events))


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Upstream:
    def __init__(self, ssl_context: ssl.SSLContext | None) -> None:
        self.ssl_context = ssl_context
        self.replies: queue.Queue[Reply] = queue.Queue()
        self.responder: Callable[[Seen], Reply] | None = None  # answers when no reply is queued
        self.seen: list[Seen] = []
        self.sent_first = threading.Event()  # set once any reply has flushed its first chunk
        self.port = 0
        self.plain_port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, daemon=True, name="upstream")

    # ---- test-facing ----------------------------------------------------------------------

    def push(self, *replies: Reply) -> None:
        for reply in replies:
            self.replies.put(reply)

    def reset(self) -> None:
        while not self.replies.empty():
            self.replies.get_nowait()
        self.seen.clear()
        self.sent_first.clear()
        self.responder = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def plain_url(self) -> str:
        return f"http://127.0.0.1:{self.plain_port}"

    def start(self) -> Upstream:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    # ---- server ---------------------------------------------------------------------------

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        tls = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        plain = web.TCPSite(runner, "127.0.0.1", 0)
        await tls.start()
        await plain.start()
        self.port = tls._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.plain_port = plain._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen = Seen(request.method, request.path_qs, dict(request.headers), body)
        self.seen.append(seen)
        if request.method == "GET" and request.path == "/ping":
            return web.Response(text="pong")
        try:
            reply = self.replies.get_nowait()
        except queue.Empty:
            if self.responder is None:
                return web.json_response({"error": {"message": "no reply scripted"}}, status=500)
            reply = self.responder(seen)
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        if (
            len(reply.chunks) == 1
            and isinstance(reply.chunks[0], bytes)
            and "event-stream" not in str(reply.headers.get("Content-Type"))
        ):
            response.content_length = len(reply.chunks[0])
        await response.prepare(request)
        first = True
        for chunk in reply.chunks:
            if isinstance(chunk, Gate):
                deadline = time.monotonic() + chunk.timeout
                while not chunk.event.is_set() and time.monotonic() < deadline:  # noqa: ASYNC110 (a thread's event)
                    await asyncio.sleep(0.005)
            elif isinstance(chunk, Close):
                assert request.transport is not None
                request.transport.abort()
                return response
            elif isinstance(chunk, float):
                await asyncio.sleep(chunk)
            else:
                await response.write(chunk)
                if first:
                    first = False
                    self.sent_first.set()
        await response.write_eof()
        return response
