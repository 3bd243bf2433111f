"""Runs, steps and attempts from traffic alone, with the official SDKs through the real proxy."""

from __future__ import annotations

import json
import signal
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests import wire
from tests.conftest import Sidecar, unique
from tests.test_e2e_record import WEATHER_TOOL, anthropic_client, openai_client
from tests.upstream import Gate, Reply, Seen, Upstream


def tool_loop_reply(seen: Seen) -> Reply:
    """A model that calls a tool until this turn has two tool results, then answers."""
    body = json.loads(seen.body)
    last_user = max(i for i, m in enumerate(body["messages"]) if m["role"] == "user")
    results = [m for m in body["messages"][last_user:] if m["role"] == "tool"]
    marker = body["messages"][0]["content"].split()[0]
    usage = wire.openai_usage(prompt=100 + 10 * len(results), completion=20)
    if len(results) < 2:
        call = (f"call_{marker}_{last_user}_{len(results)}", "get_weather", '{"city": "Paris"}')
        return Reply.json(wire.openai_completion(tool_calls=[call], usage=usage))
    return Reply.json(wire.openai_completion(f"Sunny twice, says {marker}.", usage=usage))


def run_tool_loop(client: openai.OpenAI, messages: list[dict[str, Any]]) -> str:
    """What a chat service does: call the model, run the tools it asks for, call it again."""
    while True:
        completion = client.chat.completions.create(model="gpt-4.1", messages=messages, tools=[WEATHER_TOOL])
        message = completion.choices[0].message
        if not message.tool_calls:
            messages.append({"role": "assistant", "content": message.content})
            return message.content or ""
        messages.append(message.model_dump(exclude_none=True))
        for call in message.tool_calls:
            messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'})


def test_tool_loop_is_one_run_and_next_turn_a_new_run(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("loop")
    upstream.responder = tool_loop_reply
    client = openai_client(sidecar, upstream)
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"{marker} weather twice please"}]
    answer = run_tool_loop(client, messages)
    assert answer == f"Sunny twice, says {marker}."

    (run,) = sidecar.wait_runs(q=marker)
    assert run["status"] == "completed"
    assert run["kind"] == "chat_turn"
    assert (run["step_count"], run["attempt_count"]) == (3, 3)
    assert run["usage"]["input_tokens"] == 100 + 110 + 120
    detail = sidecar.run(run["id"])
    assert [s["number"] for s in detail["steps"]] == [1, 2, 3]
    assert [s["status"] for s in detail["steps"]] == ["completed"] * 3
    assert [s["response"]["finish_reason"] for s in detail["steps"]] == ["tool_calls", "tool_calls", "stop"]
    assert len(detail["steps"][2]["request"]["messages"]) == 5

    messages.append({"role": "user", "content": "and tomorrow?"})
    run_tool_loop(client, messages)
    runs = sidecar.wait_runs(2, q=marker)
    assert runs[0]["id"] != run["id"]
    assert runs[0]["conversation_id"] == run["conversation_id"] is not None
    assert (runs[0]["step_count"], runs[0]["status"]) == (3, "completed")


def test_rate_limit_retried_by_the_sdk_is_one_step_with_two_attempts(
    sidecar: Sidecar, upstream: Upstream
) -> None:
    marker = unique("ratelimited")
    upstream.push(
        Reply.json(
            wire.openai_error("Rate limit reached for gpt-4.1", "requests", "rate_limit_exceeded"),
            status=429,
            **{"retry-after-ms": "50"},
        ),
        Reply.json(wire.openai_completion("after the wait", usage=wire.openai_usage(9, 3))),
    )
    client = openai_client(sidecar, upstream, max_retries=2)
    completion = client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": marker}]
    )
    assert completion.choices[0].message.content == "after the wait"

    (run,) = sidecar.wait_runs(q=marker)
    assert run["status"] == "completed"
    assert (run["step_count"], run["attempt_count"]) == (1, 2)
    (step,) = sidecar.run(run["id"])["steps"]
    first, second = step["attempts"]
    assert (first["status"], first["http_status"], first["error"]["class"]) == ("failed", 429, "rate_limited")
    assert first["error"]["message"] == "Rate limit reached for gpt-4.1"
    assert (second["status"], second["number"]) == ("completed", 2)
    assert second["retry_signal"] == "x-stainless-retry-count=1"
    assert step["status"] == "completed"
    assert run["error"] is None


