"""The process: storage, recorder, embedded mitmproxy and the query API in one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import signal
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from addons import offloop
from addons.pipeline import Pipeline
from addons.recorder import Recorder
from addons.redact import Redactor, install_log_redaction
from proxy import preflight
from proxy.api.app import make_app
from proxy.api.context import AnsweringStore, ApiContext
from proxy.api.events import EventHub
from proxy.ca import publish_ca
from proxy.metrics import Metrics
from proxy.mitm import EmbeddedProxy, start_proxy
from proxy.preflight import StartupError, reason
from proxy.settings import Settings
from storage.backends import store_for
from storage.base import Store
from storage.records import now
from storage.retention import end_previous_runs, run_folding, run_retention, run_sweep
from storage.spool import Spool
from storage.writer import LINGER, SHARED_LINGER, Writer

if TYPE_CHECKING:
    from proxy import otlp

log = logging.getLogger("chatdebug")


@dataclass
class Sidecar:
    settings: Settings
    store: Store
    writer: Writer
    pipeline: Pipeline
    hub: EventHub
    api_store: Store  # the store as the API reads it (`AnsweringStore`)
    proxy: EmbeddedProxy | None = None
    api: web.AppRunner | None = None
    traces: otlp.RunExporter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(cls, settings: Settings) -> Sidecar:
        redactor = Redactor()  # every row and log record passes it: secrets stop here
        install_log_redaction(redactor)
        preflight.check(settings)  # before migrations: a bad setting is one line, not a traceback
        # The store opens on the writer's first turn, or later: until then records are spooled
        # and /readyz says why. A previous process's open runs are ended once it takes writes.
        store = store_for(settings.database, replica=settings.replica_name)
        # a large run or step the recording reads back is decoded there, not on the loop (the
        # API's and viewer's reads ask for the reading threads)
        store.beside = offloop.writing
        spool = Spool(settings.spool_file, settings.spool_max_bytes)
        writer = Writer(
            store,
            spool=spool,
            max_batch=store.batch_rows,
            lanes=store.write_lanes,
            linger=SHARED_LINGER if settings.postgres else LINGER,
            scrub=redactor.row,
            beside=offloop.writing,
        )
        writer.retry(end_previous_runs(now()))
        pipeline = Pipeline(
            writer.submit,
            retry_window=settings.retry_window,
            stale_after=settings.stale_after,
            profiles=settings.profiles,
            prices=settings.prices,
            # bounded, and failing at once while the store is silent: a call waits on them
            recall=lambda run_id: writer.read(store.get_run(run_id)),
            history=lambda hashes, previous: writer.read(store.find_history(hashes, previous)),
            # through the writer: the step's last snapshot may still be waiting to be committed
            recall_step=functools.partial(writer.get_object, "step"),
            shared=settings.postgres,
        )
        api_store = AnsweringStore.of(store, lambda: writer.silent)
        replays = functools.partial(api_store.get_object, beside=offloop.reading)  # what /events replays
        sidecar = cls(settings, store, writer, pipeline, EventHub(replays), api_store)
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
        # a shared store: what the other replicas record reaches this one's event subscribers too
        self.store.watch(self.hub.committed, self.forget_runs)
        if settings.exports_traces:
            # imported only then: the OpenTelemetry SDK and its exporter cost memory for good
            from proxy import otlp

            self.traces = otlp.attach(settings, self.store, self.writer, metrics)
        self.writer.start()
        self.pipeline.start()
        recorder = Recorder(
            self.pipeline, text_limit=settings.text_limit, capture_limit=settings.capture_limit
        )
        self.proxy = await start_proxy(settings, recorder)
        ctx = ApiContext(
            store=self.api_store,
            ca_path=publish_ca(settings.confdir),
            token=settings.token,
            ready=self.ready,
            delete_runs=self.delete_runs,
            hub=self.hub,
            metrics=metrics.render,
            cors_origins=settings.cors_origins,
            reasons=self.writer.why_not_ready,
            allowed_hosts=settings.api_allowed_hosts,
            allow_anonymous=settings.api_allow_anonymous,
        )
        self.api = web.AppRunner(make_app(ctx), access_log=None, shutdown_timeout=1.0)
        await self.api.setup()
        host, port = settings.api_addr
        try:
            await web.TCPSite(self.api, host, port).start()
        except OSError as e:  # taken between the preflight check and now
            raise StartupError("api_addr", f"cannot listen on {host}:{port}: {reason(e)}") from None
        if settings.retention_days:
            task = run_retention(self.writer, self.delete_runs, settings.retention_days, self.forget_runs)
            self.tasks.append(asyncio.create_task(task, name="chatdebug-retention"))
        sweep = run_sweep(self.writer, settings.stale_after)
        self.tasks.append(asyncio.create_task(sweep, name="chatdebug-stale-sweep"))
        self.tasks.append(asyncio.create_task(run_folding(self.writer), name="chatdebug-rollup-folding"))

    async def delete_runs(self, run_ids: list[str]) -> list[str]:
        """Delete through the writer (after rows already queued), then forget and announce."""
        deleted = await self.writer.execute(lambda store: store.delete_runs(run_ids))
        self.forget_runs(deleted)
        return deleted

    def forget_runs(self, run_ids: list[str]) -> None:
        """Runs gone from the store (deleted here or by another replica, or dropped with their
        day): out of memory, and announced."""
        self.pipeline.forget(run_ids)
        self.hub.deleted(run_ids)

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
            await self.proxy.stop(self.settings.stop_grace)
        if self.api is not None:
            await self.api.cleanup()  # no API call may wait on a writer that is going away
        for task in self.tasks:
            task.cancel()
        await self.pipeline.close()
        await self.writer.close()
        if self.traces is not None:  # after the writer: the last runs it committed go out too
            await self.traces.close()
        if self.writer.degraded:  # the database is away or silent: the next start ends them
            log.warning("could not end open runs: %s", self.writer.unavailable)
        else:
            try:
                await self.writer.answered(self.store.interrupt_open(now()), "the end of open runs")
            except Exception as e:  # the database is unavailable: the next start ends them
                log.warning("could not end open runs: %s", e)
        await self.store.close()

    def describe(self) -> str:
        """The ready line: where to point clients, where the API and the records are, what to trust."""
        assert self.proxy is not None and self.api is not None
        parts = []
        for server in self.proxy.server.servers:
            for address in server.listen_addrs:
                url = f"http://{address[0]}:{address[1]}"
                if server.mode.type_name == "regular":
                    parts.append(f"proxy {url} (HTTPS_PROXY)")
                else:
                    parts.append(f"reverse {url} -> {server.mode.data}")
        host, port = self.api.addresses[0][:2]
        parts.append(f"api http://{host}:{port}")
        database = self.store.location if self.settings.postgres else self.settings.database_file
        parts.append(f"database {database}")
        parts.append(f"trust the CA: {(self.settings.confdir / 'ca.pem').absolute()}")
        return " · ".join(["chatdebug ready", *parts])


async def serve(settings: Settings) -> None:
    sidecar = await Sidecar.start(settings)
    # What start-up made (~100k objects: modules, schemas, the API's routes) lives as long as the
    # process: frozen, the cyclic collector stops walking it on every full collection, which
    # otherwise ran through all of it a few times a minute under load (~30 % of its time)
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before the ready line: a stop signalled on it is clean
        loop.add_signal_handler(sig, stop.set)
    sys.stderr.write(f"{sidecar.describe()}\n")  # one write: a log line from a thread cannot split it
    sys.stderr.flush()
    try:
        await stop.wait()
    finally:
        log.info("stopping: finishing in-flight calls and flushing records")
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)
        await sidecar.stop()
        log.info("stopped; %d rows written", sidecar.writer.written)
