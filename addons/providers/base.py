"""What a provider API module provides, and the small helpers they share.

One module per API implements `Api`; `registry.py` picks one by method and path. A module
knows nothing of mitmproxy: it gets bytes, decoded JSON and a `Call` (where the call went).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from addons.normalized import (
    Error,
    FinishReason,
    MediaPart,
    Message,
    OtherPart,
    OutputSchema,
    Part,
    ReasoningPart,
    Request,
    Response,
    Role,
    SessionId,
    TextPart,
    ToolResultPart,
    Usage,
)

DEFAULT_TEXT_LIMIT = 10_000
DEFAULT_CAPTURE_LIMIT = 1 << 20


@dataclass(slots=True)
class Call:
    """Where a call went, as the parsers need it."""

    method: str
    host: str
    path: str  # without the query string
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    text_limit: int = DEFAULT_TEXT_LIMIT
    capture_limit: int = DEFAULT_CAPTURE_LIMIT  # bytes of a whole (non-streamed) body kept


class ResponseParser(Protocol):
    """Fed the (decoded) response body chunk by chunk; `finish` reassembles it."""

    def feed(self, data: bytes) -> None: ...

    def finish(self) -> Response: ...


class Api(Protocol):
    name: str  # the contract's `api` value, e.g. "openai.chat_completions"
    vendor: str  # provider family, used for unknown hosts: "<vendor>_compatible"

    def matches(self, method: str, path: str) -> bool: ...

    def parse_request(self, body: Any, call: Call) -> Request: ...

    def response_parser(self, call: Call, content_type: str, status: int) -> ResponseParser: ...


class ParseError(ValueError):
    """The body is not what the API's wire format says it should be."""


def each_event(handle: Callable[..., None], events: Any, warnings: list[str]) -> None:
    """Hand every decoded event on; one that cannot be read is skipped, not the rest with it."""
    for event in events:
        try:
            handle(event)
        except Exception as e:
            warnings.append(f"skipped an event the parser could not read ({type(e).__name__}: {e})")


# ---- leniency: what a parser keeps as it came, rather than refusing the request ------------------
# Apps move faster than wire documentation (a `system` role mid-conversation, a new block type):
# a parser keeps what it does not know, in its place, and notes it; the notes become the
# request's warnings at the plug-in boundary. A context variable spares every helper a parameter.

_notes: ContextVar[list[str] | None] = ContextVar("chatdebug_parse_notes", default=None)
MAX_NOTES = 20
OTHER_DATA_LIMIT = 2_000  # characters of an unknown part's JSON kept for a reader


def note(text: str) -> None:
    notes = _notes.get()
    if notes is not None and len(notes) < MAX_NOTES and text not in notes:
        notes.append(text)


@contextmanager
def noting() -> Iterator[list[str]]:
    notes: list[str] = []
    token = _notes.set(notes)
    try:
        yield notes
    finally:
        _notes.reset(token)


def other_part(raw: Any, kind: Any = None) -> OtherPart:
    raw_type = str(kind) if isinstance(kind, str | int) else type(raw).__name__
    note(f"kept a part of unknown type {raw_type!r} as it came")
    return OtherPart(raw_type=raw_type, data=capped(raw))


def capped(value: Any, limit: int = OTHER_DATA_LIMIT) -> Any:
    """A JSON value as it came when small, else its JSON text cut to `limit` characters."""
    try:
        text = orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        return str(value)[:limit]
    return value if len(text) <= limit else text[:limit]


def role_of(raw: Any, known: dict[str, Role]) -> tuple[Role, str | None]:
    """Our role for a wire role; an unknown one is kept (as `user`, with the wire's name)."""
    if isinstance(raw, str) and raw in known:
        return known[raw], None
    note(f"kept a message with unknown role {raw!r} as a user message")
    return "user", str(raw) if raw is not None else None


