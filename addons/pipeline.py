"""From exchanges to rows: parse, classify, group and track, off the traffic path (every row is
scrubbed of secrets in the writer, before anything stores, spools or announces it:
`storage.writer.Writer(scrub=redact.Redactor.row)`).

The recorder's hooks only enqueue; this task does the work in arrival order, so a slow parse
delays a record, never a response.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from addons import offloop, redact
from addons.classify import Classification, Classifier
from addons.cost import Prices
from addons.decoding import binary, decodable, is_text, request_body
from addons.exchange import Exchange
from addons.grouping import Hashes, Lookup, StepRef, request_hashes
from addons.normalized import Error, Request, Response
from addons.outcome import Outcome, decide
from addons.providers.base import ParseError, cap_request_texts, read_json, too_many_containers
from addons.tracker import RUN_ID, Tracker
from storage.records import AttemptRow, Row, timestamp

log = logging.getLogger(__name__)

_UNLIMITED = 1 << 62
MAX_RECALLED = 200  # prefix hashes of one request looked up in the store (its newest history)
# (step id, whether a stored row is the one last submitted) -> the stored step (`Writer.get_object`)
RecallStep = Callable[[str, Callable[[dict[str, Any]], bool]], Awaitable[dict[str, Any] | None]]


@dataclasses.dataclass(slots=True)
class Counters:
    flows: int = 0
    recorded: int = 0
    failed: int = 0  # exchanges we could not turn into rows (a bug, counted not raised)
    dropped: int = 0  # exchanges that found the queue full
    hook_errors: int = 0
    unread: int = 0  # requests recorded without reading their body: large ones waited already


@dataclasses.dataclass(slots=True)
class _Read:
    """A request as read off its exchange, before it is placed: all of it a function of the
    exchange (and the classifier's rules), so a large one is read off the loop (`addons.offloop`)."""

    request: Request | None
    fault: str | None
    body_text: str
    truncated: bool
    classification: Classification
    stored: Request | None = None  # the request as stored: texts cut (`request` stays whole)
    dump: dict[str, Any] | None = None  # `stored`, dumped
    hashes: Hashes | None = None  # what the grouping index looks it up by: whole texts


@dataclasses.dataclass(slots=True)
class _Result:
    """A response as read off its capture, and why it may be missing."""

    response: Response | None
    fault: str | None
    dump: dict[str, Any] | None


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
        prices: list[Path] | tuple[Path, ...] = (),
        recall: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None,
        history: Callable[[list[str], str | None], Awaitable[list[dict[str, Any]]]] | None = None,
        recall_step: RecallStep | None = None,
        shared: bool = False,
    ) -> None:
        self.submit = submit
        self.recall = recall  # a stored run by id, for runs named again after memory let them go
        # a stored step by id, and whether a stored row is the one last submitted: a sent
        # step's request and response
        self.recall_step = recall_step
        self.history = history  # stored steps by request hash, for histories memory does not know
        # other replicas write the same store: a history memory knows may have gone on elsewhere
        self.shared = shared
        self.classifier = Classifier(profiles)
        self.tracker = Tracker(
            submit,
            retry_window=retry_window,
            stale_after=stale_after,
            prices=Prices(prices),
            let_go_sent=recall_step is not None,
        )
        self.counters = Counters()
        self.tick_seconds = tick_seconds
        self.max_queue = max_queue  # bounds the calls waiting to start; a finish is never refused
        self._queue: asyncio.Queue[tuple[str, Exchange]] = asyncio.Queue()
        self._backlog = 0  # bytes of large request bodies queued or being read (`offloop`)
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

    def _leave_unread(self, exchange: Exchange, why: str) -> None:
        self.counters.unread += 1
        exchange.leave_unread(
            f"the request body ({exchange.request_size} bytes) was not read for recording: {why}"
        )

    def _leave_unread_if_late(self, exchange: Exchange) -> None:
        """A body that waited past MAX_WAIT_SECONDS for the thread is not read: reading is that
        far behind, and the bodies that wait with it only fall further behind."""
        if (waited := time.monotonic() - exchange.queued_at) > offloop.MAX_WAIT_SECONDS:
            self._leave_unread(exchange, f"it waited {waited:.0f} s to be read")

    def _put(self, kind: str, exchange: Exchange) -> None:
        if kind == "start":
            if self._queue.qsize() >= self.max_queue:
                self.counters.dropped += 1  # its finish finds nothing open and is ignored
                return
            size = _backlog_bytes(exchange)
            if size and self._backlog + size > offloop.MAX_BACKLOG_BYTES:
                self._leave_unread(
                    exchange, f"{self._backlog} bytes of large bodies were waiting to be read before it"
                )
                size = 0
            exchange.backlog = size
            self._backlog += size
            exchange.queued_at = time.monotonic()
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
                # the traffic first: the hook that handed this over is still to let mitmproxy
                # send its request or response on (the hook's task resumes on the loop's next
                # turn, and this one woke before it); a held body would wait for this call's work
                await asyncio.sleep(0)
                if kind == "start":
                    try:
                        await self._recall_forced_run(exchange)
                        if exchange.backlog:
                            self._leave_unread_if_late(exchange)
                        # learned first: every row is scrubbed of them
                        redact.secret_values(exchange.request_headers, exchange.url)
                        reading = functools.partial(_read, exchange, self.classifier)
                        read = await offloop.run(0 if exchange.unread else exchange.backlog, reading)
                    finally:
                        self._backlog -= exchange.backlog
                    found = await self._lookup(read, exchange.hints) if read.request is not None else None
                    self._begin(exchange, read, found)
                elif exchange.flow_id in self.tracker.flights:  # else its start found the queue full
                    capture = exchange.capture
                    if capture is not None:  # what the tap kept undecoded, decoded off the loop
                        await capture.settle()
                    to_read = capture.to_read if capture is not None else 0
                    self._finish(exchange, await offloop.run(to_read, functools.partial(_result, exchange)))
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
            except Exception:
                log.exception("tracker tick failed")

    async def _lookup(self, read: _Read, hints: dict[str, str]) -> Lookup:
        """What memory knows of the request's history; the store is asked when memory knows
        nothing of a history the request carries (after a restart, or another replica's) and, in
        a shared store, whenever the request is not one memory has seen (another replica may
        have added the step it continues)."""
        request = read.request
        assert request is not None
        index = self.tracker.index
        found = index.lookup(request, read.hashes)
        if self.history is None or not index.unknown_history(found, anywhere=self.shared):
            if (ref := found.same) is not None and self.tracker.let_go_early(ref):
                await self._take_up(ref)  # a retry of a run a busy proxy let go: the store has it
            await self._restore(found.same, request, hints)
            return found
        previous = request.signals.previous_response_id
        try:
            stored = await self.history(found.hashes[-MAX_RECALLED:], previous)
        except Exception as e:  # the store is away: the call is placed on what memory knows
            log.warning("could not look up a request's history in the store: %s", e)
            return found
        now = self.tracker.clock()
        refs = []
        for s in stored:
            ref = StepRef(s["run_id"], s["step_id"], s["conversation_id"], now)
            if s["request_hash"]:
                refs.append((s["request_hash"], ref))
            if previous and s["response_id"] == previous:
                refs.append((f"resp:{previous}", ref))
        index.learn_stored(list(reversed(refs)))  # the newest last: it wins
        found = index.lookup(request, read.hashes)
        if self.shared:
            await self._take_up(found.same or found.continues)
        await self._restore(found.same, request, hints)
        return found

    async def _restore(self, ref: StepRef | None, request: Request, hints: dict[str, str]) -> None:
        """A step a request may retry, whose request and response left memory once stored: back
        from the store before the attempt is placed (its snapshots carry them whole)."""
        if ref is None or self.recall_step is None or not self.tracker.may_retry(ref, request, hints):
            return
        try:
            stored = await self.recall_step(ref.step_id, functools.partial(self.tracker.sent_last, ref))
        except Exception as e:  # the store is away: the tracker places the call without the step
            log.warning("could not look up step %s in the store: %s", ref.step_id, e)
            return
        if stored is not None:
            self.tracker.restore(ref, stored)

    async def _take_up(self, ref: StepRef | None) -> None:
        """The run a request retries or continues, as the store has it when another replica
        recorded the step in question: its next step and attempt numbers follow the stored ones."""
        if ref is None or self.recall is None:
            return
        run = self.tracker.runs.get(ref.run_id)
        if run is not None and (run.in_flight or any(s.row.id == ref.step_id for s in run.steps)):
            return  # memory is up to date (or busy with it): it stays the owner
        try:
            stored = await self.recall(ref.run_id)
        except Exception as e:
            log.warning("could not look up run %s in the store: %s", ref.run_id, e)
            return
        if stored is not None:
            self.tracker.resume(stored)

    async def _recall_forced_run(self, ex: Exchange) -> None:
        run_id = ex.hints.get("x-chatdebug-run", "")
        if self.recall is None or not RUN_ID.fullmatch(run_id) or run_id in self.tracker.runs:
            return
        try:
            stored = await self.recall(run_id)
        except Exception as e:  # the store is away: the run starts afresh in memory
            log.warning("could not look up run %s in the store: %s", run_id, e)
            return
        if stored is not None:
            self.tracker.resume(stored)

    # ---- one exchange -----------------------------------------------------------------------

    def _start(self, ex: Exchange) -> None:
        """Read and begin an attempt on what memory knows (the consumer also asks the store)."""
        redact.secret_values(ex.request_headers, ex.url)
        self._begin(ex, _read(ex, self.classifier), None)

    def _begin(self, ex: Exchange, read: _Read, found: Lookup | None) -> None:
        request, fault = read.stored, read.fault  # the tracker keeps what is stored: texts cut
        body_text, truncated = read.body_text, read.truncated
        attempt = AttemptRow(
            id=f"att_{ex.flow_id.replace('-', '')}",
            method=ex.call.method,
            url=redact.url(ex.url),
            started_at=timestamp(ex.started_at),
            request_bytes=ex.request_size,
            request_headers=redact.headers(ex.request_headers),
        )
        flight = self.tracker.begin(
            ex.flow_id,
            request,
            read.classification,
            attempt,
            api=ex.api.name,
            provider=ex.provider,
            endpoint=f"{ex.call.host}{ex.call.path}",
            started_at=ex.started_at,
            hints=ex.hints,
            request_dump=read.dump,
            found=found,
        )
        flight.fault = fault
        flight.streamed = bool(request and request.stream)
        flight.body.request_body = body_text
        flight.body.request_truncated = truncated or not ex.request_complete
        ex.request_body = b""  # read: the attempt keeps its capped copy, not the whole body
        self.submit(dataclasses.replace(flight.body))

    def _abandon(self, ex: Exchange, error: Exception) -> None:
        """A start or finish that failed half-way: the attempt still ends, as our own error."""
        message = f"could not record this attempt: {type(error).__name__}: {error}"
        outcome = Outcome("failed", Error.model_validate({"class": "proxy_error", "message": message}))
        self.tracker.end(ex.flow_id, outcome, None, None, ex.finished_at or ex.started_at)

    def _finish(self, ex: Exchange, result: _Result | None = None) -> None:
        flight = self.tracker.flights.get(ex.flow_id)
        if flight is None:
            return
        attempt, body = flight.attempt, flight.body
        result = result or _result(ex)
        response, fault = result.response, result.fault
        outcome = decide(ex.status, response, ex.error, flight.fault or ex.fault or fault, ex.client_gone)
        capture = ex.capture
        attempt.http_status = ex.status
        attempt.response_headers = redact.headers(ex.response_headers) if ex.response_headers else None
        attempt.streamed = flight.streamed or _is_stream(ex)
        finished = ex.finished_at or ex.started_at
        attempt.duration_ms = round((finished - ex.started_at) * 1000, 3)
        if capture is not None:
            attempt.response_bytes = capture.size
            if capture.first_byte_at is not None:
                attempt.ttfb_ms = round((capture.first_byte_at - ex.started_at) * 1000, 3)
            kept = capture.body  # joined once: it is up to the capture limit (1 MiB) long
            body.response_body = kept.decode("utf-8", "replace") if is_text(kept) else binary(kept)
            body.response_truncated = capture.truncated
        self.tracker.end(ex.flow_id, outcome, response, result.dump, finished)
        self.submit(body)
        self.counters.recorded += 1


