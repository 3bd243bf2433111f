"""Runs, steps and attempts: the one owner of their live state and of the rows they become.

`begin` places a new attempt (a retry of a step, the next step of a run, or a new run, in the
conversation it belongs to), consulting the grouping index; `end` settles it; `tick` lets time
pass (failures nobody retried, runs nobody continued). Every change is handed to `submit` as a
row snapshot. Nothing else decides or writes these rows.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from operator import attrgetter
from typing import Any

from addons.classify import SIDE_KINDS, Classification
from addons.cost import Prices, add
from addons.grouping import Grouper, Lookup, StepRef, has_user_text
from addons.normalized import Error, Request, Response
from addons.outcome import Outcome
from addons.prompts import first_words, prompt_of
from storage.records import USAGE_FIELDS, AttemptRow, BodyRow, Row, RunRow, StepRow, names, new_id, timestamp

STEP_ORDER = {"in_progress": 0, "interrupted": 1, "error": 2, "completed": 3}
FINAL_RUN = ("completed", "error", "interrupted")
# Settled runs stay in memory for 2 retry windows (a retry, a side call's next pass, a title
# joining its turn may still come). This bounds them under a flood (~5-6 KB a one-step run,
# `bench/memory_bench.py`: ~60 MB): only past ~160 calls/s are the oldest let go early, never
# one a side call or failure still waits on; a retry that names one takes its run up from the
# store (`Pipeline._lookup`: while the database is away, it starts a run of its own), as a side
# call's next pass or a late title does.
MAX_SETTLED = 10_000
# An id a client forces with X-Chatdebug-Run: anything else is ignored, not stored.
RUN_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


@cache
def _getter(kind: type[Row]) -> Callable[[Row], tuple[Any, ...]]:
    """A row type's columns in one C call, asked for every snapshot."""
    return attrgetter(*names(kind))


@dataclass(slots=True)
class StepState:
    row: StepRow
    attempts: list[AttemptRow] = field(default_factory=list)
    pending_failure: tuple[float, Outcome] | None = None  # (deadline, outcome) awaiting a retry
    retry_until: float = 0.0  # an identical request until then is the next attempt
    tool_calls_pending: bool = False
    # completed and sent: its request and response left memory (an agent's step holds hundreds
    # of KB); a new attempt on it brings them back from the store first (`restore`)
    sent: bool = False


@dataclass(slots=True)
class RunState:
    row: RunRow
    steps: list[StepState] = field(default_factory=list)
    last_activity: float = 0.0
    in_flight: int = 0


@dataclass(slots=True)
class Flight:
    """One attempt between `begin` and `end`: where it went and the rows it fills."""

    run: RunState
    step: StepState
    attempt: AttemptRow
    body: BodyRow
    request_hash: str | None
    started_at: float = 0.0
    fault: str | None = None  # why the request could not be read
    streamed: bool = False


