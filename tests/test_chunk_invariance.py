"""A parser's result must not depend on where the network cuts the bytes.

Every recorded fixture is fed whole, then cut at arbitrary byte positions (inside an SSE or
NDJSON line, inside a JSON element or an event-stream frame, inside a multi-byte UTF-8
character, between `\\r` and `\\n`); text framings are also fed with their line endings changed
(LF fixtures as CRLF and mixed, CRLF fixtures such as Gemini's as LF). The normalized response
must be the same every time.

To cover another API, add its fixtures to `CASES` (api name, path under tests/fixtures,
content type, the HTTP status for error bodies, and the path the call went to where the parser
reads something from it: Gemini's streaming method, Bedrock's model).
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addons.providers.base import Api, Call
from addons.providers.registry import APIS
from tests.test_parser_bedrock import event_frame

FIXTURES = Path(__file__).parent / "fixtures"
SSE = "text/event-stream"
JSON = "application/json"
NDJSON = "application/x-ndjson"
EVENTSTREAM = "application/vnd.amazon.eventstream"
GEMINI_STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
GEMINI_GENERATE = "/v1beta/models/gemini-2.5-flash:generateContent"
BEDROCK_STREAM = "/model/anthropic.claude-sonnet-4-20250514-v1:0/converse-stream"
BEDROCK_CONVERSE = "/model/anthropic.claude-sonnet-4-20250514-v1:0/converse"
STREAMED = ("sse", "ndjson", "json_array", "eventstream")  # framings a stream arrives in


class Case(NamedTuple):
    api: str  # the contract's `api` value
    path: str  # under tests/fixtures; Bedrock's `*.events.json` are encoded to the binary stream
    content_type: str
    status: int = 200
    call_path: str = "/v1/fixture"  # where the call went

    @property
    def framing(self) -> str:
        if self.content_type == SSE:
            return "sse"
        if self.content_type == NDJSON:
            return "ndjson"
        if self.content_type == EVENTSTREAM:
            return "eventstream"
        if self.call_path.endswith(":streamGenerateContent"):
            return "json_array"  # Gemini streaming without `alt=sse`
        return "json"


CASES: list[Case] = [
    Case("openai.chat_completions", "openai_chat/text_stream.sse", SSE),
    Case("openai.chat_completions", "openai_chat/parallel_tool_calls.sse", SSE),
    Case("openai.chat_completions", "openai_chat/deepseek_reasoning.sse", SSE),
    Case("openai.chat_completions", "openai_chat/refusal.sse", SSE),
    Case("openai.chat_completions", "openai_chat/n2.sse", SSE),
    Case("openai.chat_completions", "openai_chat/midstream_error.sse", SSE),
    Case("openai.chat_completions", "openai_chat/truncated.sse", SSE),
    Case("openai.chat_completions", "openai_chat/tool_calls.json", JSON),
    Case("openai.chat_completions", "openai_chat/reasoning_usage.json", JSON),
    Case("openai.chat_completions", "openai_chat/refusal.json", JSON),
    Case("openai.chat_completions", "openai_chat/rate_limit_429.json", JSON, 429),
    Case("openai.chat_completions", "openai_chat/vllm_error_400.json", JSON, 400),
    Case("anthropic.messages", "anthropic_messages/text_stream.sse", SSE),
    Case("anthropic.messages", "anthropic_messages/tool_use_stream.sse", SSE),
    Case("anthropic.messages", "anthropic_messages/thinking_stream.sse", SSE),
    Case("anthropic.messages", "anthropic_messages/web_search_stream.sse", SSE),
    Case("anthropic.messages", "anthropic_messages/pause_turn_stream.sse", SSE),
    Case("anthropic.messages", "anthropic_messages/refusal_stream.sse", SSE),
    Case("anthropic.messages", "anthropic_messages/overloaded_midstream.sse", SSE),
    Case("anthropic.messages", "anthropic_messages/overloaded_first_event.sse", SSE),
    Case("anthropic.messages", "anthropic_messages/tool_use.json", JSON),
    Case("anthropic.messages", "anthropic_messages/rate_limit_429.json", JSON, 429),
    Case("anthropic.messages", "anthropic_messages/overloaded_529.json", JSON, 529),
    Case("openai.chat_completions", "openai_chat/openrouter_midstream_error.sse", SSE),
    Case("openai.chat_completions", "openai_chat/vllm_usage_null_choices.sse", SSE),
    Case("openai.chat_completions", "openai_chat/azure_stream.sse", SSE),
    Case("openai.responses", "openai_responses/tool_call_stream.sse", SSE),
    Case("openai.responses", "openai_responses/truncated.sse", SSE),
    Case("openai.responses", "openai_responses/max_output_tokens.sse", SSE),
    Case("openai.responses", "openai_responses/failed.sse", SSE),
    Case("openai.responses", "openai_responses/midstream_error.sse", SSE),
    Case("openai.responses", "openai_responses/function_call.json", JSON),
    Case("openai.responses", "openai_responses/text.json", JSON),
    Case("openai.responses", "openai_responses/refusal.json", JSON),
    Case("openai.responses", "openai_responses/compact.json", JSON, call_path="/v1/responses/compact"),
    Case("openai.responses", "openai_responses/rate_limit_429.json", JSON, 429),
    Case("gemini.generate_content", "gemini/thinking_stream.sse", SSE, call_path=GEMINI_STREAM),
    Case("gemini.generate_content", "gemini/midstream_error.sse", SSE, call_path=GEMINI_STREAM),
    Case("gemini.generate_content", "gemini/function_call_stream.json", JSON, call_path=GEMINI_STREAM),
    Case("gemini.generate_content", "gemini/text_stream.json", JSON, call_path=GEMINI_STREAM),
    Case("gemini.generate_content", "gemini/rate_limit_429_stream.json", JSON, 429, GEMINI_STREAM),
    Case("gemini.generate_content", "gemini/function_call.json", JSON, call_path=GEMINI_GENERATE),
    Case("gemini.generate_content", "gemini/safety.json", JSON, call_path=GEMINI_GENERATE),
    Case("gemini.generate_content", "gemini/rate_limit_429.json", JSON, 429, GEMINI_GENERATE),
    Case("ollama.chat", "ollama/chat_tools.ndjson", NDJSON, call_path="/api/chat"),
    Case("ollama.chat", "ollama/chat_text.ndjson", NDJSON, call_path="/api/chat"),
    Case("ollama.chat", "ollama/midstream_error.ndjson", NDJSON, call_path="/api/chat"),
    Case("ollama.chat", "ollama/chat_length.json", JSON, call_path="/api/chat"),
    Case("ollama.chat", "ollama/model_not_found_404.json", JSON, 404, "/api/chat"),
    Case("ollama.generate", "ollama/generate.ndjson", NDJSON, call_path="/api/generate"),
    Case("bedrock.converse", "bedrock/converse_stream.events.json", EVENTSTREAM, call_path=BEDROCK_STREAM),
    Case(
        "bedrock.converse",
        "bedrock/converse_stream_exception.events.json",
        EVENTSTREAM,
        call_path=BEDROCK_STREAM,
    ),
    Case("bedrock.converse", "bedrock/converse_tool_use.json", JSON, call_path=BEDROCK_CONVERSE),
    Case("bedrock.converse", "bedrock/throttling_429.json", JSON, 429, BEDROCK_CONVERSE),
]

_APIS: dict[str, Api] = {api.name: api for api in APIS}


def _ids(case: Case) -> str:
    return case.path


def _parse(case: Case, chunks: list[bytes]) -> dict[str, Any]:
    call = Call(method="POST", host="fixture.invalid", path=case.call_path)
    parser = _APIS[case.api].response_parser(call, case.content_type, case.status)
    for chunk in chunks:
        parser.feed(chunk)
    return parser.finish().model_dump()


_RAW: dict[Case, bytes] = {}


def _raw(case: Case) -> bytes:
    """The body as the network carries it."""
    if case not in _RAW:
        data = (FIXTURES / case.path).read_bytes()
        if case.framing == "eventstream":
            data = b"".join(event_frame(event, payload) for event, payload in json.loads(data))
        _RAW[case] = data
    return _RAW[case]


def _cut(data: bytes, positions: list[int]) -> list[bytes]:
    bounds = [0, *sorted({p for p in positions if 0 < p < len(data)}), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


def _with_line_endings(data: bytes, crlf: list[bool]) -> bytes:
    """Each `\\n` becomes `\\r\\n` where `crlf` says so (cycled): all, none or a mix."""
    if not crlf:
        return data
    lines = data.split(b"\n")
    out = [line + (b"\r\n" if crlf[i % len(crlf)] else b"\n") for i, line in enumerate(lines[:-1])]
    return b"".join(out) + lines[-1]


_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}")


def _inside_characters(data: bytes) -> list[int]:
    """Cut positions that fall between the bytes of one multi-byte UTF-8 character (in binary
    frames too: only well-formed sequences count, so prelude and CRC bytes mostly do not)."""
    return [i for m in _MULTIBYTE.finditer(data) for i in range(m.start() + 1, m.end())]


def _line_variants(case: Case) -> list[str]:
    """Line endings worth trying: none for binary frames or one-line bodies; LF for a CRLF
    fixture; CRLF and a mix of both for an LF one."""
    if case.framing == "eventstream" or b"\n" not in _raw(case):
        return ["native"]
    return ["native", "lf"] if b"\r" in _raw(case) else ["native", "crlf", "mixed"]


def _variant(case: Case, name: str) -> bytes:
    data = _raw(case)
    if name == "lf":
        return data.replace(b"\r\n", b"\n")
    if name == "crlf":
        return _with_line_endings(data, [True])
    if name == "mixed":
        return _with_line_endings(data, [True, False, False])
    return data


VARIANTS = [
    pytest.param(case, name, id=f"{case.path}-{name}") for case in CASES for name in _line_variants(case)
]


_EXPECTED: dict[Case, dict[str, Any]] = {}


def _expected(case: Case) -> dict[str, Any]:
    if case not in _EXPECTED:
        _EXPECTED[case] = _parse(case, [_raw(case)])
    return _EXPECTED[case]


def _module(case: Case) -> str:
    return type(_APIS[case.api]).__module__


def test_every_case_names_a_known_api_and_an_existing_fixture() -> None:
    for case in CASES:
        assert case.api in _APIS, case
        assert (FIXTURES / case.path).is_file(), case
    assert {api.name for api in APIS} <= {case.api for case in CASES}, "every API has fixtures here"


def test_the_streams_exercise_every_utf8_width() -> None:
    """Without 2-, 3- and 4-byte characters, cutting inside a character would test nothing."""
    streams = b"".join(_raw(case) for case in CASES if case.framing == "sse")
    widths = {len(ch.encode()) for ch in streams.decode(errors="ignore")}  # truncated.sse ends mid-character
    assert {1, 2, 3, 4} <= widths
    for framing in STREAMED:  # per parser module: ollama.chat and ollama.generate share one
        for module in {_module(case) for case in CASES if case.framing == framing}:
            cases = [c for c in CASES if _module(c) == module and c.framing == framing]
            assert any(_inside_characters(_raw(c)) for c in cases), (module, framing)


def test_line_variants_change_the_bytes() -> None:
    """A variant equal to the fixture would test nothing: CRLF fixtures really are CRLF."""
    for case in CASES:
        for name in _line_variants(case)[1:]:
            assert _variant(case, name) != _raw(case), (case.path, name)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_whole_body_parses(case: Case) -> None:
    result = _expected(case)
    assert result["content"] or result["error"], "a fixture that parses to nothing proves nothing"


@pytest.mark.parametrize(("case", "variant"), VARIANTS)
def test_byte_by_byte(case: Case, variant: str) -> None:
    data = _variant(case, variant)
    assert _parse(case, [data[i : i + 1] for i in range(len(data))]) == _expected(case)


@pytest.mark.parametrize(("case", "variant"), VARIANTS)
def test_every_cut_inside_a_character(case: Case, variant: str) -> None:
    data = _variant(case, variant)
    for position in _inside_characters(data):
        assert _parse(case, _cut(data, [position])) == _expected(case), position


@pytest.mark.parametrize("case", [c for c in CASES if c.framing in ("sse", "ndjson", "json_array")], ids=_ids)
def test_every_cut_between_cr_and_lf(case: Case) -> None:
    data = _variant(case, "native" if b"\r" in _raw(case) else "crlf")
    positions = [i + 1 for i in range(len(data)) if data[i : i + 2] == b"\r\n"]
    assert positions
    for position in positions:
        assert _parse(case, _cut(data, [position])) == _expected(case), position


def _draw_body(case: Case, data: st.DataObject) -> bytes:
    raw = _raw(case)
    if case.framing == "eventstream":
        return raw
    if b"\r" in raw:
        return _variant(case, data.draw(st.sampled_from(["native", "lf"]), label="line endings"))
    return _with_line_endings(raw, data.draw(st.lists(st.booleans(), max_size=5), label="crlf"))


@pytest.mark.parametrize("case", CASES, ids=_ids)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data())
def test_arbitrary_cuts(case: Case, data: st.DataObject) -> None:
    body = _draw_body(case, data)
    anywhere = st.integers(min_value=0, max_value=len(body))
    inside = _inside_characters(body)
    position = st.one_of(anywhere, st.sampled_from(inside)) if inside else anywhere
    cuts = data.draw(st.lists(position, max_size=60), label="cuts")
    chunks = _cut(body, cuts)
    empties = data.draw(st.booleans(), label="empty chunks between")
    if empties:
        chunks = [piece for chunk in chunks for piece in (chunk, b"")]
    assert _parse(case, chunks) == _expected(case)
