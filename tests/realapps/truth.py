"""The truth about each captured call, decided from what the app was asked to do.

Rules (the same for every app; what differs is how each app's side calls are recognised,
in `kind_of`, from reading the captures):

- kind: `compaction` for the call that produces the summary replacing the history (`/compact`,
  `/compress`, automatic compaction); `title_generation` for a call whose answer names the
  session (a title, or a session summary shown in a resume list as its name); `quickgen` for
  any other call whose answer the app consumes itself (routers choosing a model, classifiers,
  next-speaker checks); everything else, the calls that answer the user, `chat_turn`.
- run: a chat turn is one run from the user's prompt to the answer, through every tool round
  trip; every side call is a run of its own. A retry stays in the run and step it retries.
- step: the round trip's number within its run, from 1; a call carrying the results of the tool
  calls the previous step asked for is the next step.
- attempt: 1, plus one for each earlier failed HTTP try of the same step (the fake's 529/429).
- conversation: the app session the call was made in (the scenario says which action ran in
  which session); a side call belongs to the session it serves, so a title or compaction of
  session A is in A's conversation.
"""

from __future__ import annotations

import json
from typing import Any

Call = dict[str, Any]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# ---- recognising side calls, per app ------------------------------------------------------


def _claude_kind(call: Call) -> str:
    body = call["body"] or {}
    system = _text(body.get("system", ""))
    messages = body.get("messages") or []
    last = _text(messages[-1].get("content")) if messages else ""
    if "create a detailed summary of the conversation" in last:
        return "compaction"
    if "title" in system.lower() and not body.get("tools"):
        return "title_generation"
    return "chat_turn"


def _codex_kind(call: Call) -> str:
    if call["path"].endswith("/responses/compact"):
        return "compaction"
    meta = _turn_metadata(call)
    if meta.get("request_kind") == "compaction":
        return "compaction"
    if meta.get("thread_source") == "thread_title":
        return "title_generation"
    if meta.get("request_kind") not in (None, "turn"):
        return "quickgen"
    return "chat_turn"


def _turn_metadata(call: Call) -> dict[str, Any]:
    raw = next((v for k, v in call["headers"].items() if k.lower() == "x-codex-turn-metadata"), "{}")
    try:
        return json.loads(raw)
    except ValueError:
        return {}


def _opencode_kind(call: Call) -> str:
    body = call["body"] or {}
    messages = body.get("messages") or []
    system = " ".join(_text(m.get("content")) for m in messages if m.get("role") == "system")
    if system.startswith("You are a title generator"):
        return "title_generation"
    if "summar" in system.lower()[:400] and not body.get("tools"):
        return "compaction"
    return "chat_turn"


def _gemini_kind(call: Call) -> str:
    body = call["body"] or {}
    config = body.get("generationConfig") or {}
    system = _text(body.get("systemInstruction", ""))
    contents = body.get("contents") or []
    last = _text(contents[-1]) if contents else ""
    if "state_snapshot" in system or "state_snapshot" in last:
        return "compaction"
    if config.get("responseJsonSchema") or config.get("responseSchema"):
        return "quickgen"  # the model router, the next-speaker check: JSON for the app itself
    return "chat_turn"


def _codex_turn(call: Call) -> str | None:
    """Codex names the user turn a request serves; a turn resumed after a mid-turn automatic
    compaction keeps its id although its history no longer ends in a tool result."""
    return _turn_metadata(call).get("turn_id")


TURN_KEYS = {"codex": _codex_turn}


def _opencode_resumes(call: Call) -> bool:
    """After an automatic compaction opencode goes on with the interrupted turn by itself,
    with a user message of its own: the same turn, its next round trip."""
    messages = (call["body"] or {}).get("messages") or []
    last = messages[-1] if messages else {}
    return last.get("role") == "user" and _text(last.get("content")).startswith(
        "Continue if you have next steps"
    )


RESUMES = {"opencode": _opencode_resumes}


