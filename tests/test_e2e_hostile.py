"""Never in the way: hostile and broken input through the real sidecar.

For every case:
(a) the client receives exactly the bytes the upstream sent, compared with the same reply fetched
    directly (for connection faults: the failure a client sees without the proxy, or the 502 a
    proxy has to answer with);
(b) unrelated traffic in parallel is unaffected: `Control` keeps calling a tunnelled HTTPS host
    and a recorded plain-HTTP model server through the same proxy, and every one of those calls
    must succeed promptly and be recorded;
(c) where it is an LLM call, an attempt is recorded, with a clear error where there is one.

Requests carry `X-Chatdebug-Run` so their run is found by id even when the body cannot be parsed.
`Aux` is this file's own small aiohttp server, for what tests/upstream.py cannot do: a WebSocket
route, a reply that withholds its headers, a certificate the proxy does not trust, and the
unintercepted host of the control traffic.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import brotli
import httpx
import orjson
import pytest
import trustme
from aiohttp import web

from addons.recorder import WHOLE_BODY
from tests import wire
from tests.conftest import Certs, Sidecar, start_sidecar, unique
from tests.upstream import Close, Gate, Reply, Upstream

try:  # the zstd module mitmproxy and the capture use
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd  # type: ignore[no-redef]

CHAT = "/v1/chat/completions"
SSE = "text/event-stream; charset=utf-8"
MB = 1 << 20
USAGE = wire.openai_usage(12, 3)


# ---- this file's own server -------------------------------------------------------------------


class Aux:
    """One aiohttp app on four listeners: `tls` (intercepted, trusted certificate), `bad_tls`
    (intercepted, a certificate from a CA nobody trusts), `control_tls` (not intercepted: tunnelled)
    and `plain` (plain HTTP: recorded by path)."""

    def __init__(self, certs: Certs) -> None:
        self.trusted = certs.server_context
        stranger = trustme.CA()
        self.untrusted = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        stranger.issue_cert("127.0.0.1", "localhost").configure_cert(self.untrusted)
        self.ports: dict[str, int] = {}
        self.seen: list[tuple[int, str]] = []  # (listener port, path) of every chat request
        self.ws_messages = 0
        self.upload_started = threading.Event()
        self.upload_size = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True, name="aux")

    def start(self) -> Aux:
        self._thread.start()
        assert self._ready.wait(10), "aux server did not start"
        return self

    def stop(self) -> None:
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)

    def url(self, listener: str, path: str = "") -> str:
        scheme = "http" if listener == "plain" else "https"
        return f"{scheme}://127.0.0.1:{self.ports[listener]}{path}"

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/ping", self._ping)
        app.router.add_get("/v1/realtime", self._websocket)
        app.router.add_post(CHAT, self._chat)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        contexts = {
            "tls": self.trusted,
            "bad_tls": self.untrusted,
            "control_tls": self.trusted,
            "plain": None,
        }
        for name, context in contexts.items():
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
            await site.start()
            self.ports[name] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(text="pong")

    async def _chat(self, request: web.Request) -> web.Response:
        if "probe" in request.query:  # an upload: note when its first bytes arrive, keep none
            self.upload_size = 0
            async for chunk in request.content.iter_any():
                self.upload_size += len(chunk)
                self.upload_started.set()
            return web.Response(
                body=wire.openai_completion("received", usage=USAGE), content_type="application/json"
            )
        body = await request.read()
        assert request.transport is not None
        self.seen.append((request.transport.get_extra_info("sockname")[1], request.path_qs))
        await asyncio.sleep(float(request.query.get("delay", "0")))  # headers withheld meanwhile
        text = "delayed" if "delay" in request.query else "control ok"
        reply = wire.openai_completion(text, usage=USAGE)
        assert json.loads(body)["messages"]
        return web.Response(body=reply, content_type="application/json")

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=8 * MB)
        await ws.prepare(request)
        async for message in ws:
            self.ws_messages += 1
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def aux(certs: Certs) -> Iterator[Aux]:
    server = Aux(certs).start()
    yield server
    server.stop()


@dataclass
class Hostile:
    sidecar: Sidecar
    closed_port: int


@pytest.fixture(scope="module")
def hostile(
    tmp_path_factory: pytest.TempPathFactory, _upstream: Upstream, certs: Certs, aux: Aux
) -> Iterator[Hostile]:
    """A sidecar that also intercepts the aux server's hosts and a port nobody listens on."""
    closed = _closed_port()
    extra = [f"127.0.0.1:{aux.ports['tls']}", f"127.0.0.1:{aux.ports['bad_tls']}", f"127.0.0.1:{closed}"]
    flags = [arg for host in extra for arg in ("--intercept-host", host)]
    sidecar = start_sidecar(tmp_path_factory.mktemp("hostile"), _upstream, certs, *flags)
    yield Hostile(sidecar, closed)
    sidecar.stop()


# ---- unrelated traffic alongside ------------------------------------------------------------


