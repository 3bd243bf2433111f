"""SQLite backend: one write connection fed by the writer, one read connection for the API."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from storage.base import RunFilter
from storage.migrations import MIGRATIONS
from storage.records import WRITE_ORDER, AttemptRow, BodyRow, Row, RunRow, StepRow, now

log = logging.getLogger(__name__)

_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",  # WAL + NORMAL: durable across process crashes, fast commits
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 5000",
)
_OPEN = "'in_progress'"


class SqliteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        await self._migrate(self._writer)
        self._reader = await self._connect()

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = sqlite3.Row
        for pragma in _PRAGMAS:
            await conn.execute(pragma)
        return conn

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    @staticmethod
    async def _migrate(conn: aiosqlite.Connection) -> None:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        async with conn.execute("SELECT name FROM schema_migrations") as cur:
            done = {row[0] async for row in cur}
        for name, sql in MIGRATIONS:
            if name not in done:
                stamp = now().replace("'", "")
                await conn.executescript(
                    f"BEGIN; {sql}; INSERT INTO schema_migrations VALUES ('{name}', '{stamp}'); COMMIT;"
                )
                log.info("applied migration %s", name)

    # ---- writes -------------------------------------------------------------------------

    async def write(self, rows: list[Row]) -> None:
        conn = self._conn(self._writer)
        by_table: dict[type[Row], list[tuple[Any, ...]]] = {}
        for row in sorted(rows, key=lambda r: WRITE_ORDER[r.table]):
            by_table.setdefault(type(row), []).append(_values(row))
        await conn.execute("BEGIN")
        try:
            for kind, values in by_table.items():
                await conn.executemany(_upsert_sql(kind), values)
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise

    async def interrupt_open(self, finished_at: str) -> int:
        conn = self._conn(self._writer)
        error = orjson.dumps({"class": "canceled", "message": "the proxy stopped before this ended"})
        await conn.execute("BEGIN")
        await conn.execute(
            f"UPDATE attempts SET status = 'interrupted', finished_at = ?, error_class = 'canceled',"
            f" error = ? WHERE status = {_OPEN}",
            (finished_at, error.decode()),
        )
        await conn.execute(
            f"UPDATE steps SET status = 'interrupted', finished_at = ? WHERE status = {_OPEN}",
            (finished_at,),
        )
        cur = await conn.execute(
            f"UPDATE runs SET status = 'interrupted', finished_at = ?, updated_at = ? WHERE status = {_OPEN}",
            (finished_at, finished_at),
        )
        await conn.execute("COMMIT")
        return cur.rowcount

    async def ping(self) -> bool:
        try:
            conn = self._conn(self._writer)
            await conn.execute("BEGIN IMMEDIATE")  # takes the write lock: proves we could write
            await conn.execute("ROLLBACK")
            return True
        except Exception:
            return False

    # ---- reads --------------------------------------------------------------------------

    async def list_runs(
        self, where: RunFilter, limit: int, cursor: tuple[str, str] | None
    ) -> list[dict[str, Any]]:
        clauses, params = _run_filter(where)
        if cursor is not None:
            clauses.append("(started_at < ? OR (started_at = ? AND id < ?))")
            params += [cursor[0], cursor[0], cursor[1]]
        sql = "SELECT * FROM runs"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
        return [_run(r) for r in await self._fetch(sql, [*params, limit])]

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        runs = await self._fetch("SELECT * FROM runs WHERE id = ?", [run_id])
        if not runs:
            return None
        run = _run(runs[0])
        steps = [
            _step(s)
            for s in await self._fetch("SELECT * FROM steps WHERE run_id = ? ORDER BY number", [run_id])
        ]
        attempts = await self._fetch("SELECT * FROM attempts WHERE run_id = ? ORDER BY number", [run_id])
        by_step: dict[str, list[dict[str, Any]]] = {s["id"]: [] for s in steps}
        for attempt in attempts:
            by_step.setdefault(attempt["step_id"], []).append(_attempt(attempt))
        for step in steps:
            step["attempts"] = by_step[step["id"]]
        run["steps"] = steps
        return run

    async def get_attempt(self, attempt_id: str) -> dict[str, Any] | None:
        rows = await self._fetch(
            "SELECT a.*, b.request_body, b.response_body, b.request_truncated, b.response_truncated"
            " FROM attempts a LEFT JOIN attempt_bodies b ON b.id = a.id WHERE a.id = ?",
            [attempt_id],
        )
        return _attempt(rows[0]) if rows else None

    async def _fetch(self, sql: str, params: list[Any]) -> list[sqlite3.Row]:
        conn = self._conn(self._reader)
        async with conn.execute(sql, params) as cur:
            return list(await cur.fetchall())

    @staticmethod
    def _conn(conn: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if conn is None:
            raise RuntimeError("the store is not open")
        return conn


# ---- row mapping ------------------------------------------------------------------------------


@cache
def _names(kind: type[Row]) -> list[str]:
    return [f.name for f in fields(kind)]


@cache
def _upsert_sql(kind: type[Row]) -> str:
    columns = _names(kind)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "id")
    return (
        f"INSERT INTO {kind.table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        f" ON CONFLICT (id) DO UPDATE SET {updates}"
    )


def _values(row: Row) -> tuple[Any, ...]:
    values = []
    for column in row.columns():
        value = getattr(row, column)
        if column in row.json_columns and value is not None:
            value = orjson.dumps(value).decode()
        values.append(value)
    return tuple(values)


def _run_filter(where: RunFilter) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column in ("kind", "status", "conversation_id", "provider", "model"):
        value = getattr(where, column)
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if where.since is not None:
        clauses.append("started_at >= ?")
        params.append(where.since)
    if where.until is not None:
        clauses.append("started_at < ?")
        params.append(where.until)
    if where.has_error is not None:
        clauses.append("error_class IS NOT NULL" if where.has_error else "error_class IS NULL")
    if where.q:
        clauses.append("first_message LIKE ? ESCAPE '\\'")
        escaped = where.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        params.append(f"%{escaped}%")
    return clauses, params


def _json(value: str | None) -> Any:
    return orjson.loads(value) if value is not None else None


_ZERO_USAGE = {
    "input_tokens": 0,
    "output_tokens": 0,
    "total_tokens": 0,
    "cache_read_tokens": 0,
    "cache_write_tokens": 0,
    "reasoning_tokens": 0,
}


def _run(row: sqlite3.Row) -> dict[str, Any]:
    run = {k: row[k] for k in _names(RunRow) if k != "error_class"}
    run["classification"] = {
        "source": run.pop("classification_source"),
        "reason": run.pop("classification_reason"),
    }
    run["usage"] = _json(row["usage"]) or dict(_ZERO_USAGE)
    run["error"] = _json(row["error"])
    return run


def _step(row: sqlite3.Row) -> dict[str, Any]:
    step = {k: row[k] for k in _names(StepRow)}
    for column in StepRow.json_columns:
        step[column] = _json(row[column])
    return step


def _attempt(row: sqlite3.Row) -> dict[str, Any]:
    keys = set(row.keys())
    attempt = {k: row[k] for k in _names(AttemptRow) if k != "error_class"}
    for column in AttemptRow.json_columns:
        attempt[column] = _json(row[column])
    attempt["streamed"] = bool(attempt["streamed"])
    for column in _names(BodyRow):
        if column != "id" and column in keys:
            value = row[column]
            attempt[column] = bool(value) if column.endswith("truncated") else value
    return attempt
