"""The PostgreSQL store on a real server: the same answers as SQLite for the same rows, and what
only a store many replicas share has to get right (who leads, whose runs a restart ends,
concurrent writers on one conversation, text PostgreSQL refuses)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import psycopg
from aiohttp.test_utils import TestClient

from storage import queries
from storage.base import RunFilter
from storage.postgres import PostgresStore, in_dialect
from storage.records import AttemptRow, Row, RunRow, StepRow, now, timestamp
from storage.spool import Spool
from storage.writer import Writer
from tests.api_seed import BASE, make_run, seeded_api

ROUTES = [
    ("/api/v1/runs", {}),
    ("/api/v1/runs", {"kind": "chat_turn", "limit": "7"}),
    ("/api/v1/runs", {"status": "error", "has_error": "true"}),
    ("/api/v1/runs", {"q": "KYOTO"}),  # SQLite's LIKE ignores ASCII case: so does ours on PostgreSQL
    ("/api/v1/runs", {"q": "100%_"}),
    ("/api/v1/runs", {"provider": "gemini", "model": "gemini-2.5-flash"}),
    ("/api/v1/conversations", {}),
    ("/api/v1/conversations", {"q": "paris"}),
    ("/api/v1/stats", {"since": timestamp(BASE - 60), "until": timestamp(BASE + 3600)}),
]


async def answers(client: TestClient, run_ids: list[str]) -> list[Any]:
    out = []
    for path, params in ROUTES:
        response = await client.get(path, params=params)
        assert response.status == 200, await response.text()
        out.append(await response.json())
    for run_id in run_ids:
        run = await (await client.get(f"/api/v1/runs/{run_id}")).json()
        out.append(run)
        for step in run["steps"]:
            for attempt in step["attempts"]:
                out.append(await (await client.get(f"/api/v1/attempts/{attempt['id']}")).json())
    return out


async def test_the_same_rows_give_the_same_answers_on_both_engines(
    tmp_path: Path, postgres_url: str, aiohttp_client: Callable[..., Any]
) -> None:
    on_sqlite = await seeded_api(tmp_path, 30)
    on_postgres = await seeded_api(tmp_path, 30, database=postgres_url)
    try:
        ids = [r.id for r in on_sqlite.runs[:6]]
        first = await answers(await aiohttp_client(on_sqlite.app), ids)
        second = await answers(await aiohttp_client(on_postgres.app), ids)
        assert len(first) == len(second) > len(ROUTES)
        for a, b in zip(first, second, strict=True):
            assert a == b
    finally:
        await on_sqlite.close()
        await on_postgres.close()


async def test_one_replica_leads_and_another_takes_over_when_it_goes(postgres_url: str) -> None:
    a, b = PostgresStore(postgres_url, replica="a"), PostgresStore(postgres_url, replica="b")
    await asyncio.gather(a.open(), b.open())  # both migrate at once: one waits for the other
    try:
        assert [await a.leads(), await b.leads()] == [True, False]
        assert [await a.leads(), await b.leads()] == [True, False]
        await a.close()
        assert await b.leads()
    finally:
        await a.close()
        await b.close()


def open_run(i: int, at: str = "2026-12-01T10:00:00.000Z") -> list[Row]:
    run_id = f"run_open_{i}"
    return [
        RunRow(id=run_id, conversation_id="conv_shared", started_at=at, updated_at=at, attempt_count=1),
        StepRow(id=f"stp_open_{i}", run_id=run_id, started_at=at),
        AttemptRow(id=f"att_open_{i}", step_id=f"stp_open_{i}", run_id=run_id, started_at=at),
    ]


async def test_a_restarting_replica_ends_only_its_own_open_runs(postgres_url: str) -> None:
    a, b = PostgresStore(postgres_url, replica="a"), PostgresStore(postgres_url, replica="b")
    try:
        await a.write(open_run(1))
        await b.write(open_run(2))
        ended = await a.interrupt_open(now(), updated_before=now(), own=True)
        assert {r.id for r in ended} == {"run_open_1", "stp_open_1", "att_open_1"}
        assert (await b.get_run("run_open_2") or {})["status"] == "in_progress"
        # the stale sweep (on the leading replica) ends anyone's, a replica that died included
        swept = await a.interrupt_open(now(), updated_before=now(), own=False)
        assert {r.id for r in swept if isinstance(r, RunRow)} == {"run_open_2"}
        (conversation,) = await a.list_conversations(10, None)
        assert conversation["run_count"] == 2
    finally:
        await a.close()
        await b.close()


async def test_replicas_writing_one_conversation_at_once_keep_its_summary_whole(postgres_url: str) -> None:
    replicas = [PostgresStore(postgres_url, replica=f"r{i}") for i in range(3)]
    try:

        async def write(store: PostgresStore, offset: int) -> None:
            for batch in range(10):
                rows = list(
                    itertools.chain.from_iterable(
                        make_run(offset + batch * 5 + k, conversation="conv_busy") for k in range(5)
                    )
                )
                await store.write(rows)

        await asyncio.gather(*(write(store, 1000 * i) for i, store in enumerate(replicas)))
        (conversation,) = await replicas[0].list_conversations(10, None)
        assert conversation["run_count"] == 150
        assert conversation["total_tokens"] == sum(110 + 1000 * i + n for i in range(3) for n in range(50))
        assert len(await replicas[1].list_runs(RunFilter(conversation_id="conv_busy"), 500, None)) == 150
    finally:
        for store in replicas:
            await store.close()


async def test_text_postgresql_refuses_is_stored_replaced(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    try:
        rows = open_run(3)
        run = rows[0]
        assert isinstance(run, RunRow)
        run.first_message = "nul\x00 and a lone surrogate \udcff"
        run.prompt = "an ASCII nul\x00"  # no other character tells it apart
        run.error = {"class": "proxy_error", "message": "nul\x00 inside", "escaped": "a\\u0000b"}
        await store.write(rows)
        stored = await store.get_run(run.id)
        assert stored is not None
        assert stored["first_message"] == "nul\ufffd and a lone surrogate \ufffd"
        assert stored["prompt"] == "an ASCII nul\ufffd"
        assert stored["error"] == {
            "class": "proxy_error",
            "message": "nul\ufffd inside",
            "escaped": "a\\u0000b",
        }
    finally:
        await store.close()


async def test_q_reads_one_trigram_index_over_the_prompt_and_first_message(postgres_url: str) -> None:
    """`q` searches both texts joined (migration m012): the runs SQLite's two LIKEs find, no match
    across the join, and a plan that reads the one index (the planner weighed 60 over a month)."""
    store = PostgresStore(postgres_url)
    texts = [("alpha Zanzibar", None), (None, "beta zanzibar"), ("alpha", "beta"), (None, None)]
    try:
        for i, (prompt, first_message) in enumerate(texts):
            rows = open_run(i)
            rows[0] = dataclasses.replace(rows[0], prompt=prompt, first_message=first_message)
            await store.write(rows)

        async def found(q: str) -> list[str]:
            return sorted(r["id"] for r in await store.list_runs(RunFilter(q=q), 10, None))

        assert await found("ZANZIBAR") == ["run_open_0", "run_open_1"]
        assert await found("alpha") == ["run_open_0", "run_open_2"]
        assert await found("alphabeta") == await found("alpha\x1fbeta") == []
        said: list[tuple[str, list[Any]]] = []

        async def keep(query: str, params: Sequence[Any]) -> list[Any]:
            said.append((query, list(params)))
            return []

        await queries.list_runs(
            keep, RunFilter(q="zanzibar"), 50, None, text_search=queries.TEXT_SEARCH_ONE_INDEX
        )
        ((query, params),) = said
        async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
            await conn.execute("SET enable_seqscan = off")  # four rows: a scan would be cheaper
            plan = "\n".join(
                r[0] for r in await (await conn.execute(f"EXPLAIN {in_dialect(query)}", params)).fetchall()
            )
        assert "Bitmap Index Scan on runs_d0_expr_idx" in plan, plan
        assert "BitmapOr" not in plan and "prompt_idx" not in plan and "first_message_idx" not in plan, plan
    finally:
        await store.close()


async def test_payloads_are_jsonb_and_counts_64_bit(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    await store.open()
    await store.close()
    with psycopg.connect(postgres_url) as conn:
        types = dict(
            conn.execute(
                "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'public'"
            ).fetchall()
        )
    assert types["steps.request"] == types["attempts.request_headers"] == "jsonb"
    assert types["runs.input_tokens"] == "bigint"
    assert types["attempts.ttfb_ms"] == "double precision"


async def test_payloads_come_back_as_written_decoded_or_as_stored(postgres_url: str) -> None:
    """jsonb reaches the reads as its text, decoded there (beside the loop when large) or passed
    on as stored: a number jsonb writes back with more digits than 64 bits hold (1e30) is read
    as the double it is, and the stored text is valid JSON of the same value."""
    store = PostgresStore(postgres_url)
    await store.open()
    rows = make_run(7001)
    step = next(r for r in rows if isinstance(r, StepRow))
    payload = {"id": "resp", "logprob": 1e30, "text": 'caf\u00e9 "quoted" 😀', "parts": [{"n": 2**62}]}
    rows = [dataclasses.replace(r, response=payload) if r is step else r for r in rows]
    await store.write(rows)
    try:
        decoded = await store.get_run(step.run_id)
        as_stored = await store.get_run(step.run_id, as_stored=True)
    finally:
        await store.close()
    assert decoded is not None and as_stored is not None
    assert decoded["steps"][0]["response"] == payload
    fragment = as_stored["steps"][0]["response"]
    assert isinstance(fragment, orjson.Fragment)
    assert orjson.loads(orjson.dumps({"r": fragment}))["r"] == payload


async def test_a_locked_table_spools_then_replays_in_order(postgres_url: str, tmp_path: Path) -> None:
    """Another session holds the runs table: writes fail fast (lock_timeout), not hang, and land
    in order once it lets go."""
    store = PostgresStore(postgres_url, lock_seconds=0.2)
    await store.open()
    writer = Writer(store, spool=Spool(tmp_path / "spool", 1 << 20), probe_every=0.05)
    writer.start()
    blocker = await psycopg.AsyncConnection.connect(postgres_url)
    try:
        await blocker.execute("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
        writer.submit(open_run(1)[0])
        await asyncio.wait_for(writer.flush(), 10)
        assert writer.degraded and writer.spooled == 1
        done = dataclasses.replace(open_run(1)[0], status="completed", updated_at=now())
        writer.submit(done)
        await asyncio.wait_for(writer.flush(), 10)
        await blocker.rollback()
        assert await asyncio.wait_for(writer.recover(), 10)
        assert (await store.get_run("run_open_1") or {})["status"] == "completed"
        assert writer.dropped == 0
    finally:
        await blocker.close()
        await writer.close()
        await store.close()


async def test_a_row_postgresql_refuses_is_dropped_alone_not_spooled_for_good(
    postgres_url: str, tmp_path: Path
) -> None:
    """An index entry too large (a hostile model name) is the row's fault: the writer refuses
    that row, counts it, and goes on; the store stays available."""
    store = PostgresStore(postgres_url)
    writer = Writer(store, spool=Spool(tmp_path / "spool", 1 << 20), probe_every=0.05)
    writer.start()
    try:
        poison = dataclasses.replace(open_run(4)[0], model=os.urandom(6000).hex())
        writer.submit(poison)
        for row in open_run(5):
            writer.submit(row)
        await asyncio.wait_for(writer.flush(), 20)
        assert not writer.degraded and writer.spooled == 0
        assert writer.drops["refused"] == 1
        assert await store.get_run("run_open_5") is not None
        assert await store.get_run("run_open_4") is None
    finally:
        await writer.close()
        await store.close()


def run_on_day(day: int, i: int, *, idle_since: float, conversation: str) -> list[Row]:
    """A run whose id says it began on `day` (days since 1970), idle since `idle_since`."""
    started = day * 86_400 + 3600 + i
    rows = make_run(i, started=started, conversation=conversation)
    run = rows[0]
    assert isinstance(run, RunRow)
    new_id = f"run_{int(started * 1000):012x}{i:020x}"
    fixed: list[Row] = []
    for row in rows:
        changes: dict[str, Any] = {}
        if isinstance(row, RunRow):
            changes = {"id": new_id, "updated_at": timestamp(idle_since)}
        elif isinstance(row, StepRow | AttemptRow):
            changes = {"run_id": new_id}
        fixed.append(dataclasses.replace(row, **changes))
    return fixed


async def partitions(store: PostgresStore) -> set[str]:
    rows = await store._fetch(
        "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent IN ('runs'::regclass, 'attempts'::regclass)",
        [],
    )
    return {r["name"] for r in rows}


async def test_retention_drops_whole_idle_days_and_keeps_the_rollups_and_summaries_true(
    postgres_url: str,
) -> None:
    from storage import stats
    from storage.retention import expire_once

    store = PostgresStore(postgres_url, replica="a")
    writer = Writer(store)
    writer.start()
    today = int(BASE // 86_400)
    old, busy = today - 40, today - 35  # `busy` still has a run that was active yesterday
    try:
        rows = [
            r
            for i in range(20)
            for r in run_on_day(old, i, idle_since=old * 86_400 + 7200, conversation="c1")
        ]
        rows += [
            r
            for i in range(20, 25)
            for r in run_on_day(busy, i, idle_since=busy * 86_400 + 7200, conversation="c2")
        ]
        rows += run_on_day(busy, 25, idle_since=BASE - 86_400, conversation="c2")
        rows += [r for i in range(26, 30) for r in run_on_day(today, i, idle_since=BASE, conversation="c1")]
        await store.write(rows)
        assert {f"runs_d{old}", f"runs_d{busy}", f"attempts_d{old}"} <= await partitions(store)
        forgotten: list[str] = []

        async def delete_runs(ids: list[str]) -> list[str]:
            return await store.delete_runs(ids)

        deleted = await expire_once(writer, delete_runs, days=30, forget=forgotten.extend)
        assert deleted == 20 + 5  # the old day dropped whole; the busy day's idle runs deleted
        assert len(forgotten) == 20
        left = await partitions(store)
        assert f"runs_d{old}" not in left and f"attempts_d{old}" not in left
        assert f"runs_d{busy}" in left  # its active run keeps it
        kept = {r.id for r in rows if isinstance(r, RunRow) and (r.updated_at >= timestamp(BASE - 86_400))}
        assert len(kept) == 5
        assert {r["id"] for r in await store.list_runs(RunFilter(), 100, None)} == kept
        conversations = {c["id"]: c for c in await store.list_conversations(10, None)}
        assert conversations["c1"]["run_count"] == 4 and conversations["c2"]["run_count"] == 1
        # the rollups lost what was dropped, as the rows did: whole-window answers agree
        window = (timestamp(old * 86_400), timestamp(BASE + 3600))
        exact = await stats.stats(store._fetch, *window, exact_up_to=10**9)
        rolled = await stats.stats(store._fetch, *window, exact_up_to=0)
        assert exact["runs"]["total"] == rolled["runs"]["total"] == 5
        assert rolled["attempts"]["total"] == exact["attempts"]["total"]
        assert rolled["usage"] == exact["usage"]
        # a late row of a dropped run is left out
        late = dataclasses.replace(rows[1], status="completed")
        assert await PostgresStore.write(store, [late]) == [late]
    finally:
        await writer.close()
        await store.close()


async def test_deletes_take_every_table_and_late_rows_of_a_deleted_run_are_left_out(
    postgres_url: str,
) -> None:
    """No foreign key cascades or refuses (migration m011): the store does both itself, for its
    own deletes and for another replica's it has not heard of."""
    store = PostgresStore(postgres_url)
    try:
        one, two, three = make_run(1), make_run(2), make_run(4)  # run 2 failed twice: two attempts
        await store.write([*one, *two, *three])
        assert await store.delete_runs([one[0].id]) == [one[0].id]
        with psycopg.connect(postgres_url, autocommit=True) as conn:  # another replica deletes run 2
            conn.execute("DELETE FROM attempt_bodies WHERE id LIKE %s", [f"att_{two[0].id}%"])
            conn.execute("DELETE FROM attempts WHERE run_id = %s", [two[0].id])
            conn.execute("DELETE FROM steps WHERE run_id = %s", [two[0].id])
            conn.execute("DELETE FROM runs WHERE id = %s", [two[0].id])
        late = [dataclasses.replace(r, status="completed") if hasattr(r, "status") else r for r in two[1:]]
        gone = await store.write([*late, *three])  # its step, attempts and bodies, not its run
        assert sorted(r.id for r in gone) == sorted(r.id for r in late)
        with psycopg.connect(postgres_url) as conn:
            left = {
                t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                for t in ("runs", "steps", "attempts", "attempt_bodies")
            }
        assert left == {"runs": 1, "steps": 1, "attempts": 1, "attempt_bodies": 1}  # run 4's alone
        summaries = {c["id"]: c["run_count"] for c in await store.list_conversations(10, None)}
        assert summaries.get("conv_1") is None and summaries["conv_0"] == 1
    finally:
        await store.close()


