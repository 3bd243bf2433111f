"""Interactive apps in a detached tmux pane on a private socket: type, wait, read the screen."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

SOCKET = "chatdebug-apps"


class Pane:
    def __init__(self, name: str, command: list[str], env: dict[str, str], cwd: Path) -> None:
        self.name = name
        line = " ".join(
            ["env", "-i", *(shlex.quote(f"{k}={v}") for k, v in env.items()), *map(shlex.quote, command)]
        )
        self._tmux("kill-session", "-t", name, check=False)
        self._tmux("new-session", "-d", "-s", name, "-x", "160", "-y", "50", "-c", str(cwd), line)

    def _tmux(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(["tmux", "-L", SOCKET, *args], capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.name, check=False)

    def type(self, text: str, *, enter: bool = True) -> None:
        self._tmux("send-keys", "-t", self.name, "-l", text)
        if enter:
            time.sleep(1.0)  # TUIs debounce pasted text; Enter right after it can be taken as a newline
            self._tmux("send-keys", "-t", self.name, "Enter")

    def submit(self, text: str, expect: str, timeout: float = 60.0) -> str:
        """Type a prompt and Enter; press Enter again while `expect` has not shown (a TUI still
        starting up can drop the first one)."""
        self.type(text)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.wait_for(expect, min(6.0, max(0.1, deadline - time.monotonic())))
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise
                self.key("Enter")

    def key(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", self.name, *keys)

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.3)
        raise TimeoutError(f"{text!r} never appeared in pane {self.name}:\n{screen}")

    def close(self) -> None:
        """End the app and everything it started: a Node app that relaunched itself survives the
        session's hangup, orphaned, unless its processes are ended too."""
        pid = self._tmux("display-message", "-p", "-t", self.name, "#{pane_pid}", check=False).strip()
        tree = _descendants(int(pid)) if pid.isdigit() else []
        self._tmux("kill-session", "-t", self.name, check=False)
        for signal_ in (signal.SIGTERM, signal.SIGKILL):
            alive = [p for p in tree if _signal(p, signal_)]
            if not alive:
                return
            time.sleep(0.5)


def _descendants(root: int) -> list[int]:
    """`root` and every process under it (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" ", 1)
            parent = int(rest.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(pid))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _signal(pid: int, signal_: signal.Signals) -> bool:
    """Send it; False once the process is gone."""
    try:
        os.kill(pid, signal_)
    except (ProcessLookupError, PermissionError):
        return False
    return True
