"""A real SQLite store filled with varied runs, and the API app over it, for API tests."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from addons.pipeline import Counters
from proxy.api.app import make_app
from proxy.api.context import ApiContext
from proxy.api.events import EventHub
from proxy.metrics import Metrics
from storage.backends import store_for
from storage.base import Store
from storage.records import AttemptRow, BodyRow, Row, RunRow, StepRow, timestamp
from storage.writer import Writer

KINDS = ["chat_turn", "chat_turn", "title_generation", "compaction", "quickgen"]
STATUSES = ["completed", "completed", "error", "interrupted", "in_progress"]
PROVIDERS = ["openai", "anthropic", "gemini"]
MODELS = {"openai": "gpt-4.1", "anthropic": "claude-sonnet-4-6", "gemini": "gemini-2.5-flash"}
BASE = time.time() - 3600  # an hour ago: inside the default stats window


def make_run(i: int, *, started: float | None = None, conversation: str | None = None) -> list[Row]:
    """Run i with one step and one or two attempts, its fields cycling through the enums."""
    provider = PROVIDERS[i % 3]
    status = STATUSES[i % 5]
    started = BASE + i if started is None else started
    run_id = f"run_{i:05d}_{int(started * 1000)}"
    error = {"class": "rate_limited", "message": "slow down"} if status == "error" else None
    run = RunRow(
        id=run_id,
        conversation_id=conversation or f"conv_{i % 4}",
        kind=KINDS[i % 5],
        classification_source="default",
        classification_reason="a conversational call",
        status=status,
        provider=provider,
        api="openai.chat_completions",
        model=MODELS[provider],
        endpoint="api.openai.com/v1/chat/completions",
        first_message=f"question number {i} about {'kyoto' if i % 2 else 'paris'}",
        started_at=timestamp(started),
        updated_at=timestamp(started + 2),
        finished_at=None if status == "in_progress" else timestamp(started + 2),
        step_count=1,
        attempt_count=2 if status == "error" else 1,
        input_tokens=100 + i,
        output_tokens=10,
        total_tokens=110 + i,
        error_class=error["class"] if error else None,
        error=error,
    )
    step = StepRow(
        id=f"stp_{run_id}",
        run_id=run_id,
        started_at=run.started_at,
        status=status,
        request={"api": "openai.chat_completions", "messages": []},
        response=None,
    )
    rows: list[Row] = [run, step]
    for n in range(1, run.attempt_count + 1):
        failed = error is not None
        rows.append(
            AttemptRow(
                id=f"att_{run_id}_{n}",
                step_id=step.id,
                run_id=run_id,
                number=n,
                status="failed" if failed else ("in_progress" if status == "in_progress" else "completed"),
                url="https://api.openai.com/v1/chat/completions",
                http_status=429 if failed else 200,
                error_class="rate_limited" if failed else None,
                error=error,
                started_at=timestamp(started + n / 10),
                finished_at=timestamp(started + 1),
                ttfb_ms=50.0 + i,
                duration_ms=100.0 + 10 * i,
                request_bytes=100,
                response_bytes=200,
            )
        )
        rows.append(
            BodyRow(id=f"att_{run_id}_{n}", request_body='{"api_key": "[REDACTED]"}', response_body="{}")
        )
    return rows


@dataclass
class SeededApi:
    store: Store
    writer: Writer
    hub: EventHub
    app: web.Application
    runs: list[RunRow]

    async def add(self, rows: list[Row]) -> None:
        for row in rows:
            self.writer.submit(row)
            if isinstance(row, RunRow):
                self.runs.append(row)
        await self.writer.flush()

    async def delete_runs(self, run_ids: list[str]) -> list[str]:
        deleted = await self.writer.execute(lambda store: store.delete_runs(run_ids))
        self.hub.deleted(deleted)
        self.runs = [r for r in self.runs if r.id not in deleted]
        return deleted

    async def close(self) -> None:
        await self.writer.close()
        await self.store.close()


async def seeded_api(
    tmp: Path,
    n: int = 40,
    *,
    token: str | None = None,
    cors: list[str] | None = None,
    database: str | None = None,
) -> SeededApi:
    """The API over a store of `n` runs: SQLite in `tmp`, or the `database` URL given."""
    store = store_for(database or f"sqlite:///{tmp / 'api.db'}")
    await store.open()
    writer = Writer(store)
    hub = EventHub(store.get_object)
    metrics = Metrics(Counters(), writer, store.size_bytes)
    writer.listeners += [hub.committed, metrics.committed]
    writer.start()
    seeded = SeededApi(store, writer, hub, web.Application(), [])
    ready = _ready(store)
    ctx = ApiContext(
        store=store,
        ca_path=tmp / "ca.pem",
        token=token,
        ready=ready,
        delete_runs=seeded.delete_runs,
        hub=hub,
        metrics=metrics.render,
        cors_origins=cors or [],
        heartbeat=0.2,
    )
    seeded.app = make_app(ctx)
    await seeded.add(list(itertools.chain.from_iterable(make_run(i) for i in range(n))))
    return seeded


def _ready(store: Store):  # type: ignore[no-untyped-def]
    async def ready() -> dict[str, bool]:
        await asyncio.sleep(0)
        return {"database": await store.ping(), "proxy": True}

    return ready
