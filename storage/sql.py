"""The write SQL both backends run, written once: upserts, conversation summaries, ending open
runs, deletes. `?` placeholders throughout (PostgreSQL's driver gets `%s`: `Dialect.render`);
where the engines spell a thing differently, the dialect says how.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson

from storage.records import AttemptRow, BodyRow, Row, RunRow, StepRow, names

OPEN = "'in_progress'"


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    greatest: str  # the two-argument maximum
    kinds: str  # the distinct kinds of a conversation's runs, comma-separated
    in_list: str  # `column IN` a list passed as one parameter, `{}` for the column
    row_key: str = "id"  # the unique key of runs, steps, attempts and bodies

    def render(self, sql: str) -> str:
        return sql if self.name == "sqlite" else sql.replace("%", "%%").replace("?", "%s")


SQLITE = Dialect("sqlite", "MAX", "GROUP_CONCAT(DISTINCT kind)", "{} IN (SELECT value FROM json_each(?))")
# PostgreSQL partitions a run's rows by its day: the key holds the partition's column
POSTGRES = Dialect("postgres", "GREATEST", "string_agg(DISTINCT kind, ',')", "{} = ANY(?)", "id, day")


# A run's snapshots are ordered by how much they know: one that knows fewer attempts (an older
# snapshot replayed late, or a replica that has not seen the steps another one added) does not
# overwrite a newer one, and a later process's write never moves a run backwards.
def _run_keeps(d: Dialect) -> dict[str, str]:
    return {
        "step_count": f"{d.greatest}(runs.step_count, excluded.step_count)",
        "attempt_count": f"{d.greatest}(runs.attempt_count, excluded.attempt_count)",
        "started_at": "CASE WHEN runs.started_at <> '' AND runs.started_at < excluded.started_at"
        " OR excluded.started_at = '' THEN runs.started_at ELSE excluded.started_at END",
    }


_RUN_NEWER = " WHERE (excluded.attempt_count, excluded.updated_at) >= (runs.attempt_count, runs.updated_at)"
# a completed step stays completed: a replica whose retry window ran out on an attempt that
# another replica's retry then completed must not mark the step failed
_STEP_NEWER = " WHERE steps.status <> 'completed' OR excluded.status = 'completed'"
_NEWER = {"runs": _RUN_NEWER, "steps": _STEP_NEWER}


@cache
def upsert(kind: type[Row], d: Dialect, extra: tuple[str, ...] = ()) -> str:
    """Insert a row, or update every column of the stored one (`extra`: columns the backend adds)."""
    columns = (*names(kind), *extra)
    keeps = _run_keeps(d) if kind is RunRow else {}
    updates = ", ".join(f"{c} = {keeps.get(c, f'excluded.{c}')}" for c in columns if c != "id")
    newer = _NEWER.get(kind.table, "")
    return (
        f"INSERT INTO {kind.table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        f" ON CONFLICT ({d.row_key}) DO UPDATE SET {updates}{newer}"
    )


@cache
def upsert_from(kind: type[Row], d: Dialect, source: str, extra: tuple[str, ...] = ()) -> str:
    """`upsert` from the rows of another table (a staging table filled by COPY)."""
    sql = upsert(kind, d, extra)
    head, tail = sql.split(" VALUES ", 1)
    return f"{head} SELECT {', '.join((*names(kind), *extra))} FROM {source}{tail[tail.index(')') + 1 :]}"


@cache
def conversation_upsert(d: Dialect) -> str:
    """Recompute the summaries of the conversations a list names (one parameter) from their
    runs: never counted up in place."""
    return f"""
INSERT INTO conversations (id, first_message, started_at, last_activity_at, run_count,
                           cost_total, kinds, error_count, total_tokens)
SELECT conversation_id,
       (SELECT first_message FROM runs f WHERE f.conversation_id = runs.conversation_id
        ORDER BY started_at, id LIMIT 1),
       MIN(started_at), MAX(updated_at), COUNT(*),
       SUM(cost_total), {d.kinds},
       SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END), SUM(total_tokens)
FROM runs WHERE {d.in_list.format("conversation_id")} GROUP BY conversation_id
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


