"""`/stats`: counts, sums, error rates and latency percentiles over a window, and the folding of
the rollups that keep long windows cheap.

A window of up to `EXACT_UP_TO` attempts is answered from its rows, its percentiles ranked
exactly inside the database. A longer one adds the hourly rollups of its whole hours (kept by
the database's triggers, migration m009) to the rows of its partial first and last hours, and
takes its percentiles from logarithmic bucket counts: each within 1 % of the exact value. The
answer says which (`percentiles`: "exact" or "buckets").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import orjson

from storage.migrations import latency_bucket
from storage.records import USAGE_FIELDS
from storage.sql import Dialect

Fetch = Callable[[str, Sequence[Any]], Awaitable[list[Mapping[str, Any]]]]

EXACT_UP_TO = 20_000  # attempts a window may hold and still be ranked exactly
GAMMA = 1.02  # a bucket's upper bound over its lower one (`migrations.latency_bucket`)
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
METRICS = ("duration_ms", "ttfb_ms")
RUN_KEY = ("kind", "status", "provider", "model")
RUN_SUMS = ("runs", "errors", *USAGE_FIELDS, "cost", "costed")
ROLLUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # table: (key, sums)
    "run_rollup": (RUN_KEY, RUN_SUMS),
    "attempt_rollup": (("error_class",), ("attempts",)),
    "latency_rollup": (("metric", "bucket"), ("n",)),
}

Groups = dict[tuple[Any, ...], dict[str, Any]]


async def stats(fetch: Fetch, since: str, until: str, exact_up_to: int = EXACT_UP_TO) -> dict[str, Any]:
    hours = _whole_hours(since, until)
    if hours is not None:
        (counted,) = await fetch(
            "SELECT SUM(attempts) AS n FROM attempt_rollup WHERE hour >= ? AND hour < ?", list(hours)
        )
        if (counted["n"] or 0) > exact_up_to:
            return await _from_rollups(fetch, since, until, hours)
    runs, classes = await _run_groups(fetch, since, until, {}), await _classes(fetch, since, until, {})
    latency = {m: await _ranked(fetch, m, since, until) for m in METRICS}
    return _answer(since, until, runs, classes, latency, "exact")


async def _from_rollups(fetch: Fetch, since: str, until: str, hours: tuple[str, str]) -> dict[str, Any]:
    """Whole days from the daily rollups (with their rows not folded yet), whole hours around
    them from the hourly ones, the partial hours at either end from the rows."""
    first, end = hours
    edges = [(lo, hi) for lo, hi in ((since, _stamp(first)), (_stamp(end), until)) if lo < hi]
    runs: Groups = {}
    classes: Groups = {}
    buckets: Groups = {}
    parts = {"run_rollup": runs, "attempt_rollup": classes, "latency_rollup": buckets}
    days = _whole_days(first, end)
    for table, into in parts.items():
        if days is None:
            await _summed(fetch, table, "hour", first, end, into)
            continue
        await _summed(fetch, f"{table}_daily", "day", *days, into)
        await _summed(fetch, table, "hour", *days, into, unfolded=True)
        await _summed(fetch, table, "hour", first, days[0], into)
        await _summed(fetch, table, "hour", days[1], end, into)
    for lo, hi in edges:
        await _run_groups(fetch, lo, hi, runs)
        await _classes(fetch, lo, hi, classes)
        await _edge_buckets(fetch, lo, hi, buckets)
    latency = {m: _from_buckets({k[1]: g["n"] for k, g in buckets.items() if k[0] == m}) for m in METRICS}
    return _answer(since, until, runs, classes, latency, "buckets")


# ---- the parts of an answer, from rows or from rollups ------------------------------------------


def _add(
    groups: Groups, rows: Iterable[Mapping[str, Any]], key: Sequence[str], sums: Sequence[str]
) -> Groups:
    for row in rows:
        found = groups.setdefault(tuple(row[k] for k in key), dict.fromkeys(sums))
        for s in sums:
            if row[s] is not None:
                found[s] = (found[s] or 0) + row[s]
    return groups


async def _summed(
    fetch: Fetch, table: str, grain: str, lo: str, hi: str, into: Groups, unfolded: bool = False
) -> Groups:
    """Add the rollup rows of [lo, hi) (hours or days, as `grain` says) to `into`."""
    if lo >= hi:
        return into
    key, sums = ROLLUPS[table.removesuffix("_daily")]
    rows = await fetch(
        f"SELECT {', '.join(key)}, {', '.join(f'SUM({s}) AS {s}' for s in sums)} FROM {table}"
        f" WHERE {grain} >= ? AND {grain} < ?{' AND NOT folded' if unfolded else ''}"
        f" GROUP BY {', '.join(key)}",
        [lo, hi],
    )
    return _add(into, rows, key, sums)


def _run_sums(sign: str = "") -> str:
    """A group of runs' `RUN_SUMS`, each negated when `sign` is "-"."""
    terms = (
        "COUNT(*)",
        "SUM(CASE WHEN error_class IS NULL THEN 0 ELSE 1 END)",
        *(f"SUM({c})" for c in USAGE_FIELDS),
        "SUM(cost_total)",
        "COUNT(cost_total)",
    )
    return ", ".join(f"{sign}{t} AS {name}" for t, name in zip(terms, RUN_SUMS, strict=True))


