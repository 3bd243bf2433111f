"""OpenAI Chat Completions parser, fed the recorded wire bytes in tests/fixtures/openai_chat."""

# ruff: noqa: RUF001  (the expected texts are the fixtures' non-ASCII text, on purpose)

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import pytest

from addons.normalized import (
    MediaPart,
    Message,
    ReasoningPart,
    Request,
    Response,
    TextPart,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from addons.providers.base import Call
from addons.providers.boundary import Guarded
from addons.providers.openai_chat import API

FIXTURES = Path(__file__).parent / "fixtures" / "openai_chat"
SSE = "text/event-stream"
JSON = "application/json"


def _call(text_limit: int = 10_000) -> Call:
    return Call(method="POST", host="api.openai.com", path="/v1/chat/completions", text_limit=text_limit)


def _body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _json(name: str) -> Any:
    return orjson.loads(_body(name))


def response(data: bytes, content_type: str = SSE, status: int = 200, call: Call | None = None) -> Response:
    parser = API.response_parser(call or _call(), content_type, status)
    parser.feed(data)
    return parser.finish()


def fixture(name: str, status: int = 200) -> Response:
    return response(_body(name), SSE if name.endswith(".sse") else JSON, status)


def request(name: str) -> Request:
    return API.parse_request(_json(name), _call())


def sse(*events: Any) -> bytes:
    """A stream built from chunk objects (or raw data strings), one `data:` event each."""
    lines = [e if isinstance(e, str) else orjson.dumps(e).decode() for e in events]
    return "".join(f"data: {line}\n\n" for line in lines).encode()


def chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-x",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
        **extra,
    }


# ---- streams -------------------------------------------------------------------------------

TEXT_STREAM_TEXT = (
    "Here's a quick plan 👋\n\n"
    "1. **東京 → 大阪**: take the Shinkansen (新幹線) — about 2h30m.\n"
    "2. **Zürich**: a café crème ☕ at Sprüngli.\n\n"
    "Enjoy the trip! 🇯🇵👩‍💻"
)


def test_text_stream() -> None:
    r = fixture("text_stream.sse")
    assert r.id == "chatcmpl-CXq3bT7nY2fKpL9sVdR4mW8eZ1aHj"
    assert r.model == "gpt-4o-mini-2024-07-18"
    assert r.content == [TextPart(text=TEXT_STREAM_TEXT)]
    assert (r.finish_reason, r.raw_finish_reason) == ("stop", "stop")
    # the `stream_options.include_usage` chunk: `choices: []`, every other chunk `usage: null`
    assert r.usage == Usage(input_tokens=41, output_tokens=52, total_tokens=93)
    assert r.error is None
    assert r.warnings == []
    assert r.complete is True


def test_parallel_tool_calls_are_joined_by_index() -> None:
    r = fixture("parallel_tool_calls.sse")
    assert r.model == "gpt-4o-2024-08-06"
    assert r.content == [
        ToolCallPart(
            id="call_W9xK2mQpL4vR8tN6bY3cZ7dF",
            name="get_weather",
            arguments={"location": "Paris, France", "unit": "celsius"},
        ),
        ToolCallPart(
            id="call_H5jT1nV9sB2gX6wM4pR8kL0q",
            name="get_weather",
            arguments={"location": "東京, 日本", "unit": "celsius"},
        ),
    ]
    assert (r.finish_reason, r.raw_finish_reason) == ("tool_calls", "tool_calls")
    assert r.usage == Usage(input_tokens=118, output_tokens=58, total_tokens=176)
    assert r.complete is True


def test_parallel_tool_call_fixture_really_streams_fragments() -> None:
    """Guard the fixture itself: each call's arguments arrive in many pieces."""
    pieces: dict[int, int] = {}
    for line in _body("parallel_tool_calls.sse").decode().split("\n\n"):
        data = line.removeprefix("data: ")
        if not data or data == "[DONE]":
            continue
        for choice in orjson.loads(data)["choices"]:
            for tc in choice["delta"].get("tool_calls") or []:
                if tc["function"].get("arguments"):
                    pieces[tc["index"]] = pieces.get(tc["index"], 0) + 1
    assert pieces == {0: 12, 1: 12}