def wire_messages(
    raw_messages: Any, roles: dict[str, Role], convert: Callable[[Role, Any], list[Message]]
) -> list[Message]:
    """`{role, content}` wire messages as ours, each kept in its place whatever its role (a
    `system` message mid-conversation stays a system message; an unknown role is kept)."""
    messages: list[Message] = []
    for raw in as_list(raw_messages, "`messages`"):
        if not isinstance(raw, dict):
            messages.append(Message(role="user", parts=[other_part(raw)]))
            continue
        role, raw_role = role_of(raw.get("role"), roles)
        for message in convert(role, raw.get("content")):
            message.raw_role = raw_role
            messages.append(message)
    return messages


def as_list(value: Any, what: str) -> list[Any]:
    """A list the wire format promises; anything else is noted and read as empty."""
    if isinstance(value, list):
        return value
    if value is not None:
        note(f"{what} is {type(value).__name__}, not a list: skipped")
    return []


# ---- signals: what a request says about itself --------------------------------------------------


def schema_signal(name: Any, schema: Any) -> OutputSchema:
    """An output schema by its name and top-level fields (what says what the output is for)."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(schema, dict) and not isinstance(props, dict) and isinstance(schema.get("schema"), dict):
        props = schema["schema"].get("properties")  # {name, schema: {...}} wrappers
    fields = [str(k) for k in props][:20] if isinstance(props, dict) else []
    return OutputSchema(name=str(name) if isinstance(name, str) and name else None, fields=fields)


SESSION_KEYS = ("conversation_id", "session_id", "thread_id", "chat_id", "sessionId", "conversationId")


def metadata_sessions(metadata: Any, path: str) -> list[SessionId]:
    """Session ids in a `metadata`-style object: `{"session_id": ...}` and friends."""
    if not isinstance(metadata, dict):
        return []
    return [
        SessionId(source=f"{path}.{key}", value=str(metadata[key])[:200])
        for key in SESSION_KEYS
        if isinstance(metadata.get(key), str | int) and metadata[key] != ""
    ]


# ---- text ---------------------------------------------------------------------------------


class TextBuffer:
    """Accumulates streamed text up to a limit, counting what it drops."""

    __slots__ = ("_chunks", "_kept", "length", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.length = 0
        self._kept = 0
        self._chunks: list[str] = []

    def add(self, text: str) -> None:
        if not isinstance(text, str):
            return  # a delta that is not text carries nothing to show
        self.length += len(text)
        if self._kept < self.limit:
            piece = text[: self.limit - self._kept]
            self._chunks.append(piece)
            self._kept += len(piece)

    def __bool__(self) -> bool:
        return self.length > 0

    @property
    def text(self) -> str:
        return "".join(self._chunks)

    def text_part(self) -> TextPart:
        return TextPart(text=self.text, original_length=self._original())

    def reasoning_part(self, **extra: Any) -> ReasoningPart:
        return ReasoningPart(text=self.text, original_length=self._original(), **extra)

    def _original(self) -> int | None:
        return self.length if self.length > self._kept else None


def text_part(text: str, limit: int) -> TextPart:
    if len(text) > limit:
        return TextPart(text=text[:limit], original_length=len(text))
    return TextPart(text=text)


def reasoning_part(text: str, limit: int, **extra: Any) -> ReasoningPart:
    if len(text) > limit:
        return ReasoningPart(text=text[:limit], original_length=len(text), **extra)
    return ReasoningPart(text=text, **extra)


def media_part(media_type: str | None, data: str | bytes | None) -> MediaPart:
    """Media are never stored: base64 payloads count as their decoded size."""
    if isinstance(data, str):
        size = len(data) * 3 // 4 - data[-2:].count("=") if data else 0
    else:
        size = len(data or b"")
    return MediaPart(media_type=media_type or "application/octet-stream", size=size)


def parse_arguments(raw: Any) -> Any:
    """Tool-call arguments as parsed JSON where valid (see `loads`), else the raw string."""
    if not isinstance(raw, str):
        return raw
    try:
        return loads(raw)
    except ParseError:
        return raw


# orjson reads JSON 1024 levels deep but writes at most 254 (`_WRITABLE`), and what is read here
# is written again a few levels inside the normalized shape, its rows and the spool. So whatever
# sits deeper than MAX_DEPTH is replaced by TOO_DEEP as it is read, and the rest is recorded.
MAX_DEPTH = 128
TOO_DEEP = f"[nested deeper than {MAX_DEPTH} levels: cut for recording]"
_WRITABLE = 254
_TEXT_PIECES = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)  # whole strings, brackets


def loads(data: bytes | str) -> Any:
    """JSON as the parsers read it (see `read_json`)."""
    return read_json(data)[0]


def read_json(data: bytes | str) -> tuple[Any, str | None]:
    """JSON as the parsers read it, with anything nested deeper than MAX_DEPTH cut; and, for a
    text strict JSON readers refuse but the senders' own languages write, why it was read
    leniently (`_lenient`). ParseError for what is not JSON at all."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        error = e
        if "depth limit" in str(e):
            data = _cut_text(data.encode() if isinstance(data, str) else data)
            try:
                return orjson.loads(data), None
            except orjson.JSONDecodeError as e:
                error = e
        return _lenient(data, error), f"not strict JSON ({error}): read leniently"
    return (_cut(value, MAX_DEPTH) if _too_deep(value, data) else value), None


