"""Seeding: the planned traffic goes through the product's own `addons.tracker.Tracker` (on a clock
the seed sets) and one `storage.writer.Writer` per database, each over `storage.backends.store_for`.

Runs interleave as they would in a month of traffic: each run is a generator of its calls, and
the calls of every open run are made in time order; the tracker is ticked as time passes, so
failures nobody retried end their runs in error and idle runs are interrupted, as in the sidecar.
Every database seeded in one pass receives the same rows, in the same batches.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import addons.tracker as tracker_module
from addons.tracker import Tracker
from bench.api.calls import RunCalls
from bench.api.traffic import ABSENT_TOPIC, RARE_TOPIC, TOPICS, RunPlan, Texts, plan_runs
from storage.backends import SQLITE, store_for
from storage.base import RunFilter, Store
from storage.records import AttemptRow, Row, RunRow
from storage.writer import Writer

TICK = 1.0  # seconds of traffic between tracker ticks, as the pipeline ticks
FOLD_EVERY = 1800.0  # seconds of traffic between two folds of the `/stats` rollups
FLUSH_ROWS = 20_000  # rows handed to the writers before the seed waits for them to commit
BATCH = 5_000  # rows per transaction (the writer coalesces snapshots of one row within a batch)
SAMPLE = 2_000  # ids kept of each kind, for the detail routes
OLDEST = 20_000  # keys kept from the oldest end, for the cursors that start there
Q_WORDS = (TOPICS[0], RARE_TOPIC, ABSENT_TOPIC)


@dataclass(slots=True)
class Catalog:
    """What the timed requests need of the data: ids to ask for, and keys to start cursors from."""

    runs: list[str] = field(default_factory=list)
    big_runs: list[str] = field(default_factory=list)  # >= 6 steps and >= 8 attempts
    attempts: list[str] = field(default_factory=list)
    conversations: list[str] = field(default_factory=list)
    oldest_runs: list[tuple[str, str]] = field(default_factory=list)  # (started_at, id), oldest first
    oldest_conversations: list[tuple[str, str]] = field(default_factory=list)  # (last_activity_at, id)
    q_hits: dict[str, int] = field(default_factory=dict)  # runs whose first message holds each word


@dataclass(slots=True)
class Seeded:
    end: float  # the time anchor: the newest traffic is just before it
    runs: int
    steps: int
    attempts: int
    conversations: int
    seconds: float
    catalog: Catalog


class Observer:
    """Watches the rows on their way to the writers and keeps what `Catalog` needs."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        # run id -> (started_at, updated_at, conversation_id, step_count, attempt_count): the last snapshot
        self.runs: dict[str, tuple[str, str, str | None, int, int]] = {}
        self.attempts = 0
        self.attempt_sample: list[str] = []
        self.q_hits = dict.fromkeys(Q_WORDS, 0)

    def see(self, row: Row) -> None:
        if isinstance(row, RunRow):
            if row.id not in self.runs:
                text = (row.first_message or "").lower()  # LIKE is case-blind for ASCII
                for word in Q_WORDS:
                    self.q_hits[word] += word in text
            self.runs[row.id] = (
                row.started_at, row.updated_at, row.conversation_id, row.step_count, row.attempt_count
            )  # fmt: skip
        elif isinstance(row, AttemptRow) and row.status == "in_progress" and row.finished_at is None:
            self.attempts += 1  # its first snapshot: each attempt counted once
            if len(self.attempt_sample) < SAMPLE:
                self.attempt_sample.append(row.id)
            elif (j := self.rng.randrange(self.attempts)) < SAMPLE:
                self.attempt_sample[j] = row.id

    def catalog(self) -> Catalog:
        rng = self.rng
        runs = self.runs
        ids = list(runs)
        last: dict[str, str] = {}
        for _, updated, conversation, _, _ in runs.values():
            if conversation is not None and updated > last.get(conversation, ""):
                last[conversation] = updated
        big = [r for r, (_, _, _, steps, attempts) in runs.items() if steps >= 6 and attempts >= 8]
        return Catalog(
            runs=rng.sample(ids, min(SAMPLE, len(ids))),
            big_runs=rng.sample(big, min(SAMPLE, len(big))),
            attempts=list(self.attempt_sample),
            conversations=rng.sample(sorted(last), min(SAMPLE, len(last))),
            oldest_runs=heapq.nsmallest(OLDEST, ((v[0], k) for k, v in runs.items())),
            oldest_conversations=heapq.nsmallest(OLDEST, ((v, k) for k, v in last.items())),
            q_hits=dict(self.q_hits),
        )


class Fanout:
    """The tracker's `submit`: every row to every writer, and to the observer."""

    def __init__(self, writers: list[Writer], observer: Observer) -> None:
        self.writers = writers
        self.observer = observer
        self.pending = 0

    def __call__(self, row: Row) -> None:
        self.observer.see(row)
        for writer in self.writers:
            writer.submit(row)
        self.pending += 1

    async def flush(self) -> None:
        await asyncio.gather(*(w.flush() for w in self.writers))
        self.pending = 0


class Clock:
    def __init__(self, rng: random.Random | None = None) -> None:
        self.now = 0.0
        self._rng = rng or random.Random(0)

    def __call__(self) -> float:
        return self.now

    def new_id(self, prefix: str) -> str:
        """`records.new_id` at the seed's time: ids carry the moment of the month they were made,
        as they would have (PostgreSQL partitions a run's rows by the day in its id)."""
        return f"{prefix}{int(self.now * 1000):012x}{self._rng.getrandbits(80):020x}"