# ---- helpers: plain functions over bytes and models ---------------------------------------------


def _read(ex: Exchange, classifier: Classifier) -> _Read:
    """The request decoded, parsed, classified, hashed for the index and dumped as stored. The
    pipeline's one consumer calls it: one classification at a time, on the loop or off it."""
    if ex.unread is not None:  # only the head a row stores is decoded
        limit = ex.call.capture_limit
        decoded = request_body(ex.request_body, ex.request_encoding, limit, parse_limit=limit)
        request, fault = None, ex.unread
    else:
        decoded = request_body(ex.request_body, ex.request_encoding, ex.call.capture_limit)
        request, fault = _parse_request(ex, decoded.data) if decoded.fault is None else (None, decoded.fault)
    classification = classifier.classify(request, ex.call.path, ex.hints)
    if request is None and fault is not None and classification.source == "default":
        classification = dataclasses.replace(classification, reason=fault)  # why it was not read
    read = _Read(request, fault, decoded.text, decoded.truncated, classification)
    if request is not None:
        read.hashes = request_hashes(request)
        read.stored = cap_request_texts(request, ex.call.text_limit)
        read.dump = _dump(read.stored)
    return read


def _backlog_bytes(ex: Exchange) -> int:
    """What a start adds to the bodies waiting to be read off the loop, in bytes as held: none
    for a body small enough to read on the loop, one too large to read, or one left unread. A
    compressed body is read off the loop however small: it may decode to the parse bound."""
    if ex.unread is not None or not ex.request_complete:
        return 0
    size = len(ex.request_body)
    if size >= offloop.OFF_LOOP_BYTES:
        return size
    return offloop.OFF_LOOP_BYTES if ex.request_encoding and decodable(ex.request_encoding) else 0


