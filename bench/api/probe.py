"""The SQL behind a request, on SQLite: what `storage.queries` runs for it, timed and explained."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.api.traffic import DAY
from proxy.api import models as m
from proxy.api.params import decode_cursor
from storage import queries, stats
from storage.records import timestamp


@dataclass
class Query:
    sql: str
    params: list[Any]
    ms: float
    rows: int


@dataclass
class Probe:
    path: str
    queries: list[Query]

    @property
    def ms(self) -> float:
        return sum(x.ms for x in self.queries)


class RecordingFetch:
    """storage.queries' `fetch` over a plain sqlite3 connection, recording each query and its time."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.calls: list[Query] = []

    async def __call__(self, sql: str, params: Sequence[Any]) -> list[Mapping[str, Any]]:
        t0 = time.perf_counter()
        rows = self.conn.execute(sql, list(params)).fetchall()
        self.calls.append(Query(sql, list(params), (time.perf_counter() - t0) * 1000, len(rows)))
        return rows


def call_for(path: str) -> Callable[[RecordingFetch], Coroutine[Any, Any, Any]]:
    """The storage.queries call the API makes for `path` (same parsing, same defaults)."""
    route, _, query = path.partition("?")
    params = dict(urllib.parse.parse_qsl(query))
    if route == "/api/v1/runs":
        rq = m.RunsQuery.model_validate(params)
        where = rq.where()
        return lambda f: queries.list_runs(f, where, rq.limit + 1, decode_cursor(rq.cursor))
    if route == "/api/v1/conversations":
        cq = m.ConversationsQuery.model_validate(params)
        return lambda f: queries.list_conversations(f, cq.limit + 1, decode_cursor(cq.cursor), cq.q or None)
    if route == "/api/v1/stats":
        sq = m.StatsQuery.model_validate(params)
        until = m.stamp(sq.until) or timestamp(time.time())
        since = m.stamp(sq.since) or timestamp((sq.until.timestamp() if sq.until else time.time()) - DAY)
        return lambda f: stats.stats(f, since, until)
    if route.startswith("/api/v1/runs/"):
        return lambda f: queries.get_run(f, route.rsplit("/", 1)[1])
    if route.startswith("/api/v1/attempts/"):
        return lambda f: queries.get_attempt(f, route.rsplit("/", 1)[1])
    raise ValueError(path)


def probe(conn: sqlite3.Connection, path: str, repeat: int = 3) -> Probe:
    """Run the request's queries `repeat` times after one warm-up; keep the median run."""
    call = call_for(path)
    runs: list[list[Query]] = []
    for i in range(repeat + 1):
        fetch = RecordingFetch(conn)
        t0 = time.perf_counter()
        asyncio.run(call(fetch))
        if i:
            runs.append(fetch.calls)
        if time.perf_counter() - t0 > 3.0:  # slow: one timed run is enough
            runs = [fetch.calls]
            break
    runs.sort(key=lambda calls: sum(x.ms for x in calls))
    return Probe(path, runs[len(runs) // 2])


def query_plan(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[str]:
    rows = conn.execute(f"EXPLAIN QUERY PLAN {sql}", list(params)).fetchall()
    depth: dict[int, int] = {0: -1}
    lines = []
    for node, parent, _, detail in rows:
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + detail)
    return lines


def one_line(sql: str) -> str:
    return " ".join(sql.split())
