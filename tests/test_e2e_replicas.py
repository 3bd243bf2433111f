"""Two sidecar processes on one PostgreSQL, as replicas behind a load balancer: clients alternate
between them within one conversation and within one tool loop, through the official SDK."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from storage.postgres import CONNECT_SECONDS
from storage.writer import STORE_TIMEOUT
from tests import wire
from tests.conftest import Certs, Sidecar, start_sidecar, unique
from tests.postgres import PostgresServer
from tests.test_e2e_grouping import tool_loop_reply
from tests.test_e2e_record import WEATHER_TOOL, openai_client
from tests.upstream import Reply, Upstream


@pytest.fixture
def replicas(
    tmp_path: Path, postgres_url: str, upstream: Upstream, certs: Certs
) -> Iterator[tuple[Sidecar, Sidecar]]:
    started = [
        start_sidecar(tmp_path / name, upstream, certs, "--database", postgres_url, "--replica", name)
        for name in ("a", "b")
    ]
    yield started[0], started[1]
    for sidecar in started:
        sidecar.stop()


def recorded(sidecar: Sidecar, marker: str, attempts: int) -> dict[str, Any]:
    """Wait until the marker's runs hold `attempts` finished attempts; the newest run's detail.
    A chat service runs its tools between round-trips: the previous one is stored by then."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        runs = sidecar.runs(q=marker)
        details = [sidecar.run(r["id"]) for r in runs]
        done = [a for d in details for s in d["steps"] for a in s["attempts"] if a["status"] != "in_progress"]
        if len(done) >= attempts:
            return details[0]
        time.sleep(0.05)
    raise AssertionError(f"{marker}: {attempts} attempts not recorded\n{sidecar.log()[-3000:]}")


def test_a_tool_loop_alternating_replicas_is_one_run(
    replicas: tuple[Sidecar, Sidecar], upstream: Upstream
) -> None:
    marker = unique("replicated-loop")
    upstream.responder = tool_loop_reply
    clients = [openai_client(s, upstream) for s in replicas]
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"{marker} weather twice please"}]
    for i in range(3):  # a, b, a: every round-trip through the other replica
        completion = clients[i % 2].chat.completions.create(
            model="gpt-4.1", messages=messages, tools=[WEATHER_TOOL]
        )
        message = completion.choices[0].message
        recorded(replicas[0], marker, i + 1)
        if not message.tool_calls:
            break
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'})
    assert message.content == f"Sunny twice, says {marker}."

    (run,) = replicas[1].wait_runs(q=marker)
    assert run["status"] == "completed"
    assert (run["step_count"], run["attempt_count"]) == (3, 3)
    assert run["usage"]["input_tokens"] == 100 + 110 + 120
    detail = replicas[0].run(run["id"])
    assert [s["number"] for s in detail["steps"]] == [1, 2, 3]
    assert [s["status"] for s in detail["steps"]] == ["completed"] * 3
    assert [len(s["attempts"]) for s in detail["steps"]] == [1, 1, 1]
    assert detail == replicas[1].run(run["id"])  # either replica answers the same

    # the next turn, through the other replica: the same conversation, a new run
    messages.append({"role": "assistant", "content": message.content})
    messages.append({"role": "user", "content": "and tomorrow?"})
    clients[1].chat.completions.create(model="gpt-4.1", messages=messages, tools=[WEATHER_TOOL])
    runs = replicas[0].wait_runs(2, settled=False, q=marker)
    assert runs[0]["id"] != run["id"]
    assert runs[0]["conversation_id"] == run["conversation_id"] is not None
    (conversation,) = [c for c in replicas[1].get("/api/v1/conversations")["conversations"]
                       if c["id"] == run["conversation_id"]]  # fmt: skip
    assert conversation["run_count"] == 2


