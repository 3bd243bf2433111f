"""Real parts for end-to-end tests: a TLS upstream, the sidecar as a process, real clients."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from tests.postgres import REQUIRED, PostgresServer, Unavailable
from tests.upstream import Upstream

ROOT = Path(__file__).resolve().parent.parent
FAKE_OPENAI_KEY = "sk-test-FAKEKEYFORTESTS0123456789abcdef"
FAKE_ANTHROPIC_KEY = "sk-ant-test-FAKEKEY0123456789abcdefghij"


@dataclass
class Certs:
    ca: trustme.CA
    ca_file: Path
    server_context: ssl.SSLContext


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    path = tmp_path_factory.mktemp("upstream-ca") / "upstream-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return Certs(ca, path, context)


@pytest.fixture(scope="session")
def _upstream(certs: Certs) -> Iterator[Upstream]:
    server = Upstream(certs.server_context).start()
    yield server
    server.stop()


@pytest.fixture
def upstream(_upstream: Upstream) -> Upstream:
    _upstream.reset()
    return _upstream


@dataclass
class Sidecar:
    process: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    addrs: dict[str, str]
    upstream_ca: Path
    args: list[str] = field(default_factory=list)

    @property
    def proxy_url(self) -> str:
        return f"http://{self.addrs['regular']}"

    @property
    def api_url(self) -> str:
        return self.addrs["api"]

    @property
    def ca_file(self) -> Path:
        return Path(self.addrs["ca"])

    @property
    def db_path(self) -> Path:
        return self.workdir / "chatdebug.db"

    @property
    def bundle(self) -> Path:
        """Our CA plus the upstream's: intercepted and tunnelled hosts both verify."""
        path = self.workdir / "bundle.pem"
        if not path.exists():
            path.write_bytes(self.ca_file.read_bytes() + self.upstream_ca.read_bytes())
        return path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(self.api_url + path, params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def runs(self, **params: Any) -> list[dict[str, Any]]:
        return self.get("/api/v1/runs", **params)["runs"]

    def run(self, run_id: str) -> dict[str, Any]:
        return self.get(f"/api/v1/runs/{run_id}")

    def wait_runs(
        self,
        count: int = 1,
        *,
        settled: bool = True,
        timeout: float = 15.0,
        check: Callable[[list[dict[str, Any]]], bool] | None = None,
        **params: Any,
    ) -> list[dict[str, Any]]:
        """Poll until `count` runs match (and, with `settled`, none is still in progress)."""
        deadline = time.monotonic() + timeout
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                runs = self.runs(**params)
            except httpx.HTTPStatusError as e:  # 503: the store is being reopened; ask again
                if e.response.status_code != 503:
                    raise
                time.sleep(0.1)
                continue
            enough = len(runs) >= count
            done = not settled or all(r["status"] != "in_progress" for r in runs)
            if enough and done and (check is None or check(runs)):
                return runs
            time.sleep(0.05)
        raise AssertionError(f"expected {count} settled runs for {params}, got {runs}\n{self.log()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)


def ready_addrs(line: str) -> dict[str, str]:
    """`chatdebug ready · proxy http://H:P (HTTPS_PROXY) · api URL · database PATH · trust the CA: PATH`."""
    addrs: dict[str, str] = {}
    for part in line.split(" · ")[1:]:
        name, _, value = part.partition(" ")
        if name == "proxy":
            addrs["regular"] = value.split()[0].removeprefix("http://")
        elif name in ("api", "database"):
            addrs[name] = value
        elif part.startswith("trust the CA: "):
            addrs["ca"] = part.removeprefix("trust the CA: ")
    return addrs


def sidecar_options(workdir: Path, upstream: Upstream, certs: Certs) -> list[str]:
    """`chatdebug run`'s options for a sidecar of its own in `workdir`, recording `upstream`."""
    return [
        "--proxy-addr", "127.0.0.1:0",
        "--api-addr", "127.0.0.1:0",
        "--database", f"sqlite:///{workdir / 'chatdebug.db'}",
        "--confdir", str(workdir / "conf"),
        "--intercept-host", f"127.0.0.1:{upstream.port}",
        "--upstream-ca", str(certs.ca_file),
    ]  # fmt: skip


def start_sidecar(workdir: Path, upstream: Upstream, certs: Certs, *extra: str) -> Sidecar:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "sidecar.log"
    chatdebug = str(Path(sys.executable).parent / "chatdebug")
    args = [chatdebug, "run", *sidecar_options(workdir, upstream, certs), "--retry-window", "2", *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATDEBUG_") and "PROXY" not in k.upper()}
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("chatdebug ready "):
                addrs = ready_addrs(line)
                return Sidecar(process, workdir, log_path, addrs, certs.ca_file, args)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"sidecar did not start:\n{log_path.read_text(errors='replace')}")


@pytest.fixture(scope="session")
def _sidecar(
    tmp_path_factory: pytest.TempPathFactory, _upstream: Upstream, certs: Certs
) -> Iterator[Sidecar]:
    sidecar = start_sidecar(tmp_path_factory.mktemp("sidecar"), _upstream, certs)
    yield sidecar
    sidecar.stop()


@pytest.fixture
def sidecar(_sidecar: Sidecar, upstream: Upstream) -> Sidecar:
    """The shared sidecar; tests tell their runs apart by their own unique content."""
    assert _sidecar.process.poll() is None, _sidecar.log()[-3000:]
    return _sidecar


@pytest.fixture
def own_sidecar(tmp_path: Path, upstream: Upstream, certs: Certs) -> Iterator[Callable[..., Sidecar]]:
    """A sidecar of the test's own, for restarts and signals."""
    started: list[Sidecar] = []

    def start(*extra: str) -> Sidecar:
        sidecar = start_sidecar(tmp_path / "own", upstream, certs, *extra)
        started.append(sidecar)
        return sidecar

    yield start
    for sidecar in started:
        if sidecar.process.poll() is None:
            sidecar.process.kill()
            sidecar.process.wait()


def unique(label: str) -> str:
    """A marker no other test's content contains."""
    return f"{label}-{time.monotonic_ns()}"


# ---- PostgreSQL -------------------------------------------------------------------------------

_postgres_skipped: list[str] = []


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
    except Unavailable as e:
        server.close()
        if REQUIRED:
            pytest.fail(f"PostgreSQL is required (REQUIRE_POSTGRES_TESTS=1) but: {e}")
        _postgres_skipped.append(str(e))
        pytest.skip(f"no PostgreSQL server could be started: {e}")
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh database on the test server."""
    return postgres_server.new_database()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each backend in turn: a SQLite file, then a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return str(request.getfixturevalue("postgres_url"))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _postgres_skipped:
        terminalreporter.write_sep("!", "PostgreSQL tests SKIPPED", red=True, bold=True)
        terminalreporter.write_line(f"no PostgreSQL server could be started: {_postgres_skipped[0]}")
