"""Real coding agents' captured traffic, replayed in-process, is recorded as what it was.

The fixtures under tests/fixtures/apps are requests Claude Code, Codex CLI, opencode and Gemini
CLI really sent (tests/realapps/drive.py), with the replies they got and the truth about each
call. Every app and dimension is one test, and every one must hold for every call
(`bench/apps_scorecard.py -v` lists the calls a change gets wrong).
"""

from __future__ import annotations

import functools

import pytest

from tests.realapps.replay import DIMENSIONS, Recorded, apps, describe, load, replay, verdicts


@functools.cache
def _replayed(app: str) -> tuple[list[Recorded], dict[str, list[bool]]]:
    recorded = replay(load(app))
    return recorded, verdicts(recorded)


def _cases() -> list[object]:
    return [pytest.param(app, d, id=f"{app}-{d}") for app in apps() for d in DIMENSIONS]


def test_every_app_has_fixtures_with_truth() -> None:
    assert apps() == ["claude", "codex", "gemini", "opencode"]
    for app in apps():
        calls = load(app)
        assert len(calls) >= 10
        kinds = {c["truth"]["kind"] for c in calls}
        assert "chat_turn" in kinds and "compaction" in kinds
        assert any(c["truth"]["step"] > 1 for c in calls), "a tool loop"
        assert any(c["truth"]["attempt"] > 1 for c in calls), "a retry"


@pytest.mark.parametrize(("app", "dimension"), _cases())
def test_recorded_as_the_app_meant(app: str, dimension: str) -> None:
    recorded, scores = _replayed(app)
    wrong = [describe(r) for r, ok in zip(recorded, scores[dimension], strict=True) if not ok]
    assert not wrong, f"{app} {dimension}: {len(wrong)}/{len(recorded)} wrong:\n" + "\n".join(wrong)
