"""Bodies built to cost the recorder its memory or the proxy its loop, through the real sidecar:
decompression bombs (a gigabyte from a few kilobytes) both ways, an SSE line that never ends,
data lines that never make an event, and JSON nested far deeper than it can be written back.

For every case: the client (or the provider) gets exactly the bytes sent; the sidecar's RSS
grows by a bounded amount, however large the body; a neighbour's calls through the same proxy
meanwhile all succeed and are recorded; and the attempt is recorded, with the reason when
recording had to stop. Times are printed (run with `-s`), never asserted.

`BombServer` is this file's own provider: it serves prepared bodies in 64 KiB writes, and reads
request bodies as sent (aiohttp would otherwise inflate a gzip upload itself).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import json
import re
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import brotli
import httpx
import pytest
from aiohttp import web

from addons.providers.base import MAX_DEPTH, TOO_DEEP
from tests import wire
from tests.conftest import Certs, Sidecar, start_sidecar, unique
from tests.upstream import Upstream

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd  # type: ignore[no-redef]

MB = 1 << 20
GiB = 1 << 30
CHAT = "/v1/chat/completions"
SSE = "text/event-stream; charset=utf-8"
USAGE = wire.openai_usage(12, 3)
WRITE = 64 * 1024


@dataclass
class Prepared:
    headers: dict[str, str]
    body: bytes | None = None  # or `parts`, written one after the other
    parts: tuple[tuple[bytes, int], ...] = ()  # (piece, times)
    length: bool = True  # send a Content-Length (else chunked)

    def chunks(self) -> Iterator[bytes]:
        if self.body is not None:
            for i in range(0, len(self.body), WRITE):
                yield self.body[i : i + WRITE]
        for piece, times in self.parts:
            for _ in range(times):
                yield piece

    @property
    def size(self) -> int:
        return (len(self.body) if self.body is not None else 0) + sum(len(p) * n for p, n in self.parts)

    @functools.cached_property
    def digest(self) -> str:
        h = hashlib.sha256()
        for chunk in self.chunks():
            h.update(chunk)
        return h.hexdigest()


class BombServer:
    def __init__(self, certs: Certs) -> None:
        self.context = certs.server_context
        self.prepared: dict[str, Prepared] = {}
        self.received: dict[str, tuple[int, str]] = {}  # upload id -> (size, sha256) as sent
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True, name="bombs")

    def start(self) -> BombServer:
        self._thread.start()
        assert self._ready.wait(10), "bomb server did not start"
        return self

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    def url(self, query: str = "") -> str:
        return f"https://127.0.0.1:{self.port}{CHAT}{'?' + query if query else ''}"

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_post(CHAT, self._chat)
        runner = web.AppRunner(app, access_log=None, auto_decompress=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=self.context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        if "upload" in request.query:
            self.received[request.query["upload"]] = (size, digest.hexdigest())
        prepared = self.prepared.get(request.query.get("reply", ""))
        if prepared is None:
            reply = wire.openai_completion("neighbour ok", usage=USAGE)
            return web.Response(body=reply, content_type="application/json")
        response = web.StreamResponse(headers=prepared.headers)
        if prepared.length:
            response.content_length = prepared.size
        await response.prepare(request)
        for chunk in prepared.chunks():
            await response.write(chunk)
        await response.write_eof()
        return response


@pytest.fixture(scope="module")
def bombs(certs: Certs) -> Iterator[BombServer]:
    server = BombServer(certs).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, _upstream: Upstream, certs: Certs, bombs: BombServer
) -> Iterator[Sidecar]:
    """A sidecar of this module's own: RSS growth is measured on it alone."""
    workdir = tmp_path_factory.mktemp("bombs")
    sidecar = start_sidecar(workdir, _upstream, certs, "--intercept-host", f"127.0.0.1:{bombs.port}")
    yield sidecar
    sidecar.stop()


