"""What handing recording work to a worker would cost, per call, against doing it in place.

A worker process takes the GIL's work off the proxy's loop but every call must cross to it:
the proxy's bytes pickled and written to a pipe, read and unpickled on the other side. This
measures that crossing for the proxy bench's calls (the exchange as the recorder keeps it:
headers, request body, response body, or its 50 SSE chunks one message each), and the same
hand-off to a thread (a queue put and get), beside what the pipeline costs in place
(`bench/pipeline_bench.py`). CPU is counted in both processes (the bench counts the proxy's
whole process tree).

    .venv/bin/python bench/handoff_bench.py          # a few seconds
"""

from __future__ import annotations

import multiprocessing
import queue
import statistics
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.pipeline_bench import request  # noqa: E402
from bench.upstream import COMPLETION, EVENTS  # noqa: E402

CALLS = 2000


def messages(stream: bool) -> list[object]:
    """What crosses for one call: its start, its response (whole, or chunk by chunk), its end."""
    raw, headers = request("handoff", 1, stream)
    start = ("start", "flow-id", "https://127.0.0.1/v1/chat/completions", headers, raw, time.time())
    chunks = [("chunk", "flow-id", c) for c in (EVENTS if stream else [COMPLETION])]
    return [start, *chunks, ("finish", "flow-id", 200, [("content-type", "application/json")], time.time())]


def drain(conn: Connection) -> None:
    while conn.recv() is not None:
        pass
    conn.send(None)


def process_handoff(stream: bool) -> float:
    """CPU us per call, the proxy's side plus the worker's."""
    ours, theirs = multiprocessing.Pipe()
    worker = multiprocessing.get_context("spawn").Process(target=drain, args=(theirs,), daemon=True)
    worker.start()
    child = psutil.Process(worker.pid)
    one = messages(stream)
    ours.send(one[0])  # the worker is up
    child_before, before = sum(child.cpu_times()[:2]), time.process_time()
    for _ in range(CALLS):
        for item in one:
            ours.send(item)
    ours.send(None)
    ours.recv()
    spent = time.process_time() - before + sum(child.cpu_times()[:2]) - child_before
    worker.join(5)
    return spent / CALLS * 1e6


def thread_handoff(stream: bool) -> float:
    items: queue.SimpleQueue[object] = queue.SimpleQueue()

    def take() -> None:
        while items.get() is not None:
            pass

    worker = threading.Thread(target=take)
    worker.start()
    one = messages(stream)
    before = time.process_time()
    for _ in range(CALLS):
        for item in one:
            items.put(item)
    items.put(None)
    worker.join()
    return (time.process_time() - before) / CALLS * 1e6


def main() -> int:
    for stream in (False, True):
        what = "streamed (50 SSE chunks)" if stream else "non-streamed"
        proc = [process_handoff(stream) for _ in range(3)]
        thread = [thread_handoff(stream) for _ in range(3)]
        print(
            f"{what:>25}: worker process {statistics.median(proc):6.1f} us CPU per call "
            f"({min(proc):.1f}-{max(proc):.1f}), thread {statistics.median(thread):5.1f} us "
            f"({min(thread):.1f}-{max(thread):.1f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
