"""The single writer: rows queue up without waiting and land in batched transactions.

`submit` never blocks and never raises, so the traffic path never waits for the database.
Snapshots of the same row inside one batch collapse to the newest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from storage.base import Store
from storage.records import Row

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Call:
    """A write that is not a row snapshot (deletes): run in order with the batches."""

    fn: Callable[[Store], Awaitable[Any]]
    done: asyncio.Future[Any]


class Writer:
    def __init__(self, store: Store, *, max_queue: int = 100_000, max_batch: int = 1_000) -> None:
        self.store = store
        self.max_batch = max_batch
        self._queue: asyncio.Queue[Row | _Call] = asyncio.Queue(max_queue)
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0
        self.failed_batches = 0
        self.last_batch_seconds = 0.0
        self.listeners: list[Callable[[list[Row], float], None]] = []  # told of each commit and its seconds

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chatdebug-writer")

    def submit(self, row: Row) -> None:
        try:
            self._queue.put_nowait(row)
        except asyncio.QueueFull:
            self.dropped += 1

    async def execute[T](self, fn: Callable[[Store], Awaitable[T]]) -> T:
        """Run `fn(store)` on the writer, after every row submitted before it."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Call(fn, done))
        return await done

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed (or given up on)."""
        await self._queue.join()

    async def close(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            if isinstance(item, _Call):
                await self._call(item)
                continue
            batch, call = [item], None
            while len(batch) < self.max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if isinstance(item, _Call):
                    call = item  # rows queued before it are written first
                    break
                batch.append(item)
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()
            if call is not None:
                await self._call(call)

    async def _call(self, call: _Call) -> None:
        try:
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
        for delay in (0.05, 0.2, 1.0, None):
            started = time.perf_counter()
            try:
                await self.store.write(rows)
            except Exception as e:
                if delay is None:
                    self.failed_batches += 1
                    self.dropped += len(rows)
                    log.error("could not store %d rows: %s", len(rows), e)
                    return
                await asyncio.sleep(delay)
                continue
            self.last_batch_seconds = time.perf_counter() - started
            self.written += len(rows)
            for listener in self.listeners:
                try:
                    listener(rows, self.last_batch_seconds)
                except Exception:
                    log.exception("a writer listener failed")
            return
