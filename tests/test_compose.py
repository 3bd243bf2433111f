"""What compose gives the example client: the CA certificate and nothing else of the sidecar's,
and an image that runs on any machine (no Docker engine here: the files are read and checked)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from tests import wire
from tests.conftest import Sidecar
from tests.upstream import Reply, Upstream

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, Any]:
    return YAML(typ="safe").load((ROOT / "compose.yaml").read_text())


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Container path -> (volume, mode) of a service's short-syntax volumes."""
    out = {}
    for spec in service.get("volumes", []):
        volume, target, *mode = spec.split(":")
        out[target] = (volume, mode[0] if mode else "rw")
    return out


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_no_client_mounts_the_sidecar_data() -> None:
    services = compose()["services"]
    data_volume = mounts(services["chatdebug"])["/data"][0]
    client = services["example-client"]
    assert [volume for volume, _ in mounts(client).values()] == ["chatdebug-ca"]
    assert data_volume != "chatdebug-ca"
    for name, service in services.items():
        if name not in ("chatdebug", "publish-ca"):
            assert data_volume not in [v for v, _ in mounts(service).values()], name
    assert all(mode == "ro" for _, mode in mounts(client).values())


def test_only_the_certificate_is_published() -> None:
    publisher = compose()["services"]["publish-ca"]
    assert publisher["image"] == compose()["services"]["chatdebug"]["image"]  # the sidecar's own user
    assert mounts(publisher)["/data"] == ("chatdebug-data", "ro")
    assert mounts(publisher)["/ca"] == ("chatdebug-ca", "rw")
    command, source, target = publisher["entrypoint"]
    assert (command, Path(source).name, target) == ("cp", "ca.pem", "/ca/ca.pem")  # never mitmproxy-ca.pem
    sidecar = instructions(ROOT / "Dockerfile")
    runs = " ".join(args for op, args in sidecar if op == "RUN")
    assert "install -d -o chatdebug -g chatdebug -m 0755 /ca" in runs  # the volume starts writable by it


def test_the_example_client_is_built_with_its_sdk_and_runs_as_a_user_with_a_home() -> None:
    client = compose()["services"]["example-client"]
    assert "command" not in client and "user" not in client  # what runs is the image's own
    folder = ROOT / client["build"]
    steps = instructions(folder / "Dockerfile")
    ops = [op for op, _ in steps]
    assert ops.index("RUN") < ops.index("USER") < ops.index("CMD")  # installed as root, at build time
    run = next(args for op, args in steps if op == "RUN")
    assert any(w.startswith("openai") for w in shlex.split(run)) and "--user" not in run
    user = next(args for op, args in steps if op == "USER")
    assert re.search(rf"useradd .*--create-home --home-dir (/home/{user}) {user}", run)
    assert next(args for op, args in steps if op == "WORKDIR") == f"/home/{user}"
    cmd = next(args for op, args in steps if op == "CMD")
    script = folder / shlex.split(cmd.strip("[]").replace(",", " "))[-1].strip('"')
    compile(script.read_text(), str(script), "exec")  # the script it runs is there and is Python
    ca = client["environment"]["CHATDEBUG_CA"]
    assert Path(ca).parent.as_posix() in mounts(client)
    assert "CHATDEBUG_CA" in script.read_text()


def test_the_example_client_talks_through_the_sidecar(sidecar: Sidecar, upstream: Upstream) -> None:
    """The script as the image runs it, against the real sidecar, trusting ca.pem alone."""
    upstream.push(Reply.json(wire.openai_completion("hello from upstream", usage=wire.openai_usage(3, 2))))
    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper() and not k.startswith("SSL_")}
    env |= {
        "HTTPS_PROXY": sidecar.proxy_url,
        "CHATDEBUG_CA": str(sidecar.ca_file),
        "OPENAI_API_KEY": "sk-test-example-client-0000000000",
        "OPENAI_BASE_URL": f"{upstream.url}/v1",  # an intercepted host the sidecar verifies itself
    }
    script = ROOT / "examples" / "client" / "client.py"
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "hello from upstream"
    assert upstream.seen[-1].path == "/v1/chat/completions"


def test_the_replicas_profile_shares_one_postgres_and_one_ca() -> None:
    services = compose()["services"]
    replicas = {name: s for name, s in services.items() if name.startswith("chatdebug-")}
    assert len(replicas) == 2
    assert all(s["profiles"] == ["replicas"] for s in [*replicas.values(), services["postgres"]])
    urls = {s["environment"]["CHATDEBUG_DATABASE"] for s in replicas.values()}
    (url,) = urls  # one store
    assert url.startswith("postgresql://") and "@postgres:5432/" in url
    assert sorted(s["environment"]["CHATDEBUG_REPLICA"] for s in replicas.values()) == ["a", "b"]
    cas = {mounts(s)["/data/conf"][0] for s in replicas.values()}
    spools = {mounts(s)["/data"][0] for s in replicas.values()}
    assert len(cas) == 1 and len(spools) == 2  # one CA to trust; a spool each
    assert replicas["chatdebug-b"]["depends_on"] == {"chatdebug-a": {"condition": "service_healthy"}}
    ports = {s["ports"][0] for s in replicas.values()}
    assert all(p.startswith("127.0.0.1:") for p in ports) and len(ports) == 2
    runs = " ".join(args for op, args in instructions(ROOT / "Dockerfile") if op == "RUN")
    assert "install -d -o chatdebug -g chatdebug -m 0700 /data/conf" in runs  # the CA volume is its own
