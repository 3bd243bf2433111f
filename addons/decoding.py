"""Content-Encoding, decoded for recording only, within bounds.

A body of a few kilobytes can decode to gigabytes (a "bomb"), and decoding runs on the proxy's
one event loop, where every other call waits while it works. So the output comes in pieces of
about `STEP` bytes (no single large buffer; brotli may give more than asked), and is bounded per
wire chunk (at most `EXPANSION` times its size or `BURST` bytes, whichever is more, and
`CHUNK_SECONDS` of CPU with parsing: what one chunk may cost the loop) and per body (its
`budget`: what one flow may cost). Past a bound the decoder stops for good and says why; the
bytes the client gets were never touched.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import brotli

try:  # the same zstd module mitmproxy itself uses
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd  # type: ignore[no-redef]

STEP = 64 << 10  # what one identity chunk is: no piece costs more to parse than a chunk
BURST = 1 << 20
EXPANSION = 64  # real text compresses 5-20x; far beyond that it is not text anyone generated
# CPU one wire chunk's decoded pieces may cost the loop, parsing included: the bounds in bytes
# alone do not bound time, as hostile content (all brackets, all empty lines) parses slowly
CHUNK_SECONDS = 0.1
# CPU one response's reading may cost the loop in all: a real stream of 128,000 tokens, one event
# each, costs ~2.5 s; 64 MiB of empty events, each under the chunk bound, would cost 30 s
RESPONSE_SECONDS = 5.0
RESPONSE_BUDGET = 64 << 20  # decoded bytes of one response the parsers are given, at least
# Request bodies past this (decoded) are passed on but not parsed for recording: parsing runs
# on the proxy's one event loop, and real requests, long histories included, stay far below it.
MAX_PARSE_BYTES = 16 << 20


class _Codec(Protocol):
    def step(self, data: bytes, max_length: int) -> bytes:
        """At most `max_length` bytes of output, taking `data` in (b"" to go on)."""
        ...

    @property
    def pending(self) -> bool:
        """More output may be ready without more input."""
        ...


class _Zlib:
    def __init__(self, wbits: int) -> None:
        self._obj = zlib.decompressobj(wbits)
        self._full = False

    def step(self, data: bytes, max_length: int) -> bytes:
        out = self._obj.decompress(self._obj.unconsumed_tail + data, max_length)
        self._full = len(out) >= max_length  # zlib may hold output back without a tail
        return out

    @property
    def pending(self) -> bool:
        return self._full or bool(self._obj.unconsumed_tail)


class _Deflate:
    """`deflate` is zlib-wrapped by the RFC, raw in practice from some servers: try both."""

    def __init__(self) -> None:
        self._codec = _Zlib(zlib.MAX_WBITS)
        self._started = False

    def step(self, data: bytes, max_length: int) -> bytes:
        if not self._started:
            self._started = True
            try:
                return self._codec.step(data, max_length)
            except zlib.error:
                self._codec = _Zlib(-zlib.MAX_WBITS)
        return self._codec.step(data, max_length)

    @property
    def pending(self) -> bool:
        return self._codec.pending


class _Brotli:
    def __init__(self) -> None:
        self._obj = brotli.Decompressor()
        self._full = False

    def step(self, data: bytes, max_length: int) -> bytes:
        out = self._obj.process(data, output_buffer_limit=max_length)
        # a step that filled its limit may hold more output: `can_accept_more_data` can say
        # yes meanwhile (32 bytes of input decoding to 2 MiB: it did after the first 98 KB)
        self._full = len(out) >= max_length
        return out

    @property
    def pending(self) -> bool:
        obj = self._obj
        return not obj.is_finished() and (self._full or not obj.can_accept_more_data())


class _Zstd:
    def __init__(self) -> None:
        self._obj = zstd.ZstdDecompressor()

    def step(self, data: bytes, max_length: int) -> bytes:
        return self._obj.decompress(data, max_length)

    @property
    def pending(self) -> bool:
        return not self._obj.needs_input and not self._obj.eof


def _codec(encoding: str) -> _Codec | None:
    if encoding in ("gzip", "x-gzip"):
        return _Zlib(47)  # 47: gzip or zlib header, auto-detected
    if encoding == "deflate":
        return _Deflate()
    if encoding == "br":
        return _Brotli()
    if encoding == "zstd":
        return _Zstd()
    return None


def decodable(encoding: str) -> bool:
    return _codec(encoding.strip().lower()) is not None


class BodyDecoder:
    """One body's Content-Encoding, decoded chunk by chunk as it arrives, within its bounds.

    `feed` yields the decoded pieces of a chunk; once a bound is passed (or the coding is broken)
    it yields nothing more, and `stopped` says why.
    """

    __slots__ = ("_codec", "budget", "burst", "decoded", "encoding", "stopped")

    def __init__(self, encoding: str, budget: int, *, burst: bool = True) -> None:
        self.encoding = encoding.strip().lower()
        self._codec = _codec(self.encoding)
        self.budget = budget
        self.burst = burst  # bound what one chunk may expand to (a whole body fed at once: no)
        self.decoded = 0
        self.stopped: str | None = None if self._codec is not None else "uses an unknown coding"

    def feed(self, data: bytes) -> Iterator[bytes]:
        codec = self._codec
        if codec is None:
            return
        allowed = max(BURST, EXPANSION * len(data)) if self.burst else self.budget
        chunk = (len(data), allowed)
        while True:
            limit = min(allowed, self.budget - self.decoded)  # what this chunk may still add
            try:
                out = codec.step(data, min(STEP, limit + 1))  # a byte past the limit: there is more
            except (zlib.error, brotli.error, zstd.ZstdError, EOFError) as e:
                self.stop(f"could not be decoded ({type(e).__name__}: {e})")
                return
            data = b""
            if len(out) > limit:
                out = out[:limit]
                if allowed < self.budget - self.decoded:
                    self.stop(f"decoded past {chunk[1]} bytes from one {chunk[0]}-byte chunk")
                else:
                    self.stop(f"decoded past {self.budget} bytes")
            self.decoded += len(out)
            allowed -= len(out)
            if out:
                yield out
            if self._codec is None or not codec.pending:
                return

    @property
    def full(self) -> bool:
        """Decoded all its budget allows: a stop at the budget, not at a chunk's bound or a fault."""
        return self.decoded >= self.budget

    def stop(self, why: str) -> None:
        """Decode no more, for `why` (the first reason given stays)."""
        self.stopped = self.stopped or why
        self._codec = None  # its window and buffers go now


