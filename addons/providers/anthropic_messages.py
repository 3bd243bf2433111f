"""Anthropic Messages (`/v1/messages`)."""

from __future__ import annotations

from typing import Any

import orjson

from addons.normalized import (
    Error,
    FinishReason,
    Message,
    Part,
    ReasoningPart,
    Request,
    Response,
    Role,
    SessionId,
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
    each_event,
    finish,
    loads_event,
    media_part,
    metadata_sessions,
    other_part,
    parse_arguments,
    reasoning_part,
    schema_signal,
    stream_error,
    text_part,
    usage,
    wire_messages,
)
from addons.providers.framing import SseDecoder

FINISH: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "other",
}
OPTIONS = ("temperature", "top_p", "top_k", "thinking", "service_tier")
ROLES: dict[str, Role] = {"user": "user", "assistant": "assistant", "system": "system"}
# Block types that carry nothing to show (cache markers, containers): skipped without a note.
SILENT_BLOCKS = ("container_upload", "cache_control", "search_result_location")


class AnthropicMessages:
    name = "anthropic.messages"
    vendor = "anthropic"

    def matches(self, method: str, path: str) -> bool:
        return method == "POST" and path.endswith("/v1/messages")

    def parse_request(self, body: Any, call: Call) -> Request:
        if not isinstance(body, dict):
            raise ParseError("a messages request must be an object")
        limit = call.text_limit
        # a `system` message mid-conversation (Claude Code's agent list) stays in its place
        messages = wire_messages(body.get("messages"), ROLES, lambda role, c: _messages(role, c, limit))
        options = {k: body[k] for k in OPTIONS if body.get(k) is not None}
        if body.get("max_tokens") is not None:
            options["max_output_tokens"] = body["max_tokens"]
        if body.get("stop_sequences"):
            options["stop"] = body["stop_sequences"]
        return Request(
            api=self.name,
            model=body.get("model"),
            system=_system(body.get("system")),
            messages=messages,
            tools=[_tool(t) for t in body.get("tools") or [] if isinstance(t, dict)],
            tool_choice=body.get("tool_choice"),
            options=options,
            stream=bool(body.get("stream")),
            signals=signals(body),
        )

    def response_parser(self, call: Call, content_type: str, status: int) -> ResponseParser:
        if "text/event-stream" in content_type:
            return MessagesStream(call.text_limit)
        return JsonBodyParser(lambda body: parse_response(body, call.text_limit), status, call.capture_limit)


def signals(body: dict[str, Any]) -> Signals:
    found = Signals()
    metadata = body.get("metadata")
    user_id = metadata.get("user_id") if isinstance(metadata, dict) else None
    if isinstance(user_id, str) and user_id:
        session, user = _user_id(user_id)
        if session:
            found.session_ids.append(SessionId(source="metadata.user_id.session_id", value=session))
        found.user = user
    found.session_ids += metadata_sessions(metadata, "metadata")
    for key in ("output_config", "output_format"):  # structured outputs, then its beta name
        config = body.get(key)
        fmt = config.get("format") if key == "output_config" and isinstance(config, dict) else config
        if isinstance(fmt, dict) and fmt.get("type") in ("json_schema", "json"):
            found.output_schema = schema_signal(fmt.get("name"), fmt.get("schema"))
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "tool" and isinstance(choice.get("name"), str):
        found.forced_tool = choice["name"]
    return found


def _user_id(raw: str) -> tuple[str | None, str | None]:
    """Claude Code's `metadata.user_id`: a JSON string `{device_id, account_uuid, session_id}`, or
    the older `user_<hash>_account_<uuid>_session_<uuid>`; anything else names a user."""
    if raw.startswith("{"):
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            session = value.get("session_id")
            return (str(session)[:200] if session else None), None
    _, sep, session = raw.rpartition("_session_")
    if sep and session:
        return session[:200], None
    return None, raw[:200]


def _system(system: Any) -> str | None:
    if isinstance(system, str):
        return system or None
    if isinstance(system, list):
        return "\n\n".join(b.get("text", "") for b in system if isinstance(b, dict)) or None
    return None


