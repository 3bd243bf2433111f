"""`/metrics` in Prometheus text format (prometheus-client).

Nothing here runs on the traffic path: counters the pipeline keeps as plain integers are read
at scrape time, and per-attempt histograms are fed from committed writer batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from addons.pipeline import Counters
from storage.records import AttemptRow, Row
from storage.writer import Writer

if TYPE_CHECKING:
    from proxy.otlp import RunExporter

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
BATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)


class _Snapshot(Collector):
    """Counts that live elsewhere as plain integers, read when Prometheus scrapes."""

    def __init__(self, counters: Counters, writer: Writer, ready: Callable[[], bool]) -> None:
        self.counters = counters
        self.writer = writer
        self.ready = ready
        self.exporter: RunExporter | None = None  # set when finished runs are pushed over OTLP

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        c, w = self.counters, self.writer
        yield CounterMetricFamily("chatdebug_flows_seen", "LLM calls the proxy saw", value=c.flows)
        yield CounterMetricFamily("chatdebug_flows_recorded", "LLM calls recorded", value=c.recorded)
        failed = CounterMetricFamily(
            "chatdebug_flows_not_recorded",
            "LLM calls that could not be recorded, by reason",
            labels=["reason"],
        )
        failed.add_metric(["pipeline_error"], c.failed)
        failed.add_metric(["queue_full"], c.dropped)
        failed.add_metric(["hook_error"], c.hook_errors)
        yield failed
        yield CounterMetricFamily(
            "chatdebug_requests_not_read",
            "LLM calls recorded without reading their request body: the recorder was behind",
            value=c.unread,
        )
        yield CounterMetricFamily("chatdebug_rows_written", "rows committed to the database", value=w.written)
        dropped = CounterMetricFamily(
            "chatdebug_rows_dropped", "rows given up on, by reason", labels=["reason"]
        )
        for reason, count in w.drops.items():
            dropped.add_metric([reason], count)
        yield dropped
        yield CounterMetricFamily(
            "chatdebug_rows_spooled", "rows spooled while the database was down", value=w.spooled
        )
        yield GaugeMetricFamily(
            "chatdebug_database_degraded", "1 while writes go to the spool", value=float(w.degraded)
        )
        yield GaugeMetricFamily("chatdebug_writer_queue_depth", "rows waiting for the writer", value=w.depth)
        yield GaugeMetricFamily(
            "chatdebug_ready", "1 when /readyz would answer 200", value=float(self.ready())
        )
        if self.exporter is not None:
            yield from _exported(self.exporter)


def _exported(e: RunExporter) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    yield CounterMetricFamily(
        "chatdebug_otlp_runs_exported", "runs pushed to the collector", value=e.exported_runs
    )
    yield CounterMetricFamily(
        "chatdebug_otlp_spans_exported", "spans pushed to the collector", value=e.exported_spans
    )
    dropped = CounterMetricFamily(
        "chatdebug_otlp_runs_dropped", "finished runs given up on, by reason", labels=["reason"]
    )
    for reason, count in e.dropped.items():
        dropped.add_metric([reason], count)
    yield dropped
    yield CounterMetricFamily(
        "chatdebug_otlp_export_retries", "exports tried again after a failure", value=e.retries
    )
    yield GaugeMetricFamily("chatdebug_otlp_queue_depth", "finished runs waiting for export", value=e.depth)


class Metrics:
    def __init__(
        self,
        counters: Counters,
        writer: Writer,
        database_bytes: Callable[[], int],
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.registry = CollectorRegistry()
        self._snapshot = _Snapshot(counters, writer, ready)
        self.registry.register(self._snapshot)
        r = self.registry
        self.attempts = Counter(
            "chatdebug_attempts",
            "finished attempts by status and error class",
            ["status", "error_class"],
            registry=r,
        )
        self.duration = Histogram(
            "chatdebug_attempt_duration_seconds", "attempt duration", buckets=LATENCY_BUCKETS, registry=r
        )
        self.ttfb = Histogram(
            "chatdebug_attempt_ttfb_seconds",
            "time to the first response byte",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch = Histogram(
            "chatdebug_writer_batch_seconds",
            "time to commit one writer batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        Gauge("chatdebug_database_bytes", "database size on disk, WAL included", registry=r).set_function(
            lambda: float(database_bytes())
        )

    def exporting(self, exporter: RunExporter) -> None:
        """Finished runs are pushed over OTLP: its counts join the scrape."""
        self._snapshot.exporter = exporter

    def committed(self, rows: list[Row], seconds: float) -> None:
        """A writer listener: finished attempts feed the per-attempt metrics."""
        self.batch.observe(seconds)
        for row in rows:
            if isinstance(row, AttemptRow) and row.status != "in_progress":
                self.attempts.labels(row.status, row.error_class or "none").inc()
                if row.duration_ms is not None:
                    self.duration.observe(row.duration_ms / 1000)
                if row.ttfb_ms is not None:
                    self.ttfb.observe(row.ttfb_ms / 1000)

    def render(self) -> bytes:
        return generate_latest(self.registry)
