"""What applications say about themselves in headers, whatever API they call.

Session ids (Claude Code's `x-claude-code-session-id`, opencode's `x-session-id`, Codex's
`session_id` and turn metadata, Coder's `X-Coder-Chat-Id`, Helicone's `Helicone-Session-Id`),
a kind the client states (Codex `x-codex-turn-metadata`: `request_kind`, `thread_source`) and
the client application itself (its user agent). The parsers add what bodies say; together
they make the request's `signals`.
"""

from __future__ import annotations

from typing import Any

import orjson

from addons.normalized import SessionId, Signals

SESSION_HEADERS = (
    "x-chatdebug-session",
    "x-claude-code-session-id",
    "x-session-id",
    "session_id",
    "session-id",
    "x-coder-chat-id",
    "helicone-session-id",
    "x-conversation-id",
    "conversation_id",
    "conversation-id",
)
TURN_METADATA = "x-codex-turn-metadata"
MAX_ID = 200  # a session id longer than this is not an id anybody types or reads


def header_signals(headers: dict[str, str], signals: Signals) -> Signals:
    """`signals` (from the body) completed with what the headers say; headers come first."""
    stated = [
        SessionId(source=name, value=headers[name].strip()[:MAX_ID])
        for name in SESSION_HEADERS
        if headers.get(name, "").strip()
    ]
    meta = _json_object(headers.get(TURN_METADATA))
    if meta is not None:
        for key in ("session_id", "thread_id", "conversation_id"):
            if isinstance(meta.get(key), str) and meta[key]:
                stated.append(SessionId(source=f"{TURN_METADATA}.{key}", value=meta[key][:MAX_ID]))
        kind, purpose = meta.get("request_kind"), meta.get("thread_source")
        if isinstance(kind, str) and kind:
            signals.client_kind = kind
        if isinstance(purpose, str) and purpose:
            signals.client_purpose = purpose
    seen = {s.value for s in stated}
    signals.session_ids = stated + [s for s in signals.session_ids if s.value not in seen]
    signals.client = signals.client or client_name(headers)
    count = headers.get("x-stainless-retry-count", "").strip()
    if count.isdigit() and 0 < int(count) < 1000:
        signals.retry_count = int(count)
    return signals


def client_name(headers: dict[str, str]) -> str | None:
    """The application's product token: `claude-cli/2.1.3`, `codex_cli_rs/0.17.0`, `GeminiCLI/0.61.0`."""
    agent = headers.get("user-agent", "").strip()
    if not agent:
        return headers.get("originator") or None
    return agent.split(" ", 1)[0][:80]


def _json_object(raw: Any) -> dict[str, Any] | None:
    if not isinstance(raw, str) or not raw.strip():
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def client_metadata_signals(value: Any, signals: Signals) -> None:
    """A `client_metadata` body object (Codex) stating the request's kind."""
    meta = value if isinstance(value, dict) else _json_object(value)
    if meta is None:
        return
    if isinstance(meta.get("request_kind"), str) and not signals.client_kind:
        signals.client_kind = meta["request_kind"]
    if isinstance(meta.get("thread_source"), str) and not signals.client_purpose:
        signals.client_purpose = meta["thread_source"]
