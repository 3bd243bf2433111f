"""Candidate index and query changes, timed on the same SQLite data in a transaction that is
rolled back: the database is left as the product wrote it."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.api.probe import Probe, Query, query_plan
from bench.api.routes import Result

KEYSET = re.compile(r"\((\w+) < \? OR \(\1 = \? AND id < \?\)\)")
LIKE = "first_message LIKE ? ESCAPE '\\'"
FTS_CAP = 1000  # at least this many runs hold the term: the ordered scan finds a page quickly


class Runner:
    """Executes statements on the what-if connection, recording each with its time."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.calls: list[Query] = []

    def __call__(self, sql: str, params: Sequence[Any]) -> list[Any]:
        t0 = time.perf_counter()
        rows = self.conn.execute(sql, list(params)).fetchall()
        self.calls.append(Query(sql, list(params), (time.perf_counter() - t0) * 1000, len(rows)))
        return rows


Alt = Callable[[Runner, Query], None]  # runs what replaces one of the product's queries


def same(run: Runner, query: Query) -> None:
    run(query.sql, query.params)


def row_value_keyset(run: Runner, query: Query) -> None:
    """`(k < ? OR (k = ? AND id < ?))` as the row value `(k, id) < (?, ?)`: an index range."""
    m = KEYSET.search(query.sql)
    if m is None:
        return same(run, query)
    i = query.sql[: m.start()].count("?")
    sql = f"{query.sql[: m.start()]}({m.group(1)}, id) < (?, ?){query.sql[m.end() :]}"
    run(sql, [*query.params[:i], query.params[i], query.params[i + 2], *query.params[i + 3 :]])


def trigram_when_rare(run: Runner, query: Query) -> None:
    """Rare terms through a trigram FTS5 index (then sorted); common ones keep the ordered scan."""
    if LIKE not in query.sql:
        return same(run, query)
    i = query.sql[: query.sql.index(LIKE)].count("?")
    term = query.params[i][1:-1].replace("\\%", "%").replace("\\_", "_").replace("\\\\", "\\")
    if len(term) < 3:  # trigrams need three characters
        return same(run, query)
    phrase = '"' + term.replace('"', '""') + '"'
    capped = "SELECT COUNT(*) FROM (SELECT 1 FROM runs_fts WHERE runs_fts MATCH ? LIMIT ?)"
    if run(capped, [phrase, FTS_CAP])[0][0] >= FTS_CAP:
        return same(run, query)
    # the trigram match narrows (case-folded, a superset); the LIKE kept beside it decides, as now
    fts = f"rowid IN (SELECT rowid FROM runs_fts WHERE runs_fts MATCH ?) AND {LIKE}"
    run(query.sql.replace(LIKE, fts), [*query.params[:i], phrase, *query.params[i:]])


def stats_one_pass() -> Alt:
    """Counts folded into the GROUP BY; each latency column read sorted once, ranks picked here."""
    done: set[str] = set()

    def alt(run: Runner, query: Query) -> None:
        sql = query.sql
        if sql.startswith("SELECT COUNT(*) AS n FROM attempts"):
            return  # COUNT(duration_ms), COUNT(ttfb_ms) below
        if "GROUP BY error_class" in sql:
            run(
                "SELECT error_class, COUNT(*) AS n, COUNT(duration_ms) AS duration_n,"
                " COUNT(ttfb_ms) AS ttfb_n FROM attempts WHERE started_at >= ? AND started_at < ?"
                " GROUP BY error_class",
                query.params,
            )
            return
        m = re.match(r"SELECT (\w+) AS v FROM attempts", sql)
        if m is None:
            return same(run, query)
        if m.group(1) not in done:
            done.add(m.group(1))
            column = m.group(1)
            values = run(
                f"SELECT {column} FROM attempts WHERE started_at >= ? AND started_at < ?"
                f" AND {column} IS NOT NULL ORDER BY {column}",
                query.params[:2],
            )
            _ = [values[min(len(values) - 1, int(q * len(values)))] for q in (0.5, 0.95, 0.99) if values]

    return alt


@dataclass
class Fix:
    name: str
    targets: Callable[[Result], bool]
    ddl: list[str] = field(default_factory=list)
    alt: Callable[[], Alt] = lambda: same


WIDE = ("kind", "status", "provider", "model", "error_class")
FILTER_INDEXES = {
    "runs_by_kind": "kind",
    "runs_by_status": "status",
    "runs_by_provider": "provider",
    "runs_by_model": "model",
    "runs_by_error": "error_class",
    "runs_by_conversation": "conversation_id",  # widened too, or the planner leaves it for a wide one
}


