"""OpenAI Responses (`/v1/responses`, `/v1/responses/compact`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from addons.normalized import (
    FinishReason,
    Message,
    Part,
    ReasoningPart,
    Request,
    Response,
    Role,
    TextPart,
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
    loads_event,
    media_part,
    other_part,
    parse_arguments,
    reasoning_part,
    role_of,
    schema_signal,
    stream_error,
    text_part,
    usage,
)
from addons.providers.clients import client_metadata_signals
from addons.providers.framing import SseDecoder
from addons.providers.openai_chat import signals as openai_signals

INCOMPLETE: dict[str, FinishReason] = {"max_output_tokens": "length", "content_filter": "content_filter"}
OPTIONS = (
    "temperature", "top_p", "top_logprobs", "parallel_tool_calls", "max_tool_calls", "service_tier",
    "store", "truncation", "background", "reasoning", "previous_response_id", "conversation",
)  # fmt: skip
# calls the client runs (a turn that ends with one waits on the client: `tool_calls`)
CLIENT_CALLS = ("function_call", "custom_tool_call", "computer_call", "local_shell_call", "shell_call",
                "apply_patch_call")  # fmt: skip
# calls OpenAI runs itself during the response
SERVER_CALLS = ("web_search_call", "file_search_call", "code_interpreter_call", "image_generation_call",
                "mcp_call", "tool_search_call")  # fmt: skip


class OpenAIResponses:
    name = "openai.responses"
    vendor = "openai"

    def matches(self, method: str, path: str) -> bool:
        return method == "POST" and path.endswith(("/responses", "/responses/compact"))

    def parse_request(self, body: Any, call: Call) -> Request:
        if not isinstance(body, dict):
            raise ParseError("a responses request must be an object")
        limit = call.text_limit
        raw_input = body.get("input")
        items = [{"role": "user", "content": raw_input}] if isinstance(raw_input, str) else raw_input
        items = as_list(items, "`input`")
        messages = _messages(items, limit)
        system = [body["instructions"]] if isinstance(body.get("instructions"), str) else []
        while messages and messages[0].role == "system":  # leading developer/system messages, as in chat
            system.extend(p.text for p in messages.pop(0).parts if isinstance(p, TextPart))
        options = {k: body[k] for k in OPTIONS if body.get(k) is not None}
        if body.get("max_output_tokens") is not None:
            options["max_output_tokens"] = body["max_output_tokens"]
        text = body.get("text") if isinstance(body.get("text"), dict) else {}
        if isinstance(text.get("format"), dict):
            options["response_format"] = text["format"].get("type")
        if text.get("verbosity") is not None:
            options["verbosity"] = text["verbosity"]
        signals = openai_signals(body, _format(text.get("format")))
        client_metadata_signals(body.get("client_metadata"), signals)
        # the endpoint (or trigger item) whose only job is compaction tells it from a turn
        signals.compaction_endpoint = call.path.endswith("/compact") or any(
            _kind(i) == "compaction_trigger" for i in items
        )
        return Request(
            api=self.name,
            model=body.get("model"),
            system="\n\n".join(s for s in system if s) or None,
            messages=messages,
            tools=[_tool(t) for t in body.get("tools") or [] if isinstance(t, dict)],
            tool_choice=body.get("tool_choice"),
            options=options,
            stream=bool(body.get("stream")),
            signals=signals,
        )

    def response_parser(self, call: Call, content_type: str, status: int) -> ResponseParser:
        if "text/event-stream" in content_type:
            return ResponsesStream(call.text_limit)
        return JsonBodyParser(lambda body: parse_response(body, call.text_limit), status, call.capture_limit)


# ---- request ------------------------------------------------------------------------------------


ROLES: dict[str, Role] = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
# Input items that carry nothing to show: skipped without a note.
SILENT_ITEMS = ("compaction_trigger", "item_reference", "mcp_list_tools", "mcp_approval_request")


def _format(fmt: Any) -> Any:
    """`text.format`: `{type: json_schema, name, schema}` (flat, unlike Chat Completions)."""
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema"):
        return None
    return schema_signal(fmt.get("name"), fmt.get("schema"))


def _kind(item: Any) -> str | None:
    """An item's type; `{role, content}` without one is a message (the SDKs' "easy" input)."""
    if not isinstance(item, dict):
        return None
    return item.get("type") or ("message" if "role" in item else None)


def _messages(items: list[Any], limit: int) -> list[Message]:
    """Input items as messages; adjacent assistant or tool items of one turn share a message."""
    messages: list[Message] = []
    for item in items:
        role, parts, raw_role = _item(item, limit)
        if role is None:
            continue  # compaction_trigger, item_reference: nothing to show
        if messages and messages[-1].role == role and role in ("assistant", "tool"):
            messages[-1].parts.extend(parts)
        else:
            messages.append(Message(role=role, parts=parts, raw_role=raw_role))  # type: ignore[arg-type]
    return messages


def _item(item: Any, limit: int) -> tuple[str | None, list[Part], str | None]:
    kind = _kind(item)
    if kind == "message":
        role, raw_role = role_of(item.get("role"), ROLES)
        return role, _content(item.get("content"), limit), raw_role
    if kind is None or kind in SILENT_ITEMS:
        return (None, [], None) if isinstance(item, dict) else ("user", [other_part(item)], None)
    if kind.endswith("_output") or kind == "mcp_approval_response":
        return "tool", [_result(item, limit)], None
    parts = output_parts(item, limit)
    return ("assistant", parts, None) if parts else ("user", [other_part(item, kind)], None)


def _content(content: Any, limit: int) -> list[Part]:
    if isinstance(content, str):
        return [text_part(content, limit)]
    parts: list[Part] = []
    for c in as_list(content, "message content"):
        kind = c.get("type") if isinstance(c, dict) else None
        if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            parts.append(text_part(str(c.get("text", "")), limit))
        elif kind == "refusal":
            parts.append(text_part(str(c.get("refusal", "")), limit))
        elif kind == "input_image":
            parts.append(_media(c.get("image_url"), "image"))
        elif kind == "input_file":
            parts.append(_media(c.get("file_data") or c.get("file_url"), "application/octet-stream"))
        elif kind == "input_audio":
            audio = c.get("input_audio") or {}
            parts.append(media_part(f"audio/{audio.get('format', 'wav')}", audio.get("data")))
        elif kind == "computer_screenshot":
            parts.append(_media(c.get("image_url"), "image"))
        else:
            parts.append(other_part(c, kind))
    return parts


def _media(url: Any, fallback: str) -> Part:
    """A data URL counts its decoded size; a file id or remote URL counts 0 bytes."""
    if isinstance(url, str) and url.startswith("data:"):
        header, _, data = url.partition(",")
        return media_part(header[5:].split(";")[0] or fallback, data)
    return media_part(fallback if "/" in fallback else f"{fallback}/url", b"")


def _result(item: dict[str, Any], limit: int) -> ToolResultPart:
    output = item.get("output")
    if isinstance(output, dict):  # e.g. a computer call's screenshot: never keep the image itself
        output = [output]
    if isinstance(output, list):
        output = [p.model_dump(exclude_none=True) for p in _content(output, limit)]
    elif isinstance(output, str) and len(output) > limit:
        output = output[:limit]
    return ToolResultPart(
        id=item.get("call_id") or item.get("approval_request_id") or item.get("id"),
        name=item.get("name"),
        result=output if output is not None else item.get("approve"),
    )


def _tool(tool: dict[str, Any]) -> Tool:
    kind = tool.get("type")
    if kind == "function":
        return Tool(name=tool.get("name", ""), description=tool.get("description"),
                    parameters=tool.get("parameters"))  # fmt: skip
    if kind == "custom":  # free-form input, optionally held to a grammar
        return Tool(
            name=tool.get("name", ""), description=tool.get("description"), parameters=tool.get("format")
        )
    if kind == "mcp":
        return Tool(
            name=tool.get("server_label") or "mcp", description=tool.get("server_description"), type=kind
        )
    return Tool(name=tool.get("name") or str(kind), type=kind)


# ---- response -----------------------------------------------------------------------------------


def output_parts(item: dict[str, Any], limit: int) -> list[Part]:
    """One output item (also found in a follow-up request's input) as parts."""
    kind = item.get("type")
    if kind == "message":
        if item.get("role", "assistant") != "assistant":
            return []  # a compaction's output repeats the user's messages before its summary item
        return _content(item.get("content") or [], limit)
    if kind == "reasoning":
        texts = [s.get("text", "") for s in item.get("summary") or [] if isinstance(s, dict)]
        texts += [c.get("text", "") for c in item.get("content") or [] if isinstance(c, dict)]
        text = "\n\n".join(t for t in texts if t)
        return [reasoning_part(text, limit) if text else ReasoningPart(text="", redacted=True)]
    if kind == "compaction":  # the history, summarized and encrypted: opaque, like hidden reasoning
        return [ReasoningPart(text="", redacted=True)]
    if kind in ("function_call", "custom_tool_call"):
        raw = item.get("arguments") if kind == "function_call" else item.get("input")
        return [ToolCallPart(id=item.get("call_id"), name=item.get("name", ""),
                             arguments=parse_arguments(raw) if kind == "function_call" else raw)]  # fmt: skip
    if kind in CLIENT_CALLS or kind in SERVER_CALLS:
        arguments = item.get("action") or item.get("arguments") or item.get("code") or item.get("queries")
        return [ToolCallPart(
            id=item.get("call_id") or item.get("id"),
            name=item.get("name") or kind.removesuffix("_call"),
            arguments=parse_arguments(arguments),
            server=True if kind in SERVER_CALLS else None,
        )]  # fmt: skip
    return []  # mcp_list_tools, approval requests and future types carry nothing to show


def parse_usage(raw: Any) -> Usage | None:
    """`input_tokens` already includes the cached ones (`input_tokens_details.cached_tokens`)."""
    if not isinstance(raw, dict):
        return None
    details = raw.get("input_tokens_details") or {}
    out_details = raw.get("output_tokens_details") or {}
    return usage(
        as_int(raw.get("input_tokens")),
        as_int(raw.get("output_tokens")),
        total=as_int(raw.get("total_tokens")),
        cache_read=as_int(details.get("cached_tokens")),
        cache_write=as_int(details.get("cache_write_tokens")),
        reasoning=as_int(out_details.get("reasoning_tokens")),
    )


def parse_response(body: Any, limit: int, content: list[Part] | None = None) -> Response:
    """A response object (also the one a terminal stream event carries); `content` stands in for an
    empty `output`, as rebuilt from a stream's deltas."""
    if not isinstance(body, dict):
        raise ParseError("a response must be an object")
    if body.get("error") and body.get("object") not in ("response", "response.compaction"):
        err = body["error"] if isinstance(body["error"], dict) else {"message": body["error"]}
        return Response(error=stream_error(str(err.get("message")), err.get("type"), err.get("code")),
                        finish_reason="error")  # fmt: skip
    items = [i for i in body.get("output") or [] if isinstance(i, dict)]
    parts = [p for i in items for p in output_parts(i, limit)] if items else list(content or [])
    r = Response(
        id=body.get("id"), model=body.get("model"), content=parts, usage=parse_usage(body.get("usage"))
    )
    status = body.get("status")
    if body.get("object") == "response.compaction":
        status = "completed"  # a compaction has no status: it is done when it is returned
    if status == "completed":
        refused = any(c.get("type") == "refusal" for i in items for c in i.get("content") or [])
        called = any(i.get("type") in CLIENT_CALLS for i in items) or (
            not items and any(isinstance(p, ToolCallPart) and not p.server for p in parts)
        )
        r.finish_reason = "tool_calls" if called else "content_filter" if refused else "stop"
        r.raw_finish_reason = "completed"
    elif status == "incomplete":
        reason = (body.get("incomplete_details") or {}).get("reason")
        r.finish_reason = INCOMPLETE.get(reason or "", "other")
        r.raw_finish_reason = reason or "incomplete"
    elif status == "failed":
        err = body.get("error") or {}
        r.error = stream_error(
            str(err.get("message") or "the response failed"), err.get("type"), err.get("code")
        )
        r.finish_reason, r.raw_finish_reason = "error", "failed"
    elif status == "cancelled":
        r.finish_reason, r.raw_finish_reason = "other", "cancelled"
    return r


@dataclass(slots=True)
class _Item:
    """An output item as the stream builds it: the latest full item plus the deltas since."""

    item: dict[str, Any]
    text: TextBuffer
    reasoning: TextBuffer
    arguments: list[str] = field(default_factory=list)
    done: bool = False  # `output_item.done` brought the whole item: the deltas are no longer needed
    summary_index: int = 0

    def parts(self, limit: int) -> list[Part]:
        if self.done:
            return output_parts(self.item, limit)
        kind = self.item.get("type")
        if kind == "message":
            return [self.text.text_part()] if self.text else []
        if kind == "reasoning":
            return [
                self.reasoning.reasoning_part() if self.reasoning else ReasoningPart(text="", redacted=True)
            ]
        if kind in ("function_call", "custom_tool_call", "mcp_call") and self.arguments:
            key = "input" if kind == "custom_tool_call" else "arguments"
            return output_parts({**self.item, key: "".join(self.arguments)}, limit)
        return output_parts(self.item, limit)


class ResponsesStream:
    """Reassembles a Responses stream; the terminal event's full response wins over the deltas."""

    def __init__(self, limit: int) -> None:
        self._sse = SseDecoder()
        self._limit = limit
        self._items: dict[int, _Item] = {}
        self._started: dict[str, Any] = {}  # the response as `response.created` announced it
        self._final: dict[str, Any] | None = None
        self._response = Response(complete=False)

    def feed(self, data: bytes) -> None:
        for event in self._sse.feed(data):
            self._event(event.data)

    def finish(self) -> Response:
        for event in self._sse.close():
            self._event(event.data)
        streamed = [p for _, item in sorted(self._items.items()) for p in item.parts(self._limit)]
        r = self._response
        if self._final is not None:
            final = parse_response(self._final, self._limit, streamed)
            final.warnings = r.warnings
            final.complete = True
            if r.error is not None and final.error is None:
                final.error, final.finish_reason = r.error, "error"
            return final
        r.id, r.model = self._started.get("id"), self._started.get("model")
        r.content = streamed
        return r

    def _event(self, data: str) -> None:
        try:
            event = loads_event(data, self._response.warnings)
        except ParseError:
            self._response.warnings.append(f"unparseable event: {data[:200]}")
            return
        if not isinstance(event, dict):
            return
        kind = str(event.get("type"))
        if kind in ("response.created", "response.in_progress", "response.queued"):
            self._started = event.get("response") or self._started
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self._final = event.get("response") or {}
        elif kind == "error":
            err = (
                event.get("error") if isinstance(event.get("error"), dict) else event
            )  # both shapes are seen
            message = str(err.get("message") or "stream error")
            self._response.error = stream_error(message, err.get("type") or err.get("code"), err.get("code"))
            self._response.finish_reason = "error"
        elif kind.startswith("response.output_item."):
            self._item_event(kind, event)
        else:
            self._delta(kind, event)

    def _item_event(self, kind: str, event: dict[str, Any]) -> None:
        index = as_int(event.get("output_index"))
        item = event.get("item") if isinstance(event.get("item"), dict) else {}
        slot = self._items.get(index)
        if slot is None:
            slot = self._items[index] = _Item(item, TextBuffer(self._limit), TextBuffer(self._limit))
        slot.item = item or slot.item
        slot.done = slot.done or kind.endswith(".done")

    def _delta(self, kind: str, event: dict[str, Any]) -> None:
        slot = self._items.get(as_int(event.get("output_index")))
        if slot is None or slot.done:
            return
        delta = event.get("delta")
        if kind in ("response.output_text.delta", "response.refusal.delta") and isinstance(delta, str):
            slot.text.add(delta)
        elif kind == "response.reasoning_summary_text.delta" and isinstance(delta, str):
            index = as_int(event.get("summary_index"))
            if slot.reasoning and index != slot.summary_index:
                slot.reasoning.add("\n\n")  # summary parts read as paragraphs, as in the full item
            slot.summary_index = index
            slot.reasoning.add(delta)
        elif kind == "response.reasoning_text.delta" and isinstance(delta, str):
            slot.reasoning.add(delta)
        elif kind.endswith(("arguments.delta", "_input.delta")) and isinstance(delta, str):
            slot.arguments.append(delta)
        elif kind.endswith(("arguments.done", "_input.done")):
            whole = event.get("arguments", event.get("input"))
            if isinstance(whole, str):
                slot.arguments = [whole]


API = OpenAIResponses()