def test_a_retry_right_after_success_joins_the_step_it_retries(sidecar: Sidecar, upstream: Upstream) -> None:
    """The same request again at once, saying it retries, while the first call's rows may still
    wait in the writer: one step of two attempts, the step's response the first answer's."""
    marker = unique("again")
    upstream.push(
        Reply.json(wire.openai_completion("the first answer", usage=wire.openai_usage(9, 3))),
        Reply.json(wire.openai_error("the server had an error", "server_error"), status=500),
    )
    client = openai_client(sidecar, upstream, max_retries=0)
    messages = [{"role": "user", "content": marker}]
    client.chat.completions.create(model="gpt-4.1", messages=messages)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="gpt-4.1", messages=messages, extra_headers={"x-stainless-retry-count": "1"}
        )
    (run,) = sidecar.wait_runs(q=marker, check=lambda runs: runs[0]["attempt_count"] == 2)
    deadline = time.monotonic() + 15
    while True:  # the failed attempt's last rows may still be on their way to the store
        (step,) = sidecar.run(run["id"])["steps"]
        if step["attempts"][-1]["status"] != "in_progress" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [(a["status"], a["retry_signal"]) for a in step["attempts"]] == [
        ("completed", None),
        ("failed", "x-stainless-retry-count=1"),
    ]
    assert step["response"]["content"][0]["text"] == "the first answer"
    assert step["request"]["messages"][0]["parts"][0]["text"] == marker


def test_overload_mid_stream_then_application_resend(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("overloaded")
    started = wire.anthropic_stream(["Partial"], stop=False)
    upstream.push(
        Reply.events([*started, wire.anthropic_error_event("overloaded_error", "Overloaded")]),
        Reply.events(wire.anthropic_stream(["Complete answer."], input_tokens=10, output_tokens=4)),
    )
    client = anthropic_client(sidecar, upstream, max_retries=0)
    request: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": f"{marker} explain"}],
    }
    with pytest.raises(anthropic.APIStatusError), client.messages.stream(**request) as stream:
        for _ in stream.text_stream:
            pass
    with client.messages.stream(**request) as stream:  # the application tries again
        assert "".join(stream.text_stream) == "Complete answer."

    (run,) = sidecar.wait_runs(q=marker)
    assert run["status"] == "completed"
    (step,) = sidecar.run(run["id"])["steps"]
    first, second = step["attempts"]
    assert (first["status"], first["http_status"], first["error"]["class"]) == ("failed", 200, "overloaded")
    assert first["response"]["content"] == [{"type": "text", "text": "Partial"}]
    assert second["status"] == "completed"
    assert second["retry_signal"] == "identical request after a overloaded attempt"
    assert step["response"]["content"] == [{"type": "text", "text": "Complete answer."}]


