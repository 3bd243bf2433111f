"""The stream framings and decoders stay bounded whatever the body: no line, event or element is
kept past its limit, a compressed body is decoded within its budget, JSON too deep to write back
is cut where it is read. Memory is measured with tracemalloc (allocations, not time)."""

from __future__ import annotations

import gzip
import struct
import tracemalloc
import zlib
from collections.abc import Callable, Iterator

import brotli
import orjson
import pytest

from addons.decoding import BURST, EXPANSION, BodyDecoder, request_body
from addons.providers import openai_chat
from addons.providers.base import (
    MAX_CONTAINERS,
    MAX_DEPTH,
    MAX_EVENT_CONTAINERS,
    TOO_DEEP,
    Call,
    ParseError,
    loads,
    loads_event,
    parse_arguments,
    read_json,
    too_many_containers,
)
from addons.providers.boundary import MAX_WARNINGS, Guarded
from addons.providers.framing import (
    MAX_ITEM,
    EventStreamDecoder,
    JsonArrayDecoder,
    LineSplitter,
    NdjsonDecoder,
    SseDecoder,
)
from tests import wire

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd  # type: ignore[no-redef]

MB = 1 << 20
CHUNK = 64 * 1024


def chunks(total: int, piece: bytes = b"x" * CHUNK) -> Iterator[bytes]:
    for _ in range(total // len(piece)):
        yield piece


def peak_while(run: Callable[[], object]) -> int:
    """Peak bytes allocated while `run` runs, above what was allocated before."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        run()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


# ---- lines, events, elements ---------------------------------------------------------------------


def test_a_line_without_end_is_dropped_as_it_grows_and_the_next_line_comes_through() -> None:
    splitter = LineSplitter()
    got: list[object] = []

    def run() -> None:
        for chunk in chunks(50 * MB):
            got.extend(splitter.feed(chunk))
        got.extend(splitter.feed(b"\r\nnext line\r\n"))

    peak = peak_while(run)
    assert peak < MAX_ITEM + 4 * MB, f"held {peak / MB:.0f} MB for one line"
    dropped, line = got
    assert getattr(dropped, "size", None) == 50 * MB + 1  # the CR counts: it is the line's
    assert line == b"next line"


def test_lines_are_the_same_however_the_stream_is_cut() -> None:
    stream = b"one\r\ntwo\n\nthree\r\n" + b"y" * 1000 + b"\nfour"
    whole = LineSplitter()
    expected = whole.feed(stream) + whole.close()
    for size in (1, 2, 3, 7, 64):
        splitter = LineSplitter()
        got = [line for i in range(0, len(stream), size) for line in splitter.feed(stream[i : i + size])]
        assert got + splitter.close() == expected
    assert expected == [b"one", b"two", b"", b"three", b"y" * 1000, b"four"]


def test_a_small_limit_drops_long_lines_inside_one_chunk_too() -> None:
    splitter = LineSplitter(limit=10)
    lines = splitter.feed(b"short\n" + b"z" * 11 + b"\nok\n" + b"w" * 20)
    assert [getattr(line, "size", line) for line in lines] == [b"short", 11, b"ok"]
    assert [getattr(line, "size", line) for line in splitter.close()] == [20]


def test_sse_data_lines_without_a_blank_line_are_one_dropped_event() -> None:
    decoder = SseDecoder()
    line = b"data: " + b"d" * 1000 + b"\n"
    events: list[object] = []

    def run() -> None:
        for _ in range(20 * MB // len(line)):
            events.extend(decoder.feed(line))
        events.extend(decoder.feed(b'\ndata: {"after": true}\n\n'))

    peak = peak_while(run)
    assert peak < 2 * MAX_ITEM + 4 * MB, f"held {peak / MB:.0f} MB for one event"
    dropped, after = events
    assert dropped.data.startswith("[an SSE event of ") and "dropped unread" in dropped.data  # type: ignore[attr-defined]
    assert after.data == '{"after": true}'  # type: ignore[attr-defined]


def test_an_sse_event_just_under_the_limit_is_kept() -> None:
    decoder = SseDecoder()
    body = "e" * (MAX_ITEM - 100)
    events = list(decoder.feed(f"event: big\ndata: {body}\n\n".encode()))
    assert [(e.event, len(e.data)) for e in events] == [("big", len(body))]


def test_ndjson_reports_a_dropped_line_as_a_document_nobody_can_read() -> None:
    decoder = NdjsonDecoder()
    docs = [d for chunk in chunks(9 * MB) for d in decoder.feed(chunk)]
    docs += list(decoder.feed(b'\n{"done": true}\n'))
    assert len(docs) == 2
    assert b"dropped unread" in docs[0] and str(9 * MB) in docs[0].decode()
    assert orjson.loads(docs[1]) == {"done": True}


def test_a_json_array_element_past_the_limit_is_dropped_and_the_next_one_read() -> None:
    decoder = JsonArrayDecoder()
    elements: list[bytes] = []

    def run() -> None:
        elements.extend(decoder.feed(b'[{"text": "'))
        for chunk in chunks(20 * MB, (b"x" * 8000 + b'\\"[{') * 8):  # escapes, brackets in the string
            elements.extend(decoder.feed(chunk))
        elements.extend(decoder.feed(b'"}\r\n,{"next": 1}]'))

    peak = peak_while(run)
    assert peak < MAX_ITEM + 4 * MB, f"held {peak / MB:.0f} MB for one element"
    dropped, following = elements
    assert dropped.startswith(b"[a JSON element of ") and b"dropped unread" in dropped
    assert orjson.loads(following) == {"next": 1}
    assert decoder.closed and decoder.close() == 0


def test_an_event_stream_frame_claiming_more_than_the_format_allows_stops_decoding() -> None:
    prelude = struct.pack("!II", 64 * MB, 0)
    frame = prelude + struct.pack("!I", zlib.crc32(prelude))
    decoder = EventStreamDecoder()
    (message,) = decoder.feed(frame + b"x" * MB)
    assert message.problem is not None and "bad frame length" in message.problem
    assert list(decoder.feed(b"x" * MB)) == []  # nothing more is held or decoded


def test_a_parser_reports_a_dropped_event_and_reads_the_rest() -> None:
    parser = openai_chat.API.response_parser(
        Call("POST", "api.openai.com", "/v1/chat/completions"), "text/event-stream", 200
    )
    events = wire.openai_stream(["before ", "after"], usage=wire.openai_usage(3, 2))
    parser.feed(b"".join(events[:2]) + b"data: ")
    for chunk in chunks(10 * MB):
        parser.feed(chunk)
    parser.feed(b"\n\n" + b"".join(events[2:]))
    response = parser.finish()
    assert "".join(p.text for p in response.content) == "before after"  # type: ignore[union-attr]
    assert response.finish_reason == "stop" and response.complete
    assert any("dropped unread" in w for w in response.warnings), response.warnings


# ---- decoding ----------------------------------------------------------------------------------------

GiB = 1 << 30


def _zeros(encoding: str, total: int) -> bytes:
    block = b"\0" * MB
    if encoding == "gzip":
        c = zlib.compressobj(9, zlib.DEFLATED, 31)
        return b"".join([c.compress(block) for _ in range(total // MB)] + [c.flush()])
    if encoding == "br":
        b = brotli.Compressor(quality=1)
        return b"".join([b.process(block) for _ in range(total // MB)] + [b.finish()])
    z = zstd.ZstdCompressor(level=1)
    return b"".join([z.compress(block) for _ in range(total // MB)] + [z.flush()])


@pytest.mark.parametrize("encoding", ["gzip", "br", "zstd"])
def test_a_bomb_is_decoded_within_its_budget_in_small_pieces(encoding: str) -> None:
    bomb = _zeros(encoding, 256 * MB)
    decoder = BodyDecoder(encoding, 64 * MB)
    pieces: list[int] = []

    def run() -> None:
        for i in range(0, len(bomb), CHUNK):
            pieces.extend(len(p) for p in decoder.feed(bomb[i : i + CHUNK]))

    peak = peak_while(run)
    assert peak < 16 * MB, f"decoding held {peak / MB:.0f} MB"
    assert max(pieces) <= 2 * MB  # brotli may give up to twice what is asked for
    assert sum(pieces) == decoder.decoded <= 64 * MB
    assert decoder.stopped is not None and "decoded past" in decoder.stopped


def test_one_chunk_may_not_expand_past_its_bound() -> None:
    bomb = _zeros("br", 64 * MB)  # a few kilobytes
    decoder = BodyDecoder("br", 1 << 40)
    assert sum(len(p) for p in decoder.feed(bomb)) == max(BURST, EXPANSION * len(bomb))
    assert decoder.stopped == f"decoded past {BURST} bytes from one {len(bomb)}-byte chunk"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd"])
def test_a_real_body_decodes_whole_however_it_is_cut(encoding: str) -> None:
    body = b"".join(wire.openai_stream([f"word {i} " for i in range(300)]))
    packed = {
        "gzip": gzip.compress(body),
        "deflate": zlib.compress(body),
        "br": brotli.compress(body),
        "zstd": zstd.compress(body),
    }[encoding]
    for size in (1, 37, CHUNK):
        decoder = BodyDecoder(encoding, 64 * MB)
        out = b"".join(p for i in range(0, len(packed), size) for p in decoder.feed(packed[i : i + size]))
        assert (out, decoder.stopped) == (body, None)


def test_raw_deflate_is_decoded_too() -> None:
    body = b'{"raw": "deflate"}' * 100
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    decoder = BodyDecoder("deflate", MB)
    assert b"".join(decoder.feed(c.compress(body) + c.flush())) == body


def test_a_body_that_is_not_what_its_coding_says_stops_with_the_reason() -> None:
    decoder = BodyDecoder("gzip", MB)
    assert list(decoder.feed(b'{"plain": "json"}')) == []
    assert decoder.stopped is not None and decoder.stopped.startswith("could not be decoded (error:")


def test_a_request_bomb_is_decoded_up_to_the_parse_limit_and_not_parsed() -> None:
    bomb = gzip.compress(
        b'{"model": "gpt-4.1", "messages": [{"role": "user", "content": "' + b"q" * (64 * MB)
    )
    body = request_body(bomb, "gzip", 1000, parse_limit=16 * MB)
    assert len(body.data) == 16 * MB
    assert body.fault == f"the gzip request body decoded past {16 * MB} bytes: not parsed for recording"
    assert body.truncated and body.text.startswith('{"model": "gpt-4.1"') and len(body.text) == 1000


def test_a_request_mislabelled_as_gzip_is_taken_as_sent() -> None:
    body = request_body(b'{"model": "m"}', "gzip", 1000)
    assert (body.data, body.text, body.truncated, body.fault) == (
        b'{"model": "m"}',
        '{"model": "m"}',
        False,
        None,
    )


# ---- depth -------------------------------------------------------------------------------------------


def _nested(depth: int) -> str:
    return '{"a":' * depth + '"leaf"' + "}" * depth


def _depth(value: object) -> tuple[int, object]:
    levels = 0
    while isinstance(value, dict):
        levels, value = levels + 1, value["a"]
    return levels, value


@pytest.mark.parametrize("depth", [MAX_DEPTH, MAX_DEPTH + 1, 300, 1024, 1025, 10_000])
def test_json_too_deep_to_write_back_is_cut_where_it_is_read(depth: int) -> None:
    for read in (loads, parse_arguments):
        value = read(_nested(depth))
        expected = (depth, "leaf") if depth <= MAX_DEPTH else (MAX_DEPTH, TOO_DEEP)
        assert _depth(value) == expected
        orjson.dumps([[[[[[[[[[value]]]]]]]]]])  # written back, with room to spare


def test_cutting_keeps_everything_shallower_and_strings_that_look_like_brackets() -> None:
    text = '{"s": "[[[{{\\"\\\\", "deep": ' + "[" * 2000 + "1" + "]" * 2000 + ', "t": [1, {"u": 2}]}'
    value = loads(text)
    assert value["s"] == '[[[{{"\\' and value["t"] == [1, {"u": 2}]
    inner = value["deep"]
    for _ in range(MAX_DEPTH - 2):
        inner = inner[0]
    assert inner == [TOO_DEEP]


def test_arguments_that_are_not_json_stay_the_raw_string() -> None:
    assert parse_arguments('{"a": [1, 2') == '{"a": [1, 2'


def test_a_json_array_of_nothing_but_brackets_or_escapes_is_read_in_runs() -> None:
    decoder = JsonArrayDecoder()
    assert list(decoder.feed(b"[" + b"[" * MB)) == []  # one element, a megabyte deep so far
    assert list(decoder.feed(b"]" * MB + b',{"s": "' + b'\\"' * MB + b'"}]')) == [
        b"[" * MB + b"]" * MB,
        b'{"s": "' + b'\\"' * MB + b'"}',
    ]
    assert decoder.closed


def test_one_chunk_of_slow_content_stops_recording_with_the_reason_and_passes_as_is() -> None:
    from addons.capture import Capture

    body = brotli.compress(b"\n" * (64 * MB), quality=5)  # empty lines: the slowest bytes to read
    parser = openai_chat.API.response_parser(
        Call("POST", "h", "/v1/chat/completions"), "text/event-stream", 200
    )
    capture = Capture(parser, "br", 1000)
    assert capture.tap(body) is body
    assert capture.tap(b"more") == b"more"  # nothing more is decoded
    capture.result()
    assert capture.fault is not None and capture.fault.startswith("the br response ")
    assert capture.fault.endswith("recording stopped there, the stream passed untouched")
    assert capture.size == len(body) + 4 and capture.truncated


def test_a_compressed_whole_body_is_decoded_only_a_byte_past_what_its_parser_reads() -> None:
    from addons.capture import Capture
    from addons.providers.registry import find_api

    api = find_api("POST", "/v1/chat/completions")
    assert api is not None
    body = gzip.compress(b" " * (256 * MB), compresslevel=1)
    parser = api.response_parser(
        Call("POST", "h", "/v1/chat/completions", capture_limit=MB), "application/json", 200
    )
    capture = Capture(parser, "gzip", MB)
    chunks = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]
    assert all(capture.tap(c) is c for c in chunks)  # every byte passes, as it came
    response = capture.result()
    assert capture.size == len(body) and capture.truncated and capture.stopped
    # too large to parse, as the same body sent plain: a warning, not a fault of the recording
    assert capture.fault is None
    assert response.warnings == [f"body of more than {MB} bytes exceeds the capture limit"]


@pytest.mark.parametrize("encoding", ["", "gzip", "br", "zstd"])
def test_a_whole_body_past_the_limit_is_recorded_alike_plain_or_compressed(encoding: str) -> None:
    from addons.capture import Capture
    from addons.providers.registry import find_api

    api = find_api("POST", "/v1/chat/completions")
    assert api is not None
    plain = b'{"choices": [{"message": {"content": "' + b"x" * (2 * MB) + b'"}}]}'
    packs: dict[str, Callable[[bytes], bytes]] = {
        "": bytes,
        "gzip": gzip.compress,
        "br": brotli.compress,
        "zstd": lambda b: zstd.ZstdCompressor().compress(b),
    }
    body = packs[encoding](plain)
    parser = api.response_parser(
        Call("POST", "h", "/v1/chat/completions", capture_limit=MB), "application/json", 200
    )
    capture = Capture(parser, encoding, MB)
    for i in range(0, len(body), CHUNK):
        capture.tap(body[i : i + CHUNK])
    response = capture.result()
    assert (capture.fault, capture.truncated, capture.kept) == (None, True, MB)
    assert response.warnings == [f"body of more than {MB} bytes exceeds the capture limit"]


async def test_a_compressed_whole_body_is_kept_as_it_came_and_decoded_after_the_response() -> None:
    from addons.capture import Capture
    from addons.providers.registry import find_api

    api = find_api("POST", "/v1/chat/completions")
    assert api is not None
    body = wire.openai_completion("decoded later", usage=wire.openai_usage(5, 2))
    packed = gzip.compress(body)
    parser = api.response_parser(Call("POST", "h", "/v1/chat/completions"), "application/json", 200)
    capture = Capture(parser, "gzip", MB)
    for i in range(0, len(packed), 7):
        capture.tap(packed[i : i + 7])
    assert capture.kept == 0  # the tap only kept the bytes as they came
    await capture.settle()
    assert capture.body == body
    response = capture.result()
    assert (capture.fault, capture.truncated) == (None, False)
    assert [p.text for p in response.content] == ["decoded later"]  # type: ignore[union-attr]


@pytest.mark.parametrize("burst", [True, False], ids=["stream", "whole"])
def test_a_brotli_body_decodes_whole_however_far_one_chunk_expands(burst: bool) -> None:
    """Brotli can hold output back while saying it wants more input: 32 bytes that decode to
    2 MiB once stopped after the first 98 KB, losing the rest of the recording."""
    plain = b'{"a": "' + b"x" * (2 * MB) + b'"}'
    packed = brotli.compress(plain)
    decoder = BodyDecoder("br", 4 * MB, burst=burst)
    out = b"".join(decoder.feed(packed[:16])) + b"".join(decoder.feed(packed[16:]))
    if burst:  # a stream's chunk may expand only so far: past that it stops, saying why
        assert out == plain[: len(out)] and len(out) >= BURST
        assert (
            len(out) == len(plain) or decoder.stopped == f"decoded past {BURST} bytes from one 16-byte chunk"
        )
    else:
        assert (out, decoder.stopped) == (plain, None)


# ---- containers -----------------------------------------------------------------------------------


def _objects(count: int, padding: str = "") -> bytes:
    """A JSON array holding `count - 1` small objects: `count` containers in all."""
    return b"[" + b",".join([b'{"p":"' + padding.encode() + b'"}'] * (count - 1)) + b"]"


@pytest.mark.parametrize("padding", ["", "x" * 40])
def test_a_body_of_more_containers_than_can_be_read_is_told_apart_at_the_bound(padding: str) -> None:
    at, past = _objects(MAX_CONTAINERS, padding), _objects(MAX_CONTAINERS + 1, padding)
    assert too_many_containers(loads(at), at) is None
    assert too_many_containers(loads(past), past) == (
        f"holds more than {MAX_CONTAINERS:,} JSON objects and arrays: too many to read for recording"
    )


def test_brackets_inside_strings_are_not_containers() -> None:
    text = orjson.dumps({"messages": [{"content": "{[" * MAX_CONTAINERS}]})
    assert text.count(b"{") + text.count(b"[") > MAX_CONTAINERS
    assert too_many_containers(loads(text), text) is None


def test_a_response_of_too_many_containers_is_kept_unread_with_the_reason() -> None:
    call = Call("POST", "h", "/v1/chat/completions")
    body = orjson.dumps({"choices": [{"message": {"content": "hi"}}], "extra": [[]] * MAX_CONTAINERS})
    parser = openai_chat.API.response_parser(call, "application/json", 200)
    parser.feed(body)
    response = parser.finish()
    assert response.content == []
    assert response.warnings == [
        f"the body holds more than {MAX_CONTAINERS:,} JSON objects and arrays: too many to read for recording"
    ]


# ---- JSON strict readers refuse ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "why"),
    [
        (b'{"t": "cut \\ud83c"}', {"t": "cut \ufffd"}, "no low surrogate in string"),  # JavaScript
        (b'{"t": "\\udf89 alone"}', {"t": "\ufffd alone"}, "invalid high surrogate"),
        (b'{"\\ud83c": 1}', {"\ufffd": 1}, "no low surrogate"),  # in a key too
        (b'{"x": NaN, "y": -Infinity}', {"x": None, "y": None}, "expected a JSON value"),  # Python
        (b'{"x": 1e999}', {"x": None}, "number is infinity"),
        (b'\xef\xbb\xbf{"x": 1}', {"x": 1}, "byte order mark"),
        ('{"x": "é"}'.encode("utf-16"), {"x": "é"}, "not valid UTF-8"),
        (b'{"x": "caf\xe9"}', {"x": "caf\ufffd"}, "not valid UTF-8"),
        (b'{"x": "a\tb"}', {"x": "a\tb"}, "control character"),
    ],
)
def test_json_its_senders_write_but_strict_readers_refuse_is_read_with_the_reason(
    text: bytes, value: object, why: str
) -> None:
    read, lenient = read_json(text)
    assert orjson.loads(orjson.dumps(read)) == value  # and it can be written again
    assert lenient is not None and lenient.startswith("not strict JSON (") and why in lenient, lenient
    assert loads(text) == read


def test_strict_json_is_read_without_a_note_and_what_is_not_json_stays_an_error() -> None:
    assert read_json(b'{"t": "\\ud83c\\udf89"}') == ({"t": "\U0001f389"}, None)  # a whole pair
    for broken in (b'{"t": "cut', b"{'t': 1}", b"", b'{"t": 1} trailing'):
        with pytest.raises(ParseError, match=r"^invalid JSON: "):
            read_json(broken)


def test_json_too_deep_and_not_strict_is_cut_and_read() -> None:
    text = b'{"t": "\\ud83c", "deep": ' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}"
    value, lenient = read_json(text)
    assert value["t"] == "\ufffd" and lenient is not None
    inner = value["deep"]
    for _ in range(MAX_DEPTH - 1):
        inner = inner[0]
    assert inner == TOO_DEEP


def test_a_response_a_python_server_wrote_with_infinity_is_read_with_the_reason() -> None:
    """OpenAI-compatible servers in Python write a token's log probability of zero as -Infinity."""
    body = wire.openai_completion("sure", usage=wire.openai_usage(3, 1)).replace(
        b'"logprobs": null', b'"logprobs": {"content": [{"token": "sure", "logprob": -Infinity}]}'
    )
    assert b"-Infinity" in body
    parser = openai_chat.API.response_parser(
        Call("POST", "h", "/v1/chat/completions"), "application/json", 200
    )
    parser.feed(body)
    response = parser.finish()
    assert [p.text for p in response.content] == ["sure"]  # type: ignore[union-attr]
    (warning,) = response.warnings
    assert warning.startswith("the body is not strict JSON (") and warning.endswith("): read leniently")


def test_a_stream_whose_events_are_not_strict_json_is_read_and_says_so_once() -> None:
    """A Python server's stream carries -Infinity in every chunk's log probabilities: each event
    is read leniently, and the response warns once for the stream, not once per event."""
    chunks = [
        c.replace(b'"logprobs":null', b'"logprobs":{"content":[{"token":"t","logprob":-Infinity}]}')
        for c in wire.openai_stream(["one ", "two ", "three"], usage=wire.openai_usage(3, 3))
    ]
    assert sum(b"-Infinity" in c for c in chunks) >= 3
    parser = openai_chat.API.response_parser(
        Call("POST", "h", "/v1/chat/completions"), "text/event-stream", 200
    )
    for chunk in chunks:
        parser.feed(chunk)
    response = parser.finish()
    assert [p.text for p in response.content] == ["one two three"]  # type: ignore[union-attr]
    (warning,) = response.warnings
    assert warning.startswith("events are not strict JSON, the first (") and warning.endswith(
        "): read leniently"
    )


@pytest.mark.parametrize(
    "text",
    [b"[" * 100_000, b'{"model": "m", "t": "\\ud83c", "messages": ' + b"[" * 100_000],
    ids=["unclosed", "unclosed-and-not-strict"],
)
def test_brackets_never_closed_are_not_json_whatever_else_is_wrong(text: bytes) -> None:
    with pytest.raises(ParseError, match=r"^invalid JSON: "):
        read_json(text)


def test_integers_past_64_bits_read_leniently_are_floats_as_orjson_reads_them() -> None:
    text = b'{"seed": ' + b"1" + b"0" * 30 + b', "huge": ' + b"9" * 400 + b', "t": "\\ud83c"}'
    value, lenient = read_json(text)
    assert lenient is not None
    assert value["seed"] == 1e30 and value["huge"] == float("inf")
    assert orjson.loads(orjson.dumps(value)) == {"seed": 1e30, "huge": None, "t": "\ufffd"}
    assert orjson.loads(b'{"seed": 1' + b"0" * 30 + b"}") == {"seed": 1e30}  # the same as strict


def test_an_event_of_too_many_containers_is_skipped_and_the_stream_read_on() -> None:
    """Events are read on the proxy's loop as they come: one of 30,000 tool calls took 0.3 s."""
    calls = [
        {"index": i, "id": f"c{i}", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        for i in range(MAX_EVENT_CONTAINERS // 2)  # two objects each, and those around them
    ]
    huge = wire.openai_chunk("chatcmpl-many", "gpt-4.1", {"tool_calls": calls})
    events = wire.openai_stream(["before ", "after"], usage=wire.openai_usage(3, 2))
    parser = openai_chat.API.response_parser(
        Call("POST", "h", "/v1/chat/completions"), "text/event-stream", 200
    )
    for event in [events[0], events[1], huge, *events[2:]]:
        parser.feed(event)
    response = parser.finish()
    assert [p.text for p in response.content] == ["before after"]  # type: ignore[union-attr]
    assert response.finish_reason == "stop" and response.usage is not None
    (warning,) = response.warnings
    assert warning.startswith("unparseable event: ")
    with pytest.raises(ParseError, match=f"^the event holds more than {MAX_EVENT_CONTAINERS:,} JSON objects"):
        loads_event(huge.removeprefix(b"data: ").strip(), [])
    assert loads_event(events[1].removeprefix(b"data: ").strip(), [])["object"] == "chat.completion.chunk"


def test_a_response_keeps_its_first_warnings_and_how_many_more_there_were() -> None:
    """A stream of junk events warns once per event: the response keeps the first ones."""
    body = (
        b"".join(wire.openai_stream(["kept"])[:1])
        + b"data: {\n\n" * 500
        + b"".join(wire.openai_stream(["kept"])[1:])
    )
    parser = Guarded(openai_chat.API).response_parser(
        Call("POST", "h", "/v1/chat/completions"), "text/event-stream", 200
    )
    parser.feed(body)
    response = parser.finish()
    assert len(response.warnings) == MAX_WARNINGS
    assert response.warnings[0] == "unparseable event: {"
    assert response.warnings[-1] == f"and {500 - MAX_WARNINGS + 1} more warnings"
    assert [p.text for p in response.content] == ["kept"]  # type: ignore[union-attr]