@cache
def conversations_gone(d: Dialect) -> str:
    """Delete the summaries of the listed conversations that no run is left in."""
    return (
        f"DELETE FROM conversations WHERE {d.in_list.format('id')}"
        " AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.conversation_id = conversations.id)"
    )


def interrupt(d: Dialect, scope: str) -> tuple[str, str, str]:
    """End the open attempts, steps and runs `scope` picks (a condition on the run id, `{}`
    standing for the column; may be empty), returning them. Parameters: (finished_at, error,
    *scope), (finished_at, *scope), (finished_at, finished_at, *scope)."""
    where = f" AND {scope.format('run_id')}" if scope else ""
    run_where = f" AND {scope.format('id')}" if scope else ""
    return (
        "UPDATE attempts SET status = 'interrupted', finished_at = ?, error_class = 'canceled',"
        f" error = ? WHERE status = {OPEN}{where} RETURNING *",
        f"UPDATE steps SET status = 'interrupted', finished_at = ? WHERE status = {OPEN}{where} RETURNING *",
        "UPDATE runs SET status = 'interrupted', finished_at = ?, updated_at = ?"
        f" WHERE status = {OPEN}{run_where} RETURNING *",
    )


# said of runs ended in the database, by a stop, a restart or the stale sweep: which of the two
# causes it was, the proxy's log and chatdebug_rows_dropped tell
INTERRUPTED = {
    "class": "canceled",
    "message": "its end never reached the database: the proxy stopped, or the record was dropped",
}


def select_run_ids(
    conversation_id: str | None, started_before: str | None, updated_before: str | None, limit: int
) -> tuple[str, list[object]]:
    clauses, params = [], []
    for column, op, value in (
        ("conversation_id", "=", conversation_id),
        ("started_at", "<", started_before),
        ("updated_at", "<", updated_before),
    ):
        if value is not None:
            clauses.append(f"{column} {op} ?")
            params.append(value)
    return f"SELECT id FROM runs WHERE {' AND '.join(clauses) or '1 = 1'} LIMIT ?", [*params, limit]


# ---- rows whose parent is gone ------------------------------------------------------------------


def parents_to_look_up(rows: list[Row]) -> dict[str, set[str]]:
    """The runs, steps and attempts a batch's rows hang from that the batch does not hold."""
    ids = {table: {r.id for r in rows if r.table == table} for table in ("runs", "steps", "attempts")}
    return {
        "runs": {r.run_id for r in rows if isinstance(r, StepRow)} - ids["runs"],
        "steps": {r.step_id for r in rows if isinstance(r, AttemptRow)} - ids["steps"],
        "attempts": {r.id for r in rows if isinstance(r, BodyRow)} - ids["attempts"],
    }


def orphans(rows: list[Row], stored: Mapping[str, set[str]]) -> list[Row]:
    """Rows whose run, step or attempt is neither in the batch (kept) nor `stored` (deleted):
    `stored` holds which of `parents_to_look_up` the database has."""
    runs = {r.id for r in rows if isinstance(r, RunRow)} | stored["runs"]
    steps = [r for r in rows if isinstance(r, StepRow)]
    kept_steps = {r.id for r in steps if r.run_id in runs} | stored["steps"]
    attempts = [r for r in rows if isinstance(r, AttemptRow)]
    kept_attempts = {r.id for r in attempts if r.step_id in kept_steps} | stored["attempts"]
    return [
        *(r for r in steps if r.run_id not in runs),
        *(r for r in attempts if r.step_id not in kept_steps),
        *(r for r in rows if isinstance(r, BodyRow) and r.id not in kept_attempts),
    ]


def run_id(row: Row) -> str | None:
    """The run a row belongs to (bodies name only their attempt)."""
    if isinstance(row, RunRow):
        return row.id
    return row.run_id if isinstance(row, StepRow | AttemptRow) else None


_BOOLEANS = ("streamed", "request_truncated", "response_truncated")


def row_from_db(kind: type[Row], row: Mapping[str, Any]) -> Row:
    """A stored row as the row type the writer commits (for its listeners)."""
    values: dict[str, Any] = {}
    for column in names(kind):
        value = row[column]
        if column in kind.json_columns and isinstance(value, str | bytes):
            value = orjson.loads(value)
        elif column in _BOOLEANS:
            value = bool(value)
        values[column] = value
    return kind(**values)
