"""What a recorded call leaves in the proxy's memory, for the proxy bench's call and an agent's.

Calls go through the product's own recording path after the hooks, as `pipeline_bench.py`
drives it (`Capture`, the `Pipeline`), into the writer that scrubs each row, a SQLite store in a
temporary directory and the `/events` hub, wired as the sidecar wires them: what stays
allocated once they are stored is what the tracker keeps for its retry and continuation rules,
the hub for its replay, and the caches.
An agent's call carries a ~20 KB system prompt and a 40-message history (~100 KB a request).

    .venv/bin/python bench/memory_bench.py     # about ten seconds
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import sys
import tempfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from addons.pipeline import Pipeline  # noqa: E402
from addons.redact import Redactor  # noqa: E402
from bench import pipeline_bench  # noqa: E402
from proxy.api.events import EventHub  # noqa: E402
from storage.sqlite import SqliteStore  # noqa: E402
from storage.writer import Writer  # noqa: E402

Request = Callable[[str, int, bool], tuple[bytes, list[tuple[str, str]]]]
BENCH_REQUEST: Request = pipeline_bench.request  # the proxy bench's call
AGENT_SYSTEM = "You are a coding agent. Follow the repository's conventions and run the tests. " * 250


def agent_request(tag: str, i: int, stream: bool) -> tuple[bytes, list[tuple[str, str]]]:
    """A coding agent's turn: its long system prompt and the history of twenty earlier steps."""
    history: list[dict[str, str]] = []
    for k in range(20):
        asked = f"[{tag}-{i}] step {k}: " + "read the file, fix the bug. " * 70
        history.append({"role": "user", "content": asked})
        history.append({"role": "assistant", "content": f"step {k} done: " + "changed the function. " * 90})
    history.append({"role": "user", "content": f"[{tag}-{i}] and now run the tests"})
    system = {"role": "system", "content": AGENT_SYSTEM}
    body = {"model": pipeline_bench.MODEL, "messages": [system, *history]}
    raw = orjson.dumps({**body, "stream": stream})
    _, headers = BENCH_REQUEST(tag, i, stream)
    return raw, [(k, str(len(raw)) if k == "Content-Length" else v) for k, v in headers]


async def measure(request: Request, calls: int) -> tuple[int, float]:
    """(request bytes, bytes left allocated per call)."""
    pipeline_bench.request = request  # what `Calls.one` sends
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(str(Path(tmp) / "bench.db"))
        await store.open()
        hub = EventHub(store.get_object)
        writer = Writer(store, max_batch=store.batch_rows, scrub=Redactor().row)
        writer.listeners.append(hub.committed)
        writer.start()
        each = pipeline_bench.Calls(stream=False)
        each.pipeline = Pipeline(writer.submit, recall_step=functools.partial(writer.get_object, "step"))
        each.pipeline.start()
        for _ in range(20):  # warm-up: caches, the first runs
            await each.one()
        await writer.flush()
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for _ in range(calls):
            await each.one()
        await writer.flush()
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        left = sum(s.size_diff for s in after.compare_to(before, "filename"))
        await each.pipeline.close()
        await writer.close()
        await store.close()
    return len(request("size", 0, False)[0]), left / calls


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--calls", type=int, default=300)
    args = p.parse_args()
    print("| call | request | left in memory per call |")
    print("| --- | --: | --: |")
    for name, request in (("proxy bench's", BENCH_REQUEST), ("agent's", agent_request)):
        size, left = asyncio.run(measure(request, args.calls))
        print(f"| {name} | {size / 1024:.1f} KiB | {left / 1024:.1f} KiB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
