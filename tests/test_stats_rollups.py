"""`/stats` from the hourly rollups agrees with `/stats` from the rows, on both engines: counts and
sums exactly, percentiles within 1 %, through updates, cascading deletes, folding and the
backfill of a database recorded before the rollups existed."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from storage import migrations, sql, stats
from storage.backends import store_for
from storage.base import Store
from storage.records import AttemptRow, Row, RunRow, StepRow, timestamp
from storage.retention import fold_once
from storage.writer import Writer

HOUR = 3600.0
START = 1_780_000_000.0 - 1_780_000_000.0 % HOUR  # on an hour: windows below cut hours exactly
ERRORS = [None, None, None, "rate_limited", "server_error", "proxy_error"]


def calls(seed: int, n: int, hours: float = 6) -> list[tuple[RunRow, StepRow, list[AttemptRow]]]:
    """`n` runs over `hours`, their latencies spread over four orders of magnitude."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        started = START + rng.uniform(0, hours * HOUR)
        run_id = f"run_{seed}_{i:05d}"
        error = rng.choice(ERRORS)
        run = RunRow(
            id=run_id,
            conversation_id=f"conv_{i % 7}",
            kind=rng.choice(["chat_turn", "title_generation", "compaction", "quickgen"]),
            classification_source="default",
            classification_reason="r",
            status="error" if error else "completed",
            provider=rng.choice(["openai", "anthropic", None]),
            model=rng.choice(["gpt-4.1", "claude-sonnet-4-6", None]),
            started_at=timestamp(started),
            updated_at=timestamp(started + 1),
            finished_at=timestamp(started + 1),
            attempt_count=2 if error else 1,
            input_tokens=rng.randrange(1, 5000),
            output_tokens=rng.randrange(0, 900),
            total_tokens=rng.randrange(0, 6000),
            reasoning_tokens=rng.randrange(0, 10),
            cost_total=rng.choice([None, round(rng.uniform(0.0001, 0.3), 6)]),
            error_class=error,
        )
        step = StepRow(id=f"stp_{run_id}", run_id=run_id, started_at=run.started_at, status="completed")
        attempts = [
            AttemptRow(
                id=f"att_{run_id}_{k}",
                step_id=step.id,
                run_id=run_id,
                number=k,
                status="completed",
                error_class=error if k == 1 and error else None,
                started_at=timestamp(started + k / 10),
                duration_ms=round(rng.lognormvariate(6, 1.5), 3),
                ttfb_ms=rng.choice([None, 0.0, round(rng.lognormvariate(4, 1), 3)]),
            )
            for k in range(1, run.attempt_count + 1)
        ]
        out.append((run, step, attempts))
    return out


def in_progress(run: RunRow, step: StepRow, attempts: list[AttemptRow]) -> list[Row]:
    """The first snapshot of a call: nothing known of its end yet."""
    open_attempts = [replace(a, duration_ms=None, ttfb_ms=None, error_class=None) for a in attempts]
    return [
        replace(run, status="in_progress", input_tokens=0, cost_total=None, error_class=None),
        step,
        *open_attempts,
    ]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = store_for(database_url)
    await store.open()
    yield store
    await store.close()


WINDOWS = [
    (START - HOUR, START + 7 * HOUR),  # everything, whole hours
    (START + 0.25 * HOUR + 0.5, START + 5.5 * HOUR),  # partial first and last hours
    (START + HOUR, START + 3 * HOUR),  # exactly two hours
    (START + 2.1 * HOUR, START + 2.7 * HOUR),  # inside one hour: rows only
]


async def both_ways(store: Store, since: float, until: float) -> tuple[dict[str, Any], dict[str, Any]]:
    fetch = store._fetch  # type: ignore[attr-defined]
    exact = await stats.stats(fetch, timestamp(since), timestamp(until), exact_up_to=10**9)
    rolled = await stats.stats(fetch, timestamp(since), timestamp(until), exact_up_to=0)
    return exact, rolled