def test_reasoning_content_stream_with_keepalive_comments() -> None:
    r = fixture("deepseek_reasoning.sse")
    assert r.id == "2f6c1a7e-9b3d-4e58-a1c2-7d9e0f4b5a63"
    assert r.model == "deepseek-reasoner"
    assert r.content == [
        ReasoningPart(text="用户问的是质数。 2 是最小的质数，唯一的偶质数。"),
        TextPart(text="最小的质数是 **2**。"),
    ]
    assert (r.finish_reason, r.raw_finish_reason) == ("stop", "stop")
    # usage rides the finish chunk here, not a separate `choices: []` chunk
    assert r.usage == Usage(input_tokens=14, output_tokens=61, total_tokens=75, reasoning_tokens=48)
    assert r.complete is True


def test_refusal_stream() -> None:
    r = fixture("refusal.sse")
    assert r.content == [TextPart(text="I'm sorry, but I can't help with that request.")]
    # the wire says `stop`; normalized, the model declined (as Anthropic's `refusal`)
    assert (r.finish_reason, r.raw_finish_reason) == ("content_filter", "stop")
    assert r.usage is None  # streamed without stream_options.include_usage
    assert r.complete is True


def test_n2_stream_keeps_the_first_choice_and_warns() -> None:
    r = fixture("n2.sse")
    assert r.content == [TextPart(text="Kyoto in autumn 🍁.")]
    assert (r.finish_reason, r.raw_finish_reason) == ("stop", "stop")
    assert r.warnings == ["2 choices streamed; content shows the first"]
    assert r.usage == Usage(input_tokens=19, output_tokens=14, total_tokens=33)
    assert r.complete is True


def test_midstream_error_event() -> None:
    r = fixture("midstream_error.sse")
    assert r.id == "chatcmpl-CXqGh7jK1lZ5xC9vB3nM6qW0eR4tY"
    assert r.content == [TextPart(text="The migration runs in three")]  # what arrived before the error
    assert r.finish_reason == "error"
    assert r.raw_finish_reason is None
    assert r.error is not None
    assert r.error.error_class == "stream_error"
    assert r.error.message == "The server had an error while processing your request. Sorry about that!"
    assert r.error.type == "server_error"
    assert r.error.code is None
    assert r.complete is False  # no [DONE] after the error


def test_truncated_stream_is_incomplete() -> None:
    r = fixture("truncated.sse")
    assert r.id == "chatcmpl-CXqJ3kL7zX1cV5bN9mQ2wE6rT0yUi"
    assert r.content == [TextPart(text="Step one: 準備。")]
    assert r.finish_reason is None
    assert r.raw_finish_reason is None
    assert r.usage is None
    assert r.error is None
    assert r.complete is False
    assert len(r.warnings) == 1
    assert r.warnings[0].startswith('unparseable event: {"id":"chatcmpl-CXqJ3kL7zX1cV5bN9mQ2wE6rT0yUi"')


# ---- whole bodies --------------------------------------------------------------------------


def test_non_streamed_tool_calls_with_cached_prompt_tokens() -> None:
    r = fixture("tool_calls.json")
    assert r.id == "chatcmpl-CXq7Rv4cN1mZ8kP3tW6yH0bL2sQeD"
    assert r.model == "gpt-4.1-2025-04-14"
    assert r.content == [
        ToolCallPart(
            id="call_Q3mZ8vK1pT6wN9rB4xL7cJ2h",
            name="search_flights",
            arguments={"origin": "NRT", "destination": "KIX", "date": "2025-11-03"},
        )
    ]
    assert (r.finish_reason, r.raw_finish_reason) == ("tool_calls", "tool_calls")
    # prompt_tokens already include the cached ones: input_tokens is not increased
    assert r.usage == Usage(input_tokens=1290, output_tokens=31, total_tokens=1321, cache_read_tokens=1024)
    assert r.complete is True


def test_reasoning_and_cached_token_usage() -> None:
    r = fixture("reasoning_usage.json")
    assert r.model == "gpt-5-mini-2025-08-07"
    assert r.content == [
        TextPart(text="The invariant holds: every split of the byte stream decodes to the same events.")
    ]
    assert (r.finish_reason, r.raw_finish_reason) == ("stop", "stop")
    assert r.usage == Usage(
        input_tokens=2148, output_tokens=713, total_tokens=2861, cache_read_tokens=1920, reasoning_tokens=576
    )


