"""Grouping on canonical forms: cosmetic differences do not split a run; real ones do."""

from __future__ import annotations

from typing import Any

from addons.canonical import chain
from addons.classify import Classifier
from addons.exchange import Exchange
from addons.grouping import Grouper, derived_conversation, session_id
from addons.normalized import Error, Request
from addons.outcome import Outcome
from addons.providers import anthropic_messages, openai_chat
from addons.providers.base import Call
from addons.tracker import Tracker
from storage.records import AttemptRow, Row


def anthropic(messages: list[dict[str, Any]], system: Any = "sys") -> Request:
    body = {"model": "claude", "max_tokens": 100, "system": system, "messages": messages}
    return anthropic_messages.API.parse_request(body, Call("POST", "h", "/v1/messages"))


def openai(messages: list[dict[str, Any]]) -> Request:
    return openai_chat.API.parse_request(
        {"model": "gpt", "messages": messages}, Call("POST", "h", "/v1/chat/completions")
    )


def test_string_content_equals_text_blocks_and_cache_markers_do_not_count() -> None:
    plain = anthropic([{"role": "user", "content": "  Hello there \n"}])
    blocks = anthropic(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hello there", "cache_control": {"type": "ephemeral"}}],
            }
        ],
        system=[{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
    )
    assert chain(plain.messages) == chain(blocks.messages)
    assert plain.system == blocks.system


def test_reserialised_tool_arguments_and_dropped_reasoning_do_not_count() -> None:
    def history(arguments: str, reasoning: str | None) -> list[dict[str, Any]]:
        assistant: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}
            ],
        }
        if reasoning:
            assistant["reasoning_content"] = reasoning
        return [
            {"role": "user", "content": "go"},
            assistant,
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        ]

    compact = openai(history('{"b":1,"a":[1,2]}', None))
    spaced = openai(history('{ "a": [1, 2], "b": 1 }', "thinking it over"))
    assert chain(compact.messages) == chain(spaced.messages)


def test_real_differences_change_the_hash() -> None:
    a = openai([{"role": "user", "content": "Paris"}])
    b = openai([{"role": "user", "content": "London"}])
    assert chain(a.messages) != chain(b.messages)
    assert chain(a.messages, seed="x") != chain(a.messages, seed="y")


def test_derived_conversation_ignores_the_system_prompt() -> None:
    chat = openai(
        [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "Plan Kyoto"}]
    )
    title = openai(
        [{"role": "system", "content": "Write a short title."}, {"role": "user", "content": "Plan Kyoto"}]
    )
    assert derived_conversation(chat.messages) == derived_conversation(title.messages) is not None


def test_session_ids_from_client_metadata() -> None:
    assert session_id({"metadata": {"user_id": "user_1_session_9"}}, {}) == "user_1_session_9"
    assert session_id({"prompt_cache_key": "conv-7", "user": "u"}, {}) == "conv-7"
    assert session_id({"metadata": {"session_id": "s-1"}, "prompt_cache_key": "k"}, {}) == "s-1"
    assert session_id({}, {"x-codex-turn-metadata": '{"conversation_id": "c-3"}'}) == "c-3"
    assert session_id({"user": "alice"}, {}) == "alice"
    assert session_id({}, {}) is None


