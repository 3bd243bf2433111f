"""PostgreSQL backend: one store that many sidecars share.

psycopg 3, async, with a small pool for writes and reads. Each batch is one transaction: its rows
go into temporary staging tables with COPY and from there into the tables with one
`INSERT ... SELECT ... ON CONFLICT` per table (the write SQL is `storage/sql.py`'s, shared with
SQLite). Conversation summaries are recomputed from their runs, never counted up in place; the
conversations a batch touches are locked first (transaction-scoped advisory locks, in key
order), so a summary sees every run committed before it and replicas never deadlock.

Every commit notifies the other replicas (`NOTIFY chatdebug`): `watch` reads what they wrote
for this replica's event subscribers. Retention and the stale sweep run on the one replica that
holds the maintenance lock (`leads`). A replica ends only the open runs it recorded last.

Nothing here is fatal to the process: a server that is down, refuses us or restarts raises
`StoreUnavailable` (the writer spools meanwhile), and a later probe reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import socket
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import fields
from datetime import datetime
from decimal import Decimal
from functools import cache
from operator import attrgetter
from typing import Any

import orjson
import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool

from storage import queries, sql, stats
from storage.base import RunFilter, StoreSilent, StoreUnavailable, within
from storage.migrations import MIGRATIONS
from storage.records import WRITE_ORDER, AttemptRow, BodyRow, Row, RunRow, StepRow, dumps, now, valid_text
from storage.sql import POSTGRES as D

log = logging.getLogger(__name__)

CHANNEL = "chatdebug"
NOTIFY_BYTES = 7000  # a NOTIFY payload holds under 8000 bytes
CONNECT_SECONDS = 5.0
# How each connection is made. A peer gone without a word (its host died, a NAT forgot the flow)
# leaves a connection half open: unacknowledged data ends it after `tcp_user_timeout`, an idle
# one is probed by keepalives, instead of the kernel's ~15 minutes of retransmissions.
_CONNECTION: dict[str, Any] = {
    "connect_timeout": CONNECT_SECONDS,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
LOCK_SECONDS = 1.0  # a table or conversation another session holds fails fast: the writer spools
STATEMENT_SECONDS = 30.0
DELETED_MEMORY = 10_000
_MIGRATE_LOCK = 0x63686174646267  # "chatdbg": one replica migrates at a time
_LEADER_LOCK = _MIGRATE_LOCK + 1  # held by the replica that runs the periodic work
# the columns this backend fills: each row's partition (`day`), and which replica wrote a run last
_EXTRA: dict[type[Row], tuple[str, ...]] = {RunRow: ("recorded_by", "day")}
_DAY = ("day",)
_ID_TIME = re.compile(r"[a-z]+_([0-9a-f]{12})")  # `records.new_id`: its milliseconds
_UNAVAILABLE = (psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.InternalError_)
# What says the server cannot take writes now, rather than that a row is at fault: connection
# (08), resources (53), operator intervention (57), rollbacks (40), locks (55P03), read-only
# (25006), system errors (58). A row that breaks a limit (54: an index entry too large) must be
# refused alone, not keep every later batch in the spool for good.
_SERVER_STATES = ("08", "53", "57", "40", "55P03", "25006", "58", "XX")
# a NUL escape in JSON text (not an escaped backslash before "u0000"): jsonb refuses it
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
# a delete's rows, children first: no foreign key cascades (migration m011)
_DELETE_RUNS = (
    "DELETE FROM attempt_bodies b USING attempts a"
    " WHERE a.run_id = ANY(%s) AND b.id = a.id AND b.day = a.day",
    "DELETE FROM attempts WHERE run_id = ANY(%s)",
    "DELETE FROM steps WHERE run_id = ANY(%s)",
    "DELETE FROM runs WHERE id = ANY(%s)",
)

RowsSeen = Callable[[list[Row]], None]
Deleted = Callable[[list[str]], None]


class PostgresStore(queries.Reads):
    batch_rows = 5_000  # a round trip and a lock per batch: larger batches land more per second
    write_lanes = 2  # while one batch is on the server, the next is encoded (see bench/ingest_bench.py)

    def __init__(
        self, url: str, *, replica: str | None = None, pool_size: int = 4, lock_seconds: float = LOCK_SECONDS
    ) -> None:
        self.url = url
        self.lock_seconds = lock_seconds
        self.replica = replica or socket.gethostname()
        self.pool_size = pool_size
        self._pool: AsyncConnectionPool | None = None
        self._opening = asyncio.Lock()
        self._staged: set[int] = set()  # backends (pids) whose staging tables exist
        self._deleted: OrderedDict[str, None] = OrderedDict()
        self._leader: psycopg.AsyncConnection[Any] | None = None
        self._leading = False
        self._size = 0
        self._watch: asyncio.Task[None] | None = None

    @property
    def location(self) -> str:
        """The server and database, never the password."""
        try:
            parts = conninfo_to_dict(self.url)
        except psycopg.ProgrammingError:
            return "postgresql://(unreadable URL)"
        user = f"{parts['user']}@" if parts.get("user") else ""
        port = f":{parts['port']}" if parts.get("port") else ""
        return f"postgresql://{user}{parts.get('host', '')}{port}/{parts.get('dbname', '')}"

    # ---- lifecycle ----------------------------------------------------------------------

    async def open(self) -> None:
        async with self._opening:
            if self._pool is not None:
                return
            try:
                async with await _connect(self.url) as conn:
                    await _migrate(conn)
            except _UNAVAILABLE as e:
                raise StoreUnavailable(_why(e)) from e
            pool = AsyncConnectionPool(
                self.url,
                min_size=1,
                max_size=self.pool_size,
                kwargs={"autocommit": True, "row_factory": dict_row, **_CONNECTION},
                configure=self._configure,
                check=AsyncConnectionPool.check_connection,  # a server restart leaves dead connections
                timeout=CONNECT_SECONDS,
                open=False,
                name="chatdebug",
            )
            try:
                await pool.open(wait=True, timeout=CONNECT_SECONDS)
            except BaseException as e:  # a read given up on (cancelled) too: no pool left behind
                await asyncio.shield(pool.close())
                if not isinstance(e, Exception):
                    raise
                raise StoreUnavailable(_why(e)) from e
            self._pool = pool

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Waits are bounded: a lock held elsewhere or a stuck statement is an error, not a hang."""
        _json_as_text(conn)
        await conn.execute(f"SET lock_timeout = {int(self.lock_seconds * 1000)}")
        await conn.execute(f"SET statement_timeout = {int(STATEMENT_SECONDS * 1000)}")

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch
        if self._leader is not None:
            with contextlib.suppress(Exception):
                await self._leader.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection; any sign that the server is away is `StoreUnavailable`."""
        try:
            if self._pool is None:
                await self.open()
            assert self._pool is not None
            async with self._pool.connection() as conn:
                yield conn
        except _UNAVAILABLE as e:
            if not _server_state(e):
                raise  # the rows' fault: the writer refuses them alone
            raise StoreUnavailable(_why(e)) from e

    # ---- writes -------------------------------------------------------------------------

    async def write(self, rows: list[Row]) -> list[Row]:
        gone = [r for r in rows if sql.run_id(r) in self._deleted]
        rows = _newest([r for r in rows if sql.run_id(r) not in self._deleted] if gone else rows)
        if not rows:
            return gone
        async with self._connection() as conn:
            await self._stage(conn)  # outside the batch's transaction: a failed batch keeps them
            # outside it too: a new partition locks its table, which the batch would hold meanwhile
            days = await self._partitions(conn, rows)
            async with conn.transaction():
                return gone + await self._write(conn, rows, days)

    async def _write(
        self, conn: psycopg.AsyncConnection[Any], rows: list[Row], days: dict[str, int]
    ) -> list[Row]:
        """One batch inside its transaction; returns the rows left out (their run, step or
        attempt is gone: deleted meanwhile, here or by another replica)."""
        moved = await self._lock_conversations(conn, rows)
        if gone := await _orphans(conn, rows):
            left = {id(o) for o in gone}
            rows = [r for r in rows if id(r) not in left]
        await self._upsert(conn, rows, moved, days)
        await self._notify(conn, rows)
        return gone

    async def _stage(self, conn: psycopg.AsyncConnection[Any]) -> None:
        pid = conn.info.backend_pid
        if pid in self._staged:
            return
        for kind in WRITE_ORDER_KINDS:
            await conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS stage_{kind.table}"
                f" (LIKE {kind.table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
            )
        self._staged.add(pid)

    async def _lock_conversations(self, conn: psycopg.AsyncConnection[Any], rows: list[Row]) -> set[str]:
        """Lock the conversations the batch's runs join or leave; returns those they leave (a
        title joining its turn's conversation)."""
        runs = [r for r in rows if isinstance(r, RunRow)]
        if not runs:
            return set()
        joined = {r.conversation_id for r in runs if r.conversation_id}
        cur = await conn.execute(
            "SELECT DISTINCT conversation_id FROM runs WHERE id = ANY(%s) AND conversation_id IS NOT NULL",
            [[r.id for r in runs]],
        )
        left = {r["conversation_id"] for r in await cur.fetchall()} - joined
        await _lock(conn, joined | left)
        return left

    async def _upsert(
        self, conn: psycopg.AsyncConnection[Any], rows: list[Row], moved: set[str], days: dict[str, int]
    ) -> None:
        by_kind: dict[type[Row], list[Row]] = {}
        for row in rows:
            by_kind.setdefault(type(row), []).append(row)
        runs = by_kind.get(RunRow, [])
        for kind in WRITE_ORDER_KINDS:
            batch = by_kind.get(kind)
            if not batch:
                continue
            extra = _EXTRA.get(kind, _DAY)
            columns = (*queries.names(kind), *extra)
            stage = f"stage_{kind.table}"
            async with conn.cursor().copy(f"COPY {stage} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in sorted(batch, key=lambda r: r.id):  # one order for every writer: no deadlocks
                    values = _values(row)
                    day = days.get(row.id, 0) if isinstance(row, BodyRow) else day_of(sql.run_id(row) or "")
                    await copy.write_row([*values, self.replica, day] if kind is RunRow else [*values, day])
            # the staged rows go at commit (ON COMMIT DELETE ROWS), or with the savepoint they were in
            await conn.execute(D.render(sql.upsert_from(kind, D, stage, extra)))
        conversations = {r.conversation_id for r in runs if r.conversation_id}
        await _refresh_conversations(conn, conversations)
        await _refresh_conversations(conn, moved - conversations, deleted=True)

    async def _partitions(self, conn: psycopg.AsyncConnection[Any], rows: list[Row]) -> dict[str, int]:
        """Make the partitions of the days the batch's runs began on, where they are missing
        (another replica's retention may have dropped one this replica saw: asked every batch);
        returns the day of each body's attempt (an attempt of the batch, or a stored one)."""
        days = {day_of(r.run_id) for r in rows if isinstance(r, StepRow | AttemptRow)}
        days |= {day_of(r.id) for r in rows if isinstance(r, RunRow)}
        if days:  # (the function gives itself longer than the writes' lock timeout)
            await conn.execute(
                "SELECT chatdebug_partition(d) FROM unnest(%s::integer[]) AS d", [sorted(days)]
            )
        bodies = {r.id for r in rows if isinstance(r, BodyRow)}
        found = {r.id: day_of(r.run_id) for r in rows if isinstance(r, AttemptRow) and r.id in bodies}
        if missing := bodies - found.keys():
            cur = await conn.execute("SELECT id, day FROM attempts WHERE id = ANY(%s)", [list(missing)])
            found.update({r["id"]: r["day"] for r in await cur.fetchall()})
        return found

    async def _notify(self, conn: psycopg.AsyncConnection[Any], rows: list[Row]) -> None:
        """Tell the other replicas which rows this commit wrote (delivered at commit)."""
        ids: dict[str, list[str]] = {"runs": [], "steps": [], "attempts": []}
        for row in rows:
            if row.table in ids:
                ids[row.table].append(row.id)
        await _announce(conn, self.replica, ids)

    async def interrupt_open(
        self, finished_at: str, updated_before: str | None = None, *, own: bool = True
    ) -> list[Row]:
        clauses, params = [f"status = {sql.OPEN}"], []
        if updated_before is not None:
            clauses.append("updated_at < %s")
            params.append(updated_before)
        if own:
            clauses.append("recorded_by = %s")
            params.append(self.replica)
        error = orjson.dumps(sql.INTERRUPTED).decode()
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                f"SELECT id, conversation_id FROM runs WHERE {' AND '.join(clauses)}", params
            )
            found = await cur.fetchall()
            if not found:
                return []
            ids = [r["id"] for r in found]
            conversations = {r["conversation_id"] for r in found if r["conversation_id"]}
            await _lock(conn, conversations)
            ending_attempts, ending_steps, ending_runs = (D.render(s) for s in sql.interrupt(D, D.in_list))
            attempts = await (await conn.execute(ending_attempts, [finished_at, error, ids])).fetchall()
            steps = await (await conn.execute(ending_steps, [finished_at, ids])).fetchall()
            runs = await (await conn.execute(ending_runs, [finished_at, finished_at, ids])).fetchall()
            await _refresh_conversations(conn, conversations)
            ended = [
                *(sql.row_from_db(RunRow, r) for r in runs),
                *(sql.row_from_db(StepRow, r) for r in steps),
                *(sql.row_from_db(AttemptRow, r) for r in attempts),
            ]
            await self._notify(conn, ended)
        return ended

    async def probe(self) -> None:
        async with self._connection() as conn:
            cur = await conn.execute(
                "SELECT pg_is_in_recovery() AS standby, pg_database_size(current_database()) AS size"
            )
            row = await cur.fetchone()
        assert row is not None
        if row["standby"]:
            raise StoreUnavailable("the server is a read-only standby")
        self._size = int(row["size"])

    async def answers(self) -> bool:
        """A fresh connection and a `SELECT 1` on it (psycopg bounds each address's connect by
        `connect_timeout`). Only silence is no: an error is an answer (too many clients, starting
        up: the server is there, only busy; refused: the host is, and a connection to a server
        gone ends by itself, `_CONNECTION`)."""
        try:
            await within(_select_one(self.url), 3 * CONNECT_SECONDS, "a new connection")
        except (StoreSilent, psycopg.errors.ConnectionTimeout):
            return False
        except Exception:
            return True
        return True

    async def ping(self) -> bool:
        try:
            await self.probe()
        except StoreUnavailable:
            return False
        return True

    async def drop_days(self, idle_before: str) -> list[str]:
        """Retention by the day: drop the partitions of the days before `idle_before`'s whose
        every run is idle since before it (a day with a run still going waits; the batch
        deletes take what is left); returns the ids of the runs dropped."""
        last = int(datetime.fromisoformat(idle_before.replace("Z", "+00:00")).timestamp() // 86_400)
        dropped: list[str] = []
        async with self._connection() as conn:
            cur = await conn.execute(
                "SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'runs'::regclass"
            )
            days = sorted(int(r["name"].removeprefix("runs_d")) for r in await cur.fetchall())
            for day in (d for d in days if d < last):
                async with conn.transaction():
                    cur = await conn.execute(f"SELECT id, conversation_id, updated_at FROM runs_d{day}")
                    found = await cur.fetchall()
                    if any(r["updated_at"] >= idle_before for r in found):
                        continue
                    conversations = {r["conversation_id"] for r in found if r["conversation_id"]}
                    await _lock(conn, conversations)
                    for statement in stats.subtract(f"runs_d{day}", f"attempts_d{day}"):
                        await conn.execute(statement)  # a dropped table fires no trigger
                    await conn.execute("SELECT chatdebug_drop_day(%s)", [day])
                    await _refresh_conversations(conn, conversations, deleted=True)
                    ids = [r["id"] for r in found]
                    await _announce(conn, self.replica, {"deleted": ids})
                self._forget(ids)
                dropped += ids
        return dropped

    async def delete_runs(self, run_ids: list[str]) -> list[str]:
        if not run_ids:
            return []
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute("SELECT id, conversation_id FROM runs WHERE id = ANY(%s)", [run_ids])
            found = await cur.fetchall()
            conversations = {r["conversation_id"] for r in found if r["conversation_id"]}
            await _lock(conn, conversations)
            deleted = [r["id"] for r in found]
            for statement in _DELETE_RUNS:  # no foreign keys cascade (migration m011)
                await conn.execute(statement, [deleted])
            await _refresh_conversations(conn, conversations, deleted=True)
            await _announce(conn, self.replica, {"deleted": deleted})
        self._forget(deleted)
        return deleted

    def _forget(self, run_ids: list[str]) -> None:
        """Rows of these runs still on their way are dropped quietly."""
        for run_id in run_ids:
            self._deleted[run_id] = None
        while len(self._deleted) > DELETED_MEMORY:
            self._deleted.popitem(last=False)

    async def select_run_ids(
        self,
        *,
        conversation_id: str | None = None,
        started_before: str | None = None,
        updated_before: str | None = None,
        limit: int = 1000,
    ) -> list[str]:
        query, params = sql.select_run_ids(conversation_id, started_before, updated_before, limit)
        return [r["id"] for r in await self._fetch(query, params)]

    async def leads(self) -> bool:
        """Whether this replica holds the maintenance lock (taking it when free). The lock lives
        with one connection: a replica that dies lets it go, and another one takes over."""
        try:
            if self._leader is None or self._leader.closed or self._leader.broken:
                self._leader, self._leading = await _connect(self.url), False
            if self._leading:
                await self._leader.execute("SELECT 1")  # still connected: still holding it
            else:
                cur = await self._leader.execute("SELECT pg_try_advisory_lock(%s) AS got", [_LEADER_LOCK])
                row = await cur.fetchone()
                self._leading = bool(row and row["got"])
        except _UNAVAILABLE as e:
            self._leading = False
            raise StoreUnavailable(_why(e)) from e
        return self._leading

    async def fold_rollups(self) -> None:
        async with self._connection() as conn, conn.transaction():
            for table in stats.ROLLUPS:
                cur = await conn.execute(stats.dirty_hours(table))
                if hours := [r["hour"] for r in await cur.fetchall()]:
                    for statement, params in stats.fold(table, hours, D):
                        await conn.execute(D.render(statement), params)

    # ---- what other replicas write ------------------------------------------------------

    def watch(self, on_rows: RowsSeen, on_deleted: Deleted) -> None:
        """Call `on_rows` with the rows other replicas commit, `on_deleted` with the runs they
        delete, for as long as the store is open (reconnecting when the server comes back)."""
        if self._watch is None:
            self._watch = asyncio.create_task(self._listen(on_rows, on_deleted), name="chatdebug-pg-listen")

    async def _listen(self, on_rows: RowsSeen, on_deleted: Deleted) -> None:
        delay = 1.0
        while True:
            try:
                async with await _connect(self.url) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    delay = 1.0
                    async for note in conn.notifies():
                        message = orjson.loads(note.payload)
                        if message.get("by") == self.replica:
                            continue
                        if deleted := message.get("deleted"):
                            self._forget(deleted)
                            on_deleted(deleted)
                        elif rows := await self._read_rows(message):
                            on_rows(rows)
            except (psycopg.Error, StoreUnavailable, orjson.JSONDecodeError) as e:
                log.debug("listening for other replicas' records: %s; again in %gs", e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _read_rows(self, message: dict[str, list[str]]) -> list[Row]:
        rows: list[Row] = []
        for kind in (RunRow, StepRow, AttemptRow):
            if ids := message.get(kind.table):
                found = await self._fetch(f"SELECT * FROM {kind.table} WHERE id = ANY(?)", [ids])
                rows += [sql.row_from_db(kind, r) for r in found]
        return rows

    # ---- reads --------------------------------------------------------------------------

    # details and stats: queries.Reads

    async def list_runs(
        self, where: RunFilter, limit: int, cursor: tuple[str, str] | None
    ) -> list[dict[str, Any]]:
        # pg_trgm serves `q` without help, from one index over both texts
        return await queries.list_runs(
            self._fetch, where, limit, cursor, text_search=queries.TEXT_SEARCH_ONE_INDEX
        )

    def size_bytes(self) -> int:
        """The database's size when it was last probed."""
        return self._size

    async def _fetch(self, query: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        async with self._connection() as conn:
            cur = await conn.execute(in_dialect(query), list(params))
            rows = await cur.fetchall()
        return [{k: _plain(v) for k, v in r.items()} for r in rows]


WRITE_ORDER_KINDS: tuple[type[Row], ...] = tuple(
    sorted((RunRow, StepRow, AttemptRow, BodyRow), key=lambda k: WRITE_ORDER[k.table])
)


def in_dialect(query: str) -> str:
    """A read of `storage.queries` as PostgreSQL runs it: SQLite's LIKE ignores ASCII case, and
    ILIKE is the same search (one pg_trgm serves)."""
    return D.render(query).replace(" LIKE ", " ILIKE ")


def day_of(run_id: str) -> int:
    """A run's partition: the day (since 1970, UTC) in its id; 0 for an id without a time. The
    same as the database's `chatdebug_day` (migration m010)."""
    found = _ID_TIME.match(run_id)
    return int(found.group(1), 16) // 86_400_000 if found else 0


async def _connect(url: str) -> psycopg.AsyncConnection[Any]:
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row, **_CONNECTION)
    _json_as_text(conn)
    return conn


def _json_as_text(conn: psycopg.AsyncConnection[Any]) -> None:
    """jsonb comes back as its text, as SQLite gives it: psycopg would decode it as rows are
    fetched, on the loop the traffic shares; the reads decode it (`storage.queries`), a large
    one beside the loop, with orjson."""
    set_json_loads(_as_sent, conn)


def _as_sent(data: bytes) -> bytes:
    return data


async def _select_one(url: str) -> None:
    async with await _connect(url) as conn:
        await conn.execute("SELECT 1")


async def _migrate(conn: psycopg.AsyncConnection[Any]) -> None:
    """Bring the schema up to date, one replica at a time (the others wait, then find it done)."""
    await conn.execute("SELECT pg_advisory_lock(%s)", [_MIGRATE_LOCK])
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        done = {
            r["name"] for r in await (await conn.execute("SELECT name FROM schema_migrations")).fetchall()
        }
        for m in MIGRATIONS:
            script = m.sql("postgres")
            if m.name in done or script is None:
                continue
            async with conn.transaction():
                await conn.execute(script.encode())  # no parameters: several statements in one go
                await conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", [m.name, now()])
            log.info("applied migration %s", m.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(%s)", [_MIGRATE_LOCK])


async def _refresh_conversations(
    conn: psycopg.AsyncConnection[Any], conversation_ids: set[str], deleted: bool = False
) -> None:
    if not conversation_ids:
        return
    ids = [sorted(conversation_ids)]
    await conn.execute(D.render(sql.conversation_upsert(D)), ids)
    if deleted:
        await conn.execute(D.render(sql.conversations_gone(D)), ids)


async def _orphans(conn: psycopg.AsyncConnection[Any], rows: list[Row]) -> list[Row]:
    """Rows whose run, step or attempt is neither in the batch nor stored (deleted meanwhile):
    the store has no foreign keys to refuse them (migration m011). A batch holds the parents of
    nearly all its rows, so this rarely asks the server anything."""
    wanted = sql.parents_to_look_up(rows)
    if not any(wanted.values()):
        return []
    stored: dict[str, set[str]] = {}
    for table, ids in wanted.items():
        cur = await conn.execute(f"SELECT id FROM {table} WHERE id = ANY(%s)", [list(ids)])
        stored[table] = {r["id"] for r in await cur.fetchall()}
    return sql.orphans(rows, stored)


async def _lock(conn: psycopg.AsyncConnection[Any], conversation_ids: set[str]) -> None:
    """Hold these conversations until the transaction ends, taken in one order by every writer."""
    if conversation_ids:
        keys = sorted({_lock_key(c) for c in conversation_ids})
        await conn.execute(
            "SELECT pg_advisory_xact_lock(k) FROM (SELECT unnest(%s::bigint[]) AS k ORDER BY 1) AS keys",
            [keys],
        )


def _lock_key(conversation_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(conversation_id.encode(), digest_size=8).digest(), signed=True)


async def _announce(conn: psycopg.AsyncConnection[Any], replica: str, ids: dict[str, list[str]]) -> None:
    """Tell the other replicas of `ids` (delivered when the transaction commits), in one statement."""
    await conn.execute(
        "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", [CHANNEL, _payloads(replica, ids)]
    )


def _payloads(replica: str, ids: dict[str, list[str]]) -> list[str]:
    """The notifications announcing `ids`, each under the payload limit."""
    out: list[str] = []
    current: dict[str, Any] = {"by": replica}
    size = len(orjson.dumps(current))
    for key, values in ids.items():
        for value in values:
            if size + len(value) + 8 > NOTIFY_BYTES:
                out.append(orjson.dumps(current).decode())
                current, size = {"by": replica}, len(orjson.dumps(current))
            current.setdefault(key, []).append(value)
            size += len(value) + 8 + (len(key) if len(current[key]) == 1 else 0)
    if len(current) > 1:
        out.append(orjson.dumps(current).decode())
    return out


def _newest(rows: list[Row]) -> list[Row]:
    """One snapshot per row, the newest (a statement may not update one row twice)."""
    newest: dict[tuple[str, str], Row] = {}
    for row in rows:
        newest[(row.table, row.id)] = row
    return list(newest.values())


@cache
def _columns(kind: type[Row]) -> tuple[Callable[[Row], tuple[Any, ...]], tuple[int, ...], tuple[int, ...]]:
    """A row type's column getter (one C call per row), which positions hold JSON and which
    may hold text (the only values `_values` has to look at)."""
    columns = queries.names(kind)
    types = {f.name: str(f.type) for f in fields(kind)}
    json_at = tuple(i for i, c in enumerate(columns) if c in kind.json_columns)
    text_at = tuple(i for i, c in enumerate(columns) if i not in json_at and types[c].startswith("str"))
    return attrgetter(*columns), json_at, text_at


def _values(row: Row) -> list[Any]:
    """Column values as COPY takes them: JSON as text, and no NUL, which PostgreSQL's text and
    jsonb refuse (SQLite keeps it)."""
    get, json_at, text_at = _columns(type(row))
    values = list(get(row))
    for i in json_at:
        if (value := values[i]) is not None:
            text = dumps(value).decode()
            values[i] = _JSON_NUL.sub(r"\1\\ufffd", text) if "\\u0000" in text else text
    for i in text_at:
        if (value := values[i]).__class__ is str and not (value.isascii() and "\x00" not in value):
            value = valid_text(value)
            values[i] = value.replace("\x00", "\ufffd") if "\x00" in value else value
    return values


def _plain(value: Any) -> Any:
    """PostgreSQL sums integers as numeric: back to the int (or float) SQLite would give."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _server_state(error: BaseException) -> bool:
    state = getattr(error, "sqlstate", None)
    return state is None or state.startswith(_SERVER_STATES)


def _why(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
