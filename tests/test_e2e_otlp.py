"""End to end: official SDK traffic through the sidecar becomes OpenTelemetry traces that a real
OTLP/HTTP receiver (protobuf, decoded with opentelemetry-proto) gets."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import openai
import pytest

from proxy.cli import main
from proxy.otlp import _chunks
from tests import wire
from tests.conftest import Sidecar, unique
from tests.otlp_receiver import ReceivedSpan, Receiver, free_port
from tests.test_e2e_record import WEATHER_TOOL, openai_client
from tests.upstream import Reply, Seen, Upstream

CLIENT, INTERNAL, ERROR = 3, 1, 2


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()


def one_tool_then_answer(seen: Seen) -> Reply:
    """A model that asks for one tool, then answers once the result is back: two steps."""
    body = json.loads(seen.body)
    marker = body["messages"][-1]["content"].split()[0] if body["messages"][-1]["role"] == "user" else None
    if marker is not None:
        call = (f"call_{marker}", "get_weather", '{"city": "Paris"}')
        usage = wire.openai_usage(prompt=100, completion=20, cached=40)
        return Reply.json(wire.openai_completion(tool_calls=[call], usage=usage, cid="chatcmpl-step1"))
    usage = wire.openai_usage(prompt=130, completion=9, reasoning=4)
    return Reply.json(wire.openai_completion("Sunny in Paris.", usage=usage, cid="chatcmpl-step2"))


def tool_loop(client: openai.OpenAI, marker: str, **create: Any) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You answer about weather."},
        {"role": "user", "content": f"{marker} weather in Paris?"},
    ]
    first = client.chat.completions.create(model="gpt-4.1", messages=messages, tools=[WEATHER_TOOL], **create)
    message = first.choices[0].message
    assert message.tool_calls
    messages.append(message.model_dump(exclude_none=True))
    time.sleep(0.05)  # the tool runs: a gap the execute_tool span must cover
    messages.append({"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": '{"temp_c": 21}'})
    second = client.chat.completions.create(
        model="gpt-4.1", messages=messages, tools=[WEATHER_TOOL], **create
    )
    assert second.choices[0].message.content == "Sunny in Paris."


def by_name(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return sorted((s for s in spans if s.name == name), key=lambda s: s.start_ns)


def metric(sidecar: Sidecar, name: str, **labels: str) -> float:
    text = httpx.get(sidecar.api_url + "/metrics", timeout=10).text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}(?:_total)?{re.escape('{' + wanted + '}') if wanted else ''} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found, f"{name} {labels} not in /metrics"
    return float(found[1])


def wait_metric(
    sidecar: Sidecar, name: str, ok: Callable[[float], bool], timeout: float = 30, **labels: str
) -> float:
    deadline = time.monotonic() + timeout
    value = metric(sidecar, name, **labels)
    while not ok(value) and time.monotonic() < deadline:
        time.sleep(0.1)
        value = metric(sidecar, name, **labels)
    assert ok(value), f"{name} {labels} = {value}"
    return value


def test_tool_loop_trace_joins_the_callers_trace(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream, receiver: Receiver
) -> None:
    sidecar = own_sidecar("--otlp-endpoint", receiver.url)
    marker = unique("otlploop")
    caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    upstream.responder = one_tool_then_answer
    client = openai_client(sidecar, upstream)
    began = time.time_ns()
    tool_loop(
        client,
        marker,
        extra_headers={
            "traceparent": f"00-{caller_trace}-{caller_span}-01",
            "X-Chatdebug-Conversation": marker,
        },
    )
    (run,) = sidecar.wait_runs(q=marker)
    assert run["status"] == "completed" and run["step_count"] == 2
    spans = receiver.trace_of(run["id"])
    ended = time.time_ns()

    (root,) = [s for s in spans if s.attributes.get("chatdebug.run.id") == run["id"]]
    assert root.name == "chat_turn gpt-4.1"
    assert (root.trace_id, root.parent_span_id) == (caller_trace, caller_span)  # a child of the caller
    assert root.kind == INTERNAL
    assert root.resource["service.name"] == "chatdebug-proxy"
    assert root.attributes["gen_ai.conversation.id"] == marker  # the application's own id
    assert root.attributes["gen_ai.usage.input_tokens"] == 230

    steps = by_name(spans, "chat gpt-4.1")
    assert len(steps) == 2
    http = by_name(spans, "POST")
    assert len(http) == 2
    (tool,) = by_name(spans, "execute_tool get_weather")
    assert len(spans) == 1 + 2 + 2 + 1
    detail = sidecar.run(run["id"])
    for step, span, record in zip(steps, http, detail["steps"], strict=True):
        assert step.parent_span_id == root.span_id and step.kind == CLIENT
        assert span.parent_span_id == step.span_id and span.kind == CLIENT
        a = step.attributes
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == run["provider"]
        assert a["gen_ai.request.model"] == "gpt-4.1"
        assert a["gen_ai.response.model"] == "gpt-4.1-2025-04-14"
        assert a["gen_ai.conversation.id"] == marker
        assert a["chatdebug.step.id"] == record["id"]
        (attempt,) = record["attempts"]
        h = span.attributes
        assert "http.request.resend_count" not in h  # not a resend
        assert h["http.response.status_code"] == 200
        assert h["url.full"] == attempt["url"] == f"{upstream.url}/v1/chat/completions"
        assert h["server.port"] == upstream.port
        assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a  # no --otlp-content
        assert "gen_ai.system_instructions" not in a
        assert "error.type" not in a and step.status_code == 0
    first, second = (s.attributes for s in steps)
    assert (first["gen_ai.response.id"], second["gen_ai.response.id"]) == ("chatcmpl-step1", "chatcmpl-step2")
    assert first["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert second["gen_ai.response.finish_reasons"] == ["stop"]
    assert (first["gen_ai.usage.input_tokens"], first["gen_ai.usage.output_tokens"]) == (100, 20)
    assert first["gen_ai.usage.cache_read.input_tokens"] == 40
    assert second["gen_ai.usage.reasoning.output_tokens"] == 4
    assert second["gen_ai.usage.cache_write.input_tokens"] == 0
    assert "gen_ai.conversation.compacted" not in first

    assert tool.parent_span_id == root.span_id
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.call.id"] == f"call_{marker}"
    assert "gen_ai.tool.call.arguments" not in tool.attributes

    # real times: recorded ones, in order, inside the test's own window
    for span in spans:
        assert began <= span.start_ns <= span.end_ns <= ended, span.name
    assert root.start_ns <= steps[0].start_ns and steps[1].end_ns <= root.end_ns
    assert steps[0].end_ns == tool.start_ns and tool.end_ns == steps[1].start_ns
    assert steps[0].end_ns < steps[1].start_ns
    for step, record in zip(steps, detail["steps"], strict=True):
        assert step.start_ns // 1_000_000 == _ms(record["started_at"])
        assert step.end_ns // 1_000_000 == _ms(record["finished_at"])

    # the download is the same trace
    document = sidecar.get(f"/api/v1/runs/{run['id']}/export", format="otlp-json", content="false")
    exported = [s for rs in document["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    assert sorted(s["spanId"] for s in exported) == sorted(s.span_id for s in spans)
    assert {s["traceId"] for s in exported} == {caller_trace}


def _ms(stamp: str) -> int:
    return round(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000)


def test_retried_step_and_content_on_request(
    own_sidecar: Callable[..., Sidecar],
    upstream: Upstream,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=team-a")  # the SDK's standard variable
    sidecar = own_sidecar("--otlp-endpoint", receiver.url, "--otlp-content")
    marker = unique("otlpretry")
    upstream.push(
        Reply.json(
            wire.openai_error("Rate limit reached for gpt-4.1", "requests", "rate_limit_exceeded"),
            status=429,
            **{"retry-after-ms": "50"},
        ),
        Reply.json(wire.openai_completion(f"after the wait {marker}", usage=wire.openai_usage(9, 3))),
    )
    client = openai_client(sidecar, upstream, max_retries=2)
    client.chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": f"{marker} hi"}],
    )
    (run,) = sidecar.wait_runs(q=marker)
    spans = receiver.trace_of(run["id"])
    (root,) = [s for s in spans if s.attributes.get("chatdebug.run.id") == run["id"]]
    assert root.parent_span_id == ""  # no traceparent: a trace of its own
    assert "gen_ai.conversation.id" not in root.attributes  # derived by us, not the application's
    (step,) = by_name(spans, "chat gpt-4.1")
    first, second = by_name(spans, "POST")
    assert first.parent_span_id == second.parent_span_id == step.span_id
    assert "http.request.resend_count" not in first.attributes
    assert second.attributes["http.request.resend_count"] == 1  # attempt 2 is the first resend
    assert first.attributes["http.response.status_code"] == 429
    assert first.attributes["error.type"] == "rate_limited"
    assert first.status_code == ERROR and first.status_message == "Rate limit reached for gpt-4.1"
    assert second.attributes["http.response.status_code"] == 200 and "error.type" not in second.attributes
    assert first.end_ns <= second.start_ns
    assert step.status_code == 0 and "error.type" not in step.attributes  # the retry won

    a = step.attributes
    assert json.loads(a["gen_ai.system_instructions"]) == [{"type": "text", "content": "Be terse."}]
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": f"{marker} hi"}]}
    ]
    assert json.loads(a["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": f"after the wait {marker}"}],
            "finish_reason": "stop",
        }
    ]
    assert receiver.requests[-1]["content-type"] == "application/x-protobuf"
    assert receiver.requests[-1]["x-tenant"] == "team-a"


def test_collector_down_then_up_loses_nothing(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")  # the SDK's own per-export bound
    port = free_port()
    sidecar = own_sidecar("--otlp-endpoint", f"http://127.0.0.1:{port}", "--otlp-retry-seconds", "60")
    markers = [unique("otlpdown") for _ in range(3)]
    client = openai_client(sidecar, upstream)
    for marker in markers:
        upstream.push(Reply.json(wire.openai_completion(marker, usage=wire.openai_usage(5, 1))))
        client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": marker}])
    runs = [sidecar.wait_runs(q=m)[0] for m in markers]
    wait_metric(sidecar, "chatdebug_otlp_export_retries", lambda v: v >= 1)
    assert metric(sidecar, "chatdebug_otlp_runs_exported") == 0
    receiver = Receiver(port=port).start()
    try:
        for run in runs:
            spans = receiver.trace_of(run["id"], timeout=45)
            assert len(spans) == 3  # run, step, attempt
        assert wait_metric(sidecar, "chatdebug_otlp_runs_exported", lambda v: v >= 3) == 3
        assert metric(sidecar, "chatdebug_otlp_runs_dropped", reason="export_failed") == 0
    finally:
        receiver.stop()


def test_past_the_retry_bound_drops_are_counted(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    port = free_port()  # nothing ever listens here
    sidecar = own_sidecar("--otlp-endpoint", f"http://127.0.0.1:{port}", "--otlp-retry-seconds", "1")
    marker = unique("otlpgone")
    upstream.push(Reply.json(wire.openai_completion(marker, usage=wire.openai_usage(5, 1))))
    openai_client(sidecar, upstream).chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": marker}]
    )
    sidecar.wait_runs(q=marker)
    assert wait_metric(sidecar, "chatdebug_otlp_runs_dropped", lambda v: v >= 1, reason="export_failed") == 1
    assert metric(sidecar, "chatdebug_otlp_runs_exported") == 0
    assert metric(sidecar, "chatdebug_otlp_runs_dropped", reason="queue_full") == 0


def test_the_turn_after_a_compaction_is_marked_compacted(
    own_sidecar: Callable[..., Sidecar],
    upstream: Upstream,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)  # the standard variable, no flag
    sidecar = own_sidecar()
    conversation = unique("otlpcompact")
    client = openai_client(sidecar, upstream)
    asked = [
        ("compaction", "Summarize the conversation so far."),
        ("chat_turn", "and now?"),
        ("chat_turn", "more"),
    ]
    for kind, text in asked:
        upstream.push(Reply.json(wire.openai_completion(f"{kind} done", usage=wire.openai_usage(20, 5))))
        client.chat.completions.create(
            model="gpt-4.1",
            messages=[{"role": "user", "content": f"{conversation} {text}"}],
            extra_headers={"X-Chatdebug-Conversation": conversation, "X-Chatdebug-Kind": kind},
        )
    runs = sidecar.wait_runs(3, conversation_id=conversation)
    later, turn, compaction = runs
    assert [r["kind"] for r in runs] == ["chat_turn", "chat_turn", "compaction"]
    marks = {}
    for run in runs:
        (step,) = by_name(receiver.trace_of(run["id"]), "chat gpt-4.1")
        marks[run["id"]] = step.attributes.get("gen_ai.conversation.compacted")
    assert marks == {compaction["id"]: None, turn["id"]: True, later["id"]: None}


def test_an_endpoint_that_is_not_http_stops_start_up(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--otlp-endpoint", "collector:4318"]) == 2
    assert capsys.readouterr().err.strip() == (
        "chatdebug: invalid setting --otlp-endpoint / CHATDEBUG_OTLP_ENDPOINT: "
        "expected an http(s) URL such as http://127.0.0.1:4318, got 'collector:4318'"
    )


def test_runs_are_grouped_into_bounded_requests() -> None:
    runs: list[list[Any]] = [[object()] * n for n in (3, 4, 10, 1, 1)]
    sizes = [[len(r) for r in chunk] for chunk in _chunks(runs, 8)]
    assert sizes == [[3, 4], [10], [1, 1]]  # a run bigger than the bound still goes, alone
    assert list(_chunks([], 8)) == []


def test_a_failed_run_carries_its_error(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream, receiver: Receiver
) -> None:
    sidecar = own_sidecar("--otlp-endpoint", receiver.url)
    marker = unique("otlperror")
    upstream.push(Reply.json(wire.openai_error("The server had an error", "server_error"), 500))
    with pytest.raises(openai.InternalServerError):
        openai_client(sidecar, upstream, max_retries=0).chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": marker}]
        )
    (run,) = sidecar.wait_runs(q=marker)
    assert run["status"] == "error"
    spans = receiver.trace_of(run["id"])
    (root,) = [s for s in spans if s.attributes.get("chatdebug.run.id") == run["id"]]
    (step,) = by_name(spans, "chat gpt-4.1")
    (attempt,) = by_name(spans, "POST")
    for span in (root, step, attempt):
        assert span.attributes["error.type"] == "server_error", span.name
        assert span.status_code == ERROR and span.status_message == "The server had an error", span.name
    assert root.attributes["chatdebug.run.status"] == "error"
    assert attempt.attributes["http.response.status_code"] == 500
    assert "gen_ai.response.id" not in step.attributes


def test_tool_content_with_otlp_content(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream, receiver: Receiver
) -> None:
    sidecar = own_sidecar("--otlp-endpoint", receiver.url, "--otlp-content")
    marker = unique("otlptools")
    upstream.responder = one_tool_then_answer
    tool_loop(openai_client(sidecar, upstream), marker)
    (run,) = sidecar.wait_runs(q=marker)
    spans = receiver.trace_of(run["id"])
    (tool,) = by_name(spans, "execute_tool get_weather")
    assert json.loads(tool.attributes["gen_ai.tool.call.arguments"]) == {"city": "Paris"}
    assert json.loads(tool.attributes["gen_ai.tool.call.result"]) == '{"temp_c": 21}'
    first, second = by_name(spans, "chat gpt-4.1")
    output = json.loads(first.attributes["gen_ai.output.messages"])
    assert output == [
        {
            "role": "assistant",
            "parts": [
                {
                    "type": "tool_call",
                    "id": f"call_{marker}",
                    "name": "get_weather",
                    "arguments": {"city": "Paris"},
                }
            ],
            "finish_reason": "tool_calls",
        }
    ]
    messages = json.loads(second.attributes["gen_ai.input.messages"])
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]
    assert messages[1]["parts"] == output[0]["parts"]
    (response,) = messages[2]["parts"]
    assert response["type"] == "tool_call_response" and response["id"] == f"call_{marker}"


def test_runs_finished_just_before_sigterm_are_still_sent(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream, receiver: Receiver
) -> None:
    sidecar = own_sidecar("--otlp-endpoint", receiver.url)
    marker = unique("otlpstop")
    upstream.push(Reply.json(wire.openai_completion(marker, usage=wire.openai_usage(5, 1))))
    openai_client(sidecar, upstream).chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": marker}]
    )
    (run,) = sidecar.wait_runs(q=marker)
    assert sidecar.stop() == 0  # inside the export's one-second gathering window
    names = sorted(s.name for s in receiver.trace_of(run["id"], timeout=1))
    assert names == ["POST", "chat gpt-4.1", "chat_turn gpt-4.1"]