class Harness:
    """Grouper and tracker as the pipeline drives them, on a fake clock."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.rows: list[Row] = []
        self.tracker = Tracker(self.rows.append, retry_window=5, clock=lambda: self.now)
        self.grouper = Grouper(self.tracker.runs.get, retry_window=5, clock=lambda: self.now)
        self.classifier = Classifier()
        self.flows = 0

    def call(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[str, str, int, int]:
        """Start an attempt; returns (flow id, run id, step number, attempt number)."""
        self.flows += 1
        flow = f"flow-{self.flows}"
        call = Call("POST", "api.anthropic.com", "/v1/messages", headers=headers or {})
        request = anthropic_messages.API.parse_request(body, call)
        ex = Exchange(flow, anthropic_messages.API, "anthropic", call, "https://x", self.now, [], b"")
        kind = self.classifier.classify(request, call.path, {})
        placement, conversation = self.grouper.place(ex, request, body, kind)
        run, step, attempt = self.tracker.start(
            flow,
            placement,
            request=request,
            request_dump=None,
            classification=kind,
            conversation_id=conversation,
            provider="anthropic",
            endpoint="e",
            attempt=AttemptRow(id=flow),
            started_at=self.now,
        )
        self.grouper.started(ex, run, step)
        self._ex = {**getattr(self, "_ex", {}), flow: ex}
        return flow, run.row.id, step.row.number, attempt.number

    def end(self, flow: str, response_body: dict[str, Any] | None, status: str = "completed") -> None:
        response = anthropic_messages.parse_response(response_body, 1000) if response_body else None
        error = (
            None
            if status == "completed"
            else Error.model_validate({"class": "overloaded", "message": "busy"})
        )
        outcome = Outcome(status, error)
        self.tracker.finish(flow, outcome, response, None, self.now)
        self.grouper.finished(self._ex[flow], response, outcome)


def tool_use(tool_id: str) -> dict[str, Any]:
    return {
        "id": "msg",
        "type": "message",
        "role": "assistant",
        "model": "c",
        "stop_reason": "tool_use",
        "content": [{"type": "tool_use", "id": tool_id, "name": "Read", "input": {"path": "a"}}],
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }


def text_reply(text: str) -> dict[str, Any]:
    return {
        "id": "msg",
        "type": "message",
        "role": "assistant",
        "model": "c",
        "stop_reason": "end_turn",
        "content": [{"type": "text", "text": text}],
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }


def test_next_step_with_moved_cache_markers_and_string_vs_blocks() -> None:
    h = Harness()
    first = {
        "model": "c",
        "max_tokens": 10,
        "system": "s",
        "messages": [{"role": "user", "content": "read a"}],
    }
    flow, run, _, _ = h.call(first)
    h.end(flow, tool_use("toolu_1"))
    second = {
        "model": "c",
        "max_tokens": 10,
        "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "read a "}]},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"path": "a"}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": "data",
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
            },
        ],
    }
    flow2, run2, step2, attempt2 = h.call(second)
    assert (run2, step2, attempt2) == (run, 2, 1)
    h.end(flow2, text_reply("done"))
    assert h.tracker.runs[run].row.status == "completed"

    third = {
        **second,
        "messages": [
            *second["messages"],
            {"role": "assistant", "content": "done"},
            {"role": "user", "content": "now b"},
        ],
    }
    _, run3, step3, _ = h.call(third)
    assert run3 != run and step3 == 1
    assert h.tracker.runs[run3].row.conversation_id == h.tracker.runs[run].row.conversation_id


def test_failed_attempt_then_identical_request_is_a_retry_and_late_one_is_not() -> None:
    h = Harness()
    body = {"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "hello"}]}
    flow, run, _, _ = h.call(body)
    h.end(flow, None, status="failed")
    h.now += 1
    flow2, run2, step2, attempt2 = h.call(body)
    assert (run2, step2, attempt2) == (run, 1, 2)
    h.end(flow2, None, status="failed")
    h.now += 6  # past the retry window: the step and run end `error`
    h.tracker.tick(h.now)
    assert h.tracker.runs[run].row.status == "error"
    assert h.tracker.runs[run].row.error_class == "overloaded"
    _, run3, _, _ = h.call(body)
    assert run3 != run


def test_stainless_retry_header_confirms_a_retry_of_a_completed_attempt() -> None:
    h = Harness()
    body = {"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "hello again"}]}
    flow, run, _, _ = h.call(body)
    h.end(flow, text_reply("hi"))
    flow_b, run_b, _, attempt_b = h.call(body, {"x-stainless-retry-count": "1"})
    assert (run_b, attempt_b) == (run, 2)
    h.end(flow_b, text_reply("hi"))
    _, run_c, _, _ = h.call(body)  # no header, previous attempt fine: the user asked again
    assert run_c != run


def test_tool_results_continue_a_run_even_when_history_was_rewritten() -> None:
    h = Harness()
    flow, run, _, _ = h.call(
        {"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "read"}]}
    )
    h.end(flow, tool_use("toolu_XYZ"))
    rewritten = {
        "model": "c",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "read (edited by the client)"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_XYZ", "name": "Read", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_XYZ", "content": "x"}],
            },
        ],
    }
    _, run2, step2, _ = h.call(rewritten)
    assert (run2, step2) == (run, 2)


def test_stale_open_run_ends_interrupted_and_index_stays_bounded() -> None:
    h = Harness()
    h.tracker.stale_after = 60
    flow, run, _, _ = h.call(
        {"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "loop"}]}
    )
    h.end(flow, tool_use("toolu_A"))  # waiting for the next step, which never comes
    h.now += 61
    h.tracker.tick(h.now)
    assert h.tracker.runs[run].row.status == "interrupted"
    grouper = Grouper(h.tracker.runs.get, max_entries=3)
    for i in range(10):
        grouper.requests.put(str(i), None, 0.0)  # type: ignore[arg-type]
    assert len(grouper.requests) == 3
    grouper.requests.expire(10_000.0)
    assert len(grouper.requests) == 0


def test_forced_run_id_collects_its_calls() -> None:
    h = Harness()
    first = {"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "one"}]}
    second = {"model": "c", "max_tokens": 10, "messages": [{"role": "user", "content": "two"}]}
    placements = []
    for body in (first, second):
        h.flows += 1
        flow = f"forced-{h.flows}"
        call = Call("POST", "api.anthropic.com", "/v1/messages")
        request = anthropic_messages.API.parse_request(body, call)
        ex = Exchange(flow, anthropic_messages.API, "anthropic", call, "https://x", h.now, [], b"")
        kind = h.classifier.classify(request, call.path, {})
        placement, conversation = h.grouper.place(ex, request, body, kind)
        run, step, _ = h.tracker.start(
            flow,
            placement,
            request=request,
            request_dump=None,
            classification=kind,
            conversation_id=conversation,
            provider="anthropic",
            endpoint="e",
            attempt=AttemptRow(id=flow),
            started_at=h.now,
            run_id="run_forced",
        )
        placements.append((run.row.id, step.row.number))
    assert placements == [("run_forced", 1), ("run_forced", 2)]
