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
        pane.wait_for("\u276f", 60)  # the prompt glyph
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


# ---- Codex CLI --------------------------------------------------------------------------------


def _codex_home(bench: Bench, home: Path, work: Path) -> Path:
    codex_home = home / ".codex"
    codex_home.mkdir()
    (codex_home / "config.toml").write_text(
        f"""model = "gpt-5.1-codex"
model_provider = "fake"
approval_policy = "never"
sandbox_mode = "danger-full-access"
check_for_update_on_startup = false

[analytics]
enabled = false

[model_providers.fake]
name = "fake"
base_url = "{bench.upstream}/v1"
env_key = "FAKE_API_KEY"
wire_api = "responses"

[projects."{work}"]
trust_level = "trusted"
"""
    )
    return codex_home


def codex(bench: Bench) -> list[Scenario]:
    home, work = bench.home("codex")
    codex_home = _codex_home(bench, home, work)
    env = bench.env(
        home, CODEX_HOME=str(codex_home), FAKE_API_KEY=OPENAI_KEY, CODEX_CA_CERTIFICATE=str(bench.bundle)
    )
    exe = str(binary("codex"))

    def cli(*args: str) -> Callable[[], None]:
        return lambda: run_cli([exe, "exec", *args], env, work)

    oneshot = Scenario("oneshot")
    record(bench, oneshot, "A", cli("say hello"))

    loop = Scenario("tool_loop_resume")
    record(bench, loop, "B", cli("list the files"))
    record(bench, loop, "B", cli("resume", "--last", "thanks, now say goodbye"))

    retry = Scenario("retry_429")
    bench.server.provider.fail_next(429)
    record(bench, retry, "C", cli("say hello after a rate limit"), quiet=5.0)

    auto = Scenario("auto_compaction")
    small = ["-c", "model_auto_compact_token_limit=20000"]
    record(bench, auto, "D", cli(*small, "list the files twice"))
    record(bench, auto, "D", cli(*small, "resume", "--last", "list the files again"), quiet=4.0)

    interactive = Scenario("interactive_title_compact")
    pane = Pane("codex", [exe], env, work)
    try:
        pane.wait_for("Ask Codex", 60)
        time.sleep(1)

        def turn(prompt: str, answer: str) -> Callable[[], None]:
            return lambda: pane.submit(prompt, answer)

        def compact() -> None:
            pane.submit("/compact", "Context compacted")

        record(bench, interactive, "E", turn("list the files", "README.md and notes.txt"), quiet=4.0)
        record(bench, interactive, "E", compact, quiet=4.0)
        record(bench, interactive, "E", turn("what did we do so far?", "Hello!"), quiet=4.0)
    finally:
        print(pane.screen()[-1500:], flush=True)
        pane.close()
    return [oneshot, loop, retry, auto, interactive]


# ---- opencode ---------------------------------------------------------------------------------


def _opencode_config(bench: Bench, home: Path) -> None:
    """A provider through @ai-sdk/openai-compatible; titles go to the small model, and the tiny
    one's context is small enough for automatic compaction to start after a few turns."""
    config = home / ".config/opencode"
    config.mkdir(parents=True)
    models = {
        "big": {"name": "Big", "limit": {"context": 200000, "output": 8000}},
        "small": {"name": "Small", "limit": {"context": 100000, "output": 4000}},
        "tiny": {"name": "Tiny", "limit": {"context": 20000, "output": 2000}},
    }
    settings = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            "fake": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Fake",
                "options": {"baseURL": bench.upstream + "/v1", "apiKey": "{env:FAKE_API_KEY}"},
                "models": models,
            }
        },
        "model": "fake/big",
        "small_model": "fake/small",
        "autoupdate": False,
        "share": "disabled",
        "permission": {"bash": "allow", "edit": "allow"},
    }
    (config / "opencode.json").write_text(json.dumps(settings, indent=2))


