"""Ollama's native /api/chat and /api/generate, normalized field by field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from addons.normalized import MediaPart, ReasoningPart, Response, TextPart, Tool, ToolCallPart, ToolResultPart
from addons.providers import openai_chat
from addons.providers.base import Call
from addons.providers.boundary import unwrap
from addons.providers.ollama import API, GENERATE, Ollama
from addons.providers.registry import find_api

FIXTURES = Path(__file__).parent / "fixtures" / "ollama"
NDJSON = "application/x-ndjson"
JSON = "application/json; charset=utf-8"


def call(path: str = "/api/chat") -> Call:
    return Call(method="POST", host="localhost:11434", path=path)


def parse(
    api: Ollama,
    name: str,
    content_type: str = NDJSON,
    status: int = 200,
    chunk: int = 0,
    data: bytes | None = None,
) -> Response:
    body = data if data is not None else (FIXTURES / name).read_bytes()
    parser = api.response_parser(call(), content_type, status)
    step = chunk or len(body)
    for i in range(0, len(body), step):
        parser.feed(body[i : i + step])
    return parser.finish()


def test_routes() -> None:
    assert unwrap(find_api("POST", "/api/chat")) is API
    assert unwrap(find_api("POST", "/api/generate")) is GENERATE
    assert (
        unwrap(find_api("POST", "/v1/chat/completions")) is openai_chat.API
    )  # Ollama's OpenAI-compatible side
    assert unwrap(find_api("POST", "/api/chat/completions")) is openai_chat.API  # e.g. Open WebUI
    assert find_api("POST", "/api/embed") is None
    assert find_api("GET", "/api/chat") is None


def test_chat_request() -> None:
    r = API.parse_request(json.loads((FIXTURES / "chat_tools.request.json").read_bytes()), call())
    assert r.api == "ollama.chat"
    assert r.model == "qwen3:8b"
    assert r.stream is True  # no `stream` field: Ollama streams
    assert r.system == "You are a weather bot."
    assert [m.role for m in r.messages] == ["user", "assistant", "tool", "user"]
    assert r.messages[0].parts == [
        TextPart(text="Weather where this was taken?"),
        MediaPart(media_type="image/png", size=70),
    ]
    assert r.messages[1].parts == [
        ReasoningPart(text="Looks like Tokyo."),
        ToolCallPart(name="get_weather", arguments={"city": "Tokyo"}),
    ]
    assert r.messages[2].parts == [ToolResultPart(name="get_weather", result='{"temp_c": 21}')]
    assert r.tools == [
        Tool(
            name="get_weather",
            description="Get the weather",
            parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        )
    ]
    assert r.options == {
        "max_output_tokens": 256,
        "temperature": 0.2,
        "top_k": 20,
        "stop": ["</s>"],
        "num_ctx": 8192,
        "think": True,
        "keep_alive": "5m",
    }


def test_generate_request() -> None:
    body = json.loads((FIXTURES / "generate.request.json").read_bytes())
    r = GENERATE.parse_request(body, call("/api/generate"))
    assert r.api == "ollama.generate"
    assert r.model == "llama3.2"
    assert r.stream is False
    assert r.system == "Answer briefly."
    assert [(m.role, m.parts) for m in r.messages] == [("user", [TextPart(text="Why is the sky blue?")])]
    assert r.options == {"seed": 42, "response_format": "json_schema"}


@pytest.mark.parametrize("chunk", [0, 1, 10, 97])
def test_chat_stream_with_thinking_and_a_tool_call(chunk: int) -> None:
    r = parse(API, "chat_tools.ndjson", chunk=chunk)
    assert r.complete is True
    assert r.model == "qwen3:8b"
    assert r.id is None
    assert r.content == [
        ReasoningPart(text="Okay, the user wants Tokyo weather. I'll call get_weather."),
        TextPart(text="Checking Tokyo now."),
        ToolCallPart(id="call_k3m9x2p1", name="get_weather", arguments={"city": "Tokyo", "unit": "celsius"}),
    ]
    assert (r.finish_reason, r.raw_finish_reason) == ("tool_calls", "stop")
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (187, 64, 251)
    assert r.warnings == [] and r.error is None


def test_chat_stream_cut_before_done() -> None:
    data = (FIXTURES / "chat_tools.ndjson").read_bytes()
    r = parse(API, "", data=data[: data.rindex(b'{"model"')])
    assert r.complete is False
    assert r.finish_reason is None and r.usage is None
    assert r.content[1] == TextPart(text="Checking Tokyo now.")


def test_chat_not_streamed_hits_the_length_limit() -> None:
    r = parse(API, "chat_length.json", content_type=JSON)
    assert r.complete is True
    assert r.model == "llama3.2"
    assert r.content == [TextPart(text="The sky is blue because sunlight is scattered by")]
    assert (r.finish_reason, r.raw_finish_reason) == ("length", "length")
    assert r.usage is not None and (r.usage.input_tokens, r.usage.output_tokens) == (26, 10)


@pytest.mark.parametrize("chunk", [0, 3])
def test_generate_stream(chunk: int) -> None:
    r = parse(GENERATE, "generate.ndjson", chunk=chunk)
    assert r.complete is True
    assert r.content == [TextPart(text="The sky is blue.")]
    assert (r.finish_reason, r.raw_finish_reason) == ("stop", "stop")
    assert r.usage is not None and r.usage.total_tokens == 31


def test_error_body() -> None:
    r = parse(API, "model_not_found_404.json", content_type=JSON, status=404)
    assert r.finish_reason == "error"
    assert r.error is not None
    assert r.error.error_class == "client_error"
    assert r.error.message == 'model "llama9" not found, try pulling it first'


def test_error_line_mid_stream() -> None:
    r = parse(API, "midstream_error.ndjson", chunk=5)
    assert r.finish_reason == "error"
    assert r.error is not None
    assert r.error.error_class == "stream_error"
    assert r.error.message == "an error was encountered while running the model: unexpected EOF"
    assert r.content == [TextPart(text="Partial ")]
    assert r.complete is False


def test_load_only_call() -> None:
    body = b'{"model":"llama3.2","created_at":"2025-11-26T14:03:01Z",'
    body += b'"message":{"role":"assistant","content":""},"done_reason":"load","done":true}'
    r = parse(API, "", content_type=JSON, data=body)
    assert (r.finish_reason, r.raw_finish_reason) == ("other", "load")
    assert r.content == []
