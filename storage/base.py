"""The one interface every storage backend implements (SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from storage.records import Row


class StoreUnavailable(Exception):
    """The database cannot take writes now (locked, read-only, full, gone): worth retrying later.
    Any other error from a write is about the rows themselves."""


class StoreSilent(StoreUnavailable):
    """The database did not answer in time: a server that stops answering (its host hangs, a
    network drops its packets) raises nothing and keeps its connections open."""


async def within[T](work: Awaitable[T], seconds: float, what: str) -> T:
    """`work`'s result, or `StoreSilent` after `seconds`: the work is then abandoned."""
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        abandon(task)
        raise
    if task in done:
        return task.result()
    abandon(task)
    raise StoreSilent(f"the database did not answer {what} within {seconds:g} s")


def abandon(task: asyncio.Future[Any]) -> None:
    """Cancel a store call and leave it to end by itself, never awaited again: psycopg gives up
    on a cancelled query within seconds, a SQLite call in its thread ends when the disk
    answers, and awaiting either could take as long as the silence."""
    task.cancel()
    task.add_done_callback(_ended)


def _ended(task: asyncio.Future[Any]) -> None:
    """An abandoned call has ended: how is of no interest to anyone."""
    if not task.cancelled():
        task.exception()


@dataclass(slots=True)
class RunFilter:
    kind: str | None = None
    status: str | None = None
    conversation_id: str | None = None
    provider: str | None = None
    model: str | None = None
    since: str | None = None
    until: str | None = None
    has_error: bool | None = None
    q: str | None = None


# runs a piece of work off the caller's event loop: a thread
Beside = Callable[[Callable[[], Any]], Awaitable[Any]]


class Store(Protocol):
    batch_rows: int  # rows per write the writer gathers at most: what this engine commits best
    write_lanes: int  # batches the writer may have in flight at once (one connection each)
    # where reads shape rows holding large texts (decoding their JSON): beside the caller's loop
    beside: Beside

    @property
    def location(self) -> str:
        """Where the data lives, for log messages (never credentials)."""
        ...

    async def open(self) -> None:
        """Connect and bring the schema up to date (raises `StoreUnavailable`). Optional: writes
        and probes open the store when it is not open yet."""

    async def close(self) -> None: ...

    async def answers(self) -> bool:
        """Whether the database answers something new now (a fresh connection), within a few
        seconds: tells a slow call from a server that has stopped answering altogether."""

    async def write(self, rows: list[Row]) -> list[Row]:
        """Upsert rows in one transaction (runs before steps before attempts). Rows whose run,
        step or attempt is gone (deleted) are left out, and returned."""

    async def interrupt_open(
        self, finished_at: str, updated_before: str | None = None, *, own: bool = True
    ) -> list[Row]:
        """End runs left `in_progress` (every one, or those not updated since `updated_before`)
        with their open steps and attempts; returns those rows as they now are. `own`: only the
        runs this replica recorded last (a shared store), not another live replica's."""

    async def leads(self) -> bool:
        """True when this replica runs the store's periodic work (retention, the stale sweep)
        now: one replica at a time does."""

    async def drop_days(self, idle_before: str) -> list[str]:
        """Retention by the day where the store is partitioned by day: drop the days whose runs
        are all idle since before `idle_before`; returns the run ids dropped (none elsewhere)."""

    async def fold_rollups(self) -> None:
        """Sum the `/stats` rollups' delta rows into one row per key and hour (the leader does,
        now and then: `storage/retention.py`)."""

    async def probe(self) -> None:
        """Raise `StoreUnavailable`, saying why, unless the database accepts writes now."""

    async def ping(self) -> bool:
        """True when the database answers and accepts writes."""

    async def list_runs(
        self, where: RunFilter, limit: int, cursor: tuple[str, str] | None
    ) -> list[dict[str, Any]]:
        """Runs newest first, keyset-paginated after (started_at, id)."""

    async def get_run(
        self, run_id: str, *, as_stored: bool = False, beside: Beside | None = None
    ) -> dict[str, Any] | None:
        """A run with its steps, each with its attempts; `as_stored`: their payloads (requests,
        responses) as the stored JSON text, `orjson.Fragment`s for a reader that only sends them on;
        `beside`: where large rows are decoded, when not the store's own `beside`."""

    async def get_object(
        self, kind: str, object_id: str, *, beside: Beside | None = None
    ) -> dict[str, Any] | None:
        """A run, step or attempt row (`kind`), shaped as its change event carries it."""

    async def get_attempt(
        self, attempt_id: str, *, as_stored: bool = False, beside: Beside | None = None
    ) -> dict[str, Any] | None:
        """An attempt with its raw (redacted, capped) bodies (`as_stored`, `beside`: as for `get_run`)."""

    async def attempt_bodies(self, run_id: str) -> dict[str, dict[str, Any]]:
        """The raw bodies of every attempt of a run, by attempt id (for exports)."""

    async def list_conversations(
        self, limit: int, cursor: tuple[str, str] | None, q: str | None = None
    ) -> list[dict[str, Any]]:
        """Conversations by last activity, newest first, keyset-paginated after (last_activity_at, id)."""

    async def stats(self, since: str, until: str) -> dict[str, Any]:
        """Counts, token sums, latency percentiles and error rates of runs started in [since, until)."""

    async def select_run_ids(
        self,
        *,
        conversation_id: str | None = None,
        started_before: str | None = None,
        updated_before: str | None = None,
        limit: int = 1000,
    ) -> list[str]:
        """Ids of runs matching every condition given (at most `limit`), read on the write connection."""

    async def delete_runs(self, run_ids: list[str]) -> list[str]:
        """Delete runs with everything under them, in one transaction; returns the ids that existed."""

    def watch(self, on_rows: Callable[[list[Row]], None], on_deleted: Callable[[list[str]], None]) -> None:
        """Report the rows and deletions other replicas commit to a shared store (a store only
        this process writes has none)."""

    def size_bytes(self) -> int:
        """Bytes the database occupies."""
