"""Google Gemini generateContent: requests and every body shape, normalized field by field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from addons.normalized import MediaPart, ReasoningPart, Response, TextPart, Tool, ToolCallPart, ToolResultPart
from addons.providers.base import Call
from addons.providers.boundary import unwrap
from addons.providers.gemini import API
from addons.providers.registry import find_api

FIXTURES = Path(__file__).parent / "fixtures" / "gemini"
STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"
JSON = "application/json; charset=UTF-8"
SSE = "text/event-stream"


def call(path: str) -> Call:
    return Call(method="POST", host="generativelanguage.googleapis.com", path=path)


def parse(
    name: str,
    path: str,
    content_type: str = JSON,
    status: int = 200,
    chunk: int = 0,
    data: bytes | None = None,
) -> Response:
    body = data if data is not None else (FIXTURES / name).read_bytes()
    parser = API.response_parser(call(path), content_type, status)
    step = chunk or len(body) or 1
    for i in range(0, len(body), step):
        parser.feed(body[i : i + step])
    return parser.finish()


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/v1beta/models/gemini-2.5-flash:generateContent", "gemini-2.5-flash"),
        ("/v1beta/models/gemini-2.5-pro:streamGenerateContent", "gemini-2.5-pro"),
        (
            "/v1/projects/my-proj/locations/us-central1/publishers/google/models/gemini-2.0-flash-001"
            ":streamGenerateContent",
            "gemini-2.0-flash-001",
        ),
        ("/v1beta/tunedModels/my-tuned-7:generateContent", "my-tuned-7"),
        ("/v1beta/models/gemini-2.5-flash%3AgenerateContent", "gemini-2.5-flash"),
    ],
)
def test_paths_route_here_and_name_the_model(path: str, model: str) -> None:
    assert unwrap(find_api("POST", path)) is API
    assert API.parse_request({"contents": []}, call(path)).model == model


def test_other_model_methods_are_not_generation() -> None:
    assert find_api("POST", "/v1beta/models/gemini-2.5-flash:countTokens") is None
    assert find_api("POST", "/v1beta/models/text-embedding-004:embedContent") is None
    assert find_api("GET", GENERATE) is None


def test_request_contents_system_tools_and_options() -> None:
    r = API.parse_request(json.loads((FIXTURES / "function_call.request.json").read_bytes()), call(STREAM))
    assert r.api == "gemini.generate_content"
    assert r.model == "gemini-2.5-flash"
    assert r.stream is True
    assert r.system == "You are a weather assistant.\n\nBe brief."
    assert [m.role for m in r.messages] == ["user", "assistant", "tool"]
    assert r.messages[0].parts == [
        TextPart(text="What's the weather where this photo was taken?"),
        MediaPart(media_type="image/png", size=70),
    ]
    assert r.messages[1].parts == [
        ReasoningPart(text="Looks like Tokyo; checking."),
        ToolCallPart(name="get_weather", arguments={"location": "Tokyo"}),
    ]
    assert r.messages[2].parts == [ToolResultPart(name="get_weather", result={"temp_c": 21, "sky": "clear"})]
    assert r.tools == [
        Tool(
            name="get_weather",
            description="Current weather for a place",
            parameters={
                "type": "OBJECT",
                "properties": {"location": {"type": "STRING"}},
                "required": ["location"],
            },
        ),
        Tool(name="googleSearch", type="googleSearch"),
    ]
    assert r.tool_choice == {"mode": "AUTO"}
    assert r.options == {
        "max_output_tokens": 1024,
        "temperature": 0.4,
        "top_p": 0.95,
        "top_k": 40,
        "stop": ["END"],
        "thinking": {"thinkingBudget": 2048, "includeThoughts": True},
    }


def test_request_in_snake_case() -> None:
    r = API.parse_request(json.loads((FIXTURES / "snake_case.request.json").read_bytes()), call(GENERATE))
    assert r.stream is False
    assert r.system == "You are a cat."
    assert [(m.role, m.parts) for m in r.messages] == [
        ("user", [TextPart(text="Describe this"), MediaPart(media_type="image/jpeg", size=6)])
    ]
    assert r.options == {"max_output_tokens": 64, "stop": ["\n\n"]}


@pytest.mark.parametrize("chunk", [0, 1, 9, 100])
def test_sse_stream_with_thoughts(chunk: int) -> None:
    r = parse("thinking_stream.sse", STREAM, SSE, chunk=chunk)
    assert r.complete is True
    assert r.id == "IZI2acSKMoWl0-kPmYj2yQc"
    assert r.model == "gemini-2.5-flash"
    assert r.content == [
        ReasoningPart(
            text="**Weighing the question**\n\nThe user asks why the sky is blue; "
            "Rayleigh scattering is the key."
        ),
        TextPart(
            text="The sky looks blue because air molecules scatter short (blue) wavelengths far more "
            "than long ones — Rayleigh scattering."
        ),
    ]
    assert (r.finish_reason, r.raw_finish_reason) == ("stop", "STOP")
    assert r.usage is not None
    # candidates (58) + thoughts (312): output counts the thinking, as OpenAI's and Anthropic's do
    assert r.usage.model_dump() == {
        "input_tokens": 1204,
        "output_tokens": 370,
        "total_tokens": 1574,
        "cache_read_tokens": 1024,
        "cache_write_tokens": 0,
        "reasoning_tokens": 312,
    }
    assert r.warnings == []


def test_sse_stream_without_finish_reason_is_incomplete() -> None:
    data = (FIXTURES / "thinking_stream.sse").read_bytes()
    cut = data[: data.rindex(b"data: ")]
    r = parse("", STREAM, SSE, data=cut)
    assert r.complete is False
    assert r.finish_reason is None
    assert r.content[-1] == TextPart(
        text="The sky looks blue because air molecules scatter short (blue) "
        "wavelengths far more than long ones — Rayleigh scattering."
    )


@pytest.mark.parametrize("chunk", [0, 1, 3, 50])
def test_streamed_json_array_with_a_function_call(chunk: int) -> None:
    r = parse("function_call_stream.json", STREAM, JSON, chunk=chunk)
    assert r.complete is True
    assert r.id == "qpc2afWVFJK4vr0Pq6WiyAU"
    assert r.content == [
        TextPart(text="Let me look that up."),
        ToolCallPart(name="get_weather", arguments={"location": "Tokyo", "unit": "celsius"}),
    ]
    assert (r.finish_reason, r.raw_finish_reason) == ("tool_calls", "STOP")
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.reasoning_tokens) == (83, 118, 104)
    assert r.usage.total_tokens == 201


def test_streamed_json_array_cut_midway() -> None:
    data = (FIXTURES / "function_call_stream.json").read_bytes()
    r = parse("", STREAM, JSON, data=data[: len(data) // 2 + 40])
    assert r.complete is False
    assert r.content == [TextPart(text="Let me look that up.")]
    assert r.warnings and r.warnings[0].startswith("the body ended inside a JSON element")


def test_non_streamed_parallel_function_calls() -> None:
    r = parse("function_call.json", GENERATE, chunk=11)
    assert r.complete is True
    assert r.model == "gemini-2.0-flash"
    assert r.content == [
        TextPart(text="Checking both cities."),
        ToolCallPart(id="fc-1", name="get_weather", arguments={"location": "Paris"}),
        ToolCallPart(id="fc-2", name="get_weather", arguments={"location": "Rome"}),
    ]
    assert r.finish_reason == "tool_calls"
    assert r.usage is not None and (r.usage.output_tokens, r.usage.reasoning_tokens) == (31, 0)


def test_safety_stop_is_content_filter() -> None:
    r = parse("safety.json", GENERATE)
    assert (r.finish_reason, r.raw_finish_reason) == ("content_filter", "SAFETY")
    assert r.content == [TextPart(text="I can describe the general")]


def test_blocked_prompt() -> None:
    r = parse("prompt_blocked.json", GENERATE)
    assert (r.finish_reason, r.raw_finish_reason) == ("content_filter", "PROHIBITED_CONTENT")
    assert r.content == []
    assert r.warnings == ["the prompt was blocked: PROHIBITED_CONTENT"]
    assert r.usage is not None and r.usage.input_tokens == 9


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("MAX_TOKENS", "length"),
        ("RECITATION", "content_filter"),
        ("SPII", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "error"),
        ("LANGUAGE", "other"),
    ],
)
def test_finish_reasons(reason: str, expected: str) -> None:
    body = {"candidates": [{"content": {"parts": [], "role": "model"}, "finishReason": reason, "index": 0}]}
    r = parse("", GENERATE, data=json.dumps(body).encode())
    assert (r.finish_reason, r.raw_finish_reason) == (expected, reason)


@pytest.mark.parametrize(
    ("name", "path"), [("rate_limit_429.json", GENERATE), ("rate_limit_429_stream.json", STREAM)]
)
def test_error_bodies(name: str, path: str) -> None:
    r = parse(name, path, status=429, chunk=17)
    assert r.finish_reason == "error"
    assert r.error is not None
    assert r.error.error_class == "rate_limited"
    assert r.error.type == "RESOURCE_EXHAUSTED"
    assert r.error.code == "429"
    assert r.error.message.startswith("You exceeded your current quota")


def test_error_body_that_is_not_json() -> None:
    r = parse("", GENERATE, "text/html", status=502, data=b"<html><body>502 Bad Gateway</body></html>")
    assert r.error is not None
    assert r.error.error_class == "server_error"
    assert "502 Bad Gateway" in r.error.message


def test_error_after_generation_started() -> None:
    r = parse("midstream_error.sse", STREAM, SSE, chunk=7)
    assert r.finish_reason == "error"
    assert r.error is not None
    assert r.error.error_class == "stream_error"
    assert (r.error.type, r.error.code) == ("UNAVAILABLE", "503")
    assert r.error.message == "The model is overloaded. Please try again later."
    assert r.content == [TextPart(text="Here is the first part")]
    assert r.complete is False