class Control:
    """Unrelated traffic through the same proxy while a case runs: a tunnelled HTTPS host and a
    recorded plain-HTTP chat completion, over and over. On exit every call must have succeeded
    within `limit` seconds, every chat completion must be recorded, and the sidecar must have
    logged no traceback meanwhile."""

    def __init__(self, sidecar: Sidecar, aux: Aux, *, limit: float = 5.0) -> None:
        self.sidecar = sidecar
        self.aux = aux
        self.limit = limit
        self.marker = unique("control")
        self.calls = 0
        self.errors: list[str] = []
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="control")
        self._log_offset = 0

    def __enter__(self) -> Control:
        self._log_offset = len(self.sidecar.log())
        self._thread.start()
        return self

    def __exit__(self, kind: object, error: object, tb: object) -> None:
        deadline = time.monotonic() + 20
        while self.calls < 2 and not self.errors and time.monotonic() < deadline:
            time.sleep(0.02)  # at least one full call overlaps the case
        self._stop.set()
        self._thread.join(30)
        if error is not None:
            return
        assert not self.errors, f"unrelated traffic failed: {self.errors[:3]}"
        assert self.calls >= 2
        assert self.slowest < self.limit, f"unrelated traffic stalled: {self.slowest:.1f}s"
        runs = self.sidecar.wait_runs(self.calls, q=self.marker, timeout=20, limit=500)
        assert {r["status"] for r in runs} == {"completed"}
        new_log = self.sidecar.log()[self._log_offset :]
        assert "Traceback" not in new_log, new_log[-3000:]

    def _loop(self) -> None:
        verify = ssl.create_default_context(cafile=str(self.sidecar.bundle))
        with httpx.Client(proxy=self.sidecar.proxy_url, verify=verify, timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    pong = client.get(self.aux.url("control_tls", "/ping"))
                    assert pong.text == "pong", pong.text
                    body = {
                        "model": "gpt-4.1",
                        "messages": [{"role": "user", "content": f"{self.marker} #{self.calls}"}],
                    }
                    reply = client.post(self.aux.url("plain", CHAT), json=body)
                    assert reply.json()["choices"][0]["message"]["content"] == "control ok"
                    self.calls += 1
                except Exception as e:
                    self.errors.append(repr(e))
                    return
                self.slowest = max(self.slowest, time.perf_counter() - started)
                self._stop.wait(0.05)


@pytest.fixture
def control(sidecar: Sidecar, aux: Aux) -> Callable[..., Control]:
    return lambda **kwargs: Control(sidecar, aux, **kwargs)


# ---- clients and what they got ----------------------------------------------------------------


@dataclass
class Got:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""  # as received: after transfer framing, before any content decoding
    error: type[BaseException] | None = None
    seconds: float = 0.0


def fetch(client: httpx.Client, url: str, body: Any = None, *, headers: dict[str, str] | None = None) -> Got:
    got = Got()
    started = time.perf_counter()
    content = body if isinstance(body, bytes | Iterator) else json.dumps(body).encode()
    received = bytearray()
    try:
        with client.stream("POST", url, content=content, headers=headers) as response:
            got.status, got.headers = response.status_code, dict(response.headers)
            for chunk in response.iter_raw():
                received += chunk
    except httpx.HTTPError as e:
        got.error = type(e)
    got.body = bytes(received)
    got.seconds = time.perf_counter() - started
    return got


def direct(certs: Certs, **kwargs: Any) -> httpx.Client:
    verify = ssl.create_default_context(cafile=str(certs.ca_file))
    return httpx.Client(verify=verify, timeout=kwargs.pop("timeout", 20), **kwargs)


def proxied(sidecar: Sidecar, **kwargs: Any) -> httpx.Client:
    verify = ssl.create_default_context(cafile=str(sidecar.ca_file))
    return httpx.Client(proxy=sidecar.proxy_url, verify=verify, timeout=kwargs.pop("timeout", 20), **kwargs)


def run_header(label: str) -> tuple[str, dict[str, str]]:
    run_id = unique(f"run-{label}")
    return run_id, {"X-Chatdebug-Run": run_id, "Content-Type": "application/json"}


def chat_body(marker: str, stream: bool = False) -> dict[str, Any]:
    return {"model": "gpt-4.1", "messages": [{"role": "user", "content": marker}], "stream": stream}


def both_ways(
    sidecar: Sidecar, upstream: Upstream, certs: Certs, reply: Reply, body: Any, label: str
) -> tuple[Got, Got, str]:
    """The same reply fetched directly and through the proxy; the proxied one's run id."""
    upstream.push(reply, reply)
    with direct(certs) as client:
        plain = fetch(client, upstream.url + CHAT, body)
    run_id, headers = run_header(label)
    with proxied(sidecar) as client:
        through = fetch(client, upstream.url + CHAT, body, headers=headers)
    return plain, through, run_id


def same_as_direct(plain: Got, through: Got, sent: bytes | None = None) -> None:
    assert (through.status, through.error) == (plain.status, plain.error)
    assert through.body == plain.body
    if sent is not None:
        assert through.body == sent
    for name in ("content-type", "content-encoding", "content-length"):
        assert through.headers.get(name) == plain.headers.get(name), name


def attempt_of(sidecar: Sidecar, run_id: str, timeout: float = 20.0) -> dict[str, Any]:
    """The run's last attempt once it has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(f"{sidecar.api_url}/api/v1/runs/{run_id}", timeout=10)
        if response.status_code == 200:
            attempts = [a for s in response.json()["steps"] for a in s["attempts"]]
            if attempts and attempts[-1]["status"] != "in_progress":
                return attempts[-1]
        time.sleep(0.05)
    raise AssertionError(f"no ended attempt in run {run_id}\n{sidecar.log()[-3000:]}")


def bodies(sidecar: Sidecar, attempt: dict[str, Any]) -> dict[str, Any]:
    return sidecar.get(f"/api/v1/attempts/{attempt['id']}")


def text_of(attempt: dict[str, Any]) -> str:
    return "".join(p["text"] for p in attempt["response"]["content"] if p["type"] == "text")


# ---- request bodies ---------------------------------------------------------------------------

BROKEN_REQUESTS = {
    "truncated": b'{"model": "gpt-4.1", "messages": [{"role": "user", "content": "cut he',
    "malformed": b'{"model": gpt-4.1, messages: [{role: user}]}',
    "empty": b"",
    "not_an_object": b'["model", "gpt-4.1"]',
}


@pytest.mark.parametrize("name", BROKEN_REQUESTS)
def test_a_broken_request_body_passes_untouched_and_records_proxy_error(
    name: str, sidecar: Sidecar, upstream: Upstream, certs: Certs, control: Callable[..., Control]
) -> None:
    sent = BROKEN_REQUESTS[name]
    answer = wire.openai_completion("whatever you meant", usage=USAGE)
    with control():
        plain, through, run_id = both_ways(sidecar, upstream, certs, Reply.json(answer), sent, name)
    same_as_direct(plain, through, answer)
    assert [s.body for s in upstream.seen] == [sent, sent]  # the provider got the bytes as sent
    attempt = attempt_of(sidecar, run_id)
    assert (attempt["status"], attempt["http_status"]) == ("completed", 200)
    if name == "not_an_object":  # JSON of another shape is kept as it came, with a warning
        assert attempt["error"] is None
        run = sidecar.get(f"/api/v1/runs/{run_id}")
        assert run["api"] == "openai.chat_completions" and run["kind"] == "chat_turn"
        assert "could not read the request" in run["steps"][0]["request"]["warnings"][0]
    else:  # not JSON at all: unreadable
        assert attempt["error"]["class"] == "proxy_error"
        assert "could not parse the openai.chat_completions request" in attempt["error"]["message"]
    assert attempt["request_bytes"] == len(sent)
    assert text_of(attempt) == "whatever you meant"  # the response is still understood
    assert bodies(sidecar, attempt)["request_body"] == sent.decode()


def _python_json(text: str) -> bytes:
    """What Python's json.dumps writes by default for a tool result holding a float it could
    not measure: NaN, which no strict reader takes."""
    body = chat_body(text)
    body["messages"].append({"role": "user", "content": json.dumps({"score": float("nan")})})
    body["temperature"] = float("nan")
    return json.dumps(body).encode()


# body as sent, the first message's text as read, what a strict reader says of it
NOT_STRICT = {
    "not_utf8": (
        b'{"model": "gpt-4.1", "messages": [{"role": "user", "content": "caf\xe9 \xff"}]}',
        "caf\ufffd \ufffd",
        "str is not valid UTF-8",
    ),
    "python_nan": (_python_json("measured"), "measured", "unexpected character, expected a JSON value"),
    "byte_order_mark": (b"\xef\xbb\xbf" + json.dumps(chat_body("bom")).encode(), "bom", "byte order mark"),
    "control_character": (
        b'{"model": "gpt-4.1", "messages": [{"role": "user", "content": "two\nlines"}]}',
        "two\nlines",
        "unexpected control character in string",
    ),
}


@pytest.mark.parametrize("name", NOT_STRICT)
def test_a_request_strict_readers_refuse_is_read_leniently_with_the_reason(
    name: str, sidecar: Sidecar, upstream: Upstream, certs: Certs, control: Callable[..., Control]
) -> None:
    """JSON as its senders' own languages write it, that orjson refuses: recorded as read, with
    a warning that says where it is not strict (the provider may refuse it for that reason)."""
    sent, text, why = NOT_STRICT[name]
    answer = wire.openai_completion("read anyway", usage=USAGE)
    with control():
        plain, through, run_id = both_ways(sidecar, upstream, certs, Reply.json(answer), sent, name)
    same_as_direct(plain, through, answer)
    assert [s.body for s in upstream.seen] == [sent, sent]
    attempt = attempt_of(sidecar, run_id)
    assert (attempt["status"], attempt["error"]) == ("completed", None)
    run = sidecar.get(f"/api/v1/runs/{run_id}")
    request = run["steps"][0]["request"]
    assert request["messages"][0]["parts"] == [{"type": "text", "text": text}]
    (warning,) = request["warnings"]
    assert warning.startswith("the body is not strict JSON (") and why in warning, warning
    assert warning.endswith("): read leniently")
    assert text_of(attempt) == "read anyway"


# ---- response bodies --------------------------------------------------------------------------


def test_invalid_utf8_inside_an_sse_stream(
    sidecar: Sidecar, upstream: Upstream, certs: Certs, control: Callable[..., Control]
) -> None:
    events = wire.openai_stream(["caf\xe9", "PLACEHOLDER", " end"], usage=USAGE)
    events = [e.replace(b"PLACEHOLDER", b" bad \xff\xfe\xc3 bytes") for e in events]  # inside JSON
    events.insert(3, b": a comment with a cut character \xe2\x82\n")  # and outside
    stream = b"".join(events)
    reply = Reply(200, {"Content-Type": SSE}, [stream[:150], stream[150:333], stream[333:]])
    with control():
        plain, through, run_id = both_ways(sidecar, upstream, certs, reply, chat_body("utf8", True), "utf8")
    same_as_direct(plain, through, stream)
    attempt = attempt_of(sidecar, run_id)
    assert attempt["status"] == "completed"
    assert attempt["response_bytes"] == len(stream)
    assert text_of(attempt) == "café bad \ufffd\ufffd\ufffd bytes end"  # replaced, not fatal


def test_content_encoding_gzip_over_a_body_that_is_not_gzip(
    sidecar: Sidecar, upstream: Upstream, certs: Certs, control: Callable[..., Control]
) -> None:
    answer = wire.openai_completion("not compressed at all", usage=USAGE)
    reply = Reply.json(answer, **{"Content-Encoding": "gzip"})
    with control():
        plain, through, run_id = both_ways(sidecar, upstream, certs, reply, chat_body("liar"), "liar")
    same_as_direct(plain, through, answer)  # passed on as is: the client's problem, not ours
    attempt = attempt_of(sidecar, run_id)
    assert (attempt["status"], attempt["http_status"]) == ("completed", 200)
    assert attempt["error"]["class"] == "proxy_error"
    assert attempt["response_bytes"] == len(answer)


def _compress(encoding: str, data: bytes) -> bytes:
    if encoding == "gzip":
        return gzip.compress(data)
    if encoding == "br":
        return brotli.compress(data)
    return zstd.compress(data)


@pytest.mark.parametrize("kind", ["json", "sse"])
@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_a_valid_compressed_response_is_parsed_and_passed_untouched(
    encoding: str,
    kind: str,
    sidecar: Sidecar,
    upstream: Upstream,
    certs: Certs,
    control: Callable[..., Control],
) -> None:
    words = [f"{encoding} {kind} ", "naïve ", "日本語 ", "🙂"]
    if kind == "json":
        decoded = wire.openai_completion("".join(words), usage=USAGE)
        content_type = "application/json"
    else:
        decoded = b"".join(wire.openai_stream(words, usage=USAGE))
        content_type = SSE
    wire_bytes = _compress(encoding, decoded)
    pieces = [wire_bytes[i : i + 37] for i in range(0, len(wire_bytes), 37)]  # cut mid-frame
    reply = Reply(200, {"Content-Type": content_type, "Content-Encoding": encoding}, pieces)
    with control():
        plain, through, run_id = both_ways(
            sidecar, upstream, certs, reply, chat_body(kind, kind == "sse"), kind
        )
    same_as_direct(plain, through, wire_bytes)
    attempt = attempt_of(sidecar, run_id)
    assert (attempt["status"], attempt["error"]) == ("completed", None)
    assert text_of(attempt) == "".join(words)
    assert attempt["response"]["usage"]["input_tokens"] == 12
    assert attempt["response_bytes"] == len(wire_bytes)
    assert bodies(sidecar, attempt)["response_body"] == decoded.decode()  # stored decoded


GARBAGE = [
    b"this is not a field\n",
    b": a comment, e.g. OpenRouter's keep-alive\n",
    b"data: {not json at all\n\n",
    b"data:\n\n",
    b"event: \x00\x01\x02\n\n",
    b"retry: banana\n",
    b"id\n\n",
    b"\n\n\n",
]


@pytest.mark.parametrize("variant", ["garbage_lines", "crlf", "garbage_and_crlf"])
def test_sse_with_garbage_lines_and_crlf_line_ends(
    variant: str, sidecar: Sidecar, upstream: Upstream, certs: Certs, control: Callable[..., Control]
) -> None:
    events = wire.openai_stream(["one", " two", " three"], usage=USAGE)
    if "garbage" in variant:
        events = [piece for i, event in enumerate(events) for piece in (GARBAGE[i % len(GARBAGE)], event)]
    if "crlf" in variant:
        events = [e.replace(b"\n", b"\r\n") for e in events]
    stream = b"".join(events)
    reply = Reply(200, {"Content-Type": SSE}, events)
    with control():
        plain, through, run_id = both_ways(sidecar, upstream, certs, reply, chat_body(variant, True), variant)
    same_as_direct(plain, through, stream)
    attempt = attempt_of(sidecar, run_id)
    assert (attempt["status"], attempt["error"]) == ("completed", None)
    assert text_of(attempt) == "one two three"
    assert attempt["response"]["finish_reason"] == "stop"
    if "garbage" in variant:
        assert any("unparseable event" in w for w in attempt["response"]["warnings"])


def _cut_openai() -> list[bytes]:
    events = wire.openai_stream(["an answer that ", "stops here"], done=False)
    return events[:-1]  # no finish chunk, no [DONE]: the connection just ends


def _cut_anthropic() -> list[bytes]:
    return wire.anthropic_stream(["an answer that ", "stops here"], stop=False)


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_sse_without_its_terminal_event_is_a_stream_error(
    api: str, sidecar: Sidecar, upstream: Upstream, certs: Certs, control: Callable[..., Control]
) -> None:
    events = _cut_openai() if api == "openai" else _cut_anthropic()
    path = CHAT if api == "openai" else "/v1/messages"
    body = (
        chat_body("cut", True)
        if api == "openai"
        else {
            "model": "claude-sonnet-4-5",
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "cut"}],
        }
    )
    reply = Reply(200, {"Content-Type": SSE}, events)
    upstream.push(reply, reply)
    run_id, headers = run_header(f"cut-{api}")
    with control():
        with direct(certs) as client:
            plain = fetch(client, upstream.url + path, body)
        with proxied(sidecar) as client:
            through = fetch(client, upstream.url + path, body, headers=headers)
    same_as_direct(plain, through, b"".join(events))
    attempt = attempt_of(sidecar, run_id)
    assert attempt["status"] == "failed"
    assert attempt["error"]["class"] == "stream_error"
    assert text_of(attempt) == "an answer that stops here"  # what did arrive is kept


# ---- size ---------------------------------------------------------------------------------------

HUNDRED_MB = 100 * MB


def test_a_100_mb_request_body(
    sidecar: Sidecar, upstream: Upstream, certs: Certs, control: Callable[..., Control]
) -> None:
    marker = unique("huge-request")
    head = json.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": marker + " "}]})[
        :-4
    ].encode()
    tail = b'"}]}'
    filler = b"x" * (64 * 1024)
    count = (HUNDRED_MB - len(head) - len(tail)) // len(filler)
    size = len(head) + count * len(filler) + len(tail)
    digest = hashlib.sha256(head + filler * count + tail).hexdigest()

    def upload() -> Iterator[bytes]:  # streamed from the client: chunked, never whole in memory
        yield head
        for _ in range(count):
            yield filler
        yield tail

    answer = wire.openai_completion("that was long", usage=USAGE)
    upstream.push(Reply.json(answer))
    run_id, headers = run_header("huge-request")
    with control(limit=15.0), proxied(sidecar, timeout=120) as client:
        through = fetch(client, upstream.url + CHAT, upload(), headers=headers)
    assert (through.status, through.error, through.body) == (200, None, answer)
    (seen,) = upstream.seen
    assert (len(seen.body), hashlib.sha256(seen.body).hexdigest()) == (size, digest)
    upstream.seen.clear()  # 100 MB
    attempt = attempt_of(sidecar, run_id, timeout=60)
    assert (attempt["status"], attempt["http_status"]) == ("completed", 200)
    assert attempt["error"]["class"] == "proxy_error"  # too big to parse: said so, traffic untouched
    assert "too large to parse" in attempt["error"]["message"]
    assert attempt["request_bytes"] == size
    assert text_of(attempt) == "that was long"  # the response is still understood
    detail = bodies(sidecar, attempt)
    assert detail["request_truncated"] is True
    assert detail["request_body"].startswith(head.decode())
    assert len(detail["request_body"].encode()) <= MB  # the default capture limit


def _upload(head: bytes, size: int, pause: Callable[[int], None] = lambda sent: None) -> Iterator[bytes]:
    """A JSON request of `size` bytes, streamed by the client in 64 KiB pieces."""
    filler = b"x" * (64 * 1024)
    tail = b'"}]}'
    count = (size - len(head) - len(tail)) // len(filler)
    yield head
    for i in range(count):
        pause(i * len(filler))
        yield filler
    yield tail


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_big_request_body_is_streamed_to_the_provider(hostile: Hostile, aux: Aux) -> None:
    sidecar = hostile.sidecar
    aux.upload_started.clear()
    seen_early: list[bool] = []

    def pause(sent: int) -> None:
        if sent == 8 * MB:  # well past any buffer: a streaming proxy has passed bytes on by now
            seen_early.append(aux.upload_started.wait(5))

    head = json.dumps(chat_body("upload "))[:-4].encode()
    with proxied(sidecar, timeout=60) as client:
        response = client.post(aux.url("tls", CHAT + "?probe=1"), content=_upload(head, 32 * MB, pause))
    assert response.status_code == 200
    assert aux.upload_size >= 32 * MB - 64 * 1024
    assert seen_early == [True], "the provider saw nothing before the client finished uploading"


def test_a_100_mb_request_body_does_not_cost_its_size_in_memory(hostile: Hostile, aux: Aux) -> None:
    sidecar = hostile.sidecar
    pid = sidecar.process.pid
    head = json.dumps(chat_body("upload "))[:-4].encode()
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss(pid))
            done.wait(0.01)

    with proxied(sidecar, timeout=60) as client:
        client.post(aux.url("tls", CHAT + "?probe=1"), content=_upload(head, 4 * MB))  # warm up
        before = _rss(pid)
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            response = client.post(aux.url("tls", CHAT + "?probe=1"), content=_upload(head, HUNDRED_MB))
        finally:
            done.set()
            sampler.join()
    assert response.status_code == 200
    growth = peak - before
    assert growth < 32 * MB, f"a 100 MB upload grew the sidecar's RSS by {growth / MB:.0f} MB"


def _big_events(total: int) -> tuple[list[bytes], int]:
    """OpenAI chunks of ~64 KiB text each, `total` bytes in all; the text's length."""
    piece = "y" * 65_000
    event = wire.openai_chunk("chatcmpl-big", "gpt-4.1", {"content": piece})
    first = wire.openai_chunk("chatcmpl-big", "gpt-4.1", {"role": "assistant", "content": ""})
    last = wire.openai_chunk("chatcmpl-big", "gpt-4.1", {}, "stop") + b"data: [DONE]\n\n"
    count = (total - len(first) - len(last)) // len(event)
    return [first, *([event] * count), last], count * len(piece)


def test_a_100_mb_streamed_response(
    sidecar: Sidecar, upstream: Upstream, certs: Certs, control: Callable[..., Control]
) -> None:
    events, text_length = _big_events(HUNDRED_MB)
    size = sum(map(len, events))
    digest = hashlib.sha256(b"".join(events)).hexdigest()
    upstream.push(Reply(200, {"Content-Type": SSE}, events))
    run_id, headers = run_header("huge-response")
    received = hashlib.sha256()
    count = 0
    with (
        control(limit=15.0),
        proxied(sidecar, timeout=120) as client,
        client.stream("POST", upstream.url + CHAT, json=chat_body("big", True), headers=headers) as response,
    ):
        assert response.status_code == 200
        for chunk in response.iter_raw():
            received.update(chunk)
            count += len(chunk)
    assert (count, received.hexdigest()) == (size, digest)
    attempt = attempt_of(sidecar, run_id, timeout=60)
    assert (attempt["status"], attempt["error"]) == ("completed", None)
    assert attempt["response_bytes"] == size
    (part,) = attempt["response"]["content"]
    assert part["original_length"] == text_length  # every event parsed, the text cut
    assert len(part["text"]) == 10_000
    detail = bodies(sidecar, attempt)
    assert detail["response_truncated"] is True
    assert len(detail["response_body"].encode()) == MB  # capture stays capped


def test_a_100_mb_json_response(
    sidecar: Sidecar, upstream: Upstream, certs: Certs, control: Callable[..., Control]
) -> None:
    head = b'{"id":"chatcmpl-big","object":"chat.completion","model":"gpt-4.1","choices":[{"index":0,"message":{"role":"assistant","content":"'
    tail = b'"},"finish_reason":"stop"}]}'
    filler = b"z" * (64 * 1024)
    count = (HUNDRED_MB - len(head) - len(tail)) // len(filler)
    chunks = [head, *([filler] * count), tail]
    size = sum(map(len, chunks))
    upstream.push(Reply(200, {"Content-Type": "application/json"}, chunks))
    run_id, headers = run_header("huge-json")
    received = hashlib.sha256()
    count_in = 0
    with (
        control(limit=15.0),
        proxied(sidecar, timeout=120) as client,
        client.stream("POST", upstream.url + CHAT, json=chat_body("big json"), headers=headers) as response,
    ):
        for chunk in response.iter_raw():
            received.update(chunk)
            count_in += len(chunk)
    assert (count_in, received.hexdigest()) == (size, hashlib.sha256(b"".join(chunks)).hexdigest())
    attempt = attempt_of(sidecar, run_id, timeout=60)
    assert attempt["status"] == "completed"
    assert attempt["response_bytes"] == size
    assert any("exceeds the capture limit" in w for w in attempt["response"]["warnings"])
    assert bodies(sidecar, attempt)["response_truncated"] is True


# ---- protocols ----------------------------------------------------------------------------------


def test_httpx_with_http2_enabled(
    sidecar: Sidecar, upstream: Upstream, certs: Certs, control: Callable[..., Control]
) -> None:
    """httpx offers ALPN `http/1.1, h2` in that order and mitmproxy honours the client's order, so
    httpx ends up on HTTP/1.1 through the proxy (it would get h2 from a server that prefers it).
    Whatever is negotiated, concurrent calls on the client's pool come through byte for byte;
    `test_http2_from_the_client` below speaks h2 for real."""
    events = wire.openai_stream(["over ", "h2"], usage=USAGE)
    answer = wire.openai_completion("multiplexed", usage=USAGE)
    upstream.push(Reply.events(events), Reply.json(answer))
    runs = {"stream": run_header("h2-stream"), "json": run_header("h2-json")}
    bodies_sent = {"stream": chat_body("httpx h2 stream", True), "json": chat_body("httpx h2 whole")}
    results: dict[str, Got] = {}
    versions: set[str] = set()
    with control(), proxied(sidecar, http2=True) as client:

        def one(name: str) -> None:
            got = Got()
            with client.stream(
                "POST", upstream.url + CHAT, json=bodies_sent[name], headers=runs[name][1]
            ) as r:
                versions.add(r.http_version)
                got.status, got.body = r.status_code, b"".join(r.iter_raw())
            results[name] = got

        threads = [threading.Thread(target=one, args=(name,)) for name in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert versions <= {"HTTP/1.1", "HTTP/2"} and versions
    assert sorted(g.body for g in results.values()) == sorted(
        [b"".join(events), answer]
    )  # replies in either order
    texts = {text_of(attempt_of(sidecar, run_id)) for run_id, _ in runs.values()}
    assert texts == {"over h2", "multiplexed"}


def h2_exchange(
    sock: ssl.SSLSocket, authority: str, requests: list[tuple[dict[str, str], bytes]]
) -> list[Got]:
    """A minimal HTTP/2 client (the `h2` state machine over a socket): every request opened at
    once on the one connection, each answer collected as received."""
    from h2 import events as h2events
    from h2.config import H2Configuration
    from h2.connection import H2Connection

    conn = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    got: dict[int, Got] = {}
    for headers, body in requests:
        stream_id = conn.get_next_available_stream_id()
        pseudo = [(":method", "POST"), (":scheme", "https"), (":authority", authority), (":path", CHAT)]
        conn.send_headers(stream_id, [*pseudo, *headers.items(), ("content-length", str(len(body)))])
        conn.send_data(stream_id, body, end_stream=True)
        got[stream_id] = Got()
    sock.sendall(conn.data_to_send())
    open_streams = set(got)
    while open_streams:
        data = sock.recv(65536)
        assert data, "the proxy closed the HTTP/2 connection"
        for event in conn.receive_data(data):
            if isinstance(event, h2events.ResponseReceived):
                headers = dict(event.headers)
                got[event.stream_id].status = int(headers.pop(":status"))
                got[event.stream_id].headers = headers
            elif isinstance(event, h2events.DataReceived):
                got[event.stream_id].body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2events.StreamEnded):
                open_streams.discard(event.stream_id)
            elif isinstance(event, h2events.StreamReset):
                got[event.stream_id].error = ConnectionResetError
                open_streams.discard(event.stream_id)
        sock.sendall(conn.data_to_send())
    return [got[i] for i in sorted(got)]


def test_http2_from_the_client(
    sidecar: Sidecar, upstream: Upstream, certs: Certs, control: Callable[..., Control]
) -> None:
    """A client that prefers h2 (as curl and browsers do) gets it; the upstream here speaks
    HTTP/1.1 only, so the proxy translates. Streams interleave on one connection."""
    events = wire.openai_stream(["over ", "real ", "h2"], usage=USAGE)
    answer = wire.openai_completion("multiplexed", usage=USAGE)
    release = threading.Event()
    # the stream waits for the JSON answer to be out: the two really are in flight together
    upstream.push(Reply(200, {"Content-Type": SSE}, [events[0], Gate(release, 10), *events[1:]]))
    upstream.responder = lambda seen: Reply.json(answer)
    runs = [run_header("h2-stream"), run_header("h2-json")]
    requests = [
        (
            {**runs[0][1], "content-type": "application/json"},
            json.dumps(chat_body("h2 stream", True)).encode(),
        ),
        ({**runs[1][1], "content-type": "application/json"}, json.dumps(chat_body("h2 whole")).encode()),
    ]
    requests = [({k.lower(): v for k, v in h.items()}, b) for h, b in requests]
    with control():
        sock = tunnel(sidecar, upstream.port, alpn=["h2"])
        assert sock.selected_alpn_protocol() == "h2"
        watcher = threading.Thread(
            target=lambda: (upstream.sent_first.wait(10), time.sleep(0.3), release.set())
        )
        watcher.start()
        try:
            stream, whole = h2_exchange(sock, f"127.0.0.1:{upstream.port}", requests)
        finally:
            release.set()
            watcher.join()
            sock.close()
    assert (stream.status, stream.error, stream.body) == (200, None, b"".join(events))
    assert stream.headers["content-type"] == SSE
    assert (whole.status, whole.error, whole.body) == (200, None, answer)
    streamed = attempt_of(sidecar, runs[0][0])
    assert (streamed["status"], streamed["error"], streamed["streamed"]) == ("completed", None, True)
    assert text_of(streamed) == "over real h2"
    assert text_of(attempt_of(sidecar, runs[1][0])) == "multiplexed"


async def test_a_websocket_upgrade_to_a_provider_host_passes_through(hostile: Hostile, aux: Aux) -> None:
    sidecar = hostile.sidecar
    url = aux.url("tls", "/v1/realtime").replace("https://", "wss://")
    verify = ssl.create_default_context(cafile=str(sidecar.ca_file))
    payload = os.urandom(3 * MB)
    received_before = aux.ws_messages
    with Control(sidecar, aux):
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(url, proxy=sidecar.proxy_url, ssl=verify, max_msg_size=8 * MB) as ws,
        ):
            for text in ["hello", "日本語 🙂", '{"type": "session.update"}']:
                await ws.send_str(text)
                assert (await ws.receive(timeout=10)).data == text
            await ws.send_bytes(payload)
            echoed = await ws.receive(timeout=30)
            assert echoed.type == aiohttp.WSMsgType.BINARY and echoed.data == payload
            await ws.close()
    assert aux.ws_messages - received_before == 4


