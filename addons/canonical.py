"""Canonical forms of messages, and chained prefix hashes over them.

Two requests that differ only cosmetically hash the same: Anthropic string content vs text
blocks (already one text part after parsing), `cache_control` markers (never parsed), tool-call
arguments re-serialised (compared as sorted JSON), whitespace at the ends of texts, and
reasoning blocks that clients drop or keep when they send history back.

`chain(messages)[i]` identifies the first i+1 messages, so finding the longest known prefix of
a request costs one dictionary lookup per message.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from addons.normalized import MediaPart, Message, TextPart, ToolCallPart, ToolResultPart
from addons.providers.base import ParseError, loads


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = loads(value)  # cut where too deep to write back
        except ParseError:
            return value.strip()
    return value


def _result(value: Any) -> Any:
    """Tool results as text where they are text, whatever blocks carried them."""
    if isinstance(value, list):
        texts = [v.get("text") for v in value if isinstance(v, dict) and v.get("type") == "text"]
        if len(texts) == len(value):
            return "\n".join(t.strip() for t in texts if t)
    if isinstance(value, str):
        return value.strip()
    return value


def canonical(message: Message) -> bytes:
    texts: list[str] = []
    items: list[Any] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            if text := part.text.strip():
                texts.append(text)
        elif isinstance(part, ToolCallPart):
            items.append(("call", part.id, part.name, _json(part.arguments)))
        elif isinstance(part, ToolResultPart):
            items.append(("result", part.id, _result(part.result)))
        elif isinstance(part, MediaPart):
            items.append(("media", part.media_type, part.size))
    role = "user" if message.role == "tool" else message.role  # tool turns travel as user turns
    return orjson.dumps([role, "\n".join(texts), items], option=orjson.OPT_SORT_KEYS)


def digest(*pieces: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    for piece in pieces:
        h.update(len(piece).to_bytes(4, "big"))
        h.update(piece)
    return h.hexdigest()


def chain(messages: list[Message], seed: str = "") -> list[str]:
    """Hashes of every prefix: result[i] covers messages[: i + 1]."""
    out: list[str] = []
    previous = seed.encode()
    for message in messages:
        current = digest(previous, canonical(message))
        out.append(current)
        previous = current.encode()
    return out