class Tracker:
    def __init__(
        self,
        submit: Callable[[Row], None],
        *,
        retry_window: float = 30.0,
        stale_after: float = 300.0,
        prices: Prices | None = None,
        clock: Callable[[], float] = time.time,
        max_settled: int = MAX_SETTLED,
        let_go_sent: bool = False,
    ) -> None:
        self.submit = submit
        self.let_go_sent = let_go_sent  # a store can give a sent step's request and response back
        self.max_settled = max_settled
        self.prices = prices or Prices()
        self.retry_window = retry_window
        self.stale_after = stale_after
        self.clock = clock
        self.index = Grouper(clock=lambda: self.clock())  # one timeline, whoever sets the clock
        self.runs: dict[str, RunState] = {}
        self.flights: dict[str, Flight] = {}  # by flow id
        # conversation -> the tool loop a compaction interrupted: the loop goes on after it
        self.suspended: dict[str, str] = {}

    # ---- an attempt begins --------------------------------------------------------------

    def begin(
        self,
        flow_id: str,
        request: Request | None,
        classification: Classification,
        attempt: AttemptRow,
        *,
        api: str,
        provider: str,
        endpoint: str,
        started_at: float,
        hints: dict[str, str],
        request_dump: dict | None = None,
        found: Lookup | None = None,
    ) -> Flight:
        if found is None and request is not None:
            found = self.index.lookup(request)
        run, step, signal = self._place(request, classification, found, hints)
        if run is None:
            run = self._new_run(
                request, classification, found, hints, (api, provider, endpoint), attempt.started_at
            )
        if step is None:
            step = StepState(
                StepRow(
                    id=new_id("stp_"),
                    run_id=run.row.id,
                    number=len(run.steps) + 1,
                    started_at=attempt.started_at,
                    request=request_dump,
                    request_hash=found.full_hash if found is not None else None,
                )
            )
            run.steps.append(step)
        step.pending_failure = None
        attempt.step_id, attempt.run_id = step.row.id, run.row.id
        attempt.number = len(step.attempts) + 1
        attempt.retry_signal = signal
        step.attempts.append(attempt)
        run.in_flight += 1
        run.last_activity = started_at
        run.row.step_count = len(run.steps)
        run.row.attempt_count = sum(len(s.attempts) for s in run.steps)
        run.row.updated_at = attempt.started_at
        run.row.model = run.row.model or _model(request)
        full_hash = found.full_hash if found is not None else None
        if full_hash is not None:
            ref = StepRef(run.row.id, step.row.id, run.row.conversation_id, started_at)
            self.index.learn_request(full_hash, ref)
        flight = Flight(run, step, attempt, BodyRow(id=attempt.id), full_hash, started_at)
        self.flights[flow_id] = flight
        self._emit(run, step, attempt)
        return flight

    def _place(
        self,
        request: Request | None,
        classification: Classification,
        found: Lookup | None,
        hints: dict[str, str],
    ) -> tuple[RunState | None, StepState | None, str | None]:
        """A retry of a step, the next step of a run, or (None, None) for a new run."""
        forced = hints.get("x-chatdebug-run", "")
        if RUN_ID.fullmatch(forced):
            run = self.runs.get(forced)
            if run is None:
                return None, None, None
            same = found is not None and found.same is not None and found.same.run_id == forced
            step = self._step(run, found.same.step_id) if same and found and found.same else None
            if step is not None and step.sent:
                step = None  # its request is not in memory: the attempt is the run's next step
            return run, step, "X-Chatdebug-Run names this run" if step else None
        if request is None or found is None:
            return None, None, None
        if found.same is not None:
            run, step = self._resolve(found.same)
            # a sent step whose request could not be brought back is left as stored: a retry of
            # it starts a run of its own, as one of a run let go early does while the store is away
            signal = self._retry_signal(run, step, request, classification)
            if signal is not None and step is not None and not step.sent:
                return run, step, signal
        ref = found.continues
        if ref is not None and found.rest is not None:
            run = self.runs.get(ref.run_id)
            if run is not None and _next_step(run, classification, found):
                return run, None, None
        if self.suspended and classification.kind == "chat_turn":
            conversation, _ = self._conversation(request, classification, found, hints, None)
            run = self.runs.get(self.suspended.pop(conversation, ""))
            if run is not None and run.row.status not in FINAL_RUN:
                return run, None, None  # the loop a compaction interrupted goes on, in its new history
        return None, None, None

    def _new_run(
        self,
        request: Request | None,
        classification: Classification,
        found: Lookup | None,
        hints: dict[str, str],
        where: tuple[str, str, str],
        stamp: str,
    ) -> RunState:
        api, provider, endpoint = where
        side = classification.kind in SIDE_KINDS
        quoted = self.index.quoted_prompt(request) if request is not None and side else None
        if quoted is not None and self._known_session(request):
            quoted = None  # a side call in a session we know is that session's, whatever it quotes
        conversation, source = self._conversation(request, classification, found, hints, quoted)
        forced = hints.get("x-chatdebug-run", "")
        row = RunRow(
            id=forced if RUN_ID.fullmatch(forced) else new_id("run_"),
            conversation_id=conversation,
            conversation_source=source,
            kind=classification.kind,
            classification_source=classification.source,
            classification_reason=classification.reason,
            provider=provider,
            api=request.api if request else api,
            model=_model(request),
            endpoint=endpoint,
            # a side call's words are its task, quoting what it is about: kept whole
            first_message=first_words(request, strip=not side),
            prompt=quoted[0] if quoted else prompt_of(request, strip=not side),
            started_at=stamp,
            updated_at=stamp,
        )
        run = RunState(row)
        self.runs[row.id] = run
        if classification.kind == "compaction" and (loop := self._open_loop(conversation)) is not None:
            self.suspended[conversation] = loop.row.id
        if request is not None and classification.kind == "chat_turn":
            for waiting in self.index.learn_prompts([row.prompt, row.first_message], conversation):
                self._join(waiting, conversation)
        elif (
            request is not None
            and side
            and (
                quoted is not None
                or source == "derived"
                or (source == "client_session" and not self._known_session(request))
            )
        ):
            self.index.learn_orphan(row.id, request)  # the turn it serves may come next
        self.index.conversations.put(conversation, True, self.clock())
        return run

    def _conversation(
        self,
        request: Request | None,
        classification: Classification,
        found: Lookup | None,
        hints: dict[str, str],
        quoted: tuple[str, str] | None,
    ) -> tuple[str, str]:
        """Where a new run belongs: the application's own id, else the history it continues,
        else a new conversation. A side call that quotes a known prompt belongs to that prompt's
        conversation even when it runs under an id of its own (Codex titles use a temporary thread)."""
        if stated := hints.get("x-chatdebug-conversation", "").strip()[:200]:
            return stated, "header"
        side = classification.kind in SIDE_KINDS
        if quoted is not None:
            return quoted[1], "continuation"
        sessions = request.signals.session_ids if request is not None else []
        if sessions:
            return sessions[0].value, "client_session"
        if found is not None and (ref := found.continues) and ref.conversation_id:
            return ref.conversation_id, "continuation"
        if found is not None and found.same is not None and found.same.conversation_id and side:
            return found.same.conversation_id, "continuation"  # the same history, asked for a title
        if request is not None and (continued := self.index.summary_continued(request)):
            return continued, "continuation"
        return new_id("conv_"), "derived"

    def _known_session(self, request: Request | None) -> bool:
        """The session id the request states is one this proxy has seen runs in (a temporary
        thread a title runs in is not)."""
        sessions = request.signals.session_ids if request is not None else []
        return bool(sessions) and self.index.conversations.get(sessions[0].value) is not None

    def _open_loop(self, conversation: str) -> RunState | None:
        """The conversation's chat turn still waiting for its next model call (a tool loop)."""
        for run in reversed(self.runs.values()):
            if run.row.conversation_id != conversation or run.row.kind != "chat_turn":
                continue
            if run.row.status == "in_progress" and run.steps and run.steps[-1].tool_calls_pending:
                return run
        return None

    def _join(self, run_id: str, conversation: str | None) -> None:
        """A side call that quoted this turn's prompt before the turn arrived moves to its conversation."""
        run = self.runs.get(run_id)
        if run is None or conversation is None or run.row.conversation_id == conversation:
            return
        run.row.conversation_id = conversation
        run.row.conversation_source = "continuation"
        self._emit(run)

    def _resolve(self, ref: StepRef) -> tuple[RunState | None, StepState | None]:
        run = self.runs.get(ref.run_id)
        return (run, self._step(run, ref.step_id)) if run is not None else (None, None)

    @staticmethod
    def _step(run: RunState, step_id: str) -> StepState | None:
        return next((s for s in reversed(run.steps) if s.row.id == step_id), None)

    def _retry_signal(
        self,
        run: RunState | None,
        step: StepState | None,
        request: Request,
        classification: Classification | None = None,  # None: any purpose (a may-be)
    ) -> str | None:
        if run is None or step is None or step is not run.steps[-1] or not step.attempts:
            return None
        if classification is not None and _another_purpose(run, classification):
            return None  # the same messages asked for another purpose (a title of the same chat)
        count = request.signals.retry_count
        header = f"x-stainless-retry-count={count}" if count else None
        last = step.attempts[-1]
        if last.status == "in_progress":
            return header or "identical request while the previous attempt was in flight"
        if last.status in ("failed", "interrupted") and self.clock() <= step.retry_until:
            return header or f"identical request after a {last.error_class or last.status} attempt"
        if header and self.clock() - run.last_activity <= self.retry_window:
            return header
        return None

    # ---- an attempt ends ----------------------------------------------------------------

    def end(
        self,
        flow_id: str,
        outcome: Outcome,
        response: Response | None,
        response_dump: dict | None,
        finished_at: float,
    ) -> Flight | None:
        flight = self.flights.pop(flow_id, None)
        if flight is None:
            return None
        run, step, attempt = flight.run, flight.step, flight.attempt
        run.in_flight -= 1
        run.last_activity = finished_at
        stamp = timestamp(finished_at)
        attempt.status = outcome.status
        attempt.finished_at = stamp
        attempt.response = response_dump
        _set_error(attempt, outcome.error)
        if response is not None and response.usage is not None:
            used, summed = response.usage, step.row.usage or {}
            step.row.usage = {name: summed.get(name, 0) + getattr(used, name) for name in USAGE_FIELDS}
            for name in USAGE_FIELDS:  # the run's sums are its row's columns
                setattr(run.row, name, getattr(run.row, name) + getattr(used, name))
            self._price(flight, response)
        run.row.updated_at = stamp
        if outcome.status == "completed":
            step.pending_failure = None
            step.row.response = response_dump
            step.row.error = outcome.error.model_dump(by_alias=True) if outcome.error else None
            # a side call answered with a tool call is done: its caller reads the call, no loop follows
            step.tool_calls_pending = run.row.kind not in SIDE_KINDS and _has_tool_calls(response)
            self._settle_step(step, "completed", stamp)
            if not step.tool_calls_pending and run.row.status != "completed":
                self._settle_run(run, "completed", stamp, None)
            step.row.response_id = response.id[:200] if response is not None and response.id else None
            if response is not None and flight.request_hash is not None:
                summary_of = run.row.conversation_id if run.row.kind == "compaction" else None
                self.index.learn_response(flight.request_hash, response, summary_of)
        else:
            if step.row.response is None:
                step.row.response = response_dump
            step.retry_until = finished_at + self.retry_window
            if outcome.status == "interrupted":  # the client went away: say so now; a retry still joins
                step.row.error = outcome.error.model_dump(by_alias=True) if outcome.error else None
                self._settle_step(step, "interrupted", stamp)
                if run.row.status == "in_progress" and step is run.steps[-1]:
                    self._settle_run(run, "interrupted", stamp, outcome.error)
            else:
                step.pending_failure = (finished_at + self.retry_window, outcome)
        self._emit(run, step, attempt)
        # an ended attempt is never written again: what placing the next one asks of it is kept
        step.attempts[step.attempts.index(attempt)] = _ended(attempt)
        settled = step.row.status == "completed" and step.pending_failure is None
        if self.let_go_sent and settled and all(a.status != "in_progress" for a in step.attempts):
            # sent whole, and no snapshot of it is due (an attempt's end, a failure's settling)
            step.row.request = step.row.response = None
            step.sent = True
        return flight

    def _price(self, flight: Flight, response: Response) -> None:
        """The attempt's cost at the time of the call; its step and run sum their attempts'."""
        run, step, attempt = flight.run, flight.step, flight.attempt
        model = response.model or run.row.model
        cost = self.prices.cost(run.row.provider or "", model, response.usage, flight.started_at)
        if cost is None:
            return
        attempt.cost = cost.as_dict()
        step.row.cost = add(step.row.cost, attempt.cost)
        run.row.cost = add(run.row.cost, attempt.cost)
        run.row.cost_total = run.row.cost["total"] if run.row.cost else None

    # ---- time passes --------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        """Settle failures nobody retried and runs nobody continued; forget settled runs."""
        now = self.clock() if now is None else now
        settled: list[RunState] = []
        for run in list(self.runs.values()):
            for step in run.steps:
                if step.pending_failure is not None and step.pending_failure[0] <= now:
                    _, outcome = step.pending_failure
                    step.pending_failure = None
                    stamp = timestamp(now)
                    step.row.error = outcome.error.model_dump(by_alias=True) if outcome.error else None
                    self._settle_step(step, "error", stamp)
                    if run.row.status == "in_progress" and step is run.steps[-1]:
                        self._settle_run(run, "error", stamp, outcome.error)
                    self._emit(run, step)
            if run.row.status in FINAL_RUN and run.in_flight == 0:
                if now - run.last_activity >= 2 * self.retry_window:
                    self.forget(run.row.id)  # settled: the database has it, no retry can come now
                else:
                    settled.append(run)
                continue
            idle = now - run.last_activity >= self.stale_after
            if idle and run.in_flight == 0 and not self._pending(run):
                stamp = timestamp(now)
                for step in run.steps:
                    if step.row.status == "in_progress":
                        self._settle_step(step, "interrupted", stamp)
                self._settle_run(run, "interrupted", stamp, None)
                self._emit(run)
        if len(settled) > self.max_settled:
            settled.sort(key=lambda r: r.last_activity)
            for run in settled[: len(settled) - self.max_settled]:
                if not self._pending(run) and self.index.orphans.get(run.row.id) is None:
                    self.forget(run.row.id)  # its rows went to the writer seconds ago
        self.index.expire()

    def may_retry(self, ref: StepRef, request: Request, hints: dict[str, str]) -> bool:
        """Whether the request, identical to a sent step's, could be its next attempt: only then
        are the step's request and response worth bringing back (`restore`). Most identical
        requests after a success are not retries (an evaluation asking again): they start runs."""
        run, step = self._resolve(ref)
        if run is None or step is None or not step.sent:
            return False
        named = hints.get("x-chatdebug-run") == ref.run_id
        return named or self._retry_signal(run, step, request) is not None

    def sent_last(self, ref: StepRef, stored: dict[str, Any]) -> bool:
        """Whether a stored step is the sent step as its last snapshot left it, not an older row
        of it the writer has not replaced yet."""
        _, step = self._resolve(ref)
        fields = ("status", "finished_at", "response_id")
        return step is not None and all(stored.get(name) == getattr(step.row, name) for name in fields)

    def restore(self, ref: StepRef, stored: dict[str, Any]) -> None:
        """A sent step's request and response, as the store has them (`get_object`)."""
        _, step = self._resolve(ref)
        if step is not None and step.sent:
            step.row.request, step.row.response = stored.get("request"), stored.get("response")
            step.sent = False

    def let_go_early(self, ref: StepRef) -> bool:
        """The step's run left memory (`MAX_SETTLED`) while a retry could still join it."""
        return ref.run_id not in self.runs and self.clock() - ref.seen < 2 * self.retry_window

    def resume(self, stored: dict[str, Any]) -> RunState:
        """A run the store has and memory no longer does (settled and let go, or written by a
        previous process), taken up again: an X-Chatdebug-Run that names it adds to it rather
        than overwriting it."""
        usage = stored.get("usage") or {}
        classification = stored.get("classification") or {}
        columns = {name: stored[name] for name in names(RunRow) if name in stored}
        row = RunRow(
            **columns,
            classification_source=classification.get("source", "default"),
            classification_reason=classification.get("reason", ""),
            error_class=(stored.get("error") or {}).get("class"),
            **{name: int(usage.get(name) or 0) for name in USAGE_FIELDS},
        )
        run = RunState(row, last_activity=self.clock())
        for raw in stored.get("steps") or []:
            step_columns = {name: raw[name] for name in names(StepRow) if name in raw}
            step = StepState(StepRow(**step_columns))
            step.attempts = [
                AttemptRow(
                    id=a["id"],
                    step_id=step.row.id,
                    run_id=row.id,
                    number=a["number"],
                    status=a["status"],
                    error_class=a.get("error_class") or (a.get("error") or {}).get("class"),
                )
                for a in raw.get("attempts") or []
            ]
            last = raw.get("attempts", [])[-1:] or [{}]
            if last[0].get("status") in ("failed", "interrupted") and (
                ended := _epoch(last[0].get("finished_at"))
            ):
                step.retry_until = ended + self.retry_window  # a retry may come, through any replica
            run.steps.append(step)
        self.runs[row.id] = run
        return run

    def forget(self, run_id: str) -> None:
        run = self.runs.pop(run_id, None)
        self.index.forget_run(run_id)
        if run is not None:
            for flow_id, flight in list(self.flights.items()):
                if flight.run is run:
                    del self.flights[flow_id]

    # ---- helpers ------------------------------------------------------------------------

    @staticmethod
    def _pending(run: RunState) -> bool:
        return any(s.pending_failure is not None for s in run.steps)

    @staticmethod
    def _settle_step(step: StepState, status: str, stamp: str) -> None:
        if STEP_ORDER[status] >= STEP_ORDER[step.row.status]:
            step.row.status = status
            step.row.finished_at = stamp

    @staticmethod
    def _settle_run(run: RunState, status: str, stamp: str, error: Error | None) -> None:
        run.row.status = status
        run.row.finished_at = stamp
        run.row.updated_at = stamp
        _set_error(run.row, error)

    def _emit(self, run: RunState, step: StepState | None = None, attempt: AttemptRow | None = None) -> None:
        self.submit(_copy(run.row))
        if step is not None:
            self.submit(_copy(step.row))
        if attempt is not None:
            self.submit(_copy(attempt))


