"""A finished run as an OpenTelemetry trace, built after the fact from what was recorded.

The run is the root span; each step a `chat {model}` client span under it; each attempt an
HTTP client span under its step; the time between a tool call (in step N's response) and its
result (in step N+1's request) an `execute_tool {name}` span under the run. Every span carries
the recorded start and end times. Ids are derived from the run's own ids, so the same run
always becomes the same trace: a re-export replaces rather than duplicates, and the pushed
trace and the `otlp-json` download agree. A caller's W3C `traceparent` (in the first
attempt's request headers) makes the run a child of the caller's span, in the caller's trace.

Message content goes in only when asked for (`content=True`).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from proxy import VERSION
from proxy import genai_semconv as sc
from storage.records import ns

SCOPE = InstrumentationScope("chatdebug-proxy", VERSION)
FINAL = ("completed", "error", "interrupted")
TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
Attributes = dict[str, Any]


def resource() -> Resource:
    """`service.name` is ours unless OTEL_SERVICE_NAME says otherwise; OTEL_RESOURCE_ATTRIBUTES adds."""
    return Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "chatdebug-proxy")})


def run_spans(
    run: Mapping[str, Any], *, content: bool = False, compacted: bool = False, res: Resource | None = None
) -> list[ReadableSpan]:
    """The run detail (`GET /runs/{id}`) as spans, root first. `compacted`: the run follows a
    compaction of its conversation (its first step is marked)."""
    return list(_Builder(run, content, compacted, res or resource()).spans())


def otlp_json(spans: list[ReadableSpan]) -> dict[str, Any]:
    """The OTLP/JSON encoding (an ExportTraceServiceRequest): the protobuf JSON mapping, except
    that trace and span ids are hex and enums integers, as the OTLP specification asks."""
    document = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = _b64_to_hex(span[key])
    return document


def _b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def caller_context(run: Mapping[str, Any]) -> SpanContext | None:
    """The caller's span from the first attempt's `traceparent`, when it is a valid one."""
    for step in run.get("steps") or []:
        for attempt in step.get("attempts") or []:
            headers = {k.lower(): v for k, v in (attempt.get("request_headers") or {}).items()}
            match = TRACEPARENT.match(str(headers.get("traceparent", "")).strip().lower())
            if match is None or int(match[1], 16) == 0 or int(match[2], 16) == 0:
                return None
            return SpanContext(int(match[1], 16), int(match[2], 16), True, TraceFlags(int(match[3], 16)))
    return None


def _id(bits: int, *parts: str) -> int:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[: bits // 8], "big") or 1


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


class _Builder:
    def __init__(self, run: Mapping[str, Any], content: bool, compacted: bool, res: Resource) -> None:
        self.run = run
        self.content = content
        self.compacted = compacted
        self.resource = res
        self.caller = caller_context(run)
        self.trace_id = self.caller.trace_id if self.caller else _id(128, "trace", run["id"])
        self.root = self._context(_id(64, "run", run["id"]))
        self.run_end = ns(run.get("finished_at")) or ns(run.get("updated_at")) or ns(run["started_at"]) or 0

    def _context(self, span_id: int) -> SpanContext:
        return SpanContext(self.trace_id, span_id, False, TraceFlags(TraceFlags.SAMPLED))

    def _span(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        start: int | None,
        end: int | None,
        attributes: Attributes,
        error: str | None = None,
    ) -> ReadableSpan:
        start = start or self.run_end
        end = max(end or self.run_end, start)
        status = Status(StatusCode.ERROR, error) if error else Status(StatusCode.UNSET)
        return ReadableSpan(
            name,
            context=context,
            parent=parent,
            resource=self.resource,
            attributes={k: v for k, v in attributes.items() if v is not None},
            kind=kind,
            status=status,
            start_time=start,
            end_time=end,
            instrumentation_scope=SCOPE,
        )

    def spans(self) -> Iterator[ReadableSpan]:
        run = self.run
        steps = list(run.get("steps") or [])
        yield self._span(
            " ".join(p for p in (run.get("kind") or "run", run.get("model")) if p),
            self.root,
            self.caller,
            SpanKind.INTERNAL,
            ns(run["started_at"]),
            self.run_end,
            self._run_attributes(),
            _error_text(run.get("error")),
        )
        for index, step in enumerate(steps):
            yield from self._step(step, compacted=self.compacted and index == 0)
            if index + 1 < len(steps):
                yield from self._tools(step, steps[index + 1])

    def _run_attributes(self) -> Attributes:
        run = self.run
        usage = run.get("usage") or {}
        attrs: Attributes = {
            sc.RUN_ID: run["id"],
            sc.RUN_KIND: run.get("kind"),
            sc.RUN_STATUS: run.get("status"),
            sc.API: run.get("api"),
            sc.CONVERSATION: run.get("conversation_id"),
            sc.PROVIDER_NAME: _provider(run.get("provider")),
            sc.REQUEST_MODEL: run.get("model"),
            **_usage(usage),
            sc.COST_TOTAL: (run.get("cost") or {}).get("total"),
            sc.ERROR_TYPE: (run.get("error") or {}).get("class"),
        }
        if run.get("conversation_source") in ("header", "client_session"):
            attrs[sc.CONVERSATION_ID] = run.get("conversation_id")
        return attrs

    def _step(self, step: Mapping[str, Any], *, compacted: bool) -> Iterator[ReadableSpan]:
        request = step.get("request") or {}
        response = step.get("response") or {}
        model = request.get("model") or self.run.get("model")
        options = request.get("options") or {}
        stop = options.get("stop")
        attrs: Attributes = {
            sc.OPERATION_NAME: sc.OPERATION_CHAT,
            sc.PROVIDER_NAME: _provider(self.run.get("provider")),
            sc.REQUEST_MODEL: model,
            sc.REQUEST_MAX_TOKENS: options.get("max_output_tokens"),
            sc.REQUEST_TEMPERATURE: options.get("temperature"),
            sc.REQUEST_TOP_P: options.get("top_p"),
            sc.REQUEST_TOP_K: options.get("top_k"),
            sc.REQUEST_STOP_SEQUENCES: [stop] if isinstance(stop, str) else stop,
            sc.REQUEST_STREAM: request.get("stream"),
            sc.RESPONSE_ID: response.get("id"),
            sc.RESPONSE_MODEL: response.get("model"),
            sc.RESPONSE_FINISH_REASONS: [reason] if (reason := response.get("finish_reason")) else None,
            **_usage(step.get("usage") or {}),
            sc.STEP_ID: step.get("id"),
            sc.STEP_NUMBER: step.get("number"),
            sc.API: request.get("api") or self.run.get("api"),
            sc.COST_TOTAL: (step.get("cost") or {}).get("total"),
            sc.ERROR_TYPE: (step.get("error") or {}).get("class"),
        }
        if self.run.get("conversation_source") in ("header", "client_session"):
            attrs[sc.CONVERSATION_ID] = self.run.get("conversation_id")
        if compacted:
            attrs[sc.CONVERSATION_COMPACTED] = True
        attempts = list(step.get("attempts") or [])
        if attempts and request.get("stream") and attempts[-1].get("ttfb_ms") is not None:
            attrs[sc.RESPONSE_TIME_TO_FIRST_CHUNK] = attempts[-1]["ttfb_ms"] / 1000
        if self.content:
            attrs.update(_content(request, response))
        context = self._context(_id(64, "step", step["id"]))
        yield self._span(
            f"{sc.OPERATION_CHAT} {model}" if model else sc.OPERATION_CHAT,
            context,
            self.root,
            SpanKind.CLIENT,
            ns(step.get("started_at")),
            ns(step.get("finished_at")),
            attrs,
            _error_text(step.get("error")) if step.get("status") != "completed" else None,
        )
        for attempt in attempts:
            yield self._attempt(attempt, context)

    def _attempt(self, attempt: Mapping[str, Any], parent: SpanContext) -> ReadableSpan:
        url = attempt.get("url") or ""
        parts = urlsplit(url)
        status_code = attempt.get("http_status")
        error = attempt.get("error") or {}
        error_type = error.get("class") or (str(status_code) if status_code and status_code >= 400 else None)
        resends = int(attempt.get("number") or 1) - 1
        attrs: Attributes = {
            sc.HTTP_REQUEST_METHOD: attempt.get("method") or "POST",
            # on resends only, as the HTTP conventions ask: attempt n is resend n - 1
            sc.HTTP_REQUEST_RESEND_COUNT: resends if resends > 0 else None,
            sc.HTTP_RESPONSE_STATUS_CODE: status_code,
            sc.HTTP_REQUEST_BODY_SIZE: attempt.get("request_bytes"),
            sc.HTTP_RESPONSE_BODY_SIZE: attempt.get("response_bytes"),
            sc.URL_FULL: url or None,
            sc.SERVER_ADDRESS: parts.hostname,
            sc.SERVER_PORT: _port(parts),
            sc.ERROR_TYPE: error_type,
            sc.ATTEMPT_ID: attempt.get("id"),
            sc.RETRY_SIGNAL: attempt.get("retry_signal"),
        }
        return self._span(
            attrs[sc.HTTP_REQUEST_METHOD],
            self._context(_id(64, "attempt", attempt["id"])),
            parent,
            SpanKind.CLIENT,
            ns(attempt.get("started_at")),
            ns(attempt.get("finished_at")),
            attrs,
            (error.get("message") or error_type) if error_type else None,
        )

    def _tools(self, step: Mapping[str, Any], following: Mapping[str, Any]) -> Iterator[ReadableSpan]:
        """A tool ran from the end of the step that asked for it to the start of the step that
        carries its result back to the model."""
        results = {
            part.get("id"): part
            for message in (following.get("request") or {}).get("messages") or []
            for part in message.get("parts") or []
            if part.get("type") == "tool_result" and part.get("id")
        }
        for part in (step.get("response") or {}).get("content") or []:
            if part.get("type") != "tool_call" or part.get("server") or part.get("id") not in results:
                continue
            name = part.get("name") or "tool"
            attrs: Attributes = {
                sc.OPERATION_NAME: sc.OPERATION_EXECUTE_TOOL,
                sc.TOOL_NAME: name,
                sc.TOOL_TYPE: sc.TOOL_TYPE_FUNCTION,
                sc.TOOL_CALL_ID: part["id"],
            }
            result = results[part["id"]]
            if self.content:
                attrs[sc.TOOL_CALL_ARGUMENTS] = _json(part.get("arguments"))
                attrs[sc.TOOL_CALL_RESULT] = _json(result.get("result"))
            yield self._span(
                f"{sc.OPERATION_EXECUTE_TOOL} {name}",
                self._context(_id(64, "tool", step["id"], part["id"])),
                self.root,
                SpanKind.INTERNAL,
                ns(step.get("finished_at")),
                ns(following.get("started_at")),
                attrs,
                "the tool reported an error" if result.get("is_error") else None,
            )


def _provider(provider: str | None) -> str | None:
    return sc.PROVIDERS.get(provider, provider) if provider else None


def _usage(usage: Mapping[str, Any]) -> Attributes:
    if not usage:
        return {}
    cache_write = usage.get("cache_write_tokens")
    return {
        sc.USAGE_INPUT_TOKENS: usage.get("input_tokens"),
        sc.USAGE_OUTPUT_TOKENS: usage.get("output_tokens"),
        sc.USAGE_CACHE_READ_INPUT_TOKENS: usage.get("cache_read_tokens"),
        sc.USAGE_CACHE_WRITE_INPUT_TOKENS: cache_write,
        sc.USAGE_CACHE_CREATION_INPUT_TOKENS: cache_write,
        sc.USAGE_REASONING_OUTPUT_TOKENS: usage.get("reasoning_tokens"),
    }


def _port(parts: Any) -> int | None:
    try:
        return parts.port or {"https": 443, "http": 80}.get(parts.scheme)
    except ValueError:
        return None


def _error_text(error: Mapping[str, Any] | None) -> str | None:
    if not error:
        return None
    return str(error.get("message") or error.get("class") or "error")


# ---- content, in the conventions' message shapes --------------------------------------------------


def _part(part: Mapping[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "text":
        return {"type": sc.PART_TEXT, "content": part.get("text", "")}
    if kind == "reasoning":
        return {"type": sc.PART_REASONING, "content": part.get("text", "")}
    if kind == "tool_call":
        return {"type": sc.PART_TOOL_CALL, "id": part.get("id"), "name": part.get("name"),
                "arguments": part.get("arguments")}  # fmt: skip
    if kind == "tool_result":
        return {"type": sc.PART_TOOL_CALL_RESPONSE, "id": part.get("id"), "response": part.get("result")}
    if kind == "media":  # bytes are never kept: what it was, not what it said
        return {"type": "media", "mime_type": part.get("media_type"), "size": part.get("size")}
    return {"type": part.get("raw_type") or str(kind), "data": part.get("data")}


def _content(request: Mapping[str, Any], response: Mapping[str, Any]) -> Attributes:
    attrs: Attributes = {}
    if request.get("system"):
        attrs[sc.SYSTEM_INSTRUCTIONS] = _json([{"type": sc.PART_TEXT, "content": request["system"]}])
    messages = [
        {"role": m.get("role"), "parts": [_part(p) for p in m.get("parts") or []]}
        for m in request.get("messages") or []
    ]
    attrs[sc.INPUT_MESSAGES] = _json(messages)
    if response:
        output = {
            "role": "assistant",
            "parts": [_part(p) for p in response.get("content") or []],
            "finish_reason": response.get("finish_reason") or "",
        }
        attrs[sc.OUTPUT_MESSAGES] = _json([output])
    return attrs
