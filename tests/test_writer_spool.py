"""The writer when the database is locked, read-only or deleted: spool, replay in order, count drops."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import sqlite3
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from addons.redact import REDACTED, Learned, Redactor
from proxy.api.events import EventHub, ReplayFailed
from storage.base import StoreSilent, StoreUnavailable
from storage.records import AttemptRow, Row, RunRow, StepRow
from storage.spool import Spool
from storage.sqlite import SqliteStore
from storage.writer import Writer
from tests.faults import read_only

KEY = "sk-proj-PLANTEDkey0000000000000000000007"


def run(i: int, status: str = "in_progress") -> RunRow:
    stamp = f"2026-11-26T10:00:{i % 60:02d}.000Z"
    return RunRow(id=f"run_{i:04d}", kind="chat_turn", status=status, started_at=stamp, updated_at=stamp)


def statuses(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        return dict(conn.execute("SELECT id, status FROM runs").fetchall())


async def open_writer(tmp_path: Path, max_bytes: int = 1 << 20) -> tuple[SqliteStore, Writer, Spool]:
    store = SqliteStore(str(tmp_path / "db.sqlite"))
    await store.open()
    spool = Spool(tmp_path / "db.sqlite.spool", max_bytes)
    writer = Writer(store, spool=spool, probe_every=0.05)
    writer.start()
    return store, writer, spool


async def test_locked_database_spools_then_replays_in_order(tmp_path: Path) -> None:
    store, writer, spool = await open_writer(tmp_path)
    writer.submit(run(1))
    await writer.flush()
    blocker = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    writer.submit(run(1, "completed"))  # a newer snapshot of run 1 ...
    writer.submit(run(2))
    await writer.flush()
    assert writer.degraded and spool.size > 0
    writer.submit(run(2, "error"))  # ... and of run 2, while still degraded
    await writer.flush()
    blocker.execute("ROLLBACK")
    blocker.close()
    await writer.close()
    assert not writer.degraded and not spool
    assert statuses(tmp_path / "db.sqlite") == {"run_0001": "completed", "run_0002": "error"}
    assert writer.dropped == 0
    await store.close()


async def test_read_only_database_spools_and_recovers_once_writable(tmp_path: Path) -> None:
    """A file the OS will not let us write (immutable, which binds root too): spooled; once it
    is writable again, a fresh descriptor writes it (the one opened read-only never could)."""
    store, writer, spool = await open_writer(tmp_path)
    writer.submit(run(4))
    await writer.flush()
    with read_only(tmp_path / "db.sqlite"):
        await store.close()  # the next connection opens the file read-only
        writer.submit(run(5))
        await writer.flush()
        assert writer.degraded and spool
        assert "readonly" in (writer.unavailable or "")
        await asyncio.sleep(0.2)  # probes fail meanwhile
        assert writer.degraded
    await writer.close()
    assert statuses(tmp_path / "db.sqlite") == {"run_0004": "in_progress", "run_0005": "in_progress"}
    await store.close()


async def test_deleted_database_is_recreated_and_spool_replayed(tmp_path: Path) -> None:
    store, writer, spool = await open_writer(tmp_path)
    writer.submit(run(1))
    await writer.flush()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"db.sqlite{suffix}").unlink(missing_ok=True)
    writer.submit(run(2))  # SQLite would write into the unlinked file; the store refuses
    await writer.flush()
    assert writer.degraded and spool
    await writer.close()  # the probe reopens a fresh database where the old one was
    assert statuses(tmp_path / "db.sqlite") == {"run_0002": "in_progress"}
    await store.close()


async def test_full_spool_drops_and_counts(tmp_path: Path) -> None:
    store, writer, spool = await open_writer(tmp_path, max_bytes=600)
    blocker = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    for i in range(20):
        writer.submit(run(i))
    await writer.flush()
    assert writer.degraded
    assert 0 < writer.spooled < 20
    assert writer.spooled + writer.dropped == 20
    assert writer.dropping()
    assert spool.size <= 600
    blocker.execute("ROLLBACK")
    blocker.close()
    await writer.close()
    assert len(statuses(tmp_path / "db.sqlite")) == writer.spooled
    await store.close()


async def test_spool_left_by_a_crash_is_replayed_at_start(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "db.sqlite.spool", 1 << 20)
    spool.append([run(7), run(8), run(7, "completed")])
    with (tmp_path / "db.sqlite.spool").open("ab") as f:
        f.write(b'{"table": "runs", "row": {"id": "run_torn"')  # the crash cut the last line
    store = SqliteStore(str(tmp_path / "db.sqlite"))
    await store.open()
    writer = Writer(store, spool=spool)
    assert await writer.recover()
    assert statuses(tmp_path / "db.sqlite") == {"run_0007": "completed", "run_0008": "in_progress"}
    assert not spool
    await store.close()


async def test_undecodable_header_bytes_are_stored_replaced(tmp_path: Path) -> None:
    """mitmproxy keeps undecodable header bytes as lone surrogates: stored, spooled and replayed."""
    store, writer, _ = await open_writer(tmp_path)
    row = AttemptRow(
        id="att_x", step_id="s", run_id="r", started_at="t", request_headers={"x-name": "caf\udce9"}
    )
    blocker = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    writer.submit(run(1))
    await writer.flush()
    assert writer.degraded
    writer.submit(run(2, "completed"))
    writer.submit(RunRow(id="run_caf\udce9", kind="chat_turn", started_at="t", updated_at="t"))
    await writer.flush()  # spooled, not a dead writer task
    blocker.execute("ROLLBACK")
    blocker.close()
    await writer.close()
    assert set(statuses(tmp_path / "db.sqlite")) == {"run_0001", "run_0002", "run_caf\ufffd"}
    assert writer.dropped == 0
    store2, writer2, _ = await open_writer(tmp_path / "fresh")
    writer2.submit(row)
    writer2.submit(run(3))
    await writer2.close()
    assert "run_0003" in statuses(tmp_path / "fresh" / "db.sqlite")
    await store.close()
    await store2.close()


async def test_a_call_whose_caller_went_away_does_not_stop_the_writer(tmp_path: Path) -> None:
    """A retention task cancelled on stop leaves its call queued: the writer skips it and goes on."""
    store, writer, _ = await open_writer(tmp_path)
    gate = asyncio.Event()

    async def slow(_: object) -> int:
        await gate.wait()
        return 1

    running = asyncio.create_task(writer.execute(slow))  # the writer is busy with this one
    abandoned = asyncio.create_task(writer.execute(lambda _: asyncio.sleep(0, result=2)))
    await asyncio.sleep(0.05)
    abandoned.cancel()
    running.cancel()  # cancelled while the writer runs it: its result has nowhere to go
    gate.set()
    writer.submit(run(1, "completed"))
    await asyncio.wait_for(writer.flush(), 5)
    assert writer._task is not None and not writer._task.done()
    assert statuses(Path(store.path)) == {"run_0001": "completed"}
    await writer.close()
    await store.close()


async def test_every_row_is_scrubbed_before_the_store_the_spool_and_listeners_see_it(tmp_path: Path) -> None:
    """The redactor runs in the writer: on the newest snapshot of each row in a batch, before it
    is stored, spooled or announced; a row it cannot scrub is dropped and counted, never written."""
    redactor = Redactor(Learned())
    scrubbed: list[str] = []

    def scrub(row: Row) -> Row:
        if isinstance(row, RunRow) and row.first_message == "explode":
            raise ValueError("unscrubbable")
        scrubbed.append(row.id)
        return redactor.row(row)

    store = SqliteStore(str(tmp_path / "db.sqlite"))
    await store.open()
    spool = Spool(tmp_path / "db.sqlite.spool", 1 << 20)
    writer = Writer(store, spool=spool, probe_every=0.05, scrub=scrub)
    told: list[Row] = []
    writer.listeners.append(lambda rows, _: told.extend(rows))
    writer.start()
    secret = f"my key is {KEY}"
    writer.submit(RunRow(id="run_1", first_message="hello", status="in_progress"))
    writer.submit(RunRow(id="run_1", first_message=secret, status="completed"))  # same batch
    writer.submit(RunRow(id="run_2", first_message="explode"))
    await writer.flush()
    assert scrubbed == ["run_1"]  # once: the older snapshot was superseded in its batch
    assert writer.drops["unscrubbable"] == 1 and writer.dropped == 1
    blocker = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the next rows go to the spool
    writer.submit(RunRow(id="run_3", first_message=secret))
    await writer.flush()
    assert writer.degraded and spool.size > 0
    assert KEY not in (tmp_path / "db.sqlite.spool").read_text()
    blocker.execute("ROLLBACK")
    blocker.close()
    await writer.close()
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        stored = dict(conn.execute("SELECT id, first_message FROM runs").fetchall())
    assert stored == {"run_1": f"my key is {REDACTED}", "run_3": f"my key is {REDACTED}"}
    assert [r.id for r in told] == ["run_1", "run_3"]
    assert all(KEY not in (r.first_message or "") for r in told)
    await store.close()


async def test_rows_are_scrubbed_beside_the_loop(tmp_path: Path) -> None:
    """The proxy's traffic shares the writer's loop, and one row may take the redactor a second
    (90,000 messages naming keys): a batch is scrubbed beside it. Proof: each scrub waits for a
    callback on the loop, which could never run were the scrub on the loop itself."""
    store = SqliteStore(str(tmp_path / "db.sqlite"))
    await store.open()
    loop = asyncio.get_running_loop()
    seen: list[tuple[str, bool]] = []  # (thread, whether the loop ran while it scrubbed)

    def scrub(row: Row) -> Row:
        loop_ran = threading.Event()
        loop.call_soon_threadsafe(loop_ran.set)
        loop_ran.wait(5)
        seen.append((threading.current_thread().name, loop_ran.is_set()))
        return row

    writer = Writer(store, scrub=scrub, max_batch=1000, linger=0)
    for i in range(3):
        writer.submit(run(i))
    writer.start()
    await writer.flush()
    assert writer.dropped == 0 and len(seen) == 3
    assert all(ran and thread != threading.current_thread().name for thread, ran in seen)
    await writer.close()
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (3,)
    await store.close()


async def test_rows_of_calls_close_together_share_one_commit(tmp_path: Path) -> None:
    """A call submits several rows at once: the writer still waits its linger for the next
    call's, so a busy proxy commits many calls per transaction (each commit costs far more CPU
    than a row), not one call each."""
    store = SqliteStore(str(tmp_path / "db.sqlite"))
    await store.open()
    batches: list[int] = []
    write = store.write

    async def counting(rows: list[Row]) -> list[Row]:
        batches.append(len(rows))
        return await write(rows)

    store.write = counting  # type: ignore[method-assign]
    writer = Writer(store, linger=0.2)
    writer.start()
    for call in range(3):
        for i in range(4):  # a call's run, step, attempt and body, submitted together
            writer.submit(run(call * 10 + i))
        await asyncio.sleep(0.02)
    await writer.flush()
    assert batches == [12] and len(statuses(tmp_path / "db.sqlite")) == 12
    await writer.close()
    await store.close()


async def test_a_read_behind_submitted_rows_sees_them_without_waiting_the_linger(tmp_path: Path) -> None:
    """`Writer.get_object` answers as the rows submitted before it left the store: a row that
    a commit has not reached yet is written first; and someone waits on that, so the batch is
    committed at once rather than after the linger."""
    store = SqliteStore(str(tmp_path / "db.sqlite"))
    await store.open()
    writer = Writer(store, linger=30)
    writer.start()
    await writer.flush()  # (opened: the first probe)
    writer.submit(run(1))
    await asyncio.sleep(0.05)  # the writer took it: lingering
    assert await store.get_object("run", "run_0001") is None
    stored = await asyncio.wait_for(writer.get_object("run", "run_0001"), 5)
    assert stored is not None and stored["id"] == "run_0001"
    await writer.close()
    await store.close()


async def test_a_read_while_the_store_is_away_fails_at_once_and_probes_only_when_due(tmp_path: Path) -> None:
    """Reads through the writer (a retry's step) come as fast as requests do: while the store is
    away each fails at once, as the rows are spooled, instead of probing the store in turn. A
    delete probes at once (its caller waits on it), and a read after the replay sees the rows."""
    store = SqliteStore(str(tmp_path / "db.sqlite"))
    await store.open()
    spool = Spool(tmp_path / "db.sqlite.spool", 1 << 20)
    writer = Writer(store, spool=spool, probe_every=30, linger=0)
    writer.start()
    await writer.flush()
    blocker = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
    writer.submit(run(1))
    await writer.flush()
    assert writer.degraded and spool.size > 0
    probes = 0
    probe = store.probe

    async def counting() -> None:
        nonlocal probes
        probes += 1
        await probe()

    store.probe = counting  # type: ignore[method-assign]
    for _ in range(20):
        with pytest.raises(StoreUnavailable):
            await asyncio.wait_for(writer.get_object("run", "run_0001"), 0.5)
    assert probes == 0
    blocker.execute("ROLLBACK")
    blocker.close()
    assert await writer.execute(lambda s: s.delete_runs(["run_9999"])) == []  # (none such)
    assert probes == 1 and not writer.degraded
    stored = await writer.get_object("run", "run_0001")
    assert stored is not None and stored["id"] == "run_0001"
    await writer.close()
    await store.close()


async def test_a_read_behind_a_hung_write_gives_up_and_the_writer_goes_on(tmp_path: Path) -> None:
    """A read through the writer has a caller waiting (a retry being placed): a write that hangs
    must not hold it. It gives up after `read_timeout`; the writer runs on once the write ends."""
    store = SqliteStore(str(tmp_path / "db.sqlite"))
    await store.open()
    writer = Writer(store, linger=0)
    writer.read_timeout = 0.2
    writer.start()
    await writer.flush()
    write, hung = store.write, asyncio.Event()

    async def hanging(rows: list[Row]) -> list[Row]:
        await hung.wait()
        return await write(rows)

    store.write = hanging  # type: ignore[method-assign]
    writer.submit(run(1))
    with pytest.raises(TimeoutError):
        await writer.get_object("run", "run_0001")
    hung.set()
    await writer.flush()
    stored = await writer.get_object("run", "run_0001")
    assert stored is not None and stored["id"] == "run_0001"
    await writer.close()
    await store.close()


def held_until[T](released: asyncio.Event, real: Any, cancelled: list[str]) -> Any:
    """`real`, once `released` is set; a cancellation meanwhile is noted by its name."""

    async def call(*args: Any) -> T:
        try:
            await released.wait()
        except asyncio.CancelledError:
            cancelled.append(real.__name__)
            raise
        return await real(*args)

    return call


async def test_a_store_that_stops_answering_is_away_after_the_bound(tmp_path: Path) -> None:
    """A server that hangs raises nothing: a write on it, unanswered after `store_timeout` while
    the store answers nothing new either, is abandoned (cancelled), the rows are spooled, no probe
    is sent while the store still answers nothing, and all land once it answers."""
    store, writer, spool = await open_writer(tmp_path)
    writer.store_timeout = 0.3
    writer.submit(run(1))
    await writer.flush()
    released, cancelled, asked = asyncio.Event(), [], []
    write, probe = store.write, store.probe

    async def nothing_new() -> bool:
        asked.append(time.monotonic())
        return False

    store.write, store.probe = held_until(released, write, cancelled), held_until(released, probe, cancelled)  # type: ignore[method-assign]
    store.answers = nothing_new  # type: ignore[method-assign]
    writer.submit(run(1, "completed"))
    writer.submit(run(2))
    started = time.monotonic()
    await writer.flush()
    assert 0.3 <= time.monotonic() - started < 3 and asked
    assert writer.degraded and "did not answer a write in 0.3 s, nor anything new" in (
        writer.unavailable or ""
    )
    assert spool.size > 0 and "write" in cancelled
    asked.clear()
    with pytest.raises(StoreUnavailable):  # a call probes first: the store is asked, not probed
        await writer.execute(lambda s: s.delete_runs(["run_0001"]))
    assert asked and "probe" not in cancelled
    del store.write, store.probe, store.answers
    released.set()
    await writer.execute(lambda s: s.get_run("run_0001"))  # a call probes first: it answers
    await writer.close()
    assert not writer.degraded and not spool
    assert statuses(tmp_path / "db.sqlite") == {"run_0001": "completed", "run_0002": "in_progress"}
    assert writer.dropped == 0
    await store.close()


async def test_a_slow_write_is_waited_for_while_the_store_answers(tmp_path: Path) -> None:
    """A write longer than `store_timeout` on a store that still answers (a loaded server, a long
    fold) is no silence: it is waited for, and lands."""
    store, writer, spool = await open_writer(tmp_path)
    writer.store_timeout = 0.1
    released, cancelled, asked = asyncio.Event(), [], []
    answers = store.answers

    async def counted() -> bool:
        asked.append(await answers())  # the real one: a stat of the file
        return asked[-1]

    store.write = held_until(released, store.write, cancelled)  # type: ignore[method-assign]
    store.answers = counted  # type: ignore[method-assign]
    writer.submit(run(3))
    await asyncio.sleep(0.5)  # about five bounds, each followed by a question the store answers
    assert len(asked) >= 2 and all(asked)
    assert not writer.degraded and not cancelled
    released.set()
    await writer.flush()
    assert statuses(tmp_path / "db.sqlite") == {"run_0003": "in_progress"} and not spool
    await writer.close()
    await store.close()


async def test_a_write_that_ends_while_the_store_is_asked_stands(tmp_path: Path) -> None:
    """The store is asked whether it answers anything new (a second or more): a write that ends
    meanwhile is answered, even if the question comes back unanswered, and nothing is spooled."""
    store, writer, spool = await open_writer(tmp_path)
    writer.store_timeout = 0.1
    released, cancelled = asyncio.Event(), []
    store.write = held_until(released, store.write, cancelled)  # type: ignore[method-assign]

    async def slowly_nothing() -> bool:
        released.set()  # the write ends while the store is being asked
        await asyncio.sleep(0.2)
        return False

    store.answers = slowly_nothing  # type: ignore[method-assign]
    writer.submit(run(4))
    await writer.flush()
    assert not writer.degraded and writer.silent is None and not cancelled and not spool
    assert statuses(tmp_path / "db.sqlite") == {"run_0004": "in_progress"}
    await writer.close()
    await store.close()


async def test_a_read_left_unanswered_makes_the_store_away_until_a_probe_answers(tmp_path: Path) -> None:
    """`Writer.read` is bounded by `read_timeout`. A slow read fails alone while the store answers;
    one left unanswered while it answers nothing new makes the store silent: the next fail at once
    (calls being placed are not each held for the bound) until a probe is answered."""
    store, writer, _ = await open_writer(tmp_path)
    writer.read_timeout = 0.2
    writer.submit(run(1))
    await writer.flush()
    never = asyncio.Event()
    with pytest.raises(StoreSilent, match=r"did not answer a read within 0\.2 s"):
        await writer.read(never.wait())
    assert not writer.degraded  # the store answered a stat: the read was only slow

    async def nothing_new() -> bool:
        return False

    store.answers = nothing_new  # type: ignore[method-assign]
    with pytest.raises(StoreSilent):
        await writer.read(never.wait())
    assert writer.degraded and writer.silent is not None
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await writer.read(store.get_run("run_0001"))  # at once: not sent to a silent store
    assert time.monotonic() - started < 0.1
    del store.answers
    await writer.execute(lambda s: s.get_run("run_0001"))  # a call probes first: it answers
    assert not writer.degraded and writer.silent is None
    stored = await writer.read(store.get_run("run_0001"))
    assert stored is not None and stored["id"] == "run_0001"
    await writer.close()
    await store.close()


async def test_the_writer_keeps_no_batch_once_it_is_written(tmp_path: Path) -> None:
    """Rows carry bodies and requests of up to a MiB each, and a batch up to `max_batch` of
    them: once written, none is kept waiting for the next row (an idle sidecar after a burst)."""
    store = SqliteStore(str(tmp_path / "db.sqlite"))
    await store.open()
    writer = Writer(store, linger=0)
    writer.start()
    await writer.flush()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(4):
            writer.submit(dataclasses.replace(run(i), prompt=f"{i} " + "a long prompt " * 150_000))
        await writer.flush()
        gc.collect()
        assert len(statuses(tmp_path / "db.sqlite")) == 4
        assert tracemalloc.get_traced_memory()[0] - before < 1_000_000  # (4 x 2 MiB were written)
    finally:
        tracemalloc.stop()
    await writer.close()
    await store.close()


async def test_replayed_events_carry_each_objects_stored_state_and_the_buffer_no_rows(tmp_path: Path) -> None:
    """A client that missed events gets, for each object, its newest event with the object as
    stored now; the replay buffer itself holds ids only."""
    store = SqliteStore(str(tmp_path / "db.sqlite"))
    await store.open()
    hub = EventHub(store.get_object)
    writer = Writer(store, linger=0)
    writer.listeners.append(hub.committed)
    writer.start()
    writer.submit(run(1))
    writer.submit(StepRow(id="stp_1", run_id="run_0001", request={"model": "m"}))
    await writer.flush()
    writer.submit(run(1, "completed"))
    writer.submit(
        StepRow(
            id="stp_1", run_id="run_0001", status="completed", request={"model": "m"}, response={"id": "r1"}
        )
    )
    await writer.flush()
    assert all(event.source is None for event in hub._buffer)
    sub = hub.subscribe(None, None)
    replayed = [(e.type, orjson.loads(e.data)) async for e in hub.replay(0, sub)]
    assert [(kind, data["status"]) for kind, data in replayed] == [
        ("run", "completed"),
        ("step", "completed"),
    ]
    step = replayed[1][1]
    assert (step["request"], step["response"]) == ({"model": "m"}, {"id": "r1"}) and "attempts" not in step
    assert "steps" not in replayed[0][1]
    await store.delete_runs(["run_0001"])
    hub.deleted(["run_0001"])
    assert [e.type async for e in hub.replay(0, sub)] == ["delete"]
    await writer.close()
    await store.close()


async def test_a_replay_the_store_cannot_answer_stops_before_the_object_it_misses(tmp_path: Path) -> None:
    """No object past the one the store could not give back is replayed: the client's
    Last-Event-ID stays before it, so a reconnect once the store answers misses nothing."""
    store = SqliteStore(str(tmp_path / "db.sqlite"))
    await store.open()
    away = {"run_0002"}

    async def recall(kind: str, object_id: str) -> dict | None:
        if object_id in away:
            raise StoreUnavailable("the database is locked")
        return await store.get_object(kind, object_id)

    hub = EventHub(recall)
    writer = Writer(store, linger=0)
    writer.listeners.append(hub.committed)
    writer.start()
    for i in (1, 2, 3):
        writer.submit(run(i))
        await writer.flush()
    sub = hub.subscribe(None, None)
    got: list[Any] = []
    with pytest.raises(ReplayFailed):
        async for event in hub.replay(0, sub):
            got.append(orjson.loads(event.data)["id"])
    assert got == ["run_0001"]
    away.clear()
    assert [orjson.loads(e.data)["id"] async for e in hub.replay(0, sub)] == [
        "run_0001",
        "run_0002",
        "run_0003",
    ]
    await writer.close()
    await store.close()


async def test_a_failed_hand_off_to_the_scrubbing_thread_loses_that_batch_counted_not_the_writer(
    tmp_path: Path,
) -> None:
    """The thread a batch is scrubbed on may be gone (a stop under way): that batch is dropped and
    counted as unscrubbable, never written unscrubbed, and the next batch is written."""
    store = SqliteStore(str(tmp_path / "db.sqlite"))
    await store.open()
    broken = True

    async def beside(work: Callable[[], Any]) -> Any:
        if broken:
            raise RuntimeError("cannot schedule new futures after shutdown")
        return work()

    writer = Writer(store, scrub=lambda row: row, beside=beside, max_batch=1000, linger=0)
    writer.submit(run(1))
    writer.submit(run(2))
    writer.start()
    await asyncio.wait_for(writer.flush(), 5)
    assert writer.drops["unscrubbable"] == 2
    broken = False
    writer.submit(run(3))
    await asyncio.wait_for(writer.flush(), 5)
    await writer.close()
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        assert [r[0] for r in conn.execute("SELECT id FROM runs")] == [run(3).id]
    await store.close()
