"""Plain functions that turn API shapes into what a page shows: durations, bars, diffs, curl.

Shared by the HTML viewer and the terminal commands; nothing here knows of aiohttp or Jinja.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

USAGE_PARTS = (
    ("input", "input_tokens"),
    ("cache read", "cache_read_tokens"),
    ("cache write", "cache_write_tokens"),
    ("output", "output_tokens"),
    ("reasoning", "reasoning_tokens"),
)


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def short_time(value: str | None) -> str:
    """`2026-12-01T22:04:18.123Z` -> `12-01 22:04:18`: enough to tell runs apart at a glance."""
    if not value:
        return ""
    return f"{value[5:10]} {value[11:19]}"


def duration(ms: float | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms / 60_000:.1f} min"


def span_ms(started: str | None, finished: str | None) -> float | None:
    start, end = parse_time(started), parse_time(finished)
    return None if start is None or end is None else max(0.0, (end - start) * 1000)


def tokens(n: int | None) -> str:
    if not n:
        return "0"
    if n < 10_000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.2f}M"


def money(value: float | None) -> str:
    """USD; unknown prices stay unknown (a dash), never a guessed zero."""
    if value is None:
        return "-"
    if value == 0:
        return "$0"
    if value < 0.0001:
        return "<$0.0001"
    return f"${value:.4f}" if value < 1 else f"${value:.2f}"


def json_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode()


def pretty_body(body: str | None) -> str:
    """A JSON body indented; anything else (SSE, text) as it came."""
    if not body:
        return ""
    try:
        return json_text(orjson.loads(body))
    except orjson.JSONDecodeError:
        return body


# ---- the timeline -----------------------------------------------------------------------------


@dataclass(slots=True)
class Bar:
    """Offsets and widths in percent of the run's span, for CSS."""

    left: float
    width: float
    ttfb: float | None = None  # where the first byte arrived, in percent of the run


def timeline(run: dict[str, Any]) -> dict[str, Bar]:
    """A bar per step and attempt id, placed on the run's own time axis."""
    start = parse_time(run["started_at"]) or 0.0
    ends = [parse_time(run.get("finished_at") or run["updated_at"]) or start]
    for step in run.get("steps", []):
        for attempt in step["attempts"]:
            ends.append(parse_time(attempt.get("finished_at") or attempt["started_at"]) or start)
    total = max(max(ends) - start, 1e-3)

    def bar(started: str, finished: str | None, ttfb_ms: float | None = None) -> Bar:
        s = (parse_time(started) or start) - start
        e = (parse_time(finished) if finished else max(ends)) or start
        left = 100 * s / total
        width = max(0.4, 100 * (e - start - s) / total)
        first = None if ttfb_ms is None else min(100.0, left + 100 * ttfb_ms / 1000 / total)
        return Bar(round(left, 2), round(min(width, 100 - left), 2), first and round(first, 2))

    bars: dict[str, Bar] = {}
    for step in run.get("steps", []):
        bars[step["id"]] = bar(step["started_at"], step.get("finished_at"))
        for attempt in step["attempts"]:
            ttfb = attempt.get("ttfb_ms")
            bars[attempt["id"]] = bar(attempt["started_at"], attempt.get("finished_at"), ttfb)
    return bars


# ---- what a step added --------------------------------------------------------------------------


# Messages a page shows of one request at most, the newest: a history of 90,000 is 9 MB of HTML.
ADDED_MESSAGES = 100  # of what a step added, on the run's page (its transcript has more)
TRANSCRIPT_MESSAGES = 2_000  # of a step's transcript, unless all are asked for


@dataclass(slots=True)
class StepDiff:
    """The request of a step against the previous step's: what the application sent anew."""

    kept: int  # messages carried over unchanged
    added: list[dict[str, Any]]
    rewritten: bool  # the history itself changed (a compaction, an edit), not only grew
    system_changed: bool
    tools_changed: bool


def step_diff(previous: dict[str, Any] | None, current: dict[str, Any] | None) -> StepDiff:
    now = (current or {}).get("messages") or []
    if previous is None:
        return StepDiff(0, list(now), False, False, False)
    before = previous.get("messages") or []
    kept = 0
    for old, new in zip(before, now, strict=False):
        if old != new:
            break
        kept += 1
    return StepDiff(
        kept=kept,
        added=list(now[kept:]),
        rewritten=kept < len(before),
        system_changed=previous.get("system") != (current or {}).get("system"),
        tools_changed=previous.get("tools") != (current or {}).get("tools"),
    )


# ---- copy as curl -------------------------------------------------------------------------------

_HOP = {"host", "content-length", "connection", "transfer-encoding", "accept-encoding", "proxy-connection"}


def curl(attempt: dict[str, Any]) -> str:
    """The attempt as a curl command; redacted headers stay `[REDACTED]` for the reader to fill in."""
    q = shlex.quote
    lines = [f"curl -sS -X {q(attempt['method'])} {q(attempt['url'])}"]
    for name, value in (attempt.get("request_headers") or {}).items():
        if name.lower() not in _HOP:
            lines.append(f"-H {q(f'{name}: {value}')}")
    if body := attempt.get("request_body"):
        lines.append(f"--data-raw {q(body)}")
    return " \\\n  ".join(lines)
