"""What the benchmark prints: the machine, the table of latencies, and the SQL of the slow routes."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import sqlite3
import statistics
import urllib.parse
from pathlib import Path

from bench.api.probe import Query, one_line, query_plan
from bench.api.routes import Result


def machine() -> list[str]:
    cpu = platform.processor() or platform.machine()
    memory = 0.0
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = int(line.split()[1]) / 2**20
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores; {memory:.0f} GiB RAM; {platform.platform()}",
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"aiohttp {version('aiohttp')}, aiosqlite {version('aiosqlite')}, pydantic {version('pydantic')}",
    ]


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)"


def version(package: str) -> str:
    return importlib.metadata.version(package)


def table(results: dict[str, list[Result]]) -> list[str]:
    """One row per route; per database (label -> its results, same routes in the same order) its
    p50 / p95 / p99, and on SQLite the p95 request's SQL alone."""
    labels = list(results)
    one = len(labels) == 1
    head, rule = ["route", "n"], ["---", "--:"]
    for label in labels:
        prefix = "" if one else f"{label} "
        columns = ["p50 ms", "p95 ms", "p99 ms"]
        if any(r.probe for r in results[label]):
            columns.append("SQL ms at p95")
        head += [prefix + c for c in columns]
        rule += ["--:"] * len(columns)
    head += ["KB", "goal"]
    rule += ["--:", ":-:"]
    lines = [f"| {' | '.join(head)} |", f"|{'|'.join(rule)}|"]
    for row in zip(*results.values(), strict=True):
        first = row[0]
        cells = [first.scenario.name, str(min(len(r.times) for r in row))]
        for label, r in zip(labels, row, strict=True):
            cells += [f"{r.pct(0.5):.1f}", f"{r.pct(0.95):.1f}", f"{r.pct(0.99):.1f}"]
            if any(x.probe for x in results[label]):
                cells.append(f"{r.probe.ms:.1f}" if r.probe else "")
        missed = [label for label, r in zip(labels, row, strict=True) if r.misses]
        if first.scenario.group == "stats":
            goal = "-"
        elif missed:
            goal = "miss" if one else f"miss: {', '.join(missed)}"
        else:
            goal = "ok"
        cells += [f"{statistics.median(first.sizes) / 1024:.0f}", goal]
        lines.append(f"| {' | '.join(cells)} |")
    return lines


def explain(conn: sqlite3.Connection, r: Result) -> list[str]:
    """The p95 request's queries, slowest first (the same SQL text once, its times summed)."""
    assert r.probe is not None
    out = [
        f"#### {r.scenario.name}: p95 {r.pct(0.95):.1f} ms, its SQL {r.probe.ms:.1f} ms",
        "",
        f"Request at p95: `{urllib.parse.unquote(r.probe.path)}`",
        "",
    ]
    grouped: dict[str, list[Query]] = {}
    for x in r.probe.queries:
        grouped.setdefault(x.sql, []).append(x)
    ranked = sorted(grouped.values(), key=lambda xs: -sum(x.ms for x in xs))
    for i, xs in enumerate(ranked):
        ms = sum(x.ms for x in xs)
        if i and ms < 1.0:
            break
        times = f"{len(xs)} runs, {ms:.1f} ms in all" if len(xs) > 1 else f"{ms:.1f} ms"
        params = ", ".join(repr(v) for v in xs[0].params)
        out += ["```", f"-- {times}; {xs[0].rows} rows; params ({params})", one_line(xs[0].sql)]
        out += [*query_plan(conn, xs[0].sql, xs[0].params), "```"]
    return out
