"""The bench the apps run on: the fake provider, the real sidecar in front of it, app homes.

`Bench` starts both (loopback, ephemeral ports), hands out per-app environments (throw-away
HOME, proxy and CA variables, telemetry and update checks off) and reads back what the fake
provider logged since a mark.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.conftest import ready_addrs  # noqa: E402
from tests.realapps.fake_provider import Server  # noqa: E402

APPS_DIR = Path(
    os.environ.get("CHATDEBUG_APPS_DIR")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "chatdebug-apps"
)
# The keys the apps are given: fake, and shaped like the real ones so the apps accept them.
ANTHROPIC_KEY = "sk-ant-api03-FAKEfakeFAKEfakeFAKEfakeFAKEfakeFAKEfakeFAKEfake-fakeAA"
OPENAI_KEY = "sk-proj-FAKEfakeFAKEfakeFAKEfakeFAKEfakeFAKEfake0123456789"
GEMINI_KEY = "AIzaSyFAKEfakeFAKEfakeFAKEfakeFAKEfake00"


def binary(app: str) -> Path:
    node = APPS_DIR / "node_modules"
    return {
        "claude": node / "@anthropic-ai/claude-code/bin/claude.exe",
        "codex": node / ".bin/codex",
        "opencode": node / "opencode-linux-x64/bin/opencode",
        "gemini": node / ".bin/gemini",
    }[app]


def installed(app: str) -> bool:
    return binary(app).exists()


@dataclass
class Sidecar:
    process: subprocess.Popen[bytes]
    workdir: Path
    addrs: dict[str, str]

    @property
    def proxy_url(self) -> str:
        return f"http://{self.addrs['regular']}"

    @property
    def api_url(self) -> str:
        return self.addrs["api"]

    @property
    def ca_file(self) -> Path:
        return Path(self.addrs["ca"])

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(self.api_url + path, params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def runs(self) -> list[dict[str, Any]]:
        """Every run with its steps and attempts, oldest first."""
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self.get("/api/v1/runs", limit=500, **({"cursor": cursor} if cursor else {}))
            found.extend(page["runs"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return [self.get(f"/api/v1/runs/{run['id']}") for run in reversed(found)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_sidecar(workdir: Path, upstream_port: int) -> Sidecar:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "sidecar.log"
    args = [
        str(ROOT / ".venv/bin/chatdebug"), "run",
        "--proxy-addr", "127.0.0.1:0",
        "--api-addr", "127.0.0.1:0",
        "--database", f"sqlite:///{workdir / 'chatdebug.db'}",
        "--confdir", str(workdir / "conf"),
        "--intercept-host", f"127.0.0.1:{upstream_port}",
        "--upstream-insecure",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATDEBUG_") and "PROXY" not in k.upper()}
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("chatdebug ready "):
                addrs = ready_addrs(line)
                return Sidecar(process, workdir, addrs)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"sidecar did not start:\n{log_path.read_text(errors='replace')}")


@dataclass
class Bench:
    root: Path
    server: Server = field(init=False)
    sidecar: Sidecar = field(init=False)
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / "provider.jsonl"
        self.log_path.touch()
        self.server = Server(self.log_path, self.root / "fake-ca.pem").start()
        self.sidecar = start_sidecar(self.root / "sidecar", self.server.port)
        # CA bundle for apps that replace the system roots rather than add to them
        system = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
        self.bundle = self.root / "bundle.pem"
        self.bundle.write_bytes(system.read_bytes() + b"\n" + self.sidecar.ca_file.read_bytes())

    @classmethod
    def create(cls) -> Bench:
        return cls(Path(tempfile.mkdtemp(prefix="chatdebug-apps-")))

    def close(self) -> None:
        """Stop both, and remove the bench: each app's HOME fills with its caches (~100-430 MB a
        run), and every live run would leave them in /tmp."""
        self.sidecar.stop()
        self.server.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def upstream(self) -> str:
        return self.server.url

    def mark(self) -> int:
        return len(self.log_path.read_text(encoding="utf-8").splitlines())

    def since(self, mark: int) -> list[dict[str, Any]]:
        lines = self.log_path.read_text(encoding="utf-8").splitlines()[mark:]
        return [json.loads(line) for line in lines if line.strip()]

    def home(self, app: str) -> tuple[Path, Path]:
        """A fresh HOME and working directory (with two files to list) for one app."""
        home = self.root / f"{app}-home"
        work = self.root / f"{app}-work"
        for path in (home, work):
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
        (work / "README.md").write_text("# demo project\n")
        (work / "notes.txt").write_text("remember the milk\n")
        subprocess.run(["git", "init", "-q"], cwd=work, check=False)
        return home, work

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        keep = ("PATH", "LANG", "TERM", "USER", "LOGNAME", "SHELL")
        env = {k: os.environ[k] for k in keep if k in os.environ}
        env.update(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / ".config"),
            XDG_DATA_HOME=str(home / ".local/share"),
            XDG_CACHE_HOME=str(home / ".cache"),
            XDG_STATE_HOME=str(home / ".local/state"),
            HTTPS_PROXY=self.sidecar.proxy_url,
            https_proxy=self.sidecar.proxy_url,
            NO_PROXY="",
            NODE_EXTRA_CA_CERTS=str(self.sidecar.ca_file),
            SSL_CERT_FILE=str(self.bundle),
            TERM=os.environ.get("TERM", "xterm-256color"),
            DISABLE_TELEMETRY="1",
            DO_NOT_TRACK="1",
        )
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
        env.update(extra)
        return env
