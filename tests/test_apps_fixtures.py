"""Real coding agents' captured traffic, replayed in-process, is recorded as what it was.

The fixtures under tests/fixtures/apps are requests Claude Code, Codex CLI, opencode and Gemini
CLI really sent (tests/realapps/drive.py), with the replies they got and the truth about each
call. Every app and dimension is one test; the ones the product gets wrong today are marked
xfail with what goes wrong, to be flipped as they are fixed (`bench/apps_scorecard.py -v`
lists the calls).
"""

from __future__ import annotations

import functools

import pytest

from tests.realapps.replay import DIMENSIONS, Recorded, apps, describe, load, replay, verdicts

# (app, dimension) -> why it fails today
FAILING_TODAY: dict[tuple[str, str], str] = {
    ("claude", "parsed"): "mid-conversation role 'system' messages make the whole request unparsable",
    ("claude", "kind"): "unparsed requests are recorded as kind unknown",
    ("claude", "run"): "unparsed requests: every round trip and every retry is a run of its own",
    ("claude", "step"): "unparsed requests: tool-loop round trips are not numbered as steps",
    ("claude", "attempt"): "unparsed requests: the retry after 529 is not a second attempt",
    (
        "codex",
        "kind",
    ): "the thread title call (x-codex-turn-metadata thread_source=thread_title) is a chat_turn",
    ("codex", "run"): "the turn resumed after a mid-turn automatic compaction starts a new run",
    ("codex", "step"): "the turn resumed after a mid-turn automatic compaction restarts at step 1",
    ("codex", "conversation"): "the TUI's title call gets a conversation of its own",
    ("gemini", "kind"): "the router (JSON schema) is a chat_turn, /compress is a chat_turn",
    ("gemini", "run"): "/compress's snapshot and its self-check are two runs",
    ("gemini", "step"): "/compress's self-check is not step 2 of the compaction",
    (
        "gemini",
        "conversation",
    ): "no session id: routers, turns and separate sessions are placed apart or together wrongly",
    ("opencode", "kind"): "the small model's title call and the TUI's /compact are chat_turns",
    ("opencode", "run"): "the turn opencode resumes after automatic compaction starts a new run",
    ("opencode", "step"): "the turn opencode resumes after automatic compaction restarts at step 1",
}


@functools.cache
def _replayed(app: str) -> tuple[list[Recorded], dict[str, list[bool]]]:
    recorded = replay(load(app))
    return recorded, verdicts(recorded)


def _cases() -> list[object]:
    cases = []
    for app in apps():
        for dimension in DIMENSIONS:
            reason = FAILING_TODAY.get((app, dimension))
            marks = [pytest.mark.xfail(reason=reason, strict=False)] if reason else []
            cases.append(pytest.param(app, dimension, marks=marks, id=f"{app}-{dimension}"))
    return cases


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
