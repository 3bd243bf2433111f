"""Which run and step a call belongs to."""

from __future__ import annotations

from addons.classify import Classification
from addons.exchange import Exchange
from addons.normalized import Request, Response
from addons.outcome import Outcome
from addons.tracker import Placement, RunState, StepState


class Grouper:
    def __init__(self, *, retry_window: float = 30.0) -> None:
        self.retry_window = retry_window

    def place(
        self, ex: Exchange, request: Request | None, classification: Classification
    ) -> tuple[Placement, str | None]:
        return Placement(), ex.hints.get("x-chatdebug-conversation")

    def started(self, ex: Exchange, request: Request, run: RunState, step: StepState) -> None:
        pass

    def finished(self, ex: Exchange, response: Response | None, outcome: Outcome) -> None:
        pass

    def expire(self) -> None:
        pass
