"""Change events for `/events`: one per committed run, step or attempt row, and per deletion.

Events carry increasing ids and sit in a bounded replay buffer, so a client that reconnects
with `Last-Event-ID` gets what it missed while that is still buffered: for each run, step or
attempt, its newest event, carrying the object as the store has it now (read one at a time). The
buffer keeps ids, never rows: a step's row holds its whole request, hundreds of KB for an agent.
A replay the store cannot answer ends the stream (`ReplayFailed`): the client reconnects with
the same `Last-Event-ID` and misses nothing. A subscriber that falls too far behind is dropped;
it reconnects and replays.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from storage.queries import attempt_shape, row_mapping, run_shape, step_shape
from storage.records import AttemptRow, Row, RunRow, StepRow

log = logging.getLogger(__name__)

MAX_EVENT_ID = (1 << 63) - 1  # ids are microseconds since 1970 and count up from there


def last_event_id(raw: str | None) -> int:
    """A `Last-Event-ID` header as an id to replay after; anything but a plain decimal id in
    range (digits of other scripts, huge numbers, garbage) counts as no id, so replay is all."""
    text = (raw or "").strip()
    if not text or len(text) > len(str(MAX_EVENT_ID)) or not (text.isascii() and text.isdigit()):
        return 0
    value = int(text)
    return value if value <= MAX_EVENT_ID else 0


SHAPES = {RunRow: ("run", run_shape), StepRow: ("step", step_shape), AttemptRow: ("attempt", attempt_shape)}


@dataclass(slots=True)
class Event:
    id: int
    type: str  # run | step | attempt | delete
    run_id: str
    conversation_id: str | None
    kind: str | None
    object_id: str  # the run, step or attempt it is about (a deletion: its run)
    source: Row | dict[str, Any] | None  # the committed row, or what a deletion says; None buffered
    _data: bytes | None = None

    @property
    def data(self) -> bytes:
        """The JSON the client receives, built the first time a client needs it."""
        if self._data is None:
            source = self.source
            payload = source if isinstance(source, dict) else SHAPES[type(source)][1](row_mapping(source))
            self._data = orjson.dumps(payload)
        return self._data


@dataclass(eq=False)  # compared and hashed by identity: it lives in a set
class Subscription:
    conversation_id: str | None
    kind: str | None
    queue: asyncio.Queue[Event | None]

    def wants(self, event: Event) -> bool:
        if self.conversation_id is not None and event.conversation_id != self.conversation_id:
            return False
        return self.kind is None or event.kind == self.kind


Recall = Callable[[str, str], Awaitable[dict[str, Any] | None]]  # (kind, id) -> the object stored


class ReplayFailed(Exception):
    """The store could not give back an object a client missed."""


class EventHub:
    def __init__(self, recall: Recall, *, replay: int = 5_000, subscriber_queue: int = 1_000) -> None:
        self.recall = recall  # a stored run, step or attempt by kind and id: what replays carry
        self._buffer: deque[Event] = deque(maxlen=replay)
        self._subscribers: set[Subscription] = set()
        self._runs: OrderedDict[str, tuple[str | None, str]] = OrderedDict()  # run -> (conversation, kind)
        self._next = time.time_ns() // 1_000  # ids keep increasing across restarts
        self.subscriber_queue = subscriber_queue

    # ---- producers ------------------------------------------------------------------------

    def committed(self, rows: list[Row], seconds: float = 0.0) -> None:
        """A writer listener: every committed row becomes an event."""
        for row in sorted(
            rows, key=lambda r: not isinstance(r, RunRow)
        ):  # runs first: they carry the filters
            shape = SHAPES.get(type(row))
            if shape is None:
                continue
            if isinstance(row, RunRow):
                self._remember(row.id, row.conversation_id, row.kind)
            run_id = row.id if isinstance(row, RunRow) else row.run_id  # type: ignore[attr-defined]
            # the row as it is (never changed once submitted): shaped only if a client reads it
            self._publish(shape[0], run_id, row.id, row)

    def deleted(self, run_ids: list[str]) -> None:
        gone = set(run_ids)
        kept = [e for e in self._buffer if e.run_id not in gone]  # deleted runs vanish from replay too
        self._buffer.clear()
        self._buffer.extend(kept)
        for run_id in run_ids:
            self._publish("delete", run_id, run_id, {"type": "run", "id": run_id})
            self._runs.pop(run_id, None)

    def _remember(self, run_id: str, conversation_id: str | None, kind: str) -> None:
        self._runs[run_id] = (conversation_id, kind)
        self._runs.move_to_end(run_id)
        while len(self._runs) > 100_000:
            self._runs.popitem(last=False)

    def _publish(self, name: str, run_id: str, object_id: str, source: Row | dict[str, Any]) -> None:
        self._next += 1
        conversation_id, kind = self._runs.get(run_id, (None, None))
        # a deletion says all there is; a row is read back from the store if a replay wants it
        kept = source if isinstance(source, dict) else None
        self._buffer.append(Event(self._next, name, run_id, conversation_id, kind, object_id, kept))
        if not self._subscribers:
            return
        event = Event(self._next, name, run_id, conversation_id, kind, object_id, source)
        for sub in list(self._subscribers):
            if sub.wants(event):
                try:
                    sub.queue.put_nowait(event)
                except asyncio.QueueFull:
                    self._drop(sub)

    # ---- consumers ------------------------------------------------------------------------

    def subscribe(self, conversation_id: str | None, kind: str | None) -> Subscription:
        sub = Subscription(conversation_id, kind, asyncio.Queue(self.subscriber_queue))
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    async def replay(self, after: int, sub: Subscription) -> AsyncIterator[Event]:
        """What a client missed since `after`: each object's newest event, in the order of those,
        carrying the object as stored now (its later events, if any, follow on the live queue).
        Raises `ReplayFailed` before any object it cannot read: none past it is skipped."""
        newest: dict[tuple[str, str], Event] = {}
        for event in list(self._buffer):
            if event.id > after and sub.wants(event):
                newest.pop((event.type, event.object_id), None)  # its place is its newest event's
                newest[(event.type, event.object_id)] = event
        for event in newest.values():
            if event.source is not None:  # a deletion
                yield event
                continue
            try:
                stored = await self.recall(event.type, event.object_id)
            except Exception as e:
                what = f"{event.type} {event.object_id}"
                raise ReplayFailed(f"could not read {what} back from the store: {e}") from e
            if stored is not None:  # (None: deleted since; its deletion is replayed)
                yield dataclasses.replace(event, source=stored)

    def _drop(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)
        while not sub.queue.empty():
            sub.queue.get_nowait()
        sub.queue.put_nowait(None)  # tells the stream to end: the client reconnects and replays
