"""Incremental decoders for the stream framings providers use: SSE and NDJSON.

They take bytes exactly as the network cuts them (inside a line, inside a UTF-8 character)
and yield whole events, so a parser's result never depends on chunk boundaries.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(slots=True)
class SseEvent:
    event: str | None
    data: str


class LineSplitter:
    """Splits a byte stream into lines (LF or CRLF), holding back an unfinished last line."""

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> list[bytes]:
        if not data:
            return []
        buf = self._rest + data if self._rest else data
        lines = buf.split(b"\n")
        self._rest = lines.pop()
        return [line[:-1] if line.endswith(b"\r") else line for line in lines]

    def close(self) -> list[bytes]:
        rest, self._rest = self._rest, b""
        return [rest.rstrip(b"\r")] if rest.strip() else []


class SseDecoder:
    """Server-Sent Events (WHATWG): `event:` and `data:` fields, blank line ends an event."""

    __slots__ = ("_data", "_event", "_lines")

    def __init__(self) -> None:
        self._lines = LineSplitter()
        self._event: str | None = None
        self._data: list[str] = []

    def feed(self, data: bytes) -> Iterator[SseEvent]:
        for line in self._lines.feed(data):
            yield from self._line(line)

    def close(self) -> Iterator[SseEvent]:
        for line in self._lines.close():
            yield from self._line(line)
        if self._data:  # a stream cut before the blank line still delivers its last event
            yield from self._dispatch()

    def _line(self, raw: bytes) -> Iterator[SseEvent]:
        if not raw:
            if self._data or self._event is not None:
                yield from self._dispatch()
            return
        line = raw.decode("utf-8", "replace")
        if line.startswith(":"):
            return  # comment, e.g. OpenRouter's ": OPENROUTER PROCESSING" keep-alive
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value

    def _dispatch(self) -> Iterator[SseEvent]:
        event = SseEvent(self._event, "\n".join(self._data))
        self._event, self._data = None, []
        yield event


class NdjsonDecoder:
    """Newline-delimited JSON (Ollama): one JSON document per line."""

    __slots__ = ("_lines",)

    def __init__(self) -> None:
        self._lines = LineSplitter()

    def feed(self, data: bytes) -> Iterator[bytes]:
        yield from (line for line in self._lines.feed(data) if line.strip())

    def close(self) -> Iterator[bytes]:
        yield from self._lines.close()
