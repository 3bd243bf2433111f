"""The mitmproxy addon: picks LLM calls off flows and hands them on. Hooks only.

Every hook is guarded: recording must never fail, stall or alter a flow. A body that declares
a length of at most `WHOLE_BODY` is held whole by mitmproxy, as bare mitmdump holds every body,
and read in the `request` or `response` hook. Any other body, and every stream, is forwarded chunk
by chunk as it arrives: a request through a tee (`requestheaders`), a response through the stream
tap (`responseheaders`), a bounded copy kept.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from mitmproxy import http

from addons.capture import Capture, RequestTee
from addons.decoding import MAX_PARSE_BYTES
from addons.exchange import Exchange
from addons.hosts import provider_for_host
from addons.providers.base import DEFAULT_CAPTURE_LIMIT, DEFAULT_TEXT_LIMIT, Call
from addons.providers.registry import find_api

log = logging.getLogger(__name__)

HINT_PREFIX = "x-chatdebug-"
_HINT_PREFIX_B = HINT_PREFIX.encode()
_KEY = "chatdebug"
_TEE = "chatdebug-request"
MAX_HINT = 200  # characters of an X-Chatdebug-* value: longer ones are ignored, never stored as ids
# Bodies declared at most this long are held whole and forwarded in one write: passed chunk by
# chunk through a tap, a chat call cost a tenth more CPU (bench/paired_bench.py). Holding delays
# a body by its own transfer time only: 256 KiB is 20 ms at 100 Mbit/s, and the provider cannot
# answer before it has the whole request anyway.
WHOLE_BODY = 256 << 10


class Sink(Protocol):
    def started(self, exchange: Exchange) -> None: ...

    def finished(self, exchange: Exchange) -> None: ...

    def hook_failed(self, hook: str, error: Exception) -> None: ...


def _guarded(
    hook: Callable[[Recorder, http.HTTPFlow], None],
) -> Callable[[Recorder, http.HTTPFlow], None]:
    @functools.wraps(hook)
    def wrapper(self: Recorder, flow: http.HTTPFlow) -> None:
        try:
            hook(self, flow)
        except Exception as e:
            log.exception("recorder hook %s failed", hook.__name__)
            self.sink.hook_failed(hook.__name__, e)
            if (exchange := _exchange(flow)) is not None:
                exchange.fault = exchange.fault or f"the {hook.__name__} hook failed: {type(e).__name__}: {e}"

    return wrapper


class Recorder:
    def __init__(
        self,
        sink: Sink,
        *,
        text_limit: int = DEFAULT_TEXT_LIMIT,
        capture_limit: int = DEFAULT_CAPTURE_LIMIT,
    ) -> None:
        self.sink = sink
        self.text_limit = text_limit
        self.capture_limit = capture_limit

    @_guarded
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        request = flow.request
        hints: dict[str, str] = {}
        # most requests carry no hint: the raw fields say so without decoding every header
        if any(k.lower().startswith(_HINT_PREFIX_B) for k, _ in request.headers.fields):
            hints = {k.lower(): v for k, v in request.headers.items() if k.lower().startswith(HINT_PREFIX)}
        for name in hints:
            del request.headers[name]  # ours alone: the provider never sees them
        hints = {k: v.strip() for k, v in hints.items() if len(v) <= MAX_HINT}  # ids, not payloads
        path = request.path.split("?", 1)[0]
        api = find_api(request.method, path)
        if api is not None:
            flow.metadata[_KEY] = (api, path, hints)
            if _declared_within(request, WHOLE_BODY):
                return  # mitmproxy holds it, and `request` reads it whole
            # the body goes on to the provider as it arrives, and a bounded copy stays with us:
            # as sent, so a compressed body is kept up to the limit its decoded form has too
            tee = RequestTee(MAX_PARSE_BYTES, head=self.capture_limit)
            flow.metadata[_TEE] = tee
            request.stream = tee.tap

    @_guarded
    def request(self, flow: http.HTTPFlow) -> None:
        self._start(flow)

    def _start(self, flow: http.HTTPFlow) -> Exchange | None:
        """The exchange, once the request is whole (or, for an error before that, as far as it got)."""
        picked = flow.metadata.get(_KEY)
        if not isinstance(picked, tuple):
            return None
        api, path, hints = picked
        request = flow.request
        host = request.pretty_host
        header_items = list(request.headers.items(multi=True))
        call = Call(
            method=request.method,
            host=host,
            path=path,
            query=dict(request.query.items()),
            headers=_joined(header_items),
            text_limit=self.text_limit,
            capture_limit=self.capture_limit,
        )
        tee: RequestTee | None = flow.metadata.get(_TEE)
        if tee is None or not tee.size:  # not streamed (or empty): mitmproxy holds the body
            tee = None
        body = tee.body if tee is not None else request.raw_content or b""
        exchange = Exchange(
            flow_id=flow.id,
            api=api,
            provider=provider_for_host(host) or _compatible(api.vendor),
            call=call,
            url=request.pretty_url,
            started_at=request.timestamp_start,
            request_headers=header_items,
            request_body=body,
            request_size=tee.size if tee is not None else len(body),
            request_complete=tee.complete if tee is not None else True,
            hints=hints,
        )
        flow.metadata[_KEY] = exchange
        self.sink.started(exchange)
        return exchange

    @_guarded
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        exchange = _exchange(flow)
        if exchange is None or flow.response is None:
            return
        response = flow.response
        exchange.status = response.status_code
        exchange.response_headers = list(response.headers.items(multi=True))
        parser = exchange.api.response_parser(
            exchange.call, exchange.response_content_type.lower(), response.status_code
        )
        capture = Capture(parser, response.headers.get("content-encoding", ""), self.capture_limit)
        exchange.capture = capture
        # a stream is passed on event by event whatever length it declares; its parser says so
        if capture.whole and _declared_within(response, WHOLE_BODY):
            capture.held = True  # mitmproxy holds it, and `response` gives it to the capture
        else:
            response.stream = capture.tap

    @_guarded
    def response(self, flow: http.HTTPFlow) -> None:
        _take_held(flow)
        self._finish(flow, None)

    @_guarded
    def error(self, flow: http.HTTPFlow) -> None:
        message = flow.error.msg if flow.error else "unknown error"
        _take_held(flow)  # cut off: only its headers came (mitmproxy keeps the part that did)
        exchange = _exchange(flow)
        if exchange is not None:
            # who went away: HTTP/2 says "peer closed connection" for either side, so ask the connection
            exchange.client_gone = not flow.client_conn.connected or "client" in message.lower()
        self._finish(flow, message)

    def _finish(self, flow: http.HTTPFlow, error: str | None) -> None:
        # a streamed request that failed before its end (upstream unreachable, client gone
        # mid-upload) never reached the `request` hook: it is recorded as far as it got
        exchange = _exchange(flow)
        if exchange is None and error is not None:
            exchange = self._start(flow)
            if flow.request.timestamp_end is None and "protocol error" in error:
                error = f"Client disconnected before the request body was complete ({error})"
        if exchange is None or exchange.finished_at is not None:
            return
        exchange.finished_at = time.time()
        exchange.error = error
        self.sink.finished(exchange)


def _declared_within(message: http.Message, bound: int) -> bool:
    """The message declares a body of at most `bound` bytes (a stream declares none)."""
    length = message.headers.get("content-length")
    return length is not None and length.isdigit() and int(length) <= bound


def _take_held(flow: http.HTTPFlow) -> None:
    """A held response's body, whole (none when it was cut off), to its capture, once."""
    exchange = _exchange(flow)
    capture = exchange.capture if exchange is not None else None
    if capture is not None and capture.held and flow.response is not None:
        capture.take_whole(flow.response.raw_content or b"", flow.response.timestamp_start)


def _exchange(flow: http.HTTPFlow) -> Exchange | None:
    value: Any = flow.metadata.get(_KEY)
    return value if isinstance(value, Exchange) else None


def _joined(items: list[tuple[str, str]]) -> dict[str, str]:
    """Lower-case names to values, a repeated header's values joined by ", " as
    `Headers.__getitem__` joins them (at a fifth of the cost of asking it for each name)."""
    out: dict[str, str] = {}
    for name, value in items:
        name = name.lower()
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _compatible(vendor: str) -> str:
    return vendor if vendor == "ollama" else f"{vendor}_compatible"