# ---- the client goes away -------------------------------------------------------------------------


def tunnel(sidecar: Sidecar, port: int, alpn: list[str] | None = None) -> ssl.SSLSocket:
    """A raw TLS connection through the proxy to 127.0.0.1:port, as a client opens it."""
    host, proxy_port = sidecar.addrs["regular"].rsplit(":", 1)
    sock = socket.create_connection((host, int(proxy_port)), timeout=10)
    sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200"), answer
    context = ssl.create_default_context(cafile=str(sidecar.ca_file))
    context.set_alpn_protocols(alpn or ["http/1.1"])
    return context.wrap_socket(sock, server_hostname="127.0.0.1")


def test_client_disconnects_before_the_request_body_is_complete(
    sidecar: Sidecar, upstream: Upstream, control: Callable[..., Control]
) -> None:
    run_id, _ = run_header("half-upload")
    body = json.dumps(chat_body(unique("half"))).encode()
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1:{upstream.port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body) + 5000}\r\nX-Chatdebug-Run: {run_id}\r\n\r\n"
    ).encode()
    with control():
        sock = tunnel(sidecar, upstream.port)
        sock.sendall(head + body)  # 5,000 bytes short
        time.sleep(0.3)
        sock.close()
        time.sleep(1.0)
    assert upstream.seen == []  # the provider never got a whole request to answer
    # a body that declares its length is held until it is whole: the attempt is recorded, cut
    # by the client
    attempt = attempt_of(sidecar, run_id)
    assert (attempt["status"], attempt["error"]["class"]) == ("interrupted", "canceled")


