"""What the user said, without what the application wrapped around it.

Agents send their context as tagged blocks beside the user's words: Claude Code's
`<system-reminder>`, Codex's `<environment_context>` and `<user_instructions>`, Gemini CLI's
`<session_context>`, IDE selections, slash-command envelopes. A run's `prompt` is the user's own
words; `first_message` is the conversation's first of them.
"""

from __future__ import annotations

import re

from addons.normalized import Message, Request, TextPart

PROMPT_LIMIT = 500
FIRST_MESSAGE_LIMIT = 200

# A whole element `<tag ...>...</tag>`; tags named like an application's (a `-` or `_` in the
# name, or one of the well-known ones) are boilerplate wherever they stand.
_ELEMENT = re.compile(r"<([A-Za-z][\w:.-]*)(?:\s[^<>]*)?>.*?</\1\s*>", re.S)
_KNOWN = {"context", "instructions", "env", "environment", "reminder", "system", "memory", "memories"}
_PREAMBLE = re.compile(r"^\s*#\s*AGENTS\.md instructions\b.*", re.S | re.I)  # Codex's repo instructions


def _boilerplate(tag: str) -> bool:
    lower = tag.lower()
    return "-" in lower or "_" in lower or lower in _KNOWN


def user_words(text: str) -> str:
    """`text` without application boilerplate; whitespace folded."""
    stripped = _ELEMENT.sub(lambda m: " " if _boilerplate(m.group(1)) else m.group(0), text)
    stripped = _PREAMBLE.sub("", stripped)
    return " ".join(stripped.split())


def message_words(message: Message, strip: bool = True) -> str:
    texts = [
        user_words(p.text) if strip else " ".join(p.text.split())
        for p in message.parts
        if isinstance(p, TextPart)
    ]
    return " ".join(t for t in texts if t)


def prompt_of(request: Request | None, limit: int = PROMPT_LIMIT, *, strip: bool = True) -> str | None:
    """The newest user words of a request: what started the run."""
    if request is None:
        return None
    for message in reversed(request.messages):
        if message.role == "user" and (words := message_words(message, strip)):
            return words[:limit]
    return None


def first_words(
    request: Request | None, limit: int = FIRST_MESSAGE_LIMIT, *, strip: bool = True
) -> str | None:
    """The conversation's first user words (boilerplate-only messages are skipped)."""
    if request is None:
        return None
    for message in request.messages:
        if message.role == "user" and (words := message_words(message, strip)):
            return words[:limit]
    return None
