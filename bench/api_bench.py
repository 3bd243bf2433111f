"""Query API latency over a month of recorded traffic: seed 1,000,000 attempts, serve the API, time it.

    .venv/bin/python bench/api_bench.py                      # full size, a temporary SQLite database
    .venv/bin/python bench/api_bench.py --attempts 50000     # a quick, smaller version
    .venv/bin/python bench/api_bench.py --database sqlite:////tmp/api.db          # seed once ...
    .venv/bin/python bench/api_bench.py --database sqlite:////tmp/api.db --reuse  # ... time it again
    .venv/bin/python bench/api_bench.py --database sqlite:////tmp/a.db --database postgresql://...

1. Seeds every `--database` (a URL, as the sidecar takes it; `storage.backends.store_for` opens
   it and its migrations create the schema) with the same traffic, in one pass: the planned calls
   go through the product's own tracker (`addons.tracker.Tracker`) and writer
   (`storage.writer.Writer`), in time order, on a clock the seed sets (bench/api/seed.py). The
   data is fixed by --seed; only its time anchor moves (it ends at the minute the bench starts, so
   the default 24-hour stats window holds a day of traffic).
2. Serves the real API (proxy.api.app.make_app over that store) on 127.0.0.1:0 in a child process,
   as the sidecar does, one database after the other.
3. Sends sequential keep-alive requests (200 per route, each route also bounded in time) and
   prints the machine and a markdown table of p50/p95/p99 per database, side by side (the goal:
   p95 under 50 ms for lists and details). On SQLite, for every route at or above 20 ms, the SQL
   it runs with EXPLAIN QUERY PLAN and timings; with --what-if, candidate index and query changes
   timed against the same data (each in a transaction that is rolled back).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.api.probe import probe  # noqa: E402
from bench.api.report import explain, load, machine, table  # noqa: E402
from bench.api.routes import NEAR_MS, Result, iso, run_scenario, scenarios  # noqa: E402
from bench.api.seed import Q_WORDS, Seeded, reuse, seed  # noqa: E402
from bench.api.serve import Client, Server  # noqa: E402
from bench.api.traffic import SPAN_DAYS  # noqa: E402
from bench.api.what_if import what_if  # noqa: E402
from storage.backends import SQLITE, store_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--attempts", type=int, default=1_000_000, help="attempts to seed (default 1,000,000)"
    )
    parser.add_argument("--seed", type=int, default=20_251_126, help="random seed of the data")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per route")
    parser.add_argument(
        "--budget", type=float, default=60.0, help="seconds per route at most (>= 5 requests)"
    )
    parser.add_argument("--depth", type=int, default=200, help="pages walked before a deep page is timed")
    parser.add_argument(
        "--database",
        action="append",
        metavar="URL",
        help="sqlite:///path.db or postgresql://...; repeat to compare (default: a temporary SQLite file)",
    )
    parser.add_argument(
        "--reuse", action="store_true", help="reuse a database this bench seeded with these options"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary database")
    parser.add_argument(
        "--what-if",
        action="store_true",
        help="also time the candidate changes on SQLite (those proposed earlier are in the schema "
        "now: candidates must be edited to be new before this is useful)",
    )
    args = parser.parse_args()

    workdir = None
    if not args.database:
        workdir = Path(tempfile.mkdtemp(prefix="api_bench_"))
        args.database = [f"{SQLITE}{workdir / 'chatdebug.db'}"]
    try:
        bench(args)
    finally:
        if workdir is not None and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif workdir is not None:
            print(f"\n(kept {args.database[0]})")


def labels(urls: list[str]) -> dict[str, str]:
    """A short column name per URL: its backend, numbered when one appears twice."""
    kinds = ["sqlite" if u.startswith(SQLITE) else u.partition(":")[0] for u in urls]
    return {
        u: k if kinds.count(k) == 1 else f"{k} {kinds[: i + 1].count(k)}"
        for i, (u, k) in enumerate(zip(urls, kinds, strict=True))
    }


def size(url: str) -> str:
    async def measured() -> int:
        store = store_for(url)
        try:
            await store.probe()  # a server's database tells its size when asked
            return store.size_bytes()
        finally:
            await store.close()

    try:
        return f"{asyncio.run(measured()) / 2**30:.2f} GiB"
    except Exception as e:
        return f"size unknown ({type(e).__name__})"


def bench(args: argparse.Namespace) -> None:
    urls: list[str] = args.database
    names = labels(urls)
    print("## chatdebug-proxy query API benchmark\n")
    print("\n".join(machine()))
    print(f"- load average at the start: {load()}")
    seeded: dict[str, Seeded] = {}
    for url in urls:
        if args.reuse and (found := reuse(url, args.attempts, args.seed)) is not None:
            seeded[url] = found
    fresh = [u for u in urls if u not in seeded]
    if fresh:
        where = ", ".join(names[u] for u in fresh)
        print(f"\nseeding {args.attempts:,} attempts into {where} ...", file=sys.stderr)
        end = math.floor(time.time() / 60) * 60
        seeded |= asyncio.run(seed(fresh, args.attempts, args.seed, end))
    for url in urls:
        s = seeded[url]
        how = "reused" if url not in fresh else "seeded"
        print(
            f"- {names[url]} ({how}, seed {args.seed}): {s.runs:,} runs, {s.steps:,} steps, "
            f"{s.attempts:,} attempts, {s.conversations:,} conversations over {SPAN_DAYS} days "
            f"ending {iso(s.end)}; seeding took {s.seconds:.0f} s ({s.attempts / s.seconds:,.0f} "
            f"attempts/s, every database of the pass at once); database {size(url)}"
        )
    first = seeded[urls[0]]
    shares = [
        f"{w} {first.catalog.q_hits[w]:,} ({100 * first.catalog.q_hits[w] / first.runs:.2f} %)"
        for w in Q_WORDS
    ]
    print(f"- runs whose first message holds each q: {', '.join(shares)}")

    results: dict[str, list[Result]] = {}
    for url in urls:
        s = seeded[url]
        todo = scenarios(s.catalog, random.Random(args.seed + 1), args.requests, s.end, Q_WORDS[0])
        server = Server(url)
        try:
            client = Client(server.port)
            for _ in range(20):
                client.get("/api/v1/runs")
            results[names[url]] = []
            for scenario in todo:
                print(f"  timing {names[url]}: {scenario.name} ...", file=sys.stderr)
                results[names[url]].append(
                    run_scenario(client, scenario, args.requests, args.budget, args.depth)
                )
        finally:
            server.stop()
    print(
        f"- {args.requests} sequential requests per route on one keep-alive connection (at most "
        f"{args.budget:.0f} s each), from {sys.executable.rsplit('/', 3)[-3]}'s http.client; the API in its "
        f"own process, one database at a time. Deep pages: {args.depth} pages walked first, then the "
        f"next pages timed. 'SQL ms at p95' (SQLite): the request at the 95th percentile, its "
        f"storage.queries SQL re-run alone."
    )
    sqlite_urls = [u for u in urls if u.startswith(SQLITE)]
    connections = {u: _connect(u) for u in sqlite_urls}
    try:
        for url, conn in connections.items():
            for r in results[names[url]]:
                r.probe = probe(conn, r.at_p95())
        print()
        print("\n".join(table(results)))
        print(f"\n- load average at the end: {load()} (other work on the machine shows here)")
        for url, conn in connections.items():
            slow = [r for r in results[names[url]] if r.pct(0.95) >= NEAR_MS]
            if slow:
                print(
                    f"\n### Why the slow ones are slow on {names[url]}: routes with p95 >= {NEAR_MS:.0f} ms, "
                    "EXPLAIN QUERY PLAN of the p95 request's SQL\n"
                )
                for r in slow:
                    print("\n".join(explain(conn, r)))
                    print()
    finally:
        for conn in connections.values():
            conn.close()
    if args.what_if and sqlite_urls:
        url = sqlite_urls[0]
        print(f"### Candidate changes, timed on {names[url]}'s data (each in a transaction, rolled back)\n")
        print(
            "'SQL ms now': the p95 request's queries as storage.queries runs them; 'after': with the "
            "change (new or widened indexes and/or rewritten SQL).\n"
        )
        print("\n".join(what_if(Path(url.removeprefix(SQLITE)), results[names[url]])))


def _connect(url: str) -> sqlite3.Connection:
    conn = sqlite3.connect(url.removeprefix(SQLITE), isolation_level=None)
    conn.row_factory = sqlite3.Row
    for pragma in ("PRAGMA busy_timeout = 5000", "PRAGMA foreign_keys = ON"):
        conn.execute(pragma)
    return conn


if __name__ == "__main__":
    main()
