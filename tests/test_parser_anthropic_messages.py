"""Anthropic Messages parser, fed the recorded wire bytes in tests/fixtures/anthropic_messages."""

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
    Tool,
    ToolCallPart,
    ToolResultPart,
    Usage,
)
from addons.providers.anthropic_messages import API
from addons.providers.base import Call
from addons.providers.boundary import Guarded

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic_messages"
SSE = "text/event-stream"
JSON = "application/json"


GUARDED = Guarded(API)  # as the pipeline sees it: warnings and header signals added


def _call(text_limit: int = 10_000) -> Call:
    return Call(method="POST", host="api.anthropic.com", path="/v1/messages", text_limit=text_limit)


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


def events(*items: tuple[str, dict[str, Any]]) -> bytes:
    return b"".join(f"event: {name}\ndata: ".encode() + orjson.dumps(data) + b"\n\n" for name, data in items)


# ---- streams -------------------------------------------------------------------------------

TEXT_STREAM_TEXT = (
    "Bonjour ! 👋 Here's the short version:\n\n"
    "- **東京** to **大阪** takes about 2½ hours on the 新幹線.\n"
    "- In Zürich, try a café crème ☕ — naïve but perfect.\n\n"
    "Bon voyage 🇯🇵👩‍💻"
)


def test_text_stream_with_ping() -> None:
    r = fixture("text_stream.sse")
    assert r.id == "msg_01HkR5tYq8WzN3bVx7mLpC2d"
    assert r.model == "claude-sonnet-4-5-20250929"
    assert r.content == [TextPart(text=TEXT_STREAM_TEXT)]
    assert (r.finish_reason, r.raw_finish_reason) == ("stop", "end_turn")
    # message_start's input_tokens survive a message_delta that only carries output_tokens
    assert r.usage == Usage(input_tokens=38, output_tokens=74, total_tokens=112)
    assert r.error is None
    assert r.warnings == []
    assert r.complete is True


def test_tool_use_stream_with_cache_usage() -> None:
    r = fixture("tool_use_stream.sse")
    assert r.id == "msg_01LqT9vWx3KcN7bRz5mHpY8e"
    assert r.model == "claude-haiku-4-5-20251001"
    assert r.content == [
        TextPart(text="I'll check the forecast for Zürich."),
        ToolCallPart(
            id="toolu_01PdX4nM8rTq2VzK6wB9sJcL",
            name="get_weather",
            arguments={"location": "Zürich, Schweiz", "unit": "celsius", "days": 3},
        ),
    ]
    assert (r.finish_reason, r.raw_finish_reason) == ("tool_calls", "tool_use")
    # Anthropic's input_tokens (412) excludes cache reads and writes; the contract's includes them
    assert r.usage == Usage(
        input_tokens=412 + 1536 + 10240,
        output_tokens=71,
        total_tokens=412 + 1536 + 10240 + 71,
        cache_read_tokens=10240,
        cache_write_tokens=1536,
    )
    assert r.complete is True


def test_tool_use_fixture_pads_its_json_like_the_live_wire() -> None:
    """Guard the fixture: newer models pad data lines with spaces inside the JSON object."""
    lines = [line for line in _body("tool_use_stream.sse").split(b"\n") if line.startswith(b"data: ")]
    assert any(line.endswith(b" }") for line in lines)
    assert sum(b'"input_json_delta"' in line for line in lines) == 8


def test_thinking_signature_and_redacted_thinking() -> None:
    r = fixture("thinking_stream.sse")
    assert r.model == "claude-opus-4-7"
    assert r.content == [
        ReasoningPart(
            text="The user asks whether 1 001 is prime. 1001 = 7 × 11 × 13, so it is not."
            " Answer briefly; mention the factors (因数)."
        ),
        ReasoningPart(text="", redacted=True),
        TextPart(text="No — 1001 = 7 × 11 × 13 (因数: 7, 11, 13)."),
    ]
    assert "signature" not in r.model_dump_json()  # the signature is opaque: not kept
    assert (r.finish_reason, r.raw_finish_reason) == ("stop", "end_turn")
    assert r.usage == Usage(input_tokens=512, output_tokens=301, total_tokens=813, reasoning_tokens=268)


