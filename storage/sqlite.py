"""SQLite backend: one write connection on its own thread, one read connection for the API.

Each write (a whole batch, a delete, a ping) is one hand-off to the writer thread, where plain
`sqlite3` runs the transaction start to finish; reads go through aiosqlite beside it (WAL).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from storage import queries
from storage.base import RunFilter, StoreUnavailable
from storage.migrations import MIGRATIONS
from storage.records import WRITE_ORDER, Row, RunRow, dumps, now, valid_text

log = logging.getLogger(__name__)

_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",  # WAL + NORMAL: durable across process crashes, fast commits
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 1000",  # a locked database fails fast: the writer spools meanwhile
)
_OPEN = "'in_progress'"
TEXT_INDEX_CUTOFF = 1000  # matches past which walking the newest runs beats the text index


class SqliteStore:
    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None  # used on the writer thread only
        self._reader: aiosqlite.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="chatdebug-sqlite-writer")
        self._inode: int | None = None

    async def _on_writer[T](self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.DataError, sqlite3.InterfaceError):
            raise  # the rows are at fault, not the database
        except sqlite3.DatabaseError as e:  # locked, read-only, full, I/O, not a database
            raise StoreUnavailable(str(e)) from e

    # ---- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        await self._on_writer(self._open_writer)
        self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        self._reader.row_factory = sqlite3.Row
        for pragma in _PRAGMAS:
            await self._reader.execute(pragma)

    def _open_writer(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        for pragma in _PRAGMAS:
            conn.execute(pragma)
        _migrate(conn)
        self._db = conn
        self._inode = self._current_inode()

    def _current_inode(self) -> int | None:
        try:
            return None if self.path == ":memory:" else os.stat(self.path).st_ino
        except FileNotFoundError:
            return None

    def _writable(self) -> sqlite3.Connection:
        """SQLite keeps writing into a deleted file: refuse, so rows are spooled, not lost."""
        if self._db is None:
            raise sqlite3.OperationalError("the store is not open")
        if self.path != ":memory:" and self._current_inode() != self._inode:
            raise sqlite3.OperationalError("the database file was removed or replaced")
        return self._db

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.close()
            self._reader = None
        await self._on_writer(self._close_writer)

    def _close_writer(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # ---- writes (each one hand-off to the writer thread) --------------------------------

    async def write(self, rows: list[Row]) -> None:
        await self._on_writer(self._write, rows)

    def _write(self, rows: list[Row]) -> None:
        conn = self._writable()
        by_table: dict[type[Row], list[tuple[Any, ...]]] = {}
        for row in sorted(rows, key=lambda r: WRITE_ORDER[r.table]):
            by_table.setdefault(type(row), []).append(_values(row))
        conversations = {r.conversation_id for r in rows if isinstance(r, RunRow) and r.conversation_id}
        with _transaction(conn):
            moved = _moved_from(conn, [r for r in rows if isinstance(r, RunRow)])
            for kind, values in by_table.items():
                conn.executemany(_upsert_sql(kind), values)
            _refresh_conversations(conn, conversations)
            _refresh_conversations(conn, moved - conversations, deleted=True)

    async def interrupt_open(self, finished_at: str) -> int:
        return await self._on_writer(self._interrupt_open, finished_at)

    def _interrupt_open(self, finished_at: str) -> int:
        conn = self._writable()
        error = orjson.dumps({"class": "canceled", "message": "the proxy stopped before this ended"}).decode()
        with _transaction(conn):
            conn.execute(
                f"UPDATE attempts SET status = 'interrupted', finished_at = ?, error_class = 'canceled',"
                f" error = ? WHERE status = {_OPEN}",
                (finished_at, error),
            )
            conn.execute(
                f"UPDATE steps SET status = 'interrupted', finished_at = ? WHERE status = {_OPEN}",
                (finished_at,),
            )
            cur = conn.execute(
                f"UPDATE runs SET status = 'interrupted', finished_at = ?, updated_at = ?"
                f" WHERE status = {_OPEN}",
                (finished_at, finished_at),
            )
        return cur.rowcount

    async def ping(self) -> bool:
        """True when a write lock can be taken (reopening a database whose file went away)."""
        return await self._on_writer(self._ping)

    def _ping(self) -> bool:
        try:
            if self.path != ":memory:" and self._current_inode() != self._inode:
                self._close_writer()  # the file went away: start a new one where it was
                self._open_writer()
            conn = self._writable()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
            return True
        except Exception:
            return False

    async def delete_runs(self, run_ids: list[str]) -> list[str]:
        """Delete runs with their steps, attempts and bodies; returns the ids that existed."""
        return await self._on_writer(self._delete_runs, run_ids) if run_ids else []

    def _delete_runs(self, run_ids: list[str]) -> list[str]:
        conn = self._writable()
        marks = ", ".join("?" * len(run_ids))
        with _transaction(conn):
            found = conn.execute(
                f"SELECT id, conversation_id FROM runs WHERE id IN ({marks})", run_ids
            ).fetchall()
            conn.execute(f"DELETE FROM runs WHERE id IN ({marks})", run_ids)
            _refresh_conversations(conn, {c for _, c in found if c is not None}, deleted=True)
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
        sql = f"SELECT id FROM runs WHERE {' AND '.join(clauses) or '1 = 1'} LIMIT ?"
        rows = await self._on_writer(lambda: self._writable().execute(sql, [*params, limit]).fetchall())
        return [r[0] for r in rows]

    # ---- reads --------------------------------------------------------------------------

    async def list_runs(
        self, where: RunFilter, limit: int, cursor: tuple[str, str] | None
    ) -> list[dict[str, Any]]:
        return await queries.list_runs(self._fetch, where, limit, cursor, await self._text_narrowing(where.q))

    async def _text_narrowing(self, q: str | None) -> tuple[str, list[Any]] | None:
        """For a rare or absent `q`, the trigram index names the few runs to look at; a common one
        is found faster by walking the newest runs (the LIKE does that)."""
        if not q or len(q) < 3:
            return None
        phrase = '"' + q.replace('"', '""') + '"'
        (row,) = await self._fetch(
            "SELECT COUNT(*) AS n FROM (SELECT 1 FROM runs_fts WHERE runs_fts MATCH ? LIMIT ?)",
            [phrase, TEXT_INDEX_CUTOFF],
        )
        if row["n"] >= TEXT_INDEX_CUTOFF:
            return None
        return "rowid IN (SELECT rowid FROM runs_fts WHERE runs_fts MATCH ?)", [phrase]

    async def find_history(self, hashes: list[str], response_id: str | None) -> list[dict[str, Any]]:
        return await queries.find_history(self._fetch, hashes, response_id)

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

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        if self._reader is None:
            raise RuntimeError("the store is not open")
        async with self._reader.execute(sql, params) as cur:
            return list(await cur.fetchall())


_CONVERSATION_UPSERT = """
INSERT INTO conversations (id, first_message, started_at, last_activity_at, run_count,
                           cost_total, kinds, error_count, total_tokens)
