"""Ollama's native API: `/api/chat` (`ollama.chat`) and `/api/generate` (`ollama.generate`).

Both stream NDJSON (`application/x-ndjson`) unless the body says `"stream": false`: one JSON object
a line, the last with `done: true`, `done_reason` and the token counts. Its OpenAI-compatible
`/v1/chat/completions` goes to `openai_chat` instead.
"""

from __future__ import annotations

from typing import Any

from addons.normalized import (
    FinishReason,
    Message,
    Part,
    Request,
    Response,
    Role,
    Signals,
    TextPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
)
from addons.providers.base import (
    Call,
    JsonBodyParser,
    ParseError,
    ResponseParser,
    TextBuffer,
    as_int,
    as_list,
    error_from_body,
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
from addons.providers.framing import NdjsonDecoder

# "load" and "unload" end a call that only loaded or unloaded the model: no generation at all
FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length"}
ROLES: dict[str, Role] = {"user": "user", "assistant": "assistant", "system": "system"}
OPTIONS = ("temperature", "top_p", "top_k", "min_p", "stop", "seed", "num_ctx", "repeat_penalty",
           "presence_penalty", "frequency_penalty")  # fmt: skip
_IMAGE_MAGIC = {"iVBOR": "image/png", "/9j/": "image/jpeg", "R0lGOD": "image/gif", "UklGR": "image/webp"}


class Ollama:
    vendor = "ollama"

    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self._path = path
        self._generate = path == "/api/generate"

    def matches(self, method: str, path: str) -> bool:
        return method == "POST" and path.endswith(self._path)

    def parse_request(self, body: Any, call: Call) -> Request:
        if not isinstance(body, dict):
            raise ParseError(f"an {self.name} request must be an object")
        limit = call.text_limit
        system: str | None = None
        if self._generate:
            system = body.get("system") or None
            parts: list[Part] = [text_part(str(body.get("prompt") or ""), limit)]
            parts += [_image(i) for i in body.get("images") or []]
            messages = [Message(role="user", parts=parts)]
        else:
            messages = [_message(m, limit) for m in as_list(body.get("messages"), "`messages`")]
            leading: list[str] = []
            while messages and messages[0].role == "system":
                leading += [p.text for p in messages.pop(0).parts if isinstance(p, TextPart)]
            system = "\n\n".join(leading) or None
        raw_options = body.get("options") if isinstance(body.get("options"), dict) else {}
        options = {k: raw_options[k] for k in OPTIONS if raw_options.get(k) is not None}
        if raw_options.get("num_predict") is not None:
            options["max_output_tokens"] = raw_options["num_predict"]  # -1: no limit, -2: fill the context
        signals = Signals()
        if body.get("format") is not None:
            options["response_format"] = body["format"] if isinstance(body["format"], str) else "json_schema"
            signals.output_schema = schema_signal(None, body["format"])
        for key in ("think", "keep_alive", "raw", "suffix"):
            if body.get(key) is not None:
                options[key] = body[key]
        return Request(
            api=self.name,
            model=body.get("model"),
            system=system,
            messages=messages,
            tools=[_tool(t) for t in body.get("tools") or [] if isinstance(t, dict)],
            options=options,
            stream=body.get("stream", True) is not False,  # Ollama streams unless told not to
            signals=signals,
        )

    def response_parser(self, call: Call, content_type: str, status: int) -> ResponseParser:
        if "ndjson" in content_type:
            return OllamaStream(call.text_limit, status)
        return JsonBodyParser(lambda body: _whole(body, call.text_limit), status, call.capture_limit)


def _message(raw: Any, limit: int) -> Message:
    if not isinstance(raw, dict):
        return Message(role="user", parts=[other_part(raw)])
    role = raw.get("role")
    content = raw.get("content")
    text = content if isinstance(content, str) else ""
    if role == "tool":  # Ollama matches a result to its call by tool name; newer clients add the id
        name = raw.get("tool_name") or raw.get("name")
        return Message(
            role="tool", parts=[ToolResultPart(id=raw.get("tool_call_id"), name=name, result=content)]
        )
    ours, raw_role = role_of(role, ROLES)
    parts: list[Part] = []
    if isinstance(raw.get("thinking"), str) and raw["thinking"]:
        parts.append(reasoning_part(raw["thinking"], limit))
    if text or not (raw.get("tool_calls") or raw.get("images")):
        parts.append(text_part(text, limit))
    parts += [_image(i) for i in raw.get("images") or []]
    parts += [_call(c) for c in raw.get("tool_calls") or [] if isinstance(c, dict)]
    return Message(role=ours, parts=parts, raw_role=raw_role)


def _image(data: Any) -> Part:
    """Images are bare base64 (no media type given): the first bytes tell the common formats apart."""
    text = data if isinstance(data, str) else ""
    kind = next((t for magic, t in _IMAGE_MAGIC.items() if text.startswith(magic)), "image/*")
    return media_part(kind, text)


def _call(raw: dict[str, Any]) -> ToolCallPart:
    fn = raw.get("function") or {}
    return ToolCallPart(
        id=raw.get("id"), name=fn.get("name", ""), arguments=parse_arguments(fn.get("arguments"))
    )


def _tool(tool: dict[str, Any]) -> Tool:
    fn = tool.get("function") or {}
    return Tool(name=fn.get("name", ""), description=fn.get("description"), parameters=fn.get("parameters"))


class _Reply:
    """Folds the lines of one reply: text and thinking pieces join, tool calls add up."""

    def __init__(self, limit: int) -> None:
        self.text = TextBuffer(limit)
        self.thinking = TextBuffer(limit)
        self.calls: list[ToolCallPart] = []
        self.response = Response(complete=False)

    def line(self, obj: Any, status: int) -> None:
        if not isinstance(obj, dict):
            return
        r = self.response
        if "error" in obj:  # before the stream: the status says what kind; after: a stream error
            r.error = error_from_body(obj, status) if status >= 400 else stream_error(str(obj["error"]))
            r.finish_reason = "error"
            return
        if not r.model:  # set once: a pydantic attribute set costs a microsecond per line
            r.model = obj.get("model")
        message = obj.get("message") if isinstance(obj.get("message"), dict) else obj  # chat or generate
        for key, buffer in (("content", self.text), ("response", self.text), ("thinking", self.thinking)):
            if isinstance(message.get(key), str):
                buffer.add(message[key])
        self.calls += [_call(c) for c in message.get("tool_calls") or [] if isinstance(c, dict)]
        if obj.get("done"):
            r.complete = True
            raw = obj.get("done_reason")
            r.raw_finish_reason = raw
            r.finish_reason = FINISH.get(raw, "other") if raw else None
            if self.calls and r.finish_reason in ("stop", None):
                r.finish_reason = "tool_calls"  # Ollama ends a tool-calling turn with a plain "stop"
            r.usage = usage(as_int(obj.get("prompt_eval_count")), as_int(obj.get("eval_count")))

    def result(self) -> Response:
        r = self.response
        parts: list[Part] = []
        if self.thinking:
            parts.append(self.thinking.reasoning_part())
        if self.text:
            parts.append(self.text.text_part())
        r.content = parts + list(self.calls)
        return r


def _whole(body: Any, limit: int) -> Response:
    reply = _Reply(limit)
    reply.line(body, 200)
    reply.response.complete = True  # a whole body is complete even from a server that omits `done`
    return reply.result()


class OllamaStream:
    def __init__(self, limit: int, status: int) -> None:
        self._ndjson = NdjsonDecoder()
        self._reply = _Reply(limit)
        self._status = status

    def feed(self, data: bytes) -> None:
        for line in self._ndjson.feed(data):
            self._line(line)

    def finish(self) -> Response:
        for line in self._ndjson.close():
            self._line(line)
        return self._reply.result()

    def _line(self, line: bytes) -> None:
        try:
            self._reply.line(loads_event(line, self._reply.response.warnings), self._status)
        except ParseError:
            self._reply.response.warnings.append(f"unparseable line: {line[:200].decode('utf-8', 'replace')}")


API = Ollama("ollama.chat", "/api/chat")
GENERATE = Ollama("ollama.generate", "/api/generate")
