"""Statuses tell the truth while it happens, through the real proxy with the official SDKs.

- A stream that delivered its terminal event is `completed`, whatever the client does next
  (the openai SDK closes the connection right after `[DONE]`).
- A client that goes away is `interrupted` / `canceled` at once, over HTTP/1.1 and HTTP/2
  alike, long before the retry window ends; a retry that comes later still joins the step and
  its success wins.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from tests import wire
from tests.conftest import Sidecar, unique
from tests.test_e2e_hostile import CHAT, SSE, USAGE, tunnel
from tests.test_e2e_record import openai_client
from tests.upstream import Gate, Reply, Upstream

RETRY_WINDOW = 30  # long, so that "at once" cannot be the retry window running out


@pytest.fixture
def patient(own_sidecar: Callable[..., Sidecar]) -> Sidecar:
    return own_sidecar("--retry-window", str(RETRY_WINDOW))


def run_where(sidecar: Sidecar, marker: str, timeout: float = 10.0, **want: str) -> dict[str, Any]:
    """The one run whose prompt holds `marker`, once its fields are as wanted."""
    deadline = time.monotonic() + timeout
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        runs = sidecar.runs(q=marker)
        if len(runs) == 1 and all(runs[0].get(k) == v for k, v in want.items()):
            return sidecar.run(runs[0]["id"])
        time.sleep(0.05)
    raise AssertionError(f"no run {want} for {marker}: {runs}\n{sidecar.log()[-2000:]}")


def held_after_done(text: str, release: threading.Event) -> Reply:
    """An SSE stream that says `[DONE]` and then keeps the connection open, as slow servers do."""
    return Reply(200, {"Content-Type": SSE}, [*wire.openai_stream([text], usage=USAGE), Gate(release, 5.0)])


def test_streams_the_sdk_closes_right_after_done_are_completed(sidecar: Sidecar, upstream: Upstream) -> None:
    release = threading.Event()
    client = openai_client(sidecar, upstream)
    markers = [unique(f"done-then-close-{i}") for i in range(6)]
    try:
        for i, marker in enumerate(markers):
            upstream.push(held_after_done(f"answer {i}", release))
            if i % 2:  # the SDK, as applications use it
                stream = client.chat.completions.create(
                    model="gpt-4.1", messages=[{"role": "user", "content": marker}], stream=True
                )
                assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == f"answer {i}"
                stream.close()
            else:  # a client that hangs up the moment it reads [DONE]
                body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": marker}], "stream": True}
                with (
                    httpx.Client(
                        proxy=sidecar.proxy_url,
                        verify=ssl.create_default_context(cafile=str(sidecar.ca_file)),
                        timeout=10,
                    ) as http,
                    http.stream("POST", f"{upstream.url}{CHAT}", json=body) as response,
                ):
                    for line in response.iter_lines():
                        if line == "data: [DONE]":
                            break
    finally:
        release.set()
    for marker in markers:
        run = run_where(sidecar, marker, status="completed")
        (attempt,) = run["steps"][0]["attempts"]
        assert (attempt["status"], attempt["error"]) == ("completed", None)


def test_a_client_that_goes_away_is_interrupted_at_once_and_its_retry_joins_the_step(
    patient: Sidecar, upstream: Upstream
) -> None:
    marker = unique("cancel-then-retry")
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": marker}], "stream": True}
    release = threading.Event()
    upstream.push(Reply(200, {"Content-Type": SSE}, [wire.openai_stream(["par"])[0], Gate(release, 10.0)]))
    started = time.monotonic()
    try:
        with (
            httpx.Client(
                proxy=patient.proxy_url,
                verify=ssl.create_default_context(cafile=str(patient.ca_file)),
                timeout=10,
            ) as http,
            http.stream("POST", f"{upstream.url}{CHAT}", json=body) as response,
        ):
            next(response.iter_bytes())  # the first event arrived; the user closes the tab
    finally:
        release.set()
    run = run_where(patient, marker, status="interrupted")
    assert time.monotonic() - started < RETRY_WINDOW / 2  # at once, not when the window ends
    (attempt,) = run["steps"][0]["attempts"]
    assert (attempt["status"], attempt["error"]["class"]) == ("interrupted", "canceled")
    assert run["steps"][0]["status"] == "interrupted"

    upstream.push(Reply.events(wire.openai_stream(["whole answer"], usage=USAGE)))
    client = openai_client(patient, upstream)
    stream = client.chat.completions.create(model="gpt-4.1", messages=body["messages"], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "whole answer"
    run = run_where(patient, marker, status="completed")
    (step,) = run["steps"]
    assert step["status"] == "completed"
    assert [a["status"] for a in step["attempts"]] == ["interrupted", "completed"]
    assert step["attempts"][1]["retry_signal"]


@pytest.mark.parametrize("how", ["reset_stream", "close_connection"])
def test_an_http2_client_that_goes_away_is_canceled_at_once(
    patient: Sidecar, upstream: Upstream, how: str
) -> None:
    from h2 import events as h2events
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.errors import ErrorCodes

    marker = unique(f"h2-{how}")
    release = threading.Event()
    upstream.push(Reply(200, {"Content-Type": SSE}, [wire.openai_stream(["half"])[0], Gate(release, 10.0)]))
    body = json.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": marker}], "stream": True})
    sock = tunnel(patient, upstream.port, alpn=["h2"])
    assert sock.selected_alpn_protocol() == "h2"
    conn = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    headers = [
        (":method", "POST"), (":scheme", "https"), (":authority", f"127.0.0.1:{upstream.port}"),
        (":path", CHAT), ("content-type", "application/json"), ("content-length", str(len(body))),
    ]  # fmt: skip
    conn.send_headers(1, headers)
    conn.send_data(1, body.encode(), end_stream=True)
    sock.sendall(conn.data_to_send())
    started = time.monotonic()
    try:
        got_data = False
        while not got_data:
            data = sock.recv(65536)
            assert data, "the proxy closed the connection"
            got_data = any(isinstance(e, h2events.DataReceived) for e in conn.receive_data(data))
            sock.sendall(conn.data_to_send())
        if how == "reset_stream":
            conn.reset_stream(1, ErrorCodes.CANCEL)
            sock.sendall(conn.data_to_send())
        else:
            sock.close()
        run = run_where(patient, marker, status="interrupted")
    finally:
        release.set()
        sock.close()
    assert time.monotonic() - started < RETRY_WINDOW / 2
    (attempt,) = run["steps"][0]["attempts"]
    assert (attempt["status"], attempt["error"]["class"]) == ("interrupted", "canceled"), attempt["error"]


def test_stats_count_provider_failures_not_our_own_parse_trouble(
    sidecar: Sidecar, upstream: Upstream
) -> None:
    client = openai_client(sidecar, upstream, max_retries=0)
    before = sidecar.get("/api/v1/stats")["attempts"]
    upstream.push(Reply.json(b"not json at all", 200))  # our trouble: the response cannot be read
    upstream.push(Reply.json(json.dumps({"error": {"message": "slow down"}}).encode(), 429))
    with pytest.raises((openai.APIError, ValueError)):  # the SDK cannot read it either
        client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": unique("p")}])
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": unique("r")}])
    deadline = time.monotonic() + 10
    after = before
    while time.monotonic() < deadline and after["total"] < before["total"] + 2:
        after = sidecar.get("/api/v1/stats")["attempts"]
        time.sleep(0.05)
    assert after["total"] == before["total"] + 2
    assert after["with_error"] == before["with_error"] + 1  # the 429, not the unreadable body
    assert after["by_error_class"].get("proxy_error", 0) == before["by_error_class"].get("proxy_error", 0) + 1