def test_non_streamed_refusal() -> None:
    r = fixture("refusal.json")
    assert r.content == [TextPart(text="I'm sorry, but I can't help with that request.")]
    assert (r.finish_reason, r.raw_finish_reason) == ("content_filter", "stop")
    assert r.usage == Usage(input_tokens=96, output_tokens=12, total_tokens=108)


def test_rate_limit_429_body() -> None:
    r = fixture("rate_limit_429.json", status=429)
    assert r.content == []
    assert r.finish_reason == "error"
    assert r.error is not None
    assert r.error.error_class == "rate_limited"
    assert r.error.message.startswith("Rate limit reached for gpt-4o in organization org-Xq7RfT2mN9pL4vK8")
    assert r.error.type == "tokens"
    assert r.error.code == "rate_limit_exceeded"


def test_vllm_error_object_body() -> None:
    r = fixture("vllm_error_400.json", status=400)
    assert r.finish_reason == "error"
    assert r.error is not None
    assert r.error.error_class == "client_error"
    assert r.error.message.startswith("This model's maximum context length is 32768 tokens.")
    assert r.error.type == "BadRequestError"
    assert r.error.code == "400"


def test_vllm_error_object_under_http_200() -> None:
    r = response(_body("vllm_error_400.json"), JSON, 200)
    assert r.finish_reason == "error"
    assert r.error is not None
    assert r.error.error_class == "stream_error"
    assert r.error.type == "BadRequestError"


def test_server_error_with_a_non_json_body() -> None:
    r = response(b"<html><body>502 Bad Gateway</body></html>", "text/html", 502)
    assert r.error is not None
    assert r.error.error_class == "server_error"
    assert "502 Bad Gateway" in r.error.message


# ---- stream edge cases (bugs found while writing the fixtures) -----------------------------


def test_an_error_key_set_to_null_is_not_an_error() -> None:
    r = response(
        sse(
            chunk({"role": "assistant", "content": "hi"}, error=None), chunk({}, "stop", error=None), "[DONE]"
        )
    )
    assert r.error is None
    assert r.content == [TextPart(text="hi")]
    assert r.finish_reason == "stop"


def test_vllm_error_object_mid_stream() -> None:
    error = {"object": "error", "message": "engine died", "type": "InternalServerError", "code": 500}
    r = response(sse(chunk({"content": "par"}), error))
    assert r.content == [TextPart(text="par")]
    assert r.error is not None
    assert (r.error.error_class, r.error.message, r.error.code) == ("stream_error", "engine died", "500")
    assert r.complete is False


def test_tool_calls_without_index_are_told_apart_by_id() -> None:
    """Some compatible servers send each whole call with no `index` (so all land on index 0)."""
    r = response(
        sse(
            chunk({"tool_calls": [{"id": "a", "function": {"name": "ls", "arguments": '{"p":"/"}'}}]}),
            chunk({"tool_calls": [{"id": "b", "function": {"name": "cat", "arguments": '{"f":"x"}'}}]}),
            chunk({}, "tool_calls"),
            "[DONE]",
        )
    )
    assert r.content == [
        ToolCallPart(id="a", name="ls", arguments={"p": "/"}),
        ToolCallPart(id="b", name="cat", arguments={"f": "x"}),
    ]


def test_a_name_repeated_on_every_fragment_is_not_doubled() -> None:
    fragment = {"index": 0, "id": "c1", "type": "function", "function": {"name": "grep"}}
    r = response(
        sse(
            chunk({"tool_calls": [{**fragment, "function": {"name": "grep", "arguments": '{"q":'}}]}),
            chunk({"tool_calls": [{**fragment, "function": {"name": "grep", "arguments": '"x"}'}}]}),
            chunk({}, "tool_calls"),
            "[DONE]",
        )
    )
    assert r.content == [ToolCallPart(id="c1", name="grep", arguments={"q": "x"})]


