"""OpenAI Chat Completions (`/v1/chat/completions`), also spoken by most OpenAI-compatible servers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from addons.normalized import (
    Error,
    FinishReason,
    Message,
    Part,
    Request,
    Response,
    Role,
    SessionId,
    Signals,
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
    each_event,
    finish,
    loads_event,
    media_part,
    metadata_sessions,
    other_part,
    parse_arguments,
    reasoning_part,
    role_of,
    schema_signal,
    stream_error,
    text_part,
    usage,
)
from addons.providers.framing import SseDecoder

FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}
OPTIONS = (
    "temperature", "top_p", "top_k", "stop", "n", "seed", "presence_penalty", "frequency_penalty",
    "reasoning_effort", "parallel_tool_calls", "logprobs", "top_logprobs", "service_tier",
    "verbosity", "modalities",
)  # fmt: skip


class OpenAIChat:
    name = "openai.chat_completions"
    vendor = "openai"

    def matches(self, method: str, path: str) -> bool:
        return method == "POST" and path.endswith("/chat/completions")

    def parse_request(self, body: Any, call: Call) -> Request:
        if not isinstance(body, dict):
            raise ParseError("a chat completion request must be an object")
        limit = call.text_limit
        system: list[str] = []
        messages: list[Message] = []
        for raw in as_list(body.get("messages"), "`messages`"):
            message = _message(raw, limit)
            if message.role == "system" and not messages:
                system.extend(p.text for p in message.parts if isinstance(p, TextPart))
            else:
                messages.append(message)
        options = {k: body[k] for k in OPTIONS if body.get(k) is not None}
        cap = body.get("max_completion_tokens")
        if cap is None:
            cap = body.get("max_tokens")
        if cap is not None:
            options["max_output_tokens"] = cap
        if isinstance(body.get("response_format"), dict):
            options["response_format"] = body["response_format"].get("type")
        return Request(
            api=self.name,
            model=body.get("model"),
            system="\n\n".join(system) or None,
            messages=messages,
            tools=_tools(body),
            tool_choice=body.get("tool_choice", body.get("function_call")),
            options=options,
            stream=bool(body.get("stream")),
            signals=signals(body, _format(body.get("response_format"))),
        )

    def response_parser(self, call: Call, content_type: str, status: int) -> ResponseParser:
        if "text/event-stream" in content_type:
            return ChatStream(call.text_limit)
        return JsonBodyParser(lambda body: parse_response(body, call.text_limit), status, call.capture_limit)


ROLES: dict[str, Role] = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def signals(body: dict[str, Any], output: Any) -> Signals:
    """What OpenAI-style bodies (Chat Completions and Responses) say about the call."""
    found = Signals(output_schema=output)
    found.session_ids = metadata_sessions(body.get("metadata"), "metadata")
    if isinstance(body.get("prompt_cache_key"), str) and body["prompt_cache_key"]:
        found.session_ids.append(SessionId(source="prompt_cache_key", value=body["prompt_cache_key"][:200]))
    for key in ("user", "safety_identifier"):
        if isinstance(body.get(key), str) and body[key]:
            found.user = found.user or body[key][:200]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        fn = choice.get("function") if isinstance(choice.get("function"), dict) else choice
        if isinstance(fn.get("name"), str):
            found.forced_tool = fn["name"]
    if isinstance(body.get("previous_response_id"), str):
        found.previous_response_id = body["previous_response_id"]
    return found


def _format(fmt: Any) -> Any:
    """`response_format` / Responses' `text.format`: JSON mode or a named JSON schema."""
    if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema"):
        return None
    inner = fmt.get("json_schema") if isinstance(fmt.get("json_schema"), dict) else fmt  # chat nests it
    return schema_signal(inner.get("name"), inner.get("schema"))


def _message(raw: Any, limit: int) -> Message:
    if not isinstance(raw, dict):
        return Message(role="user", parts=[other_part(raw)])
    role = raw.get("role")
    content = raw.get("content")
    if role in ("tool", "function"):
        result: Any = content
        if not isinstance(content, str):
            result = [p.model_dump(exclude_none=True) for p in _parts(content, limit)]
        call_id = raw.get("tool_call_id")
        return Message(role="tool", parts=[ToolResultPart(id=call_id, name=raw.get("name"), result=result)])
    parts: list[Part] = []
    reasoning = raw.get("reasoning_content") or raw.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        parts.append(reasoning_part(reasoning, limit))
    parts.extend(_parts(content, limit))
    if isinstance(raw.get("refusal"), str):
        parts.append(text_part(raw["refusal"], limit))
    parts.extend(_tool_calls(raw))
    ours, raw_role = role_of(role, ROLES)
    return Message(role=ours, parts=parts, raw_role=raw_role)