@dataclass(slots=True)
class RequestBody:
    data: bytes  # decoded, at most MAX_PARSE_BYTES
    text: str  # as stored: capped, binary described, not kept
    truncated: bool
    fault: str | None  # why it is not parsed


def request_body(raw: bytes, encoding: str, limit: int, parse_limit: int = MAX_PARSE_BYTES) -> RequestBody:
    """A whole request body decoded (at most `parse_limit` bytes of it) and its stored text."""
    data, fault = raw, None
    if encoding and decodable(encoding):
        decoder = BodyDecoder(encoding, parse_limit, burst=False)
        decoded = b"".join(decoder.feed(raw))
        if decoder.stopped is None or decoded:
            data = decoded
        if decoder.stopped is not None and decoded:
            fault = f"the {decoder.encoding} request body {decoder.stopped}: not parsed for recording"
        # a body that does not decode at all is taken as sent: it may be plain JSON, mislabelled
    kept = data[:limit]
    text = kept.decode("utf-8", "replace") if is_text(kept) else binary(data)
    return RequestBody(data, text, len(data) > limit or fault is not None, fault)


def is_text(data: bytes) -> bool:
    try:
        data[:4096].decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start > 4090  # cut inside a character at the sample's end
    return b"\x00" not in data[:4096]


def binary(data: bytes) -> str:
    return f"[{len(data)} bytes of binary data, not stored]"
