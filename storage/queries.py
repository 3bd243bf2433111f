"""Read queries and the shapes they return: plain, parameterised SQL that any backend can run.

A backend supplies `fetch(sql, params) -> rows`; everything here is backend-neutral (`?`
placeholders; a PostgreSQL backend translates them). Rows come back as the API's dicts.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson

from storage import stats
from storage.base import Beside, RunFilter
from storage.records import USAGE_FIELDS, AttemptRow, BodyRow, Row, RunRow, StepRow, names

Fetch = Callable[[str, Sequence[Any]], Awaitable[list[Mapping[str, Any]]]]

# Bytes of stored text a read's rows hold from which they are shaped beside the loop (`Beside`):
# decoding is ~20 ms a MiB of JSON (a step of 90,000 messages: 0.12 s), and the proxy's traffic
# shares the loop with every reader.
LARGE_READ = 64 << 10


async def _inline(work: Callable[[], Any]) -> Any:
    return work()


async def _shaped[T](beside: Beside, shape: Callable[[], T], *tables: Sequence[Mapping[str, Any]]) -> T:
    """`shape()` on the loop for rows of a few KiB, nearly every read; else beside it."""
    stored = sum(
        len(v)
        for rows in tables
        for row in rows
        for v in map(row.__getitem__, row.keys())
        if isinstance(v, str | bytes)
    )
    return shape() if stored < LARGE_READ else await beside(shape)


# ---- shapes -----------------------------------------------------------------------------------


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def run_shape(row: Mapping[str, Any]) -> dict[str, Any]:
    hidden = ("error_class", "cost_total")
    run = {k: row[k] for k in names(RunRow) if k not in hidden and k not in USAGE_FIELDS}
    run["classification"] = {
        "source": run.pop("classification_source"),
        "reason": run.pop("classification_reason"),
    }
    run["usage"] = {k: row[k] for k in USAGE_FIELDS}
    for column in RunRow.json_columns:
        run[column] = _json(row[column])
    return run


# The columns that hold a call's payloads (its normalized request and response), up to MiBs of
# JSON: a reader that only sends them on (the JSON API) takes them as stored, an
# `orjson.Fragment` that its encoder copies, rather than decoding and encoding them again.
PAYLOADS = frozenset({"request", "response"})


def _payload(value: Any) -> Any:
    return orjson.Fragment(value) if isinstance(value, str | bytes) else value


def step_shape(row: Mapping[str, Any], as_stored: bool = False) -> dict[str, Any]:
    step = {k: row[k] for k in names(StepRow)}
    for column in StepRow.json_columns:
        step[column] = (_payload if as_stored and column in PAYLOADS else _json)(row[column])
    return step


def attempt_shape(row: Mapping[str, Any], as_stored: bool = False) -> dict[str, Any]:
    attempt = {k: row[k] for k in names(AttemptRow) if k != "error_class"}
    for column in AttemptRow.json_columns:
        attempt[column] = (_payload if as_stored and column in PAYLOADS else _json)(row[column])
    attempt["streamed"] = bool(attempt["streamed"])
    keys = set(row.keys())
    for column in names(BodyRow)[1:]:
        if column in keys:
            attempt[column] = bool(row[column]) if column.endswith("truncated") else row[column]
    return attempt


def row_mapping(row: Row) -> dict[str, Any]:
    """A row the writer just committed, as the database would return it."""
    return {name: getattr(row, name) for name in names(type(row))}


# ---- runs ---------------------------------------------------------------------------------------


# `q` finds text in a run's prompt or its first message: a LIKE pattern per `?` (SQLite's FTS
# index narrows it first). PostgreSQL searches both as one text (`TEXT_SEARCH_ONE_INDEX`).
TEXT_SEARCH = "(prompt LIKE ? ESCAPE '\\' OR first_message LIKE ? ESCAPE '\\')"
# Both texts joined by U+001F, which `q` never holds (it is taken out): to the letter the
# expression of PostgreSQL's trigram index (migration m012), so one index scan serves it.
TEXT_SEARCH_ONE_INDEX = "(COALESCE(prompt, '') || chr(31) || COALESCE(first_message, '')) LIKE ? ESCAPE '\\'"


def _run_filter(where: RunFilter, text_search: str = TEXT_SEARCH) -> tuple[list[str], list[Any]]:
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
        escaped = where.q.replace("\x1f", "").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append(text_search)
        params += [f"%{escaped}%"] * text_search.count("?")
    return clauses, params


async def list_runs(
    fetch: Fetch,
    where: RunFilter,
    limit: int,
    cursor: tuple[str, str] | None,
    narrow: tuple[str, list[Any]] | None = None,
    text_search: str = TEXT_SEARCH,
) -> list[dict[str, Any]]:
    """`narrow` is an extra (clause, params) a backend adds, e.g. a text index for `q`;
    `text_search` the backend's clause for `q` (`TEXT_SEARCH`)."""
    clauses, params = _run_filter(where, text_search)
    if narrow is not None:
        clauses.append(narrow[0])
        params += narrow[1]
    if cursor is not None:
        clauses.append("(started_at, id) < (?, ?)")  # a row value: an index range, not a scan
        params += [cursor[0], cursor[1]]
    where_sql = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = f"SELECT * FROM runs{where_sql} ORDER BY started_at DESC, id DESC LIMIT ?"
    return [run_shape(r) for r in await fetch(sql, [*params, limit])]


