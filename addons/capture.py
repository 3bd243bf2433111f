"""The stream tap: forwards every response chunk untouched while keeping a bounded copy.

`Capture.tap` is what mitmproxy calls per chunk (`flow.response.stream`). mitmproxy does not
guard that callable (an exception there silently drops the chunk), so the tap never raises.
"""

from __future__ import annotations

import time

from addons import offloop
from addons.decoding import CHUNK_SECONDS, RESPONSE_BUDGET, RESPONSE_SECONDS, STEP, BodyDecoder, decodable
from addons.normalized import Response
from addons.providers.base import ResponseParser

# Bytes of a plain stream's chunk read at a time, the chunk's CPU bound looked at between them.
PIECE = 16 << 10


class Capture:
    """Bounded copy of a response body, fed to the API's parser as it arrives.

    A compressed body is decoded within the bounds of `BodyDecoder`: at most a few times the
    capture limit (64 MiB at least) in all, and in pieces whose parsing is timed too; a whole
    (non-streamed) body only a byte past what its parser reads, since nothing past that is
    recorded. Past them the parser is given nothing more and the attempt records why; the client
    gets every byte.

    A compressed whole body is not decoded in the tap at all: its parser reads it only at the end,
    so the tap keeps the bytes as they came (a bounded copy) and `settle` decodes them after the
    response, on the recording thread. The stream is not held up by decoding, and the proxy's loop
    does none of it.
    """

    __slots__ = (
        "_chunks",
        "_decoder",
        "_parser",
        "_spent",
        "_whole",
        "_wire",
        "_wire_bound",
        "_wire_cut",
        "_wire_kept",
        "encoding",
        "fault",
        "first_byte_at",
        "held",
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
        # would be CPU spent for nothing
        budget = whole + 1 if isinstance(whole, int) else max(RESPONSE_BUDGET, 4 * limit)
        self._whole = isinstance(whole, int)
        self._spent = 0.0  # CPU seconds its parser took, in all
        self.held = False  # mitmproxy holds the body, and `take_whole` is given it at the end
        # a whole body is decoded after the response, off the event loop, to a byte past its
        # parser's limit: no chunk's expansion needs a bound of its own (a stream's does)
        self._decoder = (
            BodyDecoder(encoding, budget, burst=not self._whole) if encoding and decodable(encoding) else None
        )
        # the wire bytes of a compressed whole body, decoded by `settle`: as many as can decode
        # to its budget (a valid coding's overhead is far below an eighth plus a step)
        self._wire: list[bytes] | None = [] if self._decoder is not None and self._whole else None
        self._wire_bound = budget + budget // 8 + STEP
        self._wire_kept = 0
        self._wire_cut = False
        self.limit = limit
        self._chunks: list[bytes] = []
        self.kept = 0
        self.size = 0  # bytes on the wire
        self.truncated = False
        self.first_byte_at: float | None = None
        self.fault: str | None = None  # why recording (not the traffic) went wrong
        self.stopped = False  # the parser was given no more of the body

    @property
    def whole(self) -> bool:
        """Its parser reads the body only at the end (no stream): it may arrive in one piece."""
        return self._whole

    def take_whole(self, data: bytes, first_byte_at: float | None) -> None:
        """A body mitmproxy held, given at once and once; its first byte came with the headers."""
        self.held = False
        self.first_byte_at = first_byte_at
        self.tap(data)

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
        if self._decoder is None:
            if self._whole:  # its parser only keeps the bytes until the end, to its limit
                self._use(data)
            elif not self.stopped:
                self._stream(data)
        elif self._wire is not None:
            self._keep_wire(data)
        elif not self.stopped:
            self._decode(data)

    def _stream(self, data: bytes) -> None:
        """A plain stream's chunk, read within bounds of time as a decoded one is: `CHUNK_SECONDS`
        of CPU a chunk (looked at between pieces of it: hostile events read slowly, 64 KiB of
        `data: {` took 0.2 s) and `RESPONSE_SECONDS` in all. Not in bytes: a stream's events are
        read as they come and kept within the text limits, so a long one is read to its end."""
        started = now = time.thread_time()  # (a chunk of one piece, nearly every one: two clock reads)
        for at in range(0, len(data), PIECE):
            if at:
                now = time.thread_time()
            if (why := self._over_time(started, now, "read")) is not None:
                self._stop(why)
                break
            self._use(data[at : at + PIECE])
        self._spent += time.thread_time() - started

    def _over_time(self, started: float, now: float, what: str) -> str | None:
        """Why reading stops here, if it does: this chunk took `CHUNK_SECONDS` of CPU since
        `started`, or the response `RESPONSE_SECONDS` in all (a plain stream's or a decoded one's)."""
        if now - started > CHUNK_SECONDS:
            return f"cost over {CHUNK_SECONDS:g} s of CPU to {what} one chunk"
        if self._spent + now - started > RESPONSE_SECONDS:
            return f"cost over {RESPONSE_SECONDS:g} s of CPU to {what}"
        return None

    def _stop(self, why: str) -> None:
        self.stopped = self.truncated = True
        self.fault = self.fault or (
            f"the response stream {why}: recording stopped there, the stream passed untouched"
        )

    def _keep_wire(self, data: bytes) -> None:
        assert self._wire is not None
        room = self._wire_bound - self._wire_kept
        if room <= 0:
            self._wire_cut = True
            return
        piece = data[:room]
        self._wire.append(piece)
        self._wire_kept += len(piece)
        self._wire_cut = len(piece) < len(data)

    def _decode(self, data: bytes) -> None:
        decoder = self._decoder
        assert decoder is not None
        started = time.thread_time()
        for piece in decoder.feed(data):
            if (why := self._over_time(started, time.thread_time(), "decode and read")) is not None:
                decoder.stop(why)  # and there is more: one piece is always taken
                break
            self._use(piece)
        self._spent += time.thread_time() - started
        if decoder.stopped is not None:
            self.stopped = self.truncated = True
            # a whole body decoded a byte past its parser's limit is no fault of the recording:
            # the parser says it is too large (a warning), as for the same body sent plain
            if not (decoder.full and self._whole):
                self.fault = self.fault or (
                    f"the {decoder.encoding} response {decoder.stopped}: "
                    "recording stopped there, the stream passed untouched"
                )

    async def settle(self) -> None:
        """Decode what the tap kept as it came, on the recording thread; call once the response
        has ended (no more taps). `result` does it inline for a capture never settled."""
        if self._wire is not None:
            await offloop.beside(self._decode_wire)

    def _decode_wire(self) -> None:
        wire, self._wire = self._wire, None
        if wire is None:
            return
        for data in wire:  # chunk by chunk, as it came: the per-chunk bounds hold as in the tap
            if self.stopped:
                break
            self._decode(data)
        decoder = self._decoder
        if self._wire_cut and decoder is not None and decoder.stopped is None:  # an invalid coding
            decoder.stop(f"was over {self._wire_bound} bytes on the wire without decoding past its budget")
            self._decode(b"")

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

    @property
    def to_read(self) -> int:
        """Bytes `result` still has to read: a whole body's (its parser reads it at the end), none
        of a stream's (its events were read as they came)."""
        return self.kept if self._whole else 0

    def result(self) -> Response:
        self._decode_wire()
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
