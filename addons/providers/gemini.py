"""Google Gemini `generateContent` / `streamGenerateContent`, on the Gemini API and on Vertex AI.

Paths: `/v1beta/models/{model}:generateContent`, `...:streamGenerateContent` (`?alt=sse` for SSE,
else a JSON array streamed element by element), and Vertex's
`/v1/projects/{p}/locations/{l}/publishers/google/models/{model}:...`. Google's JSON parser takes
field names in lowerCamelCase or snake_case, and clients send both, so both are read.
"""

from __future__ import annotations

import functools
import re
from typing import Any
from urllib.parse import unquote

import orjson

from addons.normalized import (
    Error,
    FinishReason,
    Message,
    Part,
    Request,
    Response,
    Signals,
    Tool,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from addons.providers.base import (
    Call,
    ParseError,
    ResponseParser,
    TextBuffer,
    as_int,
    as_list,
    error_from_body,
    loads_event,
    media_part,
    metadata_sessions,
    other_part,
    reasoning_part,
    schema_signal,
    stream_error,
    text_part,
    tool_turn_first,
    usage,
)
from addons.providers.framing import JsonArrayDecoder, SseDecoder

SILENT_PART_KEYS = {"thought", "thoughtSignature", "thought_signature", "videoMetadata", "video_metadata"}
_PATH = re.compile(r"/(?:models|tunedModels)/([^/:]+):(generateContent|streamGenerateContent)$")
FINISH: dict[str, FinishReason] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MALFORMED_FUNCTION_CALL": "error",  # the model's call could not be parsed: nothing usable came back
    "UNEXPECTED_TOOL_CALL": "error",
}
GENERATION = {  # generationConfig field -> option
    "temperature": "temperature", "topP": "top_p", "topK": "top_k", "stopSequences": "stop",
    "candidateCount": "n", "seed": "seed", "presencePenalty": "presence_penalty",
    "frequencyPenalty": "frequency_penalty", "thinkingConfig": "thinking",
    "responseMimeType": "response_format", "responseModalities": "modalities",
}  # fmt: skip


def _get(obj: dict[str, Any], camel: str) -> Any:
    """A field by its lowerCamelCase name, or the snake_case one Google accepts as well."""
    if camel in obj:
        return obj[camel]
    return obj.get(_snake(camel))


@functools.cache
def _snake(camel: str) -> str:
    return re.sub(r"([A-Z])", r"_\1", camel).lower()


class Gemini:
    name = "gemini.generate_content"
    vendor = "gemini"

    def matches(self, method: str, path: str) -> bool:
        return method == "POST" and _PATH.search(unquote(path)) is not None

    def parse_request(self, body: Any, call: Call) -> Request:
        if not isinstance(body, dict):
            raise ParseError("a generateContent request must be an object")
        contents = as_list(_get(body, "contents"), "`contents`")
        limit = call.text_limit
        messages = [m for c in contents for m in _messages(c, limit)]
        config = _get(body, "generationConfig") or {}
        options = {opt: _get(config, key) for key, opt in GENERATION.items() if _get(config, key) is not None}
        if _get(config, "maxOutputTokens") is not None:
            options["max_output_tokens"] = _get(config, "maxOutputTokens")
        if _get(body, "cachedContent"):
            options["cached_content"] = _get(body, "cachedContent")
        tool_config = _get(body, "toolConfig") or {}
        match = _PATH.search(unquote(call.path))
        return Request(
            api=self.name,
            model=match.group(1) if match else None,
            system=_system(_get(body, "systemInstruction")),
            messages=messages,
            tools=[t for tool in _get(body, "tools") or [] if isinstance(tool, dict) for t in _tools(tool)],
            tool_choice=_get(tool_config, "functionCallingConfig"),
            options=options,
            stream=match is not None and match.group(2) == "streamGenerateContent",
            signals=signals(body, config, tool_config),
        )

    def response_parser(self, call: Call, content_type: str, status: int) -> ResponseParser:
        streamed = unquote(call.path).endswith(":streamGenerateContent")
        return GeminiParser(
            call.text_limit, status, sse="text/event-stream" in content_type, streamed=streamed
        )


# ---- request ------------------------------------------------------------------------------------


