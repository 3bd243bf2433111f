"""The recorder addon on mitmproxy flows: it never fails, stalls or alters one, whatever breaks."""

from __future__ import annotations

import asyncio
import gzip
import threading
from typing import Any

import orjson
import pytest
from mitmproxy import http
from mitmproxy.test import tflow, tutils

from addons import offloop
from addons.pipeline import Pipeline, _read
from addons.providers import openai_chat
from addons.recorder import Recorder
from storage.records import AttemptRow, Row
from tests import wire

BODY = b'{"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}], "stream": true}'


def flow(path: str = "/v1/chat/completions", body: bytes = BODY, **headers: str) -> http.HTTPFlow:
    f = tflow.tflow(
        req=tutils.treq(
            host="api.openai.com", port=443, scheme=b"https", method=b"POST", path=path.encode(), content=body
        )
    )
    f.request.headers.update(
        {"content-type": "application/json", "authorization": "Bearer sk-test", **headers}
    )
    return f


def respond(f: http.HTTPFlow, content_type: str = "text/event-stream") -> None:
    f.response = tutils.tresp(status_code=200, content=b"")
    f.response.headers["content-type"] = content_type


class Recording:
    """Recorder hooks driven by hand, as mitmproxy drives them, into a real pipeline."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.pipeline = Pipeline(self.rows.append)
        self.recorder = Recorder(self.pipeline)

    def attempts(self) -> list[AttemptRow]:
        while not self.pipeline._queue.empty():
            kind, exchange = self.pipeline._queue.get_nowait()
            (self.pipeline._start if kind == "start" else self.pipeline._finish)(exchange)
        return [r for r in self.rows if isinstance(r, AttemptRow)]

    def through(self, f: http.HTTPFlow, chunks: list[bytes]) -> bytes:
        self.recorder.requestheaders(f)
        self.recorder.request(f)
        respond(f)
        self.recorder.responseheaders(f)
        stream = f.response.stream if f.response else None
        forwarded = b"".join(stream(c) for c in [*chunks, b""]) if callable(stream) else b"".join(chunks)
        if f.response and not callable(stream):  # a body mitmproxy holds is on the flow at the end
            f.response.raw_content = forwarded
        self.recorder.response(f)
        return forwarded


def test_hint_headers_are_removed_and_other_paths_ignored() -> None:
    rec = Recording()
    f = flow(**{"X-Chatdebug-Conversation": "c1", "X-Chatdebug-Kind": "title_generation"})
    rec.recorder.requestheaders(f)
    assert "x-chatdebug-conversation" not in f.request.headers
    assert "x-chatdebug-kind" not in f.request.headers
    other = flow(path="/v1/models")
    rec.recorder.requestheaders(other)
    rec.recorder.request(other)
    assert rec.pipeline.counters.flows == 0


def test_stream_passes_byte_for_byte() -> None:
    rec = Recording()
    events = wire.openai_stream(["Hello", " world ✓"])
    raw = b"".join(events)
    chunks = [raw[i : i + 7] for i in range(0, len(raw), 7)]  # cut anywhere, inside characters too
    assert rec.through(flow(), chunks) == raw
    started, finished = rec.attempts()  # two snapshots of one attempt
    assert (started.id, started.status) == (finished.id, "in_progress")
    assert finished.status == "completed"
    assert finished.response is not None
    assert finished.response["content"] == [{"type": "text", "text": "Hello world ✓"}]


def test_a_failing_parser_never_touches_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    class Exploding:
        def feed(self, data: bytes) -> None:
            raise RuntimeError("parser bug")

        def finish(self) -> Any:
            raise RuntimeError("parser bug")

    monkeypatch.setattr(openai_chat.OpenAIChat, "response_parser", lambda self, call, ct, status: Exploding())
    rec = Recording()
    raw = b"".join(wire.openai_stream(["intact"]))
    assert rec.through(flow(), [raw[:10], raw[10:]]) == raw
    finished = rec.attempts()[-1]
    assert finished.error_class == "proxy_error"
    assert finished.error is not None and "parser bug" in finished.error["message"]


def test_a_failing_hook_is_counted_and_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Any, call: Any, content_type: str, status: int) -> Any:
        raise ValueError("responseheaders blew up")

    monkeypatch.setattr(openai_chat.OpenAIChat, "response_parser", broken)
    rec = Recording()
    raw = b"".join(wire.openai_stream(["still delivered"]))
    assert rec.through(flow(), [raw]) == raw  # no tap installed: mitmproxy forwards as usual
    assert rec.pipeline.counters.hook_errors == 1
    finished = rec.attempts()[-1]
    assert finished.error_class == "proxy_error"
    assert "responseheaders" in (finished.error or {})["message"]


def test_malformed_request_is_recorded_as_proxy_error() -> None:
    rec = Recording()
    raw = b"".join(wire.openai_stream(["ok"]))
    assert rec.through(flow(body=b'{"model": "gpt-4.1", "messages": [tru'), [raw]) == raw
    finished = rec.attempts()[-1]
    assert finished.error_class == "proxy_error"
    assert "invalid JSON" in (finished.error or {})["message"]
    assert finished.http_status == 200


def _history(messages: int) -> bytes:
    turns = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " * 8} for i in range(messages)
    ]
    return orjson.dumps({"model": "gpt-4.1", "messages": turns, "stream": True})


async def test_a_large_request_is_read_beside_the_loop_and_a_small_one_on_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reading a large body on the loop held every other flow for as long (a 15 MiB history, 4 s).
    Proof that it runs beside the loop: its reading waits for a task on the loop to run, which
    could never happen were the reading on the loop itself."""
    rec = Recording()
    loop = asyncio.get_running_loop()
    readers: list[tuple[str, bool]] = []  # (thread, whether the loop ran while it read)
    classify = rec.pipeline.classifier.classify

    def waiting_classify(request: Any, path: str, hints: dict[str, str]) -> Any:
        loop_ran = threading.Event()
        if request is not None and len(request.messages) > 100:
            loop.call_soon_threadsafe(loop_ran.set)
            loop_ran.wait(5)
        readers.append((threading.current_thread().name, loop_ran.is_set()))
        return classify(request, path, hints)

    monkeypatch.setattr(rec.pipeline.classifier, "classify", waiting_classify)
    rec.pipeline.start()
    try:
        raw = b"".join(wire.openai_stream(["read"]))
        small, large = flow(), flow(body=_history(2000))
        assert len(large.request.raw_content or b"") > offloop.OFF_LOOP_BYTES > len(BODY)
        for f in (small, large):
            assert rec.through(f, [raw]) == raw
        await asyncio.wait_for(rec.pipeline.drain(), 20)
    finally:
        await rec.pipeline.close()
    assert readers == [("MainThread", False), ("chatdebug-recording_0", True)]
    ended = {r.id: r.status for r in rec.rows if isinstance(r, AttemptRow)}  # each row's last write
    assert list(ended.values()) == ["completed", "completed"]


