"""Memory stays bounded under load: the capture is capped per stream, nothing else grows with the
bodies.

100 concurrent SSE streams of 10 MB each (1 GB in all) go through a sidecar started with
`--capture-limit 262144`. All 100 are held open together (the upstream sends each stream's first
event, then waits until the client has seen the first event of every stream), so at the peak
every capture, parser and connection exists at once. The sidecar's RSS is sampled before and
throughout; its growth must stay within 100 x the capture limit plus a fixed allowance for what
does not depend on body size (see ALLOWANCE).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx

from tests import wire
from tests.conftest import Sidecar, unique
from tests.upstream import Gate, Reply, Upstream

STREAMS = 100
STREAM_BYTES = 10 << 20
CAPTURE_LIMIT = 256 << 10
MB = 1 << 20
# The fixed allowance: what 100 streams cost whatever their length. Measured on a 2-core machine
# (peak RSS growth, capture limit / bytes a stream):
#   256 KiB / 1 kB (one event)  21 MB  connections (two TLS sessions a stream), flows, parsers, rows
#   256 KiB / 200 kB            83-86  bodies below the limit: everything is captured
#   256 KiB / 3 MB, 10 MB       84-93  the same: growth stops at the limit
#    64 KiB / 10 MB             66
#     1 MiB / 10 MB            186
# i.e. growth ~= 1.25 x 100 x limit + ~58 MB: 21 MB for idle streams, ~37 MB of working memory
# while data flows (per stream a few copies of the 64 KiB chunk in flight: mitmproxy's read and
# write, the SSE line buffer, the decoded line and its JSON), and a quarter of the capture again
# in transient copies at the end (the joined body, its text and the redacted text for the
# writer). The allowance is the measured 58-67 MB plus ~45 % for allocator fragmentation and
# other machines. A capture that kept whole bodies would grow ~1 GB; one that kept 3x the
# limit would exceed the budget too.
ALLOWANCE = 96 * MB


def rss(pid: int) -> int:
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS") from None
    return int(psutil.Process(pid).memory_info().rss)


class Sampler:
    """RSS of a process every 10 ms, in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self.pid))
            self.samples += 1
            self._stop.wait(0.01)


def _stream_events(total: int) -> tuple[list[bytes], int]:
    piece = "m" * 65_000
    event = wire.openai_chunk("chatcmpl-mem", "gpt-4.1", {"content": piece})
    first = wire.openai_chunk("chatcmpl-mem", "gpt-4.1", {"role": "assistant", "content": ""})
    last = wire.openai_chunk("chatcmpl-mem", "gpt-4.1", {}, "stop") + b"data: [DONE]\n\n"
    count = (total - len(first) - len(last)) // len(event)
    return [first, *([event] * count), last], count * len(piece)


async def _run_streams(
    sidecar: Sidecar, url: str, marker: str, all_started: threading.Event
) -> list[tuple[int, int]]:
    """Every stream read to its end; (bytes, crc32) of each."""
    verify = ssl.create_default_context(cafile=str(sidecar.ca_file))
    limits = httpx.Limits(max_connections=STREAMS * 2, max_keepalive_connections=STREAMS * 2)
    started = 0

    async with httpx.AsyncClient(proxy=sidecar.proxy_url, verify=verify, limits=limits, timeout=60) as client:

        async def one(i: int) -> tuple[int, int]:
            nonlocal started
            body = {
                "model": "gpt-4.1",
                "stream": True,
                "messages": [{"role": "user", "content": f"{marker} #{i}"}],
            }
            size, crc, first = 0, 0, True
            async with client.stream("POST", url, json=body) as response:
                assert response.status_code == 200
                async for chunk in response.aiter_raw():
                    size += len(chunk)
                    crc = zlib.crc32(chunk, crc)
                    if first:
                        first = False
                        started += 1
                        if started == STREAMS:
                            all_started.set()  # every stream is open: the upstream sends the rest
            return size, crc

        return await asyncio.gather(*(one(i) for i in range(STREAMS)))


def test_100_concurrent_10_mb_streams_keep_memory_bounded(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream
) -> None:
    sidecar = own_sidecar("--capture-limit", str(CAPTURE_LIMIT))
    marker = unique("memory")
    events, text_length = _stream_events(STREAM_BYTES)
    stream = b"".join(events)
    expected = (len(stream), zlib.crc32(stream))
    all_started = threading.Event()

    # warm up: the first intercepted call imports and allocates what every later one reuses
    upstream.push(Reply.events(wire.openai_stream(["warm"])))
    with httpx.Client(
        proxy=sidecar.proxy_url, verify=ssl.create_default_context(cafile=str(sidecar.ca_file))
    ) as c:
        c.post(
            upstream.url + "/v1/chat/completions",
            json={"model": "m", "stream": True, "messages": [{"role": "user", "content": f"{marker} warm"}]},
        )
    sidecar.wait_runs(1, q=f"{marker} warm")
    time.sleep(0.5)
    before = rss(sidecar.process.pid)

    upstream.responder = lambda seen: Reply(
        200, {"Content-Type": "text/event-stream"}, [events[0], Gate(all_started, 30), *events[1:]]
    )
    started = time.monotonic()
    with Sampler(sidecar.process.pid) as sampler:
        results = asyncio.run(
            _run_streams(sidecar, upstream.url + "/v1/chat/completions", marker, all_started)
        )
    elapsed = time.monotonic() - started

    assert all_started.is_set(), "the streams never were all open at once"
    assert results == [expected] * STREAMS  # every byte of every stream, unchanged
    growth = sampler.peak - before
    budget = STREAMS * CAPTURE_LIMIT + ALLOWANCE
    print(
        f"\nRSS before {before / MB:.0f} MB, peak {sampler.peak / MB:.0f} MB, growth {growth / MB:.1f} MB"
        f" (budget {budget / MB:.0f} MB), {sampler.samples} samples, {elapsed:.1f}s for {STREAMS} x {STREAM_BYTES / MB:.0f} MB"
    )
    assert sampler.samples > 10
    assert growth <= budget, f"RSS grew {growth / MB:.1f} MB, budget {budget / MB:.0f} MB"
    assert elapsed < 45

    runs = sidecar.wait_runs(STREAMS, q=f"{marker} #", limit=500, timeout=30)
    assert {r["status"] for r in runs} == {"completed"}
    attempt = sidecar.run(runs[0]["id"])["steps"][0]["attempts"][0]
    assert attempt["response_bytes"] == len(stream)
    assert attempt["response"]["content"][0]["original_length"] == text_length
    detail = sidecar.get(f"/api/v1/attempts/{attempt['id']}")
    assert detail["response_truncated"] is True
    assert len(detail["response_body"].encode()) == CAPTURE_LIMIT
