"""Which run and step a call belongs to, from the traffic alone.

- A request whose messages are a known step's request plus assistant output and tool results
  (no new user text) is the next step of that step's run. Prefixes are found through chained
  hashes of canonical messages (`canonical.py`): one lookup per message.
- OpenAI Responses chains by `previous_response_id`; any API also continues a run when its
  trailing tool results answer tool calls a step of that run made.
- The same canonical request as an in-flight or failed attempt (or one the client marks with
  `x-stainless-retry-count`) is the next attempt of that step.
- Anything else starts a run, in the conversation the request continues where one is known.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from addons.canonical import chain, digest
from addons.classify import Classification, fold
from addons.exchange import Exchange
from addons.normalized import Message, Request, Response, TextPart, ToolCallPart, ToolResultPart
from addons.outcome import Outcome
from addons.tracker import FINAL_RUN, Placement, RunState, StepState

SESSION_KEYS = ("conversation_id", "session_id", "thread_id", "chat_id")
SESSION_HEADERS = ("conversation_id", "session_id", "x-session-id", "x-conversation-id")
MIN_LINK_TEXT = 8  # shorter first messages ("hi") are too common to link a title run by


@dataclass(slots=True)
class StepRef:
    """A small pointer to a step: the live state stays with the tracker, which lets it go."""

    run_id: str
    step_id: str
    conversation_id: str | None
    seen: float


class Index[V]:
    """A bounded map whose entries also expire."""

    def __init__(self, max_entries: int, ttl: float) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._items: OrderedDict[str, tuple[float, V]] = OrderedDict()

    def get(self, key: str) -> V | None:
        item = self._items.get(key)
        return item[1] if item is not None else None

    def put(self, key: str, value: V, now: float) -> None:
        self._items[key] = (now, value)
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def expire(self, now: float) -> None:
        while self._items:
            key, (stamp, _) = next(iter(self._items.items()))
            if now - stamp < self.ttl:
                break
            del self._items[key]

    def newest(self) -> list[tuple[str, V]]:
        return [(k, v) for k, (_, v) in reversed(self._items.items())]

    def __len__(self) -> int:
        return len(self._items)


@dataclass(slots=True)
class _Flow:
    request_hash: str
    placement: Placement


class Grouper:
    def __init__(
        self,
        live: Callable[[str], RunState | None],
        *,
        retry_window: float = 30.0,
        ttl: float = 3600.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.live = live  # the tracker's open (or recently settled) runs, by id
        self.retry_window = retry_window
        self.clock = clock
        self.requests: Index[StepRef] = Index(max_entries, ttl)  # full request hash -> step
        self.responses: Index[StepRef] = Index(max_entries, ttl)  # provider response id -> step
        self.calls: Index[StepRef] = Index(max_entries, ttl)  # tool call id -> step that made it
        self.aliases: Index[str] = Index(max_entries, ttl)  # derived conversation id -> stated id
        self.firsts: Index[str] = Index(2_000, ttl)  # conversation id -> its first user text, folded
        self._flows: dict[str, _Flow] = {}

    # ---- placing a new attempt -------------------------------------------------------------

    def place(
        self, ex: Exchange, request: Request | None, body: Any, classification: Classification
    ) -> tuple[Placement, str | None]:
        stated = ex.hints.get("x-chatdebug-conversation") or session_id(body, ex.call.headers)
        if request is None:
            return Placement(), stated
        hashes = chain(request.messages, seed=digest(request.api.encode(), (request.system or "").encode()))
        full = hashes[-1] if hashes else digest(b"empty", request.api.encode())
        placement, continues = self._find(ex, request, body, hashes, classification)
        self._flows[ex.flow_id] = _Flow(full, placement)
        if placement.run is not None:
            return placement, placement.run.row.conversation_id
        derived = derived_conversation(request.messages)
        conversation = (
            stated
            or continues
            or (self.aliases.get(derived) if derived else None)
            or self._linked(request, classification)
            or derived
        )
        now = self.clock()
        if stated and derived:
            self.aliases.put(derived, stated, now)
        if conversation and self.firsts.get(conversation) is None and (first := first_user_text(request)):
            self.firsts.put(conversation, first, now)
        return placement, conversation

    def _find(
        self,
        ex: Exchange,
        request: Request,
        body: Any,
        hashes: list[str],
        classification: Classification,
    ) -> tuple[Placement, str | None]:
        """A retry of a step, the next step of a run, or a new run (and the conversation it continues)."""
        messages = request.messages
        if hashes and (ref := self.requests.get(hashes[-1])):
            run, step = self._resolve(ref)
            signal = self._retry_signal(run, step, ref, ex.call.headers, classification)
            if signal is not None:
                return Placement(run, step, signal), None
        previous = body.get("previous_response_id") if isinstance(body, dict) else None
        if isinstance(previous, str) and (ref := self.responses.get(previous)):
            return self._continue(ref, messages), ref.conversation_id
        for i in range(len(hashes) - 2, -1, -1):
            if ref := self.requests.get(hashes[i]):
                return self._continue(ref, messages[i + 1 :]), ref.conversation_id
        if ref := self._answered_calls(messages):
            return self._continue(ref, trailing_turn(messages)), ref.conversation_id
        return Placement(), None

    def _resolve(self, ref: StepRef) -> tuple[RunState | None, StepState | None]:
        run = self.live(ref.run_id)
        if run is None:
            return None, None
        return run, next((s for s in reversed(run.steps) if s.row.id == ref.step_id), None)

    def _retry_signal(
        self,
        run: RunState | None,
        step: StepState | None,
        ref: StepRef,
        headers: dict[str, str],
        classification: Classification,
    ) -> str | None:
        if run is None or step is None or step is not run.steps[-1] or not step.attempts:
            return None
        if (
            classification.source in ("header", "client_metadata", "profile")
            and classification.kind != run.row.kind
        ):
            return None  # the same messages asked for another purpose (a title of the same chat)
        count = headers.get("x-stainless-retry-count", "0")
        header = f"x-stainless-retry-count={count}" if count.isdigit() and int(count) >= 1 else None
        last = step.attempts[-1]
        if last.status == "in_progress":
            return header or "identical request while the previous attempt was in flight"
        if step.pending_failure is not None:
            return header or f"identical request after a {last.error_class or 'failed'} attempt"
        if header and self.clock() - ref.seen <= self.retry_window:
            return header
        return None

    def _continue(self, ref: StepRef, rest: list[Message]) -> Placement:
        """The next step of the run, unless the new messages carry a new user turn (or it ended)."""
        run = self.live(ref.run_id)
        if run is None or run.row.status in FINAL_RUN or any(has_user_text(m) for m in rest):
            return Placement()
        return Placement(run=run)

    def _answered_calls(self, messages: list[Message]) -> StepRef | None:
        for message in reversed(messages):
            ids = [p.id for p in message.parts if isinstance(p, ToolResultPart) and p.id]
            if not ids:
                return None
            for call_id in ids:
                if ref := self.calls.get(call_id):
                    return ref
        return None

    def _linked(self, request: Request, classification: Classification) -> str | None:
        """A title or compaction run names a conversation whose first message it quotes."""
        if classification.kind not in ("title_generation", "compaction"):
            return None
        text = fold(" ".join(t for m in request.messages for t in _texts(m)))
        for conversation, first in self.firsts.newest():
            if len(first) >= MIN_LINK_TEXT and first in text:
                return conversation
        return None

    # ---- learning from attempts ---------------------------------------------------------------

    def started(self, ex: Exchange, run: RunState, step: StepState) -> None:
        flow = self._flows.get(ex.flow_id)
        if flow is not None:
            now = self.clock()
            self.requests.put(
                flow.request_hash, StepRef(run.row.id, step.row.id, run.row.conversation_id, now), now
            )

    def finished(self, ex: Exchange, response: Response | None, outcome: Outcome) -> None:
        flow = self._flows.pop(ex.flow_id, None)
        if flow is None:
            return
        ref = self.requests.get(flow.request_hash)
        if ref is None:
            return
        now = self.clock()
        ref.seen = now
        if response is not None and outcome.status == "completed":
            if response.id:
                self.responses.put(response.id, ref, now)
            for part in response.content:
                if isinstance(part, ToolCallPart) and part.id:
                    self.calls.put(part.id, ref, now)

    def expire(self) -> None:
        now = self.clock()
        for index in (self.requests, self.responses, self.calls, self.aliases, self.firsts):
            index.expire(now)


# ---- plain functions ------------------------------------------------------------------------------


def _texts(message: Message) -> list[str]:
    return [p.text for p in message.parts if isinstance(p, TextPart) and p.text.strip()]


def has_user_text(message: Message) -> bool:
    return message.role == "user" and bool(_texts(message))


def trailing_turn(messages: list[Message]) -> list[Message]:
    """The messages after the last assistant message."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "assistant":
            return messages[i + 1 :]
    return messages


