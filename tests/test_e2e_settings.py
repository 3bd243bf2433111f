"""Settings seen in effect on the real sidecar: where the spool goes, what is said about tunnels."""

from __future__ import annotations

import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mitmproxy.test import tflow

from proxy.cli import load_settings
from proxy.mitm import Drain
from tests.conftest import Sidecar, unique
from tests.test_e2e_record import openai_client
from tests.test_e2e_resilience import ask, completion
from tests.upstream import Upstream


def test_spool_path_is_where_records_wait_for_the_database(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream, tmp_path: Path
) -> None:
    spool = tmp_path / "elsewhere" / "records.spool"
    sidecar = own_sidecar("--spool-path", str(spool))
    upstream.responder = completion
    marker = unique("spool")
    client = openai_client(sidecar, upstream, max_retries=0)
    ask(client, marker, 0)
    sidecar.wait_runs(q=marker)
    blocker = sqlite3.connect(sidecar.db_path, isolation_level=None, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")  # the database stops taking writes: records spool
    try:
        ask(client, marker, 1)
        deadline = time.monotonic() + 15
        while not (spool.exists() and spool.stat().st_size > 0):
            assert time.monotonic() < deadline, sidecar.log()[-3000:]
            time.sleep(0.05)
        assert not (sidecar.workdir / "chatdebug.db.spool").exists()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    sidecar.wait_runs(2, q=marker, timeout=20)


def tunnel_once(sidecar: Sidecar, port: int) -> bytes:
    """CONNECT to a host that is not intercepted, and say one plain HTTP request through it."""
    host, proxy_port = sidecar.addrs["regular"].rsplit(":", 1)
    with socket.create_connection((host, int(proxy_port)), timeout=10) as sock:
        sock.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        sock.sendall(f"GET /ping HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        return reply


def test_a_tunnelled_host_is_named_once_with_how_to_record_it(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream
) -> None:
    sidecar = own_sidecar()
    for _ in range(2):
        assert tunnel_once(sidecar, upstream.plain_port).endswith(b"pong")
    host = f"127.0.0.1:{upstream.plain_port}"
    notice = f"{host} is tunnelled untouched and not recorded; to record it, pass --intercept-host {host}"
    deadline = time.monotonic() + 10
    while notice not in sidecar.log():
        assert time.monotonic() < deadline, sidecar.log()[-3000:]
        time.sleep(0.05)
    assert sidecar.log().count(notice) == 1
    assert sidecar.runs(q="ping") == []


def test_api_allowed_hosts_from_flags_and_a_comma_separated_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings([]).api_allowed_hosts == []
    monkeypatch.setenv("CHATDEBUG_API_ALLOWED_HOSTS", "chatdebug, Dash.Internal:8081")
    assert load_settings([]).api_allowed_hosts == ["chatdebug", "dash.internal:8081"]
    flags = ["--api-allowed-host", "a.example", "--api-allowed-host", "b.example"]
    assert load_settings(flags).api_allowed_hosts == ["a.example", "b.example"]
    assert load_settings(["--database", "sqlite:////x/y.db"]).spool_file == Path("/x/y.db.spool")
    assert load_settings(["--spool-path", "/s/p"]).spool_file == Path("/s/p")


@pytest.mark.parametrize(("version", "closes"), [("HTTP/1.1", True), ("HTTP/2.0", False)])
def test_responses_that_start_while_stopping_end_their_connection(version: str, closes: bool) -> None:
    """HTTP/1 says `Connection: close`; HTTP/2 forbids the header, its idle connections are closed."""
    drain = Drain()
    flow = tflow.tflow(resp=True)
    flow.request.http_version = version
    drain.requestheaders(flow)
    assert drain.in_flight == {flow.client_conn.id: {flow.id}}
    drain.responseheaders(flow)
    assert "connection" not in flow.response.headers  # not stopping: keep-alive as usual
    drain.stopping = True
    drain.responseheaders(flow)
    assert (flow.response.headers.get("connection") == "close") is closes
    drain.response(flow)
    assert drain.in_flight == {}

    late = tflow.tflow()
    drain.requestheaders(late)  # a call that starts while stopping is refused
    assert late.error is not None and late.killable is False
    assert drain.in_flight == {}
