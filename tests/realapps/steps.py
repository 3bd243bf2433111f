"""Running app actions and filing the requests each one caused under its app session."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.realapps.env import Bench


@dataclass
class Scenario:
    """Requests one scenario caused, each with the app session it belongs to."""

    name: str
    calls: list[dict[str, Any]] = field(default_factory=list)


def settle(bench: Bench, mark: int, *, quiet: float = 3.0, timeout: float = 30.0, least: int = 1) -> None:
    """Wait until the provider has seen `least` requests since `mark` and then nothing for `quiet` s."""
    deadline = time.monotonic() + timeout
    count, changed = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = len(bench.since(mark))
        if now != count:
            count, changed = now, time.monotonic()
        elif count >= least and time.monotonic() - changed >= quiet:
            return
        time.sleep(0.2)


def record(bench: Bench, scenario: Scenario, session: str, action: Callable[[], None], **wait: Any) -> None:
    """Run one app action and file every request it caused under `session`."""
    mark = bench.mark()
    action()
    settle(bench, mark, **wait)
    for call in bench.since(mark):
        call["session"] = session
        scenario.calls.append(call)


def run_cli(command: list[str], env: dict[str, str], cwd: Path, timeout: float = 180) -> None:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    tail = (done.stdout[-400:] + done.stderr[-800:]).strip()
    print(f"    $ {' '.join(command[-3:])[:100]} -> {done.returncode}: {tail[-300:]!r}", flush=True)