def _bucket_counts(metric: str, source: str, sign: str = "", grain: str = "") -> str:
    """Attempts of `source` (a table and condition) counted per latency bucket of `metric`
    (and per `grain`, an expression, when given)."""
    by = f"{grain} AS g, " if grain else ""
    return (
        f"SELECT {'g, ' if grain else ''}'{metric}' AS metric, bucket, {sign}COUNT(*) AS n FROM"
        f" (SELECT {by}{latency_bucket(metric)} AS bucket FROM {source} AND {metric} IS NOT NULL) AS b"
        f" GROUP BY {'g, ' if grain else ''}bucket"
    )


async def _run_groups(fetch: Fetch, since: str, until: str, into: Groups) -> Groups:
    rows = await fetch(
        f"SELECT {', '.join(RUN_KEY)}, {_run_sums()} FROM runs"
        f" WHERE started_at >= ? AND started_at < ? GROUP BY {', '.join(RUN_KEY)}",
        [since, until],
    )
    return _add(into, rows, RUN_KEY, RUN_SUMS)


async def _classes(fetch: Fetch, since: str, until: str, into: Groups) -> Groups:
    rows = await fetch(
        "SELECT error_class, COUNT(*) AS attempts FROM attempts WHERE started_at >= ? AND started_at < ?"
        " GROUP BY error_class",
        [since, until],
    )
    return _add(into, rows, ("error_class",), ("attempts",))


async def _edge_buckets(fetch: Fetch, since: str, until: str, into: Groups) -> Groups:
    window = "attempts WHERE started_at >= ? AND started_at < ?"
    rows = await fetch(
        " UNION ALL ".join(_bucket_counts(m, window) for m in METRICS), [since, until] * len(METRICS)
    )
    return _add(into, rows, ("metric", "bucket"), ("n",))


async def _ranked(fetch: Fetch, column: str, since: str, until: str) -> dict[str, float | None]:
    """p50/p95/p99 of the window: the database ranks the values (one sort, inside it) and hands
    back three rows, whatever the window holds."""
    (counted,) = await fetch(
        f"SELECT COUNT({column}) AS n FROM attempts WHERE started_at >= ? AND started_at < ?", [since, until]
    )
    n = counted["n"]
    if not n:
        return dict.fromkeys(name for name, _ in QUANTILES)
    ranks = {name: _rank(q, n) for name, q in QUANTILES}
    rows = await fetch(
        f"SELECT rn, v FROM (SELECT {column} AS v, ROW_NUMBER() OVER (ORDER BY {column}) AS rn"
        f" FROM attempts WHERE started_at >= ? AND started_at < ? AND {column} IS NOT NULL) AS ranked"
        " WHERE rn IN (?, ?, ?)",
        [since, until, *ranks.values()],
    )
    by_rank = {r["rn"]: r["v"] for r in rows}
    return {name: by_rank.get(rank) for name, rank in ranks.items()}


def _rank(q: float, n: int) -> int:
    """The 1-based rank of quantile `q` among `n` sorted values."""
    return min(n, int(q * n) + 1)


