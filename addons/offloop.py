"""Work too large for the proxy's event loop, on threads beside it.

Every flow shares the loop, so reading a large body there (decoding, JSON, the normalized
models, their hashes and dumps: ~4 s for 15 MiB of short messages, 30 ms for a coding agent's
0.7 MiB history) holds every other call for that long. Such work runs on the recording thread instead.
It is pure Python and takes the GIL too, but the interpreter hands the GIL back to a waiting
thread every switch interval (shortened to 0.5 ms while it works), so the traffic goes on beside
it rather than after it.

Short bodies, nearly every call, stay on the loop: the hand-off would cost more than the work.
One thread for every flow, so recording's heavy work never takes more than one core. The writer
has a thread of its own (one row of 90,000 messages naming keys takes a second to scrub), and
readers (the API, the viewer, exports) have theirs for what they ask (a stored run of 90,000
messages took 2 s to render): none waits behind another's work.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

# Bytes of a body from which reading it leaves the loop: a few milliseconds of work below it.
OFF_LOOP_BYTES = 64 << 10

# Bytes of such bodies that may wait for the thread, the one being read included. Reading goes at
# a few MiB a second (~2 s for 14 MiB of 90,000 messages), and a client can send them far faster:
# past this, a body is recorded unread (its reason said, and counted), as the traffic goes on.
MAX_BACKLOG_BYTES = 32 << 20

# Seconds a body may wait for the thread before it is recorded unread. Bytes do not bound the
# time: a compressed body of a few hundred bytes may decode to the parse bound (16 MiB, ~2 s).
MAX_WAIT_SECONDS = 10.0


@functools.cache
def worker() -> ThreadPoolExecutor:
    """The recording thread (zlib, brotli and zstd release the GIL while they work: decoding
    runs beside the loop in earnest)."""
    return ThreadPoolExecutor(1, thread_name_prefix="chatdebug-recording")


@functools.cache
def reader() -> ThreadPoolExecutor:
    """The threads that shape what readers asked for (a stored run decoded, a page rendered): their
    own, so that a person opening a large run never waits behind a flood's recording, nor the
    recording behind a page; two, so that a dashboard's small read does not wait behind one
    large page (2 s for a run of 90,000 messages)."""
    return ThreadPoolExecutor(2, thread_name_prefix="chatdebug-reading")


@functools.cache
def writer() -> ThreadPoolExecutor:
    """The writer's thread: it scrubs the writer's batches (`storage.writer`) and shapes what the
    recording reads back from the store (a run or step recalled). Its own, so that rows never
    wait behind a flood's reading (the write queue would fill and drop them), nor a recall
    behind a person's page."""
    return ThreadPoolExecutor(1, thread_name_prefix="chatdebug-writing")


# How long a thread may keep the GIL while the loop waits for it. The loop lets the GIL go at
# every wait for its sockets, and then waits for the thread to let it go in turn: at Python's 5 ms
# every step of every flow waits as long, and a neighbour's call took 3 s under a flood of large
# requests; at 0.5 ms, 1 s, and the flood passed in two-thirds of the time.
SWITCH_SECONDS = 0.0005


async def run[T](size: int, work: Callable[[], T]) -> T:
    """`work()`, on the loop when `size` (the bytes it reads) is small, else on the recording
    thread. The work must touch nothing the loop changes meanwhile: it reads one flow's own data."""
    if size < OFF_LOOP_BYTES:
        return work()
    return await beside(work)


async def beside[T](work: Callable[[], T]) -> T:
    """`work()` on the recording thread, whatever its size."""
    return await _on(worker(), work)


async def writing[T](work: Callable[[], T]) -> T:
    """`work()` on the writer's thread."""
    return await _on(writer(), work)


async def reading[T](work: Callable[[], T]) -> T:
    """`work()` on a reading thread: what a reader waits for, never the traffic."""
    return await _on(reader(), work)


async def _on[T](threads: ThreadPoolExecutor, work: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(threads, _yielding, work)


class _Switching:
    """The process's switch interval, shortened while any of the threads works and given back
    when the last one is done (each thread saving and restoring it alone could leave it short)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._working = 0
        self._saved = sys.getswitchinterval()

    def __enter__(self) -> None:
        with self._lock:
            if not self._working:
                self._saved = sys.getswitchinterval()
                sys.setswitchinterval(min(self._saved, SWITCH_SECONDS))
            self._working += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._working -= 1
            if not self._working:
                sys.setswitchinterval(self._saved)


_switching = _Switching()


def _yielding[T](work: Callable[[], T]) -> T:
    """`work()` with the GIL handed over every SWITCH_SECONDS while it runs."""
    with _switching:
        return work()