async def test_two_lanes_land_every_runs_snapshots_in_order_and_a_delete_in_its_place(
    postgres_url: str,
) -> None:
    """The writer commits two batches at once on PostgreSQL: each run keeps to one lane, so its
    final snapshot is never overwritten by its first, and a delete waits for both lanes (with
    eager tasks, as under mitmproxy)."""
    asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
    store = PostgresStore(postgres_url)
    writer = Writer(store, max_batch=40, lanes=store.write_lanes)
    in_flight = most = 0
    write = store.write

    async def counted(rows: list[Row]) -> list[Row]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await write(rows)
        finally:
            in_flight -= 1

    store.write = counted  # type: ignore[method-assign]
    writer.start()
    finals = [make_run(i, conversation=f"lanes_{i % 30}") for i in range(300)]

    def started(rows: list[Row], i: int) -> list[Row]:
        # a title run joins its conversation only at its end: its first snapshot names none
        first = [dataclasses.replace(r, status="in_progress") if hasattr(r, "status") else r for r in rows]
        if i % 10 == 0:
            first[0] = dataclasses.replace(first[0], conversation_id=None)
        return first

    try:
        for i, rows in enumerate(finals):
            for row in started(rows, i):
                writer.submit(row)
            if i >= 25:  # a run ends while 25 later ones begin
                for row in finals[i - 25]:
                    writer.submit(row)
        doomed = [rows[0].id for rows in finals[:10]]
        delete = asyncio.create_task(writer.execute(lambda s: s.delete_runs(doomed)))
        await asyncio.sleep(0)  # the delete is queued before what follows
        for rows in [*finals[275:], *finals[:10]]:  # the last to end, and late rows of deleted runs
            for row in rows:
                writer.submit(row)
        assert sorted(await delete) == sorted(doomed)
        await writer.flush()
        assert most == 2  # both lanes had a batch on the server at once
        # what was dropped is the late rows of the deleted runs: no row was taken for an orphan
        assert writer.dropped == writer.drops["run_deleted"] == sum(len(rows) for rows in finals[:10])
        with psycopg.connect(postgres_url) as conn:
            stored = {
                t: dict(conn.execute(f"SELECT id, status FROM {t}").fetchall())
                for t in ("runs", "steps", "attempts")
            }
        expected = {
            t: {r.id: r.status for rows in finals[10:] for r in rows if r.table == t}  # type: ignore[attr-defined]
            for t in ("runs", "steps", "attempts")
        }
        assert stored == expected
        summaries = {c["id"]: c["run_count"] for c in await store.list_conversations(100, None)}
        assert summaries == {f"lanes_{c}": 10 - (c < 10) for c in range(30)}
    finally:
        await writer.close()
        await store.close()
        asyncio.get_running_loop().set_task_factory(None)
