"""Runs, steps and attempts in memory: their lifecycle, statuses and summaries.

The tracker owns the live state and turns every change into row snapshots for the writer.
Where a call belongs (which run, which step) is the grouper's decision; what follows from it
(counts, usage, statuses, timers) is decided here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from addons.classify import Classification
from addons.normalized import Error, Request, Response, TextPart, Usage
from addons.outcome import Outcome
from storage.records import AttemptRow, Row, RunRow, StepRow, names, new_id, timestamp

STEP_ORDER = {"in_progress": 0, "interrupted": 1, "error": 2, "completed": 3}
FINAL_RUN = ("completed", "error", "interrupted")


@dataclass(slots=True)
class StepState:
    row: StepRow
    attempts: list[AttemptRow] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    pending_failure: tuple[float, Outcome] | None = None  # (deadline, outcome) awaiting a retry
    tool_calls_pending: bool = False


@dataclass(slots=True)
class RunState:
    row: RunRow
    steps: list[StepState] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    last_activity: float = 0.0
    in_flight: int = 0


@dataclass(slots=True)
class Placement:
    """Where a new attempt goes: an existing step (a retry), a new step of a run, or a new run."""

    run: RunState | None = None
    step: StepState | None = None
    retry_signal: str | None = None


class Tracker:
    def __init__(
        self,
        submit: Callable[[Row], None],
        *,
        retry_window: float = 30.0,
        stale_after: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.submit = submit
        self.retry_window = retry_window
        self.stale_after = stale_after
        self.clock = clock
        self.runs: dict[str, RunState] = {}
        self.attempts: dict[str, tuple[RunState, StepState, AttemptRow]] = {}  # by flow id

    # ---- an attempt begins --------------------------------------------------------------

    def start(
        self,
        flow_id: str,
        placement: Placement,
        *,
        request: Request | None,
        request_dump: dict | None,
        classification: Classification,
        conversation_id: str | None,
        provider: str,
        endpoint: str,
        attempt: AttemptRow,
        started_at: float,
        run_id: str | None = None,
    ) -> tuple[RunState, StepState, AttemptRow]:
        stamp = timestamp(started_at)
        if placement.run is not None and placement.run.row.id not in self.runs:
            placement = Placement()  # the run was deleted meanwhile: start afresh
        if run_id and (placement.run is None or placement.run.row.id != run_id):
            # X-Chatdebug-Run: the client says which run, whatever the traffic suggests
            placement = Placement(run=self.runs.get(run_id))
        run = placement.run
        if run is None:
            row = RunRow(
                id=run_id or new_id("run_"),
                conversation_id=conversation_id,
                kind=classification.kind,
                classification_source=classification.source,
                classification_reason=classification.reason,
                provider=provider,
                api=request.api if request else attempt.url,
                model=request.model if request else None,
                endpoint=endpoint,
                first_message=first_user_text(request),
                started_at=stamp,
                updated_at=stamp,
            )
            run = RunState(row)
            self.runs[row.id] = run
        step = placement.step
        if step is None:
            step = StepState(
                StepRow(
                    id=new_id("stp_"),
                    run_id=run.row.id,
                    number=len(run.steps) + 1,
                    started_at=stamp,
                    request=request_dump,
                )
            )
            run.steps.append(step)
        step.pending_failure = None
        attempt.step_id, attempt.run_id = step.row.id, run.row.id
        attempt.number = len(step.attempts) + 1
        attempt.retry_signal = placement.retry_signal
        step.attempts.append(attempt)
        run.in_flight += 1
        run.last_activity = started_at
        run.row.step_count = len(run.steps)
        run.row.attempt_count = sum(len(s.attempts) for s in run.steps)
        run.row.updated_at = stamp
        run.row.model = run.row.model or (request.model if request else None)
        self.attempts[flow_id] = (run, step, attempt)
        self._emit(run, step, attempt)
        return run, step, attempt

    # ---- an attempt ends ----------------------------------------------------------------

    def finish(
        self,
        flow_id: str,
        outcome: Outcome,
        response: Response | None,
        response_dump: dict | None,
        finished_at: float,
    ) -> None:
        placed = self.attempts.pop(flow_id, None)
        if placed is None:
            return
        run, step, attempt = placed
        run.in_flight -= 1
        run.last_activity = finished_at
        attempt.status = outcome.status
        attempt.finished_at = timestamp(finished_at)
        attempt.response = response_dump
        _set_error(attempt, outcome.error)
        if response is not None and response.usage is not None:
            step.usage += response.usage
            run.usage += response.usage
            step.row.usage = step.usage.model_dump()
            for name, value in run.usage:
                setattr(run.row, name, value)
        run.row.updated_at = attempt.finished_at
        if outcome.status == "completed":
            step.pending_failure = None
            step.row.response = response_dump
            step.row.error = outcome.error.model_dump(by_alias=True) if outcome.error else None
            step.tool_calls_pending = _has_tool_calls(response)
            self._settle_step(step, "completed", attempt.finished_at)
            if not step.tool_calls_pending and run.row.status == "in_progress":
                self._settle_run(run, "completed", attempt.finished_at, None)
        else:
            if step.row.response is None:
                step.row.response = response_dump
            step.pending_failure = (finished_at + self.retry_window, outcome)
        self._emit(run, step, attempt)

    # ---- time passes --------------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        """Settle failures nobody retried and runs nobody continued; forget settled runs."""
        now = self.clock() if now is None else now
        for run in list(self.runs.values()):
            for step in run.steps:
                if step.pending_failure is not None and step.pending_failure[0] <= now:
                    _, outcome = step.pending_failure
                    step.pending_failure = None
                    status = "interrupted" if outcome.status == "interrupted" else "error"
                    stamp = timestamp(now)
                    step.row.error = outcome.error.model_dump(by_alias=True) if outcome.error else None
                    self._settle_step(step, status, stamp)
                    if run.row.status == "in_progress" and step is run.steps[-1]:
                        self._settle_run(run, status, stamp, outcome.error)
                    self._emit(run, step)
            if run.row.status in FINAL_RUN and run.in_flight == 0:
                if now - run.last_activity >= 2 * self.retry_window:
                    self.forget(run.row.id)  # settled: the database has it, no retry can come now
                continue
            idle = now - run.last_activity >= self.stale_after
            if idle and run.in_flight == 0 and not self._pending(run):
                stamp = timestamp(now)
                for step in run.steps:
                    if step.row.status == "in_progress":
                        self._settle_step(step, "interrupted", stamp)
                self._settle_run(run, "interrupted", stamp, None)
                self._emit(run)

    def forget(self, run_id: str) -> None:
        run = self.runs.pop(run_id, None)
        if run is not None:
            for flow_id, (r, _, _) in list(self.attempts.items()):
                if r is run:
                    del self.attempts[flow_id]

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


def _copy[R: Row](row: R) -> R:
    """Snapshots go to the writer; the live row keeps changing."""
    return type(row)(*[getattr(row, name) for name in names(type(row))])


def _set_error(row: RunRow | AttemptRow, error: Error | None) -> None:
    row.error = error.model_dump(by_alias=True, exclude_none=True) if error else None
    row.error_class = error.error_class if error else None


def _has_tool_calls(response: Response | None) -> bool:
    if response is None:
        return False
    return response.finish_reason == "tool_calls" or any(
        p.type == "tool_call" and not getattr(p, "server", None) for p in response.content
    )


def first_user_text(request: Request | None, limit: int = 200) -> str | None:
    """The first user text of a request, whitespace folded."""
    if request is None:
        return None
    for message in request.messages:
        if message.role == "user":
            for part in message.parts:
                if isinstance(part, TextPart) and part.text.strip():
                    return " ".join(part.text.split())[:limit]
    return None