async def get_run(
    fetch: Fetch, run_id: str, beside: Beside = _inline, as_stored: bool = False
) -> dict[str, Any] | None:
    """A run with its steps and attempts; their payloads as stored (`PAYLOADS`) if `as_stored`."""
    runs = await fetch("SELECT * FROM runs WHERE id = ?", [run_id])
    if not runs:
        return None
    steps = await fetch("SELECT * FROM steps WHERE run_id = ? ORDER BY number", [run_id])
    attempts = await fetch("SELECT * FROM attempts WHERE run_id = ? ORDER BY number", [run_id])
    shape = functools.partial(_run_detail, runs[0], steps, attempts, as_stored)
    return shape() if as_stored else await _shaped(beside, shape, steps, attempts)


def _run_detail(
    run_row: Mapping[str, Any],
    step_rows: Sequence[Mapping[str, Any]],
    attempt_rows: Sequence[Mapping[str, Any]],
    as_stored: bool,
) -> dict[str, Any]:
    run = run_shape(run_row)
    steps = [step_shape(s, as_stored) for s in step_rows]
    by_step: dict[str, list[dict[str, Any]]] = {s["id"]: [] for s in steps}
    for attempt in attempt_rows:
        by_step.setdefault(attempt["step_id"], []).append(attempt_shape(attempt, as_stored))
    for step in steps:
        step["attempts"] = by_step[step["id"]]
    run["steps"] = steps
    return run


async def find_history(fetch: Fetch, hashes: Sequence[str], response_id: str | None) -> list[dict[str, Any]]:
    """Stored steps whose request is one of `hashes` (prefixes of a new request), or whose
    response is `response_id`, newest first, with their run's conversation."""
    clauses, params = [], []
    if hashes:
        clauses.append(f"s.request_hash IN ({','.join('?' * len(hashes))})")
        params += list(hashes)
    if response_id:
        clauses.append("s.response_id = ?")
        params.append(response_id)
    if not clauses:
        return []
    rows = await fetch(
        "SELECT s.id AS step_id, s.run_id, s.request_hash, s.response_id, r.conversation_id"
        f" FROM steps s JOIN runs r ON r.id = s.run_id WHERE {' OR '.join(clauses)}"
        " ORDER BY s.started_at DESC LIMIT 50",
        params,
    )
    return [dict(r) for r in rows]


_OBJECTS = {"run": ("runs", run_shape), "step": ("steps", step_shape), "attempt": ("attempts", attempt_shape)}


