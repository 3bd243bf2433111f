"""From exchanges to rows: parse, redact, classify, group and track, off the traffic path.

The recorder's hooks only enqueue; this task does the work in arrival order, so a slow parse
delays a record, never a response.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from addons import redact
from addons.classify import Classifier
from addons.decoding import request_body
from addons.exchange import Exchange
from addons.grouping import Grouper
from addons.normalized import Error, Request, Response
from addons.outcome import Outcome, decide
from addons.providers.base import ParseError, cap_request_texts, loads
from addons.tracker import Tracker
from storage.records import AttemptRow, BodyRow, Row, timestamp

log = logging.getLogger(__name__)

_UNLIMITED = 1 << 62


@dataclasses.dataclass(slots=True)
class Counters:
    flows: int = 0
    recorded: int = 0
    failed: int = 0  # exchanges we could not turn into rows (a bug, counted not raised)
    dropped: int = 0  # exchanges that found the queue full
    hook_errors: int = 0


@dataclasses.dataclass(slots=True)
class _Open:
    attempt: AttemptRow
    body: BodyRow
    secrets: set[str]
    fault: str | None  # why the request could not be parsed
    streamed: bool  # what the request asked for


class Pipeline:
    def __init__(
        self,
        submit: Callable[[Row], None],
        *,
        retry_window: float = 30.0,
        stale_after: float = 300.0,
        max_queue: int = 10_000,
        tick_seconds: float = 1.0,
        profiles: list[Path] | tuple[Path, ...] = (),
    ) -> None:
        self.submit = submit
        self.classifier = Classifier(profiles)
        self.tracker = Tracker(submit, retry_window=retry_window, stale_after=stale_after)
        self.grouper = Grouper(self.tracker.runs.get, retry_window=retry_window)
        self.counters = Counters()
        self.tick_seconds = tick_seconds
        self.max_queue = max_queue  # bounds the calls waiting to start; a finish is never refused
        self._queue: asyncio.Queue[tuple[str, Exchange]] = asyncio.Queue()
        self._open: dict[str, _Open] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # ---- the recorder's sink: called from hooks, never blocks ----------------------------

    def started(self, exchange: Exchange) -> None:
        self.counters.flows += 1
        self._put("start", exchange)

    def finished(self, exchange: Exchange) -> None:
        self._put("finish", exchange)

    def hook_failed(self, hook: str, error: Exception) -> None:
        self.counters.hook_errors += 1

    def forget(self, run_ids: list[str]) -> None:
        """Deleted runs: nothing more is recorded into them."""
        for run_id in run_ids:
            self.tracker.forget(run_id)

    def _put(self, kind: str, exchange: Exchange) -> None:
        if kind == "start" and self._queue.qsize() >= self.max_queue:
            self.counters.dropped += 1  # its finish finds nothing open and is ignored
            return
        self._queue.put_nowait((kind, exchange))

    # ---- the task ---------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._consume(), name="chatdebug-pipeline"),
            asyncio.create_task(self._tick(), name="chatdebug-ticker"),
        ]

    async def drain(self) -> None:
        await self._queue.join()

    async def close(self) -> None:
        await self.drain()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _consume(self) -> None:
        while True:
            kind, exchange = await self._queue.get()
            try:
                if kind == "start":
                    self._start(exchange)
                else:
                    self._finish(exchange)
            except Exception as e:
                self.counters.failed += 1
                log.exception("could not record %s %s", exchange.call.method, exchange.url)
                self._abandon(exchange, e)  # never an attempt left open for good
            finally:
                self._queue.task_done()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.tick_seconds)
            try:
                self.tracker.tick()
                self.grouper.expire()
            except Exception:
                log.exception("tracker tick failed")

    # ---- one exchange -----------------------------------------------------------------------

    def _start(self, ex: Exchange) -> None:
        secrets = redact.secret_values(ex.request_headers, ex.url)
        decoded = request_body(ex.request_body, ex.request_encoding, ex.call.capture_limit)
        body_text, truncated = decoded.text, decoded.truncated or not ex.request_complete
        parsed = _parse_request(ex, decoded.data) if decoded.fault is None else (None, None, decoded.fault)
        body, request, fault = parsed
        classification = self.classifier.classify(request, body, ex.call.path, ex.call.headers, ex.hints)
        placement, conversation_id = self.grouper.place(ex, request, body, classification)
        request_dump = _dump(cap_request_texts(request, ex.call.text_limit), secrets) if request else None
        attempt = AttemptRow(
            id=f"att_{ex.flow_id.replace('-', '')}",
            method=ex.call.method,
            url=redact.url(ex.url),
            started_at=timestamp(ex.started_at),
            request_bytes=ex.request_size,
            request_headers=redact.headers(ex.request_headers),
        )
        run, step, _ = self.tracker.start(
            ex.flow_id,
            placement,
            request=request,
            request_dump=request_dump,
            classification=classification,
            conversation_id=conversation_id,
            provider=ex.provider,
            endpoint=f"{ex.call.host}{ex.call.path}",
            attempt=attempt,
            started_at=ex.started_at,
            run_id=ex.hints.get("x-chatdebug-run"),
        )
        self.grouper.started(ex, run, step)
        body = BodyRow(
            id=attempt.id, request_body=redact.text(body_text, secrets), request_truncated=truncated
        )
        self._open[ex.flow_id] = _Open(attempt, body, secrets, fault, bool(request and request.stream))
        ex.request_body = b""  # read: the attempt keeps its capped copy, not the whole body
        self.submit(body)

    def _abandon(self, ex: Exchange, error: Exception) -> None:
        """A start or finish that failed half-way: the attempt still ends, as our own error."""
        self._open.pop(ex.flow_id, None)
        message = f"could not record this attempt: {type(error).__name__}: {error}"
        outcome = Outcome("failed", Error.model_validate({"class": "proxy_error", "message": message}))
        self.tracker.finish(ex.flow_id, outcome, None, None, ex.finished_at or ex.started_at)
        self.grouper.finished(ex, None, outcome)

    def _finish(self, ex: Exchange) -> None:
        opened = self._open.get(ex.flow_id)
        if opened is None:
            return
        attempt, body = opened.attempt, opened.body
        response, fault = _result(ex)
        outcome = decide(ex.status, response, ex.error, opened.fault or ex.fault or fault)
        if outcome.error is not None:  # upstream error messages echo keys back
            outcome.error.message = redact.text(outcome.error.message, opened.secrets)
        capture = ex.capture
        attempt.http_status = ex.status
        attempt.response_headers = redact.headers(ex.response_headers) if ex.response_headers else None
        attempt.streamed = opened.streamed or _is_stream(ex)
        finished = ex.finished_at or ex.started_at
        attempt.duration_ms = round((finished - ex.started_at) * 1000, 3)
        if capture is not None:
            attempt.response_bytes = capture.size
            if capture.first_byte_at is not None:
                attempt.ttfb_ms = round((capture.first_byte_at - ex.started_at) * 1000, 3)
            text = (
                capture.body.decode("utf-8", "replace") if _is_text(capture.body) else _binary(capture.body)
            )
            body.response_body = redact.text(text, opened.secrets)
            body.response_truncated = capture.truncated
        response_dump = _dump(response, opened.secrets) if response is not None else None
        self.tracker.finish(ex.flow_id, outcome, response, response_dump, finished)
        self.grouper.finished(ex, response, outcome)
        del self._open[ex.flow_id]
        self.submit(body)
        self.counters.recorded += 1


# ---- helpers: plain functions over bytes and models ---------------------------------------------


def _is_text(data: bytes) -> bool:
    try:
        data[:4096].decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start > 4090  # cut inside a character at the sample's end
    return b"\x00" not in data[:4096]


def _binary(data: bytes) -> str:
    return f"[{len(data)} bytes of binary data, not stored]"


def _parse_request(ex: Exchange, raw: bytes) -> tuple[Any, Request | None, str | None]:
    """The decoded JSON body and the normalized request (uncut: grouping hashes whole texts)."""
    body: Any = None
    if not ex.request_complete:
        return None, None, f"the request body ({ex.request_size} bytes) is too large to parse for recording"
    try:
        body = loads(raw)
        return body, ex.api.parse_request(body, dataclasses.replace(ex.call, text_limit=_UNLIMITED)), None
    except ParseError as e:
        return body, None, f"could not parse the {ex.api.name} request: {e}"
    except Exception as e:
        return body, None, f"could not parse the {ex.api.name} request: {type(e).__name__}: {e}"


def _result(ex: Exchange) -> tuple[Response | None, str | None]:
    capture = ex.capture
    if capture is None:
        return None, None
    try:
        response = capture.result()
    except Exception as e:
        return (
            None,
            capture.fault or f"could not parse the {ex.api.name} response: {type(e).__name__}: {e}",
        )
    return response, capture.fault


def _is_stream(ex: Exchange) -> bool:
    content_type = ex.response_content_type.lower()
    return any(t in content_type for t in ("event-stream", "ndjson", "eventstream"))


def _dump(model: Request | Response, secrets: set[str]) -> dict[str, Any]:
    return redact.json_fields(model.model_dump(mode="json", exclude_none=True, by_alias=True), secrets)


__all__ = ["Counters", "Outcome", "Pipeline"]
