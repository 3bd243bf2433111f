"""A parser's result must not depend on where the network cuts the bytes.

Every recorded fixture is fed whole, then cut at arbitrary byte positions (inside an SSE line,
inside a multi-byte UTF-8 character, between `\\r` and `\\n`), with LF, CRLF and mixed line
endings; the normalized response must be the same every time.

To cover another API, add its fixtures to `CASES` (api name, path under tests/fixtures,
content type, and the HTTP status for error bodies).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addons.providers.base import Api, Call
from addons.providers.registry import APIS

FIXTURES = Path(__file__).parent / "fixtures"
SSE = "text/event-stream"
JSON = "application/json"


class Case(NamedTuple):
    api: str  # the contract's `api` value
    path: str  # under tests/fixtures
    content_type: str
    status: int = 200


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
]

_APIS: dict[str, Api] = {api.name: api for api in APIS}
_CALL = Call(method="POST", host="fixture.invalid", path="/v1/fixture")


def _ids(case: Case) -> str:
    return case.path


def _parse(case: Case, chunks: list[bytes]) -> dict[str, Any]:
    parser = _APIS[case.api].response_parser(_CALL, case.content_type, case.status)
    for chunk in chunks:
        parser.feed(chunk)
    return parser.finish().model_dump()


def _raw(case: Case) -> bytes:
    return (FIXTURES / case.path).read_bytes()


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


def _inside_characters(data: bytes) -> list[int]:
    """Cut positions that fall between the bytes of one multi-byte UTF-8 character."""
    return [i for i in range(1, len(data)) if data[i] & 0xC0 == 0x80]


_EXPECTED: dict[Case, dict[str, Any]] = {}


def _expected(case: Case) -> dict[str, Any]:
    if case not in _EXPECTED:
        _EXPECTED[case] = _parse(case, [_raw(case)])
    return _EXPECTED[case]


def test_every_case_names_a_known_api_and_an_existing_fixture() -> None:
    for case in CASES:
        assert case.api in _APIS, case
        assert (FIXTURES / case.path).is_file(), case


def test_the_streams_exercise_every_utf8_width() -> None:
    """Without 2-, 3- and 4-byte characters, cutting inside a character would test nothing."""
    streams = b"".join(_raw(case) for case in CASES if case.content_type == SSE)
    widths = {len(ch.encode()) for ch in streams.decode(errors="ignore")}  # truncated.sse ends mid-character
    assert {1, 2, 3, 4} <= widths
    for api in {case.api for case in CASES}:
        assert any(_inside_characters(_raw(c)) for c in CASES if c.api == api and c.content_type == SSE)


@pytest.mark.parametrize("case", CASES, ids=_ids)
def test_whole_body_parses(case: Case) -> None:
    result = _expected(case)
    assert result["content"] or result["error"], "a fixture that parses to nothing proves nothing"


@pytest.mark.parametrize("case", CASES, ids=_ids)
@pytest.mark.parametrize("crlf", [[False], [True], [True, False, False]], ids=["lf", "crlf", "mixed"])
def test_byte_by_byte(case: Case, crlf: list[bool]) -> None:
    data = _with_line_endings(_raw(case), crlf)
    assert _parse(case, [data[i : i + 1] for i in range(len(data))]) == _expected(case)


@pytest.mark.parametrize("case", [c for c in CASES if c.content_type == SSE], ids=_ids)
def test_every_cut_inside_a_character(case: Case) -> None:
    data = _raw(case)
    for position in _inside_characters(data):
        assert _parse(case, _cut(data, [position])) == _expected(case), position


@pytest.mark.parametrize("case", [c for c in CASES if c.content_type == SSE], ids=_ids)
def test_every_cut_between_cr_and_lf(case: Case) -> None:
    data = _with_line_endings(_raw(case), [True])
    for position in (i + 1 for i in range(len(data)) if data[i : i + 2] == b"\r\n"):
        assert _parse(case, _cut(data, [position])) == _expected(case), position


@pytest.mark.parametrize("case", CASES, ids=_ids)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_arbitrary_cuts(case: Case, data: st.DataObject) -> None:
    crlf = data.draw(st.lists(st.booleans(), max_size=5), label="crlf")
    body = _with_line_endings(_raw(case), crlf)
    anywhere = st.integers(min_value=0, max_value=len(body))
    inside = _inside_characters(body)
    position = st.one_of(anywhere, st.sampled_from(inside)) if inside else anywhere
    cuts = data.draw(st.lists(position, max_size=60), label="cuts")
    chunks = _cut(body, cuts)
    empties = data.draw(st.booleans(), label="empty chunks between")
    if empties:
        chunks = [piece for chunk in chunks for piece in (chunk, b"")]
    assert _parse(case, chunks) == _expected(case)