def _from_buckets(counts: Mapping[int, int]) -> dict[str, float | None]:
    """Quantiles from bucket counts: the value a rank falls in, as its bucket's midpoint (within
    1 % of any value in the bucket)."""
    ordered = sorted((b, n) for b, n in counts.items() if n > 0)
    total = sum(n for _, n in ordered)
    out: dict[str, float | None] = dict.fromkeys(name for name, _ in QUANTILES)
    if not total:
        return out
    for name, q in QUANTILES:
        rank, seen = _rank(q, total), 0
        for bucket, n in ordered:
            seen += n
            if seen >= rank:
                out[name] = round(2 * GAMMA**bucket / (GAMMA + 1), 3)
                break
    return out


# ---- the answer ---------------------------------------------------------------------------------


def _answer(
    since: str,
    until: str,
    runs: Groups,
    classes: Groups,
    latency: dict[str, dict[str, float | None]],
    percentiles: str,
) -> dict[str, Any]:
    runs = {k: g for k, g in runs.items() if g["runs"]}
    by_kind: dict[str, int] = {}
    by_status: dict[str, int] = {}
    by_pair: dict[tuple[str, str], int] = {}
    by_model: dict[tuple[Any, Any], dict[str, Any]] = {}
    usage = dict.fromkeys(USAGE_FIELDS, 0)
    total = errors = costed = 0
    cost = 0.0
    for (kind, status, provider, model), g in sorted(runs.items(), key=lambda kv: _sortable(kv[0])):
        by_kind[kind] = by_kind.get(kind, 0) + g["runs"]
        by_status[status] = by_status.get(status, 0) + g["runs"]
        by_pair[kind, status] = by_pair.get((kind, status), 0) + g["runs"]
        total += g["runs"]
        errors += g["errors"] or 0
        for column in USAGE_FIELDS:
            usage[column] += g[column] or 0
        if g["costed"]:
            costed += g["costed"]
            cost += g["cost"] or 0.0
            model_cost = by_model.setdefault(
                (provider, model), {"provider": provider, "model": model, "total": 0.0, "runs": 0}
            )
            model_cost["total"] += g["cost"] or 0.0
            model_cost["runs"] += g["costed"]
    attempts = {k[0]: g["attempts"] for k, g in classes.items() if g["attempts"]}
    all_attempts = sum(attempts.values())
    # provider and transport failures; `proxy_error` is our own trouble recording a call that went fine
    failed = sum(n for error_class, n in attempts.items() if error_class not in (None, "proxy_error"))
    top_models = sorted(
        by_model.values(), key=lambda m: (-m["total"], *_sortable((m["provider"], m["model"])))
    )
    return {
        "since": since,
        "until": until,
        "runs": {
            "total": total,
            "by_kind": by_kind,
            "by_status": by_status,
            "by_kind_and_status": [{"kind": k, "status": s, "count": n} for (k, s), n in by_pair.items()],
            "error_rate": errors / total if total else 0.0,
        },
        "usage": usage,
        "cost": {"total": cost if costed else None, "currency": "USD", "by_model": top_models[:50]},
        "attempts": {
            "total": all_attempts,
            "with_error": failed,
            "error_rate": failed / all_attempts if all_attempts else 0.0,
            "by_error_class": {c: n for c, n in attempts.items() if c is not None},
            "percentiles": percentiles,
            "duration_ms": latency["duration_ms"],
            "ttfb_ms": latency["ttfb_ms"],
        },
    }


def _sortable(key: Sequence[Any]) -> tuple[tuple[bool, str], ...]:
    """A key of possibly null text columns in one order (nulls first)."""
    return tuple((v is not None, str(v) if v is not None else "") for v in key)


def _whole_hours(since: str, until: str) -> tuple[str, str] | None:
    """The window's whole hours as rollup keys [first, end), or None when it holds none (or its
    bounds are not the stored `YYYY-MM-DDTHH:MM:SS.mmmZ` form)."""
    try:
        start = datetime.fromisoformat(since[:13] + ":00:00+00:00")
        datetime.fromisoformat(until[:13] + ":00:00+00:00")
    except ValueError:
        return None
    first = since[:13] if _stamp(since[:13]) == since else _hour(start + timedelta(hours=1))
    end = until[:13]
    return (first, end) if first < end else None