def _parts(content: Any, limit: int) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [text_part(content, limit)]
    parts: list[Part] = []
    for item in as_list(content, "message content"):
        kind = item.get("type") if isinstance(item, dict) else None
        if kind in ("text", "input_text", "output_text"):
            parts.append(text_part(str(item.get("text", "")), limit))
        elif kind == "refusal":
            parts.append(text_part(str(item.get("refusal", "")), limit))
        elif kind == "image_url":
            image = item.get("image_url")
            url = image.get("url", "") if isinstance(image, dict) else str(image or "")
            parts.append(_data_url(url, "image"))
        elif kind == "input_audio":
            audio = item.get("input_audio") or {}
            parts.append(media_part(f"audio/{audio.get('format', 'wav')}", audio.get("data")))
        elif kind == "file":
            file = item.get("file") or {}
            parts.append(_data_url(file.get("file_data") or "", "application/pdf"))
        elif isinstance(item, str):
            parts.append(text_part(item, limit))
        else:
            parts.append(other_part(item, kind))
    return parts


def _data_url(url: str, fallback: str) -> Part:
    """`data:image/png;base64,...` counts its decoded size; a remote URL counts as 0 bytes."""
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        return media_part(header[5:].split(";")[0] or fallback, data)
    return media_part(fallback if "/" in fallback else f"{fallback}/url", b"")


def _tool_calls(raw: dict[str, Any]) -> list[Part]:
    calls: list[Part] = []
    for call in as_list(raw.get("tool_calls"), "`tool_calls`"):
        if not isinstance(call, dict):
            calls.append(other_part(call))
            continue
        fn = call.get("function") if isinstance(call.get("function"), dict) else {}
        calls.append(
            ToolCallPart(
                id=call.get("id"),
                name=fn.get("name") or "",
                arguments=parse_arguments(fn.get("arguments")),
            )
        )
    if isinstance(raw.get("function_call"), dict):
        fn = raw["function_call"]
        calls.append(ToolCallPart(name=fn.get("name") or "", arguments=parse_arguments(fn.get("arguments"))))
    return calls


def _tools(body: dict[str, Any]) -> list[Tool]:
    tools = []
    for tool in body.get("tools") or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict):
            tools.append(
                Tool(
                    name=fn.get("name", ""),
                    description=fn.get("description"),
                    parameters=fn.get("parameters"),
                )
            )
        elif isinstance(tool, dict):
            tools.append(Tool(name=tool.get("name") or tool.get("type", ""), type=tool.get("type")))
    for fn in body.get("functions") or []:
        tools.append(
            Tool(
                name=fn.get("name", ""),
                description=fn.get("description"),
                parameters=fn.get("parameters"),
            )
        )
    return tools


def parse_usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = raw.get("prompt_tokens_details") or {}
    completion = raw.get("completion_tokens_details") or {}
    return usage(
        as_int(raw.get("prompt_tokens")),
        as_int(raw.get("completion_tokens")),
        total=as_int(raw.get("total_tokens")),
        cache_read=as_int(prompt.get("cached_tokens")) or as_int(raw.get("prompt_cache_hit_tokens")),
        reasoning=as_int(completion.get("reasoning_tokens")),
    )


def parse_response(body: Any, limit: int) -> Response:
    if not isinstance(body, dict):
        raise ParseError("a chat completion must be an object")
    if _is_error(body):
        return Response(error=_body_error(body), finish_reason="error")
    choices = body.get("choices") or []
    warnings = [f"{len(choices)} choices returned; content shows the first"] if len(choices) > 1 else []
    content: list[Part] = []
    raw_finish = None
    refused = False
    if choices:
        message = choices[0].get("message") or {}
        content = _message({**message, "role": "assistant"}, limit).parts
        raw_finish = choices[0].get("finish_reason")
        refused = isinstance(message.get("refusal"), str)
    reason, raw = _finish(raw_finish, refused)
    return Response(
        id=body.get("id"),
        model=body.get("model"),
        content=content,
        finish_reason=reason,
        raw_finish_reason=raw,
        usage=parse_usage(body.get("usage")),
        warnings=warnings,
    )


def _finish(raw: str | None, refused: bool) -> tuple[FinishReason | None, str | None]:
    """A refusal ends with a plain `stop`; normalized, the model declined (as Anthropic's `refusal`)."""
    reason, raw = finish(raw, FINISH)
    return ("content_filter" if refused and reason == "stop" else reason), raw