def test_web_search_with_citations() -> None:
    r = fixture("web_search_stream.sse")
    assert r.id == "msg_01WsR3tYq7ZkN5bVx9mLpC1a"
    assert r.content == [
        ToolCallPart(
            id="srvtoolu_01JqX5nB8rTm2VzK4wY9sPcL",
            name="web_search",
            arguments={"query": "current stable Python release"},
            server=True,
        ),
        ToolResultPart(
            id="srvtoolu_01JqX5nB8rTm2VzK4wY9sPcL",
            name="web_search",
            result=[
                {
                    "type": "web_search_result",
                    "title": "Python Release Python 3.14.0 | Python.org",
                    "url": "https://www.python.org/downloads/release/python-3140/",
                    "page_age": "October 7, 2025",
                },
                {
                    "type": "web_search_result",
                    "title": "What’s New In Python 3.14",
                    "url": "https://docs.python.org/3/whatsnew/3.14.html",
                    "page_age": None,
                },
            ],
        ),
        TextPart(text="The current stable release is Python 3.14.0."),
        TextPart(text=" It was released on 7 October 2025 — t-strings (PEP 750) are the headline feature."),
    ]
    assert "encrypted_" not in r.model_dump_json()  # kilobytes of opaque data per search result
    assert (r.finish_reason, r.raw_finish_reason) == ("stop", "end_turn")
    # message_delta's cumulative input_tokens (after reading the results) replace message_start's 2230
    assert r.usage == Usage(input_tokens=12284, output_tokens=103, total_tokens=12387)
    assert r.complete is True


def test_pause_turn_with_a_failed_server_tool() -> None:
    r = fixture("pause_turn_stream.sse")
    assert [p.type for p in r.content] == ["text", "tool_call", "tool_result", "tool_call", "tool_result"]
    assert r.content[0] == TextPart(text="Searching several sources…")
    assert r.content[1] == ToolCallPart(
        id="srvtoolu_01NvB3xK7pQm5RtY9wZ2cLdF",
        name="web_search",
        arguments={"query": "Rust 2024 edition stabilization date"},
        server=True,
    )
    first = r.content[2]
    assert isinstance(first, ToolResultPart)
    assert first.is_error is None
    assert first.result[0]["url"] == "https://blog.rust-lang.org/2025/02/20/Rust-1.85.0/"
    assert r.content[4] == ToolResultPart(
        id="srvtoolu_01QwE4rT6yU8iO0pA2sD4fGh",
        name="web_search",
        result={"type": "web_search_tool_result_error", "error_code": "unavailable"},
        is_error=True,
    )
    assert (r.finish_reason, r.raw_finish_reason) == ("other", "pause_turn")
    assert r.usage == Usage(input_tokens=9120, output_tokens=57, total_tokens=9177)
    assert r.complete is True


def test_refusal() -> None:
    r = fixture("refusal_stream.sse")
    assert r.content == [TextPart(text="")]  # the empty text block the API opened
    assert (r.finish_reason, r.raw_finish_reason) == ("content_filter", "refusal")
    assert r.usage == Usage(input_tokens=20, output_tokens=120, total_tokens=140, reasoning_tokens=67)
    assert r.error is None
    assert r.complete is True


def test_overloaded_error_mid_stream() -> None:
    r = fixture("overloaded_midstream.sse")
    assert r.id == "msg_01OvL4nWq8RzV3bX7mLpT5cE"
    assert r.content == [TextPart(text="Sure — here is the refactored módulo:")]
    assert r.finish_reason == "error"
    assert r.raw_finish_reason is None
    assert r.error is not None
    assert r.error.error_class == "overloaded"
    assert (r.error.message, r.error.type) == ("Overloaded", "overloaded_error")
    assert r.usage == Usage(
        input_tokens=1843 + 1536, output_tokens=2, total_tokens=3381, cache_read_tokens=1536
    )
    assert r.complete is False


def test_overloaded_error_as_the_first_event_of_a_200() -> None:
    r = fixture("overloaded_first_event.sse")
    assert r.id is None
    assert r.content == []
    assert r.finish_reason == "error"
    assert r.error is not None
    assert r.error.error_class == "overloaded"
    assert r.error.type == "overloaded_error"
    assert r.usage is None
    assert r.complete is False