# Code points a strict reader refuses, though JSON's grammar has them as escapes and JavaScript
# writes them: a string cut between the two halves of an emoji keeps one half.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _lenient(data: bytes | str, error: orjson.JSONDecodeError) -> Any:
    """What orjson refuses, read as the senders' languages read it: JavaScript's JSON.stringify
    writes an unpaired surrogate as an escape (the half of an emoji a cut string keeps), Python's
    json.dumps writes NaN and Infinity, editors write a byte order mark; bytes that are not UTF-8
    are read as U+FFFD, control characters in strings as they are. Unpaired surrogates become
    U+FFFD too: nothing past here could encode them. Python's reader is C too, and only such
    texts take this path."""
    try:
        try:
            value = _python_loads(data)
        except RecursionError:  # deeper than Python reads: cut first, as for orjson
            value = _python_loads(_cut_text(data.encode() if isinstance(data, str) else data))
    except (ValueError, RecursionError):  # still too deep: brackets never closed are not cut
        raise ParseError(f"invalid JSON: {error}") from None
    return _mend(value, MAX_DEPTH)


def _python_loads(data: bytes | str) -> Any:
    try:  # bytes: a byte order mark, UTF-16 and UTF-32 are detected
        return json.loads(data, strict=False)
    except UnicodeDecodeError:
        return json.loads(data.decode("utf-8", "replace") if isinstance(data, bytes) else data, strict=False)


