"""Retention: runs idle longer than the retention period are deleted, in small batches.

Each batch is its own short transaction on the writer, so recording never waits long.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from storage.records import timestamp
from storage.writer import Writer

log = logging.getLogger(__name__)

DeleteRuns = Callable[[list[str]], Awaitable[list[str]]]


async def expire_once(writer: Writer, delete_runs: DeleteRuns, days: float, batch: int = 1000) -> int:
    """Delete every run whose `updated_at` is older than `days`; returns how many."""
    cutoff = timestamp(time.time() - days * 86_400)
    deleted = 0
    while ids := await writer.execute(lambda store: store.select_run_ids(updated_before=cutoff, limit=batch)):
        deleted += len(await delete_runs(ids))
        await asyncio.sleep(0)  # let queued rows in between batches
    return deleted


async def run_retention(writer: Writer, delete_runs: DeleteRuns, days: float, every: float = 3600.0) -> None:
    while True:
        try:
            if deleted := await expire_once(writer, delete_runs, days):
                log.info("retention: deleted %d runs idle for over %g days", deleted, days)
        except Exception:
            log.exception("retention pass failed")
        await asyncio.sleep(every)