def _tool(tool: dict[str, Any]) -> Tool:
    builtin = tool.get("type") not in (None, "custom")
    return Tool(
        name=tool.get("name") or tool.get("type", ""),
        description=tool.get("description"),
        parameters=tool.get("input_schema"),
        type=tool.get("type") if builtin else None,
    )


def _messages(role: str, content: Any, limit: int) -> list[Message]:
    """One wire message. A user message carrying tool results is a `tool` turn, as in the
    other APIs; text sent alongside the results (clients add reminders there) stays in it."""
    if isinstance(content, str):
        return [Message(role=role, parts=[text_part(content, limit)])]  # type: ignore[arg-type]
    parts = [part for block in as_list(content, "message content") if (part := block_part(block, limit))]
    if any(isinstance(p, ToolResultPart) for p in parts):
        parts.sort(key=lambda p: not isinstance(p, ToolResultPart))  # results first, as OpenAI orders them
        return [Message(role="tool", parts=parts)]
    return [Message(role=role, parts=parts)]  # type: ignore[arg-type]


def block_part(block: Any, limit: int) -> Part | None:
    if not isinstance(block, dict):
        return other_part(block)
    kind = block.get("type")
    if kind == "text":
        return text_part(str(block.get("text", "")), limit)
    if kind == "thinking":
        return reasoning_part(str(block.get("thinking", "")), limit)
    if kind == "redacted_thinking":
        return ReasoningPart(text="", redacted=True)
    if kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
        return ToolCallPart(
            id=block.get("id"),
            name=block.get("name", ""),
            arguments=block.get("input"),
            server=True if kind != "tool_use" else None,
        )
    if kind == "tool_result" or (isinstance(kind, str) and kind.endswith("_tool_result")):
        content = block.get("content")
        if isinstance(content, list):
            content = [_result_block(b, limit) for b in content]
        elif isinstance(content, dict):
            content = _opaque_dropped(content)
        return ToolResultPart(
            id=block.get("tool_use_id"),
            name=kind.removesuffix("_tool_result") if kind != "tool_result" else None,  # web_search, ...
            result=content,
            is_error=block.get("is_error") or _failed(content),
        )
    if kind in ("image", "document"):
        return _media(block)
    if kind in SILENT_BLOCKS:
        return None
    return other_part(block, kind)


def _media(block: dict[str, Any]) -> Part:
    """Only a `base64` source holds base64; a `text` source is plain text; url/file sources count 0."""
    source = block.get("source") or {}
    media_type = source.get("media_type") or block["type"]
    data = source.get("data")
    if source.get("type") == "base64":
        return media_part(media_type, data)
    if source.get("type") == "text" and isinstance(data, str):
        return media_part(media_type, data.encode())
    return media_part(media_type, b"")


def _failed(content: Any) -> bool | None:
    """Server tools report failure as a `*_tool_result_error` content object, not `is_error`."""
    kind = content.get("type") if isinstance(content, dict) else None
    return True if isinstance(kind, str) and kind.endswith("_error") else None


def _opaque_dropped(block: dict[str, Any]) -> dict[str, Any]:
    """Web search results carry `encrypted_content` (kilobytes, meaningless to a reader)."""
    return {k: v for k, v in block.items() if not k.startswith("encrypted_")}


def _result_block(block: Any, limit: int) -> Any:
    if isinstance(block, dict) and block.get("type") in ("text", "image", "document"):
        part = block_part(block, limit)
        return part.model_dump(exclude_none=True) if part else None
    return _opaque_dropped(block) if isinstance(block, dict) else block


def parse_usage(raw: Any) -> Usage | None:
    """Anthropic's `input_tokens` excludes cached tokens; the contract's includes them."""
    if not isinstance(raw, dict):
        return None
    read = as_int(raw.get("cache_read_input_tokens"))
    write = as_int(raw.get("cache_creation_input_tokens"))
    details = raw.get("output_tokens_details")
    thinking = as_int(details.get("thinking_tokens")) if isinstance(details, dict) else 0
    return usage(as_int(raw.get("input_tokens")) + read + write, as_int(raw.get("output_tokens")),
                 cache_read=read, cache_write=write, reasoning=thinking)  # fmt: skip