def _next_step(run: RunState, classification: Classification, found: Lookup) -> bool:
    """Does a request that extends a step of `run` continue it? A tool loop goes on while the new
    messages are only model output and tool results; a side call that extends a side call of its
    own kind is its next pass (Gemini CLI checks the snapshot it just wrote)."""
    rest = found.rest or []
    if run.row.kind in SIDE_KINDS and classification.kind == run.row.kind:
        return True
    return (
        run.row.status not in FINAL_RUN
        and not any(has_user_text(m) for m in rest)
        and not _another_purpose(run, classification)
    )


def _another_purpose(run: RunState, classification: Classification) -> bool:
    """A request classified as another kind than the run (by more than the default) is its own run:
    Claude Code asks for a compaction in the same tool turn that would continue the loop."""
    return classification.source != "default" and classification.kind != run.row.kind


MAX_MODEL = 200  # a model name is short; a longer one is a client's mistake or an attack


def _model(request: Request | None) -> str | None:
    """The model a run is filed under (an indexed column): bounded like every id we keep."""
    return request.model[:MAX_MODEL] if request is not None and request.model else None


def _epoch(stamp: str | None) -> float | None:
    try:
        return datetime.fromisoformat(stamp).timestamp() if stamp else None
    except ValueError:
        return None


def _copy[R: Row](row: R) -> R:
    """Snapshots go to the writer; the live row keeps changing."""
    return type(row)(*_getter(type(row))(row))


def _ended(attempt: AttemptRow) -> AttemptRow:
    """What the step keeps of an attempt once its last snapshot is written (as `resume` does)."""
    return AttemptRow(
        id=attempt.id,
        step_id=attempt.step_id,
        run_id=attempt.run_id,
        number=attempt.number,
        status=attempt.status,
        error_class=attempt.error_class,
    )


def _set_error(row: RunRow | AttemptRow, error: Error | None) -> None:
    row.error = error.model_dump(by_alias=True, exclude_none=True) if error else None
    row.error_class = error.error_class if error else None


def _has_tool_calls(response: Response | None) -> bool:
    if response is None:
        return False
    return response.finish_reason == "tool_calls" or any(
        p.type == "tool_call" and not getattr(p, "server", None) for p in response.content
    )
