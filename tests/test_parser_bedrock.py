"""Bedrock Converse: requests, JSON responses and the binary event stream, normalized field by field.

The event-stream bodies are built here by a small encoder that computes the real CRCs, from the
event lists in tests/fixtures/bedrock/*.events.json.
"""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

from addons.normalized import MediaPart, ReasoningPart, Response, TextPart, Tool, ToolCallPart, ToolResultPart
from addons.providers.base import Call
from addons.providers.bedrock import API
from addons.providers.boundary import unwrap
from addons.providers.framing import EventStreamDecoder
from addons.providers.registry import find_api

FIXTURES = Path(__file__).parent / "fixtures" / "bedrock"
MODEL = "anthropic.claude-sonnet-4-20250514-v1:0"
STREAM_PATH = f"/model/{MODEL}/converse-stream"
EVENTSTREAM = "application/vnd.amazon.eventstream"


# ---- a minimal AWS event-stream encoder ---------------------------------------------------------


def _header(name: str, value: str | bytes | bool | int) -> bytes:
    raw = name.encode()
    out = bytes([len(raw)]) + raw
    if isinstance(value, bool):
        return out + bytes([0 if value else 1])
    if isinstance(value, int):
        return out + bytes([5]) + struct.pack("!q", value)
    kind, data = (7, value.encode()) if isinstance(value, str) else (6, value)
    return out + bytes([kind]) + struct.pack("!H", len(data)) + data


def frame(headers: dict[str, str | bytes | bool | int], payload: bytes) -> bytes:
    head = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack("!II", total, len(head))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack("!I", zlib.crc32(message))


def event_frame(event: str, payload: object) -> bytes:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    if event.endswith("Exception"):
        headers = {
            ":exception-type": event,
            ":content-type": "application/json",
            ":message-type": "exception",
        }
    else:
        headers = {":event-type": event, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, body)  # type: ignore[arg-type]


def stream_body(name: str) -> bytes:
    events = json.loads((FIXTURES / name).read_bytes())
    return b"".join(event_frame(event, payload) for event, payload in events)


# ---- helpers ------------------------------------------------------------------------------------


def call(path: str = STREAM_PATH) -> Call:
    return Call(method="POST", host="bedrock-runtime.us-east-1.amazonaws.com", path=path)


def parse(
    body: bytes, content_type: str = EVENTSTREAM, status: int = 200, chunk: int = 0, path: str = STREAM_PATH
) -> Response:
    parser = API.response_parser(call(path), content_type, status)
    step = chunk or len(body)
    for i in range(0, len(body), step):
        parser.feed(body[i : i + step])
    return parser.finish()


# ---- tests --------------------------------------------------------------------------------------


def test_routes_and_model_from_the_path() -> None:
    assert unwrap(find_api("POST", f"/model/{MODEL}/converse")) is API
    assert unwrap(find_api("POST", STREAM_PATH)) is API
    assert find_api("POST", f"/model/{MODEL}/invoke") is None
    arn = (
        "arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.claude-3-7-sonnet"
    )
    assert API.parse_request({"messages": []}, call(f"/model/{arn}/converse")).model == (
        "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-7-sonnet"
    )


def test_request() -> None:
    body = json.loads((FIXTURES / "converse_tools.request.json").read_bytes())
    r = API.parse_request(body, call())
    assert r.api == "bedrock.converse"
    assert r.model == MODEL
    assert r.stream is True
    assert r.system == "You are a weather assistant."
    assert [m.role for m in r.messages] == ["user", "assistant", "tool", "user"]
    assert r.messages[0].parts == [
        TextPart(text="What's the weather in this photo's city? Details in the report."),
        MediaPart(media_type="image/png", size=70),
        MediaPart(media_type="application/pdf", size=78),
    ]
    assert r.messages[1].parts == [
        ReasoningPart(text="The photo shows Lisbon."),
        TextPart(text="Let me check Lisbon."),
        ToolCallPart(id="tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", name="get_weather", arguments={"city": "Lisbon"}),
    ]
    assert r.messages[2].parts == [
        ToolResultPart(
            id="tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
            result=[{"temp_c": 24, "sky": "sunny"}, {"type": "text", "text": "source: met office"}],
        )
    ]
    assert r.messages[3].parts == [TextPart(text="And tomorrow?")]
    assert r.tools == [
        Tool(
            name="get_weather",
            description="Current weather for a city",
            parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        )
    ]
    assert r.tool_choice == {"auto": {}}
    assert r.options == {
        "max_output_tokens": 2048,
        "temperature": 1,
        "stop": ["\n\nHuman:"],
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }


def test_converse_json_response() -> None:
    body = (FIXTURES / "converse_tool_use.json").read_bytes()
    r = parse(body, "application/json", chunk=50, path=f"/model/{MODEL}/converse")
    assert r.complete is True
    assert r.id is None
    assert r.model == MODEL  # Converse does not echo it: the path names it
    assert r.content == [
        ReasoningPart(text="Tomorrow needs the forecast tool."),
        TextPart(text="Checking tomorrow's forecast."),
        ToolCallPart(
            id="tooluse_Q2xR8vNwTZ2mXo5L1aYp3g", name="get_forecast", arguments={"city": "Lisbon", "days": 1}
        ),
    ]
    assert (r.finish_reason, r.raw_finish_reason) == ("tool_calls", "tool_use")
    assert r.usage is not None
    # inputTokens excludes cached tokens: 412 + 1536 read + 512 written
    assert r.usage.model_dump() == {
        "input_tokens": 2460,
        "output_tokens": 96,
        "total_tokens": 2556,
        "cache_read_tokens": 1536,
        "cache_write_tokens": 512,
        "reasoning_tokens": 0,
    }