def test_large_bodies_past_the_backlog_bound_are_recorded_unread_and_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What waits to be read off the loop is bounded in bytes: a body past the bound keeps only
    the head its row stores, and says why it was not read."""
    body = _history(2000)
    monkeypatch.setattr(offloop, "MAX_BACKLOG_BYTES", 2 * len(body) + 1)
    rec = Recording()
    raw = b"".join(wire.openai_stream(["ok"]))
    flows = [flow(body=body) for _ in range(3)] + [flow()]  # queued before any is read
    for f in flows:
        rec.recorder.requestheaders(f)
        rec.recorder.request(f)
    assert rec.pipeline._backlog == 2 * len(body)  # the small one is read on the loop: not counted
    assert rec.pipeline.counters.unread == 1
    for f in flows:
        respond(f)
        rec.recorder.responseheaders(f)
        stream = f.response.stream if f.response else None
        assert callable(stream) and b"".join(stream(c) for c in [raw, b""]) == raw
        rec.recorder.response(f)
    attempts = {a.id: a for a in rec.attempts()}
    assert [a.error_class for a in attempts.values()] == [None, None, "proxy_error", None]
    third = list(attempts.values())[2]
    assert third.error == {
        "class": "proxy_error",
        "message": f"the request body ({len(body)} bytes) was not read for recording:"
        f" {2 * len(body)} bytes of large bodies were waiting to be read before it",
    }


def test_grouping_hashes_whole_texts_and_the_stored_request_is_cut() -> None:
    """Two histories that differ only past the text limit are different histories."""
    rec = Recording()
    reads = []
    for ending in ("first", "second"):
        long = "x" * 20_000 + ending
        body = orjson.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": long}]})
        f = flow(body=body)
        rec.recorder.requestheaders(f)
        rec.recorder.request(f)
        _, exchange = rec.pipeline._queue.get_nowait()
        reads.append(_read(exchange, rec.pipeline.classifier))
    first, second = reads
    assert first.hashes != second.hashes
    assert first.request is not None and first.stored is not None
    assert first.request.messages[0].parts[0].text.endswith("first")  # whole, as read
    stored = first.stored.messages[0].parts[0]
    assert (len(stored.text), stored.original_length) == (10_000, 20_005)  # type: ignore[union-attr]


async def test_a_compressed_request_is_read_beside_the_loop_however_small(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A few hundred bytes of zstd may decode to the parse bound: its size as sent says nothing."""
    rec = Recording()
    threads: list[str] = []
    classify = rec.pipeline.classifier.classify

    def noting(request: Any, path: str, hints: dict[str, str]) -> Any:
        threads.append(threading.current_thread().name)
        return classify(request, path, hints)

    monkeypatch.setattr(rec.pipeline.classifier, "classify", noting)
    body = _history(2000)
    packed = gzip.compress(body)
    assert len(packed) < offloop.OFF_LOOP_BYTES < len(body)
    rec.pipeline.start()
    try:
        raw = b"".join(wire.openai_stream(["read"]))
        assert rec.through(flow(body=packed, **{"content-encoding": "gzip"}), [raw]) == raw
        await asyncio.wait_for(rec.pipeline.drain(), 20)
    finally:
        await rec.pipeline.close()
    assert threads == ["chatdebug-recording_0"]
    assert rec.pipeline._backlog == 0
    ended = {r.id: r for r in rec.rows if isinstance(r, AttemptRow)}
    assert [(a.status, a.error_class) for a in ended.values()] == [("completed", None)]