# ---- measuring ----------------------------------------------------------------------------------


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class Watch:
    """While a case runs: the sidecar's peak RSS, and a neighbour calling through the same proxy
    over and over. On exit every neighbour call must have succeeded, at least two of them while
    the case ran, and all must be recorded."""

    def __init__(self, sidecar: Sidecar, bombs: BombServer) -> None:
        self.sidecar, self.bombs = sidecar, bombs
        self.marker = unique("neighbour")
        self.calls = 0
        self.errors: list[str] = []
        self.slowest = 0.0
        self.before = self.peak = 0
        self.seconds = 0.0
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._sample), threading.Thread(target=self._neighbour)]

    @property
    def growth(self) -> int:
        return self.peak - self.before

    def __enter__(self) -> Watch:
        self.before = self.peak = _rss(self.sidecar.process.pid)
        for thread in self._threads:
            thread.start()
        self._started = time.perf_counter()
        return self

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        self.seconds = time.perf_counter() - self._started
        deadline = time.monotonic() + 30
        while self.calls < 2 and not self.errors and time.monotonic() < deadline:
            time.sleep(0.02)
        self._done.set()
        for thread in self._threads:
            thread.join(60)
        if error is not None:
            return
        assert not self.errors, f"the neighbour's calls failed: {self.errors[:3]}"
        assert self.calls >= 2
        runs = self.sidecar.wait_runs(self.calls, q=self.marker, timeout=30, limit=500)
        assert {r["status"] for r in runs} == {"completed"}
        assert "Traceback" not in self.sidecar.log()

    def report(self, label: str) -> None:
        print(
            f"\n[{label}] case {self.seconds:.2f}s, sidecar RSS +{self.growth / MB:.0f} MiB "
            f"(peak {self.peak / MB:.0f} MiB), neighbour: {self.calls} calls, slowest {self.slowest:.2f}s"
        )

    def _sample(self) -> None:
        pid = self.sidecar.process.pid
        while not self._done.is_set():
            self.peak = max(self.peak, _rss(pid))
            self._done.wait(0.01)

    def _neighbour(self) -> None:
        verify = ssl.create_default_context(cafile=str(self.sidecar.ca_file))
        with httpx.Client(proxy=self.sidecar.proxy_url, verify=verify, timeout=120) as client:
            while not self._done.is_set():
                started = time.perf_counter()
                body = {
                    "model": "gpt-4.1",
                    "messages": [{"role": "user", "content": f"{self.marker} {self.calls}"}],
                }
                try:
                    reply = client.post(self.bombs.url(), json=body)
                    assert reply.json()["choices"][0]["message"]["content"] == "neighbour ok"
                except Exception as e:
                    self.errors.append(repr(e))
                    return
                self.calls += 1
                self.slowest = max(self.slowest, time.perf_counter() - started)
                self._done.wait(0.05)


def client(sidecar: Sidecar) -> httpx.Client:
    verify = ssl.create_default_context(cafile=str(sidecar.ca_file))
    return httpx.Client(proxy=sidecar.proxy_url, verify=verify, timeout=120)


def run_headers(label: str) -> tuple[str, dict[str, str]]:
    run_id = unique(f"run-{label}")
    return run_id, {"X-Chatdebug-Run": run_id, "Content-Type": "application/json"}


def receive(
    sidecar: Sidecar, url: str, content: bytes, headers: dict[str, str]
) -> tuple[int, str, dict[str, str]]:
    """POST through the proxy; what arrived, as sent (no content decoding): size, sha256, headers."""
    digest, size = hashlib.sha256(), 0
    with client(sidecar) as c, c.stream("POST", url, content=content, headers=headers) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            digest.update(chunk)
            size += len(chunk)
        return size, digest.hexdigest(), dict(response.headers)