def test_http_error() -> None:
    r = parse((FIXTURES / "throttling_429.json").read_bytes(), "application/json", status=429)
    assert r.finish_reason == "error"
    assert r.error is not None
    assert r.error.error_class == "rate_limited"
    assert r.error.message == "Too many requests, please wait before trying again."


@pytest.mark.parametrize("chunk", [0, 1, 3, 12, 13, 50, 4096])
def test_event_stream_cut_anywhere(chunk: int) -> None:
    r = parse(stream_body("converse_stream.events.json"), chunk=chunk)
    assert r.complete is True
    assert r.warnings == []
    assert r.model == MODEL
    assert r.content == [
        ReasoningPart(text="The user asks about Lisbon."),
        TextPart(text="Let me check — ☀️."),
        ToolCallPart(id="tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", name="get_weather", arguments={"city": "Lisbon"}),
    ]
    assert (r.finish_reason, r.raw_finish_reason) == ("tool_calls", "tool_use")
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (3200, 85, 3285)
    assert r.usage.cache_read_tokens == 2000


def test_event_stream_cut_before_message_stop() -> None:
    body = stream_body("converse_stream.events.json")
    events = json.loads((FIXTURES / "converse_stream.events.json").read_bytes())
    cut = sum(len(event_frame(e, p)) for e, p in events[:-2])  # no messageStop, no metadata
    r = parse(body[: cut + 5])
    assert r.complete is False
    assert r.finish_reason is None and r.usage is None
    assert r.warnings == ["the stream ended inside a frame (5 bytes)"]
    assert r.content[-1] == ToolCallPart(
        id="tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", name="get_weather", arguments={"city": "Lisbon"}
    )


def test_exception_event() -> None:
    r = parse(stream_body("converse_stream_exception.events.json"), chunk=7)
    assert r.finish_reason == "error"
    assert r.error is not None
    assert r.error.error_class == "stream_error"
    assert r.error.type == "modelStreamErrorException"
    assert r.error.message.startswith("Model produced invalid sequence as part of ToolUse.")
    assert r.content == [
        ReasoningPart(text="The user asks about Lisbon."),
        TextPart(text="Let me check — ☀️."),
    ]
    assert r.complete is False


def test_throttling_exception_event_is_rate_limited() -> None:
    body = event_frame(
        "throttlingException", {"message": "Too many tokens, please wait before trying again."}
    )
    r = parse(body)
    assert r.error is not None
    assert (r.error.error_class, r.error.type) == ("rate_limited", "throttlingException")


def test_error_message_type() -> None:
    headers = {":message-type": "error", ":error-code": "InternalFailure", ":error-message": "boom"}
    r = parse(frame(headers, b""))  # type: ignore[arg-type]
    assert r.error is not None
    assert (r.error.error_class, r.error.message, r.error.type) == ("stream_error", "boom", "InternalFailure")


def test_corrupted_message_crc_is_reported_not_raised() -> None:
    frames = [
        event_frame(e, p) for e, p in json.loads((FIXTURES / "converse_stream.events.json").read_bytes())
    ]
    bad = bytearray(frames[5])  # the first text delta
    bad[-1] ^= 0xFF  # the message CRC itself: the payload is intact
    frames[5] = bytes(bad)
    r = parse(b"".join(frames), chunk=9)
    assert len(r.warnings) == 1
    assert r.warnings[0].startswith("message CRC mismatch: expected 0x")
    assert r.complete is True  # the frame is still read: its lengths were sound
    assert r.content[1] == TextPart(text="Let me check — ☀️.")


def test_corrupted_prelude_crc_stops_decoding() -> None:
    frames = [
        event_frame(e, p) for e, p in json.loads((FIXTURES / "converse_stream.events.json").read_bytes())
    ]
    bad = bytearray(frames[8])  # contentBlockStart of the tool call
    bad[9] ^= 0x01  # inside the prelude CRC
    frames[8] = bytes(bad)
    r = parse(b"".join(frames), chunk=16)
    assert r.warnings == ["prelude CRC mismatch; the rest of the event stream is not decoded"]
    assert r.complete is False
    assert r.content == [
        ReasoningPart(text="The user asks about Lisbon."),
        TextPart(text="Let me check — ☀️."),
    ]


def test_decoder_reads_every_header_type() -> None:
    headers = {":event-type": "x", "flag": True, "off": False, "big": 2**40, "raw": b"\x00\x01"}
    decoder = EventStreamDecoder()
    (message,) = list(decoder.feed(frame(headers, b"{}")))  # type: ignore[arg-type]
    assert message.problem is None
    assert message.headers == headers
    assert message.payload == b"{}"
    assert list(decoder.close()) == []
