"""End to end for the other wire formats: real clients -> the sidecar -> an upstream that replays
the byte-accurate fixtures of tests/fixtures, then the run, step and attempt the API reports.

OpenAI Responses through the official SDK (streamed, not, and chained by `previous_response_id`),
Gemini over raw httpx (SSE, whole JSON, and the JSON array streamed without `alt=sse`), Ollama and
vLLM over plain HTTP (recognised by path), Azure OpenAI deployment paths, and OpenRouter's
keep-alive comments with an error event under HTTP 200.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import openai
import pytest

from tests.conftest import FAKE_OPENAI_KEY, Sidecar, unique
from tests.test_e2e_record import only_step, openai_client, trusting
from tests.upstream import Reply, Upstream

FIXTURES = Path(__file__).parent / "fixtures"
FAKE_GOOGLE_KEY = "AIzaSyFAKEKEY-for-tests_0123456789abcd"
FAKE_AZURE_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
REDACTED = "[REDACTED]"
GEMINI_STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
GEMINI_GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"
GEMINI_JSON = "application/json; charset=UTF-8"
AZURE_PATH = "/openai/deployments/my-gpt4o/chat/completions"
NDJSON = "application/x-ndjson"

RESPONSES_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
# the ids tests/fixtures/openai_responses/tool_call_stream.sse carries
STREAM_RESPONSE_ID = "resp_68f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"
STREAM_CALL_ID = "call_Vq3xk2PzR7mB9dLs0aYt4uHe"
STREAM_REASONING = (
    "**Checking the weather**\n\nThe user wants Paris; I should call the tool.\n\n"
    "**Answering**\n\nSay a word first."
)


# ---- helpers ------------------------------------------------------------------------------------


def fixture(path: str) -> bytes:
    return (FIXTURES / path).read_bytes()


def sse_events(body: bytes) -> list[bytes]:
    """A recorded SSE body as the provider flushes it: one chunk per event (LF or CRLF framed)."""
    separator = b"\r\n\r\n" if b"\r\n\r\n" in body else b"\n\n"
    pieces = body.split(separator)
    return [p + separator for p in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])


def ndjson_lines(body: bytes) -> list[bytes]:
    """One chunk per line, as Ollama flushes them."""
    return [line + b"\n" for line in body.split(b"\n") if line]


def usage(
    input_tokens: int,
    output_tokens: int,
    total: int,
    *,
    cache_read: int = 0,
    cache_write: int = 0,
    reasoning: int = 0,
) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": total,
        "cache_read_tokens": cache_read,
        "cache_write_tokens": cache_write,
        "reasoning_tokens": reasoning,
    }


def finished(total_tokens: int) -> Any:
    """`wait_runs` check for a run still open (tool calls pending) whose attempt has finished."""
    return lambda runs: runs[0]["usage"]["total_tokens"] == total_tokens


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def attempt_detail(sidecar: Sidecar, attempt: dict[str, Any]) -> dict[str, Any]:
    return sidecar.get(f"/api/v1/attempts/{attempt['id']}")


def proxied(sidecar: Sidecar) -> httpx.Client:
    """A raw client through the proxy, trusting its CA (HTTPS) and fine with plain HTTP."""
    return httpx.Client(proxy=sidecar.proxy_url, verify=trusting(sidecar), timeout=20)


def with_marker(request: dict[str, Any], path: list[Any], marker: str) -> dict[str, Any]:
    """A fixture request whose text at `path` starts with the test's marker."""
    node: Any = request
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = f"{marker} {node[path[-1]]}"
    return request


# ---- OpenAI Responses, official SDK ----------------------------------------------------------------


