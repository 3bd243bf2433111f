"""The process: storage, recorder, embedded mitmproxy and the query API in one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import dataclass

from aiohttp import web

from addons.pipeline import Pipeline
from addons.recorder import Recorder
from proxy.api import ApiContext, make_app
from proxy.mitm import EmbeddedProxy, publish_ca, start_proxy
from proxy.settings import Settings
from storage.records import now
from storage.sqlite import SqliteStore
from storage.writer import Writer

log = logging.getLogger("chatdebug")


@dataclass
class Sidecar:
    settings: Settings
    store: SqliteStore
    writer: Writer
    pipeline: Pipeline
    proxy: EmbeddedProxy
    api: web.AppRunner

    @classmethod
    async def start(cls, settings: Settings) -> Sidecar:
        store = SqliteStore(settings.sqlite_path)
        await store.open()
        interrupted = await store.interrupt_open(now())
        if interrupted:
            log.info("ended %d open run(s) of a previous process as interrupted", interrupted)
        writer = Writer(store)
        writer.start()
        pipeline = Pipeline(
            writer.submit,
            retry_window=settings.retry_window,
            stale_after=settings.stale_after,
            profiles=settings.profiles,
        )
        pipeline.start()
        recorder = Recorder(pipeline, text_limit=settings.text_limit, capture_limit=settings.capture_limit)
        try:
            proxy = await start_proxy(settings, recorder)
        except Exception:
            await pipeline.close()
            await writer.close()
            await store.close()
            raise
        sidecar = cls(settings, store, writer, pipeline, proxy, web.AppRunner(web.Application()))
        token = settings.api_token.get_secret_value() if settings.api_token else None
        ctx = ApiContext(store=store, ca_path=publish_ca(settings.confdir), token=token, ready=sidecar.ready)
        sidecar.api = web.AppRunner(make_app(ctx), access_log=None)
        await sidecar.api.setup()
        host, port = settings.api_addr
        try:
            await web.TCPSite(sidecar.api, host, port).start()
        except OSError:
            await sidecar.stop()
            raise
        return sidecar

    def api_addr(self) -> tuple[str, int]:
        server = self.api.server
        sockets = getattr(self.api, "addresses", None)
        if sockets:
            host, port = sockets[0][:2]
            return str(host), int(port)
        raise RuntimeError(f"the API is not listening ({server})")

    async def ready(self) -> dict[str, bool]:
        return {"database": await self.store.ping(), "proxy": self.proxy.listening()}

    async def stop(self) -> None:
        """New connections are refused, in-flight ones finish, every queued record lands."""
        await self.proxy.stop()
        await self.pipeline.close()
        await self.writer.close()
        await self.api.cleanup()
        await self.store.interrupt_open(now())
        await self.store.close()

    def describe(self) -> str:
        parts = []
        for server in self.proxy.server.servers:
            addrs = ",".join(f"{a[0]}:{a[1]}" for a in server.listen_addrs)
            parts.append(f"{server.mode.type_name}={addrs}")
        host, port = self.api_addr()
        parts.append(f"api=http://{host}:{port}")
        parts.append(f"ca={self.settings.confdir / 'ca.pem'}")
        return "chatdebug ready " + " ".join(parts)


async def serve(settings: Settings) -> None:
    sidecar = await Sidecar.start(settings)
    print(sidecar.describe(), file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("stopping: finishing in-flight calls and flushing records")
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await sidecar.stop()
        log.info("stopped; %d rows written", sidecar.writer.written)
