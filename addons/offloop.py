"""Recording work too large for the proxy's event loop, on one thread beside it.

Every flow shares the loop, so reading a large body there (decoding, JSON, the normalized
models, their hashes and dumps: ~4 s for 15 MiB of short messages, 30 ms for a coding agent's
0.7 MiB history) holds every other call for that long. Such work runs on this thread instead.
It is pure Python and takes the GIL too, but the interpreter hands the GIL back to a waiting
thread every switch interval (5 ms), so the traffic goes on beside it rather than after it.

Short bodies, nearly every call, stay on the loop: the hand-off would cost more than the work.
One thread for every flow, so recording's heavy work never takes more than one core.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

# Bytes of a body from which reading it leaves the loop: a few milliseconds of work below it.
OFF_LOOP_BYTES = 64 << 10


@functools.cache
def worker() -> ThreadPoolExecutor:
    """The one thread (zlib, brotli and zstd release the GIL while they work: decoding runs
    beside the loop in earnest)."""
    return ThreadPoolExecutor(1, thread_name_prefix="chatdebug-recording")


async def run[T](size: int, work: Callable[[], T]) -> T:
    """`work()`, on the loop when `size` (the bytes it reads) is small, else on the thread. The
    work must touch nothing the loop changes meanwhile: it reads one flow's own data."""
    if size < OFF_LOOP_BYTES:
        return work()
    return await asyncio.get_running_loop().run_in_executor(worker(), work)