def test_responses_stream_with_a_function_call(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("resp-stream")
    body = fixture("openai_responses/tool_call_stream.sse")
    upstream.push(Reply.events(sse_events(body)))
    client = openai_client(sidecar, upstream)
    stream = client.responses.create(
        model="gpt-5",
        instructions="You are a terse weather assistant.",
        input=[{"role": "user", "content": f"{marker} weather in Paris?"}],
        tools=[RESPONSES_TOOL],
        stream=True,
    )
    text, arguments, final = "", "", None
    for event in stream:
        if event.type == "response.output_text.delta":
            text += event.delta
        elif event.type == "response.function_call_arguments.delta":
            arguments += event.delta
        elif event.type == "response.completed":
            final = event.response
    assert text == "Let me check Paris — one moment."
    assert json.loads(arguments) == {"city": "Paris"}
    assert final is not None and final.id == STREAM_RESPONSE_ID

    # the function call waits on the client: the run stays open for the next step
    (run,) = sidecar.wait_runs(q=marker, settled=False, check=finished(2255))
    assert run["status"] == "in_progress"
    assert (run["api"], run["provider"], run["model"]) == ("openai.responses", "openai_compatible", "gpt-5")
    assert run["first_message"] == f"{marker} weather in Paris?"
    assert run["usage"] == usage(1843, 412, 2255, cache_read=1536, reasoning=320)
    step, attempt = only_step(sidecar, run)
    request = step["request"]
    assert (request["api"], request["model"], request["stream"]) == ("openai.responses", "gpt-5", True)
    assert request["system"] == "You are a terse weather assistant."
    assert request["messages"] == [
        {"role": "user", "parts": [{"type": "text", "text": f"{marker} weather in Paris?"}]}
    ]
    assert [t["name"] for t in request["tools"]] == ["get_weather"]
    response = step["response"]
    assert (response["id"], response["model"]) == (STREAM_RESPONSE_ID, "gpt-5-2025-08-07")
    assert response["content"] == [
        {"type": "reasoning", "text": STREAM_REASONING},
        {"type": "text", "text": "Let me check Paris — one moment."},
        {"type": "tool_call", "id": STREAM_CALL_ID, "name": "get_weather", "arguments": {"city": "Paris"}},
    ]
    assert (response["finish_reason"], response["raw_finish_reason"]) == ("tool_calls", "completed")
    assert response["usage"] == run["usage"] == step["usage"]
    assert step["status"] == "completed"
    assert (attempt["status"], attempt["http_status"], attempt["streamed"]) == ("completed", 200, True)
    assert attempt["error"] is None
    assert attempt["url"] == f"{upstream.url}/v1/responses"
    assert attempt["request_headers"]["authorization"] == REDACTED
    assert attempt["response_bytes"] == len(body)
    assert attempt_detail(sidecar, attempt)["response_body"] == body.decode()


def test_responses_non_streamed_function_call(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("resp-json")
    body = fixture("openai_responses/function_call.json")
    upstream.push(Reply.json(body))
    client = openai_client(sidecar, upstream)
    result = client.responses.create(
        model="gpt-5",
        input=f"{marker} weather in Zürich?",
        tools=[RESPONSES_TOOL],
        max_output_tokens=512,
    )
    call = next(item for item in result.output if item.type == "function_call")
    assert json.loads(call.arguments) == {"city": "Zürich"}

    (run,) = sidecar.wait_runs(q=marker, settled=False, check=finished(403))
    assert run["status"] == "in_progress"
    assert (run["api"], run["model"]) == ("openai.responses", "gpt-5")
    assert run["usage"] == usage(312, 91, 403, cache_read=256, reasoning=64)
    step, attempt = only_step(sidecar, run)
    assert step["request"]["stream"] is False
    assert step["request"]["options"]["max_output_tokens"] == 512
    assert step["request"]["messages"] == [
        {"role": "user", "parts": [{"type": "text", "text": f"{marker} weather in Zürich?"}]}
    ]
    response = step["response"]
    assert response["content"] == [
        {
            "type": "reasoning",
            "text": "**Looking up Zürich**\n\nThe user wants the weather in Zürich; call the tool.",
        },
        {
            "type": "tool_call",
            "id": "call_Zr8mQ2xK5vN1pL7tB3yW9cHd",
            "name": "get_weather",
            "arguments": {"city": "Zürich"},
        },
    ]
    assert (response["finish_reason"], response["raw_finish_reason"]) == ("tool_calls", "completed")
    assert (response["id"], response["model"]) == (
        "resp_68f1c8a1b2c3d4e5f6a7b8c9d0e1f2a3",
        "gpt-5-2025-08-07",
    )
    assert (attempt["status"], attempt["http_status"], attempt["streamed"]) == ("completed", 200, False)
    assert attempt_detail(sidecar, attempt)["response_body"] == body.decode()


def test_responses_previous_response_id_is_the_next_step(sidecar: Sidecar, upstream: Upstream) -> None:
    """The second call sends only a `function_call_output` and `previous_response_id`: step 2."""
    marker = unique("resp-chain")
    response_id = "resp_" + uuid.uuid4().hex  # this test's own ids, same shape as the fixture's
    call_id = "call_" + uuid.uuid4().hex[:24]
    first = fixture("openai_responses/tool_call_stream.sse")
    first = first.replace(STREAM_RESPONSE_ID.encode(), response_id.encode())
    first = first.replace(STREAM_CALL_ID.encode(), call_id.encode())
    answer = fixture("openai_responses/text.json").replace(STREAM_RESPONSE_ID.encode(), response_id.encode())
    upstream.push(Reply.events(sse_events(first)), Reply.json(answer))
    client = openai_client(sidecar, upstream)
    headers = {"X-Chatdebug-Conversation": marker}

    stream = client.responses.create(
        model="gpt-5",
        input=[{"role": "user", "content": f"{marker} weather in Paris?"}],
        tools=[RESPONSES_TOOL],
        stream=True,
        extra_headers=headers,
    )
    events = list(stream)
    final = next(e.response for e in events if e.type == "response.completed")
    call = next(item for item in final.output if item.type == "function_call")
    assert (final.id, call.call_id) == (response_id, call_id)
    output = '{"temp_c": 18, "sky": "clear"}'
    second = client.responses.create(
        model="gpt-5",
        previous_response_id=final.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": output}],
        tools=[RESPONSES_TOOL],
        extra_headers=headers,
    )
    assert second.output_text == "It's 18 °C and clear in Paris — enjoy the evening! ☀️"
    assert json.loads(upstream.seen[-1].body)["previous_response_id"] == response_id

    runs = sidecar.wait_runs(
        conversation_id=marker, check=lambda runs: sum(r["attempt_count"] for r in runs) >= 2
    )
    assert len(runs) == 1, "the chained call started a run of its own"
    (run,) = runs
    assert run["status"] == "completed"
    assert (run["step_count"], run["attempt_count"]) == (2, 2)
    assert run["first_message"] == f"{marker} weather in Paris?"
    assert run["usage"] == usage(
        1843 + 2290, 412 + 57, 2255 + 2347, cache_read=1536 + 2048, reasoning=320 + 32
    )
    steps = sidecar.run(run["id"])["steps"]
    assert [s["number"] for s in steps] == [1, 2]
    assert [s["status"] for s in steps] == ["completed", "completed"]
    assert [len(s["attempts"]) for s in steps] == [1, 1]
    assert steps[0]["response"]["finish_reason"] == "tool_calls"
    assert steps[0]["usage"] == usage(1843, 412, 2255, cache_read=1536, reasoning=320)
    request = steps[1]["request"]
    assert request["options"]["previous_response_id"] == response_id
    assert request["messages"] == [
        {"role": "tool", "parts": [{"type": "tool_result", "id": call_id, "result": output}]}
    ]
    response = steps[1]["response"]
    assert response["content"] == [
        {"type": "reasoning", "text": "", "redacted": True},
        {"type": "text", "text": "It's 18 °C and clear in Paris — enjoy the evening! ☀️"},
    ]
    assert (response["finish_reason"], response["raw_finish_reason"]) == ("stop", "completed")
    assert steps[1]["usage"] == usage(2290, 57, 2347, cache_read=2048, reasoning=32)
    streamed = [s["attempts"][0]["streamed"] for s in steps]
    assert streamed == [True, False]


# ---- Gemini, raw httpx ------------------------------------------------------------------------------


def test_gemini_sse_stream_with_the_key_in_the_query(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("gemini-sse")
    body = fixture("gemini/thinking_stream.sse")
    upstream.push(Reply.events(sse_events(body)))
    request = {
        "contents": [{"role": "user", "parts": [{"text": f"{marker} why is the sky blue?"}]}],
        "generationConfig": {"thinkingConfig": {"includeThoughts": True}, "maxOutputTokens": 2048},
    }
    url = f"{upstream.url}{GEMINI_STREAM}?alt=sse&key={FAKE_GOOGLE_KEY}"
    with proxied(sidecar) as client, client.stream("POST", url, json=request) as reply:
        received = b"".join(reply.iter_raw())
    assert received == body  # byte for byte through the proxy
    assert f"key={FAKE_GOOGLE_KEY}" in upstream.seen[-1].path  # the provider still gets its key

    (run,) = sidecar.wait_runs(q=marker)
    assert run["status"] == "completed"
    assert (run["api"], run["provider"], run["model"]) == (
        "gemini.generate_content",
        "gemini_compatible",
        "gemini-2.5-flash",
    )
    # output counts candidates (58) and thoughts (312); the prompt includes the cached tokens
    assert run["usage"] == usage(1204, 370, 1574, cache_read=1024, reasoning=312)
    step, attempt = only_step(sidecar, run)
    assert step["request"]["stream"] is True
    assert step["request"]["options"]["max_output_tokens"] == 2048
    response = step["response"]
    assert (response["id"], response["model"]) == ("IZI2acSKMoWl0-kPmYj2yQc", "gemini-2.5-flash")
    assert response["content"] == [
        {
            "type": "reasoning",
            "text": "**Weighing the question**\n\nThe user asks why the sky is blue; "
            "Rayleigh scattering is the key.",
        },
        {
            "type": "text",
            "text": "The sky looks blue because air molecules scatter short (blue) wavelengths far more "
            "than long ones — Rayleigh scattering.",
        },
    ]
    assert (response["finish_reason"], response["raw_finish_reason"]) == ("stop", "STOP")
    assert (attempt["status"], attempt["http_status"], attempt["streamed"]) == ("completed", 200, True)
    assert urlsplit(attempt["url"]).path == GEMINI_STREAM
    assert query(attempt["url"]) == {"alt": ["sse"], "key": [REDACTED]}
    detail = attempt_detail(sidecar, attempt)
    assert FAKE_GOOGLE_KEY not in json.dumps(detail)
    assert detail["response_body"] == body.decode()


def test_gemini_generate_content_with_the_key_in_a_header(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("gemini-json")
    body = fixture("gemini/function_call.json")
    upstream.push(Reply.json(body, **{"Content-Type": GEMINI_JSON}))
    request = with_marker(
        json.loads(fixture("gemini/function_call.request.json")), ["contents", 0, "parts", 0, "text"], marker
    )
    with proxied(sidecar) as client:
        reply = client.post(
            f"{upstream.url}{GEMINI_GENERATE}", json=request, headers={"x-goog-api-key": FAKE_GOOGLE_KEY}
        )
    assert reply.status_code == 200
    assert reply.content == body
    assert upstream.seen[-1].headers["x-goog-api-key"] == FAKE_GOOGLE_KEY

    (run,) = sidecar.wait_runs(q=marker, settled=False, check=finished(241))
    assert run["status"] == "in_progress"  # two function calls wait on the client
    assert (run["api"], run["model"]) == ("gemini.generate_content", "gemini-2.5-flash")
    assert run["first_message"] == f"{marker} What's the weather where this photo was taken?"
    assert run["usage"] == usage(210, 31, 241)
    step, attempt = only_step(sidecar, run)
    request_seen = step["request"]
    assert request_seen["stream"] is False
    assert request_seen["system"] == "You are a weather assistant.\n\nBe brief."
    assert [m["role"] for m in request_seen["messages"]] == ["user", "assistant", "tool"]
    assert [t["name"] for t in request_seen["tools"]] == ["get_weather", "googleSearch"]
    assert request_seen["options"]["max_output_tokens"] == 1024
    response = step["response"]
    assert response["model"] == "gemini-2.0-flash"
    assert response["content"] == [
        {"type": "text", "text": "Checking both cities."},
        {"type": "tool_call", "id": "fc-1", "name": "get_weather", "arguments": {"location": "Paris"}},
        {"type": "tool_call", "id": "fc-2", "name": "get_weather", "arguments": {"location": "Rome"}},
    ]
    assert (response["finish_reason"], response["raw_finish_reason"]) == ("tool_calls", "STOP")
    assert (attempt["status"], attempt["http_status"], attempt["streamed"]) == ("completed", 200, False)
    assert attempt["request_headers"]["x-goog-api-key"] == REDACTED
    assert attempt["url"] == f"{upstream.url}{GEMINI_GENERATE}"
    assert FAKE_GOOGLE_KEY not in json.dumps(attempt_detail(sidecar, attempt))


def _gemini_json_array_stream(sidecar: Sidecar, upstream: Upstream) -> tuple[dict, dict]:
    marker = unique("gemini-array")
    body = fixture("gemini/function_call_stream.json")
    cut = body.index(b",\r\n")  # Google flushes each element as it completes
    upstream.push(Reply(200, {"Content-Type": GEMINI_JSON}, [body[:cut], body[cut:]]))
    request = {
        "contents": [{"role": "user", "parts": [{"text": f"{marker} weather in Tokyo, in celsius"}]}],
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "description": "Current weather for a place",
                        "parameters": {
                            "type": "OBJECT",
                            "properties": {"location": {"type": "STRING"}, "unit": {"type": "STRING"}},
                        },
                    }
                ]
            }
        ],
    }
    url = f"{upstream.url}{GEMINI_STREAM}?key={FAKE_GOOGLE_KEY}"
    with proxied(sidecar) as client, client.stream("POST", url, json=request) as reply:
        received = b"".join(reply.iter_raw())
    assert received == body

    (run,) = sidecar.wait_runs(q=marker, settled=False, check=finished(201))
    assert run["status"] == "in_progress"
    assert (run["api"], run["model"]) == ("gemini.generate_content", "gemini-2.5-flash")
    assert run["usage"] == usage(83, 14 + 104, 201, reasoning=104)
    step, attempt = only_step(sidecar, run)
    assert step["request"]["stream"] is True
    response = step["response"]
    assert response["id"] == "qpc2afWVFJK4vr0Pq6WiyAU"
    assert response["content"] == [
        {"type": "text", "text": "Let me look that up."},
        {"type": "tool_call", "name": "get_weather", "arguments": {"location": "Tokyo", "unit": "celsius"}},
    ]
    assert (response["finish_reason"], response["raw_finish_reason"]) == ("tool_calls", "STOP")
    assert (attempt["status"], attempt["http_status"]) == ("completed", 200)
    assert query(attempt["url"]) == {"key": [REDACTED]}
    assert FAKE_GOOGLE_KEY not in json.dumps(attempt_detail(sidecar, attempt))
    return step, attempt


