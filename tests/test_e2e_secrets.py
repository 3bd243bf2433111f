"""Planted secrets through the real sidecar: none reaches the spool, the database (its WAL and
full-text index), the API or the log, wherever in the traffic it hides."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests import wire
from tests.conftest import Sidecar, unique
from tests.upstream import Reply, Upstream

PLANTED = {
    "first_message": "sk-proj-PLANTEDfirstmessage00000000000001",
    "bearer": "PLANTED-opaque-bearer-0002",
    "header_value": "sk-proj-PLANTEDinheader0000000000000003",
    "model": "sk-proj-PLANTEDinmodel00000000000000004",
    "tool_result": "PLANTED-tool-result-field-0005",
    "list_field": "PLANTED-list-valued-field-0006",
    "object_field": "PLANTED-object-valued-field-0007",
    "escaped_name": "PLANTED-escaped-name-0008",
    "long_name": "PLANTED-long-credential-name-0009",
    "auth_param": "PLANTED-auth-param-0010",
    "private_token": "PLANTED-private-token-0011",
    "response_args": "PLANTED-response-arguments-0012",
    "gemini_key": "AIzaSyPLANTEDgeminiQueryKey000000000013",
}
LONG_NAME = "warehouse_service_account_for_the_nightly_reporting_jobs_" * 2 + "secret_access_key"


def chat_body(marker: str) -> bytes:
    """Written by hand: an escaped credential name only exists in raw JSON text."""
    tool_result = json.dumps({"api_key": PLANTED["tool_result"], "rows": 2})
    messages = [
        {"role": "user", "content": f"{marker}: my key is {PLANTED['first_message']}"},
        {"role": "assistant", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "query", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": tool_result},
    ]  # fmt: skip
    return (
        '{{"model": {}, "messages": {}, "api\\u005fkey": "{}", "{}": "{}", '
        '"credentials": ["{}"], "auth": {{"user": "me", "pass": "{}"}}, "max_tokens": 50}}'.format(
            json.dumps(PLANTED["model"]), json.dumps(messages), PLANTED["escaped_name"], LONG_NAME,
            PLANTED["long_name"], PLANTED["list_field"], PLANTED["object_field"],
        )
    ).encode()  # fmt: skip


def secrets_in(path: Path) -> list[str]:
    raw = path.read_bytes()
    return [name for name, secret in PLANTED.items() if secret.encode() in raw]


def api_text(sidecar: Sidecar, run_id: str) -> str:
    run = sidecar.run(run_id)
    texts = [json.dumps(run), json.dumps(sidecar.get(f"/api/v1/runs/{run_id}/export"))]
    for step in run["steps"]:
        texts += [json.dumps(sidecar.get(f"/api/v1/attempts/{a['id']}")) for a in step["attempts"]]
    return "\n".join(texts)


def events_sent(sidecar: Sidecar) -> str:
    """Everything /api/v1/events has sent so far: a new subscriber is replayed the buffer."""
    lines: list[str] = []
    url = f"{sidecar.api_url}/api/v1/events"
    # A read that times out: the replay is over, only new events (or a heartbeat) would come.
    with (
        httpx.stream("GET", url, timeout=httpx.Timeout(5, read=2)) as stream,
        contextlib.suppress(httpx.ReadTimeout),
    ):
        for line in stream.iter_lines():
            lines.append(line)
    return "\n".join(lines)


def test_planted_secrets_reach_neither_spool_nor_database_nor_api_nor_log(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream
) -> None:
    sidecar = own_sidecar("--log-level", "debug")
    marker = unique("planted")
    arguments = json.dumps({"query": "select 1", "password": PLANTED["response_args"]})
    upstream.push(
        Reply.json(wire.openai_completion(f"the tool said {arguments}", usage=wire.openai_usage(9, 3))),
        Reply.sse(b'data: {"candidates": [{"content": {"parts": [{"text": "hi"}], "role": "model"}, '
                  b'"finishReason": "STOP"}]}\r\n\r\n'),
    )  # fmt: skip
    verify = ssl.create_default_context(cafile=str(sidecar.ca_file))
    spool = sidecar.workdir / "chatdebug.db.spool"
    blocker = sqlite3.connect(sidecar.db_path, isolation_level=None, timeout=5)  # past a start-up write
    blocker.execute("BEGIN EXCLUSIVE")  # the rows go to the spool first, then to the database
    try:
        with httpx.Client(proxy=sidecar.proxy_url, verify=verify, timeout=20) as client:
            url = (
                f"{upstream.url}/v1/chat/completions?auth={PLANTED['auth_param']}"
                f"&private_token={PLANTED['private_token']}&api-version=1"
            )
            headers = {
                "Authorization": f"Bearer {PLANTED['bearer']}",
                "X-Request-Note": PLANTED["header_value"],
                "Content-Type": "application/json",
            }
            assert client.post(url, content=chat_body(marker), headers=headers).status_code == 200
            gemini = (
                f"{upstream.url}/v1beta/models/gemini-2.5-flash:streamGenerateContent"
                f"?alt=sse&key={PLANTED['gemini_key']}"
            )
            gemini_body = {"contents": [{"role": "user", "parts": [{"text": f"{marker} gemini"}]}]}
            assert client.post(gemini, json=gemini_body).status_code == 200
        deadline = time.monotonic() + 15
        while not (spool.exists() and spool.stat().st_size > 0):
            assert time.monotonic() < deadline, "nothing was spooled while the database was locked"
            time.sleep(0.05)
        time.sleep(0.5)  # let the rest of the two exchanges land there too
        assert secrets_in(spool) == []
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    runs = sidecar.wait_runs(2, q=marker, timeout=20)
    sent = events_sent(sidecar)
    assert marker in sent  # the events of both runs went out
    assert [name for name, secret in PLANTED.items() if secret in sent] == []
    assert all(r["first_message"].startswith(marker) for r in runs)
    assert sidecar.runs(q="sk-proj") == []  # the full-text index never saw the key
    assert sidecar.get("/api/v1/conversations", q="sk-proj")["conversations"] == []
    chat = next(r for r in runs if "gemini" not in r["first_message"])
    assert chat["first_message"] == f"{marker}: my key is [REDACTED]"
    assert chat["model"] == "[REDACTED]"
    text = api_text(sidecar, chat["id"]) + api_text(sidecar, next(r for r in runs if r is not chat)["id"])
    assert [name for name, secret in PLANTED.items() if secret in text] == []
    attempt = sidecar.run(chat["id"])["steps"][0]["attempts"][0]
    assert "auth=[REDACTED]" in attempt["url"] and "private_token=[REDACTED]" in attempt["url"]
    assert attempt["request_headers"]["x-request-note"] == "[REDACTED]"

    files = [p for p in sidecar.workdir.iterdir() if p.is_file() and p.suffix != ".pem"]
    assert any(p.name.endswith("-wal") for p in files)
    for path in files:  # the database, its WAL, the spool and the debug log
        assert secrets_in(path) == [], path.name
    sidecar.stop()
    for path in sidecar.workdir.iterdir():
        if path.is_file():
            assert secrets_in(path) == [], f"{path.name} after stop"
