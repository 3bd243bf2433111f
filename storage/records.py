"""Rows as the recorder hands them to storage: full snapshots, the newest one wins.

Plain dataclasses (no validation on the hot path); JSON columns hold orjson-ready values.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, ClassVar

import orjson


def new_id(prefix: str) -> str:
    """A time-ordered opaque id: 48 bits of milliseconds, then 80 random bits, in hex."""
    return f"{prefix}{time.time_ns() // 1_000_000:012x}{int.from_bytes(os.urandom(10)):020x}"


def timestamp(epoch: float) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. 2026-11-26T13:50:52.123Z (sorts as text): what
    `datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")` says (microseconds
    rounded half to even, then cut to milliseconds), in a third of its time. Every call stamps
    its rows several times, mostly within one second: the second's text is kept."""
    global _second
    whole = math.floor(epoch)
    micros = round((epoch - whole) * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    second = _second  # one read: another thread may swap it meanwhile
    if second[0] != whole:
        second = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{second[1]}.{micros // 1000:03d}Z"


_second: tuple[int, str] = (-1, "")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ns(stamp: str | None) -> int | None:
    """A `timestamp` (RFC 3339, as the store writes it) to Unix nanoseconds."""
    if not stamp:
        return None
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1_000  # exact: no float rounding


def valid_text(value: Any) -> Any:
    """Strings as valid UTF-8, at any depth: mitmproxy keeps undecodable header bytes as lone
    surrogates, which neither SQLite nor JSON take."""
    if isinstance(value, str):
        try:
            raw = value.encode("utf-8", "surrogateescape")  # the original bytes back
        except UnicodeEncodeError:
            raw = value.encode("utf-8", "replace")
        return raw.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {valid_text(k): valid_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [valid_text(v) for v in value]
    return value


def dumps(value: Any) -> bytes:
    """orjson, with lone surrogates replaced rather than refused."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return orjson.dumps(valid_text(value))


def now() -> str:
    return timestamp(time.time())


USAGE_FIELDS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


@dataclass(slots=True)
class Row:
    table: ClassVar[str]
    json_columns: ClassVar[tuple[str, ...]] = ()

    id: str


@dataclass(slots=True)
class RunRow(Row):
    table: ClassVar[str] = "runs"
    json_columns: ClassVar[tuple[str, ...]] = ("error", "cost")

    conversation_id: str | None = None
    kind: str = "unknown"
    classification_source: str = "default"
    classification_reason: str = ""
    status: str = "in_progress"
    provider: str | None = None
    api: str | None = None
    model: str | None = None
    endpoint: str | None = None
    first_message: str | None = None
    prompt: str | None = None
    conversation_source: str | None = None
    started_at: str = ""
    updated_at: str = ""
    finished_at: str | None = None
    step_count: int = 0
    attempt_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    error_class: str | None = None
    error: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None
    cost_total: float | None = None  # the cost's total, a plain column the sums read


@dataclass(slots=True)
class StepRow(Row):
    table: ClassVar[str] = "steps"
    json_columns: ClassVar[tuple[str, ...]] = ("request", "response", "usage", "error", "cost")

    run_id: str = ""
    number: int = 1
    status: str = "in_progress"
    started_at: str = ""
    finished_at: str | None = None
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    usage: dict[str, int] | None = None
    error: dict[str, Any] | None = None
    cost: dict[str, Any] | None = None
    request_hash: str | None = None  # of its canonical messages: what a later request extends
    response_id: str | None = None  # the provider's id of its response (`previous_response_id`)


@dataclass(slots=True)
class AttemptRow(Row):
    table: ClassVar[str] = "attempts"
    json_columns: ClassVar[tuple[str, ...]] = (
        "error",
        "request_headers",
        "response_headers",
        "response",
        "cost",
    )

    step_id: str = ""
    run_id: str = ""
    number: int = 1
    status: str = "in_progress"
    method: str = "POST"
    url: str = ""
    http_status: int | None = None
    error_class: str | None = None
    error: dict[str, Any] | None = None
    started_at: str = ""
    finished_at: str | None = None
    ttfb_ms: float | None = None
    duration_ms: float | None = None
    streamed: bool = False
    request_bytes: int = 0
    response_bytes: int = 0
    request_headers: dict[str, str] = field(default_factory=dict)
    response_headers: dict[str, str] | None = None
    retry_signal: str | None = None
    response: dict[str, Any] | None = None  # this attempt's own normalized response
    cost: dict[str, Any] | None = None


@dataclass(slots=True)
class BodyRow(Row):
    """The raw (redacted, capped) bodies of an attempt, kept apart so lists never read them."""

    table: ClassVar[str] = "attempt_bodies"

    request_body: str | None = None
    response_body: str | None = None
    request_truncated: bool = False
    response_truncated: bool = False


@cache
def names(kind: type[Row]) -> tuple[str, ...]:
    """A row type's columns, in order."""
    return tuple(f.name for f in fields(kind))


WRITE_ORDER = {"runs": 0, "steps": 1, "attempts": 2, "attempt_bodies": 3}
