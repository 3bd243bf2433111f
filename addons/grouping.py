"""What the traffic tells about where a call belongs: an index the tracker consults.

The index remembers small pointers, never live state:
- requests by chained hashes of their canonical messages (`canonical.py`), so the longest known
  prefix of a new request costs one lookup per message; system messages (and Claude Code's
  mid-conversation ones, which move) do not count, the system prompt seeds the chain;
- provider response ids (OpenAI Responses' `previous_response_id`) and tool-call ids (a request
  whose tool results answer a step's calls continues that step's run);
- for conversations: recent prompts (a side call that quotes one belongs to its conversation),
  compaction summaries (a request that starts from one continues that conversation) and side
  calls still waiting for the turn they quote (a title sent before its turn).

Deciding what follows (retry, next step, new run) is the tracker's; the index only answers.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from addons.canonical import chain, digest
from addons.classify import fold
from addons.normalized import Message, Request, Response, TextPart, ToolCallPart, ToolResultPart

MIN_LINK_TEXT = 8  # shorter prompts ("hi") are too common to link a side call by
SUMMARY_SLICE = 120  # characters of a summary that must reappear to continue its conversation
MIN_SUMMARY = 40  # shorter "summaries" are phrases any conversation may hold
MAX_SCANNED = 50_000  # characters of a side call searched for a quoted prompt


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

    def last_held(self, keys: list[str]) -> int:
        """The position of the last of `keys` the index holds, or -1. In C: an agent's history
        of thousands of messages has as many prefixes, nearly all unknown (90,000 looked up one
        by one held the loop for 0.1 s)."""
        held = list(map(self._items.__contains__, reversed(keys)))
        try:
            return len(keys) - 1 - held.index(True)
        except ValueError:
            return -1

    def pop(self, key: str) -> V | None:
        item = self._items.pop(key, None)
        return item[1] if item is not None else None

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


# a request's hash of every prefix of its conversation, and its own (also for no messages)
type Hashes = tuple[list[str], str]


def request_hashes(request: Request) -> Hashes:
    """What the index knows a request by: a function of the request alone (a large one's hashes
    are made off the loop with its parsing, `addons.offloop`)."""
    seed = digest(request.api.encode(), (request.system or "").encode())
    hashes = chain(_conversation(request), seed=seed)
    return hashes, hashes[-1] if hashes else digest(b"empty", seed.encode())


def _conversation(request: Request) -> list[Message]:
    return [m for m in request.messages if m.role != "system"]


@dataclass(slots=True)
class Lookup:
    """What the index knows of a request, strongest evidence first."""

    conversation: list[Message]  # the request's messages without system ones
    full_hash: str
    hashes: list[str]  # of every prefix of `conversation`
    same: StepRef | None = None  # an identical request
    previous: StepRef | None = None  # the step whose response `previous_response_id` names
    prefix: StepRef | None = None  # the longest known request this one extends
    rest: list[Message] | None = None  # what it adds to that request
    answers: StepRef | None = None  # the step whose tool calls its trailing results answer

    @property
    def continues(self) -> StepRef | None:
        return self.previous or self.prefix or self.answers


class Grouper:
    def __init__(
        self,
        *,
        ttl: float = 3600.0,
        max_entries: int = 100_000,
        orphan_ttl: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.requests: Index[StepRef] = Index(max_entries, ttl)  # request hash -> its step
        self.responses: Index[StepRef] = Index(max_entries, ttl)  # provider response id -> step
        self.calls: Index[StepRef] = Index(max_entries, ttl)  # tool call id -> step that made it
        self.replies: Index[StepRef] = Index(max_entries, ttl)  # a response's text, hashed -> its step
        self.prompts: Index[str] = Index(2_000, ttl)  # folded prompt -> conversation id
        self.summaries: Index[str] = Index(500, ttl)  # slice of a compaction summary -> conversation
        # side-call run id -> its folded text: a side call is sent just before or after its turn,
        # and the first turn it quotes within `orphan_ttl` claims it (sessions that begin alike
        # quote the same words: the nearest turn, not the oldest, is the one it serves)
        self.orphans: Index[str] = Index(500, orphan_ttl)
        self.conversations: Index[bool] = Index(max_entries, ttl)  # conversations that have runs

    # ---- questions -------------------------------------------------------------------------

    def lookup(self, request: Request, hashes: Hashes | None = None) -> Lookup:
        """`hashes`: the request's `request_hashes`, when they were made already."""
        conversation = _conversation(request)
        hashes, full_hash = hashes or request_hashes(request)
        found = Lookup(conversation, full_hash, hashes)
        if hashes:
            found.same = self.requests.get(hashes[-1])
        if previous := request.signals.previous_response_id:
            found.previous = self.responses.get(previous)
            found.rest = conversation if found.previous else None
        if (i := self.requests.last_held(hashes[:-1])) >= 0:  # the longest known request it extends
            found.prefix, found.rest = self.requests.get(hashes[i]), found.rest or conversation[i + 1 :]
        if found.continues is None and (ref := self._answered(conversation)):
            found.answers, found.rest = ref, trailing_turn(conversation)
        if found.continues is None:
            found.answers, found.rest = self._replied(conversation)
        return found

    def _replied(self, messages: list[Message]) -> tuple[StepRef | None, list[Message] | None]:
        """A history that carries a step's reply, though not that step's request (Gemini CLI's
        second compression pass drops the instruction the first one answered)."""
        seen = 0
        for i in range(len(messages) - 1, -1, -1):
            if messages[i].role != "assistant":
                continue
            if ref := self.replies.get(_reply_key(messages[i].parts)):
                return ref, messages[i + 1 :]
            seen += 1
            if seen == 2:
                break
        return None, None

    @staticmethod
    def unknown_history(found: Lookup, *, anywhere: bool = False) -> bool:
        """A request carrying a history this index does not know (after a restart, or one that
        left through another replica): the store may know it. `anywhere`: any request this index
        has not seen, since another replica may have sent it (a retry) or extended its history."""
        if found.same is not None or not found.conversation:
            return False
        return anywhere or (found.continues is None and len(found.conversation) >= 2)

    def learn_stored(self, found: list[tuple[str, StepRef]]) -> None:
        """Steps the store knows, by request hash or response id (`resp:` keys)."""
        for key, ref in found:
            index = self.responses if key.startswith("resp:") else self.requests
            index.put(key.removeprefix("resp:"), ref, ref.seen)

    def _answered(self, messages: list[Message]) -> StepRef | None:
        for message in reversed(messages):
            ids = [p.id for p in message.parts if isinstance(p, ToolResultPart) and p.id]
            if not ids:
                return None
            for call_id in ids:
                if ref := self.calls.get(call_id):
                    return ref
        return None

    def quoted_prompt(self, request: Request) -> tuple[str, str] | None:
        """A known prompt that a side call quotes (a title of that turn), and its conversation."""
        text = side_text(request)
        for prompt, conversation in self.prompts.newest():
            if prompt in text:
                return prompt, conversation
        return None

    def summary_continued(self, request: Request) -> str | None:
        """The conversation whose compaction summary this request starts from."""
        if not self.summaries:
            return None
        texts = [fold(t) for m in request.messages if m.role == "user" for t in texts_of(m)][:3]
        for piece, conversation in self.summaries.newest():
            if any(piece in t for t in texts):
                return conversation
        return None

    # ---- learning ----------------------------------------------------------------------------

    def learn_request(self, full_hash: str, ref: StepRef) -> None:
        self.requests.put(full_hash, ref, ref.seen)

    def learn_response(self, full_hash: str, response: Response, summary_of: str | None) -> None:
        """A completed response: its id and tool calls point back to the step; a compaction's
        summary (when `summary_of` names its conversation) is remembered for what continues it."""
        ref = self.requests.get(full_hash)
        now = self.clock()
        if ref is not None:
            ref.seen = now
            if response.id:
                self.responses.put(response.id, ref, now)
            text = sum(len(p.text.strip()) for p in response.content if isinstance(p, TextPart))
            if text >= MIN_SUMMARY:  # "Done." is what any conversation may hold
                self.replies.put(_reply_key(response.content), ref, now)
            for part in response.content:
                if isinstance(part, ToolCallPart) and part.id:
                    self.calls.put(part.id, ref, now)
        if summary_of:
            summary = fold(" ".join(p.text for p in response.content if isinstance(p, TextPart)))
            if len(summary) >= 2 * SUMMARY_SLICE:
                middle = len(summary) // 2
                for start in (0, middle, len(summary) - SUMMARY_SLICE):
                    self.summaries.put(summary[start : start + SUMMARY_SLICE], summary_of, now)
            elif len(summary) >= MIN_SUMMARY:  # short enough to look for whole
                self.summaries.put(summary, summary_of, now)

    def learn_prompts(self, prompts: list[str | None], conversation: str | None) -> list[str]:
        """A chat turn's prompt and its conversation's first message; returns the side calls
        waiting for one of them (they quote it)."""
        folded = {fold(p) for p in prompts if p}
        folded = {p for p in folded if len(p) >= MIN_LINK_TEXT}
        if not conversation or not folded:
            return []
        now = self.clock()
        for prompt in folded:
            self.prompts.put(prompt, conversation, now)
        waiting = [run_id for run_id, text in self.orphans.newest() if any(p in text for p in folded)]
        for run_id in waiting:
            self.orphans.pop(run_id)
        return waiting

    def learn_orphan(self, run_id: str, request: Request) -> None:
        """A side call placed by its own session id or by nothing: its turn may come later."""
        self.orphans.put(run_id, side_text(request), self.clock())

    def forget_run(self, run_id: str) -> None:
        self.orphans.pop(run_id)

    def expire(self) -> None:
        now = self.clock()
        indexes = (self.requests, self.responses, self.calls, self.replies)
        for index in (*indexes, self.prompts, self.summaries, self.orphans, self.conversations):
            index.expire(now)


# ---- plain functions ------------------------------------------------------------------------------


def _reply_key(parts: list[Any]) -> str:
    """A reply by its text alone: how a client sends it back matters not (blocks, whitespace)."""
    text = "\n".join(p.text.strip() for p in parts if isinstance(p, TextPart) and p.text.strip())
    return digest(b"reply", text.encode())


def texts_of(message: Message) -> list[str]:
    return [p.text for p in message.parts if isinstance(p, TextPart) and p.text.strip()]


def has_user_text(message: Message) -> bool:
    return message.role == "user" and bool(texts_of(message))


def trailing_turn(messages: list[Message]) -> list[Message]:
    """The messages after the last assistant message."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "assistant":
            return messages[i + 1 :]
    return messages


def side_text(request: Request) -> str:
    """Everything a side call says, folded: where a quoted prompt would stand."""
    pieces = [request.system or ""] + [t for m in request.messages for t in texts_of(m)]
    return fold(" ".join(pieces)[:MAX_SCANNED])