def test_a_retry_through_the_other_replica_is_the_next_attempt(
    replicas: tuple[Sidecar, Sidecar], upstream: Upstream
) -> None:
    marker = unique("replicated-retry")
    upstream.push(
        Reply.json(wire.openai_error("Overloaded", "server_error", "overloaded"), status=503),
        Reply.json(wire.openai_completion("second time lucky", usage=wire.openai_usage(9, 3))),
    )
    request = {"model": "gpt-4.1", "messages": [{"role": "user", "content": marker}]}
    with pytest.raises(openai.InternalServerError):
        openai_client(replicas[0], upstream, max_retries=0).chat.completions.create(**request)
    recorded(replicas[0], marker, 1)
    completion = openai_client(replicas[1], upstream, max_retries=0).chat.completions.create(**request)
    assert completion.choices[0].message.content == "second time lucky"

    runs = replicas[0].wait_runs(q=marker)
    assert len(runs) == 1, [(r["status"], r["step_count"], r["attempt_count"]) for r in runs]
    (run,) = runs
    assert (run["status"], run["step_count"], run["attempt_count"]) == ("completed", 1, 2)
    (step,) = replicas[1].run(run["id"])["steps"]
    assert [(a["number"], a["status"]) for a in step["attempts"]] == [(1, "failed"), (2, "completed")]
    assert step["attempts"][1]["retry_signal"].startswith("identical request after")
    time.sleep(2.5)  # past replica a's retry window: what it knew of the step must not win
    assert replicas[0].run(run["id"])["steps"][0]["status"] == "completed"
    assert replicas[0].runs(q=marker)[0]["status"] == "completed"


def test_events_of_both_replicas_reach_a_subscriber_of_one(
    replicas: tuple[Sidecar, Sidecar], upstream: Upstream
) -> None:
    marker = unique("replicated-events")
    upstream.push(
        *(Reply.json(wire.openai_completion(f"answer {i}", usage=wire.openai_usage(4, 2))) for i in range(2))
    )
    seen: list[dict[str, Any]] = []
    subscribed = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{replicas[0].api_url}/api/v1/events", timeout=20) as response:
            subscribed.set()
            for line in response.iter_lines():
                if line.startswith("data: "):
                    event = json.loads(line.removeprefix("data: "))
                    if marker in json.dumps(event):
                        seen.append(event)
                if len({e.get("id") for e in seen if e.get("first_message")}) >= 2:
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert subscribed.wait(10)
    time.sleep(0.3)
    for i, sidecar in enumerate(replicas):
        openai_client(sidecar, upstream).chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": f"{marker} question {i}"}]
        )
    listener.join(20)
    runs = {e["id"]: e for e in seen if e.get("first_message")}
    assert sorted(r["first_message"] for r in runs.values()) == [
        f"{marker} question 0",
        f"{marker} question 1",
    ]
    assert {r["status"] for r in runs.values()} >= {"completed"}


def test_a_stop_while_postgres_is_frozen_ends_in_bounded_time_and_loses_nothing(
    tmp_path: Path, postgres_server: PostgresServer, postgres_url: str, upstream: Upstream, certs: Certs
) -> None:
    """SIGTERM while the server is silent: the writer gives up on it within its bound, spools
    what it holds and exits cleanly; the next start replays the spool once the server answers."""
    if postgres_server.datadir is None:
        pytest.skip("the server was given (TEST_POSTGRES_URL), not started here: it cannot be frozen")
    marker = unique("pg-frozen-stop")
    upstream.responder = lambda seen: Reply.json(
        wire.openai_completion("fine", usage=wire.openai_usage(5, 1))
    )
    sidecar = start_sidecar(tmp_path / "s", upstream, certs, "--database", postgres_url)
    client = openai_client(sidecar, upstream, max_retries=0)

    def ask(i: int) -> None:
        client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": f"{marker} {i}"}]
        )

    for i in range(5):
        ask(i)
    sidecar.wait_runs(5, q=marker)
    postgres_server.freeze()
    try:
        for i in range(5, 15):  # answered at once: the writer is off the traffic path
            ask(i)
        started = time.monotonic()
        code = sidecar.stop(timeout=6 * STORE_TIMEOUT)
        took = time.monotonic() - started
    finally:
        postgres_server.thaw()
    assert code == 0, sidecar.log()[-3000:]
    print("STOP TOOK", took)
    assert took < 2 * STORE_TIMEOUT, took
    again = start_sidecar(tmp_path / "s", upstream, certs, "--database", postgres_url)
    runs = again.wait_runs(15, q=marker, timeout=30)
    assert sorted(r["first_message"] for r in runs) == sorted(f"{marker} {i}" for i in range(15))
    again.stop()


