"""A real PostgreSQL server for the tests: the one `TEST_POSTGRES_URL` names (an admin URL),
or a throwaway cluster started here from Debian's `postgresql` binaries, on loopback.

Each test gets a database of its own (`new_database`). Where no server can be had the PostgreSQL
tests skip, saying why in the summary; with `REQUIRE_POSTGRES_TESTS=1` (CI) they fail.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

REQUIRED = os.environ.get("REQUIRE_POSTGRES_TESTS") == "1"


class Unavailable(Exception):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise Unavailable("no initdb: install Debian's postgresql package")
    return Path(initdb).parent


class PostgresServer:
    def __init__(self) -> None:
        self.admin_url = os.environ.get("TEST_POSTGRES_URL", "")
        self.datadir: Path | None = None
        self._run_as: list[str] = []
        self.port = 0

    def start(self) -> PostgresServer:
        if not self.admin_url:
            self._start_cluster()
        self._wait()
        return self

    def _start_cluster(self) -> None:
        bindir = _bindir()
        base = Path(tempfile.mkdtemp(prefix="chatdebug-pg-"))
        if os.geteuid() == 0:  # the server refuses to run as root: as the postgres user
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise Unavailable("running as root and there is no postgres user") from None
            os.chown(base, user.pw_uid, user.pw_gid)
            self._run_as = ["runuser", "-u", "postgres", "--"]
        self.datadir, self.port = base / "data", _free_port()
        self._run(
            str(bindir / "initdb"), "-D", str(self.datadir), "-A", "trust", "-U", "postgres", "-E", "UTF8"
        )
        self.start_server()
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        done = subprocess.run([*self._run_as, *command], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise Unavailable(
                f"{Path(command[0]).name} failed: {(done.stderr or done.stdout).strip()[-400:]}"
            )

    def _wait(self) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.admin_url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.Error as e:
                if time.monotonic() > deadline:
                    raise Unavailable(f"no answer from {self.admin_url}: {e}") from None
                time.sleep(0.2)

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        name = f"chatdebug_{secrets.token_hex(6)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.admin_url.rsplit("/", 1)[0] + f"/{name}"

    def stop_server(self) -> None:
        """Stop the cluster (fast: connections are cut, as when a server goes away)."""
        assert self.datadir is not None, "only a cluster started here can be stopped"
        self._run(str(_bindir() / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop")

    def _cluster_pids(self) -> list[int]:
        """The postmaster (its pid file's first line) and every process it started."""
        assert self.datadir is not None, "only a cluster started here can be frozen"
        postmaster = int((self.datadir / "postmaster.pid").read_text().split()[0])
        pids = [postmaster]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # the parent pid is the second field after the command, which may hold spaces
                if int(stat.read_text().rpartition(")")[2].split()[1]) == postmaster:
                    pids.append(int(stat.parent.name))
        return pids

    def freeze(self) -> None:
        """Stop every process of the cluster (SIGSTOP): connections stay open and nothing
        answers, as when the server's host hangs or the network drops its packets."""
        for pid in self._cluster_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._cluster_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def start_server(self) -> None:
        """Start the cluster (again) on its port; only loopback, tuned for tests (no fsync)."""
        assert self.datadir is not None
        base = self.datadir.parent
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {base} -c fsync=off"
            " -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._run(
            str(_bindir() / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-o",
            options,
            "-l",
            str(base / "log"),
            "-w",
            "start",
        )

    def close(self) -> None:
        if self.datadir is not None:
            with contextlib.suppress(Unavailable, subprocess.TimeoutExpired):
                self._run(str(_bindir() / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "stop")
            shutil.rmtree(self.datadir.parent, ignore_errors=True)