def _mend(value: Any, room: int) -> Any:
    """`value` with unpaired surrogates as U+FFFD, integers past 64 bits as floats (as orjson
    reads them, and all it can write), and cut below MAX_DEPTH as `_cut` does."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if type(value) is int and not -(1 << 63) <= value < 1 << 64:
        try:
            return float(value)
        except OverflowError:  # past a double's range, as orjson's "number is infinity"
            return math.inf if value > 0 else -math.inf
    if isinstance(value, dict):
        return {_mend(k, 0): _mend(v, room - 1) for k, v in value.items()} if room else TOO_DEEP
    if isinstance(value, list):
        return [_mend(v, room - 1) for v in value] if room else TOO_DEEP
    return value


# Objects and arrays of one whole body that are read for recording. Bytes alone do not bound the
# time: 15 MiB of short messages hold 400,000 objects and took ~10 s of CPU to normalize, hash and
# dump; a coding agent's longest histories hold ~15,000 (4,000 messages), read in ~0.1 s.
MAX_CONTAINERS = 100_000


# The same for one event, element or line of a stream: each is read on the proxy's loop as it
# arrives (up to 8 MiB), and a real one holds a few; 20,000 take ~50 ms to read.
MAX_EVENT_CONTAINERS = 20_000


def loads_event(data: bytes | str, warnings: list[str]) -> Any:
    """One event of a stream as `read_json` reads it, or ParseError when it holds too many objects
    and arrays to read on the loop. The first event read leniently says so in `warnings` (a
    stream's events are written alike: one warning, not one per event)."""
    value, note = read_json(data)
    if note is not None and not any(w.startswith(LENIENT_EVENTS) for w in warnings):
        warnings.append(f"{LENIENT_EVENTS}, the first {note.removeprefix('not strict JSON ')}")
    if len(data) <= 2 * MAX_EVENT_CONTAINERS:  # nearly every event: too short to hold that many
        return value
    raw = data.encode() if isinstance(data, str) else data
    if (why := too_many_containers(value, raw, MAX_EVENT_CONTAINERS)) is not None:
        raise ParseError(f"the event {why}")
    return value


LENIENT_EVENTS = "events are not strict JSON"


def too_many_containers(value: Any, data: bytes, bound: int = MAX_CONTAINERS) -> str | None:
    """Why a decoded body holds more than `bound` objects and arrays to be read for recording, if
    it does: counted in C when it plainly holds few (brackets in the text bound them), else walked."""
    if len(data) <= 2 * bound or data.count(b"{") + data.count(b"[") <= bound:
        return None
    count, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        else:
            continue
        count += 1
        if count > bound:
            return f"holds more than {bound:,} JSON objects and arrays: too many to read for recording"
    return None


def _too_deep(value: Any, data: bytes | str) -> bool:
    if len(data) < 4096:  # counting is cheaper than writing for small texts, most of them events
        opening = (b"[", b"{") if isinstance(data, bytes) else ("[", "{")
        if data.count(opening[0]) + data.count(opening[1]) <= MAX_DEPTH:  # type: ignore[arg-type]
            return False
    probe = value
    for _ in range(_WRITABLE - MAX_DEPTH):
        probe = [probe]
    try:
        orjson.dumps(probe)  # orjson's own walk, in C: writable with that many levels above it?
    except TypeError:
        return True
    return False


def _cut(value: Any, room: int) -> Any:
    if isinstance(value, dict):
        return {k: _cut(v, room - 1) for k, v in value.items()} if room else TOO_DEEP
    if isinstance(value, list):
        return [_cut(v, room - 1) for v in value] if room else TOO_DEEP
    return value


def _cut_text(data: bytes) -> bytes:
    """JSON text too deep for orjson to read, with every container deeper than MAX_DEPTH replaced
    by TOO_DEEP: the same cut as `_cut`, on the text (strings skipped whole)."""
    out: list[bytes] = []
    depth, start, last = 0, 0, 0
    marker = orjson.dumps(TOO_DEEP)
    for m in _TEXT_PIECES.finditer(data):
        c = data[m.start()]
        if c in b"[{":
            depth += 1
            if depth == MAX_DEPTH + 1:
                start = m.start()
        elif c in b"]}":
            if depth == MAX_DEPTH + 1:
                out += (data[last:start], marker)
                last = m.end()
            depth -= 1
    out.append(data[last:])
    return b"".join(out)


MAX_COUNT = 1 << 53  # token counts past this are garbage, and would not fit a database integer


def as_int(value: Any) -> int:
    """A token count: a non-negative int below 2**53, else 0."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_COUNT:
        return value
    return 0


def usage(
    input_tokens: int,
    output_tokens: int,
    *,
    cache_read: int = 0,
    cache_write: int = 0,
    reasoning: int = 0,
    total: int | None = None,
) -> Usage:
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=total if total else input_tokens + output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        reasoning_tokens=reasoning,
    )


def finish(raw: str | None, table: dict[str, FinishReason]) -> tuple[FinishReason | None, str | None]:
    if raw is None:
        return None, None
    return table.get(raw, "other"), raw


# ---- errors --------------------------------------------------------------------------------


def error_class_for_status(status: int, error_type: str | None = None) -> str:
    if status == 429:
        return "rate_limited"
    if status == 529 or error_type == "overloaded_error":
        return "overloaded"
    if status in (401, 403):
        return "auth_error"
    if status == 408:
        return "timeout"
    if status >= 500:
        return "server_error"
    return "client_error"


def error_from_body(body: Any, status: int) -> Error:
    """The error of a non-2xx response, from the usual `{"error": {...}}` shapes or plain text."""
    err: Any = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        message = str(err.get("message") or err.get("msg") or orjson.dumps(err).decode())
        etype = err.get("type") or err.get("status")
        code = err.get("code")
    else:
        message, etype, code = str(err) if err is not None else f"HTTP {status}", None, None
    etype = str(etype) if etype is not None else None
    return Error.model_validate(
        {
            "class": error_class_for_status(status, etype),
            "message": message[:2000],
            "type": etype,
            "code": str(code) if code is not None else None,
        }
    )


def stream_error(message: str, etype: str | None = None, code: Any = None) -> Error:
    overloaded = etype is not None and "overload" in etype
    return Error.model_validate(
        {
            "class": "overloaded" if overloaded else "stream_error",
            "message": message[:2000],
            "type": etype,
            "code": str(code) if code is not None else None,
        }
    )


# ---- non-streamed bodies ------------------------------------------------------------------


class JsonBodyParser:
    """Buffers a whole JSON body (bounded) and hands it to `parse` at the end.

    `body_limit` is public: past it the body is not parsed, so a compressed body need not be
    decoded further than a byte beyond it (what `Capture` does)."""

    def __init__(self, parse: Callable[[Any], Response], status: int, limit: int) -> None:
        self._parse = parse
        self._status = status
        self.body_limit = limit
        self._chunks: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> None:
        self._size += len(data)
        if self._size <= self.body_limit:
            self._chunks.append(data)

    def finish(self) -> Response:
        if self._size > self.body_limit:
            # "more than": a compressed body is decoded no further than this (its wire size is
            # the attempt's response_bytes)
            return Response(warnings=[f"body of more than {self.body_limit} bytes exceeds the capture limit"])
        raw = b"".join(self._chunks)
        if self._status >= 400:
            try:
                body: Any = loads(raw)
            except ParseError:
                body = raw.decode("utf-8", "replace").strip() or None
            return Response(error=error_from_body(body, self._status), finish_reason="error")
        body, lenient = read_json(raw)
        if (why := too_many_containers(body, raw)) is not None:
            return Response(warnings=[f"the body {why}"])
        response = self._parse(body)
        if lenient is not None:
            response.warnings.append(f"the body is {lenient}")
        return response


def tool_turn_first(role: str, parts: list[Part]) -> list[Message]:
    """One wire message as our messages: its tool results as a `tool` turn of their own, first,
    as OpenAI sends them; the rest as the message's own role."""
    results = [p for p in parts if isinstance(p, ToolResultPart)]
    rest = [p for p in parts if not isinstance(p, ToolResultPart)]
    out = [Message(role="tool", parts=results)] if results else []
    if rest or not results:
        out.append(Message(role=role, parts=rest))  # type: ignore[arg-type]
    return out


def cap_request_texts(request: Request, limit: int) -> Request:
    """The request with every text part cut to `limit` characters (a request arrives whole, and
    stays whole: grouping reads its whole texts). Messages with nothing to cut are shared."""
    messages = [_capped(m, limit) for m in request.messages]
    system = request.system[:limit] if request.system and len(request.system) > limit else request.system
    if system is request.system and all(c is m for c, m in zip(messages, request.messages, strict=True)):
        return request
    return request.model_copy(update={"messages": messages, "system": system})


def _capped(message: Message, limit: int) -> Message:
    if not any(isinstance(p, TextPart | ReasoningPart) and len(p.text) > limit for p in message.parts):
        return message
    parts = [
        p.model_copy(update={"text": p.text[:limit], "original_length": len(p.text)})
        if isinstance(p, TextPart | ReasoningPart) and len(p.text) > limit
        else p
        for p in message.parts
    ]
    return message.model_copy(update={"parts": parts})
