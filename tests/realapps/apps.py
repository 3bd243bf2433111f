"""What each app is asked to do, scenario by scenario, and how it is set up to talk to the fake.

A scenario's actions are filed under app sessions ("A", "B", ...): the requests of one action
belong to the session the app was in (a `--continue` stays in it, a fresh start opens a new one).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from tests.realapps.env import ANTHROPIC_KEY, GEMINI_KEY, OPENAI_KEY, Bench, binary
from tests.realapps.steps import Scenario, record, run_cli
from tests.realapps.tmux import Pane

# ---- Claude Code ------------------------------------------------------------------------------


def _claude_env(bench: Bench, home: Path) -> dict[str, str]:
    return bench.env(
        home,
        ANTHROPIC_BASE_URL=bench.upstream,
        ANTHROPIC_API_KEY=ANTHROPIC_KEY,
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_ERROR_REPORTING="1",
        DISABLE_BUG_COMMAND="1",
    )


def _claude_seed(home: Path, work: Path) -> None:
    """What the first-run dialogs would have stored: onboarding, theme, key approval, trust."""
    state = {
        "hasCompletedOnboarding": True,
        "theme": "dark",
        "numStartups": 3,
        "customApiKeyResponses": {"approved": [ANTHROPIC_KEY[-20:]], "rejected": []},
        "projects": {str(work): {"hasTrustDialogAccepted": True, "allowedTools": []}},
    }
    (home / ".claude.json").write_text(json.dumps(state))


def claude(bench: Bench) -> list[Scenario]:
    home, work = bench.home("claude")
    _claude_seed(home, work)
    env = _claude_env(bench, home)
    exe = str(binary("claude"))
    tools = ["--allowedTools", "Bash"]

    def cli(*args: str) -> Callable[[], None]:
        return lambda: run_cli([exe, "-p", *args, *tools], env, work)

    oneshot = Scenario("oneshot")
    record(bench, oneshot, "A", cli("say hello"))

    loop = Scenario("tool_loop_continue")
    record(bench, loop, "B", cli("list the files"))
    record(bench, loop, "B", cli("--continue", "thanks, now say goodbye"))

    retry = Scenario("retry_529")
    bench.server.provider.fail_next(529)
    record(bench, retry, "C", cli("say hello after an overload"), quiet=4.0)

    twins = Scenario("two_sessions_same_prompt")
    record(bench, twins, "D", cli("list the files twice"))
    record(bench, twins, "E", cli("list the files twice"))

    interactive = Scenario("interactive_title_compact")
    # the interactive UI names the session only with "nonessential" traffic allowed; the other
    # hosts it then tries are tunnelled, not intercepted, and fail offline without harm
    tui_env = {k: v for k, v in env.items() if k != "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"}
    pane = Pane("claude", [exe, *tools], tui_env, work)
    try:
        pane.wait_for("❯", 60)
        time.sleep(1)

        def turn() -> None:
            pane.type("list the files")
            pane.wait_for("README.md and notes.txt", 60)

        def compact() -> None:
            pane.type("/compact")
            pane.wait_for("Compacted", 90)

        record(bench, interactive, "F", turn)
        record(bench, interactive, "F", compact, quiet=4.0)
        record(
            bench,
            interactive,
            "F",
            lambda: (pane.type("what did we do so far?"), pane.wait_for("Hello!", 60)),
        )
    finally:
        print(pane.screen()[-1500:], flush=True)
        pane.close()
    return [oneshot, loop, retry, twins, interactive]


SCENARIOS: dict[str, Callable[[Bench], list[Scenario]]] = {
    "claude": claude,
}
