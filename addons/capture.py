"""The stream tap: forwards every response chunk untouched while keeping a bounded copy.

`Capture.tap` is what mitmproxy calls per chunk (`flow.response.stream`). mitmproxy does not
guard that callable (an exception there silently drops the chunk), so the tap never raises.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable

import brotli

from addons.normalized import Response
from addons.providers.base import ResponseParser

try:  # the same zstd module mitmproxy itself uses
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd  # type: ignore[no-redef]

Decoder = Callable[[bytes], bytes]


def incremental_decoder(encoding: str) -> Decoder | None:
    """A chunk-by-chunk decoder for a Content-Encoding; None for identity or unknown codings."""
    encoding = encoding.strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(47).decompress  # 47: gzip or zlib header, auto-detected
    if encoding == "deflate":
        return _Deflate().decompress
    if encoding == "br":
        return brotli.Decompressor().process
    if encoding == "zstd":
        return zstd.ZstdDecompressor().decompress
    return None


class _Deflate:
    """`deflate` is zlib-wrapped by the RFC, raw in practice from some servers: try both."""

    def __init__(self) -> None:
        self._obj = zlib.decompressobj()
        self._started = False

    def decompress(self, data: bytes) -> bytes:
        if not self._started:
            self._started = True
            try:
                return self._obj.decompress(data)
            except zlib.error:
                self._obj = zlib.decompressobj(-15)
        return self._obj.decompress(data)


class Capture:
    """Bounded copy of a response body, fed to the API's parser as it arrives."""

    __slots__ = (
        "_chunks",
        "_decode",
        "_parser",
        "encoding",
        "fault",
        "first_byte_at",
        "kept",
        "limit",
        "size",
        "truncated",
    )

    def __init__(self, parser: ResponseParser, encoding: str, limit: int) -> None:
        self._parser = parser
        self.encoding = encoding
        self._decode = incremental_decoder(encoding) if encoding else None
        self.limit = limit
        self._chunks: list[bytes] = []
        self.kept = 0
        self.size = 0  # bytes on the wire
        self.truncated = False
        self.first_byte_at: float | None = None
        self.fault: str | None = None  # why recording (not the traffic) went wrong

    def tap(self, data: bytes) -> bytes:
        if data:
            try:
                self._take(data)
            except Exception as e:  # never let recording touch the stream; the next chunk is fed again
                self.fault = self.fault or f"{type(e).__name__}: {e}"
        return data

    def _take(self, data: bytes) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = time.time()
        self.size += len(data)
        if self._decode is not None:
            data = self._decode(data)
        if self.kept < self.limit:
            piece = data[: self.limit - self.kept]
            self._chunks.append(piece)
            self.kept += len(piece)
            self.truncated = len(piece) < len(data)
        else:
            self.truncated = True
        self._parser.feed(data)

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)

    def result(self) -> Response:
        response = self._parser.finish()
        self.fault = self.fault or getattr(self._parser, "fault", None)  # input the parser skipped
        return response


class RequestTee:
    """A request body streamed on to the provider as it arrives. Kept whole for parsing up to
    `limit` bytes; past that only its first `head` bytes stay, for the stored copy."""

    __slots__ = ("_chunks", "head", "limit", "size")

    def __init__(self, limit: int, head: int) -> None:
        self.limit = limit
        self.head = head
        self.size = 0
        self._chunks: list[bytes] = []

    def tap(self, data: bytes) -> bytes:
        self.size += len(data)
        if self.size <= self.limit:
            self._chunks.append(data)
        elif self._chunks and sum(map(len, self._chunks)) > self.head:
            self._chunks = [b"".join(self._chunks)[: self.head]]  # let the rest go, once
        return data

    @property
    def complete(self) -> bool:
        return self.size <= self.limit

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)