@pytest.mark.parametrize("outage", ["stopped", "frozen"])
def test_postgres_away_mid_load_loses_nothing(
    outage: str,
    tmp_path: Path,
    postgres_server: PostgresServer,
    postgres_url: str,
    upstream: Upstream,
    certs: Certs,
) -> None:
    """The server goes away under load: stopped (connections cut, new ones refused), or frozen
    (its host hangs: no error, connections left open, no end to a write in flight). Every call
    is answered meanwhile, /readyz tells, and every record lands once the server is back."""
    if postgres_server.datadir is None:
        pytest.skip("the server was given (TEST_POSTGRES_URL), not started here: it cannot be cut")
    away, back, within = {
        # a batch that finds the pool's connections gone waits up to the pool's timeout for one
        "stopped": (postgres_server.stop_server, postgres_server.start_server, 2 * CONNECT_SECONDS),
        # a write or a call's placement left unanswered, and then a new connection: the bound
        "frozen": (postgres_server.freeze, postgres_server.thaw, 3 * STORE_TIMEOUT),
    }[outage]
    marker = unique(f"pg-{outage}")
    upstream.responder = lambda seen: Reply.json(
        wire.openai_completion("fine", usage=wire.openai_usage(5, 1))
    )
    sidecar = start_sidecar(tmp_path / "s", upstream, certs, "--database", postgres_url)
    client = openai_client(sidecar, upstream, max_retries=0)
    answers: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:
        # paced, so that calls go on through the whole outage however fast the machine is
        # (400 calls as fast as they came were sometimes over by the time the server stopped)
        i = 0
        while not stop.wait(0.03) and i < 450:
            try:
                completion = client.chat.completions.create(
                    model="gpt-4.1", messages=[{"role": "user", "content": f"{marker} call {i}"}]
                )
                answers.append(completion.choices[0].message.content or "")
            except BaseException as e:  # every call must succeed: the database is not in the way
                errors.append(e)
            i += 1

    thread = threading.Thread(target=load)
    thread.start()
    try:
        time.sleep(1.0)
        away()
        at_outage, started = len(answers), time.monotonic()
        while True:  # calls go on; their records are spooled
            down = httpx.get(f"{sidecar.api_url}/readyz", timeout=5)
            waited = time.monotonic() - started
            told = down.status_code == 503 and (outage == "stopped" or "did not answer" in down.text)
            if (told and waited >= 3.0) or waited > within:
                break
            time.sleep(0.2)
        during = len(answers) - at_outage
        # the query API answers too: that the database is unavailable, not after its silence
        listed = httpx.get(
            f"{sidecar.api_url}/api/v1/runs", params={"q": marker}, timeout=2 * CONNECT_SECONDS
        )
    finally:
        back()
        time.sleep(1.0)
        stop.set()
        thread.join(60)
    assert not errors, errors[:3]
    assert during > 20, during  # the database was away while calls were recorded
    assert told and "database" in down.text, (waited, down.text)
    assert listed.status_code == 503 and "unavailable" in listed.text, listed.text
    calls = len(answers)
    deadline = time.monotonic() + 60
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            runs = sidecar.get("/api/v1/runs", q=marker, limit=500)["runs"]
        except httpx.HTTPError:
            runs = []
        if len(runs) >= calls and all(r["status"] == "completed" for r in runs):
            break
        time.sleep(0.2)
    assert len(runs) == calls, f"{len(runs)} runs for {calls} calls\n{sidecar.log()[-3000:]}"
    assert sorted(r["first_message"] for r in runs) == sorted(f"{marker} call {i}" for i in range(calls))
    assert all(r["status"] == "completed" for r in runs)
    metrics = httpx.get(f"{sidecar.api_url}/metrics", timeout=5).text
    spooled = next(line for line in metrics.splitlines() if line.startswith("chatdebug_rows_spooled"))
    assert float(spooled.split()[-1]) > 0  # the outage was real: records waited in the spool
    drops = [line for line in metrics.splitlines() if line.startswith("chatdebug_rows_dropped_total{")]
    assert drops and all(line.endswith(" 0.0") for line in drops), drops  # and none was lost
    sidecar.stop()