def _is_error(body: dict[str, Any]) -> bool:
    """`{"error": {...}}` (OpenAI, most servers) or vLLM's `{"object": "error", ...}`."""
    return bool(body.get("error")) or body.get("object") == "error"


def _body_error(body: dict[str, Any]) -> Error:
    err = body["error"] if body.get("error") else body
    if not isinstance(err, dict):
        return stream_error(str(err))
    message = err.get("message")
    return stream_error(str(message) if message else "stream error", _str(err.get("type")), err.get("code"))


def _str(value: Any) -> str | None:
    return str(value) if value is not None else None


class ChatStream:
    """Reassembles `chat.completion.chunk` events; tool-call arguments are joined by index."""

    def __init__(self, limit: int) -> None:
        self._sse = SseDecoder()
        self._limit = limit
        self._text = TextBuffer(limit)
        self._reasoning = TextBuffer(limit)
        self._calls: list[_StreamedCall] = []
        self._slots: dict[int, _StreamedCall] = {}  # a tool-call delta's `index` -> its call
        self._response = Response(complete=False)
        self._choices = 0
        self._refused = False

    def feed(self, data: bytes) -> None:
        each_event(lambda event: self._event(event.data), self._sse.feed(data), self._response.warnings)

    def finish(self) -> Response:
        for event in self._sse.close():
            self._event(event.data)
        r = self._response
        parts: list[Part] = []
        if self._reasoning:
            parts.append(self._reasoning.reasoning_part())
        if self._text:
            parts.append(self._text.text_part())
        for call in self._calls:
            args = "".join(call.arguments)
            parts.append(ToolCallPart(id=call.id, name=call.name, arguments=parse_arguments(args)))
        r.content = parts
        if self._refused and r.finish_reason == "stop":
            r.finish_reason = "content_filter"
        if self._choices > 1:
            r.warnings.append(f"{self._choices} choices streamed; content shows the first")
        if not r.complete and r.error is None and r.finish_reason is not None:
            r.complete = True  # some compatible servers end after the finish chunk without [DONE]
        return r

    def _event(self, data: str) -> None:
        if data.startswith("[DONE]"):
            self._response.complete = True
            return
        try:
            chunk = loads_event(data, self._response.warnings)
        except ParseError:
            self._response.warnings.append(f"unparseable event: {data[:200]}")
            return
        if not isinstance(chunk, dict):
            return
        r = self._response
        if _is_error(chunk):
            r.error = _body_error(chunk)
            r.finish_reason = "error"
            return
        # set once: a pydantic attribute set costs a microsecond, and a stream has hundreds of events
        if not r.id:
            r.id = chunk.get("id")
        if not r.model:
            r.model = chunk.get("model")
        if chunk.get("usage"):
            r.usage = parse_usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            index = as_int(choice.get("index"))
            self._choices = max(self._choices, index + 1)
            if index == 0:
                self._delta(choice.get("delta") or {})
                if choice.get("finish_reason"):
                    r.finish_reason, r.raw_finish_reason = finish(choice["finish_reason"], FINISH)

    def _delta(self, delta: dict[str, Any]) -> None:
        if isinstance(delta.get("content"), str):
            self._text.add(delta["content"])
        if isinstance(delta.get("refusal"), str):
            self._text.add(delta["refusal"])
            self._refused = True
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str):
            self._reasoning.add(reasoning)
        for tc in delta.get("tool_calls") or []:
            if isinstance(tc, dict):
                self._call(as_int(tc.get("index")), tc.get("id"), tc.get("function"))
        if isinstance(delta.get("function_call"), dict):
            self._call(0, None, delta["function_call"])

    def _call(self, index: int, call_id: Any, fn: Any) -> None:
        """Fragments join by `index`; a new `id` at a used index is a new call (servers that omit it)."""
        call = self._slots.get(index)
        if call is None or (call_id and call.id and call_id != call.id):
            call = self._slots[index] = _StreamedCall()
            self._calls.append(call)
        call.id = call.id or (str(call_id) if call_id else None)
        fn = fn if isinstance(fn, dict) else {}
        name = fn.get("name")
        if isinstance(name, str) and name != call.name:  # some servers repeat the whole name
            call.name += name
        arguments = fn.get("arguments")
        if isinstance(arguments, str) and arguments:
            call.arguments.append(arguments)
        elif isinstance(arguments, dict):  # a few servers send the arguments as an object
            call.arguments.append(orjson.dumps(arguments).decode())


@dataclass(slots=True)
class _StreamedCall:
    id: str | None = None
    name: str = ""
    arguments: list[str] = field(default_factory=list)


API = OpenAIChat()