def opencode(bench: Bench) -> list[Scenario]:
    home, work = bench.home("opencode")
    _opencode_config(bench, home)
    env = bench.env(
        home,
        FAKE_API_KEY=OPENAI_KEY,
        OPENCODE_DISABLE_MODELS_FETCH="1",
        OPENCODE_DISABLE_AUTOUPDATE="1",
        OPENCODE_DISABLE_LSP_DOWNLOAD="1",
        OPENCODE_DISABLE_SHARE="1",
        OPENCODE_DISABLE_DEFAULT_PLUGINS="1",
    )
    exe = str(binary("opencode"))

    def cli(*args: str) -> Callable[[], None]:
        return lambda: run_cli([exe, "run", *args], env, work)

    loop = Scenario("tool_loop_continue")
    record(bench, loop, "A", cli("list the files"))
    record(bench, loop, "A", cli("--continue", "thanks, now say goodbye"))

    retry = Scenario("retry_429")
    # the turn, not the title call: `opencode run` exits before a failed title's retry
    bench.server.provider.fail_next(429, model="big")
    record(bench, retry, "B", cli("say hello after a rate limit"), quiet=5.0)

    auto = Scenario("auto_compaction")
    tiny = ["-m", "fake/tiny"]
    record(bench, auto, "C", cli(*tiny, "list the files twice"))
    record(bench, auto, "C", cli(*tiny, "--continue", "list the files twice"), quiet=4.0)
    record(bench, auto, "C", cli(*tiny, "--continue", "and what is in them?"), quiet=4.0)

    interactive = Scenario("interactive_compact")
    pane = Pane("opencode", [exe], {**env, "TERM": "xterm-256color"}, work)
    try:
        pane.wait_for("Ask anything", 60)
        time.sleep(2)
        record(
            bench,
            interactive,
            "D",
            lambda: pane.submit("list the files", "README.md and notes.txt"),
            quiet=4.0,
        )
        record(bench, interactive, "D", lambda: pane.submit("/compact", "Compaction \u00b7"), quiet=4.0)
        record(bench, interactive, "D", lambda: pane.submit("what did we do so far?", "Hello!"), quiet=4.0)
    finally:
        print(pane.screen()[-1500:], flush=True)
        pane.close()
    return [loop, retry, auto, interactive]


# ---- Gemini CLI -------------------------------------------------------------------------------


def gemini(bench: Bench) -> list[Scenario]:
    home, work = bench.home("gemini")
    (home / ".gemini").mkdir()
    settings = {
        "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
        "general": {"disableAutoUpdate": True},
    }
    (home / ".gemini/settings.json").write_text(json.dumps(settings, indent=2))
    env = bench.env(
        home, GEMINI_API_KEY=GEMINI_KEY, GOOGLE_GEMINI_BASE_URL=bench.upstream, TERM="xterm-256color"
    )
    exe = str(binary("gemini"))

    def cli(*args: str) -> Callable[[], None]:
        return lambda: run_cli([exe, *args, "--yolo"], env, work)

    loop = Scenario("tool_loop_resume")
    record(bench, loop, "A", cli("-p", "list the files"))
    record(bench, loop, "A", cli("--resume", "latest", "-p", "thanks, now say goodbye"))

    retry = Scenario("retry_429")
    bench.server.provider.fail_next(429)
    record(bench, retry, "B", cli("-p", "say hello after a rate limit"), quiet=6.0)

    twins = Scenario("two_sessions_same_prompt")
    record(bench, twins, "C", cli("-p", "list the files twice"))
    record(bench, twins, "D", cli("-p", "list the files twice"))

    interactive = Scenario("interactive_compress")
    pane = Pane("gemini", [exe, "--yolo"], env, work)
    try:
        pane.wait_for("Type your message", 60)
        time.sleep(1)
        record(
            bench,
            interactive,
            "E",
            lambda: pane.submit("list the files", "README.md and notes.txt"),
            quiet=4.0,
        )
        record(bench, interactive, "E", lambda: pane.submit("/compress", "ompress"), quiet=5.0)
        record(bench, interactive, "E", lambda: pane.submit("what did we do so far?", "Hello!"), quiet=4.0)
    finally:
        print(pane.screen()[-1500:], flush=True)
        pane.close()
    return [loop, retry, twins, interactive]


SCENARIOS: dict[str, Callable[[Bench], list[Scenario]]] = {
    "claude": claude,
    "codex": codex,
    "opencode": opencode,
    "gemini": gemini,
}