def test_gemini_json_array_stream_without_alt_sse(sidecar: Sidecar, upstream: Upstream) -> None:
    _gemini_json_array_stream(sidecar, upstream)


def test_gemini_json_array_stream_is_recorded_as_streamed(sidecar: Sidecar, upstream: Upstream) -> None:
    _, attempt = _gemini_json_array_stream(sidecar, upstream)
    assert attempt["streamed"] is True


def test_gemini_rate_limit_on_the_streaming_method(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("gemini-429")
    body = fixture("gemini/rate_limit_429_stream.json")
    upstream.push(Reply.json(body, 429, **{"Content-Type": GEMINI_JSON}))
    request = {"contents": [{"role": "user", "parts": [{"text": f"{marker} hello"}]}]}
    with proxied(sidecar) as client:
        reply = client.post(f"{upstream.url}{GEMINI_STREAM}?key={FAKE_GOOGLE_KEY}", json=request)
    assert (reply.status_code, reply.content) == (429, body)

    (run,) = sidecar.wait_runs(q=marker)  # nobody retried within the retry window
    assert run["status"] == "error"
    assert run["error"]["class"] == "rate_limited"
    step, attempt = only_step(sidecar, run)
    assert step["status"] == "error"
    assert (attempt["status"], attempt["http_status"]) == ("failed", 429)
    assert attempt["error"] == {
        "class": "rate_limited",
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "RESOURCE_EXHAUSTED",
        "code": "429",
    }
    assert query(attempt["url"]) == {"key": [REDACTED]}


# ---- Ollama over plain HTTP ----------------------------------------------------------------------------


def test_ollama_ndjson_stream_over_plain_http(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("ollama-tools")
    body = fixture("ollama/chat_tools.ndjson")
    upstream.push(Reply(200, {"Content-Type": NDJSON}, ndjson_lines(body)))
    request = with_marker(
        json.loads(fixture("ollama/chat_tools.request.json")), ["messages", 1, "content"], marker
    )
    url = f"{upstream.plain_url}/api/chat"
    with (
        httpx.Client(proxy=sidecar.proxy_url, timeout=20) as client,
        client.stream("POST", url, json=request) as reply,
    ):
        received = b"".join(reply.iter_raw())
    assert received == body

    (run,) = sidecar.wait_runs(q=marker, settled=False, check=finished(251))
    assert run["status"] == "in_progress"  # the tool call waits on the client
    assert (run["api"], run["provider"], run["model"]) == ("ollama.chat", "ollama", "qwen3:8b")
    assert run["first_message"] == f"{marker} Weather where this was taken?"
    assert run["usage"] == usage(187, 64, 251)
    step, attempt = only_step(sidecar, run)
    request_seen = step["request"]
    assert (request_seen["api"], request_seen["stream"]) == ("ollama.chat", True)
    assert request_seen["system"] == "You are a weather bot."
    assert [m["role"] for m in request_seen["messages"]] == ["user", "assistant", "tool", "user"]
    assert request_seen["options"]["max_output_tokens"] == 256
    response = step["response"]
    assert response["model"] == "qwen3:8b"
    assert response["content"] == [
        {"type": "reasoning", "text": "Okay, the user wants Tokyo weather. I'll call get_weather."},
        {"type": "text", "text": "Checking Tokyo now."},
        {
            "type": "tool_call",
            "id": "call_k3m9x2p1",
            "name": "get_weather",
            "arguments": {"city": "Tokyo", "unit": "celsius"},
        },
    ]
    assert (response["finish_reason"], response["raw_finish_reason"]) == ("tool_calls", "stop")
    assert (attempt["status"], attempt["http_status"], attempt["streamed"]) == ("completed", 200, True)
    assert attempt["url"] == url
    assert attempt["response_headers"]["content-type"] == NDJSON


def test_ollama_text_stream_completes_the_run(sidecar: Sidecar, upstream: Upstream) -> None:
    conversation = unique("ollama-conv")
    body = fixture("ollama/chat_text.ndjson")
    upstream.push(Reply(200, {"Content-Type": NDJSON}, ndjson_lines(body)))
    request = {
        "model": "gemma3:4b",
        "messages": [{"role": "user", "content": "Plan a day in Japan, briefly."}],
    }
    with (
        httpx.Client(proxy=sidecar.proxy_url, timeout=20) as client,
        client.stream(
            "POST",
            f"{upstream.plain_url}/api/chat",
            json=request,
            headers={"X-Chatdebug-Conversation": conversation},
        ) as reply,
    ):
        lines = [json.loads(line) for line in reply.iter_lines() if line]
    text = "Here is the plan — <day 1>: Tōkyō 東京 → Ōsaka 大阪 🚄 & ramen 🍜. Enjoy! 🇯🇵"
    assert "".join(line["message"]["content"] for line in lines) == text
    assert "x-chatdebug-conversation" not in {k.lower() for k in upstream.seen[-1].headers}

    (run,) = sidecar.wait_runs(conversation_id=conversation)
    assert run["status"] == "completed"
    assert (run["api"], run["provider"], run["model"]) == ("ollama.chat", "ollama", "gemma3:4b")
    assert run["usage"] == usage(31, 24, 55)
    step, attempt = only_step(sidecar, run)
    assert step["response"]["content"] == [{"type": "text", "text": text}]
    assert (step["response"]["finish_reason"], step["response"]["raw_finish_reason"]) == ("stop", "stop")
    assert attempt["streamed"] is True


def test_ollama_non_streamed_cut_at_the_length_limit(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("ollama-length")
    body = fixture("ollama/chat_length.json")
    upstream.push(Reply.json(body, **{"Content-Type": "application/json; charset=utf-8"}))
    request = {
        "model": "llama3.2",
        "stream": False,
        "messages": [{"role": "user", "content": f"{marker} why is the sky blue?"}],
        "options": {"num_predict": 10},
    }
    with httpx.Client(proxy=sidecar.proxy_url, timeout=20) as client:
        reply = client.post(f"{upstream.plain_url}/api/chat", json=request)
    assert reply.content == body

    (run,) = sidecar.wait_runs(q=marker)
    assert run["status"] == "completed"
    assert run["usage"] == usage(26, 10, 36)
    step, attempt = only_step(sidecar, run)
    assert step["request"]["stream"] is False
    assert step["response"]["content"] == [
        {"type": "text", "text": "The sky is blue because sunlight is scattered by"}
    ]
    assert (step["response"]["finish_reason"], step["response"]["raw_finish_reason"]) == ("length", "length")
    assert attempt["streamed"] is False


def test_ollama_error_line_mid_stream(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("ollama-error")
    body = fixture("ollama/midstream_error.ndjson")
    upstream.push(Reply(200, {"Content-Type": NDJSON}, ndjson_lines(body)))
    request = {"model": "qwen3:8b", "messages": [{"role": "user", "content": f"{marker} go on"}]}
    with httpx.Client(proxy=sidecar.proxy_url, timeout=20) as client:
        reply = client.post(f"{upstream.plain_url}/api/chat", json=request)
    assert (reply.status_code, reply.content) == (200, body)

    (run,) = sidecar.wait_runs(q=marker)
    assert run["status"] == "error"
    step, attempt = only_step(sidecar, run)
    assert step["response"]["content"] == [{"type": "text", "text": "Partial "}]
    assert step["response"]["finish_reason"] == "error"
    assert (attempt["status"], attempt["http_status"], attempt["streamed"]) == ("failed", 200, True)
    assert attempt["error"]["class"] == "stream_error"
    assert attempt["error"]["message"] == "an error was encountered while running the model: unexpected EOF"


def test_plain_http_that_is_no_llm_call_passes_unrecorded(sidecar: Sidecar, upstream: Upstream) -> None:
    newest = sidecar.runs(limit=1)
    tags = b'{"models":[{"name":"qwen3:8b","model":"qwen3:8b","size":5225388164}]}'
    upstream.push(Reply.json(tags))
    with httpx.Client(proxy=sidecar.proxy_url, timeout=20) as client:
        reply = client.get(f"{upstream.plain_url}/api/tags")
    assert (reply.status_code, reply.content) == (200, tags)
    time.sleep(0.5)
    assert sidecar.runs(limit=1) == newest


# ---- Azure OpenAI deployments ------------------------------------------------------------------------


def test_azure_deployment_path_names_the_model(sidecar: Sidecar, upstream: Upstream) -> None:
    """No `model` in the body: Azure names it by the deployment in the path."""
    marker = unique("azure-raw")
    body = fixture("openai_chat/azure_stream.sse")
    upstream.push(Reply.events(sse_events(body)))
    request = {
        "messages": [{"role": "user", "content": f"{marker} answer in French"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    url = f"{upstream.url}{AZURE_PATH}?api-version=2024-10-21"
    with (
        proxied(sidecar) as client,
        client.stream("POST", url, json=request, headers={"api-key": FAKE_AZURE_KEY}) as reply,
    ):
        received = b"".join(reply.iter_raw())
    assert received == body
    assert upstream.seen[-1].headers["api-key"] == FAKE_AZURE_KEY

    (run,) = sidecar.wait_runs(q=marker)
    assert run["status"] == "completed"
    assert (run["api"], run["model"]) == ("openai.chat_completions", "my-gpt4o")
    assert run["usage"] == usage(57, 14, 71)
    step, attempt = only_step(sidecar, run)
    assert step["request"]["model"] == "my-gpt4o"
    response = step["response"]
    # the first chunk (prompt filter results) has an empty id and model; the real ones come later
    assert (response["id"], response["model"]) == (
        "chatcmpl-CXrA1b2C3d4E5f6G7h8I9j0K1l2M3",
        "gpt-4o-2024-11-20",
    )
    assert response["content"] == [
        {"type": "text", "text": "Bonjour — the deployment answers in français: « ça marche » ✅"}
    ]
    assert (response["finish_reason"], response["raw_finish_reason"]) == ("stop", "stop")
    assert (attempt["status"], attempt["http_status"], attempt["streamed"]) == ("completed", 200, True)
    assert attempt["request_headers"]["api-key"] == REDACTED
    assert urlsplit(attempt["url"]).path == AZURE_PATH
    assert query(attempt["url"]) == {"api-version": ["2024-10-21"]}
    assert FAKE_AZURE_KEY not in json.dumps(attempt_detail(sidecar, attempt))


def test_azure_openai_sdk(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("azure-sdk")
    upstream.push(Reply.json(fixture("openai_chat/tool_calls.json")))
    client = openai.AzureOpenAI(
        azure_endpoint=upstream.url,
        api_key=FAKE_AZURE_KEY,
        api_version="2024-10-21",
        http_client=openai.DefaultHttpxClient(proxy=sidecar.proxy_url, verify=trusting(sidecar)),
        timeout=20.0,
    )
    completion = client.chat.completions.create(
        model="my-gpt4o",
        messages=[{"role": "user", "content": f"{marker} flights from Narita to Kansai on Nov 3"}],
        tools=[
            {
                "type": "function",
                "function": {"name": "search_flights", "parameters": {"type": "object", "properties": {}}},
            }
        ],
    )
    assert completion.choices[0].message.tool_calls is not None
    seen = upstream.seen[-1]
    assert seen.path == f"{AZURE_PATH}?api-version=2024-10-21"

    (run,) = sidecar.wait_runs(q=marker, settled=False, check=finished(1321))
    assert (run["api"], run["model"]) == ("openai.chat_completions", "my-gpt4o")
    assert run["usage"] == usage(1290, 31, 1321, cache_read=1024)
    step, attempt = only_step(sidecar, run)
    assert step["response"]["content"] == [
        {
            "type": "tool_call",
            "id": "call_Q3mZ8vK1pT6wN9rB4xL7cJ2h",
            "name": "search_flights",
            "arguments": {"origin": "NRT", "destination": "KIX", "date": "2025-11-03"},
        }
    ]
    assert step["response"]["finish_reason"] == "tool_calls"
    assert attempt["request_headers"]["api-key"] == REDACTED
    assert query(attempt["url"]) == {"api-version": ["2024-10-21"]}


# ---- OpenRouter and vLLM ---------------------------------------------------------------------------------


def test_openrouter_comments_and_an_error_event_under_200(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("openrouter")
    body = fixture("openai_chat/openrouter_midstream_error.sse")
    upstream.push(Reply.events(sse_events(body)))
    client = openai.OpenAI(
        base_url=f"{upstream.url}/api/v1",
        api_key=FAKE_OPENAI_KEY,
        http_client=openai.DefaultHttpxClient(proxy=sidecar.proxy_url, verify=trusting(sidecar)),
        timeout=20.0,
    )
    pieces: list[str] = []
    with pytest.raises(openai.APIError, match="Provider disconnected unexpectedly"):
        for chunk in client.chat.completions.create(
            model="anthropic/claude-sonnet-4.5",
            messages=[{"role": "user", "content": f"{marker} explain the plan"}],
            stream=True,
        ):
            pieces += [c.delta.content or "" for c in chunk.choices]
    assert "".join(pieces) == "Voilà — the first half of the answer ☕"

    (run,) = sidecar.wait_runs(q=marker)  # no retry came within the retry window: the run failed
    assert run["status"] == "error"
    assert run["error"]["class"] == "stream_error"
    assert run["error"]["message"] == "Provider disconnected unexpectedly"
    assert (run["api"], run["model"]) == ("openai.chat_completions", "anthropic/claude-sonnet-4.5")
    step, attempt = only_step(sidecar, run)
    assert step["status"] == "error"
    response = step["response"]
    assert response["content"] == [{"type": "text", "text": "Voilà — the first half of the answer ☕"}]
    assert response["finish_reason"] == "error"
    assert (response["id"], response["model"]) == (
        "gen-1764165000-K3p9Xw2LmQ7vRt5Ya8Nc",
        "anthropic/claude-sonnet-4.5",
    )
    assert (attempt["status"], attempt["http_status"], attempt["streamed"]) == ("failed", 200, True)
    assert attempt["error"]["class"] == "stream_error"
    assert attempt["error"]["code"] == "server_error"
    assert attempt["error"]["message"] == "Provider disconnected unexpectedly"
    assert attempt_detail(sidecar, attempt)["response_body"] == body.decode()


def test_vllm_usage_chunk_with_null_choices_over_plain_http(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("vllm")
    body = fixture("openai_chat/vllm_usage_null_choices.sse")
    upstream.push(Reply.events(sse_events(body)))
    client = openai.OpenAI(
        base_url=f"{upstream.plain_url}/v1",
        api_key="EMPTY",
        http_client=openai.DefaultHttpxClient(proxy=sidecar.proxy_url),
        timeout=20.0,
    )
    text, reported = "", None
    for chunk in client.chat.completions.create(
        model="Qwen/Qwen2.5-7B-Instruct",
        messages=[{"role": "user", "content": f"{marker} how long from Zürich to Geneva?"}],
        stream=True,
        stream_options={"include_usage": True},
    ):
        text += "".join(c.delta.content or "" for c in chunk.choices or [])
        reported = chunk.usage or reported
    assert text == "Grüß Gott! Zürich → Genève 🚆 takes 2h 45m."
    assert reported is not None and reported.total_tokens == 40

    (run,) = sidecar.wait_runs(q=marker)
    assert run["status"] == "completed"
    assert (run["api"], run["provider"], run["model"]) == (
        "openai.chat_completions",
        "openai_compatible",
        "Qwen/Qwen2.5-7B-Instruct",
    )
    assert run["usage"] == usage(23, 17, 40)
    step, attempt = only_step(sidecar, run)
    response = step["response"]
    assert response["content"] == [{"type": "text", "text": text}]
    assert (response["finish_reason"], response["raw_finish_reason"]) == ("stop", "stop")
    assert response["usage"] == run["usage"]
    assert response.get("warnings", []) == []
    assert (attempt["status"], attempt["http_status"], attempt["streamed"]) == ("completed", 200, True)
    assert attempt["url"] == f"{upstream.plain_url}/v1/chat/completions"