def recorded(sidecar: Sidecar, run_id: str, timeout: float = 30.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's step and its attempt, once the attempt has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(f"{sidecar.api_url}/api/v1/runs/{run_id}", timeout=10)
        if response.status_code == 200 and (steps := response.json()["steps"]):
            attempt = steps[-1]["attempts"][-1]
            if attempt["status"] != "in_progress":
                return steps[-1], attempt
        time.sleep(0.05)
    raise AssertionError(f"no ended attempt in run {run_id}\n{sidecar.log()[-3000:]}")


def chat(marker: str, stream: bool = False) -> bytes:
    return json.dumps(
        {"model": "gpt-4.1", "messages": [{"role": "user", "content": marker}], "stream": stream}
    ).encode()


# ---- bombs ------------------------------------------------------------------------------------------

EVENT = wire.openai_chunk("chatcmpl-bomb", "gpt-4.1", {"content": "boom "})


@functools.cache
def bomb(encoding: str, streamed: bool) -> bytes:
    """1 GiB once decoded: SSE events for a stream, zeros for a JSON body."""
    unit = EVENT if streamed else b"\0"
    block = unit * (MB // len(unit))
    times = GiB // len(block)
    if encoding == "gzip":  # one block compressed once, repeated: zlib would take seconds
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        segment = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)  # refers to nothing before it
        crc = 0
        for _ in range(times):
            crc = zlib.crc32(block, crc)
        size = (len(block) * times) & 0xFFFFFFFF
        header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
        end = c.flush()
        return header + segment * times + end + crc.to_bytes(4, "little") + size.to_bytes(4, "little")
    if encoding == "br":
        b = brotli.Compressor(quality=1)
        return b"".join([b.process(block) for _ in range(times)] + [b.finish()])
    z = zstd.ZstdCompressor(level=1)
    return b"".join([z.compress(block) for _ in range(times)] + [z.flush()])


def test_the_gzip_bomb_is_a_real_gigabyte() -> None:
    """The hand-made gzip is valid: a streaming inflate of it ends, at 1 GiB, with a good CRC."""
    d = zlib.decompressobj(31)
    data, total = bomb("gzip", False), 0
    for i in range(0, len(data), MB):
        total += len(d.decompress(data[i : i + MB]))
    assert (d.eof, total) == (True, GiB // MB * MB)


@pytest.mark.parametrize("streamed", [True, False], ids=["sse", "json"])
@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_a_response_bomb_passes_untouched_and_recording_stops_at_its_budget(
    encoding: str, streamed: bool, proxy: Sidecar, bombs: BombServer
) -> None:
    body = bomb(encoding, streamed)
    key = unique(f"bomb-{encoding}")
    content_type = SSE if streamed else "application/json"
    bombs.prepared[key] = Prepared(
        {"Content-Type": content_type, "Content-Encoding": encoding}, body, length=not streamed
    )
    run_id, headers = run_headers(key)
    with Watch(proxy, bombs) as watch:
        size, digest, got = receive(proxy, bombs.url(f"reply={key}"), chat(key, streamed), headers)
    watch.report(f"{encoding} {'sse' if streamed else 'json'} bomb, {len(body)} bytes on the wire")
    assert (size, digest) == (len(body), hashlib.sha256(body).hexdigest())
    assert got["content-encoding"] == encoding
    assert watch.growth < 256 * MB, f"the sidecar grew by {watch.growth / MB:.0f} MiB"
    _, attempt = recorded(proxy, run_id)
    assert (attempt["status"], attempt["response_bytes"]) == ("completed", len(body))
    error = attempt["error"]
    if not streamed:  # decoded a byte past the capture limit: too large, as the same body plain
        assert error is None
        assert any("exceeds the capture limit" in w for w in attempt["response"]["warnings"])
        return
    assert error["class"] == "proxy_error"
    # which bound comes first depends on the machine: a stream's chunk decodes to 4 MiB of
    # events, whose parsing may pass the per-chunk CPU bound before the byte bound
    stops = (f"the {encoding} response decoded past ", f"the {encoding} response cost over ")
    assert error["message"].startswith(stops), error["message"]
    assert error["message"].endswith("recording stopped there, the stream passed untouched")
    # what was decoded before the stop is understood
    text = "".join(p["text"] for p in attempt["response"]["content"] if p["type"] == "text")
    assert text.startswith("boom boom ")


def test_a_gzip_request_bomb_reaches_the_provider_as_sent_and_is_not_parsed(
    proxy: Sidecar, bombs: BombServer
) -> None:
    head = b'{"model": "gpt-4.1", "messages": [{"role": "user", "content": "'
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    filler = b"q" * MB
    body = (
        c.compress(head)
        + b"".join(c.compress(filler) for _ in range(GiB // MB))
        + c.compress(b'"}]}')
        + c.flush()
    )
    key = unique("upload")
    run_id, headers = run_headers(key)
    with Watch(proxy, bombs) as watch:
        size, _, _ = receive(proxy, bombs.url(f"upload={key}"), body, {**headers, "Content-Encoding": "gzip"})
    watch.report(f"gzip request bomb, {len(body)} bytes on the wire")
    assert bombs.received[key] == (len(body), hashlib.sha256(body).hexdigest())
    assert size > 0
    assert watch.growth < 256 * MB, f"the sidecar grew by {watch.growth / MB:.0f} MiB"
    _, attempt = recorded(proxy, run_id)
    assert (attempt["status"], attempt["request_bytes"]) == ("completed", len(body))
    assert attempt["error"]["class"] == "proxy_error"
    assert attempt["error"]["message"] == (
        f"the gzip request body decoded past {16 * MB} bytes: not parsed for recording"
    )
    assert attempt["response"]["content"] == [{"type": "text", "text": "neighbour ok"}]
    stored = httpx.get(f"{proxy.api_url}/api/v1/attempts/{attempt['id']}", timeout=10).json()
    assert stored["request_truncated"] is True
    assert stored["request_body"].startswith('{"model": "gpt-4.1"')


# ---- lines and events --------------------------------------------------------------------------------


def test_an_sse_line_of_50_mb_without_a_newline(proxy: Sidecar, bombs: BombServer) -> None:
    events = wire.openai_stream(["before ", "after"], usage=USAGE)
    key = unique("long-line")
    line = (b"x" * WRITE, 50 * MB // WRITE)
    parts = ((events[0] + events[1] + b"data: ", 1), line, (b"\n\n" + b"".join(events[2:]), 1))
    bombs.prepared[key] = Prepared({"Content-Type": SSE}, parts=parts, length=False)
    run_id, headers = run_headers(key)
    with Watch(proxy, bombs) as watch:
        size, digest, _ = receive(proxy, bombs.url(f"reply={key}"), chat(key, True), headers)
    watch.report("a 50 MB SSE line")
    assert (size, digest) == (bombs.prepared[key].size, bombs.prepared[key].digest)
    assert watch.growth < 128 * MB, f"the sidecar grew by {watch.growth / MB:.0f} MiB"
    _, attempt = recorded(proxy, run_id)
    assert (attempt["status"], attempt["error"]) == ("completed", None)
    response = attempt["response"]
    assert [p["text"] for p in response["content"]] == ["before after"]
    assert any("dropped unread" in w and str(50 * MB + 6) in w for w in response["warnings"]), response[
        "warnings"
    ]


def test_sse_data_lines_that_never_end_their_event(proxy: Sidecar, bombs: BombServer) -> None:
    events = wire.openai_stream(["kept"], usage=USAGE)
    key = unique("endless-event")
    data_line = b"data: " + b"d" * 1017 + b"\n"  # 1 KiB a line, no blank line between
    parts = (
        (events[0], 1),
        (data_line * 64, 96 * MB // (64 * len(data_line))),
        (b"\n" + b"".join(events[1:]), 1),
    )
    bombs.prepared[key] = Prepared({"Content-Type": SSE}, parts=parts, length=False)
    run_id, headers = run_headers(key)
    with Watch(proxy, bombs) as watch:
        size, digest, _ = receive(proxy, bombs.url(f"reply={key}"), chat(key, True), headers)
    watch.report("96 MiB of data lines in one event")
    assert (size, digest) == (bombs.prepared[key].size, bombs.prepared[key].digest)
    assert watch.growth < 128 * MB, f"the sidecar grew by {watch.growth / MB:.0f} MiB"
    _, attempt = recorded(proxy, run_id)
    assert (attempt["status"], attempt["error"]) == ("completed", None)
    assert [p["text"] for p in attempt["response"]["content"]] == ["kept"]
    assert any(w.startswith("unparseable event: [an SSE event of ") for w in attempt["response"]["warnings"])


@pytest.mark.parametrize("junk", [b"data: {\n\n", b"data: {}\n\n"], ids=["unreadable-events", "empty-events"])
def test_a_stream_of_tiny_junk_events_costs_the_loop_a_bounded_time(
    proxy: Sidecar, bombs: BombServer, junk: bytes
) -> None:
    """64 MiB of events of a few bytes each: millions of events, each read on the loop as it
    comes (an unreadable one costs ~35 us, its lenient retry included). Bounded as a decoded
    stream is: `CHUNK_SECONDS` of CPU a chunk and `RESPONSE_SECONDS` in all, past which the
    recording stops with the reason and the client still gets every byte."""
    events = wire.openai_stream(["kept"], usage=USAGE)
    key = unique("junk-events")
    parts = ((events[0] + events[1], 1), (junk * (64 * 1024 // len(junk)), 1024), (b"".join(events[2:]), 1))
    bombs.prepared[key] = Prepared({"Content-Type": SSE}, parts=parts, length=False)
    run_id, headers = run_headers(key)
    with Watch(proxy, bombs) as watch:
        size, digest, _ = receive(proxy, bombs.url(f"reply={key}"), chat(key, True), headers)
    watch.report(f"64 MiB of {junk!r} events")
    assert (size, digest) == (bombs.prepared[key].size, bombs.prepared[key].digest)
    _, attempt = recorded(proxy, run_id)
    assert (attempt["status"], attempt["error"]["class"]) == ("completed", "proxy_error")
    message = attempt["error"]["message"]
    assert re.match(r"the response stream cost over [0-9.]+ s of CPU to read", message), message
    assert message.endswith("recording stopped there, the stream passed untouched")
    assert [p["text"] for p in attempt["response"]["content"]] == ["kept"]  # what was read before


# ---- depth -----------------------------------------------------------------------------------------------


def nested(depth: int) -> str:
    return '{"a":' * depth + '"leaf"' + "}" * depth


def cut_at(value: Any) -> tuple[int, Any]:
    levels = 0
    while isinstance(value, dict):
        levels, value = levels + 1, value["a"]
    return levels, value


@pytest.mark.parametrize("depth", [300, 10_000])
def test_json_nested_deeper_than_can_be_written_is_recorded_cut(
    depth: int, proxy: Sidecar, bombs: BombServer
) -> None:
    key = unique(f"deep-{depth}")
    deep = nested(depth)
    # by hand: json.dumps itself gives up on 10,000 levels
    request = (
        '{"model": "gpt-4.1", "messages": ['
        f'{{"role": "user", "content": "{key}"}},'
        '{"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",'
        f' "function": {{"name": "deep", "arguments": {json.dumps(deep)}}}}}]}},'
        '{"role": "tool", "tool_call_id": "call_1", "content": "done"}],'
        f' "tools": [{{"type": "function", "function": {{"name": "deep", "parameters": {deep}}}}}]}}'
    ).encode()
    reply = wire.openai_completion(None, [("call_2", "deep", deep)], usage=USAGE)
    bombs.prepared[key] = Prepared({"Content-Type": "application/json"}, reply)
    run_id, headers = run_headers(key)
    with Watch(proxy, bombs) as watch:
        size, _, _ = receive(proxy, bombs.url(f"reply={key}"), request, headers)
    watch.report(f"JSON nested {depth} deep")
    assert size == len(reply)
    step, attempt = recorded(proxy, run_id)
    assert (attempt["status"], attempt["error"]) == ("completed", None)
    (call,) = attempt["response"]["content"]
    assert (call["name"], cut_at(call["arguments"])) == ("deep", (MAX_DEPTH, TOO_DEEP))
    sent = step["request"]
    levels, leaf = cut_at(sent["tools"][0]["parameters"])  # cut counting from the body's top
    assert (MAX_DEPTH - 8 < levels < MAX_DEPTH, leaf) == (True, TOO_DEEP)
    history = [p for m in sent["messages"] for p in m["parts"] if p["type"] == "tool_call"]
    assert [cut_at(p["arguments"]) for p in history] == [(MAX_DEPTH, TOO_DEEP)]


@pytest.mark.parametrize("streamed", [True, False], ids=["sse", "json"])
def test_a_reply_brotli_packs_a_thousandfold_is_recorded_whole(
    streamed: bool, proxy: Sidecar, bombs: BombServer
) -> None:
    """Brotli holds decoded output back while asking for more input: a reply of a few hundred
    bytes that decodes to 600 KB lost all but its first ~98 KB, and a JSON reply was unparsed."""
    text = "all work and no play " * 30_000
    if streamed:
        plain = b"".join(wire.openai_stream([text[i : i + 60_000] for i in range(0, len(text), 60_000)]))
    else:
        plain = wire.openai_completion(text, usage=wire.openai_usage(12, 30_000))
    body = brotli.compress(plain)
    assert len(body) < len(plain) // 500
    key = unique("brotli-whole")
    bombs.prepared[key] = Prepared(
        {"Content-Type": SSE if streamed else "application/json", "Content-Encoding": "br"},
        body,
        length=not streamed,
    )
    run_id, headers = run_headers(key)
    size, digest, _ = receive(proxy, bombs.url(f"reply={key}"), chat(key, streamed), headers)
    assert (size, digest) == (len(body), hashlib.sha256(body).hexdigest())
    _, attempt = recorded(proxy, run_id)
    assert (attempt["status"], attempt["error"]) == ("completed", None)
    assert attempt["response"]["finish_reason"] == "stop"  # the reply's end was decoded
    recorded_text = "".join(p["text"] for p in attempt["response"]["content"] if p["type"] == "text")
    assert len(recorded_text) >= 10_000 and text.startswith(recorded_text)  # as stored: capped


# ---- many small things -------------------------------------------------------------------------------


def test_a_request_of_400_000_short_messages_passes_and_is_not_read(
    proxy: Sidecar, bombs: BombServer
) -> None:
    """15 MiB, under the byte bound, but 400,000 objects: reading it held the proxy's one loop for
    4 s, and every neighbour's call with it. It passes as sent, is recorded unread with the
    reason, and what reading there is happens beside the loop (the neighbour's slowest call is
    printed)."""
    key = unique("many")
    messages = [{"role": "user", "content": key}] + [{"role": "user", "content": "m"}] * 400_000
    body = json.dumps({"model": "gpt-4.1", "messages": messages}).encode()
    assert len(body) < 16 * MB
    run_id, headers = run_headers(key)
    with Watch(proxy, bombs) as watch:
        size, _, _ = receive(proxy, bombs.url(f"upload={key}"), body, headers)
    watch.report(f"{len(messages):,} messages in {len(body) / MB:.1f} MiB")
    assert bombs.received[key] == (len(body), hashlib.sha256(body).hexdigest())
    assert size > 0
    _, attempt = recorded(proxy, run_id)
    assert (attempt["status"], attempt["request_bytes"]) == ("completed", len(body))
    assert attempt["error"]["class"] == "proxy_error"
    assert attempt["error"]["message"] == (
        f"the request body ({len(body)} bytes) holds more than 100,000 JSON objects and arrays:"
        " too many to read for recording"
    )
    assert attempt["response"]["content"] == [{"type": "text", "text": "neighbour ok"}]


def test_a_request_of_many_messages_under_the_bound_is_read_whole(proxy: Sidecar, bombs: BombServer) -> None:
    """Just under the container bound: read and recorded whole, off the loop (the neighbour's
    slowest call is printed: what the loop still does with a request this large)."""
    key = unique("under")
    messages = [{"role": "user", "content": key}] + [
        {"role": "user" if i % 2 else "assistant", "content": f"message {i}"} for i in range(90_000)
    ]
    body = json.dumps({"model": "gpt-4.1", "messages": messages}).encode()
    run_id, headers = run_headers(key)
    with Watch(proxy, bombs) as watch:  # until it is recorded: the neighbour meets the recording
        receive(proxy, bombs.url(f"upload={key}"), body, headers)
        step, attempt = recorded(proxy, run_id, timeout=60)
    watch.report(f"{len(messages):,} messages in {len(body) / MB:.1f} MiB, read")
    assert bombs.received[key] == (len(body), hashlib.sha256(body).hexdigest())
    assert (attempt["status"], attempt["error"]) == ("completed", None)
    assert len(step["request"]["messages"]) == len(messages)
    assert step["request"]["messages"][-1]["parts"] == [{"type": "text", "text": "message 89999"}]


def _not_read(sidecar: Sidecar) -> float:
    metrics = httpx.get(f"{sidecar.api_url}/metrics", timeout=10).text
    return sum(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("chatdebug_requests_not_read")
    )


def test_a_flood_of_large_requests_is_recorded_within_a_memory_bound(
    proxy: Sidecar, bombs: BombServer
) -> None:
    """14 MiB requests of 90,000 messages, eight at a time: each takes ~2 s to read, and they
    came faster. Every one waited for its reading with its bytes (RSS grew by 1.2 GiB for 48 and
    went on growing with each, and the traffic took 80 s instead of 7). Now what waits is bounded
    in bytes (`offloop.MAX_BACKLOG_BYTES`): a body past it is recorded unread, with the reason,
    and counted. What remains grows with the flows at once, not with the calls: eight calls in
    flight keep their bodies and what was read of them until they end (~5x a body each), and one
    read at a time needs ~15x its body while it runs."""
    key = unique("flood")
    text = "a line of a long tool output, " * 4
    messages = [{"role": "user", "content": key}] + [
        {"role": "user", "content": f"{text}{i}"} for i in range(90_000)
    ]
    body = json.dumps({"model": "gpt-4.1", "messages": messages}).encode()
    calls, concurrency = 32, 8
    ids = [f"{key}-{i}" for i in range(calls)]
    not_read = _not_read(proxy)

    def one(run_id: str) -> int:
        headers = {"X-Chatdebug-Run": run_id, "Content-Type": "application/json"}
        size, _, _ = receive(proxy, bombs.url(f"upload={run_id}"), body, headers)
        return size

    with Watch(proxy, bombs) as watch, ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        sizes = list(pool.map(one, ids))
        passed = time.perf_counter() - started
        attempts = [recorded(proxy, run_id, timeout=120)[1] for run_id in ids]
    unread = re.compile(
        rf"the request body \({len(body)} bytes\) was not read for recording: ([0-9]+) bytes of large"
        " bodies were waiting to be read before it"
    )
    waited = [unread.fullmatch(a["error"]["message"]) if a["error"] else None for a in attempts]
    reasons = collections.Counter(
        "unread" if m else (a["error"] or {}).get("message", "read")
        for a, m in zip(attempts, waited, strict=True)
    )
    watch.report(
        f"{calls} requests of {len(body) / MB:.1f} MiB, {concurrency} at a time, passed in {passed:.1f}s;"
        f" {reasons['read']} read"
    )
    assert all(size > 0 for size in sizes)
    assert all(bombs.received[run_id] == (len(body), hashlib.sha256(body).hexdigest()) for run_id in ids)
    assert {a["status"] for a in attempts} == {"completed"}
    assert set(reasons) == {"read", "unread"}, reasons
    assert all(int(m[1]) + len(body) > 32 * MB for m in waited if m)  # the bound, and only past it
    assert _not_read(proxy) - not_read == reasons["unread"]
    assert watch.growth < 1024 * MB, f"the sidecar grew by {watch.growth / MB:.0f} MiB"


def test_a_large_request_full_of_secret_hints_is_scrubbed_beside_the_loop(
    proxy: Sidecar, bombs: BombServer
) -> None:
    """A coding agent's long history talks of keys and tokens, and its request carries a key:
    every string of it must be looked at by the redactor (~0.6 s of Python for 90,000 messages),
    which holds no neighbour's call that long (its slowest call is printed). The key it sent
    is gone from what is stored; the rest is kept."""
    key = unique("hints")
    secret = "sk-" + key.replace("-", "") + "0123456789abcdef"
    messages = (
        [{"role": "user", "content": key}]
        + [
            {"role": "user" if i % 2 else "assistant", "content": f"message {i}: set api_key and max_tokens"}
            for i in range(90_000)
        ]
        + [{"role": "user", "content": f"my key is {secret}"}]
    )
    body = json.dumps({"model": "gpt-4.1", "messages": messages}).encode()
    run_id, headers = run_headers(key)
    headers["Authorization"] = f"Bearer {secret}"
    with Watch(proxy, bombs) as watch:
        receive(proxy, bombs.url(f"upload={key}"), body, headers)
        step, attempt = recorded(proxy, run_id, timeout=60)
    watch.report(f"{len(messages):,} messages full of secret hints, scrubbed")
    assert (attempt["status"], attempt["error"]) == ("completed", None)
    assert len(step["request"]["messages"]) == len(messages)
    assert step["request"]["messages"][-1]["parts"] == [{"type": "text", "text": "my key is [REDACTED]"}]
    assert secret not in json.dumps(step) + json.dumps(attempt)