def test_client_disconnect_mid_stream_ends_interrupted(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("disconnect")
    events = wire.openai_stream(["one", " two", " three"])
    never = threading.Event()
    upstream.push(
        Reply(200, {"Content-Type": "text/event-stream"}, [*events[:2], Gate(never, 8.0), *events[2:]])
    )
    client = openai_client(sidecar, upstream, max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": marker}], stream=True
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content == "one":
            break
    stream.close()  # the user closed the tab

    (run,) = sidecar.wait_runs(q=marker, timeout=20)
    assert run["status"] == "interrupted"
    (step,) = sidecar.run(run["id"])["steps"]
    (attempt,) = step["attempts"]
    assert attempt["status"] == "interrupted"
    assert attempt["error"]["class"] == "canceled"
    assert attempt["response"]["content"] == [{"type": "text", "text": "one"}]
    assert step["status"] == "interrupted"


def test_restart_ends_open_runs_interrupted(own_sidecar: Callable[..., Sidecar], upstream: Upstream) -> None:
    marker = unique("restart")
    first = own_sidecar()
    never = threading.Event()
    upstream.push(
        Reply(
            200, {"Content-Type": "text/event-stream"}, [wire.openai_stream(["held"])[0], Gate(never, 15.0)]
        )
    )
    client = openai_client(first, upstream, max_retries=0)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            for _ in client.chat.completions.create(
                model="gpt-4.1", messages=[{"role": "user", "content": marker}], stream=True
            ):
                pass
        except BaseException as e:  # the proxy dies under the client
            outcome.append(e)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    (run,) = first.wait_runs(q=marker, settled=False)
    assert run["status"] == "in_progress"
    first.stop(signal.SIGKILL)
    thread.join(10)

    second = own_sidecar()
    (after,) = second.wait_runs(q=marker)
    assert after["id"] == run["id"]
    assert after["status"] == "interrupted"
    (step,) = second.run(run["id"])["steps"]
    assert step["status"] == "interrupted"
    assert step["attempts"][0]["status"] == "interrupted"
    assert "ended 1 open run(s) of a previous process as interrupted" in second.log()
    assert outcome  # the client saw its connection die


def test_twenty_interleaved_conversations_stay_separate(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("many")
    upstream.responder = tool_loop_reply
    client = openai_client(sidecar, upstream, max_retries=0)
    barrier = threading.Barrier(20)

    def conversation(n: int) -> str:
        barrier.wait()
        return run_tool_loop(client, [{"role": "user", "content": f"{marker}x{n} what is the weather"}])

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(conversation, range(20)))
    assert answers == [f"Sunny twice, says {marker}x{n}." for n in range(20)]

    runs = sidecar.wait_runs(20, q=marker, timeout=30)
    assert len(runs) == 20
    assert len({r["conversation_id"] for r in runs}) == 20
    for run in runs:
        assert (run["status"], run["step_count"], run["attempt_count"]) == ("completed", 3, 3)
        detail = sidecar.run(run["id"])
        n = run["first_message"].split()[0]
        for step in detail["steps"]:
            assert step["request"]["messages"][0]["parts"][0]["text"].startswith(n + " ")
        calls = [p["id"] for s in detail["steps"][:2] for p in s["response"]["content"]]
        assert calls == [f"call_{n}_0_0", f"call_{n}_0_1"]


def test_a_forced_run_id_named_again_after_a_restart_adds_to_the_stored_run(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream
) -> None:
    """X-Chatdebug-Run after the run left memory (a restart, or settled and let go) continues it."""
    run_id = unique("run_forced_restart").replace("-", "_")

    def call(sidecar: Sidecar, text: str) -> None:
        upstream.push(Reply.json(wire.openai_completion(text, usage=wire.openai_usage(3, 1))))
        with httpx.Client(
            proxy=sidecar.proxy_url,
            verify=ssl.create_default_context(cafile=str(sidecar.ca_file)),
            timeout=10,
        ) as http:
            body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": f"{run_id} {text}"}]}
            assert (
                http.post(
                    f"{upstream.url}/v1/chat/completions", json=body, headers={"X-Chatdebug-Run": run_id}
                ).status_code
                == 200
            )

    first = own_sidecar()
    for text in ("one", "two", "three"):
        call(first, text)
    first.wait_runs(1, q=run_id)
    assert first.stop() == 0
    second = own_sidecar()
    call(second, "four")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        run = second.run(run_id)
        if run["step_count"] == 4 and run["steps"][-1]["status"] == "completed":
            break
        time.sleep(0.05)
    assert run["step_count"] == 4 and run["attempt_count"] == 4
    assert [s["number"] for s in run["steps"]] == [1, 2, 3, 4]


def test_after_a_restart_a_known_history_is_found_in_the_store(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream
) -> None:
    """No session id anywhere: the second turn, sent to a restarted sidecar, joins the first's conversation."""
    marker = unique("restart-history")
    first_turn = [{"role": "user", "content": f"{marker} plan a trip to Kyoto"}]
    sidecar = own_sidecar()
    upstream.push(Reply.json(wire.openai_completion("Day 1: temples.", usage=wire.openai_usage(5, 3))))
    openai_client(sidecar, upstream).chat.completions.create(model="gpt-4.1", messages=first_turn)
    (first,) = sidecar.wait_runs(1, q=marker)
    assert first["conversation_source"] == "derived"
    assert sidecar.stop() == 0
    sidecar = own_sidecar()
    second_turn = [
        *first_turn,
        {"role": "assistant", "content": "Day 1: temples."},
        {"role": "user", "content": "and day 2?"},
    ]
    upstream.push(Reply.json(wire.openai_completion("Day 2: gardens.", usage=wire.openai_usage(9, 3))))
    openai_client(sidecar, upstream).chat.completions.create(model="gpt-4.1", messages=second_turn)
    runs = sidecar.wait_runs(2, q=marker)
    second = next(r for r in runs if r["id"] != first["id"])
    assert second["prompt"] == "and day 2?"
    assert (second["conversation_id"], second["conversation_source"]) == (
        first["conversation_id"],
        "continuation",
    )
