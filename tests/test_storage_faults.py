"""Storage under real faults: private files, a store that will not open, replaced and read-only
files, full disks, deleted runs, reused run ids, stale runs and hostile Last-Event-IDs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from proxy.api.events import EventHub, last_event_id
from storage.base import RunFilter, StoreUnavailable
from storage.records import AttemptRow, BodyRow, Row, RunRow, StepRow, now, timestamp
from storage.retention import end_previous_runs, periodically, sweep_once
from storage.spool import Spool, encode
from storage.sqlite import SqliteStore
from storage.writer import Writer
from tests.api_seed import SeededApi, seeded_api
from tests.faults import read_only, small_disk
from tests.test_api import read_events


def run(i: int, status: str = "in_progress", *, at: str = "2026-11-26T10:00:00.000Z", **kw: Any) -> RunRow:
    return RunRow(id=f"run_{i:04d}", kind="chat_turn", status=status, started_at=at, updated_at=at, **kw)


def tree(i: int, at: str = "2026-11-26T10:00:00.000Z") -> list[Row]:
    """A run with one step, one attempt and its bodies, all in progress."""
    return [
        run(i, at=at),
        StepRow(id=f"step_{i:04d}", run_id=f"run_{i:04d}", started_at=at),
        AttemptRow(id=f"att_{i:04d}", step_id=f"step_{i:04d}", run_id=f"run_{i:04d}", started_at=at),
        BodyRow(id=f"att_{i:04d}", request_body="{}"),
    ]


def stored(path: Path, sql: str = "SELECT id, status FROM runs") -> dict[str, Any]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute(sql).fetchall())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def until(check: Callable[[], bool | Awaitable[bool]], within: float = 10.0) -> None:
    """Wait for a condition the writer reaches in its own time (a bound, not a timing)."""
    async with asyncio.timeout(within):
        while True:
            result = check()
            if await result if isinstance(result, Awaitable) else result:
                return
            await asyncio.sleep(0.02)


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    old = os.umask(0o022)
    os.umask(old)
    yield lambda value: os.umask(value) and None
    os.umask(old)


async def started(path: Path, spool_bytes: int = 1 << 20, spool_path: Path | None = None) -> Writer:
    """A writer as the sidecar makes one: it opens the store itself, spooling until it can."""
    store = SqliteStore(str(path))
    writer = Writer(store, spool=Spool(spool_path or Path(f"{path}.spool"), spool_bytes), probe_every=0.05)
    writer.start()
    return writer


async def stop(writer: Writer) -> None:
    await writer.close()
    assert isinstance(writer.store, SqliteStore)
    await writer.store.close()


# ---- 0600 whatever the umask ------------------------------------------------------------------


@pytest.mark.parametrize("value", [0o000, 0o277, 0o777])
async def test_database_wal_shm_and_spool_are_private_whatever_the_umask(
    tmp_path: Path, umask: Callable[[int], None], value: int
) -> None:
    umask(value)
    db = tmp_path / "db.sqlite"
    writer = await started(db)
    writer.submit(run(1))
    await writer.flush()
    assert stored(db) == {"run_0001": "in_progress"}
    assert writer.spool is not None
    writer.spool.append([run(2)])  # the spool is created by its first append
    files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), writer.spool.path]
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    await stop(writer)


async def test_existing_loose_files_are_tightened_and_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "db.sqlite"
    writer = await started(db)
    writer.submit(run(1))
    await writer.flush()
    await stop(writer)
    spool = tmp_path / "db.sqlite.spool"
    spool.write_bytes(encode(run(2)))
    for path in (db, spool):
        path.chmod(0o644)
    caplog.set_level(logging.WARNING)
    writer = await started(db)
    await until(lambda: not writer.degraded)  # the spool left behind is replayed
    assert stored(db) == {"run_0001": "in_progress", "run_0002": "in_progress"}
    assert mode(db) == 0o600 and mode(Path(f"{db}-wal")) == 0o600
    assert sum("tightened to 0600" in r.message for r in caplog.records) == 2  # database, spool
    await stop(writer)


# ---- a store that will not open is not fatal ---------------------------------------------------


async def test_not_a_database_spools_warns_once_and_recovers_when_the_file_is_fixed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "db.sqlite"
    db.write_bytes(b"this is not a database, " * 200)
    caplog.set_level(logging.WARNING, logger="storage.writer")
    writer = await started(db)
    writer.submit(run(1))
    await writer.flush()
    assert writer.degraded and writer.spooled == 1
    probes = writer._probe_delay
    await until(lambda: writer._probe_delay >= 4 * probes)  # retried, with backoff
    assert "not a database" in writer.why_not_ready()["database"]
    assert str(db) in writer.why_not_ready()["database"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "storage.writer"]
    assert len(warnings) == 1 and str(db) in warnings[0] and "not a database" in warnings[0]
    db.unlink()  # someone moves the bad file away: the next probe creates a database there
    writer._next_probe = 0  # the backoff has grown past the test's patience
    await until(lambda: not writer.degraded)
    assert stored(db) == {"run_0001": "in_progress"}
    assert writer.why_not_ready() == {} and writer.dropped == 0
    await stop(writer)


async def test_exclusive_locking_mode_spools_until_released(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    writer = await started(db)
    writer.submit(run(1))
    await writer.flush()
    await stop(writer)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("COMMIT")  # in exclusive locking mode the lock outlives the transaction
    writer = await started(db)
    writer.submit(run(2))
    await writer.flush()
    assert writer.degraded and "locked" in (writer.unavailable or "")
    holder.close()
    await until(lambda: not writer.degraded)
    assert stored(db) == {"run_0001": "in_progress", "run_0002": "in_progress"}
    await stop(writer)


# ---- readers follow the file ----------------------------------------------------------------


async def test_reader_follows_a_replaced_database_file(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    writer = await started(db)
    writer.submit(run(1))
    await writer.flush()
    store = writer.store
    assert isinstance(store, SqliteStore)
    assert [r["id"] for r in await store.list_runs(RunFilter(), 10, None)] == ["run_0001"]

    other = SqliteStore(str(tmp_path / "other.sqlite"))
    await other.open()
    await other.write([run(9)])
    await other.close()
    os.replace(tmp_path / "other.sqlite", db)  # e.g. restored from a backup
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{db}{suffix}")
    assert [r["id"] for r in await store.list_runs(RunFilter(), 10, None)] == ["run_0009"]  # no write needed

    writer.submit(run(2))
    await writer.flush()
    await until(lambda: not writer.degraded)
    assert {r["id"] for r in await store.list_runs(RunFilter(), 10, None)} == {"run_0009", "run_0002"}
    await stop(writer)


async def test_under_eager_tasks_a_writer_that_spools_still_probes_and_recovers(tmp_path: Path) -> None:
    """mitmproxy runs its loop with eager tasks: a lane whose batch goes straight to the spool
    finishes before its task is even stored. The writer must still see it idle, and probe."""
    asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
    try:
        db = tmp_path / "db.sqlite"
        writer = await started(db)
        writer.submit(run(1))
        await writer.flush()
        for suffix in ("", "-wal", "-shm"):
            os.unlink(f"{db}{suffix}")
        for i in (2, 3):  # the first finds the file gone; the second is spooled without a wait
            writer.submit(run(i))
            await writer.flush()
        assert writer.degraded and writer.spooled >= 1
        await until(lambda: not writer.degraded)
        assert stored(db) == {"run_0002": "in_progress", "run_0003": "in_progress"}
        await stop(writer)
    finally:
        asyncio.get_running_loop().set_task_factory(None)


async def test_removed_database_is_recreated_and_the_reader_sees_the_new_one(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    writer = await started(db)
    writer.submit(run(1))
    await writer.flush()
    store = writer.store
    assert isinstance(store, SqliteStore)
    await store.list_runs(RunFilter(), 10, None)  # the reader is open on the first file
    for suffix in ("", "-wal", "-shm"):
        os.unlink(f"{db}{suffix}")
    with pytest.raises(StoreUnavailable):
        await store.list_runs(RunFilter(), 10, None)  # gone, not stale rows from a deleted file
    writer.submit(run(2))
    await writer.flush()
    await until(lambda: not writer.degraded)
    assert [r["id"] for r in await store.list_runs(RunFilter(), 10, None)] == ["run_0002"]
    assert mode(db) == 0o600
    await stop(writer)


async def test_read_only_at_start_recovers_once_writable(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    writer = await started(db)
    writer.submit(run(1))
    await writer.flush()
    await stop(writer)
    with read_only(db):
        writer = await started(db)
        writer.submit(run(2))
        await writer.flush()
        await until(lambda: writer.unavailable is not None and "readonly" in writer.unavailable)
        store = writer.store
        assert isinstance(store, SqliteStore)
        assert [r["id"] for r in await store.list_runs(RunFilter(), 10, None)] == ["run_0001"]  # reads go on
    writer._next_probe = 0
    await until(lambda: not writer.degraded)
    assert {r["id"] for r in await store.list_runs(RunFilter(), 10, None)} == {"run_0001", "run_0002"}
    await stop(writer)


# ---- interrupting a previous process's runs, and the stale sweep ------------------------------


async def test_interrupting_previous_runs_is_retried_until_it_lands(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    writer = await started(db)
    for row in tree(1, at="2026-11-26T10:00:00.000Z"):
        writer.submit(row)
    await writer.close()  # a process that died with run 1 open
    assert isinstance(writer.store, SqliteStore)
    await writer.store.close()

    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    store = SqliteStore(str(db))
    writer = Writer(store, spool=Spool(f"{db}.spool", 1 << 20), probe_every=0.05)
    told: list[Row] = []
    writer.listeners.append(lambda rows, _: told.extend(rows))
    writer.retry(end_previous_runs(now()))
    writer.start()
    fresh = now()
    for row in tree(2, at=fresh):  # this process's own run, started under the lock
        writer.submit(row)
    await writer.flush()
    await until(lambda: writer._probe_delay > 0.1)  # probes failed at least twice
    assert writer._jobs
    blocker.execute("ROLLBACK")
    blocker.close()
    await until(lambda: not writer._jobs)
    assert stored(db) == {"run_0001": "interrupted", "run_0002": "in_progress"}
    assert stored(db, "SELECT id, status FROM attempts") == {
        "att_0001": "interrupted",
        "att_0002": "in_progress",
    }
    assert {(r.table, r.id, r.status) for r in told if isinstance(r, RunRow | StepRow | AttemptRow)} >= {
        ("runs", "run_0001", "interrupted"),
        ("steps", "step_0001", "interrupted"),
        ("attempts", "att_0001", "interrupted"),
    }
    await stop(writer)


async def test_stale_sweep_ends_runs_the_database_still_holds_open_and_tells_listeners(
    tmp_path: Path,
) -> None:
    db = tmp_path / "db.sqlite"
    writer = await started(db)
    hub = EventHub(writer.store.get_object)
    writer.listeners.append(hub.committed)
    for row in [*tree(1, at=timestamp(time.time() - 3600)), *tree(2, at=now())]:
        writer.submit(row)
    await writer.flush()
    assert await sweep_once(writer, older_than=600) == 1
    assert stored(db) == {"run_0001": "interrupted", "run_0002": "in_progress"}
    assert stored(db, "SELECT id, status FROM steps") == {
        "step_0001": "interrupted",
        "step_0002": "in_progress",
    }
    sub = hub.subscribe(None, None)
    swept = [(e.type, orjson.loads(e.data)) async for e in hub.replay(0, sub) if e.run_id == "run_0001"]
    assert sorted((kind, data["status"]) for kind, data in swept) == [
        ("attempt", "interrupted"),
        ("run", "interrupted"),
        ("step", "interrupted"),
    ]
    assert next(d for k, d in swept if k == "attempt")["error"]["class"] == "canceled"
    assert await sweep_once(writer, older_than=600) == 0
    await stop(writer)


async def test_a_failed_pass_is_retried_soon_not_after_the_period() -> None:
    calls = 0

    async def once() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise StoreUnavailable("database is locked")

    task = asyncio.create_task(periodically("retention", once, every=3600, retry_first=0.01))
    try:
        await until(lambda: calls >= 3)
    finally:
        task.cancel()


# ---- a full disk under the spool --------------------------------------------------------------


def spooled_lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "the spool ends in a torn line"
    return data.splitlines()


async def test_full_disk_keeps_whole_lines_and_counts_every_row(tmp_path: Path) -> None:
    """A real full disk (a 256 KiB tmpfs) under the spool while the database is locked."""
    db = tmp_path / "db.sqlite"
    writer = await started(db)
    writer.submit(run(0))
    await writer.flush()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    with small_disk(tmp_path) as disk:
        filler = disk / "filler"
        filler.write_bytes(b"\0" * (256 * 1024 - 40 * 1024))  # about 40 KiB left for the spool
        assert isinstance(writer.store, SqliteStore)
        writer.spool = Spool(disk / "db.sqlite.spool", 1 << 30)  # the cap is not what stops it
        big = "x" * 3000
        for i in range(1, 41):  # about 120 KiB of rows, in several batches
            writer.submit(run(i, first_message=big))
            if i % 7 == 0:
                await writer.flush()
        await writer.flush()
        assert writer.degraded
        lines = spooled_lines(writer.spool.path)
        assert 0 < len(lines) == writer.spooled < 40
        assert writer.spooled + writer.drops["spool_full"] == 40
        filler.unlink()  # room again: the next append must not glue onto anything
        writer.submit(run(41, first_message=big))
        await writer.flush()
        assert len(spooled_lines(writer.spool.path)) == writer.spooled
        assert all(orjson.loads(line)["table"] == "runs" for line in spooled_lines(writer.spool.path))
        blocker.execute("ROLLBACK")
        blocker.close()
        await until(lambda: not writer.degraded)
        assert len(stored(db)) == 1 + writer.spooled
        assert writer.drops["spool_torn"] == 0
        await stop(writer)


def test_short_write_on_a_full_disk_is_cut_back_to_the_last_whole_line(tmp_path: Path) -> None:
    with small_disk(tmp_path, "64k") as disk:
        spool = Spool(disk / "spool", 1 << 30)
        rows = [run(i, first_message="y" * 1000) for i in range(100)]  # ~110 KiB, one append
        kept = spool.append(rows)
        lines = spooled_lines(spool.path)
        assert 0 < kept == len(lines) < 100
        assert [orjson.loads(line)["row"]["id"] for line in lines] == [r.id for r in rows[:kept]]
        assert spool.append(rows[kept:]) == 0  # still full: nothing kept, nothing torn
        assert len(spooled_lines(spool.path)) == kept


_UNDER_A_FILE_SIZE_LIMIT = """
import resource, signal, sys
from storage.records import RunRow
from storage.spool import Spool
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a killed process
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
spool = Spool(sys.argv[1], 1 << 30)
rows = [RunRow(id=f"run_{i:04d}", first_message="z" * 1000, started_at="t", updated_at="t") for i in range(60)]
print(spool.append(rows[:10]), spool.append(rows[10:]), spool.append(rows[:1]))
"""


def test_a_file_size_limit_stops_the_spool_at_a_whole_line(tmp_path: Path) -> None:
    """EFBIG past RLIMIT_FSIZE (in a child process): the same cut-back as a full disk."""
    path = tmp_path / "spool"
    done = subprocess.run(
        [sys.executable, "-c", _UNDER_A_FILE_SIZE_LIMIT, str(path)],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    first, second, third = map(int, done.stdout.split())
    lines = spooled_lines(path)
    assert first == 10 and 0 < second < 50 and third == 0
    assert len(lines) == first + second and path.stat().st_size <= 20_000


def test_a_torn_tail_is_cut_before_the_next_append_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "spool"
    path.write_bytes(encode(run(1)) + b'{"table": "runs", "row": {"id": "run_to')  # a crash mid-append
    spool = Spool(path, 1 << 20)
    assert spool.append([run(2)]) == 1
    assert [orjson.loads(line)["row"]["id"] for line in spooled_lines(path)] == ["run_0001", "run_0002"]
    assert spool.take_torn() == 1


async def test_a_torn_line_at_replay_is_skipped_and_counted(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite"
    spool = tmp_path / "db.sqlite.spool"
    spool.write_bytes(encode(run(7)) + encode(run(8)) + b'{"table": "runs", "row": {"id": "run_torn"')
    writer = await started(db)
    await until(lambda: not writer.degraded)
    assert stored(db) == {"run_0007": "in_progress", "run_0008": "in_progress"}
    assert writer.drops["spool_torn"] == 1 and writer.dropped == 1
    await stop(writer)


async def test_spool_path_is_used_as_given(tmp_path: Path) -> None:
    elsewhere = tmp_path / "spools" / "deep" / "chat.spool"
    db = tmp_path / "db.sqlite"
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    writer = await started(db, spool_path=elsewhere)
    writer.submit(run(1))
    await writer.flush()
    assert elsewhere.stat().st_size > 0 and not (tmp_path / "db.sqlite.spool").exists()
    blocker.execute("ROLLBACK")
    blocker.close()
    await until(lambda: not writer.degraded)
    assert stored(db) == {"run_0001": "in_progress"} and not elsewhere.exists()
    await stop(writer)


# ---- rows of a deleted run --------------------------------------------------------------------


async def test_late_rows_of_a_deleted_run_are_dropped_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "db.sqlite"
    writer = await started(db)
    told: list[Row] = []
    writer.listeners.append(lambda rows, _: told.extend(rows))
    for row in [*tree(1), *tree(2)]:
        writer.submit(row)
    await writer.flush()
    assert await writer.execute(lambda s: s.delete_runs(["run_0001"])) == ["run_0001"]
    with sqlite3.connect(db) as conn:  # another process deletes run 2: its ids are not remembered
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("DELETE FROM runs WHERE id = 'run_0002'")
    told.clear()
    caplog.set_level(logging.DEBUG, logger="storage.writer")
    for _ in range(3):  # late snapshots of both runs' step, attempt and bodies, beside a live run
        for row in [*tree(1)[1:], *tree(2)[1:], *tree(3)]:
            writer.submit(row)
        await writer.flush()
    assert stored(db) == {"run_0003": "in_progress"}
    assert writer.drops["run_deleted"] == 3 * 6
    assert writer.dropped == writer.drops["run_deleted"]
    assert not writer.degraded and not writer.dropping() and writer.why_not_ready() == {}
    assert {r.id for r in told} == {"run_0003", "step_0003", "att_0003"}  # no events for the deleted
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([r for r in caplog.records if "deleted run" in r.getMessage()]) == 2  # once per run
    await stop(writer)


# ---- reused run ids ---------------------------------------------------------------------------


async def test_a_snapshot_that_knows_less_never_moves_the_run_backwards(tmp_path: Path) -> None:
    """A run's snapshots are ordered by what they know (attempts, then time): a later process
    that took a run id up afresh, an old snapshot replayed late, or a replica that has not seen
    another one's steps cannot overwrite what the store has."""
    db = tmp_path / "db.sqlite"
    writer = await started(db)
    writer.submit(run(1, at="2026-11-26T10:00:00.000Z", step_count=5, attempt_count=7))
    await writer.flush()
    writer.submit(run(1, "completed", at="2026-11-27T08:00:00.000Z", step_count=1, attempt_count=1))
    await writer.flush()
    sql = "SELECT id, json_array(status, step_count, attempt_count, started_at, updated_at) FROM runs"
    assert orjson.loads(stored(db, sql)["run_0001"]) == [
        "in_progress", 5, 7, "2026-11-26T10:00:00.000Z", "2026-11-26T10:00:00.000Z"
    ]  # fmt: skip
    writer.submit(run(1, "completed", at="2026-11-27T09:00:00.000Z", step_count=6, attempt_count=9))
    await writer.flush()
    assert orjson.loads(stored(db, sql)["run_0001"]) == [
        "completed", 6, 9, "2026-11-26T10:00:00.000Z", "2026-11-27T09:00:00.000Z"
    ]  # fmt: skip
    # the same attempts known, an older time: the newer snapshot stays
    writer.submit(run(1, at="2026-11-27T08:30:00.000Z", step_count=6, attempt_count=9))
    await writer.flush()
    assert orjson.loads(stored(db, sql)["run_0001"])[0] == "completed"
    await stop(writer)


# ---- Last-Event-ID ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("42", 42), (" 42 ", 42), ("²", 0), ("٣", 0), ("9" * 5000, 0), (str(1 << 63), 0), ("-1", 0), ("", 0)],
)
def test_last_event_id_parsing(raw: str, expected: int) -> None:
    assert last_event_id(raw) == expected


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[SeededApi]:
    seeded = await seeded_api(tmp_path, n=3)
    yield seeded
    await seeded.close()


@pytest.mark.parametrize("raw", ["²", "9" * 5000, "1e9", "0x10"])
async def test_unparseable_last_event_id_replays_everything(
    api: SeededApi, aiohttp_client: Callable[..., Any], raw: str
) -> None:
    client: TestClient = await aiohttp_client(api.app)
    events = await read_events(client, 1, headers={"Last-Event-ID": raw})
    assert events and events[0][1] == "run"
