"""Real coding agents through the real sidecar, live: each call recorded as what it was.

Claude Code, Codex CLI, opencode and Gemini CLI (installed by tests/realapps/install.sh into
$CHATDEBUG_APPS_DIR, default ~/.cache/chatdebug-apps) run their scenarios against the local
fake provider through `chatdebug run`; every call the provider saw is looked up in the API and
its kind, run, step, attempt and conversation compared with the truth. Each app takes about a
minute (the four about four to five); without the apps installed, or without tmux, every test
here is skipped and says why.
"""

from __future__ import annotations

import functools
import shutil

import pytest

from tests.realapps import apps
from tests.realapps.env import APPS_DIR, installed
from tests.realapps.live import LiveRecorded, capture
from tests.realapps.replay import DIMENSIONS, describe, verdicts


@functools.cache
def _live(app: str) -> tuple[list[LiveRecorded], dict[str, list[bool]]]:
    recorded = capture(app)
    return recorded, verdicts(recorded)  # type: ignore[arg-type]  # LiveRecorded has Recorded's shape


def _cases() -> list[object]:
    cases = []
    for app in apps.SCENARIOS:
        reason_missing = None
        if not installed(app):
            reason_missing = f"{app} is not installed in {APPS_DIR}: run tests/realapps/install.sh"
        elif shutil.which("tmux") is None:
            reason_missing = "tmux is not installed: the interactive scenarios need it"
        for dimension in DIMENSIONS:
            marks: list[pytest.MarkDecorator] = [pytest.mark.timeout(900)]
            if reason_missing:
                marks.append(pytest.mark.skip(reason=f"SKIPPED LIVE APP TEST: {reason_missing}"))
            cases.append(pytest.param(app, dimension, marks=marks, id=f"{app}-{dimension}"))
    return cases


@pytest.mark.parametrize(("app", "dimension"), _cases())
def test_live_app_recorded_as_the_app_meant(app: str, dimension: str) -> None:
    recorded, scores = _live(app)
    assert recorded, f"{app} made no model calls"
    unpaired = [describe(r) for r in recorded if r.attempt is None]  # type: ignore[arg-type]
    assert not unpaired, "calls the provider saw but the API does not show:\n" + "\n".join(unpaired)
    wrong = [describe(r) for r, ok in zip(recorded, scores[dimension], strict=True) if not ok]  # type: ignore[arg-type]
    assert not wrong, f"{app} {dimension}: {len(wrong)}/{len(recorded)} wrong:\n" + "\n".join(wrong)