def assert_agree(exact: dict[str, Any], rolled: dict[str, Any], whole_hours: bool = True) -> None:
    assert exact["attempts"]["percentiles"] == "exact"
    assert rolled["attempts"]["percentiles"] == ("buckets" if whole_hours else "exact")
    assert rolled["runs"] == exact["runs"]
    assert rolled["usage"] == exact["usage"]
    for key in ("total", "with_error", "error_rate", "by_error_class"):
        assert rolled["attempts"][key] == exact["attempts"][key], key
    assert (rolled["cost"]["total"] is None) == (exact["cost"]["total"] is None)
    if exact["cost"]["total"] is not None:
        assert rolled["cost"]["total"] == pytest.approx(exact["cost"]["total"], rel=1e-9)
    assert [(m["provider"], m["model"], m["runs"]) for m in rolled["cost"]["by_model"]] == [
        (m["provider"], m["model"], m["runs"]) for m in exact["cost"]["by_model"]
    ]
    for metric in ("duration_ms", "ttfb_ms"):
        for q, value in exact["attempts"][metric].items():
            got = rolled["attempts"][metric][q]
            if value is None or value < 0.01:  # nothing, or under the smallest bucket
                assert (got is None) == (value is None) and (got or 0) <= 0.0101
                continue
            assert abs(got - value) <= 0.01 * value, (metric, q, got, value)


async def rollup_rows(store: Store) -> int:
    fetch = store._fetch  # type: ignore[attr-defined]
    return sum([(await fetch(f"SELECT COUNT(*) AS n FROM {t}", []))[0]["n"] for t in stats.ROLLUPS])


async def assert_folded(store: Store) -> None:
    """One folded row per hour and key, none netting to nothing."""
    fetch = store._fetch  # type: ignore[attr-defined]
    for table, (key, sums) in stats.ROLLUPS.items():
        columns = ", ".join(("hour", *key))
        (twice,) = await fetch(
            f"SELECT COUNT(*) AS n FROM (SELECT {columns} FROM {table} GROUP BY {columns}"
            " HAVING COUNT(*) > 1) AS t",
            [],
        )
        assert twice["n"] == 0, table
        (loose,) = await fetch(f"SELECT COUNT(*) AS n FROM {table} WHERE NOT folded OR {sums[0]} = 0", [])
        assert loose["n"] == 0, table
        sums = ", ".join(f"SUM({s}) AS {s}" for s in sums)
        by_day = ", ".join(("substr(hour, 1, 10)", *key))
        hourly = await fetch(f"SELECT {by_day}, {sums} FROM {table} GROUP BY {by_day}", [])
        daily = await fetch(
            f"SELECT day, {', '.join(key)}, {sums} FROM {table}_daily GROUP BY day, {', '.join(key)}", []
        )
        assert sorted(map(_row, hourly)) == sorted(map(_row, daily)), table


def _row(row: Any) -> tuple[str, ...]:
    return tuple(repr(round(v, 9) if isinstance(v, float) else v) for v in dict(row).values())


async def test_rollups_agree_with_the_rows_through_updates_deletes_and_folding(store: Store) -> None:
    recorded = calls(1, 600)
    for chunk in range(0, len(recorded), 100):  # first snapshots, then the ends, batch by batch
        await store.write([row for call in recorded[chunk : chunk + 100] for row in in_progress(*call)])
    await store.write([row for run, step, attempts in recorded for row in (run, step, *attempts)])
    await store.write([recorded[0][0]])  # the same snapshot again changes nothing
    for since, until in WINDOWS:
        assert_agree(*await both_ways(store, since, until), whole_hours=until - since >= HOUR)

    gone = await store.delete_runs([run.id for run, _, _ in recorded[::5]])  # cascades to attempts
    assert len(gone) == 120
    before = await rollup_rows(store)
    await store.fold_rollups()
    assert await rollup_rows(store) < before
    await assert_folded(store)
    for since, until in WINDOWS:
        assert_agree(*await both_ways(store, since, until), whole_hours=until - since >= HOUR)
    everything = (await both_ways(store, *WINDOWS[0]))[1]
    assert everything["runs"]["total"] == 480