def parse_response(body: Any, limit: int) -> Response:
    if not isinstance(body, dict):
        raise ParseError("a message must be an object")
    if body.get("type") == "error":
        return Response(error=_event_error(body), finish_reason="error")
    parts = [p for b in body.get("content") or [] if (p := block_part(b, limit)) is not None]
    reason, raw = finish(body.get("stop_reason"), FINISH)
    return Response(
        id=body.get("id"),
        model=body.get("model"),
        content=parts,
        finish_reason=reason,
        raw_finish_reason=raw,
        usage=parse_usage(body.get("usage")),
    )


def _event_error(event: dict[str, Any]) -> Error:
    """`{"type": "error", "error": {"type": "overloaded_error", "message": ...}}`."""
    err = event.get("error")
    if not isinstance(err, dict):
        return stream_error(str(err) if err else "stream error")
    etype = err.get("type")
    return stream_error(str(err.get("message") or "stream error"), str(etype) if etype else None)


class MessagesStream:
    """Reassembles `message_start` ... `message_stop`; blocks are kept by their index."""

    def __init__(self, limit: int) -> None:
        self._sse = SseDecoder()
        self._limit = limit
        self._blocks: dict[int, dict[str, Any]] = {}
        self._usage: dict[str, Any] = {}
        self._response = Response(complete=False)

    def feed(self, data: bytes) -> None:
        each_event(lambda e: self._event(e.data, e.event), self._sse.feed(data), self._response.warnings)

    def finish(self) -> Response:
        for event in self._sse.close():
            self._event(event.data, event.event)
        r = self._response
        r.content = [p for _, b in sorted(self._blocks.items()) if (p := self._part(b)) is not None]
        r.usage = parse_usage(self._usage) if self._usage else None
        return r

    def _event(self, data: str, name: str | None) -> None:
        try:
            event = loads_event(data, self._response.warnings)
        except ParseError:
            self._response.warnings.append(f"unparseable event: {data[:200]}")
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type") or name  # the data's `type` repeats the SSE event name
        r = self._response
        if kind == "message_start":
            message = event.get("message") or {}
            r.id, r.model = message.get("id"), message.get("model")
            self._merge_usage(message.get("usage"))
        elif kind == "content_block_start":
            block = dict(event.get("content_block") or {})
            block["_text"] = TextBuffer(self._limit)
            block["_json"] = []
            initial = block.get("text") if block.get("type") == "text" else block.get("thinking")
            if isinstance(initial, str):
                block["_text"].add(initial)  # deltas append to what the start event already holds
            self._blocks[event.get("index", len(self._blocks))] = block
        elif kind == "content_block_delta":
            self._delta(self._blocks.get(event.get("index", -1)), event.get("delta") or {})
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            if delta.get("stop_reason"):
                r.finish_reason, r.raw_finish_reason = finish(delta["stop_reason"], FINISH)
            self._merge_usage(event.get("usage"))
        elif kind == "message_stop":
            r.complete = True
        elif kind == "error":
            r.error = _event_error(event)
            r.finish_reason = "error"

    def _merge_usage(self, raw: Any) -> None:
        if isinstance(raw, dict):
            self._usage.update({k: v for k, v in raw.items() if v is not None})

    @staticmethod
    def _delta(block: dict[str, Any] | None, delta: dict[str, Any]) -> None:
        if block is None:
            return
        kind = delta.get("type")
        if kind == "text_delta":
            block["_text"].add(delta.get("text", ""))
        elif kind == "thinking_delta":
            block["_text"].add(delta.get("thinking", ""))
        elif kind == "input_json_delta":
            block["_json"].append(delta.get("partial_json", ""))
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))

    def _part(self, block: dict[str, Any]) -> Part | None:
        kind = block.get("type")
        buffer: TextBuffer = block["_text"]
        if kind == "text":
            return buffer.text_part()
        if kind == "thinking":
            return buffer.reasoning_part()
        if kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
            raw = "".join(block["_json"])
            arguments = parse_arguments(raw) if raw else block.get("input")
            return ToolCallPart(id=block.get("id"), name=block.get("name", ""), arguments=arguments,
                                server=True if kind != "tool_use" else None)  # fmt: skip
        clean = {k: v for k, v in block.items() if not k.startswith("_")}
        return block_part(clean, self._limit)


API = AnthropicMessages()