def _gemini_second_pass(call: Call) -> bool:
    """Gemini's compression is two round trips: the snapshot, then the model checking its own
    snapshot against the history; both make the one compaction."""
    contents = (call["body"] or {}).get("contents") or []
    return bool(contents) and _text(contents[-1]).find("Critically evaluate the <state_snapshot>") >= 0


SECOND_PASS = {"gemini": _gemini_second_pass}

KIND_RULES = {
    "claude": _claude_kind,
    "codex": _codex_kind,
    "opencode": _opencode_kind,
    "gemini": _gemini_kind,
}


# ---- the wire facts the grouping rules need ------------------------------------------------


def tool_results_pending(call: Call) -> bool:
    """Does this request carry tool results after the newest user prompt (a follow-up step)?"""
    body = call["body"] or {}
    path = call["path"]
    if path.endswith("/v1/messages"):
        messages = body.get("messages") or []
        if not messages or messages[-1].get("role") != "user":
            return False
        content = messages[-1].get("content")
        return isinstance(content, list) and any(b.get("type") == "tool_result" for b in content)
    if path.endswith("/responses"):
        items = [i for i in body.get("input") or [] if isinstance(i, dict)]
        return bool(items) and items[-1].get("type", "").endswith("call_output")
    if path.endswith("/chat/completions"):
        messages = body.get("messages") or []
        return bool(messages) and messages[-1].get("role") == "tool"
    if "generateContent" in path or "streamGenerateContent" in path:
        contents = body.get("contents") or []
        return bool(contents) and any("functionResponse" in p for p in contents[-1].get("parts") or [])
    return False


def is_model_call(call: Call) -> bool:
    return call["method"] == "POST"


def _none(call: Call) -> None:
    return None


def _never(call: Call) -> bool:
    return False


def _continues(app: str, call: Call, previous: dict[str, Any] | None) -> bool:
    """Is this chat call the next round trip of the session's turn in progress?"""
    if previous is None:
        return False
    turn = TURN_KEYS.get(app, _none)(call)
    if turn is not None and previous.get("_turn") is not None:
        return turn == previous["_turn"]
    return tool_results_pending(call) or RESUMES.get(app, _never)(call)


def label(app: str, scenarios: list[list[Call]]) -> list[list[dict[str, Any]]]:
    """Labels for every call of every scenario of one app, in the order they were captured."""
    kind_of = KIND_RULES[app]
    out: list[list[dict[str, Any]]] = []
    runs = 0
    for calls in scenarios:
        open_turn: dict[str, dict[str, Any]] = {}  # session -> the chat turn in progress
        last_failed: dict[tuple[str, str], dict[str, Any]] = {}  # (session, kind) -> failed call's label
        open_side: dict[tuple[str, str], dict[str, Any]] = {}  # (session, kind) -> latest side run
        labels: list[dict[str, Any]] = []
        for call in calls:
            session = f"{app}-{call['session']}"
            if not is_model_call(call):
                labels.append({"kind": None, "note": "not a model call"})
                continue
            kind = kind_of(call)
            failed = last_failed.pop((session, kind), None)
            if failed is not None:
                entry = {**failed, "attempt": failed["attempt"] + 1}
            elif kind == "chat_turn" and _continues(app, call, open_turn.get(session)):
                previous = open_turn[session]
                entry = {**previous, "step": previous["step"] + 1, "attempt": 1}
            elif kind != "chat_turn" and (session, kind) in open_side and SECOND_PASS.get(app, _never)(call):
                previous = open_side[(session, kind)]
                entry = {**previous, "step": previous["step"] + 1, "attempt": 1}
            else:
                runs += 1
                entry = {"kind": kind, "run": f"{app}-run-{runs}", "step": 1, "attempt": 1}
            entry["conversation"] = session
            if kind == "chat_turn":
                open_turn[session] = {**entry, "_turn": TURN_KEYS.get(app, _none)(call)}
            else:
                open_side[(session, kind)] = entry
            if call["response"]["status"] >= 400:
                last_failed[(session, kind)] = entry
            labels.append({k: v for k, v in entry.items() if not k.startswith("_")})
        out.append(labels)
    return out