def _parse_request(ex: Exchange, raw: bytes) -> tuple[Request | None, str | None]:
    """The normalized request (uncut: grouping hashes whole texts), or why there is none: only a
    body that is not JSON (or too large to read) has none; anything else the parser keeps."""
    if not ex.request_complete:
        return None, f"the request body ({ex.request_size} bytes) is too large to parse for recording"
    try:
        body, lenient = read_json(raw)
    except ParseError as e:
        return None, f"could not parse the {ex.api.name} request: the body is not JSON ({e})"
    if (why := too_many_containers(body, raw)) is not None:
        return None, f"the request body ({ex.request_size} bytes) {why}"
    try:
        request = ex.api.parse_request(body, dataclasses.replace(ex.call, text_limit=_UNLIMITED))
    except Exception as e:  # the boundary keeps what it can; this is a bug, recorded as ours
        return None, f"could not parse the {ex.api.name} request: {type(e).__name__}: {e}"
    if lenient is not None:  # the provider may refuse it: the request shows why
        request.warnings.append(f"the body is {lenient}")
    return request, None


def _result(ex: Exchange) -> _Result:
    capture = ex.capture
    if capture is None:
        return _Result(None, None, None)
    try:
        response = capture.result()
    except Exception as e:
        fault = capture.fault or f"could not parse the {ex.api.name} response: {type(e).__name__}: {e}"
        return _Result(None, fault, None)
    return _Result(response, capture.fault, _dump(response))


def _is_stream(ex: Exchange) -> bool:
    content_type = ex.response_content_type.lower()
    return any(t in content_type for t in ("event-stream", "ndjson", "eventstream"))


def _dump(model: Request | Response) -> dict[str, Any]:
    """As stored; secrets are scrubbed where every row passes, on its way to the writer."""
    return model.model_dump(mode="json", exclude_none=True, by_alias=True)


__all__ = ["Counters", "Outcome", "Pipeline"]