SELECT conversation_id,
       (SELECT first_message FROM runs f WHERE f.conversation_id = runs.conversation_id
        ORDER BY started_at, id LIMIT 1),
       MIN(started_at), MAX(updated_at), COUNT(*),
       SUM(cost_total), GROUP_CONCAT(DISTINCT kind),
       SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END), SUM(total_tokens)
FROM runs WHERE conversation_id = ? GROUP BY conversation_id
ON CONFLICT (id) DO UPDATE SET
    first_message = excluded.first_message,
    started_at = excluded.started_at,
    last_activity_at = excluded.last_activity_at,
    run_count = excluded.run_count,
    cost_total = excluded.cost_total,
    kinds = excluded.kinds,
    error_count = excluded.error_count,
    total_tokens = excluded.total_tokens
"""


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
    for name, sql, only in MIGRATIONS:
        if name not in done and only in (None, "sqlite"):
            stamp = now().replace("'", "")
            conn.executescript(
                f"BEGIN; {sql}; INSERT INTO schema_migrations VALUES ('{name}', '{stamp}'); COMMIT;"
            )
            log.info("applied migration %s", name)


class _transaction:
    """BEGIN ... COMMIT, or ROLLBACK on any error (the connection runs in autocommit mode)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN")

    def __exit__(self, kind: object, *_: object) -> None:
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")


def _moved_from(conn: sqlite3.Connection, runs: list[RunRow]) -> set[str]:
    """Conversations that runs of this batch are leaving (a title joined its turn's conversation)."""
    if not runs:
        return set()
    found: set[str] = set()
    new = {r.id: r.conversation_id for r in runs}
    ids = list(new)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for run_id, old in conn.execute(f"SELECT id, conversation_id FROM runs WHERE id IN ({marks})", chunk):
            if old is not None and old != new[run_id]:
                found.add(old)
    return found


def _refresh_conversations(
    conn: sqlite3.Connection, conversation_ids: set[str], deleted: bool = False
) -> None:
    """Keep each conversation's summary row in step with its runs (indexed queries)."""
    ids = [(c,) for c in conversation_ids]
    conn.executemany(_CONVERSATION_UPSERT, ids)
    if deleted:  # a conversation whose last run went has no summary either
        conn.executemany(
            "DELETE FROM conversations WHERE id = ?"
            " AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.conversation_id = conversations.id)",
            ids,
        )


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
            value = dumps(value).decode()
        elif isinstance(value, str) and not value.isascii():
            value = valid_text(value)
        values.append(value)
    return tuple(values)
