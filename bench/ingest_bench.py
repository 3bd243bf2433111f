"""How fast one sidecar's writer lands attempts in each store, side by side.

    .venv/bin/python bench/ingest_bench.py --database sqlite:////tmp/i.db --database postgresql://...

Each call is written as the tracker writes it: a snapshot of its run, step, attempt and bodies
when it starts, and again when it ends (the writer keeps the newest of each in a batch). The
rows are submitted to the product's `storage.writer.Writer` as fast as it takes them; the clock
stops when the last one is committed. Every store must be empty (a fresh file or database).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from storage.backends import store_for  # noqa: E402
from storage.records import Row  # noqa: E402
from storage.writer import Writer  # noqa: E402
from tests.api_seed import make_run  # noqa: E402


def calls(n: int, per_conversation: int) -> list[Row]:
    """n calls, each as its starting snapshots and then its final ones."""
    rows: list[Row] = []
    for i in range(n):
        final = make_run(i, conversation=f"conv_{i // per_conversation}")
        started = [dataclasses.replace(r, status="in_progress") if hasattr(r, "status") else r for r in final]
        rows += [*started, *final]
    return rows


async def ingest(url: str, rows: list[Row]) -> tuple[float, int]:
    store = store_for(url)
    await store.open()
    # as the sidecar does
    writer = Writer(store, spool=None, max_batch=store.batch_rows, lanes=store.write_lanes)
    writer.start()
    started = time.perf_counter()
    for row in rows:
        writer.submit(row)
        if writer.depth >= 15_000:  # the queue holds 20,000: wait as a busy proxy would not
            await asyncio.sleep(0.001)
    await writer.flush()
    seconds = time.perf_counter() - started
    dropped = writer.dropped
    await writer.close()
    await store.close()
    return seconds, dropped


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database", action="append", required=True, metavar="URL", help="repeat to compare")
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--per-conversation", type=int, default=10, help="calls per conversation")
    args = parser.parse_args()
    rows = calls(args.calls, args.per_conversation)
    attempts = sum(1 for r in rows if r.table == "attempts") // 2
    print(f"{args.calls:,} calls, {attempts:,} attempts, {len(rows):,} row snapshots\n")
    print("| store | seconds | attempts/s | row snapshots/s | dropped |")
    print("|---|--:|--:|--:|--:|")
    for url in args.database:
        seconds, dropped = asyncio.run(ingest(url, rows))
        name = url.partition(":")[0]
        print(
            f"| {name} | {seconds:.1f} | {attempts / seconds:,.0f} | {len(rows) / seconds:,.0f} | {dropped} |"
        )


if __name__ == "__main__":
    main()