def test_other_stream_errors_are_stream_errors() -> None:
    r = response(events(("error", {"type": "error", "error": {"type": "api_error", "message": "Internal"}})))
    assert r.error is not None
    assert (r.error.error_class, r.error.type, r.error.message) == ("stream_error", "api_error", "Internal")


def test_truncated_stream_is_incomplete() -> None:
    data = _body("text_stream.sse")
    r = response(data[: data.index(b"event: content_block_stop")])
    assert r.content == [TextPart(text=TEXT_STREAM_TEXT)]
    assert r.finish_reason is None
    assert r.usage == Usage(input_tokens=38, output_tokens=1, total_tokens=39)  # message_start's only
    assert r.complete is False


def test_event_name_stands_in_for_a_missing_type() -> None:
    r = response(
        events(
            ("message_start", {"message": {"id": "msg_x", "model": "m", "usage": {"input_tokens": 3}}}),
            ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
            ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "hi"}}),
            ("message_delta", {"delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 1}}),
            ("message_stop", {}),
        )
    )
    assert (r.id, r.content) == ("msg_x", [TextPart(text="hi")])
    assert (r.finish_reason, r.raw_finish_reason) == ("length", "max_tokens")
    assert r.complete is True


def test_streamed_text_is_cut_at_the_limit() -> None:
    r = response(_body("text_stream.sse"), call=_call(text_limit=7))
    assert r.content == [TextPart(text="Bonjour", original_length=len(TEXT_STREAM_TEXT))]


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "other"),
        ("something_new", "other"),
    ],
)
def test_stop_reason_mapping_keeps_the_raw_value(raw: str, normalized: str) -> None:
    r = response(
        events(
            (
                "message_start",
                {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1}}},
            ),
            ("message_delta", {"type": "message_delta", "delta": {"stop_reason": raw}, "usage": {}}),
            ("message_stop", {"type": "message_stop"}),
        )
    )
    assert (r.finish_reason, r.raw_finish_reason) == (normalized, raw)


# ---- whole bodies --------------------------------------------------------------------------


def test_non_streamed_tool_use_with_cache_usage() -> None:
    r = fixture("tool_use.json")
    assert r.id == "msg_01TuN6vWq3RzX8bK2mLpJ4cG"
    assert r.model == "claude-sonnet-4-5-20250929"
    assert r.content == [
        TextPart(text="I'll look up the weather in São Paulo."),
        ToolCallPart(
            id="toolu_01KmV7xB3nQp9RtZ5wY2cLdH",
            name="get_weather",
            arguments={"location": "São Paulo, Brasil", "unit": "celsius"},
        ),
    ]
    assert (r.finish_reason, r.raw_finish_reason) == ("tool_calls", "tool_use")
    assert r.usage == Usage(
        input_tokens=3 + 311 + 28530,
        output_tokens=78,
        total_tokens=3 + 311 + 28530 + 78,
        cache_read_tokens=28530,
        cache_write_tokens=311,
    )
    assert r.complete is True


def test_rate_limit_429_body() -> None:
    r = fixture("rate_limit_429.json", status=429)
    assert r.finish_reason == "error"
    assert r.error is not None
    assert r.error.error_class == "rate_limited"
    assert r.error.type == "rate_limit_error"
    assert r.error.message.startswith("This request would exceed the rate limit for your organization")


def test_overloaded_529_body() -> None:
    r = fixture("overloaded_529.json", status=529)
    assert r.finish_reason == "error"
    assert r.error is not None
    assert (r.error.error_class, r.error.type, r.error.message) == (
        "overloaded",
        "overloaded_error",
        "Overloaded",
    )


def test_error_body_under_http_200() -> None:
    r = response(_body("overloaded_529.json"), JSON, 200)
    assert r.error is not None
    assert r.error.error_class == "overloaded"


# ---- requests ------------------------------------------------------------------------------


def test_request_string_content_and_system_string() -> None:
    r = request("text_stream.request.json")
    assert r.api == "anthropic.messages"
    assert r.model == "claude-sonnet-4-5"
    assert r.system == "You are a terse travel assistant."
    assert r.messages == [
        Message(role="user", parts=[TextPart(text="Plan 東京 → 大阪, then coffee in Zürich 🙏")])
    ]
    assert r.options == {"temperature": 0.3, "max_output_tokens": 1024, "stop": ["\n\nHuman:"]}
    assert r.stream is True


