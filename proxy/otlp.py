"""Push every finished run to an OpenTelemetry collector (OTLP over HTTP, protobuf).

Nothing here runs on the traffic path. The writer tells us of each commit; a run row whose
status is final puts the run's id on a bounded queue, and one task reads the run back from the
store, builds its spans (proxy/run_trace.py) and hands them to the SDK's OTLP/HTTP exporter in
a worker thread. While the collector is down the batch is retried with doubling waits up to
`retry_for` seconds; runs finishing meanwhile wait on the queue (ids only: the runs themselves
are in the database). Past the bound, or with the queue full, runs are dropped and counted; the
counts are plain integers, which `/metrics` reads (proxy/metrics.py, `chatdebug_otlp_*`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from proxy.run_trace import FINAL, resource, run_spans
from proxy.settings import Settings
from storage.base import RunFilter, Store
from storage.records import Row, RunRow
from storage.writer import Writer

if TYPE_CHECKING:
    from proxy.metrics import Metrics

log = logging.getLogger(__name__)

TRACES_PATH = "/v1/traces"


def traces_url(endpoint: str) -> str:
    """`--otlp-endpoint` is the collector's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT is; a URL
    that already names the traces path is taken as it is."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


class RunExporter:
    def __init__(
        self,
        store: Store,
        exporter: SpanExporter,
        *,
        content: bool = False,
        queue_size: int = 10_000,
        batch_runs: int = 32,
        max_spans: int = 512,
        linger: float = 1.0,
        retry_for: float = 300.0,
        first_backoff: float = 0.5,
        max_backoff: float = 30.0,
        res: Resource | None = None,
    ) -> None:
        self.store = store
        self.exporter = exporter
        self.content = content
        self.batch_runs = batch_runs
        self.linger = linger
        self.max_spans = max_spans  # per request: with content, 150 spans of a long run are ~4 MB
        self.retry_for = retry_for
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.resource = res or resource()
        self._queue: asyncio.Queue[str] = asyncio.Queue(queue_size)
        self._queued: OrderedDict[str, None] = OrderedDict()  # runs already taken, newest last
        self._task: asyncio.Task[None] | None = None
        self.exported_runs = 0
        self.exported_spans = 0
        self.retries = 0
        self.dropped: dict[str, int] = {"queue_full": 0, "export_failed": 0, "unreadable": 0}
        self._last_drop_log = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chatdebug-otlp")

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def committed(self, rows: list[Row], seconds: float = 0.0) -> None:
        """A writer listener: a run whose row turned final is queued for export, once."""
        for row in rows:
            if not isinstance(row, RunRow) or row.status not in FINAL or row.id in self._queued:
                continue
            self._queued[row.id] = None
            if len(self._queued) > 50_000:
                self._queued.popitem(last=False)
            try:
                self._queue.put_nowait(row.id)
            except asyncio.QueueFull:
                self._drop("queue_full", 1)

    async def flush(self) -> None:
        """Wait until every queued run is exported or counted as dropped."""
        await self._queue.join()

    async def close(self, grace: float = 5.0) -> None:
        """Export what is queued (for a while), then stop; what is left is counted as dropped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.flush(), grace)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if left := self._queue.qsize():
            self._drop("export_failed", left)
        await asyncio.to_thread(self.exporter.shutdown)

    # ---- the task -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            ids = [await self._queue.get()]
            if self.linger and self._queue.qsize() < self.batch_runs:
                await asyncio.sleep(self.linger)  # one request for many runs, not one each
            while len(ids) < self.batch_runs and not self._queue.empty():
                ids.append(self._queue.get_nowait())
            pending = len(ids)  # taken off the queue, neither sent nor counted yet
            try:
                built = await self._build(ids)
                pending = len(built)
                for chunk in _chunks(built, self.max_spans):
                    await self._export([span for spans in chunk for span in spans], len(chunk))
                    pending -= len(chunk)
            except asyncio.CancelledError:  # stopping: what was in hand is lost, and counted
                self._drop("export_failed", pending)
                raise
            except Exception:  # the task must live on: these runs are counted, the next are sent
                self._drop("export_failed", pending)
                log.exception("could not export %d run(s)", pending)
            finally:
                for _ in ids:
                    self._queue.task_done()

    async def _build(self, run_ids: list[str]) -> list[list[ReadableSpan]]:
        """Each run's spans; built in a worker thread, as a long run with content takes a while."""
        found: list[tuple[dict[str, Any], bool]] = []
        for run_id in run_ids:
            try:
                run = await self._settled(run_id)
                if run is not None:  # else deleted before we got to it
                    found.append((run, await self._after_compaction(run)))
            except Exception as e:
                self._drop("unreadable", 1)
                log.warning("could not read run %s for export: %s", run_id, e)
        built = await asyncio.to_thread(self._spans, found)
        if failed := len(found) - len(built):
            self._drop("unreadable", failed)  # counted here, on the loop, where every count changes
        return built

    def _spans(self, found: list[tuple[dict[str, Any], bool]]) -> list[list[ReadableSpan]]:
        built = []
        for run, compacted in found:
            try:
                built.append(run_spans(run, content=self.content, compacted=compacted, res=self.resource))
            except Exception:
                log.exception("could not turn run %s into spans", run.get("id"))
        return built

    async def _settled(self, run_id: str, tries: int = 10) -> dict[str, Any] | None:
        """The run detail once no attempt of it is still open (their last rows may land in the
        commit after the run's)."""
        run = None
        for _ in range(tries):
            run = await self.store.get_run(run_id)
            if run is None or not any(a["status"] == "in_progress" for a in _attempts(run)):
                break
            await asyncio.sleep(0.2)
        return run

    async def _after_compaction(self, run: dict[str, Any]) -> bool:
        """The run continues a conversation whose latest earlier turn or compaction was a compaction."""
        if not run.get("conversation_id") or run.get("kind") == "compaction":
            return False
        where = RunFilter(conversation_id=run["conversation_id"], until=run["started_at"])
        for earlier in await self.store.list_runs(where, 20, None):
            if earlier["kind"] in ("compaction", "chat_turn"):
                return bool(earlier["kind"] == "compaction")
        return False

    async def _export(self, spans: list[ReadableSpan], runs: int) -> None:
        deadline = time.monotonic() + self.retry_for
        backoff = self.first_backoff
        while True:
            result = await asyncio.to_thread(self.exporter.export, spans)
            if result is SpanExportResult.SUCCESS:
                self.exported_runs += runs
                self.exported_spans += len(spans)
                return
            if time.monotonic() + backoff > deadline:
                self._drop("export_failed", runs)
                return
            self.retries += 1
            log.debug("OTLP export failed; retrying in %.1fs", backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def _drop(self, reason: str, count: int) -> None:
        self.dropped[reason] += count
        now = time.monotonic()
        if now - self._last_drop_log >= 60:  # loud, but once a minute
            self._last_drop_log = now
            log.error("dropping runs from the OTLP export: %s (%s so far)", reason, self.dropped)


def _chunks(runs: list[list[ReadableSpan]], max_spans: int) -> Iterator[list[list[ReadableSpan]]]:
    """Runs grouped into requests of at most `max_spans` spans (a bigger run goes alone)."""
    chunk: list[list[ReadableSpan]] = []
    size = 0
    for spans in runs:
        if chunk and size + len(spans) > max_spans:
            yield chunk
            chunk, size = [], 0
        chunk.append(spans)
        size += len(spans)
    if chunk:
        yield chunk


def _attempts(run: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for step in run.get("steps") or []:
        yield from step.get("attempts") or []


def attach(settings: Settings, store: Store, writer: Writer, metrics: Metrics) -> RunExporter | None:
    """Export finished runs when an endpoint is set (`--otlp-endpoint`, or the standard
    OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT, whose headers, timeout and TLS variables the SDK reads)."""
    if not settings.exports_traces:
        return None
    # None: the SDK resolves the standard variable, appending /v1/traces to the generic one
    url = traces_url(settings.otlp_endpoint) if settings.otlp_endpoint else None
    exporter = RunExporter(
        store,
        OTLPSpanExporter(endpoint=url),
        content=settings.otlp_content,
        retry_for=settings.otlp_retry_seconds,
    )
    writer.listeners.append(exporter.committed)
    metrics.exporting(exporter)
    exporter.start()
    log.info("exporting finished runs to %s", url or "the OTEL_EXPORTER_OTLP endpoint")
    return exporter
