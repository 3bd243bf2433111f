"""The process: storage, recorder, embedded mitmproxy and the query API in one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from addons.pipeline import Pipeline
from addons.recorder import Recorder
from proxy import otlp
from proxy.api import ApiContext, make_app
from proxy.events import EventHub
from proxy.metrics import Metrics
from proxy.mitm import EmbeddedProxy, publish_ca, start_proxy
from proxy.settings import Settings
from storage.base import StoreUnavailable
from storage.records import now
from storage.retention import run_retention
from storage.spool import Spool
from storage.sqlite import SqliteStore
from storage.writer import Writer

log = logging.getLogger("chatdebug")


@dataclass
class Sidecar:
    settings: Settings
    store: SqliteStore
    writer: Writer
    pipeline: Pipeline
    hub: EventHub
    proxy: EmbeddedProxy | None = None
    api: web.AppRunner | None = None
    traces: otlp.RunExporter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(cls, settings: Settings) -> Sidecar:
        store = SqliteStore(settings.sqlite_path)
        await store.open()
        spool = Spool(Path(f"{store.path}.spool"), settings.spool_max_bytes)
        writer = Writer(store, spool=spool)
        if spool and not await writer.recover():
            log.warning("the database does not take the spooled records yet: they stay spooled")
        try:
            if interrupted := await store.interrupt_open(now()):
                log.info("ended %d open run(s) of a previous process as interrupted", interrupted)
        except StoreUnavailable as e:  # recording spools until it is back; the chat goes on
            log.warning("could not end the previous process's open runs: %s", e)
        pipeline = Pipeline(
            writer.submit,
            retry_window=settings.retry_window,
            stale_after=settings.stale_after,
            profiles=settings.profiles,
        )
        sidecar = cls(settings, store, writer, pipeline, EventHub())
        try:
            await sidecar._start()
        except BaseException:
            await sidecar.stop()
            raise
        return sidecar

    async def _start(self) -> None:
        settings = self.settings
        metrics = Metrics(self.pipeline.counters, self.writer, self.store.size_bytes, self._ok)
        self.writer.listeners += [self.hub.committed, metrics.committed]
        self.traces = otlp.attach(settings, self.store, self.writer, metrics.registry)
        self.writer.start()
        self.pipeline.start()
        recorder = Recorder(
            self.pipeline, text_limit=settings.text_limit, capture_limit=settings.capture_limit
        )
        self.proxy = await start_proxy(settings, recorder)
        ctx = ApiContext(
            store=self.store,
            ca_path=publish_ca(settings.confdir),
            token=settings.api_token.get_secret_value() if settings.api_token else None,
            ready=self.ready,
            delete_runs=self.delete_runs,
            hub=self.hub,
            metrics=metrics.render,
            cors_origins=settings.cors_origins,
        )
        self.api = web.AppRunner(make_app(ctx), access_log=None, shutdown_timeout=1.0)
        await self.api.setup()
        host, port = settings.api_addr
        await web.TCPSite(self.api, host, port).start()
        if settings.retention_days:
            task = run_retention(self.writer, self.delete_runs, settings.retention_days)
            self.tasks.append(asyncio.create_task(task, name="chatdebug-retention"))

    async def delete_runs(self, run_ids: list[str]) -> list[str]:
        """Delete through the writer (after rows already queued), then forget and announce."""
        deleted = await self.writer.execute(lambda store: store.delete_runs(run_ids))
        self.pipeline.forget(deleted)
        self.hub.deleted(deleted)
        return deleted

    def _listening(self) -> bool:
        return self.proxy is not None and self.proxy.listening()

    def _ok(self) -> bool:
        return self._listening() and not self.writer.degraded and not self.writer.dropping()

    async def ready(self) -> dict[str, bool]:
        """The writer owns the database connection: its state says whether writes land."""
        return {
            "database": not self.writer.degraded,
            "proxy": self._listening(),
            "recording": not self.writer.dropping(),
        }

    async def stop(self) -> None:
        """New connections are refused, in-flight ones finish, every queued record lands."""
        if self.proxy is not None:
            await self.proxy.stop()
        if self.api is not None:
            await self.api.cleanup()  # no API call may wait on a writer that is going away
        for task in self.tasks:
            task.cancel()
        await self.pipeline.close()
        await self.writer.close()
        if self.traces is not None:  # after the writer: the last runs it committed go out too
            await self.traces.close()
        try:
            await self.store.interrupt_open(now())
        except Exception as e:  # the database is unavailable: the next start ends them
            log.warning("could not end open runs: %s", e)
        await self.store.close()

    def describe(self) -> str:
        assert self.proxy is not None and self.api is not None
        parts = []
        for server in self.proxy.server.servers:
            addrs = ",".join(f"{a[0]}:{a[1]}" for a in server.listen_addrs)
            parts.append(f"{server.mode.type_name}={addrs}")
        host, port = self.api.addresses[0][:2]
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
