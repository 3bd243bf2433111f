"""The single writer: rows queue up without waiting and land in batched transactions.

`submit` never blocks and never raises, so the traffic path never waits for the database.
Snapshots of the same row inside one batch collapse to the newest.

When a write fails (the database is locked, read-only, full or gone) the writer turns
degraded: this batch and every later one go to the spool, in order, until the database
answers again; then the spool is replayed, still in order, and the writer carries on.
Rows are dropped only when the spool is full (or the queue is), and every drop is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from storage.base import Store, StoreUnavailable
from storage.records import Row
from storage.spool import Spool

log = logging.getLogger(__name__)

Listener = Callable[[list[Row], float], None]


@dataclass(slots=True)
class _Call:
    """A write that is not a row snapshot (deletes): run in order with the batches."""

    fn: Callable[[Store], Awaitable[Any]]
    done: asyncio.Future[Any]


class Writer:
    def __init__(
        self,
        store: Store,
        *,
        spool: Spool | None = None,
        max_queue: int = 20_000,
        max_batch: int = 1_000,
        probe_every: float = 2.0,
        linger: float = 0.01,
    ) -> None:
        self.store = store
        self.spool = spool
        self.max_batch = max_batch
        self.probe_every = probe_every
        self.linger = linger  # a short wait for more rows turns many tiny commits into few batches
        self._queue: asyncio.Queue[Row | _Call] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self.degraded = bool(spool)  # rows left from a previous process are replayed first
        self._next_probe = 0.0
        self.written = 0
        self.spooled = 0
        self.dropped = 0
        self.last_drop_at = 0.0
        self._last_drop_log = 0.0
        self.last_batch_seconds = 0.0
        self.listeners: list[Listener] = []  # told of each commit and its seconds

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chatdebug-writer")

    def submit(self, row: Row) -> None:
        try:
            self._queue.put_nowait(row)
        except asyncio.QueueFull:
            self._drop(1, "the write queue is full")

    async def execute[T](self, fn: Callable[[Store], Awaitable[T]]) -> T:
        """Run `fn(store)` on the writer, after every row submitted before it."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Call(fn, done))
        return await done

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def dropping(self, within: float = 60.0) -> bool:
        """Rows were dropped lately: what /readyz reports."""
        return time.monotonic() - self.last_drop_at < within if self.last_drop_at else False

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed, spooled or counted as dropped."""
        await self._queue.join()

    async def close(self) -> None:
        """Flush, then a last try to empty the spool; what stays spooled is replayed at next start."""
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.degraded:
            await self._recover()

    # ---- the task -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if self.degraded and time.monotonic() >= self._next_probe:
                await self._recover()
            try:
                item = await asyncio.wait_for(self._queue.get(), self.probe_every if self.degraded else None)
            except TimeoutError:
                continue
            if isinstance(item, _Call):
                await self._call(item)
                continue
            batch, call = [item], None
            if self.linger and self._queue.empty():
                await asyncio.sleep(self.linger)
            while len(batch) < self.max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if isinstance(item, _Call):
                    call = item  # rows queued before it are written first
                    break
                batch.append(item)
            try:
                await self._write(batch)
            except Exception:  # the task must live on: these rows are counted, the next are written
                self._drop(len(batch), "an unexpected writer error")
                log.exception("the writer could not handle a batch")
            finally:
                for _ in batch:
                    self._queue.task_done()
            if call is not None:
                await self._call(call)

    async def _call(self, call: _Call) -> None:
        try:
            if self.degraded:  # spooled rows come first: a delete must not be undone by their replay
                await self._recover()
                if self.degraded:
                    raise StoreUnavailable("the database is unavailable; records are being spooled")
            call.done.set_result(await call.fn(self.store))
        except Exception as e:
            call.done.set_exception(e)
        finally:
            self._queue.task_done()

    async def _write(self, batch: list[Row]) -> None:
        latest: dict[tuple[str, str], Row] = {}
        for row in batch:
            latest[(row.table, row.id)] = row
        rows = list(latest.values())
        if self.degraded:
            self._to_spool(rows)
            return
        try:
            await self._commit_isolating(rows)
        except StoreUnavailable as e:
            log.warning("database unavailable (%s): spooling records until it is back", e)
            self.degraded = True
            self._next_probe = time.monotonic() + self.probe_every
            self._to_spool(rows)

    async def _commit_isolating(self, rows: list[Row]) -> None:
        """Commit; if the rows themselves are at fault, commit them one by one and drop the bad ones."""
        try:
            await self._commit(rows)
        except StoreUnavailable:
            raise
        except Exception:
            if len(rows) == 1:
                self._drop(1, "a record the database refused")
                log.exception("dropped a record the database refused: %s %s", rows[0].table, rows[0].id)
                return
            for row in rows:
                await self._commit_isolating([row])

    async def _commit(self, rows: list[Row]) -> None:
        started = time.perf_counter()
        await self.store.write(rows)
        self.last_batch_seconds = time.perf_counter() - started
        self.written += len(rows)
        for listener in self.listeners:
            try:
                listener(rows, self.last_batch_seconds)
            except Exception:
                log.exception("a writer listener failed")

    async def recover(self) -> bool:
        """Replay what an earlier process spooled (call before starting); True when nothing is left."""
        await self._recover()
        return not self.degraded

    async def _recover(self) -> None:
        """Replay the spool into the database, in order; stay degraded if it still fails."""
        self._next_probe = time.monotonic() + self.probe_every
        if not await self.store.ping():
            return
        replayed = 0
        try:
            if self.spool is not None:
                for rows in self.spool.batches(self.max_batch):
                    await self._commit_isolating(rows)
                    replayed += len(rows)
                self.spool.clear()
        except Exception as e:
            log.debug("spool replay stopped: %s", e)
            return
        self.degraded = False
        if replayed:
            log.info("database available again: replayed %d spooled records", replayed)

    def _to_spool(self, rows: list[Row]) -> None:
        kept = 0
        if self.spool is not None:
            try:
                kept = self.spool.append(rows)
            except Exception as e:
                log.debug("spool append failed: %s", e)
        self.spooled += kept
        if kept < len(rows):
            self._drop(len(rows) - kept, "the spool is full or unwritable")

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        self.last_drop_at = now = time.monotonic()
        if now - self._last_drop_log >= 60:  # loud, but once a minute
            self._last_drop_log = now
            log.error("dropping records: %s (%d dropped so far)", why, self.dropped)
