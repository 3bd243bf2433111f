"""Start-up as a new user meets it: the real `chatdebug` console script in a subprocess.

Every mistake stops the process before anything runs (no migration, no listener) with exit code
2 and one line naming the setting and the fix; a good start says where everything is.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.flags import settings_table
from proxy.settings import env_name, flags
from tests.conftest import ROOT
from tests.test_cli_and_packaging import CHATDEBUG, run_cli


def loopback(*extra: str, workdir: Path) -> list[str]:
    """A start that would succeed: free ports, a database and a CA of its own."""
    return [
        "--proxy-addr", "127.0.0.1:0",
        "--api-addr", "127.0.0.1:0",
        "--database", f"sqlite:///{workdir / 'chatdebug.db'}",
        "--confdir", str(workdir / "conf"),
        *extra,
    ]  # fmt: skip


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize("flag", ["--proxy-addr", "--api-addr"])
def test_a_busy_port_is_one_line_with_the_reason(tmp_path: Path, busy_port: int, flag: str) -> None:
    args = loopback(workdir=tmp_path)
    args[args.index(flag) + 1] = f"127.0.0.1:{busy_port}"
    line = one_line(run_cli("run", *args))
    setting = flag.removeprefix("--").replace("-", "_")
    assert line == (
        f"chatdebug: {flag} / {env_name(setting)}: cannot listen on 127.0.0.1:{busy_port}: "
        "address already in use; choose another port or stop what uses it"
    )
    assert not (tmp_path / "chatdebug.db").exists()  # checked before migrations


def test_a_busy_reverse_port_names_the_reverse_setting(tmp_path: Path, busy_port: int) -> None:
    line = one_line(
        run_cli("run", *loopback("--reverse", f"https://api.openai.com@{busy_port}", workdir=tmp_path))
    )
    assert line.startswith("chatdebug: --reverse / CHATDEBUG_REVERSE: cannot listen on ")
    assert "address already in use" in line


def test_a_ca_directory_that_cannot_be_written_stops_before_ready(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    confdir = tmp_path / "a-file" / "conf"
    args = loopback(workdir=tmp_path)
    args[args.index("--confdir") + 1] = str(confdir)
    line = one_line(run_cli("run", *args))
    assert line == (
        f"chatdebug: --confdir / CHATDEBUG_CONFDIR: cannot write the CA to {confdir}: "
        "not a directory; choose a directory you can write"
    )
    assert not (tmp_path / "chatdebug.db").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_a_read_only_ca_directory_stops_before_ready(tmp_path: Path) -> None:
    confdir = tmp_path / "conf"
    confdir.mkdir(mode=0o500)
    line = one_line(run_cli("run", *loopback(workdir=tmp_path)))
    assert line.startswith(f"chatdebug: --confdir / CHATDEBUG_CONFDIR: cannot write the CA to {confdir}: ")


def test_a_database_directory_that_cannot_be_written_names_path_and_setting(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    env = {"CHATDEBUG_DATABASE": f"sqlite:///{tmp_path / 'a-file' / 'chatdebug.db'}"}
    args = loopback(workdir=tmp_path)
    del args[args.index("--database") : args.index("--database") + 2]
    line = one_line(run_cli("run", *args, env=env))
    assert line == (
        f"chatdebug: --database / CHATDEBUG_DATABASE: cannot create the database in {tmp_path / 'a-file'}: "
        "not a directory; choose a directory you can write"
    )


def test_a_database_path_that_is_not_a_file_is_named(tmp_path: Path) -> None:
    taken = tmp_path / "taken.db"
    taken.mkdir()
    args = loopback(workdir=tmp_path)
    args[args.index("--database") + 1] = f"sqlite:///{taken}"
    line = one_line(run_cli("run", *args))
    assert line == (
        f"chatdebug: --database / CHATDEBUG_DATABASE: cannot write the database {taken}: "
        "is a directory; fix its permissions or choose another path"
    )


def test_a_spool_path_that_cannot_be_written_names_its_setting(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    line = one_line(
        run_cli("run", *loopback("--spool-path", str(tmp_path / "a-file" / "s"), workdir=tmp_path))
    )
    assert line.startswith("chatdebug: --spool-path / CHATDEBUG_SPOOL_PATH: cannot create the spool in ")


@pytest.mark.parametrize(
    ("variable", "hint"),
    [
        ("CHATDEBUG_DATABSE", "did you mean CHATDEBUG_DATABASE?"),
        ("CHATDEBUG_RETENTION", "did you mean CHATDEBUG_RETENTION_DAYS?"),
        ("CHATDEBUG_INTERCEPT_HOST", "did you mean CHATDEBUG_INTERCEPT_HOSTS?"),
        ("CHATDEBUG_NOTHING_LIKE_IT", "no setting has that name (see chatdebug --help)"),
    ],
)
def test_a_mistyped_variable_is_named_with_the_closest_setting(
    tmp_path: Path, variable: str, hint: str
) -> None:
    line = one_line(run_cli("run", *loopback(workdir=tmp_path), env={variable: "x"}))
    assert line == f"chatdebug: unknown setting {variable}: {hint}"


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--api-addr", "0.0.0.0:0", "--api-token", ""], {}),
        (["--api-addr", "0.0.0.0:0"], {"CHATDEBUG_API_TOKEN": ""}),
        (["--api-token", "  "], {}),  # on loopback too: the same setting means the same everywhere
    ],
)
def test_an_empty_token_is_an_invalid_setting_not_no_authentication(
    tmp_path: Path, args: list[str], env: dict[str, str]
) -> None:
    base = loopback(workdir=tmp_path)
    del base[base.index("--api-addr") : base.index("--api-addr") + 2]
    line = one_line(run_cli("run", *base, *args, env=env))
    assert line.startswith("chatdebug: invalid setting --api-token / CHATDEBUG_API_TOKEN: is empty; ")
    assert not (tmp_path / "chatdebug.db").exists()


def test_version_and_help_name_every_variable_and_default() -> None:
    version = run_cli("--version", env={"CHATDEBUG_MISTYPED": "1"})  # no setting is read for these
    assert version.returncode == 0 and re.fullmatch(r"chatdebug \d+\.\d+\.\d+\S*\n", version.stdout)
    help_ = run_cli("--help", env={"CHATDEBUG_MISTYPED": "1"})
    assert help_.returncode == 0
    entries = {
        " ".join(e.split()).split()[0]: " ".join(e.split()) for e in re.split(r"\n  (?=-)", help_.stdout)
    }
    for setting, flag in flags().items():
        assert f"(env {env_name(setting)}" in entries[flag.name] and "default " in entries[flag.name]
    assert entries["--proxy-addr"].endswith("(env CHATDEBUG_PROXY_ADDR; default 127.0.0.1:8080)")
    assert entries["--retention-days"].endswith("(env CHATDEBUG_RETENTION_DAYS; default 30)")
    assert (
        "(env CHATDEBUG_INTERCEPT_HOSTS, comma-separated; default built-in provider hosts)"
        in entries["--intercept-host"]
    )


def test_readme_settings_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    table = "".join(ln + "\n" for ln in section.splitlines() if ln.startswith("|"))
    assert table == settings_table(), "README's table is stale: paste the output of `python -m proxy.flags`"
    printed = subprocess.run(
        [str(Path(CHATDEBUG).parent / "python"), "-m", "proxy.flags"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert printed.stdout == settings_table()


def test_ready_line_names_the_absolute_database_and_warns_about_a_relative_tmp(tmp_path: Path) -> None:
    """`sqlite:///tmp/x.db` is relative (SQLAlchemy's convention): kept, but said out loud."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHATDEBUG_")}
    args = loopback(workdir=tmp_path)
    args[args.index("--database") + 1] = "sqlite:///tmp/x.db"
    log_path = tmp_path / "log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([CHATDEBUG, "run", *args], cwd=tmp_path, env=clean, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while "chatdebug ready" not in (text := log_path.read_text()):
            assert process.poll() is None and time.monotonic() < deadline, text
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    ready = next(ln for ln in text.splitlines() if ln.startswith("chatdebug ready"))
    assert re.fullmatch(
        r"chatdebug ready · proxy http://127\.0\.0\.1:\d+ \(HTTPS_PROXY\) · api http://127\.0\.0\.1:\d+"
        rf" · database {re.escape(str(tmp_path / 'tmp' / 'x.db'))}"
        rf" · trust the CA: {re.escape(str(tmp_path / 'conf' / 'ca.pem'))}",
        ready,
    ), ready
    assert (tmp_path / "tmp" / "x.db").exists()
    warning = next(ln for ln in text.splitlines() if "relative to the working directory" in ln)
    assert "for /tmp/x.db write sqlite:////tmp/x.db" in warning
    assert text.index(warning) < text.index(ready)