# ---- where a database's seed is described, for --reuse ------------------------------------------


def meta_path(url: str) -> Path:
    if url.startswith(SQLITE):
        db = Path(url.removeprefix(SQLITE))
        return db.with_name(db.name + ".bench.json")
    key = hashlib.sha256(url.encode()).hexdigest()[:16]  # the URL may hold a password: not in a name
    return Path(tempfile.gettempdir()) / f"api_bench-{key}.json"


def save(url: str, attempts: int, seed_value: int, seeded: Seeded) -> None:
    meta_path(url).write_text(json.dumps({"attempts": attempts, "seed": seed_value, **asdict(seeded)}))


def reuse(url: str, attempts: int, seed_value: int) -> Seeded | None:
    meta = meta_path(url)
    if not meta.exists() or (url.startswith(SQLITE) and not Path(url.removeprefix(SQLITE)).exists()):
        return None
    data = json.loads(meta.read_text())
    if data.get("attempts") != attempts or data.get("seed") != seed_value:
        return None
    catalog = data.pop("catalog")
    for key in ("oldest_runs", "oldest_conversations"):
        catalog[key] = [tuple(k) for k in catalog[key]]
    fields = {k: data[k] for k in ("end", "runs", "steps", "attempts", "conversations", "seconds")}
    return Seeded(**fields, catalog=Catalog(**catalog))


# ---- the seed ---------------------------------------------------------------------------------------


def _remove_sqlite(url: str) -> None:
    if url.startswith(SQLITE):
        for suffix in ("", "-wal", "-shm"):
            Path(url.removeprefix(SQLITE) + suffix).unlink(missing_ok=True)


async def _fresh(url: str) -> Store:
    """An empty database with the product's schema (its migrations, as the sidecar applies them)."""
    store = store_for(url)
    await store.open()
    if await store.list_runs(RunFilter(), 1, None):
        await store.close()
        raise SystemExit(f"{store.location} holds runs already: give an empty database, or --reuse")
    return store


def _events(plans: list[RunPlan], calls: RunCalls) -> Iterator[tuple[float, Iterator[float]]]:
    """Every run's calls in time order: (when, the run whose call is due then)."""
    heap: list[tuple[float, int, Iterator[float]]] = []
    order = itertools.count()
    i = 0
    while i < len(plans) or heap:
        if i < len(plans) and (not heap or plans[i].started <= heap[0][0]):
            run = calls.attempts(plans[i])
            i += 1
            when = next(run, None)
            if when is not None:
                heapq.heappush(heap, (when, next(order), run))
            continue
        when, _, run = heapq.heappop(heap)
        yield when, run
        if (after := next(run, None)) is not None:
            heapq.heappush(heap, (after, next(order), run))


async def seed(urls: list[str], attempts: int, seed_value: int, end: float) -> dict[str, Seeded]:
    """Seed every database in `urls` with the same traffic, in one pass."""
    t0 = time.perf_counter()
    for url in urls:  # a SQLite file is seeded from scratch; another database must be empty
        _remove_sqlite(url)
    stores = [await _fresh(url) for url in urls]
    writers = [Writer(s, max_queue=FLUSH_ROWS * 3, max_batch=BATCH, linger=0) for s in stores]
    for writer in writers:
        writer.start()
    rng = random.Random(seed_value)
    texts = Texts(rng)
    plans, conversations = plan_runs(attempts, rng, texts, end)
    observer = Observer(random.Random(seed_value + 2))
    fanout = Fanout(writers, observer)
    clock = Clock(random.Random(seed_value + 3))
    tracker_module.new_id = clock.new_id  # this process seeds: its ids are the seed's
    tracker = Tracker(fanout, clock=clock)
    calls = RunCalls(tracker, fanout, rng, texts, conversations)
    last_tick = last_fold = -TICK
    report = max(1, attempts // 10)
    next_report = report
    for when, _ in _events(plans, calls):  # the generator makes the call once the clock is set
        clock.now = when
        if when - last_tick >= TICK:
            tracker.tick(when)
            last_tick = when
        if fanout.pending >= FLUSH_ROWS:
            await fanout.flush()
        if when - last_fold >= FOLD_EVERY:  # as the leader folds the rollups while traffic flows
            last_fold = when
            await fanout.flush()
            await asyncio.gather(*(w.execute(lambda store: store.fold_rollups()) for w in writers))
        if observer.attempts >= next_report:
            next_report += report
            took = time.perf_counter() - t0
            print(f"  seeded {observer.attempts:,} of {attempts:,} attempts ({took:.0f} s)", file=sys.stderr)
    await fanout.flush()
    for writer in writers:
        await writer.execute(lambda store: store.fold_rollups())
        await writer.close()
        if writer.dropped:
            raise SystemExit(f"the writer dropped {writer.dropped:,} rows: {writer.drops}")
    for store in stores:
        await store.close()
    catalog = observer.catalog()
    runs = observer.runs
    seeded = Seeded(
        end=end,
        runs=len(runs),
        steps=sum(v[3] for v in runs.values()),
        attempts=observer.attempts,
        conversations=len({v[2] for v in runs.values() if v[2] is not None}),
        seconds=time.perf_counter() - t0,
        catalog=catalog,
    )
    for url in urls:
        save(url, attempts, seed_value, seeded)
    return dict.fromkeys(urls, seeded)