def test_request_block_content_equals_string_content() -> None:
    body = _json("web_search_stream.request.json")
    as_blocks = API.parse_request(body, _call())
    body["messages"][0]["content"] = "What is the current stable Python?"
    assert API.parse_request(body, _call()).messages == as_blocks.messages
    assert as_blocks.tools == [Tool(name="web_search", type="web_search_20250305")]


def test_request_tool_results_become_tool_messages() -> None:
    """Text sent with the results stays in the tool turn: the tool loop goes on."""
    r = request("tool_use_stream.request.json")
    assert r.system == "You are a weather assistant.\n\nAlways give temperatures in °C."
    assert [m.role for m in r.messages] == ["user", "assistant", "tool"]
    assert r.messages[1].parts == [
        TextPart(text="Let me look up Bern."),
        ToolCallPart(
            id="toolu_01AbCdEfGhIjKlMnOpQrStUv", name="get_weather", arguments={"location": "Bern, Schweiz"}
        ),
        ToolCallPart(id="toolu_01WxYzAbCdEfGhIjKlMnOpQr", name="get_alerts", arguments={"region": "BE"}),
    ]
    assert r.messages[2].parts == [
        ToolResultPart(id="toolu_01AbCdEfGhIjKlMnOpQrStUv", result='{"rain_mm": 4.2, "temp_c": 11}'),
        ToolResultPart(
            id="toolu_01WxYzAbCdEfGhIjKlMnOpQr",
            result=[{"type": "text", "text": "alerts service unavailable"}],
            is_error=True,
        ),
        TextPart(text="Now Zürich please."),
    ]
    assert [t.name for t in r.tools] == ["get_weather", "get_alerts"]
    assert r.tools[0].parameters["required"] == ["location"]
    assert r.tools[1].type is None  # a custom tool, not a built-in
    assert r.tool_choice == {"type": "auto"}
    assert r.options == {"max_output_tokens": 2048}


def test_request_cache_control_is_ignored() -> None:
    """Clients move cache_control markers between calls; the normalized request must not change."""
    body = _json("tool_use_stream.request.json")
    with_markers = API.parse_request(body, _call())
    assert "cache_control" not in with_markers.model_dump_json()
    assert API.parse_request(_without_cache_control(body), _call()) == with_markers


def test_request_system_blocks_and_sampling_options() -> None:
    r = request("tool_use.request.json")
    assert r.system == "You have a weather tool."
    assert r.tool_choice == {"type": "any"}
    assert r.options == {"top_p": 0.9, "top_k": 40, "max_output_tokens": 1024}
    assert r.stream is False


def test_request_thinking_history() -> None:
    r = request("thinking_stream.request.json")
    assert r.messages[1] == Message(
        role="assistant",
        parts=[
            ReasoningPart(text="91 = 7 × 13."),
            ReasoningPart(text="", redacted=True),
            TextPart(text="No: 91 = 7 × 13."),
        ],
    )
    assert r.options == {"thinking": {"type": "enabled", "budget_tokens": 8000}, "max_output_tokens": 16000}
    assert "EqQBCkgI" not in r.model_dump_json()  # signatures and redacted data are not kept


def test_request_media_parts_keep_only_type_and_size() -> None:
    body = _json("multimodal.request.json")
    blocks = body["messages"][0]["content"]
    png = base64.b64decode(blocks[0]["source"]["data"])
    pdf = base64.b64decode(blocks[2]["source"]["data"])
    r = API.parse_request(body, _call())
    assert r.messages == [
        Message(
            role="user",
            parts=[
                MediaPart(media_type="image/png", size=len(png)),
                MediaPart(media_type="image", size=0),  # a URL source: nothing fetched
                MediaPart(media_type="application/pdf", size=len(pdf)),
                MediaPart(media_type="text/plain", size=len("Grüße aus Köln".encode())),  # not base64
                TextPart(text="Describe these."),
            ],
        )
    ]
    assert blocks[0]["source"]["data"] not in r.model_dump_json()


