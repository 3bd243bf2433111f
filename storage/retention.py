"""Retention, the stale sweep and rollup folding: periodic work on stored runs, each pass through
the writer.

Runs idle longer than the retention period are deleted, in small batches, each its own short
transaction on the writer, so recording never waits long. Runs the database still holds as
`in_progress` long after the proxy would have ended them (their last snapshot was dropped, or
a previous process died) are ended as `interrupted`, and listeners are told.

A pass that fails (the database is locked or gone) is retried soon, with backoff, never later
than the regular period. In a store many replicas share, a pass runs on the replica that leads
(`Store.leads`), so a month of runs is deleted once, not once per replica.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from storage.base import Store, StoreUnavailable
from storage.records import Row, RunRow, now, timestamp
from storage.writer import Job, Writer

log = logging.getLogger(__name__)

DeleteRuns = Callable[[list[str]], Awaitable[list[str]]]
SWEEP_MARGIN = 60.0  # past the stale threshold: the proxy's own sweep has had its chance


async def expire_once(
    writer: Writer,
    delete_runs: DeleteRuns,
    days: float,
    batch: int = 1000,
    forget: Callable[[list[str]], None] = lambda run_ids: None,
) -> int:
    """Delete every run whose `updated_at` is older than `days`; returns how many. A store
    partitioned by day drops whole days first (`forget` hears of their runs); the rest go in
    batches through `delete_runs`."""
    if not await writer.execute(lambda store: store.leads()):
        return 0
    cutoff = timestamp(time.time() - days * 86_400)
    dropped = await writer.execute(lambda store: store.drop_days(cutoff))
    if dropped:
        forget(dropped)
    deleted = len(dropped)
    while ids := await writer.execute(lambda store: store.select_run_ids(updated_before=cutoff, limit=batch)):
        deleted += len(await delete_runs(ids))
        await asyncio.sleep(0)  # let queued rows in between batches
    return deleted


def end_previous_runs(started: str) -> Job:
    """A writer job (`Writer.retry`) ending the runs a previous process left open: those not
    updated since this process started at `started` (and, in a shared store, recorded by this
    replica: the others' are theirs)."""

    async def job(store: Store) -> list[Row]:
        rows = await store.interrupt_open(now(), updated_before=started, own=True)
        if ended := _runs(rows):
            log.info("ended %d open run(s) of a previous process as interrupted", ended)
        return rows

    return job


async def sweep_once(writer: Writer, older_than: float) -> int:
    """End runs left `in_progress` with no update for `older_than` seconds, whichever replica
    recorded them (one that died cannot); returns how many."""
    if not await writer.execute(lambda store: store.leads()):
        return 0
    cutoff = timestamp(time.time() - older_than)
    rows = await writer.execute_rows(
        lambda store: store.interrupt_open(now(), updated_before=cutoff, own=False)
    )
    if ended := _runs(rows):
        log.info("ended %d run(s) idle for over %gs as interrupted", ended, older_than)
    return ended


async def fold_once(writer: Writer) -> bool:
    """Fold the `/stats` rollups' delta rows (on the leader); True when this replica did."""
    if not await writer.execute(lambda store: store.leads()):
        return False
    await writer.execute(lambda store: store.fold_rollups())
    return True


def _runs(rows: list[Row]) -> int:
    return sum(1 for r in rows if isinstance(r, RunRow))


async def periodically(
    name: str, once: Callable[[], Awaitable[object]], every: float, retry_first: float = 5.0
) -> None:
    """Run `once` every `every` seconds; after a failure, again after `retry_first`, doubling."""
    delay = retry_first
    while True:
        try:
            await once()
        except StoreUnavailable as e:  # the writer has said so, once: no warning per pass
            log.debug("%s: the database is unavailable (%s); retrying in %gs", name, e, min(delay, every))
        except Exception:
            log.exception("%s failed; retrying in %gs", name, min(delay, every))
        else:
            delay = retry_first
            await asyncio.sleep(every)
            continue
        await asyncio.sleep(min(delay, every))
        delay *= 2


async def run_retention(
    writer: Writer,
    delete_runs: DeleteRuns,
    days: float,
    forget: Callable[[list[str]], None],
    every: float = 3600.0,
) -> None:
    async def once() -> None:
        if deleted := await expire_once(writer, delete_runs, days, forget=forget):
            log.info("retention: deleted %d runs idle for over %g days", deleted, days)

    await periodically("retention", once, every)


async def run_sweep(writer: Writer, stale_after: float, every: float = 60.0) -> None:
    """End, in the database, runs the proxy would long have ended as stale."""

    await periodically(
        "stale sweep", lambda: sweep_once(writer, stale_after + SWEEP_MARGIN), min(every, stale_after)
    )


async def run_folding(writer: Writer, every: float = 60.0) -> None:
    """Keep the `/stats` rollups a few rows per hour and key (from a period after start: a
    starting process has nothing of its own to fold, and readers find unfolded rows anyway)."""
    await asyncio.sleep(every)
    await periodically("rollup folding", lambda: fold_once(writer), every)
