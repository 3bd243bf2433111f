"""SQLite backend: one write connection on its own thread, one read connection for the API.

Each write (a whole batch, a delete, a ping) is one hand-off to the writer thread, where plain
`sqlite3` runs the transaction start to finish; reads go through aiosqlite beside it (WAL).

The store opens lazily and reopens itself: nothing here is fatal to the process. A database
that is locked, read-only, not a database or gone raises `StoreUnavailable` until a later probe
opens it; a write connection whose probe failed is closed, so the next one starts from a fresh
descriptor (a file made writable again is written). The reader follows: it reopens when the
writer did, or when the file at the path is no longer the one it has open.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiosqlite
import orjson

from storage import queries, sql, stats
from storage.base import RunFilter, StoreSilent, StoreUnavailable, within
from storage.files import create_private, tighten
from storage.migrations import MIGRATIONS
from storage.records import (
    WRITE_ORDER,
    AttemptRow,
    Row,
    RunRow,
    StepRow,
    dumps,
    now,
    valid_text,
)

log = logging.getLogger(__name__)

BUSY_SECONDS = 1.0  # a locked database fails fast: the writer spools meanwhile
ANSWER_SECONDS = 5.0  # a stat of the database file: a disk slower than this has stopped answering
_PRAGMAS = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",  # WAL + NORMAL: durable across process crashes, fast commits
    "PRAGMA foreign_keys = ON",
)
# Takes the write lock and touches the main database, so a read-only descriptor fails here
# (BEGIN IMMEDIATE alone succeeds on one).
_WRITE_PROBE = "UPDATE schema_migrations SET name = name WHERE 0"
TEXT_INDEX_CUTOFF = 1000  # matches past which walking the newest runs beats the text index
DELETED_MEMORY = 10_000  # ids of runs deleted lately, whose late rows are dropped quietly
_ROW_ERRORS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.DataError, sqlite3.InterfaceError)

FileId = tuple[int, int] | None  # (device, inode) of the file at the path


class SqliteStore(queries.Reads):
    batch_rows = 1_000
    write_lanes = 1  # one connection writes

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None  # used on the writer thread only
        self._file: FileId = None  # the file the write connection has open
        self._generation = 0  # counts the write connection's (re)opens: the reader follows it
        self._reader: aiosqlite.Connection | None = None
        self._reader_file: FileId = None
        self._reader_generation = 0
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="chatdebug-sqlite-writer")
        # `answers`: its own thread, one stat at a time (a disk that hangs holds it, not the
        # default executor's, which name lookups share)
        self._stat_thread = ThreadPoolExecutor(1, thread_name_prefix="chatdebug-sqlite-stat")
        self._stat: asyncio.Future[os.stat_result] | None = None
        self._deleted: OrderedDict[str, None] = OrderedDict()  # written on the writer thread only

    @property
    def location(self) -> str:
        return self.path

    async def _on_writer[T](self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        except _ROW_ERRORS:
            raise  # the rows are at fault, not the database
        except (sqlite3.DatabaseError, OSError) as e:  # locked, read-only, full, I/O, not a database
            raise StoreUnavailable(str(e)) from e

    # ---- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Open now (raises `StoreUnavailable`); any later write or probe opens it too."""
        await self._on_writer(self._open_writer)

    def _open_writer(self) -> None:
        self._close_writer()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            create_private(self.path)  # SQLite gives its WAL and -shm files the database's mode
            for suffix in ("-wal", "-shm"):
                tighten(f"{self.path}{suffix}")
        conn = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False)
        try:
            for pragma in _PRAGMAS:
                conn.execute(pragma)
            _with_math(conn)
            _migrate(conn)
            _probe_writes(conn)
        except BaseException:
            conn.close()
            raise
        self._db = conn
        self._file = self._current_file()
        self._generation += 1

    def _current_file(self) -> FileId:
        return _file_id(self.path)

    def _writable(self) -> sqlite3.Connection:
        """The write connection, opened if need be. SQLite keeps writing into a deleted file:
        refuse, so rows are spooled, not lost (the next probe opens the file at the path)."""
        if self._db is None:
            self._open_writer()
        assert self._db is not None
        if self.path != ":memory:" and self._current_file() != self._file:
            raise sqlite3.OperationalError("the database file was removed or replaced")
        return self._db

    async def close(self) -> None:
        await self._close_reader()
        await self._on_writer(self._close_writer)

    def _close_writer(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # ---- writes (each one hand-off to the writer thread) --------------------------------

    async def write(self, rows: list[Row]) -> list[Row]:
        return await self._on_writer(self._write, rows)

    def _write(self, rows: list[Row]) -> list[Row]:
        conn = self._writable()
        gone = [r for r in rows if sql.run_id(r) in self._deleted]  # late rows of a run deleted here
        rows = [r for r in rows if sql.run_id(r) not in self._deleted] if gone else rows
        try:
            _upsert(conn, rows)
        except sqlite3.IntegrityError as e:  # a run, step or attempt they belong to is gone
            if "FOREIGN KEY" not in str(e):
                raise
            orphans = _orphans(conn, rows)
            if not orphans:
                raise
            gone += orphans
            _upsert(conn, [r for r in rows if id(r) not in {id(o) for o in orphans}])
        return gone

    async def interrupt_open(
        self, finished_at: str, updated_before: str | None = None, *, own: bool = True
    ) -> list[Row]:
        return await self._on_writer(self._interrupt_open, finished_at, updated_before)

    def _interrupt_open(self, finished_at: str, updated_before: str | None) -> list[Row]:
        """End runs left in progress (all, or those idle since `updated_before`) with their open
        steps and attempts; returns the rows as they now are. One process writes a SQLite
        database: every open run is its own."""
        conn = self._writable()
        error = orjson.dumps(sql.INTERRUPTED).decode()
        scope, params = "", []
        with _transaction(conn):
            if updated_before is not None:
                stale = f"SELECT id FROM runs WHERE status = {sql.OPEN} AND updated_at < ?"
                ids = [i for (i,) in conn.execute(stale, (updated_before,))]
                if not ids:
                    return []
                scope, params = sql.SQLITE.in_list, [orjson.dumps(ids).decode()]
            ending_attempts, ending_steps, ending_runs = sql.interrupt(sql.SQLITE, scope)
            attempts = _returning(conn, ending_attempts, [finished_at, error, *params])
            steps = _returning(conn, ending_steps, [finished_at, *params])
            runs = _returning(conn, ending_runs, [finished_at, finished_at, *params])
            _refresh_conversations(conn, {r["conversation_id"] for r in runs if r["conversation_id"]})
        return [
            *(sql.row_from_db(RunRow, r) for r in runs),
            *(sql.row_from_db(StepRow, r) for r in steps),
            *(sql.row_from_db(AttemptRow, r) for r in attempts),
        ]

    async def probe(self) -> None:
        """Raise `StoreUnavailable` (saying why) unless the database takes writes now; opens or
        reopens it as needed."""
        await self._on_writer(self._probe)

    def _probe(self) -> None:
        try:
            if self._db is None or (self.path != ":memory:" and self._current_file() != self._file):
                self._open_writer()  # not open yet, or the file went away: open the one at the path
            else:
                _probe_writes(self._writable())
        except BaseException:
            self._close_writer()  # a fresh descriptor next time: the file may have been made writable
            raise

    async def answers(self) -> bool:
        """The file's metadata, read beside the writer thread (which may be the one held): a
        disk that has stopped answering holds that too (a disk that answers from its caches
        alone looks alive)."""
        if self.path == ":memory:":
            return True
        if self._stat is None or self._stat.done():
            self._stat = asyncio.get_running_loop().run_in_executor(self._stat_thread, os.stat, self.path)
        try:  # a stat still held from before is waited for again, not joined by another
            await within(asyncio.shield(self._stat), ANSWER_SECONDS, "a stat")
        except StoreSilent:
            return False
        except OSError:  # gone, say: the disk answered, and the write will say what is wrong
            pass
        return True

    async def ping(self) -> bool:
        """True when the database takes writes (opening or reopening it as needed)."""
        try:
            await self.probe()
        except StoreUnavailable:
            return False
        return True

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
        for run_id, _ in found:  # rows of these runs still on their way are dropped quietly
            self._deleted[run_id] = None
        while len(self._deleted) > DELETED_MEMORY:
            self._deleted.popitem(last=False)
        return [run_id for run_id, _ in found]

    async def select_run_ids(
        self,
        *,
        conversation_id: str | None = None,
        started_before: str | None = None,
        updated_before: str | None = None,
        limit: int = 1000,
    ) -> list[str]:
        query, params = sql.select_run_ids(conversation_id, started_before, updated_before, limit)
        rows = await self._on_writer(lambda: self._writable().execute(query, params).fetchall())
        return [r[0] for r in rows]

    def watch(self, on_rows: Callable[[list[Row]], None], on_deleted: Callable[[list[str]], None]) -> None:
        """Only this process writes the file: nothing else to report."""

    async def leads(self) -> bool:
        """One process owns a SQLite database: it runs retention and the stale sweep."""
        return True

    async def drop_days(self, idle_before: str) -> list[str]:
        """A SQLite file has no partitions: retention deletes its runs in batches."""
        return []

    async def fold_rollups(self) -> None:
        await self._on_writer(self._fold_rollups)

    def _fold_rollups(self) -> None:
        conn = self._writable()
        with _transaction(conn):
            for table in stats.ROLLUPS:
                if hours := [h for (h,) in conn.execute(stats.dirty_hours(table))]:
                    for statement, params in stats.fold(table, hours, sql.SQLITE):
                        conn.execute(statement, params)

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

    def size_bytes(self) -> int:
        """The database with its WAL, as it occupies the disk."""
        if self.path == ":memory:":
            return 0
        return sum(p.stat().st_size for p in map(Path, (self.path, f"{self.path}-wal")) if p.exists())

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
        reader = await self._reading()
        try:
            async with reader.execute(sql, params) as cur:
                return list(await cur.fetchall())
        except _ROW_ERRORS:
            raise
        except sqlite3.DatabaseError as e:  # locked, gone, not a database: a fresh reader next time
            await self._close_reader()
            raise StoreUnavailable(str(e)) from e

    async def _reading(self) -> aiosqlite.Connection:
        """The read connection, reopened when the writer reopened or the file was replaced."""
        current = None if self.path == ":memory:" else self._current_file()
        if self.path != ":memory:" and current is None:
            await self._close_reader()
            raise StoreUnavailable("the database file is missing")
        if self._reader is not None and (current, self._generation) == (
            self._reader_file,
            self._reader_generation,
        ):
            return self._reader
        await self._close_reader()
        generation = self._generation
        try:  # never creates the file: that is the writer's, made private
            # the reader never writes, not even the journal mode: no pragmas
            reader = await aiosqlite.connect(
                _read_uri(self.path), timeout=BUSY_SECONDS, uri=True, isolation_level=None
            )
            reader.row_factory = sqlite3.Row
            await _reader_with_math(reader)
        except sqlite3.DatabaseError as e:
            raise StoreUnavailable(str(e)) from e
        self._reader, self._reader_file, self._reader_generation = reader, current, generation
        return reader

    async def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            try:
                await reader.close()
            except sqlite3.Error as e:
                log.debug("closing the reader: %s", e)


def _with_math(conn: sqlite3.Connection) -> None:
    """The rollup triggers bucket latencies with `ln` and `ceil`: SQLite's math functions, which
    a library built without them gets here (only this process's connections need them)."""
    try:
        conn.execute("SELECT ln(2.0), ceil(0.5)")
    except sqlite3.OperationalError:
        conn.create_function("ln", 1, _ln, deterministic=True)
        conn.create_function("ceil", 1, _ceil, deterministic=True)


async def _reader_with_math(reader: aiosqlite.Connection) -> None:
    try:
        await reader.execute("SELECT ln(2.0), ceil(0.5)")
    except sqlite3.OperationalError:
        await reader.create_function("ln", 1, _ln, deterministic=True)
        await reader.create_function("ceil", 1, _ceil, deterministic=True)


def _ceil(value: float | None) -> int | None:
    return None if value is None else math.ceil(value)


def _ln(value: float | None) -> float | None:
    return None if value is None or value <= 0 else math.log(value)


def _read_uri(path: str) -> str:
    if path == ":memory:":
        return "file::memory:"
    return f"file:{quote(os.path.abspath(path))}?mode=rw"


def _file_id(path: str) -> FileId:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _probe_writes(conn: sqlite3.Connection) -> None:
    """Raise unless a write lock can be taken and the main database written."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_WRITE_PROBE)
    finally:
        conn.execute("ROLLBACK")


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
    for m in MIGRATIONS:
        if m.name not in done and (script := m.sql("sqlite")) is not None:
            stamp = now().replace("'", "")
            conn.executescript(
                f"BEGIN; {script}; INSERT INTO schema_migrations VALUES ('{m.name}', '{stamp}'); COMMIT;"
            )
            log.info("applied migration %s", m.name)


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
    if not conversation_ids:
        return
    ids = (orjson.dumps(sorted(conversation_ids)).decode(),)
    conn.execute(sql.conversation_upsert(sql.SQLITE), ids)
    if deleted:  # a conversation whose last run went has no summary either
        conn.execute(sql.conversations_gone(sql.SQLITE), ids)


# ---- row mapping ------------------------------------------------------------------------------


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


def _upsert(conn: sqlite3.Connection, rows: list[Row]) -> None:
    by_table: dict[type[Row], list[tuple[Any, ...]]] = {}
    for row in sorted(rows, key=lambda r: WRITE_ORDER[r.table]):
        by_table.setdefault(type(row), []).append(_values(row))
    conversations = {r.conversation_id for r in rows if isinstance(r, RunRow) and r.conversation_id}
    with _transaction(conn):
        moved = _moved_from(conn, [r for r in rows if isinstance(r, RunRow)])
        for kind, values in by_table.items():
            conn.executemany(sql.upsert(kind, sql.SQLITE), values)
        _refresh_conversations(conn, conversations)
        _refresh_conversations(conn, moved - conversations, deleted=True)


def _orphans(conn: sqlite3.Connection, rows: list[Row]) -> list[Row]:
    """Rows whose run, step or attempt is neither in the batch nor in the database (deleted)."""
    return sql.orphans(rows, {t: _existing(conn, t, ids) for t, ids in sql.parents_to_look_up(rows).items()})


def _existing(conn: sqlite3.Connection, table: str, ids: Iterable[str]) -> set[str]:
    wanted = list(ids)
    if not wanted:
        return set()
    query = f"SELECT id FROM {table} WHERE id IN (SELECT value FROM json_each(?))"
    return {i for (i,) in conn.execute(query, (orjson.dumps(wanted).decode(),))}


def _returning(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[sqlite3.Row]:
    cur = conn.cursor()
    cur.row_factory = sqlite3.Row
    return cur.execute(sql, params).fetchall()
