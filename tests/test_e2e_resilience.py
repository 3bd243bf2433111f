"""Never in the way: a locked database, kill -9, SIGTERM, and planted secrets, with the real sidecar."""

from __future__ import annotations

import json
import signal
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests import wire
from tests.conftest import FAKE_OPENAI_KEY, Sidecar, unique
from tests.test_e2e_record import openai_client
from tests.upstream import Gate, Reply, Seen, Upstream


def completion(seen: Seen) -> Reply:
    return Reply.json(wire.openai_completion("fine", usage=wire.openai_usage(5, 1)))


def ask(client, marker: str, i: int) -> str:  # type: ignore[no-untyped-def]
    reply = client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": f"{marker} #{i}"}]
    )
    return reply.choices[0].message.content


def db_runs(sidecar: Sidecar, marker: str) -> dict[str, str]:
    with sqlite3.connect(sidecar.db_path) as conn:
        rows = conn.execute(
            "SELECT first_message, status FROM runs WHERE first_message LIKE ?", (f"{marker}%",)
        )
        return dict(rows.fetchall())


def test_locked_database_never_slows_the_chat(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream
) -> None:
    sidecar = own_sidecar()
    marker = unique("locked")
    upstream.responder = completion
    client = openai_client(sidecar, upstream, max_retries=0)
    ask(client, marker, 0)
    sidecar.wait_runs(q=marker)

    blocker = sqlite3.connect(sidecar.db_path, isolation_level=None, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the database
    try:
        started = time.perf_counter()
        answers = [ask(client, marker, i) for i in range(1, 11)]
        elapsed = time.perf_counter() - started
        assert answers == ["fine"] * 10
        assert elapsed < 5, f"10 calls took {elapsed:.1f}s with the database locked"
        deadline = time.monotonic() + 10
        while (ready := httpx.get(sidecar.api_url + "/readyz", timeout=5)).status_code == 200:
            assert time.monotonic() < deadline, "the writer never noticed the lock"
            time.sleep(0.1)
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"] is False
        assert (sidecar.workdir / "chatdebug.db.spool").stat().st_size > 0
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    runs = sidecar.wait_runs(11, q=marker, timeout=20)  # replayed from the spool
    assert {r["status"] for r in runs} == {"completed"}
    assert httpx.get(sidecar.api_url + "/readyz", timeout=5).status_code == 200


def test_kill_9_during_live_streams(own_sidecar: Callable[..., Sidecar], upstream: Upstream) -> None:
    sidecar = own_sidecar()
    marker = unique("kill9")
    upstream.responder = completion
    client = openai_client(sidecar, upstream, max_retries=0)
    for i in range(5):
        ask(client, marker, i)  # committed before the crash
    sidecar.wait_runs(5, q=marker)

    never = threading.Event()
    for _ in range(20):
        upstream.push(
            Reply(
                200, {"Content-Type": "text/event-stream"}, [wire.openai_stream(["part"])[0], Gate(never, 20)]
            )
        )
    upstream.responder = None

    def stream(i: int) -> None:
        try:
            for _ in client.chat.completions.create(
                model="gpt-4.1", messages=[{"role": "user", "content": f"{marker} live {i}"}], stream=True
            ):
                pass
        except Exception:
            pass  # the proxy dies under it

    pool = ThreadPoolExecutor(20)
    for i in range(20):
        pool.submit(stream, i)
    sidecar.wait_runs(25, q=marker, settled=False)
    sidecar.stop(signal.SIGKILL)
    never.set()
    pool.shutdown(wait=True)

    with sqlite3.connect(sidecar.db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    restarted = own_sidecar()
    runs = restarted.wait_runs(25, q=marker)
    statuses = sorted(r["status"] for r in runs)
    assert statuses == ["completed"] * 5 + ["interrupted"] * 20
    live = [r for r in runs if "live" in r["first_message"]]
    attempt = restarted.run(live[0]["id"])["steps"][0]["attempts"][0]
    assert (attempt["status"], attempt["error"]["class"]) == ("interrupted", "canceled")


def test_sigterm_lands_every_queued_record(own_sidecar: Callable[..., Sidecar], upstream: Upstream) -> None:
    sidecar = own_sidecar()
    marker = unique("sigterm")
    upstream.responder = completion
    client = openai_client(sidecar, upstream, max_retries=0)
    with ThreadPoolExecutor(10) as pool:
        assert list(pool.map(lambda i: ask(client, marker, i), range(40))) == ["fine"] * 40
    assert sidecar.stop(signal.SIGTERM) == 0  # right away: records may still be queued
    assert db_runs(sidecar, marker) == {f"{marker} #{i}": "completed" for i in range(40)}
    assert "stopped;" in sidecar.log()


SECRETS = {
    "bearer": "sk-proj-PLANTEDbearer000000000000000000000001",
    "xapikey": "PLANTED-x-api-key-value-0002",
    "custom": "PLANTED-custom-token-0003",
    "query": "PLANTEDquerykey0004",
    "body": "PLANTED-body-password-0005",
    "cookie": "PLANTED-session-cookie-0006",
    "basic": "PLANTED-basic-password-0007",
}


def test_planted_secrets_never_reach_disk_or_logs(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream
) -> None:
    sidecar = own_sidecar("--log-level", "debug")
    marker = unique("secrets")
    upstream.push(
        Reply.json(
            wire.openai_error(
                f"Incorrect API key provided: {SECRETS['bearer']}.",
                "invalid_request_error",
                "invalid_api_key",
            ),
            status=401,
        ),
        Reply.json(json.dumps({"echo": {"api_key": SECRETS["body"]}, "choices": []}).encode()),
    )
    body = {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": marker}],
        "metadata": {"password": SECRETS["body"]},
        "api_key": SECRETS["body"],
    }
    headers = {
        "Authorization": f"Bearer {SECRETS['bearer']}",
        "x-api-key": SECRETS["xapikey"],
        "x-internal-auth-token": SECRETS["custom"],
        "Cookie": f"session={SECRETS['cookie']}",
    }
    verify = ssl.create_default_context(cafile=str(sidecar.ca_file))
    with httpx.Client(proxy=sidecar.proxy_url, verify=verify, timeout=20) as client:
        url = f"{upstream.url}/v1/chat/completions?key={SECRETS['query']}&api-version=1"
        assert client.post(url, json=body, headers=headers).status_code == 401
        basic = httpx.BasicAuth("user", SECRETS["basic"])
        assert client.post(url, json=body, auth=basic).status_code == 200
    (run,) = sidecar.wait_runs(q=marker)  # the re-sent request is the step's second attempt
    attempt, second = sidecar.run(run["id"])["steps"][0]["attempts"]
    assert attempt["error"]["class"] == "auth_error"
    assert second["request_headers"]["authorization"] == "[REDACTED]"
    assert "key=%5BREDACTED%5D" in attempt["url"] or "key=[REDACTED]" in attempt["url"]
    detail = sidecar.get(f"/api/v1/attempts/{attempt['id']}")
    assert "[REDACTED]" in detail["response_body"]

    files = [p for p in sidecar.workdir.iterdir() if p.is_file() and p.suffix != ".pem"]
    assert any(p.name.endswith("-wal") for p in files)  # the WAL is searched too
    for path in files:
        raw = path.read_bytes()
        for name, secret in SECRETS.items():
            assert secret.encode() not in raw, f"{name} secret found in {path.name}"
    sidecar.stop()
    for path in sidecar.workdir.iterdir():
        if path.is_file():
            for name, secret in SECRETS.items():
                assert secret.encode() not in path.read_bytes(), (
                    f"{name} secret found in {path.name} after stop"
                )
    assert FAKE_OPENAI_KEY not in sidecar.log()
