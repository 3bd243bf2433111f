"""End to end: official SDKs -> HTTPS_PROXY -> the sidecar (real TLS interception) -> upstream."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time

import anthropic
import httpx
import openai

from tests import wire
from tests.conftest import FAKE_ANTHROPIC_KEY, FAKE_OPENAI_KEY, Sidecar, unique
from tests.upstream import Gate, Reply, Upstream


def trusting(sidecar: Sidecar) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(sidecar.ca_file))


def openai_client(sidecar: Sidecar, upstream: Upstream, **kwargs: object) -> openai.OpenAI:
    http_client = openai.DefaultHttpxClient(proxy=sidecar.proxy_url, verify=trusting(sidecar))
    return openai.OpenAI(
        base_url=f"{upstream.url}/v1",
        api_key=FAKE_OPENAI_KEY,
        http_client=http_client,
        timeout=20.0,
        **kwargs,
    )


def anthropic_client(sidecar: Sidecar, upstream: Upstream, **kwargs: object) -> anthropic.Anthropic:
    http_client = anthropic.DefaultHttpxClient(proxy=sidecar.proxy_url, verify=trusting(sidecar))
    return anthropic.Anthropic(
        base_url=upstream.url, api_key=FAKE_ANTHROPIC_KEY, http_client=http_client, timeout=20.0, **kwargs
    )


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def only_step(sidecar: Sidecar, run: dict) -> tuple[dict, dict]:
    detail = sidecar.run(run["id"])
    assert len(detail["steps"]) == 1
    step = detail["steps"][0]
    assert len(step["attempts"]) == 1
    return step, step["attempts"][0]


def test_openai_stream_with_tool_calls(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("weather")
    usage = wire.openai_usage(prompt=120, completion=31, cached=64)
    upstream.push(
        Reply.events(
            wire.openai_stream(
                tool_calls=[
                    ("call_A1", "get_weather", ['{"ci', 'ty": "Par', 'is"}']),
                    ("call_B2", "get_weather", ['{"city":', ' "Tōkyō 東京"}']),
                ],
                usage=usage,
            )
        )
    )
    client = openai_client(sidecar, upstream)
    stream = client.chat.completions.create(
        model="gpt-4.1",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"{marker} weather?"},
        ],
        tools=[WEATHER_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    seen_args: dict[int, str] = {}
    for chunk in stream:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                seen_args[tc.index] = seen_args.get(tc.index, "") + (tc.function.arguments or "")
    assert seen_args == {0: '{"city": "Paris"}', 1: '{"city": "Tōkyō 東京"}'}

    # tool calls are pending: the run stays open for the next step of the loop
    (run,) = sidecar.wait_runs(
        q=marker, settled=False, check=lambda runs: runs[0]["usage"]["total_tokens"] > 0
    )
    assert run["status"] == "in_progress"
    assert run["api"] == "openai.chat_completions"
    assert run["provider"] == "openai_compatible"
    assert run["model"] == "gpt-4.1"
    assert run["first_message"] == f"{marker} weather?"
    assert run["usage"]["input_tokens"] == 120
    assert run["usage"]["cache_read_tokens"] == 64
    assert run["usage"]["output_tokens"] == 31
    step, attempt = only_step(sidecar, run)
    assert step["request"]["system"] == "Be brief."
    assert step["request"]["tools"][0]["name"] == "get_weather"
    assert step["request"]["stream"] is True
    response = step["response"]
    assert response["finish_reason"] == "tool_calls"
    assert [(p["id"], p["name"], p["arguments"]) for p in response["content"]] == [
        ("call_A1", "get_weather", {"city": "Paris"}),
        ("call_B2", "get_weather", {"city": "Tōkyō 東京"}),
    ]
    assert step["status"] == "completed"
    assert attempt["status"] == "completed"
    assert attempt["streamed"] is True
    assert attempt["http_status"] == 200
    assert attempt["request_headers"]["authorization"] == "[REDACTED]"


def test_openai_non_streamed_text(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("hello")
    usage = wire.openai_usage(prompt=50, completion=7, reasoning=3)
    upstream.push(Reply.json(wire.openai_completion("Hello there, friend!", usage=usage)))
    client = openai_client(sidecar, upstream)
    completion = client.chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "user", "content": f"{marker}   say\n hello"}],
        max_completion_tokens=64,
    )
    assert completion.choices[0].message.content == "Hello there, friend!"

    (run,) = sidecar.wait_runs(q=marker)
    assert run["status"] == "completed"
    assert run["kind"] == "chat_turn"
    assert run["first_message"] == f"{marker} say hello"  # whitespace folded
    assert run["usage"] == {
        "input_tokens": 50,
        "output_tokens": 7,
        "total_tokens": 57,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 3,
    }
    step, attempt = only_step(sidecar, run)
    assert step["request"]["options"]["max_output_tokens"] == 64
    assert step["response"]["content"] == [{"type": "text", "text": "Hello there, friend!"}]
    assert step["response"]["finish_reason"] == "stop"
    assert attempt["streamed"] is False
    detail = sidecar.get(f"/api/v1/attempts/{attempt['id']}")
    assert json.loads(detail["response_body"])["choices"][0]["message"]["content"] == "Hello there, friend!"
    assert marker in detail["request_body"]
    assert FAKE_OPENAI_KEY not in json.dumps(detail)


def test_anthropic_stream_text_and_tool_use(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("forecast")
    events = wire.anthropic_stream(
        ["Let me check ", "the weather. ☀️"],
        ("toolu_01A09q90qw90lq917835lq9", "get_weather", ['{"city": ', '"San Francisco", "unit": "c"}']),
        input_tokens=30,
        output_tokens=55,
        cache_read=1000,
        cache_write=200,
    )
    upstream.push(Reply.events(events))
    client = anthropic_client(sidecar, upstream)
    text = ""
    with client.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=1024,
        system=[{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": f"{marker} weather in SF?"}],
        tools=[{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}],
    ) as stream:
        for event in stream.text_stream:
            text += event
        final = stream.get_final_message()
    assert text == "Let me check the weather. ☀️"
    assert final.stop_reason == "tool_use"

    (run,) = sidecar.wait_runs(
        q=marker, settled=False, check=lambda runs: runs[0]["usage"]["output_tokens"] == 55
    )
    assert run["api"] == "anthropic.messages"
    assert run["usage"]["input_tokens"] == 30 + 1000 + 200  # all prompt tokens, cached included
    assert run["usage"]["cache_read_tokens"] == 1000
    assert run["usage"]["cache_write_tokens"] == 200
    assert run["usage"]["output_tokens"] == 55
    step, attempt = only_step(sidecar, run)
    assert step["request"]["system"] == "You are terse."
    assert step["request"]["options"]["max_output_tokens"] == 1024
    response = step["response"]
    assert response["finish_reason"] == "tool_calls"
    assert response["raw_finish_reason"] == "tool_use"
    assert response["content"][0] == {"type": "text", "text": "Let me check the weather. ☀️"}
    assert response["content"][1]["arguments"] == {"city": "San Francisco", "unit": "c"}
    headers = attempt["request_headers"]
    credentials = [headers[h] for h in ("x-api-key", "authorization") if h in headers]
    assert credentials == ["[REDACTED]"]


def test_anthropic_non_streamed(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("capital")
    upstream.push(Reply.json(wire.anthropic_message("Paris.", input_tokens=14, output_tokens=3)))
    client = anthropic_client(sidecar, upstream)
    message = client.messages.create(
        model="claude-sonnet-4-6",
        max_tokens=50,
        messages=[{"role": "user", "content": f"{marker} capital of France?"}],
    )
    assert message.content[0].text == "Paris."  # type: ignore[union-attr]
    (run,) = sidecar.wait_runs(q=marker)
    assert run["status"] == "completed"
    step, _ = only_step(sidecar, run)
    assert step["response"]["content"] == [{"type": "text", "text": "Paris."}]
    assert step["response"]["finish_reason"] == "stop"
    assert run["usage"]["input_tokens"] == 14
    assert run["usage"]["output_tokens"] == 3


def test_stream_is_not_buffered(sidecar: Sidecar, upstream: Upstream) -> None:
    """The upstream holds the rest of the stream until the client has seen the first chunk."""
    marker = unique("nobuffer")
    events = wire.openai_stream(["first", " second", " third"])
    client_saw_first = threading.Event()
    upstream.push(
        Reply(
            200,
            {"Content-Type": "text/event-stream"},
            [events[0], events[1], Gate(client_saw_first), *events[2:]],
        )
    )
    client = openai_client(sidecar, upstream)
    stream = client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": marker}], stream=True
    )
    pieces = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
            if pieces == ["first"]:
                client_saw_first.set()  # only now does the upstream send the rest
    assert "".join(pieces) == "first second third"
    (run,) = sidecar.wait_runs(q=marker)
    _, attempt = only_step(sidecar, run)
    # had the proxy buffered, the upstream's gate would have timed out (10 s) before the client saw anything
    assert attempt["duration_ms"] < 5000
    assert attempt["ttfb_ms"] < attempt["duration_ms"]


def test_non_provider_host_is_tunnelled_and_not_recorded(sidecar: Sidecar, upstream: Upstream, certs) -> None:
    """A host outside the intercept list keeps its own certificate: TLS is not intercepted."""
    before = len(sidecar.runs(limit=500))
    other = Upstream(certs.server_context).start()
    try:
        body = json.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]})
        other.push(Reply.json(wire.openai_completion("not recorded", usage=wire.openai_usage(1, 1))))
        # verifying with the upstream's own CA only: an intercepted connection would fail
        upstream_only = ssl.create_default_context(cafile=str(certs.ca_file))
        with httpx.Client(proxy=sidecar.proxy_url, verify=upstream_only) as client:
            response = client.post(f"{other.url}/v1/chat/completions", content=body)
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "not recorded"
        time.sleep(0.5)
        assert len(sidecar.runs(limit=500)) == before
    finally:
        other.stop()


def test_curl_through_https_proxy_env(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("curl")
    upstream.push(Reply.json(wire.openai_completion("from curl", usage=wire.openai_usage(5, 2))))
    body = json.dumps({"model": "gpt-4.1", "messages": [{"role": "user", "content": marker}]})
    env = {"HTTPS_PROXY": sidecar.proxy_url, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        ["curl", "-sS", "--cacert", str(sidecar.ca_file), "-H", "Content-Type: application/json",
         "-H", f"Authorization: Bearer {FAKE_OPENAI_KEY}", "-H", "X-Chatdebug-Conversation: conv-curl-1",
         "-d", body, f"{upstream.url}/v1/chat/completions"],
        env=env, capture_output=True, timeout=20, check=True,
    )  # fmt: skip
    assert json.loads(result.stdout)["choices"][0]["message"]["content"] == "from curl"
    (run,) = sidecar.wait_runs(q=marker)
    assert run["conversation_id"] == "conv-curl-1"
    seen = upstream.seen[-1]
    assert not any(h.lower().startswith("x-chatdebug-") for h in seen.headers)  # ours, removed upstream


def test_reverse_listener_records_clients_that_only_take_a_base_url(own_sidecar, upstream: Upstream) -> None:  # type: ignore[no-untyped-def]
    """`--reverse URL@PORT`: plain HTTP in, the provider over verified TLS, recorded the same way."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sidecar = own_sidecar("--reverse", f"{upstream.url}@{port}")
    assert f"reverse http://127.0.0.1:{port} -> {upstream.url}" in sidecar.log()
    marker = unique("reverse")
    upstream.push(Reply.json(wire.openai_completion("via reverse", usage=wire.openai_usage(4, 2))))
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=FAKE_OPENAI_KEY, max_retries=0)
    reply = client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": marker}])
    assert reply.choices[0].message.content == "via reverse"
    (run,) = sidecar.wait_runs(q=marker)
    assert (run["status"], run["api"], run["usage"]["total_tokens"]) == (
        "completed",
        "openai.chat_completions",
        6,
    )