def test_client_disconnects_after_the_response_headers(
    sidecar: Sidecar, upstream: Upstream, control: Callable[..., Control]
) -> None:
    release = threading.Event()
    upstream.push(Reply(200, {"Content-Type": SSE}, [Gate(release, 10), *wire.openai_stream(["late"])]))
    run_id, headers = run_header("headers-only")
    try:
        with (
            control(),
            proxied(sidecar) as client,
            client.stream("POST", upstream.url + CHAT, json=chat_body("headers", True), headers=headers) as r,
        ):
            assert r.status_code == 200
            assert r.headers["content-type"] == SSE
            # leaving without reading a byte of the body closes the connection
        attempt = attempt_of(sidecar, run_id)
    finally:
        release.set()
    assert (attempt["status"], attempt["error"]["class"]) == ("interrupted", "canceled")
    assert attempt["http_status"] == 200


def test_client_disconnects_mid_stream(
    sidecar: Sidecar, upstream: Upstream, control: Callable[..., Control]
) -> None:
    release = threading.Event()
    events = wire.openai_stream(["first", " second"])
    upstream.push(Reply(200, {"Content-Type": SSE}, [events[0], events[1], Gate(release, 10), *events[2:]]))
    run_id, headers = run_header("mid-stream")
    try:
        with (
            control(),
            proxied(sidecar) as client,
            client.stream("POST", upstream.url + CHAT, json=chat_body("mid", True), headers=headers) as r,
        ):
            received = b""
            for chunk in r.iter_raw():
                received += chunk
                if b"first" in received:
                    break
        attempt = attempt_of(sidecar, run_id)
    finally:
        release.set()
    assert received.startswith(events[0])
    assert (attempt["status"], attempt["error"]["class"]) == ("interrupted", "canceled")
    assert text_of(attempt) == "first"


