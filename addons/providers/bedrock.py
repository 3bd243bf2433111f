"""Amazon Bedrock Converse: `/model/{modelId}/converse` (JSON) and `/model/{modelId}/converse-stream`
(binary AWS event stream, `application/vnd.amazon.eventstream`)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from addons.normalized import (
    Error,
    FinishReason,
    Message,
    Part,
    ReasoningPart,
    Request,
    Response,
    Role,
    Signals,
    Tool,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from addons.providers.base import (
    Call,
    JsonBodyParser,
    ParseError,
    ResponseParser,
    TextBuffer,
    as_int,
    as_list,
    finish,
    loads_event,
    media_part,
    other_part,
    parse_arguments,
    reasoning_part,
    stream_error,
    text_part,
    tool_turn_first,
    usage,
    wire_messages,
)
from addons.providers.framing import EventStreamDecoder, EventStreamMessage

_PATH = re.compile(r"/model/([^/]+)/(converse|converse-stream)$")
FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    "malformed_model_output": "error",
    "malformed_tool_use": "error",
}
MEDIA = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp",
         "pdf": "application/pdf", "csv": "text/csv", "txt": "text/plain", "md": "text/markdown",
         "html": "text/html", "doc": "application/msword", "xls": "application/vnd.ms-excel",
         "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
         "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
         "mp4": "video/mp4", "mov": "video/quicktime", "webm": "video/webm"}  # fmt: skip


def model_from_path(path: str) -> str | None:
    """The model id, ARN or inference profile, which clients percent-encode (`arn%3Aaws%3A...`)."""
    match = _PATH.search(path)
    return unquote(match.group(1)) if match else None


class BedrockConverse:
    name = "bedrock.converse"
    vendor = "bedrock"

    def matches(self, method: str, path: str) -> bool:
        return method == "POST" and _PATH.search(path) is not None

    def parse_request(self, body: Any, call: Call) -> Request:
        if not isinstance(body, dict):
            raise ParseError("a converse request must be an object")
        limit = call.text_limit
        messages = wire_messages(body.get("messages"), ROLES, lambda role, c: _messages(role, c, limit))
        config = body.get("inferenceConfig") or {}
        options: dict[str, Any] = {}
        for key, option in (("maxTokens", "max_output_tokens"), ("temperature", "temperature"),
                            ("topP", "top_p"), ("stopSequences", "stop")):  # fmt: skip
            if config.get(key) is not None:
                options[option] = config[key]
        extra = body.get("additionalModelRequestFields")
        if isinstance(extra, dict):  # model-specific: Anthropic's `thinking`, `top_k`, ...
            options.update({k: v for k, v in extra.items() if k not in options})
        tool_config = body.get("toolConfig") or {}
        system = [b["text"] for b in body.get("system") or [] if isinstance(b, dict) and "text" in b]
        return Request(
            api=self.name,
            model=model_from_path(call.path),
            system="\n\n".join(system) or None,
            messages=messages,
            tools=[
                _tool(t) for t in tool_config.get("tools") or [] if isinstance(t, dict) and "toolSpec" in t
            ],
            tool_choice=tool_config.get("toolChoice"),
            options=options,
            stream=call.path.endswith("/converse-stream"),
            signals=_signals(tool_config.get("toolChoice")),
        )

    def response_parser(self, call: Call, content_type: str, status: int) -> ResponseParser:
        model = model_from_path(call.path)
        if "amazon.eventstream" in content_type:
            return ConverseStream(call.text_limit, model)
        return JsonBodyParser(
            lambda body: parse_response(body, call.text_limit, model), status, call.capture_limit
        )


ROLES: dict[str, Role] = {"user": "user", "assistant": "assistant", "system": "system"}


def _signals(choice: Any) -> Signals:
    tool = choice.get("tool") if isinstance(choice, dict) else None
    name = tool.get("name") if isinstance(tool, dict) else None
    return Signals(forced_tool=name if isinstance(name, str) else None)


# ---- content blocks -----------------------------------------------------------------------------


def _messages(role: str, content: Any, limit: int) -> list[Message]:
    """One wire message; tool results become their own `tool` message, as in the other APIs."""
    blocks = as_list(content, "message content")
    return tool_turn_first(role, [p for block in blocks if (p := block_part(block, limit)) is not None])


def block_part(block: Any, limit: int) -> Part | None:
    """A ContentBlock: a union with exactly one member set."""
    if not isinstance(block, dict):
        return other_part(block)
    if isinstance(block.get("text"), str):
        return text_part(block["text"], limit)
    for kind in ("image", "document", "video"):
        if isinstance(block.get(kind), dict):
            media = block[kind]
            source = media.get("source") or {}
            data = source.get("bytes") if isinstance(source.get("bytes"), str) else b""  # S3: a reference
            return media_part(MEDIA.get(media.get("format", ""), f"{kind}/{media.get('format', '*')}"), data)
    if isinstance(use := block.get("toolUse"), dict):
        return ToolCallPart(id=use.get("toolUseId"), name=use.get("name", ""), arguments=use.get("input"))
    if isinstance(result := block.get("toolResult"), dict):
        items = [_result_item(i, limit) for i in result.get("content") or []]
        return ToolResultPart(id=result.get("toolUseId"), result=items,
                              is_error=True if result.get("status") == "error" else None)  # fmt: skip
    if isinstance(reasoning := block.get("reasoningContent"), dict):
        if "redactedContent" in reasoning:
            return ReasoningPart(text="", redacted=True)
        return reasoning_part(str((reasoning.get("reasoningText") or {}).get("text", "")), limit)
    if isinstance(guard := block.get("guardContent"), dict):
        return text_part(str((guard.get("text") or {}).get("text", "")), limit)
    if set(block) <= {"cachePoint", "citationsContent"}:
        return None  # cache markers and citations carry nothing to show
    return other_part(block, next(iter(block), None))


def _result_item(item: Any, limit: int) -> Any:
    if isinstance(item, dict) and "json" in item:
        return item["json"]
    part = block_part(item, limit) if isinstance(item, dict) else None
    return part.model_dump(exclude_none=True) if part is not None else item


def _tool(tool: dict[str, Any]) -> Tool:
    spec = tool["toolSpec"] or {}
    schema = spec.get("inputSchema") or {}
    return Tool(name=spec.get("name", ""), description=spec.get("description"), parameters=schema.get("json"))


# ---- responses ----------------------------------------------------------------------------------


def parse_usage(raw: Any) -> Usage | None:
    """Bedrock's `inputTokens` EXCLUDES the cache reads and writes; the contract's includes them."""
    if not isinstance(raw, dict):
        return None
    read, write = as_int(raw.get("cacheReadInputTokens")), as_int(raw.get("cacheWriteInputTokens"))
    return usage(as_int(raw.get("inputTokens")) + read + write, as_int(raw.get("outputTokens")),
                 cache_read=read, cache_write=write, total=as_int(raw.get("totalTokens")))  # fmt: skip


def parse_response(body: Any, limit: int, model: str | None) -> Response:
    if not isinstance(body, dict):
        raise ParseError("a converse response must be an object")
    message = (body.get("output") or {}).get("message") or {}
    parts = [p for b in message.get("content") or [] if (p := block_part(b, limit)) is not None]
    reason, raw = finish(body.get("stopReason"), FINISH)
    return Response(model=model, content=parts, finish_reason=reason, raw_finish_reason=raw,
                    usage=parse_usage(body.get("usage")))  # fmt: skip


# an exception event's `:exception-type` -> the contract's error class
EXCEPTIONS = {"throttlingException": "rate_limited", "serviceUnavailableException": "overloaded",
              "internalServerException": "server_error", "validationException": "client_error"}  # fmt: skip


class ConverseStream:
    """Reassembles the event stream: blocks are kept by `contentBlockIndex`."""

    def __init__(self, limit: int, model: str | None) -> None:
        self._frames = EventStreamDecoder()
        self._limit = limit
        self._blocks: dict[int, dict[str, Any]] = {}
        self._response = Response(model=model, complete=False)

    def feed(self, data: bytes) -> None:
        for message in self._frames.feed(data):
            self._message(message)

    def finish(self) -> Response:
        for message in self._frames.close():
            self._message(message)
        r = self._response
        r.content = [p for _, b in sorted(self._blocks.items()) if (p := self._part(b)) is not None]
        return r

    def _message(self, message: EventStreamMessage) -> None:
        r = self._response
        if message.problem:
            r.warnings.append(message.problem)
        headers = message.headers
        kind = headers.get(":message-type")
        if kind == "error":
            r.error = stream_error(
                str(headers.get(":error-message") or "stream error"), headers.get(":error-code")
            )
            r.finish_reason = "error"
            return
        try:
            payload = loads_event(message.payload, r.warnings) if message.payload else {}
        except ParseError:
            r.warnings.append(f"unparseable event payload: {message.payload[:200]!r}")
            return
        if kind == "exception":
            r.error, r.finish_reason = self._exception(str(headers.get(":exception-type")), payload), "error"
        elif kind == "event" and isinstance(payload, dict):
            self._event(str(headers.get(":event-type")), payload)

    def _event(self, event: str, payload: dict[str, Any]) -> None:
        r = self._response
        if event == "contentBlockStart":
            start = payload.get("start") or {}
            self._block(payload)["start"] = start
        elif event == "contentBlockDelta":
            self._delta(self._block(payload), payload.get("delta") or {})
        elif event == "messageStop":
            r.finish_reason, r.raw_finish_reason = finish(payload.get("stopReason"), FINISH)
            r.complete = True  # `metadata` (usage) follows, but the message itself is whole
        elif event == "metadata":
            r.usage = parse_usage(payload.get("usage"))

    def _block(self, payload: dict[str, Any]) -> dict[str, Any]:
        index = as_int(payload.get("contentBlockIndex"))
        if index not in self._blocks:  # text blocks start with their first delta, no contentBlockStart
            self._blocks[index] = {"text": TextBuffer(self._limit), "reasoning": TextBuffer(self._limit),
                                   "input": [], "redacted": False}  # fmt: skip
        return self._blocks[index]

    @staticmethod
    def _delta(block: dict[str, Any], delta: dict[str, Any]) -> None:
        if isinstance(delta.get("text"), str):
            block["text"].add(delta["text"])
        elif isinstance(delta.get("toolUse"), dict):
            block["input"].append(str(delta["toolUse"].get("input", "")))
        elif isinstance(reasoning := delta.get("reasoningContent"), dict):
            if isinstance(reasoning.get("text"), str):
                block["reasoning"].add(reasoning["text"])
            elif "redactedContent" in reasoning:
                block["redacted"] = True

    @staticmethod
    def _part(block: dict[str, Any]) -> Part | None:
        use = (block.get("start") or {}).get("toolUse")
        if isinstance(use, dict):
            raw = "".join(block["input"])
            return ToolCallPart(id=use.get("toolUseId"), name=use.get("name", ""),
                                arguments=parse_arguments(raw) if raw else {})  # fmt: skip
        if block["reasoning"]:
            return block["reasoning"].reasoning_part()
        if block["redacted"]:
            return ReasoningPart(text="", redacted=True)
        if block["text"]:
            return block["text"].text_part()
        return None

    @staticmethod
    def _exception(kind: str, payload: Any) -> Error:
        message = (
            str(payload.get("message") or payload.get("Message") or kind)
            if isinstance(payload, dict)
            else kind
        )
        error_class = EXCEPTIONS.get(kind, "stream_error")
        return Error.model_validate({"class": error_class, "message": message[:2000], "type": kind})


API = BedrockConverse()
