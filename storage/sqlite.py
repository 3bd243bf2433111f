"""SQLite backend: one write connection fed by the writer, one read connection for the API."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from storage import queries
from storage.base import RunFilter
from storage.migrations import MIGRATIONS
from storage.records import WRITE_ORDER, Row, RunRow, now

log = logging.getLogger(__name__)

_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",  # WAL + NORMAL: durable across process crashes, fast commits
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 1000",  # a locked database fails fast: the writer spools meanwhile
)
_OPEN = "'in_progress'"


class SqliteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._inode: int | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = await self._connect()
        await self._migrate(self._writer)
        self._reader = await self._connect()
        self._inode = self._current_inode()

    def _current_inode(self) -> int | None:
        try:
            return None if self.path == ":memory:" else os.stat(self.path).st_ino
        except FileNotFoundError:
            return None

    def _guard(self) -> None:
        """SQLite keeps writing into a deleted file: refuse, so rows are spooled, not lost."""
        if self.path != ":memory:" and self._current_inode() != self._inode:
            raise sqlite3.OperationalError("the database file was removed or replaced")

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
        self._guard()
        conn = self._conn(self._writer)
        by_table: dict[type[Row], list[tuple[Any, ...]]] = {}
        for row in sorted(rows, key=lambda r: WRITE_ORDER[r.table]):
            by_table.setdefault(type(row), []).append(_values(row))
        await conn.execute("BEGIN")
        try:
            for kind, values in by_table.items():
                await conn.executemany(_upsert_sql(kind), values)
            conversations = {r.conversation_id for r in rows if isinstance(r, RunRow) and r.conversation_id}
            await self._refresh_conversations(conn, conversations)
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
            if self.path != ":memory:" and self._current_inode() != self._inode:
                await self.close()  # the file went away: start a new one where it was
                await self.open()
            conn = self._conn(self._writer)
            await conn.execute("BEGIN IMMEDIATE")  # takes the write lock: proves we could write
            await conn.execute("ROLLBACK")
            return True
        except Exception:
            return False

    # ---- deletes --------------------------------------------------------------------------

    async def delete_runs(self, run_ids: list[str]) -> list[str]:
        """Delete runs with their steps, attempts and bodies; returns the ids that existed."""
        if not run_ids:
            return []
        conn = self._conn(self._writer)
        marks = ", ".join("?" * len(run_ids))
        await conn.execute("BEGIN")
        try:
            async with conn.execute(
                f"SELECT id, conversation_id FROM runs WHERE id IN ({marks})", run_ids
            ) as cur:
                found = [(r[0], r[1]) async for r in cur]
            await conn.execute(f"DELETE FROM runs WHERE id IN ({marks})", run_ids)
            await self._refresh_conversations(conn, {c for _, c in found if c is not None})
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        return [run_id for run_id, _ in found]

    async def select_run_ids(
        self,
        *,
        conversation_id: str | None = None,
        started_before: str | None = None,
        updated_before: str | None = None,
        limit: int = 1000,
    ) -> list[str]:
        clauses, params = [], []
        for column, op, value in (
            ("conversation_id", "=", conversation_id),
            ("started_at", "<", started_before),
            ("updated_at", "<", updated_before),
        ):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                params.append(value)
        where = " AND ".join(clauses) or "1 = 1"
        rows = await self._fetch(f"SELECT id FROM runs WHERE {where} LIMIT ?", [*params, limit], self._writer)
        return [r["id"] for r in rows]

    # ---- reads --------------------------------------------------------------------------

    async def list_runs(
        self, where: RunFilter, limit: int, cursor: tuple[str, str] | None
    ) -> list[dict[str, Any]]:
        return await queries.list_runs(self._fetch, where, limit, cursor)

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        return await queries.get_run(self._fetch, run_id)

    async def get_attempt(self, attempt_id: str) -> dict[str, Any] | None:
        return await queries.get_attempt(self._fetch, attempt_id)

    async def attempt_bodies(self, run_id: str) -> dict[str, dict[str, Any]]:
        return await queries.attempt_bodies(self._fetch, run_id)

    async def list_conversations(
        self, limit: int, cursor: tuple[str, str] | None, q: str | None = None
    ) -> list[dict[str, Any]]:
        return await queries.list_conversations(self._fetch, limit, cursor, q)

    async def stats(self, since: str, until: str) -> dict[str, Any]:
        return await queries.stats(self._fetch, since, until)

    def size_bytes(self) -> int:
        """The database with its WAL, as it occupies the disk."""
        if self.path == ":memory:":
            return 0
        return sum(p.stat().st_size for p in map(Path, (self.path, f"{self.path}-wal")) if p.exists())

    async def _fetch(
        self, sql: str, params: Sequence[Any], conn: aiosqlite.Connection | None = None
    ) -> list[sqlite3.Row]:
        async with self._conn(conn or self._reader).execute(sql, params) as cur:
            return list(await cur.fetchall())

    @staticmethod
    def _conn(conn: aiosqlite.Connection | None) -> aiosqlite.Connection:
        if conn is None:
            raise RuntimeError("the store is not open")
        return conn

    @staticmethod
    async def _refresh_conversations(conn: aiosqlite.Connection, conversation_ids: set[str]) -> None:
        """Keep each conversation's summary row in step with its runs (one indexed query each)."""
        for conversation_id in conversation_ids:
            await conn.execute(_CONVERSATION_UPSERT, (conversation_id,))
            await conn.execute(
                "DELETE FROM conversations WHERE id = ? AND NOT EXISTS"
                " (SELECT 1 FROM runs WHERE conversation_id = ?)",
                (conversation_id, conversation_id),
            )


_CONVERSATION_UPSERT = """
INSERT INTO conversations (id, first_message, started_at, last_activity_at, run_count)
SELECT conversation_id,
       (SELECT first_message FROM runs f WHERE f.conversation_id = runs.conversation_id
        ORDER BY started_at, id LIMIT 1),
       MIN(started_at), MAX(updated_at), COUNT(*)
FROM runs WHERE conversation_id = ? GROUP BY conversation_id
ON CONFLICT (id) DO UPDATE SET
    first_message = excluded.first_message,
    started_at = excluded.started_at,
    last_activity_at = excluded.last_activity_at,
    run_count = excluded.run_count
"""


# ---- row mapping ------------------------------------------------------------------------------


@cache
def _upsert_sql(kind: type[Row]) -> str:
    columns = queries.names(kind)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "id")
    return (
        f"INSERT INTO {kind.table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        f" ON CONFLICT (id) DO UPDATE SET {updates}"
    )


def _values(row: Row) -> tuple[Any, ...]:
    values = []
    for column in queries.names(type(row)):
        value = getattr(row, column)
        if column in row.json_columns and value is not None:
            value = orjson.dumps(value).decode()
        values.append(value)
    return tuple(values)