def _whole_days(first: str, end: str) -> tuple[str, str] | None:
    """The whole days [d1, d2) inside the hours [first, end), or None."""
    start = (
        first[:10]
        if first[11:] == "00"
        else (datetime.fromisoformat(first[:10]) + timedelta(days=1)).strftime("%Y-%m-%d")
    )
    stop = end[:10]
    return (start, stop) if start < stop else None


def _hour(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H")


def _stamp(hour: str) -> str:
    return f"{hour}:00:00.000Z"


# ---- folding ------------------------------------------------------------------------------------
# Every change appends a delta row; folding sums an hour's rows into one per key (dropping keys
# that net to nothing), so the rollups stay a few rows per hour, and sums each day it touched
# once more from its folded hours into the `_daily` table. Only hours with unfolded rows are
# touched, at most `FOLD_HOURS` per table and pass. A reader adds a day's unfolded rows to its
# daily row: the answer never waits for a fold.

FOLD_HOURS = 48


def dirty_hours(table: str) -> str:
    return f"SELECT DISTINCT hour FROM {table} WHERE NOT folded LIMIT {FOLD_HOURS}"


def _folded(table: str, source: str, grain: str = "hour") -> str:
    key, sums = ROLLUPS[table]
    columns = ", ".join((grain, *key))
    nonzero = " OR ".join(f"SUM({s}) <> 0" for s in sums if s != "cost")
    return (
        f"SELECT {columns}, {', '.join(f'SUM({s})' for s in sums)} FROM {source}"
        f" GROUP BY {columns} HAVING {nonzero}"
    )


def fold(table: str, hours: list[str], d: Dialect) -> list[tuple[str, list[Any]]]:
    """The statements (`?` placeholders) that fold `hours` of `table`, for one transaction."""
    key, sums = ROLLUPS[table]
    columns = ", ".join((*key, *sums))
    listed = d.in_list.format("hour")
    hours_param: Any = hours if d.name == "postgres" else orjson.dumps(hours).decode()
    if d.name == "postgres":  # one statement: what it deletes is exactly what it sums (rows other
        # writers commit meanwhile stay unfolded for the next pass)
        statements = [
            (
                f"WITH gone AS (DELETE FROM {table} WHERE {listed} RETURNING *)"
                f" INSERT INTO {table} (hour, {columns}, folded)"
                f" SELECT *, TRUE FROM ({_folded(table, 'gone')}) AS f",
                [hours_param],
            )
        ]
    else:  # one process writes a SQLite file: nothing comes between the statements
        statements = [
            (f"CREATE TEMP TABLE fold_sums AS {_folded(table, f'{table} WHERE {listed}')}", [hours_param]),
            (f"DELETE FROM {table} WHERE {listed}", [hours_param]),
            (f"INSERT INTO {table} (hour, {columns}, folded) SELECT *, 1 FROM fold_sums", []),
            ("DROP TABLE fold_sums", []),
        ]
    for day in sorted({h[:10] for h in hours}):
        statements += [
            (f"DELETE FROM {table}_daily WHERE day = ?", [day]),
            (
                f"INSERT INTO {table}_daily (day, {columns}) SELECT CAST(? AS TEXT), {', '.join(key)},"
                f" {', '.join(f'SUM({s})' for s in sums)} FROM {table} WHERE hour > ? AND hour < ? AND folded"
                f" GROUP BY {', '.join(key)}",
                [day, day, f"{day}U"],  # the day's hours: "YYYY-MM-DDTHH" sorts between the two
            ),
        ]
    return statements


def subtract(runs: str, attempts: str) -> list[str]:
    """Statements taking out of the rollups the rows of `runs` and `attempts` (tables about to
    go without a trigger firing: a dropped partition)."""
    key = ", ".join(RUN_KEY)
    hour = "substr(started_at, 1, 13)"
    return [
        f"INSERT INTO run_rollup (hour, {key}, {', '.join(RUN_SUMS)})"
        f" SELECT {hour} AS h, {key}, {_run_sums('-')} FROM {runs} GROUP BY h, {key}",
        "INSERT INTO attempt_rollup (hour, error_class, attempts)"
        f" SELECT {hour} AS h, error_class, -COUNT(*) FROM {attempts} GROUP BY h, error_class",
        *(
            f"INSERT INTO latency_rollup (hour, metric, bucket, n)"
            f" {_bucket_counts(m, f'{attempts} WHERE TRUE', '-', hour)}"
            for m in METRICS
        ),
    ]