async def test_a_large_body_that_waited_too_long_is_recorded_unread_and_nothing_stays_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rec = Recording()
    monkeypatch.setattr(offloop, "MAX_WAIT_SECONDS", 0.0)
    recall_forced = rec.pipeline._recall_forced_run

    async def failing(exchange: Any) -> None:  # what runs before the read fails for one start
        if exchange.hints.get("x-chatdebug-run") == "run-broken":
            raise RuntimeError("resuming the stored run failed")
        await recall_forced(exchange)

    monkeypatch.setattr(rec.pipeline, "_recall_forced_run", failing)
    raw = b"".join(wire.openai_stream(["ok"]))
    late, broken = flow(body=_history(2000)), flow(body=_history(2000), **{"X-Chatdebug-Run": "run-broken"})
    rec.pipeline.start()
    try:
        for f in (late, broken):
            assert rec.through(f, [raw]) == raw
        await asyncio.wait_for(rec.pipeline.drain(), 20)
    finally:
        await rec.pipeline.close()
    assert rec.pipeline._backlog == 0  # the failed start's bytes too
    assert (rec.pipeline.counters.unread, rec.pipeline.counters.failed) == (1, 1)
    ended = {r.id: r for r in rec.rows if isinstance(r, AttemptRow)}
    (only,) = ended.values()
    assert only.error is not None and only.error["message"].startswith(
        f"the request body ({len(late.request.raw_content or b'')} bytes) was not read for recording: it waited "
    )
