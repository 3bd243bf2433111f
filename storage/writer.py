"""The single writer: rows queue up without waiting and land in batched transactions.

`submit` never blocks and never raises, so the traffic path never waits for the database.
Snapshots of the same row inside one batch collapse to the newest.

The writer opens the store itself, on its first turn: a database that cannot be opened (locked,
read-only, not a database, gone) is never fatal. The writer is degraded until the store opens:
batches go to the spool, in order, probes retry with backoff, and the cause is logged once.
When a later write fails the same way, the writer turns degraded again; once the database
answers, the spool is replayed, still in order, and the writer carries on.

A store that commits several batches at once (PostgreSQL: one connection each) gets that many
lanes. Each run keeps to one lane, chosen by its conversation when the writer first sees it, so a
run's snapshots land in order and lanes seldom wait on each other's conversation locks; while
one lane's batch is on the server, another's is encoded. Deletes, replays and jobs wait until
every lane is idle, so they keep their place in the order of writes.

Every drop is counted under its reason (`DROP_REASONS`). Rows of a run deleted meanwhile are
expected and dropped quietly; any other drop is a loss: logged (once a minute) and reported
by `dropping()` to /readyz.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from storage import sql
from storage.base import Beside, Store, StoreSilent, StoreUnavailable, abandon, within
from storage.records import AttemptRow, Row, RunRow
from storage.spool import Spool

log = logging.getLogger(__name__)

Listener = Callable[[list[Row], float], None]
Job = Callable[[Store], Awaitable[list[Row]]]

DROP_REASONS = {
    "queue_full": "the write queue is full",
    "spool_full": "the spool is full or unwritable",
    "spool_torn": "a spooled line was torn (a crash or a full disk mid-append)",
    "refused": "the database refused a record",
    "writer_error": "an unexpected writer error",
    "run_deleted": "the run they belong to was deleted",
    "unscrubbable": "a record could not be scrubbed of secrets",
}
QUIET = frozenset({"run_deleted"})  # expected, not a loss
# Runs (and attempts, for their bodies) whose lane is remembered. A run forgotten had no row
# routed while this many other keys were first routed: more rows than the lanes ever hold
# (a batch in flight and about one waiting, each), so none of its rows is still in a lane,
# and a new lane for it cannot reorder its snapshots.
LANE_MEMORY = 50_000
# How long the writer waits for more rows after the first of a batch: one commit of twenty calls
# costs SQLite less than half the CPU per call of twenty commits. A store other replicas share
# waits less: a round-trip another replica receives before this one's commit is not yet known
# there (its tool loop would start a run of its own), so the window stays near a commit's time.
LINGER = 0.05
SHARED_LINGER = 0.01
READ_TIMEOUT = 5.0  # seconds a caller waits for a read through the writer (`get_object`, `read`)
# A write, probe, call or job still unanswered after this many seconds makes the writer ask the
# store whether it answers anything new (`Store.answers`: a fresh connection, a stat). A slow
# one (a long migration, a fold over many hours, a loaded server) is waited for as long as it
# takes. A server that has stopped answering (its host hangs, a network drops its packets) raises
# nothing and keeps its connections open: unbounded, the write in flight would hold the writer
# until the queue overflowed. Its call is abandoned (`abandon`), the store is away and silent
# until a probe is answered, and the rows are spooled. An abandoned write seldom lands after
# all: SQLite's one writer thread finishes it before the probe and the replay (or never runs
# it), and PostgreSQL rolls it back when psycopg closes its connection, unless its COMMIT was
# already sent, when the thawed server commits it as it resumes, in practice before a probe
# gets through. Were a replay to come first, a run still keeps its newer snapshot (`sql.py`),
# and a step, attempt or body takes its newer one with its next change.
STORE_TIMEOUT = 10.0


@dataclass(slots=True)
class _Call:
    """A write that is not a row snapshot (deletes), or a read of what rows wrote: run in order
    with the batches."""

    fn: Callable[[Store], Awaitable[Any]]
    done: asyncio.Future[Any]
    # a degraded store is probed for it at once (a delete); a read fails until the next probe
    # is due, so that calls coming fast (a retry each) do not probe the store in turn
    probe: bool = True


@dataclass(slots=True)
class _Lane:
    """Rows routed to one lane and not yet written, and the task writing them."""

    rows: list[Row] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    @property
    def idle(self) -> bool:
        # asked of the task, not kept beside it: an eager task may finish before it is stored
        return self.task is None or self.task.done()


class Writer:
    def __init__(
        self,
        store: Store,
        *,
        spool: Spool | None = None,
        max_queue: int = 20_000,
        max_batch: int = 1_000,
        probe_every: float = 2.0,
        max_probe_every: float = 30.0,
        linger: float = LINGER,
        lanes: int = 1,
        scrub: Callable[[Row], Row] | None = None,
        beside: Beside = asyncio.to_thread,
    ) -> None:
        self.store = store
        # every row on its way to the store, the spool and the listeners (the redactor): once
        # per row a batch keeps, so a call's first snapshots, superseded within it, cost nothing
        self.scrub = scrub
        # where a batch is scrubbed: never on the loop, whose traffic would wait for the longest
        # row (the redactor reads every string of 90,000 messages naming keys in ~0.6 s)
        self.beside = beside
        self.spool = spool
        self.max_batch = max_batch
        self.probe_every = probe_every
        self.max_probe_every = max_probe_every
        self.linger = linger
        self.read_timeout = READ_TIMEOUT
        self.store_timeout = STORE_TIMEOUT
        self.silent: str | None = None  # the store stopped answering: reads fail at once until a probe
        self._asking: asyncio.Future[bool] | None = None  # `Store.answers`, in flight
        # None wakes the loop: a lane found the store unavailable, so probes are due
        self._queue: asyncio.Queue[Row | _Call | None] = asyncio.Queue(max_queue)
        # someone awaits a call behind the rows (a read of what they wrote): no lingering
        self._calls_queued = 0
        self._hurry = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lanes = [_Lane() for _ in range(max(1, lanes))]
        # run and attempt ids -> their lane, kept in two generations (`LANE_MEMORY`)
        self._recent_lanes: dict[str, int] = {}
        self._earlier_lanes: dict[str, int] = {}
        self._room = asyncio.Event()  # a lane took rows off its buffer
        # Degraded until the first probe opens the store and replays what an earlier process spooled.
        self.degraded = True
        self.unavailable: str | None = "the database is being opened"
        self._probe_delay = probe_every
        self._next_probe = 0.0
        self._warned: str | None = None  # the cause last logged: logged once, not per probe
        self._jobs: list[Job] = []
        self._jobs_due = 0.0
        self.written = 0
        self.spooled = 0
        self.drops = dict.fromkeys(DROP_REASONS, 0)
        self.last_drop_at = 0.0
        self.last_drop_reason: str | None = None
        self._last_drop_log = 0.0
        self._quiet_logged: OrderedDict[str, None] = OrderedDict()  # runs whose quiet drop was logged
        self.last_batch_seconds = 0.0
        self.listeners: list[Listener] = []  # told of each commit and its seconds

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chatdebug-writer")

    def submit(self, row: Row) -> None:
        try:
            self._queue.put_nowait(row)
        except asyncio.QueueFull:
            self._drop(1, "queue_full")

    async def execute[T](self, fn: Callable[[Store], Awaitable[T]], *, probe: bool = True) -> T:
        """Run `fn(store)` on the writer, after every row submitted before it (see `_Call`)."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls_queued += 1
        self._hurry.set()
        try:
            await self._queue.put(_Call(fn, done, probe))
        except BaseException:
            self._calls_queued -= 1
            if not self._calls_queued:
                self._hurry.clear()
            raise
        return await done

    async def get_object(
        self, kind: str, object_id: str, current: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any] | None:
        """`Store.get_object` as the rows submitted before left it: a row the caller submitted
        (and let go of) is read back as submitted, not as last committed. Read from the store at
        once when `current` says what it holds is that; otherwise once the rows before are written
        (while the store is away, that fails: they are spooled)."""
        if current is not None:
            stored = await self.read(self.store.get_object(kind, object_id))
            if stored is not None and current(stored):
                return stored
        async with asyncio.timeout(self.read_timeout):  # a caller waits: a hung write must not hold it
            return await self.execute(lambda store: store.get_object(kind, object_id), probe=False)

    async def read[T](self, work: Awaitable[T]) -> T:
        """A read straight from the store (not behind the queued rows), for a caller that waits
        on it (a call being placed): bounded by `read_timeout`, and failing at once while the
        store is silent. A slow read is the caller's failure alone, unless the store answers
        nothing new either: then it is silent, as for a write."""
        if self.silent is not None:
            if asyncio.iscoroutine(work):
                work.close()
            raise StoreUnavailable(self.silent)
        try:
            return await within(work, self.read_timeout, "a read")
        except StoreSilent:
            if not await self._answers():  # slow alone, or silent?
                self._fall_silent(f"a read in {self.read_timeout:g} s")
            raise

    async def execute_rows(self, fn: Job) -> list[Row]:
        """`execute` for a write that returns the rows it changed: listeners are told of them."""

        async def tell(store: Store) -> list[Row]:
            started = time.perf_counter()
            rows = await fn(store)
            self._tell(rows, time.perf_counter() - started)
            return rows

        return await self.execute(tell)

    def retry(self, job: Job) -> None:
        """Run `job(store)` on the writer as soon as the store takes it, and again until it lands;
        listeners are told of the rows it returns."""
        self._jobs.append(job)
        self._jobs_due = 0.0

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def dropping(self, within: float = 60.0) -> bool:
        """Rows were lost lately: what /readyz reports."""
        return time.monotonic() - self.last_drop_at < within if self.last_drop_at else False

    def why_not_ready(self) -> dict[str, str]:
        """What /readyz says beside its checks."""
        why = {}
        if self.degraded:
            why["database"] = f"{self.store.location}: {self.unavailable}"
        if self.dropping() and self.last_drop_reason is not None:
            why["recording"] = f"records were dropped lately: {DROP_REASONS[self.last_drop_reason]}"
        return why

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
        if self.degraded and self.silent is None:  # a store that stopped answering would hold the stop
            await self._recover()

    # ---- the task -------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._route_queue()
        finally:
            for lane in self._lanes:
                if lane.task is not None:
                    lane.task.cancel()

    async def _route_queue(self) -> None:
        while True:
            if self.degraded and time.monotonic() >= self._next_probe:
                await self._settle()
                await self._recover()
            elif not self.degraded and self._jobs and time.monotonic() >= self._jobs_due:
                await self._settle()
                await self._run_jobs()
            await self._route_next()

    async def _route_next(self) -> None:
        """The queue's next item; rows are routed to the lanes a batch at a time. Its own call:
        nothing it takes (rows may carry ~1 MiB bodies, and a batch up to `max_batch` of them)
        is held once it returns, as a loop's variables would be until the next row comes."""
        try:
            item = await asyncio.wait_for(self._queue.get(), self._idle_timeout())
        except TimeoutError:
            return
        if item is None:
            self._queue.task_done()
            return
        if isinstance(item, _Call):
            await self._settle()
            await self._call(item)
            return
        batch, call = [item], None
        if self.linger and self._queue.qsize() < self.max_batch:
            # whatever the queue holds: a call submits its rows together, so a queue that is
            # not empty is no sign that a batch is full
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.linger):
                    await self._hurry.wait()
        while len(batch) < self.max_batch and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                self._queue.task_done()
                continue
            if isinstance(item, _Call):
                call = item  # rows queued before it are written first
                break
            batch.append(item)
        newest: dict[tuple[str, str], Row] = {}  # a row snapshotted twice is written once
        for row in batch:
            newest[(row.table, row.id)] = row
        for _ in range(len(batch) - len(newest)):
            self._queue.task_done()  # an older snapshot: its newer one is routed in its place
        for row in await self._scrubbed(list(newest.values())):
            self._lanes[self._lane(row)].rows.append(row)
        self._start_lanes()
        if call is not None:
            await self._settle()
            await self._call(call)
        # the queue holds what the lanes cannot take yet: the bound stays the queue's
        while sum(len(lane.rows) for lane in self._lanes) >= self.max_batch * len(self._lanes):
            self._room.clear()
            self._start_lanes()
            await self._room.wait()

    async def _scrubbed(self, rows: list[Row]) -> list[Row]:
        """The rows as `scrub` leaves them, scrubbed beside the loop in one hand-off. A row that
        cannot be scrubbed is lost, and counted."""
        if self.scrub is None:
            return rows
        try:
            scrubbed, failures = await self.beside(functools.partial(_scrub_each, self.scrub, rows))
        except Exception as e:  # the hand-off itself failed (its thread is gone): none is written
            scrubbed, failures = [], [e] * len(rows)
        for failure in failures:  # never an unscrubbable row
            self._drop(1, "unscrubbable", exc_info=failure)
            self._queue.task_done()
        return scrubbed

    def _start_lanes(self) -> None:
        for lane in self._lanes:
            if lane.rows and lane.idle:
                lane.task = asyncio.create_task(self._drain(lane), name="chatdebug-writer-lane")

    def _lane(self, row: Row) -> int:
        """The lane of a row's run: the one its first row went to."""
        if len(self._lanes) == 1:
            return 0
        key = sql.run_id(row) or row.id  # bodies name only their attempt: they follow its lane
        lane = self._recent_lanes.get(key)
        if lane is None:
            lane = self._earlier_lanes.pop(key, None)
            if lane is None:
                first = row.conversation_id if isinstance(row, RunRow) and row.conversation_id else key
                lane = zlib.crc32(first.encode()) % len(self._lanes)
            self._remember_lane(key, lane)
        if isinstance(row, AttemptRow) and self._recent_lanes.get(row.id) != lane:
            self._remember_lane(row.id, lane)
        return lane

    def _remember_lane(self, key: str, lane: int) -> None:
        """Two generations: a key not routed while the newer one filled up is forgotten."""
        self._recent_lanes[key] = lane
        if len(self._recent_lanes) >= LANE_MEMORY:
            self._earlier_lanes, self._recent_lanes = self._recent_lanes, {}

    async def _drain(self, lane: _Lane) -> None:
        """Write a lane's rows, a batch at a time, until it has none."""
        try:
            while lane.rows:
                batch, lane.rows = lane.rows[: self.max_batch], lane.rows[self.max_batch :]
                self._room.set()
                try:
                    await self._write(batch)
                except Exception:  # the lane must live on: these rows are counted, the next are written
                    self._drop(len(batch), "writer_error", exc_info=True)
                finally:
                    for _ in batch:
                        self._queue.task_done()
        finally:
            self._room.set()

    async def _settle(self) -> None:
        """Wait until every lane has written what was routed to it."""
        while True:
            self._start_lanes()  # (a lane whose task failed would keep its rows)
            if not (busy := [lane.task for lane in self._lanes if lane.task is not None and not lane.idle]):
                return
            await asyncio.wait(busy)

    def _idle_timeout(self) -> float | None:
        """How long to wait for rows before the next probe or job retry is due."""
        if self.degraded:
            due = self._next_probe
        elif self._jobs:
            due = self._jobs_due
        else:
            return None
        return max(0.001, due - time.monotonic())

    async def _call(self, call: _Call) -> None:
        self._calls_queued -= 1
        if not self._calls_queued:
            self._hurry.clear()
        try:
            if call.done.done():
                return  # its caller went away (a task cancelled on stop): nothing to run it for
            if self.degraded:  # spooled rows come first: a delete must not be undone by their replay
                if call.probe or time.monotonic() >= self._next_probe:
                    await self._recover()
                if self.degraded:
                    raise StoreUnavailable("the database is unavailable; records are being spooled")
            result = await self.answered(call.fn(self.store), "a call")
            if not call.done.done():
                call.done.set_result(result)
        except Exception as e:
            if not call.done.done():
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
            self._degrade(str(e))
            self._to_spool(rows)

    async def _commit_isolating(self, rows: list[Row]) -> None:
        """Commit; if the rows themselves are at fault, commit them one by one and drop the bad ones."""
        try:
            await self._commit(rows)
        except StoreUnavailable:
            raise
        except Exception:
            if len(rows) == 1:
                log.debug("dropped a record the database refused: %s %s", rows[0].table, rows[0].id)
                self._drop(1, "refused", exc_info=True)
                return
            for row in rows:
                await self._commit_isolating([row])

    async def _commit(self, rows: list[Row]) -> None:
        started = time.perf_counter()
        gone = await self.answered(self.store.write(rows), "a write")
        self.last_batch_seconds = time.perf_counter() - started
        if gone:
            self._drop_gone(gone)
            left_out = {id(r) for r in gone}
            rows = [r for r in rows if id(r) not in left_out]
        self.written += len(rows)
        self._tell(rows, self.last_batch_seconds)

    async def answered[T](self, work: Awaitable[T], what: str) -> T:
        """The store's answer, however slow, while it answers anything new (`STORE_TIMEOUT`);
        else `StoreSilent`, the work abandoned and the store away until a probe is answered."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self.store_timeout)
                if task in done:
                    return task.result()
                answers = await self._answers()
                if task.done():  # it ended while the store was asked: its answer stands
                    return task.result()
                if not answers:
                    break
        except asyncio.CancelledError:
            abandon(task)
            raise
        abandon(task)
        raise StoreSilent(self._fall_silent(f"{what} in {self.store_timeout:g} s"))

    async def _answers(self) -> bool:
        """`Store.answers`, asked once at a time however many calls wait (each would open a
        connection)."""
        if self._asking is None:
            self._asking = asyncio.ensure_future(self.store.answers())
        asking = self._asking
        try:
            answers = await asyncio.shield(asking)
        finally:
            if self._asking is asking and asking.done():
                self._asking = None
        return answers

    def _fall_silent(self, what: str) -> str:
        if self.silent is not None:  # the first call found unanswered names the silence
            return self.silent
        self.silent = f"the database did not answer {what}, nor anything new"
        self._degrade(self.silent)  # probed from now on: the answer to a probe ends the silence
        return self.silent

    def _tell(self, rows: list[Row], seconds: float) -> None:
        if not rows:
            return
        for listener in self.listeners:
            try:
                listener(rows, seconds)
            except Exception:
                log.exception("a writer listener failed")

    # ---- availability ---------------------------------------------------------------------

    def _degrade(self, cause: str) -> None:
        if not self.degraded:
            self._probe_delay = self.probe_every
            self._next_probe = time.monotonic() + self._probe_delay
            with contextlib.suppress(asyncio.QueueFull):  # a full queue wakes the loop anyway
                self._queue.put_nowait(None)
        self.degraded = True
        self.unavailable = cause
        if cause != self._warned:
            self._warned = cause
            log.warning(
                "the database at %s is unavailable (%s): records are spooled until it takes them; retrying",
                self.store.location,
                cause,
            )

    async def recover(self) -> bool:
        """Replay what an earlier process spooled (call before starting); True when nothing is left."""
        await self._recover()
        return not self.degraded

    async def _recover(self) -> None:
        """Open or probe the store, replay the spool into it in order, then run pending jobs;
        stay degraded, retrying later with backoff, if any of it fails."""
        self._next_probe = time.monotonic() + self._probe_delay
        replayed = 0
        try:
            if self.silent is not None and not await self._answers():  # bounded, unlike a probe
                raise StoreSilent(self.silent)
            await self.answered(self.store.probe(), "a probe")
            if self.spool is not None:
                self.spool.take_torn()  # counted once the replay has read the whole spool
                for rows in self.spool.batches(self.max_batch):
                    await self._commit_isolating(rows)
                    replayed += len(rows)
                self._drop(self.spool.take_torn(), "spool_torn")
                self.spool.clear()
        except Exception as e:
            self._degrade(str(e) or type(e).__name__)
            self._probe_delay = min(self._probe_delay * 2, self.max_probe_every)
            self._next_probe = time.monotonic() + self._probe_delay
            return
        self.degraded = False
        self.unavailable = None
        self.silent = None
        self._probe_delay = self.probe_every
        if self._warned is not None or replayed:
            log.info(
                "the database at %s takes records; %d spooled records replayed", self.store.location, replayed
            )
        self._warned = None
        await self._run_jobs()

    async def _run_jobs(self) -> None:
        while self._jobs:
            try:
                started = time.perf_counter()
                rows = await self.answered(self._jobs[0](self.store), "a job")
            except StoreUnavailable as e:
                self._degrade(str(e))
                return
            except Exception:
                log.exception("a storage job failed; it is retried")
                self._jobs_due = time.monotonic() + self.max_probe_every
                return
            self._jobs.pop(0)
            self._tell(rows, time.perf_counter() - started)

    # ---- drops --------------------------------------------------------------------------

    def _to_spool(self, rows: list[Row]) -> None:
        kept = 0
        if self.spool is not None:
            try:
                kept = self.spool.append(rows)
            except Exception as e:
                log.debug("spool append failed: %s", e)
            self._drop(self.spool.take_torn(), "spool_torn")
        self.spooled += kept
        self._drop(len(rows) - kept, "spool_full")

    def _drop_gone(self, rows: list[Row]) -> None:
        """Late rows of a deleted run: expected, so counted quietly (a debug line once per run)."""
        self._drop(len(rows), "run_deleted")
        for row in rows:
            run_id = sql.run_id(row)
            if run_id is None:
                continue  # bodies name only their attempt; its run is logged by its other rows
            if run_id not in self._quiet_logged:
                self._quiet_logged[run_id] = None
                if len(self._quiet_logged) > 1_000:
                    self._quiet_logged.popitem(last=False)
                log.debug("dropping late records of deleted run %s", run_id)

    def _drop(self, count: int, reason: str, *, exc_info: bool | BaseException = False) -> None:
        if count <= 0:
            return
        self.drops[reason] += count
        if reason in QUIET:
            return
        self.last_drop_at = now = time.monotonic()
        self.last_drop_reason = reason
        if now - self._last_drop_log >= 60:  # loud, but once a minute
            self._last_drop_log = now
            log.error(
                "dropping records: %s (%d dropped so far)",
                DROP_REASONS[reason],
                self.dropped,
                exc_info=exc_info,
            )


def _scrub_each(scrub: Callable[[Row], Row], rows: list[Row]) -> tuple[list[Row], list[Exception]]:
    """Every row scrubbed, and the errors of those that could not be (off the loop: the writer
    counts them there)."""
    scrubbed: list[Row] = []
    failures: list[Exception] = []
    for row in rows:
        try:
            scrubbed.append(scrub(row))
        except Exception as e:
            failures.append(e)
    return scrubbed, failures
