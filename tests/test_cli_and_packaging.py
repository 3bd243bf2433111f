"""The command line, settings errors, and what the Docker image and compose file run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from proxy.cli import load_settings
from proxy.flags import unknown_env
from proxy.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CHATDEBUG = str(Path(sys.executable).parent / "chatdebug")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHATDEBUG_")}
    return subprocess.run(
        [CHATDEBUG, *args], env={**clean, **(env or {})}, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["--proxy-addr", "127.0.0.1:99999"], {}, "--proxy-addr / CHATDEBUG_PROXY_ADDR"),
        ([], {"CHATDEBUG_DATABASE": "mysql://x"}, "--database / CHATDEBUG_DATABASE"),
        (["--reverse", "api.openai.com:8082"], {}, "--reverse / CHATDEBUG_REVERSE"),
        (["--retention-days", "-1"], {}, "--retention-days / CHATDEBUG_RETENTION_DAYS"),
        (["--api-addr", "0.0.0.0:8081"], {}, "--api-addr / CHATDEBUG_API_ADDR"),
    ],
)
def test_bad_setting_stops_with_one_clear_line(args: list[str], env: dict[str, str], names: str) -> None:
    result = run_cli("run", *args, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"chatdebug: invalid setting {names}: ")


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATDEBUG_PROXY_ADDR", "127.0.0.1:9000")
    monkeypatch.setenv("CHATDEBUG_INTERCEPT_HOSTS", "llm.internal:8443, *.corp.example")
    monkeypatch.setenv("CHATDEBUG_REVERSE", "https://api.openai.com@8082")
    settings = load_settings(["--proxy-addr", "127.0.0.1:9001", "--reverse", "http://localhost:11434@8083"])
    assert settings.proxy_addr == ("127.0.0.1", 9001)
    assert settings.intercept_hosts == ["llm.internal:8443", "*.corp.example"]
    assert [(r.url, r.port) for r in settings.reverse] == [("http://localhost:11434", 8083)]
    assert load_settings([]).reverse[0].host_port == "api.openai.com:443"


def test_the_api_beyond_loopback_needs_a_token_or_explicit_anonymity() -> None:
    assert load_settings(["--api-addr", "0.0.0.0:8081", "--api-token", "t0ken-value"]).api_token is not None
    assert load_settings(["--api-addr", "0.0.0.0:8081", "--api-allow-anonymous"]).api_allow_anonymous


def _dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_image_runs_the_console_script_the_tests_use() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"chatdebug": "proxy.cli:main"}
    assert 'ENTRYPOINT ["chatdebug"]' in _dockerfile()
    assert 'CMD ["run"]' in _dockerfile()
    assert re.search(r"^FROM python:3\.12-slim$", _dockerfile(), re.M)
    assert re.search(r"^USER chatdebug$", _dockerfile(), re.M)
    assert "http://127.0.0.1:8081/healthz" in _dockerfile()


def test_image_environment_is_a_valid_configuration() -> None:
    env = dict(re.findall(r"^(?:ENV)?\s+(CHATDEBUG_[A-Z_]+)=(\S+?)(?:\s*\\)?$", _dockerfile(), re.M))
    assert len(env) == 4
    compose = YAML(typ="safe").load((ROOT / "compose.yaml").read_text())
    sidecar = compose["services"]["chatdebug"]
    env.update(
        {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in sidecar["environment"].items()}
    )
    settings = Settings(**{k.removeprefix("CHATDEBUG_").lower(): v for k, v in env.items()})
    assert settings.proxy_addr == ("0.0.0.0", 8080)
    assert settings.sqlite_path == "/data/chatdebug.db"
    client = compose["services"]["example-client"]
    assert client["environment"]["HTTPS_PROXY"] == f"http://chatdebug:{settings.proxy_addr[1]}"
    publisher = compose["services"]["publish-ca"]
    assert publisher["depends_on"]["chatdebug"]["condition"] == "service_healthy"
    # the client trusts ca.pem from the sidecar's confdir, published into a volume of its own
    assert publisher["entrypoint"][1] == str(settings.confdir / "ca.pem")
    volume, _, mount = publisher["volumes"][1].partition(":")
    assert f"{volume}:/chatdebug-ca:ro" in client["volumes"]
    assert Path(publisher["entrypoint"][2]).parent == Path(mount)
    assert client["environment"]["CHATDEBUG_CA"] == "/chatdebug-ca/ca.pem"


def test_ca_key_is_private_and_api_defaults_to_loopback(sidecar) -> None:  # type: ignore[no-untyped-def]
    key = sidecar.ca_file.parent / "mitmproxy-ca.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" not in sidecar.ca_file.read_bytes()  # what clients get is the certificate only
    assert Settings().api_addr == ("127.0.0.1", 8081)
    assert Settings().proxy_addr == ("127.0.0.1", 8080)


def test_a_token_is_taken_without_surrounding_whitespace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATDEBUG_API_TOKEN", "t0ken-value\n")  # a token file read whole
    assert load_settings([]).token == "t0ken-value"


def test_the_fuzz_knobs_are_not_mistaken_for_settings() -> None:
    assert unknown_env(["CHATDEBUG_FUZZ_EXAMPLES", "CHATDEBUG_FUZZ_REPORT", "CHATDEBUG_DATABASE"]) is None
    assert unknown_env(["CHATDEBUG_DATABASE_URL"]) == ("CHATDEBUG_DATABASE_URL", "CHATDEBUG_DATABASE")