async def test_whole_days_come_from_the_daily_rollups_and_their_unfolded_rows(store: Store) -> None:
    recorded = calls(5, 900, hours=24 * 4)  # four days and a bit, from 20:00
    await store.write([row for run, step, attempts in recorded for row in (run, step, *attempts)])
    await store.fold_rollups()
    await store.fold_rollups()  # over 48 hours: two passes
    await assert_folded(store)
    windows = [
        (START - HOUR, START + 5 * 24 * HOUR),  # three whole days and hours around them
        (START + 4 * HOUR, START + 52 * HOUR),  # exactly two whole days
        (START + 4.5 * HOUR + 0.5, START + 75.25 * HOUR),  # partial hours at both ends too
    ]
    for since, until in windows:
        assert_agree(*await both_ways(store, since, until))
    # rows changed after the last fold count at once: the daily rows plus the day's new deltas
    changed = [replace(run, status="interrupted", input_tokens=1) for run, _, _ in recorded[100:160]]
    await store.write(changed)
    await store.delete_runs([run.id for run, _, _ in recorded[200:230]])
    for since, until in windows:
        assert_agree(*await both_ways(store, since, until))
    for _ in range(3):  # 48 hours a pass
        await store.fold_rollups()
    await assert_folded(store)
    for since, until in windows:
        assert_agree(*await both_ways(store, since, until))


async def test_folding_twice_changes_nothing_and_an_emptied_hour_leaves_no_rows(store: Store) -> None:
    recorded = calls(2, 50)
    await store.write([row for run, step, attempts in recorded for row in (run, step, *attempts)])
    await store.fold_rollups()
    folded = await rollup_rows(store)
    await store.fold_rollups()
    assert await rollup_rows(store) == folded
    await store.delete_runs([run.id for run, _, _ in recorded])
    await store.fold_rollups()
    assert await rollup_rows(store) == 0


async def test_a_database_recorded_before_the_rollups_and_partitions_is_migrated(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows written before m009 (and, on PostgreSQL, m010): the rollups are backfilled from them
    and PostgreSQL's tables are rebuilt into day partitions, rows, indexes and triggers kept."""
    engine = "sqlite" if database_url.startswith("sqlite") else "postgres"
    module = f"storage.{engine}"
    older = [m for m in migrations.MIGRATIONS if m.name < "m009"]
    monkeypatch.setattr(f"{module}.MIGRATIONS", older)
    store = store_for(database_url)
    await store.open()
    recorded = calls(3, 300)
    rows = [row for run, step, attempts in recorded for row in (run, step, *attempts)]
    if engine == "sqlite":
        await store.write(rows)
    else:  # as the writer wrote them then: one key column, no partitions
        await write_unpartitioned(database_url, rows)
    await store.close()

    monkeypatch.setattr(f"{module}.MIGRATIONS", migrations.MIGRATIONS)
    store = store_for(database_url)
    await store.open()
    try:
        for since, until in WINDOWS[:3]:
            assert_agree(*await both_ways(store, since, until))
        await assert_folded(store)
        run = recorded[0][0]
        detail = await store.get_run(run.id)
        assert detail is not None and detail["attempt_count"] == run.attempt_count
        await store.write([replace(run, output_tokens=run.output_tokens + 1)])  # the new key takes it
        assert_agree(*await both_ways(store, *WINDOWS[0]))
    finally:
        await store.close()


async def write_unpartitioned(url: str, rows: list[Row]) -> None:
    from storage.postgres import _values

    old = replace(sql.POSTGRES, row_key="id")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for row in rows:
            await conn.execute(old.render(sql.upsert(type(row), old)), _values(row))


async def test_the_leader_folds_through_the_writer(store: Store) -> None:
    writer = Writer(store)
    writer.start()
    try:
        recorded = calls(4, 40)
        await store.write([row for call in recorded for row in in_progress(*call)])
        await store.write([row for run, step, attempts in recorded for row in (run, step, *attempts)])
        assert await fold_once(writer)
        await assert_folded(store)
    finally:
        await writer.close()