def test_a_mid_conversation_system_message_stays_in_its_place() -> None:
    """Claude Code 2.1 (beta mid-conversation-system-2026-04-07) sends its agent list as the 2nd message."""
    r = GUARDED.parse_request(
        {
            "model": "m",
            "max_tokens": 1,
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "system", "content": "Available agent types for the Agent tool: ..."},
                {"role": "user", "content": [{"type": "text", "text": "go on"}]},
            ],
        },
        _call(),
    )
    assert [m.role for m in r.messages] == ["user", "system", "user"]
    assert r.messages[1].parts == [TextPart(text="Available agent types for the Agent tool: ...")]
    assert r.warnings == []


def test_unknown_roles_blocks_and_shapes_are_kept_with_a_warning() -> None:
    r = GUARDED.parse_request(
        {
            "model": "m",
            "messages": [
                {"role": "critic", "content": "too long"},
                {
                    "role": "user",
                    "content": [{"type": "hologram", "x": 1}, "bare", {"type": "text", "text": "ok"}],
                },
                7,
            ],
        },
        _call(),
    )
    assert r.messages[0].role == "user" and r.messages[0].raw_role == "critic"
    assert [p.type for p in r.messages[1].parts] == ["other", "other", "text"]
    assert r.messages[1].parts[0].model_dump() == {
        "type": "other",
        "raw_type": "hologram",
        "data": {"type": "hologram", "x": 1},
    }
    assert len(r.messages) == 3 and r.messages[2].parts[0].type == "other"
    assert any("critic" in w for w in r.warnings) and any("hologram" in w for w in r.warnings)


def test_a_body_of_the_wrong_shape_still_names_its_api_and_model() -> None:
    r = GUARDED.parse_request({"model": "claude-x", "messages": {"not": "a list"}}, _call())
    assert (r.api, r.model, r.messages) == ("anthropic.messages", "claude-x", [])
    assert r.warnings and "not a list" in r.warnings[0]
    r = GUARDED.parse_request(["not", "an", "object"], _call())
    assert r.api == "anthropic.messages" and r.warnings[0].startswith("could not read the request")


def test_claude_code_session_id_is_read_from_metadata_and_header() -> None:
    user_id = orjson.dumps({"device_id": "d" * 64, "account_uuid": "", "session_id": "8c1f-session"}).decode()
    call = Call(
        method="POST",
        host="h",
        path="/v1/messages",
        headers={
            "x-claude-code-session-id": "8c1f-session",
            "user-agent": "claude-cli/2.1.3 (external, cli)",
        },
    )
    r = GUARDED.parse_request({"model": "m", "metadata": {"user_id": user_id}, "messages": []}, call)
    assert [s.value for s in r.signals.session_ids] == ["8c1f-session"]
    assert r.signals.session_ids[0].source == "x-claude-code-session-id"
    assert r.signals.client == "claude-cli/2.1.3" and r.signals.user is None
    legacy = GUARDED.parse_request(
        {"model": "m", "metadata": {"user_id": "user_abc_account_x_session_77aa"}, "messages": []}, _call()
    )
    assert [s.value for s in legacy.signals.session_ids] == ["77aa"]
    opaque = GUARDED.parse_request({"model": "m", "metadata": {"user_id": "u-42"}, "messages": []}, _call())
    assert opaque.signals.session_ids == [] and opaque.signals.user == "u-42"


def test_structured_output_and_forced_tool_are_signals() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "output_config": {
            "format": {
                "type": "json_schema",
                "schema": {"type": "object", "properties": {"title": {"type": "string"}}},
            }
        },
        "tool_choice": {"type": "tool", "name": "propose_title"},
    }
    r = GUARDED.parse_request(body, _call())
    assert r.signals.output_schema is not None and r.signals.output_schema.fields == ["title"]
    assert r.signals.forced_tool == "propose_title"


def _without_cache_control(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_without_cache_control(v) for v in value]
    return value


def test_deltas_append_to_text_the_start_event_already_holds() -> None:
    r = response(
        events(
            (
                "message_start",
                {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1}}},
            ),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "thinking", "thinking": "Hm, "},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "thinking_delta", "thinking": "ok."},
                },
            ),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {"type": "text", "text": "Hello"},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "text_delta", "text": ", world"},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        )
    )
    assert r.content == [ReasoningPart(text="Hm, ok."), TextPart(text="Hello, world")]
