"""Incremental decoders for the stream framings providers use: SSE and NDJSON.

They take bytes exactly as the network cuts them (inside a line, inside a UTF-8 character)
and yield whole events, so a parser's result never depends on chunk boundaries.

Each is linear in its input (no byte is scanned or copied twice while a line waits for its end)
and bounded: a line, an SSE event or a JSON element past `MAX_ITEM` bytes is dropped while it
streams by. In its place comes a short description that is not JSON (`dropped`), so every
parser reports it, with its size, among the response's warnings.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

MAX_ITEM = 8 << 20  # far above any real event: a whole response with an image in it fits


def dropped(what: str, size: int) -> str:
    return f"[{what} of {size} bytes, over the {MAX_ITEM}-byte limit, dropped unread]"


@dataclass(slots=True)
class SseEvent:
    event: str | None
    data: str


@dataclass(slots=True)
class Dropped:
    """A line too long to keep: only its size is known."""

    size: int


class LineSplitter:
    """Splits a byte stream into lines (LF or CRLF), holding back an unfinished last line.

    The unfinished line waits as a list of pieces, joined once when its end arrives; one past
    `limit` bytes is let go and only counted, so it comes out as `Dropped`.
    """

    __slots__ = ("_held", "_size", "limit")

    def __init__(self, limit: int = MAX_ITEM) -> None:
        self.limit = limit
        self._held: list[bytes] | None = []  # None: the line is being dropped
        self._size = 0

    def feed(self, data: bytes) -> list[bytes | Dropped]:
        if not data:
            return []
        pieces = data.split(b"\n")
        rest = pieces.pop()
        if not pieces:
            self._hold(rest)
            return []
        lines: list[bytes | Dropped] = [self._finish(pieces[0])]
        if len(data) <= self.limit:  # no line inside it can be too long
            lines += [p[:-1] if p.endswith(b"\r") else p for p in pieces[1:]]
        else:
            lines += [self._line(p) for p in pieces[1:]]
        self._held, self._size = [], 0
        self._hold(rest)
        return lines

    def close(self) -> list[bytes | Dropped]:
        line = self._finish(b"")
        self._held, self._size = [], 0
        if isinstance(line, Dropped) or line.strip():
            return [line]
        return []

    def _hold(self, piece: bytes) -> None:
        self._size += len(piece)
        if self._held is None:
            return
        if self._size > self.limit:
            self._held = None
        elif piece:
            self._held.append(piece)

    def _finish(self, piece: bytes) -> bytes | Dropped:
        """The held line, ended by `piece`."""
        if self._held is None or self._size + len(piece) > self.limit:
            return Dropped(self._size + len(piece))
        if self._held:
            piece = b"".join([*self._held, piece])
        return piece[:-1] if piece.endswith(b"\r") else piece

    def _line(self, piece: bytes) -> bytes | Dropped:
        if len(piece) > self.limit:
            return Dropped(len(piece))
        return piece[:-1] if piece.endswith(b"\r") else piece


class SseDecoder:
    """Server-Sent Events (WHATWG): `event:` and `data:` fields, blank line ends an event.

    An event whose data lines pass `MAX_ITEM` bytes in all (a stream that never sends the blank
    line) is dropped as it grows, and delivered as its `dropped` description.
    """

    __slots__ = ("_data", "_event", "_lines", "_size")

    def __init__(self) -> None:
        self._lines = LineSplitter()
        self._event: str | None = None
        self._data: list[str] | None = []  # None: the event is being dropped
        self._size = 0

    def feed(self, data: bytes) -> Iterator[SseEvent]:
        for line in self._lines.feed(data):
            yield from self._line(line)

    def close(self) -> Iterator[SseEvent]:
        for line in self._lines.close():
            yield from self._line(line)
        if (
            self._data is None or self._data
        ):  # a stream cut before the blank line still delivers its last event
            yield from self._dispatch()

    def _line(self, raw: bytes | Dropped) -> Iterator[SseEvent]:
        if isinstance(raw, Dropped):  # most likely data: the event cannot be read whole
            self._size += raw.size
            self._data = None
            return
        if not raw:
            if self._data is None or self._data or self._event is not None:
                yield from self._dispatch()
            return
        line = raw.decode("utf-8", "replace")
        if line.startswith(":"):
            return  # comment, e.g. OpenRouter's ": OPENROUTER PROCESSING" keep-alive
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._size += len(raw)
            if self._data is not None:
                self._data.append(value)
                if self._size > MAX_ITEM:
                    self._data = None
        elif name == "event":
            self._event = value

    def _dispatch(self) -> Iterator[SseEvent]:
        data = dropped("an SSE event", self._size) if self._data is None else "\n".join(self._data)
        event = SseEvent(self._event, data)
        self._event, self._data, self._size = None, [], 0
        yield event


class NdjsonDecoder:
    """Newline-delimited JSON (Ollama): one JSON document per line."""

    __slots__ = ("_lines",)

    def __init__(self) -> None:
        self._lines = LineSplitter()

    def feed(self, data: bytes) -> Iterator[bytes]:
        yield from _documents(self._lines.feed(data))

    def close(self) -> Iterator[bytes]:
        yield from _documents(self._lines.close())


def _documents(lines: list[bytes | Dropped]) -> Iterator[bytes]:
    for line in lines:
        if isinstance(line, Dropped):
            yield dropped("a line", line.size).encode()
        elif line.strip():
            yield line


class JsonArrayDecoder:
    """A JSON array streamed element by element: Gemini's `streamGenerateContent` without `alt=sse`
    sends `[{...}\r\n,{...}]` and a client reads each object as it completes.

    Yields the bytes of every top-level object (or array inside the outer array) once its closing
    bracket arrives; a plain object body, with no outer array, comes out as one element. Only
    structural bytes are inspected (braces, brackets, quotes, backslashes), which UTF-8 never uses
    inside a multi-byte character, so a cut anywhere is safe.
    """

    __slots__ = ("_buf", "_depth", "_dropped", "_in_string", "_pos", "_start", "closed", "opened")

    # runs are taken whole, in C: hostile input (all brackets, all escapes) costs no step per byte
    _STRUCTURE = re.compile(rb'"|[{\[]+|[}\]]+')
    _STRING = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)  # up to the closing quote

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # where scanning resumes; may point past the end after a trailing backslash
        self._start = -1  # start of the element being read, -1 between elements
        self._depth = 0
        self._in_string = False
        self._dropped = 0  # bytes of the element being read already let go: it is too large
        self.opened = False  # saw the outer `[`
        self.closed = False  # saw the outer `]`: the array is complete

    def feed(self, data: bytes) -> Iterator[bytes]:
        buf = self._buf
        buf += data
        i = self._pos
        while i < len(buf):
            if self._in_string:
                end = self._STRING.match(buf, i).end()  # type: ignore[union-attr]  # always matches
                if end == len(buf):
                    i = end
                elif buf[end] == 0x5C:  # a backslash that ends the buffer: its escaped byte is next
                    i = end + 2
                else:
                    self._in_string, i = False, end + 1
                continue
            m = self._STRUCTURE.search(buf, i)
            if m is None:
                i = len(buf)
                break
            i, run = m.start(), m.end() - m.start()
            c = buf[i]
            if c == 0x22:  # "
                self._in_string = True
            elif c in b"{[":
                if c == 0x5B and self._depth == 0 and not self.opened:
                    self.opened, i, run = True, i + 1, run - 1
                if run and self._depth == 0:
                    self._start = i
                self._depth += run
            elif self._depth > 0:
                if run < self._depth:
                    self._depth -= run
                else:
                    last = i + self._depth - 1  # the element's closing bracket
                    yield self._element(buf, last)
                    self._closes(buf, last + 1, i + run)
            else:
                self._closes(buf, i, i + run)
            i += run
        keep = self._start if self._start >= 0 else len(buf)  # between elements nothing is kept
        if self._start >= 0 and len(buf) - self._start > MAX_ITEM:
            self._dropped += len(buf) - self._start  # still scanned for its end, no longer kept
            keep = len(buf)
        del buf[:keep]
        self._pos = i - keep
        if self._start >= 0:
            self._start = 0

    def _element(self, buf: bytearray, last: int) -> bytes:
        start, self._start, self._depth = self._start, -1, 0
        if self._dropped:
            size, self._dropped = self._dropped + last + 1 - start, 0
            return dropped("a JSON element", size).encode()
        return bytes(buf[start : last + 1])

    def _closes(self, buf: bytearray, start: int, end: int) -> None:
        """Closing brackets between elements: a `]` ends the array."""
        if buf.find(b"]", start, end) >= 0:
            self.closed = True

    def close(self) -> int:
        """Bytes of an element left unfinished (0 when the body ended between elements)."""
        rest = self._dropped + len(self._buf) if self._start >= 0 else 0
        self._buf.clear()
        return rest


@dataclass(slots=True)
class EventStreamMessage:
    headers: dict[str, Any]
    payload: bytes
    problem: str | None = None  # why this frame is suspect (a CRC mismatch); it is still delivered


class EventStreamDecoder:
    """AWS event stream (`application/vnd.amazon.eventstream`, Bedrock's `converse-stream`).

    A frame is: total length (4 bytes), headers length (4), prelude CRC32 (4), headers, payload,
    message CRC32 (4), all big-endian. A CRC mismatch is reported on the message, never raised:
    the traffic already passed, we only describe it. A bad prelude CRC means the lengths cannot be
    trusted, so decoding stops there with one problem message.
    """

    __slots__ = ("_buf", "broken")

    _PRELUDE = 12
    _MAX_FRAME = 16 * 1024 * 1024 + 128 * 1024 + 16  # the format's payload and headers limits

    def __init__(self) -> None:
        self._buf = bytearray()
        self.broken = False

    def feed(self, data: bytes) -> Iterator[EventStreamMessage]:
        if self.broken:
            return
        buf = self._buf
        buf += data
        while len(buf) >= self._PRELUDE:
            total, headers_length, prelude_crc = struct.unpack_from("!III", buf)
            computed = zlib.crc32(buf[:8])
            if computed != prelude_crc or not 16 + headers_length <= total <= self._MAX_FRAME:
                self.broken = True
                buf.clear()
                what = "prelude CRC mismatch" if computed != prelude_crc else f"bad frame length {total}"
                yield EventStreamMessage({}, b"", f"{what}; the rest of the event stream is not decoded")
                return
            if len(buf) < total:
                return
            frame = bytes(buf[:total])
            del buf[:total]
            yield _event_stream_message(frame, headers_length)

    def close(self) -> Iterator[EventStreamMessage]:
        if self._buf and not self.broken:
            yield EventStreamMessage({}, b"", f"the stream ended inside a frame ({len(self._buf)} bytes)")
        self._buf.clear()


def _event_stream_message(frame: bytes, headers_length: int) -> EventStreamMessage:
    (expected,) = struct.unpack_from("!I", frame, len(frame) - 4)
    computed = zlib.crc32(frame[:-4])
    problem = None
    if computed != expected:
        problem = f"message CRC mismatch: expected 0x{expected:08x}, computed 0x{computed:08x}"
    try:
        headers = _event_stream_headers(frame[12 : 12 + headers_length])
    except (struct.error, ValueError, IndexError) as e:
        headers, problem = {}, problem or f"unreadable event headers: {e}"
    return EventStreamMessage(headers, frame[12 + headers_length : -4], problem)


# header value type -> (struct format or None, fixed size); 6 and 7 carry a 2-byte length instead
_HEADER_VALUES: dict[int, tuple[str | None, int]] = {
    0: (None, 0),  # true
    1: (None, 0),  # false
    2: ("!b", 1),
    3: ("!h", 2),
    4: ("!i", 4),
    5: ("!q", 8),
    8: ("!q", 8),  # timestamp, milliseconds since the epoch
    9: (None, 16),  # uuid
}


def _event_stream_headers(data: bytes) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    i = 0
    while i < len(data):
        name_length = data[i]
        name = data[i + 1 : i + 1 + name_length].decode("utf-8")
        i += 1 + name_length
        kind = data[i]
        i += 1
        value: Any
        if kind in (6, 7):  # byte array, string
            (length,) = struct.unpack_from("!H", data, i)
            raw = data[i + 2 : i + 2 + length]
            value = raw.decode("utf-8") if kind == 7 else raw
            i += 2 + length
        elif kind in _HEADER_VALUES:
            fmt, size = _HEADER_VALUES[kind]
            if fmt is not None:
                (value,) = struct.unpack_from(fmt, data, i)
            else:
                value = kind == 0 if size == 0 else data[i : i + size]
            i += size
        else:
            raise ValueError(f"unknown header value type {kind}")
        headers[name] = value
    return headers