def test_invalid_tool_arguments_are_kept_raw() -> None:
    r = response(
        sse(
            chunk(
                {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": '{"a": '}}]}
            ),
            chunk({}, "length"),
            "[DONE]",
        )
    )
    assert r.content == [ToolCallPart(id="c", name="f", arguments='{"a": ')]
    assert (r.finish_reason, r.raw_finish_reason) == ("length", "length")


def test_legacy_function_call_stream() -> None:
    r = response(
        sse(
            chunk({"role": "assistant", "content": None, "function_call": {"name": "w", "arguments": ""}}),
            chunk({"function_call": {"arguments": '{"city":'}}),
            chunk({"function_call": {"arguments": '"Oslo"}'}}),
            chunk({}, "function_call"),
            "[DONE]",
        )
    )
    assert r.content == [ToolCallPart(name="w", arguments={"city": "Oslo"})]
    assert (r.finish_reason, r.raw_finish_reason) == ("tool_calls", "function_call")


def test_finish_chunk_without_done_counts_as_complete() -> None:
    r = response(sse(chunk({"content": "ok"}), chunk({}, "stop")))
    assert r.complete is True


def test_unknown_finish_reason_maps_to_other_and_keeps_raw() -> None:
    r = response(sse(chunk({"content": "x"}, "eos_token"), "[DONE]"))
    assert (r.finish_reason, r.raw_finish_reason) == ("other", "eos_token")


def test_streamed_text_is_cut_at_the_limit() -> None:
    r = response(_body("text_stream.sse"), call=_call(text_limit=10))
    assert r.content == [TextPart(text="Here's a q", original_length=len(TEXT_STREAM_TEXT))]


# ---- requests ------------------------------------------------------------------------------


def test_request_system_message_stream_and_max_tokens() -> None:
    r = request("text_stream.request.json")
    assert r.api == "openai.chat_completions"
    assert r.model == "gpt-4o-mini"
    assert r.system == "You are a terse travel assistant."
    assert r.messages == [_user("Plan 東京 → 大阪, then coffee in Zürich 🙏")]
    assert r.options == {"temperature": 0.2, "max_output_tokens": 256}
    assert r.stream is True
    assert r.tools == []


def test_request_developer_role_and_max_completion_tokens() -> None:
    r = request("reasoning_usage.request.json")
    assert r.system == "Answer in one sentence."  # developer is the new system
    assert r.messages == [_user("Does the SSE decoder's output depend on chunk boundaries?")]
    assert r.options == {"reasoning_effort": "medium", "verbosity": "low", "max_output_tokens": 4096}
    assert r.stream is False


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    body = {"model": "m", "messages": [], "max_tokens": 100, "max_completion_tokens": 2000}
    assert API.parse_request(body, _call()).options["max_output_tokens"] == 2000


def test_request_tool_round_trip() -> None:
    r = request("tool_calls.request.json")
    assert r.system == "You book trips."
    assert [m.role for m in r.messages] == ["user", "assistant", "tool", "user"]
    assert r.messages[1].parts == [
        ToolCallPart(
            id="call_A1bC2dE3fG4hI5jK6lM7nO8p", name="get_weather", arguments={"location": "Osaka, Japan"}
        )
    ]
    assert r.messages[2].parts == [
        ToolResultPart(id="call_A1bC2dE3fG4hI5jK6lM7nO8p", result='{"condition":"sunny","temp_c":19}')
    ]
    assert r.messages[3].parts == [TextPart(text="Go ahead.")]
    assert [t.name for t in r.tools] == ["get_weather", "search_flights"]
    assert r.tools[1].description == "Search flights between two airports."
    assert r.tools[1].parameters["required"] == ["origin", "destination", "date"]
    assert r.tool_choice == "auto"
    assert r.options == {"max_output_tokens": 512}


def test_request_legacy_functions() -> None:
    r = request("legacy_functions.request.json")
    assert [m.role for m in r.messages] == ["user", "assistant", "tool"]
    assert r.messages[1].parts == [
        ToolCallPart(name="get_current_weather", arguments={"location": "Boston, MA"})
    ]
    assert r.messages[2].parts == [
        ToolResultPart(
            name="get_current_weather",
            result='{"temperature": "22", "unit": "celsius", "description": "Sunny"}',
        )
    ]
    assert [t.name for t in r.tools] == ["get_current_weather"]
    assert r.tools[0].parameters["required"] == ["location"]
    assert r.tool_choice == "auto"  # from the legacy `function_call`
    # `max_completion_tokens: null` must not hide `max_tokens`
    assert r.options == {"max_output_tokens": 100}


def test_request_media_parts_keep_only_type_and_size() -> None:
    body = _json("multimodal.request.json")
    content = body["messages"][0]["content"]
    png = base64.b64decode(content[1]["image_url"]["url"].partition(",")[2])
    wav = base64.b64decode(content[3]["input_audio"]["data"])
    pdf = base64.b64decode(content[4]["file"]["file_data"].partition(",")[2])
    r = API.parse_request(body, _call())
    assert r.messages[0].parts == [
        TextPart(text="What is in these?"),
        MediaPart(media_type="image/png", size=len(png)),
        MediaPart(media_type="image/url", size=0),  # a remote URL: nothing fetched, nothing counted
        MediaPart(media_type="audio/wav", size=len(wav)),
        MediaPart(media_type="application/pdf", size=len(pdf)),
    ]
    assert (len(png), len(wav), len(pdf)) == (70, 124, 69)
    dumped = r.model_dump_json()
    assert content[1]["image_url"]["url"][30:] not in dumped
    assert content[3]["input_audio"]["data"] not in dumped


def test_request_options_and_response_format() -> None:
    r = request("refusal.request.json")
    assert r.options == {"response_format": "json_schema"}
    assert request("n2.request.json").options == {"temperature": 1.0, "n": 2}
    assert request("parallel_tool_calls.request.json").options == {"parallel_tool_calls": True}


def test_request_long_text_is_cut() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 50}]}
    r = API.parse_request(body, _call(text_limit=20))
    assert r.messages[0].parts == [TextPart(text="x" * 20, original_length=50)]