# ---- the upstream fails ---------------------------------------------------------------------------


def test_upstream_resets_mid_body(
    sidecar: Sidecar, upstream: Upstream, certs: Certs, control: Callable[..., Control]
) -> None:
    events = wire.openai_stream(["cut", " off", " here"])
    reply = Reply(200, {"Content-Type": SSE}, [events[0], events[1], 0.05, Close()])
    with control():
        plain, through, run_id = both_ways(sidecar, upstream, certs, reply, chat_body("reset", True), "reset")
    assert plain.error is httpx.RemoteProtocolError  # what a client sees without the proxy
    same_as_direct(plain, through, events[0] + events[1])
    attempt = attempt_of(sidecar, run_id)
    assert (attempt["status"], attempt["error"]["class"]) == ("failed", "connection_error")
    assert text_of(attempt) == "cut"  # events[0] is the role chunk


def test_upstream_breaks_off_a_body_of_declared_length(
    sidecar: Sidecar, upstream: Upstream, certs: Certs, control: Callable[..., Control]
) -> None:
    """A short whole body is held as bare mitmdump holds it (`WHOLE_BODY`): cut off midway, it
    reaches the client as mitmproxy's 502 where directly it is a 200 that breaks off. To an SDK
    both are a failed call that it retries; the attempt records the cut either way."""
    body = wire.openai_completion("a whole answer " * 100, usage=USAGE)
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    reply = Reply(200, headers, [body[: len(body) // 2], 0.05, Close()])
    with control():
        plain, through, run_id = both_ways(sidecar, upstream, certs, reply, chat_body("broken off"), "cut")
    assert (plain.status, plain.error) == (200, httpx.RemoteProtocolError)
    assert (through.status, through.error) == (502, None)
    assert b"without sending complete message body" in through.body
    attempt = attempt_of(sidecar, run_id)
    assert (attempt["status"], attempt["error"]["class"]) == ("failed", "connection_error")
    assert f"expected {len(body)}" in attempt["error"]["message"]
    assert attempt["http_status"] == 200 and attempt["ttfb_ms"] is not None  # its headers came


def test_a_body_of_declared_length_past_the_holding_bound_streams(
    sidecar: Sidecar, upstream: Upstream, control: Callable[..., Control]
) -> None:
    """Past `WHOLE_BODY` a body is passed on as it comes, length or not; below, held whole."""
    for size, streamed in ((WHOLE_BODY + 1, True), (WHOLE_BODY // 4, False)):
        answer = wire.openai_completion("x" * size, usage=USAGE)
        release = threading.Event()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(answer))}
        upstream.push(Reply(200, headers, [answer[:1000], Gate(release, 10), answer[1000:]]))
        run_id, hint = run_header(f"bound-{size}")
        first_at: list[float] = []
        with control(), proxied(sidecar) as client:
            request = client.build_request("POST", upstream.url + CHAT, json=chat_body("bound"), headers=hint)
            released_at = time.monotonic() + 1.5  # the upstream holds the rest until then
            threading.Timer(1.5, release.set).start()
            response = client.send(request, stream=True)  # held: not even its headers before
            received = b""
            for chunk in response.iter_raw():
                first_at.append(time.monotonic())
                received += chunk
            response.close()
        assert received == answer
        assert (first_at[0] < released_at) is streamed, size
        assert attempt_of(sidecar, run_id)["status"] == "completed"


def test_upstream_unreachable(hostile: Hostile, aux: Aux, certs: Certs) -> None:
    sidecar = hostile.sidecar
    url = f"https://127.0.0.1:{hostile.closed_port}{CHAT}"
    with direct(certs) as client:
        assert fetch(client, url, chat_body("nobody")).error is httpx.ConnectError
    run_id, headers = run_header("unreachable")
    with Control(sidecar, aux), proxied(sidecar) as client:
        through = fetch(client, url, chat_body("nobody home"), headers=headers)
    assert (through.status, through.error) == (502, None)
    attempt = attempt_of(sidecar, run_id)
    assert (attempt["status"], attempt["error"]["class"]) == ("failed", "connection_error")


def test_upstream_tls_failure(hostile: Hostile, aux: Aux) -> None:
    """The upstream presents a certificate from a CA the proxy does not trust."""
    sidecar = hostile.sidecar
    run_id, headers = run_header("bad-tls")
    with Control(sidecar, aux), proxied(sidecar) as client:
        through = fetch(client, aux.url("bad_tls", CHAT), chat_body("untrusted"), headers=headers)
    # without the proxy the client's own verification fails; through it, the proxy's does, and a
    # proxy can only say so with a 502
    assert (through.status, through.error) == (502, None)
    assert b"certificate" in through.body.lower()
    assert all(port != aux.ports["bad_tls"] for port, _ in aux.seen)  # nothing sent to it
    attempt = attempt_of(sidecar, run_id)
    assert (attempt["status"], attempt["error"]["class"]) == ("failed", "connection_error")
    assert "certificate" in attempt["error"]["message"].lower()


def test_upstream_stalls_before_its_headers_past_the_client_timeout(
    hostile: Hostile, aux: Aux, certs: Certs
) -> None:
    sidecar = hostile.sidecar
    url = aux.url("tls", CHAT + "?delay=4")
    with direct(certs, timeout=httpx.Timeout(1.0)) as client:
        plain = fetch(client, url, chat_body("stall"))
    run_id, headers = run_header("stall")
    with Control(sidecar, aux), proxied(sidecar, timeout=httpx.Timeout(1.0)) as client:
        through = fetch(client, url, chat_body("stall"), headers=headers)
    assert plain.error is httpx.ReadTimeout
    assert (through.status, through.error) == (None, httpx.ReadTimeout)
    assert abs(through.seconds - plain.seconds) < 1.0, (plain.seconds, through.seconds)
    attempt = attempt_of(sidecar, run_id)
    assert (attempt["status"], attempt["error"]["class"]) == ("interrupted", "canceled")
    assert attempt["http_status"] is None


def test_upstream_stalls_mid_stream_past_the_client_timeout(
    sidecar: Sidecar, upstream: Upstream, certs: Certs, control: Callable[..., Control]
) -> None:
    release = threading.Event()
    events = wire.openai_stream(["before", " the stall"])
    reply = Reply(200, {"Content-Type": SSE}, [events[0], events[1], Gate(release, 6), *events[2:]])
    try:
        with control():
            upstream.push(reply, reply)
            with direct(certs, timeout=httpx.Timeout(20.0, read=1.0)) as client:
                plain = fetch(client, upstream.url + CHAT, chat_body("stall", True))
            run_id, headers = run_header("stall-stream")
            with proxied(sidecar, timeout=httpx.Timeout(20.0, read=1.0)) as client:
                through = fetch(client, upstream.url + CHAT, chat_body("stall", True), headers=headers)
            attempt = attempt_of(sidecar, run_id)
    finally:
        release.set()
    assert plain.error is httpx.ReadTimeout
    same_as_direct(plain, through, events[0] + events[1])
    assert abs(through.seconds - plain.seconds) < 1.0, (plain.seconds, through.seconds)
    assert (attempt["status"], attempt["error"]["class"]) == ("interrupted", "canceled")
    assert text_of(attempt) == "before"  # events[0] is the role chunk


# ---- slow readers of the API ----------------------------------------------------------------------


def _slow_reader(sidecar: Sidecar, path: str) -> socket.socket:
    """An API client that asks and then reads nothing: its receive window closes."""
    host, port = sidecar.api_url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: */*\r\n\r\n".encode())
    return sock


def test_slow_api_readers_do_not_stall_recording(
    sidecar: Sidecar, upstream: Upstream, control: Callable[..., Control]
) -> None:
    """Clients that open `/api/v1/events` and a 500-run page and then never read: meanwhile
    hundreds of calls (with big requests, so megabytes of events) are answered and recorded."""
    marker = unique("slowreader")
    upstream.responder = lambda seen: Reply.json(wire.openai_completion("ok", usage=USAGE))
    readers = [
        _slow_reader(sidecar, "/api/v1/events"),
        _slow_reader(sidecar, "/api/v1/runs?limit=500"),
        _slow_reader(sidecar, "/api/v1/events"),
    ]
    padding = "lorem ipsum " * 800  # ~9.6 kB of text per request: each step event carries it
    calls = 300
    slowest = 0.0
    try:
        with control(), proxied(sidecar) as client:
            started = time.perf_counter()
            for i in range(calls):
                t = time.perf_counter()
                body = {
                    "model": "gpt-4.1",
                    "messages": [{"role": "user", "content": f"{marker} {i} {padding}"}],
                }
                reply = client.post(upstream.url + CHAT, json=body)
                assert reply.status_code == 200
                if i == calls // 2:  # a page of runs that now exist, asked for and never read
                    readers.append(_slow_reader(sidecar, "/api/v1/runs?limit=500"))
                slowest = max(slowest, time.perf_counter() - t)
            elapsed = time.perf_counter() - started
            runs = sidecar.wait_runs(calls, q=marker, timeout=30, limit=500)
        assert {r["status"] for r in runs} == {"completed"}
        assert slowest < 2.0, f"a call took {slowest:.1f}s"
        assert elapsed < 60
        # the stalled subscribers are still connected or were dropped; either way the API answers
        assert httpx.get(f"{sidecar.api_url}/healthz", timeout=5).status_code == 200
    finally:
        for sock in readers:
            sock.close()


# ---- found on the way ---------------------------------------------------------------------------


def test_a_stream_whose_id_is_not_a_string_keeps_its_response_body(
    sidecar: Sidecar, upstream: Upstream, certs: Certs
) -> None:
    events = [
        e.replace(b'"id":"chatcmpl-odd"', b'"id":["chatcmpl-odd"]')
        for e in wire.openai_stream(["odd ", "id"], cid="chatcmpl-odd")
    ]
    stream = b"".join(events)
    plain, through, run_id = both_ways(
        sidecar, upstream, certs, Reply.events(events), chat_body("odd id", True), "odd-id"
    )
    same_as_direct(plain, through, stream)  # the traffic is fine either way
    attempt = attempt_of(sidecar, run_id)
    assert (attempt["status"], text_of(attempt)) == ("completed", "odd id")
    assert bodies(sidecar, attempt)["response_body"] == stream.decode()


def test_identical_concurrent_requests_keep_their_forced_run_ids(
    sidecar: Sidecar, upstream: Upstream
) -> None:
    release = threading.Event()
    answer = wire.openai_completion("same answer", usage=USAGE)
    upstream.responder = lambda seen: Reply(
        200, {"Content-Type": "application/json"}, [Gate(release, 10), answer]
    )
    body = chat_body(unique("same question"))
    runs = [run_header("forced-a"), run_header("forced-b")]

    def ask(headers: dict[str, str]) -> None:
        with proxied(sidecar) as client:
            assert client.post(upstream.url + CHAT, json=body, headers=headers).content == answer

    threads = [threading.Thread(target=ask, args=(headers,)) for _, headers in runs]
    try:
        for thread in threads:
            thread.start()
            time.sleep(0.3)  # the first is in flight when the second starts
    finally:
        release.set()
        for thread in threads:
            thread.join(20)
    for run_id, _ in runs:
        assert attempt_of(sidecar, run_id, timeout=2)["status"] == "completed"


def _wait_ready(sidecar: Sidecar, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while (ready := httpx.get(f"{sidecar.api_url}/readyz", timeout=30)).status_code != 200:
        assert time.monotonic() < deadline, f"never ready: {ready.text}\n{sidecar.log()[-3000:]}"
        time.sleep(0.05)


def _huge_usage_completion(prompt_tokens: int) -> bytes:
    body = json.loads(wire.openai_completion("counted", usage=USAGE))
    body["usage"] = wire.openai_usage(prompt_tokens, 5)
    return json.dumps(body).encode()


def test_token_counts_past_63_bits_do_not_stop_recording(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream
) -> None:
    sidecar = own_sidecar()
    # The ready line comes before the database is open (the writer opens it on its first turn,
    # later under load, and the API answers 503 until then): recording starts from a known state.
    _wait_ready(sidecar)
    poison = _huge_usage_completion(2**63 + 5)
    huge, marker = unique("huge-usage"), unique("after-huge-usage")
    fine = wire.openai_completion("fine", usage=USAGE)
    # Each reply chosen by its request, not taken from a queue whatever request comes first.
    upstream.responder = lambda seen: Reply.json(poison if huge.encode() in seen.body else fine)
    with proxied(sidecar) as client:
        assert client.post(upstream.url + CHAT, json=chat_body(huge)).content == poison
        for i in range(3):
            assert client.post(upstream.url + CHAT, json=chat_body(f"{marker} {i}")).status_code == 200
    # The poison's records too, before /readyz is asked: a drop they caused would show there.
    (poisoned,) = sidecar.wait_runs(1, q=huge, timeout=60)
    assert (poisoned["status"], poisoned["usage"]["output_tokens"]) == ("completed", 5)
    assert len(sidecar.wait_runs(3, q=marker, timeout=60)) == 3
    ready = httpx.get(f"{sidecar.api_url}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text


def test_token_counts_past_64_bits_end_their_attempt(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream
) -> None:
    sidecar = own_sidecar()
    poison = _huge_usage_completion(2**64 - 1)
    upstream.push(Reply.json(poison))
    run_id, headers = run_header("u64-usage")
    with proxied(sidecar) as client:
        assert (
            client.post(upstream.url + CHAT, json=chat_body("u64 usage"), headers=headers).content == poison
        )
    assert attempt_of(sidecar, run_id, timeout=5)["status"] == "completed"


# JavaScript's own JSON: a string cut by UTF-16 index keeps half of the emoji it cuts, and
# JSON.stringify writes that half as an escape the Anthropic API refuses (Claude Code has met it
# with long tool outputs: "The request body is not valid JSON: no low surrogate in string").
CUT_IN_AN_EMOJI = """
const [marker] = process.argv.slice(1);
const text = `${marker} fixed it 🎉🎉`.slice(0, -1);
process.stdout.write(JSON.stringify({
  model: "claude-sonnet-4-5", max_tokens: 64, messages: [{ role: "user", content: text }],
}));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node, to write JavaScript's own JSON")
def test_a_javascript_string_cut_inside_an_emoji_is_recorded_with_the_providers_refusal(
    sidecar: Sidecar, upstream: Upstream
) -> None:
    marker = unique("emoji")
    sent = subprocess.run(["node", "-e", CUT_IN_AN_EMOJI, marker], capture_output=True, check=True).stdout
    assert sent.endswith(b'\\ud83c"}]}')  # the first half of U+1F389
    with pytest.raises(orjson.JSONDecodeError) as strict:
        orjson.loads(sent)
    refusal = f"The request body is not valid JSON: {strict.value}"
    upstream.push(Reply.json(wire.anthropic_error("invalid_request_error", refusal), status=400))
    run_id, headers = run_header("emoji")
    headers |= {"x-api-key": "sk-ant-api03-not-a-real-key", "anthropic-version": "2023-06-01"}
    with proxied(sidecar) as client:
        got = fetch(client, upstream.url + "/v1/messages", sent, headers=headers)
    assert got.status == 400 and orjson.loads(got.body)["error"]["message"] == refusal
    assert upstream.seen[-1].body == sent
    attempt = attempt_of(sidecar, run_id)
    assert (attempt["http_status"], attempt["error"]["message"]) == (400, refusal)
    request = sidecar.get(f"/api/v1/runs/{run_id}")["steps"][0]["request"]
    assert request["messages"][0]["parts"] == [{"type": "text", "text": f"{marker} fixed it 🎉\ufffd"}]
    assert request["warnings"] == [f"the body is not strict JSON ({strict.value}): read leniently"]
