"""One HTTP try of an LLM call, as the recorder saw it: plain data, no mitmproxy types."""

from __future__ import annotations

from dataclasses import dataclass, field

from addons.capture import Capture
from addons.providers.base import Api, Call


@dataclass(slots=True)
class Exchange:
    flow_id: str
    api: Api
    provider: str
    call: Call
    url: str  # as sent, before redaction
    started_at: float  # epoch seconds, request start
    request_headers: list[tuple[str, str]]
    request_body: bytes  # as sent (maybe compressed); only its head when not complete
    request_size: int = 0  # bytes the client sent
    request_complete: bool = True  # False for a body too large to keep whole (it is not parsed)
    unread: str | None = None  # why the body is not read for recording (only its head is kept)
    queued_at: float = 0.0  # monotonic: when its start was handed to the pipeline
    backlog: int = 0  # bytes its start counts among those waiting to be read off the loop
    hints: dict[str, str] = field(default_factory=dict)  # X-Chatdebug-* headers, lower-case names
    status: int | None = None
    response_headers: list[tuple[str, str]] | None = None
    capture: Capture | None = None
    finished_at: float | None = None
    error: str | None = None  # mitmproxy's flow error message: disconnects, resets, timeouts
    client_gone: bool = False  # the error came from the client's side (it went away)
    fault: str | None = None  # a recorder hook failed on this flow (the flow itself went on)

    def leave_unread(self, why: str) -> None:
        """Not read for recording: only the head a row stores is kept, and the reason."""
        self.request_body = self.request_body[: self.call.capture_limit]
        self.request_complete = False
        self.unread = why

    @property
    def request_encoding(self) -> str:
        return _header(self.request_headers, "content-encoding")

    @property
    def response_content_type(self) -> str:
        return _header(self.response_headers or [], "content-type")


def _header(items: list[tuple[str, str]], name: str) -> str:
    return next((v for k, v in items if k.lower() == name), "")
