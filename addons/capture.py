"""The stream tap: forwards every response chunk untouched while keeping a bounded copy.

`Capture.tap` is what mitmproxy calls per chunk (`flow.response.stream`). mitmproxy does not
guard that callable (an exception there silently drops the chunk), so the tap never raises.
"""

from __future__ import annotations

import time

from addons.decoding import CHUNK_SECONDS, RESPONSE_BUDGET, BodyDecoder, decodable
from addons.normalized import Response
from addons.providers.base import ResponseParser


class Capture:
    """Bounded copy of a response body, fed to the API's parser as it arrives.

    A compressed body is decoded within the bounds of `BodyDecoder`: at most a few times the
    capture limit (64 MiB at least) in all, and in pieces whose parsing is timed too; a whole
    (non-streamed) body only a byte past what its parser reads, since nothing past that is
    recorded. Past them the parser is given nothing more and the attempt records why; the client
    gets every byte.
    """

    __slots__ = (
        "_chunks",
        "_decoder",
        "_parser",
        "encoding",
        "fault",
        "first_byte_at",
        "kept",
        "limit",
        "size",
        "stopped",
        "truncated",
    )

    def __init__(self, parser: ResponseParser, encoding: str, limit: int) -> None:
        self._parser = parser
        self.encoding = encoding
        whole = getattr(parser, "body_limit", None)
        # a whole body past its parser's limit is recorded as too large, however much more it
        # decodes to: a byte past the limit says so, and decoding the rest (a bomb's gigabyte)
        # would be CPU spent on the proxy's loop for nothing
        budget = whole + 1 if isinstance(whole, int) else max(RESPONSE_BUDGET, 4 * limit)
        self._decoder = BodyDecoder(encoding, budget) if encoding and decodable(encoding) else None
        self.limit = limit
        self._chunks: list[bytes] = []
        self.kept = 0
        self.size = 0  # bytes on the wire
        self.truncated = False
        self.first_byte_at: float | None = None
        self.fault: str | None = None  # why recording (not the traffic) went wrong
        self.stopped = False  # the parser was given no more of the body

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
        decoder = self._decoder
        if decoder is None:
            self._use(data)
            return
        if self.stopped:
            return
        deadline = time.thread_time() + CHUNK_SECONDS
        for piece in decoder.feed(data):
            if time.thread_time() > deadline:  # and there is more: one piece is always taken
                decoder.stop(f"cost over {CHUNK_SECONDS:g} s of CPU to decode and parse one chunk")
                break
            self._use(piece)
        if decoder.stopped is not None:
            self.stopped = self.truncated = True
            self.fault = self.fault or (
                f"the {decoder.encoding} response {decoder.stopped}: "
                "recording stopped there, the stream passed untouched"
            )

    def _use(self, data: bytes) -> None:
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
        if self.stopped:
            # the parser never saw the body's end, so a missing terminal event says nothing
            # about the stream; the fault says what happened to the recording
            response.complete = True
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