def first_user_text(request: Request) -> str | None:
    for message in request.messages:
        if has_user_text(message):
            return fold(" ".join(_texts(message)))
    return None


def derived_conversation(messages: list[Message]) -> str | None:
    """A stable id from the conversation's opening: everything up to its first user message.

    Deterministic, so a restarted proxy and a title or compaction request that quotes the same
    opening arrive at the same id.
    """
    for i, message in enumerate(messages):
        if has_user_text(message):
            opening = [m for m in messages[: i + 1] if m.role != "system"]
            return "conv_" + chain(opening)[-1][:20]
    return None


def session_id(body: Any, headers: dict[str, str]) -> str | None:
    """A conversation id the client itself sent, in the places SDKs and CLIs put one."""
    for name in SESSION_HEADERS:
        if headers.get(name):
            return headers[name]
    codex = headers.get("x-codex-turn-metadata")
    if codex:
        try:
            meta = orjson.loads(codex)
        except orjson.JSONDecodeError:
            meta = None
        if isinstance(meta, dict):
            for key in SESSION_KEYS:
                if meta.get(key):
                    return str(meta[key])
    if not isinstance(body, dict):
        return None
    metadata = body.get("metadata")
    if isinstance(metadata, dict):
        for key in SESSION_KEYS:
            if metadata.get(key):
                return str(metadata[key])
    if isinstance(body.get("prompt_cache_key"), str):
        return body["prompt_cache_key"]
    if isinstance(metadata, dict) and metadata.get("user_id"):
        return str(metadata["user_id"])
    return body["user"] if isinstance(body.get("user"), str) and body["user"] else None
