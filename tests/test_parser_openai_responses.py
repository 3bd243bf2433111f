"""OpenAI Responses: requests and (streamed) responses, normalized field by field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from addons.normalized import MediaPart, ReasoningPart, Response, TextPart, ToolCallPart, ToolResultPart
from addons.providers.base import Call
from addons.providers.boundary import unwrap
from addons.providers.openai_responses import API
from addons.providers.registry import find_api

FIXTURES = Path(__file__).parent / "fixtures" / "openai_responses"
SSE = "text/event-stream; charset=utf-8"


def call(path: str = "/v1/responses", limit: int = 10_000) -> Call:
    return Call(method="POST", host="api.openai.com", path=path, text_limit=limit)


def parse(
    name: str,
    content_type: str = SSE,
    status: int = 200,
    chunk: int = 0,
    path: str = "/v1/responses",
    limit: int = 10_000,
) -> Response:
    data = (FIXTURES / name).read_bytes()
    parser = API.response_parser(call(path, limit), content_type, status)
    step = chunk or len(data)
    for i in range(0, len(data), step):
        parser.feed(data[i : i + step])
    return parser.finish()


def request(name: str, path: str = "/v1/responses"):
    return API.parse_request(json.loads((FIXTURES / name).read_bytes()), call(path))


def test_registry_routes_responses_and_compact() -> None:
    assert unwrap(find_api("POST", "/v1/responses")) is API
    assert unwrap(find_api("POST", "/v1/responses/compact")) is API
    assert unwrap(find_api("POST", "/openai/v1/responses")) is API  # Azure's v1 surface
    assert find_api("GET", "/v1/responses/resp_123") is None
    assert find_api("POST", "/v1/responses/resp_123/cancel") is None


def test_request_items_become_messages() -> None:
    r = request("tool_call_stream.request.json")
    assert r.api == "openai.responses"
    assert r.model == "gpt-5-2025-08-07"
    assert r.stream is True
    # `instructions` and the leading developer message are the system prompt
    assert r.system == "You are a terse weather assistant.\n\nAnswer in one sentence."
    assert [m.role for m in r.messages] == ["user", "assistant", "tool"]
    user = r.messages[0].parts
    assert user[0] == TextPart(text="What's the weather in Paris? Here's the map and the report.")
    assert user[1] == MediaPart(media_type="image/png", size=70)
    assert user[2] == MediaPart(media_type="application/pdf", size=78)
    # reasoning, text and the call of one turn share the assistant message
    assert r.messages[1].parts == [
        ReasoningPart(text="Need the tool."),
        TextPart(text="Checking."),
        ToolCallPart(id="call_prev1", name="get_weather", arguments={"city": "Paris"}),
    ]
    assert r.messages[2].parts == [ToolResultPart(id="call_prev1", result='{"temp_c":18,"sky":"clear"}')]


def test_request_tools_and_options() -> None:
    r = request("tool_call_stream.request.json")
    assert [(t.name, t.type) for t in r.tools] == [("get_weather", None), ("web_search", "web_search")]
    assert r.tools[0].description == "Get the current weather for a city"
    assert r.tools[0].parameters["required"] == ["city"]
    assert r.tool_choice == "auto"
    assert r.options == {
        "max_output_tokens": 2048,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "previous_response_id": "resp_0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "store": True,
        "response_format": "text",
        "verbosity": "low",
    }
    assert r.signals.compaction_endpoint  # the input ends with a compaction_trigger item
    assert r.signals.previous_response_id == "resp_0a1b2c3d4e5f60718293a4b5c6d7e8f9"


def test_request_string_input_and_unknown_items() -> None:
    body = {"model": "gpt-4.1", "input": "hi", "instructions": "be brief"}
    r = API.parse_request(body, call())
    assert r.system == "be brief"
    assert [(m.role, m.parts) for m in r.messages] == [("user", [TextPart(text="hi")])]
    assert r.stream is False and r.options == {}
    odd = {
        "model": "m",
        "input": [
            {"type": "future_item", "x": 1},
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "a"}, {"type": "input_video", "url": "v"}],
            },
        ],
    }
    kept = API.parse_request(odd, call()).messages  # unknown items and parts are kept as they came
    assert [(m.role, [p.type for p in m.parts]) for m in kept] == [
        ("user", ["other"]),
        ("user", ["text", "other"]),
    ]
    assert kept[0].parts[0].model_dump() == {
        "type": "other",
        "raw_type": "future_item",
        "data": {"type": "future_item", "x": 1},
    }


@pytest.mark.parametrize("chunk", [0, 1, 7, 64])
def test_stream_prefers_the_terminal_response(chunk: int) -> None:
    r = parse("tool_call_stream.sse", chunk=chunk)
    assert r.complete is True
    assert r.id == "resp_68f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"
    assert r.model == "gpt-5-2025-08-07"
    assert r.content == [
        ReasoningPart(
            text="**Checking the weather**\n\nThe user wants Paris; I should call the tool.\n\n"
            "**Answering**\n\nSay a word first."
        ),
        TextPart(text="Let me check Paris — one moment."),
        ToolCallPart(id="call_Vq3xk2PzR7mB9dLs0aYt4uHe", name="get_weather", arguments={"city": "Paris"}),
    ]
    assert (r.finish_reason, r.raw_finish_reason) == ("tool_calls", "completed")
    assert r.usage is not None
    assert r.usage.model_dump() == {
        "input_tokens": 1843,
        "output_tokens": 412,
        "total_tokens": 2255,
        "cache_read_tokens": 1536,
        "cache_write_tokens": 0,
        "reasoning_tokens": 320,
    }
    assert r.error is None and r.warnings == []


@pytest.mark.parametrize("chunk", [0, 1, 13])
def test_stream_without_terminal_event_is_rebuilt_from_deltas(chunk: int) -> None:
    r = parse("truncated.sse", chunk=chunk)
    assert r.complete is False
    assert r.id == "resp_68f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"
    assert r.model == "gpt-5-2025-08-07"
    assert r.content == [
        ReasoningPart(
            text="**Checking the weather**\n\nThe user wants Paris; I should call the tool.\n\n"
            "**Answering**\n\nSay a word first."
        ),
        TextPart(text="Let me check Paris — one moment."),
        ToolCallPart(id="call_Vq3xk2PzR7mB9dLs0aYt4uHe", name="get_weather", arguments={"city": "Paris"}),
    ]
    assert r.finish_reason is None and r.usage is None


def test_deltas_respect_the_text_limit() -> None:
    r = parse("truncated.sse", chunk=5, limit=8)
    text = r.content[1]
    assert text == TextPart(text="Let me c", original_length=32)


def test_incomplete_max_output_tokens_is_length() -> None:
    r = parse("max_output_tokens.sse")
    assert r.complete is True
    assert (r.finish_reason, r.raw_finish_reason) == ("length", "max_output_tokens")
    assert r.content == [TextPart(text="The forecast for Paris is")]
    assert r.usage is not None and (r.usage.input_tokens, r.usage.output_tokens) == (120, 16)


def test_incomplete_content_filter() -> None:
    body = {
        "id": "resp_x",
        "object": "response",
        "status": "incomplete",
        "model": "gpt-4.1",
        "output": [],
        "incomplete_details": {"reason": "content_filter"},
        "usage": None,
    }
    parser = API.response_parser(call(), "application/json", 200)
    parser.feed(json.dumps(body).encode())
    r = parser.finish()
    assert (r.finish_reason, r.raw_finish_reason) == ("content_filter", "content_filter")


def test_failed_response_is_an_error() -> None:
    r = parse("failed.sse")
    assert r.complete is True
    assert (r.finish_reason, r.raw_finish_reason) == ("error", "failed")
    assert r.error is not None
    assert r.error.error_class == "stream_error"
    assert r.error.message == "The model produced invalid content."
    assert r.error.code == "server_error"


def test_standalone_error_event_nested_shape() -> None:
    r = parse("midstream_error.sse")
    assert r.complete is False
    assert r.finish_reason == "error"
    assert r.error is not None
    assert (r.error.error_class, r.error.message, r.error.code) == (
        "stream_error",
        "Too Many Requests",
        "too_many_requests",
    )
    assert r.id == "resp_68f1c5c2f6a7b8c9d0e1f2a3b4c5d6e7"


def test_standalone_error_event_documented_shape() -> None:
    event = {"type": "error", "sequence_number": 3, "code": "server_error", "message": "boom", "param": None}
    parser = API.response_parser(call(), SSE, 200)
    parser.feed(f"event: error\ndata: {json.dumps(event)}\n\n".encode())
    r = parser.finish()
    assert r.error is not None and (r.error.message, r.error.code) == ("boom", "server_error")


def test_non_streamed_refusal() -> None:
    r = parse("refusal.json", content_type="application/json")
    assert r.complete is True
    assert r.id == "resp_68f1c6d3a7b8c9d0e1f2a3b4c5d6e7f8"
    # a reasoning item without a summary: the model reasoned, the text is not shown
    assert r.content == [ReasoningPart(text="", redacted=True), TextPart(text="I can't help with that.")]
    assert (r.finish_reason, r.raw_finish_reason) == ("content_filter", "completed")
    assert r.usage is not None
    assert (r.usage.cache_write_tokens, r.usage.reasoning_tokens, r.usage.total_tokens) == (64, 192, 305)


def test_http_error_body() -> None:
    r = parse("rate_limit_429.json", content_type="application/json", status=429)
    assert r.finish_reason == "error"
    assert r.error is not None
    assert r.error.error_class == "rate_limited"
    assert r.error.code == "rate_limit_exceeded"
    assert r.error.message.startswith("Rate limit reached for gpt-5")


def test_compact_request_and_response() -> None:
    r = request("compact.request.json", path="/v1/responses/compact")
    assert r.options == {} and r.signals.compaction_endpoint
    assert r.system == "Summarize the session."
    assert [m.role for m in r.messages] == ["user", "assistant"]
    resp = parse("compact.json", content_type="application/json", path="/v1/responses/compact")
    # the user messages the compaction repeats are not the model's output; the summary is opaque
    assert resp.content == [ReasoningPart(text="", redacted=True)]
    assert (resp.finish_reason, resp.raw_finish_reason) == ("stop", "completed")
    assert resp.usage is not None and (resp.usage.input_tokens, resp.usage.cache_read_tokens) == (5210, 4096)


def test_builtin_tool_calls_are_server_side() -> None:
    body = {
        "id": "resp_w",
        "object": "response",
        "status": "completed",
        "model": "gpt-4.1",
        "output": [
            {
                "id": "ws_1",
                "type": "web_search_call",
                "status": "completed",
                "action": {"type": "search", "query": "paris weather"},
            },
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Sunny.", "annotations": []}],
            },
        ],
    }
    parser = API.response_parser(call(), "application/json", 200)
    parser.feed(json.dumps(body).encode())
    r = parser.finish()
    assert r.content == [
        ToolCallPart(
            id="ws_1", name="web_search", arguments={"type": "search", "query": "paris weather"}, server=True
        ),
        TextPart(text="Sunny."),
    ]
    assert r.finish_reason == "stop"  # nothing for the client to run