def signals(body: dict[str, Any], config: Any, tool_config: Any) -> Signals:
    found = Signals(session_ids=metadata_sessions(_get(body, "labels"), "labels"))
    if isinstance(config, dict):
        schema = _get(config, "responseJsonSchema") or _get(config, "responseSchema")
        if schema or _get(config, "responseMimeType") == "application/json":
            found.output_schema = schema_signal(None, schema)
    calling = _get(tool_config, "functionCallingConfig") if isinstance(tool_config, dict) else None
    if isinstance(calling, dict) and calling.get("mode") == "ANY":
        allowed = _get(calling, "allowedFunctionNames")
        if isinstance(allowed, list) and len(allowed) == 1 and isinstance(allowed[0], str):
            found.forced_tool = allowed[0]
    return found


def _system(instruction: Any) -> str | None:
    if isinstance(instruction, str):
        return instruction or None
    if isinstance(instruction, dict):
        texts = [p["text"] for p in _get(instruction, "parts") or [] if isinstance(p, dict) and "text" in p]
        return "\n\n".join(texts) or None
    return None


def _messages(content: Any, limit: int) -> list[Message]:
    """One `Content`; function responses become their own `tool` message, as in the other APIs."""
    if not isinstance(content, dict):
        return [Message(role="user", parts=[other_part(content)])]
    role = {"model": "assistant", "function": "tool", "tool": "tool"}.get(
        content.get("role") or "user", "user"
    )
    parts = as_list(_get(content, "parts"), "a content's `parts`")
    return tool_turn_first(role, [p for raw in parts if (p := _part(raw, limit)) is not None])


def _part(raw: Any, limit: int) -> Part | None:
    if not isinstance(raw, dict):
        return other_part(raw)
    if isinstance(raw.get("text"), str):
        if raw.get("thought"):
            return reasoning_part(raw["text"], limit)
        return text_part(raw["text"], limit)
    if (call := _get(raw, "functionCall")) is not None:
        return ToolCallPart(id=call.get("id"), name=call.get("name", ""), arguments=call.get("args"))
    if (result := _get(raw, "functionResponse")) is not None:
        return ToolResultPart(id=result.get("id"), name=result.get("name"), result=result.get("response"))
    if (data := _get(raw, "inlineData")) is not None:
        return media_part(_get(data, "mimeType"), data.get("data"))
    if (data := _get(raw, "fileData")) is not None:  # a reference (Files API, GCS): no bytes here
        return media_part(_get(data, "mimeType"), b"")
    if (code := _get(raw, "executableCode")) is not None:
        return ToolCallPart(name="code_execution", arguments=code, server=True)
    if (outcome := _get(raw, "codeExecutionResult")) is not None:
        return ToolResultPart(name="code_execution", result=outcome)
    if set(raw) <= SILENT_PART_KEYS:
        return None  # a thought signature alone, video metadata: nothing to show
    return other_part(raw, next(iter(raw), None))


def _tools(tool: dict[str, Any]) -> list[Tool]:
    declarations = _get(tool, "functionDeclarations")
    if isinstance(declarations, list):
        return [
            Tool(
                name=d.get("name", ""),
                description=d.get("description"),
                parameters=d.get("parameters", _get(d, "parametersJsonSchema")),
            )
            for d in declarations
            if isinstance(d, dict)
        ]
    return [Tool(name=key, type=key) for key in tool]  # googleSearch, codeExecution, urlContext, ...


# ---- response -----------------------------------------------------------------------------------


def parse_usage(raw: Any) -> Usage | None:
    """Gemini's `candidatesTokenCount` EXCLUDES the thinking tokens (`thoughtsTokenCount`), where
    OpenAI's and Anthropic's output counts include them; output here is candidates + thoughts so it
    means the same across providers, and `totalTokenCount` still equals input + output.
    `promptTokenCount` already includes `cachedContentTokenCount`; tool-use prompt tokens (search
    results fed back to the model) are prompt tokens too."""
    if not isinstance(raw, dict):
        return None
    thoughts = as_int(_get(raw, "thoughtsTokenCount"))
    return usage(
        as_int(_get(raw, "promptTokenCount")) + as_int(_get(raw, "toolUsePromptTokenCount")),
        as_int(_get(raw, "candidatesTokenCount")) + thoughts,
        total=as_int(_get(raw, "totalTokenCount")),
        cache_read=as_int(_get(raw, "cachedContentTokenCount")),
        reasoning=thoughts,
    )