def test_request_without_messages_still_names_its_model() -> None:
    r = Guarded(API).parse_request({"model": "m", "prompt": "legacy completions"}, _call())
    assert (r.api, r.model, r.messages, r.warnings) == ("openai.chat_completions", "m", [], [])


def test_unknown_roles_and_parts_are_kept_with_a_warning() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "critic", "content": "x"},
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": "https://v"}},
                    {"type": "text", "text": "see"},
                ],
            },
            "bare",
        ],
    }
    r = Guarded(API).parse_request(body, _call())
    assert (r.messages[0].role, r.messages[0].raw_role) == ("user", "critic")
    assert [p.type for p in r.messages[1].parts] == ["other", "text"]
    assert r.messages[2].parts[0].type == "other"
    assert len(r.warnings) == 3


def test_session_schema_and_forced_tool_signals() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "metadata": {"session_id": "s-1"},
        "prompt_cache_key": "pck",
        "user": "end-user",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "tags", "schema": {"properties": {"tags": {}}}},
        },
        "tool_choice": {"type": "function", "function": {"name": "set_title"}},
    }
    call = Call(method="POST", host="h", path="/v1/chat/completions", headers={"x-session-id": "ses_9"})
    signals = Guarded(API).parse_request(body, call).signals
    assert [(s.source, s.value) for s in signals.session_ids] == [
        ("x-session-id", "ses_9"),
        ("metadata.session_id", "s-1"),
        ("prompt_cache_key", "pck"),
    ]
    assert signals.user == "end-user" and signals.forced_tool == "set_title"
    assert signals.output_schema is not None and (
        signals.output_schema.name,
        signals.output_schema.fields,
    ) == ("tags", ["tags"])


def _user(text: str) -> Message:
    return Message(role="user", parts=[TextPart(text=text)])


@pytest.mark.parametrize("usage_chunk", [{"choices": None}, {}], ids=["choices-null", "choices-absent"])
def test_usage_chunk_with_null_or_absent_choices(usage_chunk: dict[str, Any]) -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    r = response(
        sse(chunk({"content": "ok"}, "stop"), {"id": "chatcmpl-x", **usage_chunk, "usage": usage}, "[DONE]")
    )
    assert r.content == [TextPart(text="ok")]
    assert r.usage == Usage(input_tokens=5, output_tokens=2, total_tokens=7)
