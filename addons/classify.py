"""What kind of run a call starts: chat turn, compaction, title generation or quick generation."""

from __future__ import annotations

from dataclasses import dataclass

from addons.normalized import Request

KINDS = ("chat_turn", "compaction", "title_generation", "quickgen", "unknown")


@dataclass(frozen=True, slots=True)
class Classification:
    kind: str
    source: str  # header | client_metadata | profile | heuristic | default
    reason: str


def classify(request: Request | None, hints: dict[str, str]) -> Classification:
    kind = hints.get("x-chatdebug-kind", "").strip().lower()
    if kind in KINDS:
        return Classification(kind, "header", f"X-Chatdebug-Kind: {kind}")
    if request is None:
        return Classification("unknown", "default", "the request could not be parsed")
    return Classification("chat_turn", "default", "a conversational call")