class GeminiParser:
    """Every shape a generateContent body comes in: one JSON object, a JSON array streamed element
    by element, or SSE; each element is a whole `GenerateContentResponse` holding the next parts.
    Streamed text arrives in pieces and is joined; a function call always arrives whole."""

    def __init__(self, limit: int, status: int, *, sse: bool, streamed: bool) -> None:
        self._limit = limit
        self._status = status
        self._sse = SseDecoder() if sse else None
        self._array = None if sse else JsonArrayDecoder()
        self._streamed = streamed
        self._segments: list[Part | tuple[str, TextBuffer]] = []  # text runs stay open for more pieces
        self._head = b""  # the body's start, to describe an error body that is not JSON
        self._finished = False  # a finishReason (or a blocked prompt) was seen
        self._candidates = 0
        self._response = Response(complete=False)

    def feed(self, data: bytes) -> None:
        if len(self._head) < 2000:
            self._head += data[: 2000 - len(self._head)]
        if self._sse is not None:
            for event in self._sse.feed(data):
                self._element(event.data)
        elif self._array is not None:
            for element in self._array.feed(data):
                self._element(element)

    def finish(self) -> Response:
        if self._sse is not None:
            for event in self._sse.close():
                self._element(event.data)
        r = self._response
        rest = self._array.close() if self._array is not None else 0
        if rest:
            r.warnings.append(f"the body ended inside a JSON element ({rest} bytes)")
        if self._status >= 400 and r.error is None:
            text = self._head.decode("utf-8", "replace").strip()
            r.error, r.finish_reason = error_from_body(text or None, self._status), "error"
        r.content = [self._part(s) for s in self._segments]
        called = any(isinstance(p, ToolCallPart) and not p.server for p in r.content)
        if r.raw_finish_reason == "STOP" and called:
            r.finish_reason = "tool_calls"  # Gemini ends a function-calling turn with a plain STOP
        if self._candidates > 1:
            r.warnings.append(f"{self._candidates} candidates returned; content shows the first")
        closed = self._array is not None and self._array.closed
        r.complete = self._finished or closed or not (self._streamed or rest)
        return r

    @staticmethod
    def _part(segment: Part | tuple[str, TextBuffer]) -> Part:
        if not isinstance(segment, tuple):
            return segment
        kind, buffer = segment
        return buffer.reasoning_part() if kind == "thought" else buffer.text_part()

    def _element(self, data: str | bytes) -> None:
        try:
            chunk = loads_event(data, self._response.warnings)
        except ParseError:
            self._response.warnings.append(f"unparseable element: {str(data)[:200]}")
            return
        if isinstance(chunk, dict) and isinstance(chunk.get("response"), dict) and "candidates" not in chunk:
            chunk = chunk["response"]  # Code Assist (gemini-cli's own endpoint) wraps each element
        if not isinstance(chunk, dict):
            return
        r = self._response
        if "error" in chunk:
            r.error, r.finish_reason = self._error(chunk), "error"
            return
        # set once: a pydantic attribute set costs a microsecond, and a stream has hundreds of events
        if not r.id:
            r.id = _get(chunk, "responseId")
        if not r.model:
            r.model = _get(chunk, "modelVersion")
        if _get(chunk, "usageMetadata"):
            r.usage = parse_usage(_get(chunk, "usageMetadata"))  # cumulative: the last one counts
        blocked = _get(_get(chunk, "promptFeedback") or {}, "blockReason")
        if blocked:
            r.finish_reason, r.raw_finish_reason = "content_filter", blocked
            r.warnings.append(f"the prompt was blocked: {blocked}")
            self._finished = True
        for candidate in chunk.get("candidates") or []:
            if not isinstance(candidate, dict):
                continue
            index = as_int(candidate.get("index"))
            self._candidates = max(self._candidates, index + 1)
            if index != 0:
                continue
            for raw in _get(candidate.get("content") or {}, "parts") or []:
                self._add(raw)
            reason = _get(candidate, "finishReason")
            if reason:
                r.finish_reason, r.raw_finish_reason = FINISH.get(reason, "other"), reason
                self._finished = True

    def _add(self, raw: Any) -> None:
        if isinstance(raw, dict) and isinstance(raw.get("text"), str):
            kind = "thought" if raw.get("thought") else "text"
            last = self._segments[-1] if self._segments else None
            if not (isinstance(last, tuple) and last[0] == kind):
                last = (kind, TextBuffer(self._limit))
                self._segments.append(last)
            last[1].add(raw["text"])
            return
        part = _part(raw, self._limit) if isinstance(raw, dict) else None
        if part is not None:
            self._segments.append(part)

    def _error(self, chunk: dict[str, Any]) -> Error:
        if self._status >= 400:
            return error_from_body(chunk, self._status)
        err = chunk["error"] if isinstance(chunk["error"], dict) else {"message": chunk["error"]}
        message = err.get("message") or orjson.dumps(err).decode()
        return stream_error(str(message), err.get("status"), err.get("code"))


API = Gemini()