async def get_object(
    fetch: Fetch, kind: str, object_id: str, beside: Beside = _inline
) -> dict[str, Any] | None:
    """One run, step or attempt as its `/events` event carries it: the row alone (a run without
    its steps, an attempt without its bodies)."""
    table, shape = _OBJECTS[kind]
    rows = await fetch(f"SELECT * FROM {table} WHERE id = ?", [object_id])
    return await _shaped(beside, functools.partial(shape, rows[0]), rows) if rows else None


async def get_attempt(
    fetch: Fetch, attempt_id: str, beside: Beside = _inline, as_stored: bool = False
) -> dict[str, Any] | None:
    rows = await fetch(
        "SELECT a.*, b.request_body, b.response_body, b.request_truncated, b.response_truncated"
        " FROM attempts a LEFT JOIN attempt_bodies b ON b.id = a.id WHERE a.id = ?",
        [attempt_id],
    )
    if not rows:
        return None
    shape = functools.partial(attempt_shape, rows[0], as_stored)
    return shape() if as_stored else await _shaped(beside, shape, rows)


async def attempt_bodies(fetch: Fetch, run_id: str) -> dict[str, dict[str, Any]]:
    rows = await fetch(
        "SELECT b.* FROM attempt_bodies b JOIN attempts a ON a.id = b.id WHERE a.run_id = ?", [run_id]
    )
    return {r["id"]: {k: r[k] for k in names(BodyRow)[1:]} for r in rows}


# ---- conversations --------------------------------------------------------------------------------


async def list_conversations(
    fetch: Fetch, limit: int, cursor: tuple[str, str] | None, q: str | None = None
) -> list[dict[str, Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if cursor is not None:
        clauses.append("(last_activity_at, id) < (?, ?)")
        params += [cursor[0], cursor[1]]
    if q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append("first_message LIKE ? ESCAPE '\\'")
        params.append(f"%{escaped}%")
    where_sql = f" WHERE {' AND '.join(clauses)}" if clauses else ""
    sql = f"SELECT * FROM conversations{where_sql} ORDER BY last_activity_at DESC, id DESC LIMIT ?"
    return [dict(r) for r in await fetch(sql, [*params, limit])]


class Reads:
    """The read half of a store, over its `_fetch`: every backend answers from the same SQL."""

    # where rows holding large texts are shaped unless a read names its own place (`beside`): a
    # thread, the one the process gives (the sidecar's writer thread, `addons.offloop.writing`)
    beside: Beside = staticmethod(asyncio.to_thread)

    async def _fetch(self, sql: str, params: Sequence[Any]) -> list[Any]:
        raise NotImplementedError

    async def list_runs(
        self, where: RunFilter, limit: int, cursor: tuple[str, str] | None
    ) -> list[dict[str, Any]]:
        return await list_runs(self._fetch, where, limit, cursor)

    async def find_history(self, hashes: list[str], response_id: str | None) -> list[dict[str, Any]]:
        return await find_history(self._fetch, hashes, response_id)

    async def get_run(
        self, run_id: str, *, as_stored: bool = False, beside: Beside | None = None
    ) -> dict[str, Any] | None:
        return await get_run(self._fetch, run_id, beside or self.beside, as_stored)

    async def get_attempt(
        self, attempt_id: str, *, as_stored: bool = False, beside: Beside | None = None
    ) -> dict[str, Any] | None:
        return await get_attempt(self._fetch, attempt_id, beside or self.beside, as_stored)

    async def get_object(
        self, kind: str, object_id: str, *, beside: Beside | None = None
    ) -> dict[str, Any] | None:
        return await get_object(self._fetch, kind, object_id, beside or self.beside)

    async def attempt_bodies(self, run_id: str) -> dict[str, dict[str, Any]]:
        return await attempt_bodies(self._fetch, run_id)

    async def list_conversations(
        self, limit: int, cursor: tuple[str, str] | None, q: str | None = None
    ) -> list[dict[str, Any]]:
        return await list_conversations(self._fetch, limit, cursor, q)

    async def stats(self, since: str, until: str) -> dict[str, Any]:
        return await stats.stats(self._fetch, since, until)