def wide(index: str, column: str) -> list[str]:
    rest = ", ".join(c for c in WIDE if c != column)
    return [f"DROP INDEX {index}", f"CREATE INDEX {index} ON runs ({column}, started_at, id, {rest})"]


FIXES = [
    Fix(
        "keyset cursor as a row value: `(started_at, id) < (?, ?)`",
        lambda r: r.scenario.follow is not None,
        alt=lambda: row_value_keyset,
    ),
    Fix(
        "filter indexes carry the other filter columns (no table lookup to reject a row)",
        lambda r: r.scenario.name.startswith("runs:") and "+" in r.scenario.name,
        ddl=[statement for index, column in FILTER_INDEXES.items() for statement in wide(index, column)],
    ),
    Fix(
        f"q: trigram FTS5 index on runs.first_message, used when fewer than {FTS_CAP} runs match",
        lambda r: "q=" in r.scenario.name,
        ddl=[
            "CREATE VIRTUAL TABLE runs_fts USING fts5(first_message, content='runs',"
            " content_rowid='rowid', tokenize='trigram')",
            "INSERT INTO runs_fts (runs_fts) VALUES ('rebuild')",
        ],
        alt=lambda: trigram_when_rare,
    ),
    Fix(
        "stats: covering index attempts (started_at, error_class, duration_ms, ttfb_ms)",
        lambda r: r.scenario.group == "stats",
        ddl=[
            "DROP INDEX attempts_by_started",
            "CREATE INDEX attempts_by_started ON attempts (started_at, error_class, duration_ms, ttfb_ms)",
        ],
    ),
    Fix(
        "stats: that index, plus one sorted read per latency column and the counts in the GROUP BY",
        lambda r: r.scenario.group == "stats",
        ddl=[
            "DROP INDEX attempts_by_started",
            "CREATE INDEX attempts_by_started ON attempts (started_at, error_class, duration_ms, ttfb_ms)",
        ],
        alt=stats_one_pass,
    ),
]


def timed(conn: sqlite3.Connection, probe_: Probe, alt: Callable[[], Alt], repeat: int = 3) -> list[Query]:
    """The probe's queries through `alt`, after one warm-up; the median of `repeat` runs."""
    runs: list[list[Query]] = []
    for i in range(repeat + 1):
        run = Runner(conn)
        step = alt()
        t0 = time.perf_counter()
        for query in probe_.queries:
            step(run, query)
        if i:
            runs.append(run.calls)
        if time.perf_counter() - t0 > 3.0:
            runs = [run.calls]
            break
    runs.sort(key=lambda calls: sum(x.ms for x in calls))
    return runs[len(runs) // 2]


def size_of(conn: sqlite3.Connection, names: list[str]) -> int:
    """Bytes of these tables and indexes (with an FTS5 table's shadow tables)."""
    total = 0
    for name in names:
        (size,) = conn.execute(
            "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name = ? OR name GLOB ?", [name, f"{name}_*"]
        ).fetchone()
        total += size
    return total


def what_if(db: Path, results: list[Result]) -> list[str]:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.row_factory = sqlite3.Row
    out = [
        "| change | route | SQL ms now | SQL ms after | plan of the slowest statement after |",
        "|---|---|--:|--:|---|",
    ]
    notes: list[str] = []
    try:
        for fix in FIXES:
            targets = [r for r in results if fix.targets(r) and r.probe is not None]
            if not targets:
                continue
            names = sorted({m for d in fix.ddl for m in re.findall(r"(?:INDEX|TABLE) (\w+)", d)})
            before = size_of(conn, names)
            conn.execute("BEGIN")
            try:
                t0 = time.perf_counter()
                for statement in fix.ddl:
                    conn.execute(statement)
                built = time.perf_counter() - t0
                if fix.ddl:
                    grown = (size_of(conn, names) - before) / 2**20
                    notes.append(
                        f"- {fix.name}: built in {built:.1f} s on this data; {', '.join(names)} "
                        f"{grown:+,.0f} MiB"
                    )
                for r in targets:
                    assert r.probe is not None
                    after = timed(conn, r.probe, fix.alt)
                    slowest = max(after, key=lambda x: x.ms)
                    steps = query_plan(conn, slowest.sql, slowest.params)
                    shown = " / ".join(line.strip() for line in steps).replace("|", "\\|")
                    out.append(
                        f"| {fix.name} | {r.scenario.name} | {r.probe.ms:.1f} "
                        f"| {sum(x.ms for x in after):.1f} | {shown} |"
                    )
            finally:
                conn.execute("ROLLBACK")
    finally:
        conn.close()
    return [*out, "", *notes]
