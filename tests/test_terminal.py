"""`chatdebug runs | show | tail | export` on recorded SDK traffic, from the store and from the API."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import wire
from tests.conftest import Certs, Sidecar, start_sidecar, unique
from tests.recorded import Recorded, record
from tests.test_e2e_record import openai_client
from tests.upstream import Reply, Upstream

CHATDEBUG = str(Path(sys.executable).parent / "chatdebug")


@pytest.fixture(scope="module")
def recorded(
    tmp_path_factory: pytest.TempPathFactory, _upstream: Upstream, certs: Certs
) -> Iterator[tuple[Sidecar, Recorded]]:
    sidecar = start_sidecar(tmp_path_factory.mktemp("terminal"), _upstream, certs)
    _upstream.reset()
    try:
        yield sidecar, record(sidecar, _upstream)
    finally:
        sidecar.stop()


def _env() -> dict[str, str]:
    """Not a terminal, as under CI or a pipe: no COLUMNS, no forced colour."""
    drop = ("CHATDEBUG_", "COLUMNS", "LINES", "FORCE_COLOR", "TTY_", "PY_COLORS")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def chatdebug(*args: str) -> str:
    result = subprocess.run([CHATDEBUG, *args], env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def readable(output: str) -> list[str]:
    lines = output.splitlines()
    assert "\x1b" not in output  # no colour when stdout is not a terminal
    too_wide = [line for line in lines if len(line) > 80]
    assert not too_wide, too_wide
    return lines


def test_runs_table_from_the_store_and_from_the_api(recorded: tuple[Sidecar, Recorded]) -> None:
    sidecar, rec = recorded
    database = f"sqlite:///{sidecar.db_path}"
    from_store = chatdebug("runs", "--database", database, "--conversation", rec.conversation_id)
    from_api = chatdebug("runs", "--api", sidecar.api_url, "--conversation", rec.conversation_id)
    assert from_store == from_api
    text = "\n".join(readable(from_store))
    for run in rec.runs:
        assert run["id"] in text
    for kind in ("turn", "compact", "title"):
        assert kind in text
    assert "1/2" in text  # the retried run: one step, two attempts
    assert "3" in text.split()  # the tool loop's three steps
    titles = chatdebug(
        "runs", "--database", database, "--conversation", rec.conversation_id, "--kind", "title_generation"
    )
    assert rec.title["id"] in titles and rec.tool_loop["id"] not in titles


def test_show_is_a_tree_of_steps_attempts_and_transcript(recorded: tuple[Sidecar, Recorded]) -> None:
    sidecar, rec = recorded
    tree = "\n".join(
        readable(chatdebug("show", rec.tool_loop["id"], "--database", f"sqlite:///{sidecar.db_path}"))
    )
    assert tree.count("step ") >= 3 and "step 3" in tree
    assert "→ get_weather" in tree and "←" in tree  # tool calls and results
    assert "Sunny twice" in tree
    assert "tokens: input 100 · cache read 0" in tree
    assert "├──" in tree or "└──" in tree

    retried = "\n".join(readable(chatdebug("show", rec.retried["id"], "--api", sidecar.api_url)))
    assert "attempt 1 failed  HTTP 429" in retried
    assert "rate_limited: Rate limit reached for gpt-4.1" in retried
    assert "attempt 2 completed  HTTP 200" in retried
    assert "retry: x-stainless-retry-count=1" in retried


def test_export_a_run_and_runs_since(recorded: tuple[Sidecar, Recorded], tmp_path: Path) -> None:
    sidecar, rec = recorded
    database = f"sqlite:///{sidecar.db_path}"
    exported = json.loads(chatdebug("export", rec.retried["id"], "--database", database))
    served = sidecar.get(f"/api/v1/runs/{rec.retried['id']}/export")
    assert {**exported, "exported_at": None} == {**served, "exported_at": None}
    assert exported["run"]["steps"][0]["attempts"][0]["http_status"] == 429
    assert "rate_limit_exceeded" in exported["run"]["steps"][0]["attempts"][0]["response_body"]

    out = tmp_path / "since.json"
    since = rec.tool_loop["started_at"]
    chatdebug(
        "export",
        "--since",
        since,
        "--conversation",
        rec.conversation_id,
        "--api",
        sidecar.api_url,
        "-o",
        str(out),
    )
    document = json.loads(out.read_text())
    assert [r["id"] for r in document["runs"]] == [r["id"] for r in rec.runs]  # oldest first
    assert all(r["steps"][0]["attempts"][0]["request_body"] for r in document["runs"])


def test_export_as_har_and_otlp_json(recorded: tuple[Sidecar, Recorded]) -> None:
    sidecar, rec = recorded
    outputs = {}
    for fmt in ("har", "otlp-json"):
        result = subprocess.run(
            [CHATDEBUG, "export", rec.title["id"], "--format", fmt, "--api", sidecar.api_url],
            env=_env(), capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        outputs[fmt] = json.loads(result.stdout)
    assert outputs["har"]["log"]["entries"] and outputs["har"]["log"]["pages"][0]["id"]
    assert outputs["otlp-json"]["resourceSpans"][0]["scopeSpans"][0]["spans"]


@pytest.mark.parametrize("source", ["api", "database"])
def test_tail_prints_runs_as_they_happen(
    recorded: tuple[Sidecar, Recorded], _upstream: Upstream, source: str
) -> None:
    sidecar, rec = recorded
    where = ["--api", sidecar.api_url] if source == "api" else ["--database", f"sqlite:///{sidecar.db_path}"]
    tail = subprocess.Popen(
        [CHATDEBUG, "tail", *where], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in tail.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        first = lines.get(timeout=30)  # the recent runs come first, like tail(1)'s last lines
        assert rec.compaction["id"] in first + "".join(lines.get(timeout=5) for _ in range(3))
        marker = unique("tail")  # then a run that happens while the tail follows
        _upstream.push(Reply.json(wire.openai_completion("tailed", usage=wire.openai_usage(4, 2))))
        openai_client(sidecar, _upstream).chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": marker}]
        )
        seen: list[str] = []
        deadline = time.monotonic() + 20
        while not any(marker in line and " completed " in line for line in seen):
            assert time.monotonic() < deadline and tail.poll() is None, (seen, tail.poll())
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=0.5))
        assert not any("\x1b" in line for line in seen)
    finally:
        tail.kill()
        _, stderr = tail.communicate()
    assert "Traceback" not in stderr, stderr
