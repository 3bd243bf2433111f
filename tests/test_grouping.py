"""Grouping on canonical forms: cosmetic differences do not split a run; real ones do."""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mitmproxy.test import tflow, tutils

from addons.canonical import chain
from addons.classify import Classifier
from addons.grouping import Grouper, Index
from addons.normalized import Error, Request
from addons.outcome import Outcome
from addons.pipeline import Pipeline, RecallStep
from addons.providers import anthropic_messages, openai_chat
from addons.providers.base import Call
from addons.providers.boundary import Guarded
from addons.recorder import Recorder
from addons.tracker import Tracker
from storage.base import RunFilter, StoreUnavailable
from storage.records import AttemptRow, Row, RunRow, timestamp
from storage.spool import Spool
from storage.sqlite import SqliteStore
from storage.writer import Writer
from tests import wire

ANTHROPIC = Guarded(anthropic_messages.API)


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


class Harness:
    """The tracker (and the index it consults) as the pipeline drives it, on a fake clock."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.rows: list[Row] = []
        self.tracker = Tracker(self.rows.append, retry_window=5, clock=lambda: self.now)
        self.classifier = Classifier()
        self.flows = 0

    def call(
        self, body: dict[str, Any], headers: dict[str, str] | None = None, hints: dict[str, str] | None = None
    ) -> tuple[str, str, int, int]:
        """Start an attempt; returns (flow id, run id, step number, attempt number)."""
        self.flows += 1
        flow = f"flow-{self.flows}"
        call = Call("POST", "api.anthropic.com", "/v1/messages", headers=headers or {})
        request = ANTHROPIC.parse_request(body, call)
        kind = self.classifier.classify(request, call.path, hints or {})
        flight = self.tracker.begin(
            flow,
            request,
            kind,
            AttemptRow(id=flow, started_at=timestamp(self.now)),
            api="anthropic.messages",
            provider="anthropic",
            endpoint="e",
            started_at=self.now,
            hints=hints or {},
        )
        return flow, flight.run.row.id, flight.step.row.number, flight.attempt.number

    def run(self, run_id: str) -> RunRow:
        return self.tracker.runs[run_id].row

    def end(self, flow: str, response_body: dict[str, Any] | None, status: str = "completed") -> None:
        response = anthropic_messages.parse_response(response_body, 1000) if response_body else None
        error = None
        if status == "failed":
            error = Error.model_validate({"class": "overloaded", "message": "busy"})
        elif status == "interrupted":
            error = Error.model_validate({"class": "canceled", "message": "Client disconnected."})
        self.tracker.end(flow, Outcome(status, error), response, None, self.now)


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
    grouper = Grouper(max_entries=3)
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
        _, run, step, _ = h.call(body, hints={"x-chatdebug-run": "run_forced"})
        placements.append((run, step))
    assert placements == [("run_forced", 1), ("run_forced", 2)]
    _, run, _, _ = h.call(first, hints={"x-chatdebug-run": "x" * 129})  # not an id: ignored
    assert run != "run_forced"


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def body_of(*messages: dict[str, Any], system: str = "You are an agent.", **extra: Any) -> dict[str, Any]:
    return {"model": "c", "max_tokens": 64000, "system": system, "messages": list(messages), **extra}


def test_sessions_that_merely_begin_alike_are_two_conversations() -> None:
    h = Harness()
    opening = [user("<environment_context>cwd /repo</environment_context>"), user("list the files please")]
    flow_a, run_a, _, _ = h.call(body_of(*opening))
    h.end(flow_a, text_reply("a.txt"))
    h.now += 60
    flow_b, run_b, _, _ = h.call(body_of(*opening))
    h.end(flow_b, text_reply("b.txt"))
    assert run_a != run_b
    assert h.run(run_a).conversation_id != h.run(run_b).conversation_id
    assert h.run(run_b).conversation_source == "derived"
    assert h.run(run_a).prompt == "list the files please"
    assert h.run(run_a).first_message == "list the files please"  # boilerplate left out
    # the second turn of session B continues B, not A
    _, run_b2, _, _ = h.call(body_of(*opening, {"role": "assistant", "content": "b.txt"}, user("and now?")))
    assert h.run(run_b2).conversation_id == h.run(run_b).conversation_id
    assert h.run(run_b2).conversation_source == "continuation"


def test_a_moving_system_message_does_not_split_a_tool_loop() -> None:
    h = Harness()
    agents = {"role": "system", "content": "Available agent types for the Agent tool: general"}
    flow, run, _, _ = h.call(body_of(user("read a"), agents))
    h.end(flow, tool_use("toolu_m"))
    loop = body_of(
        user("read a"),
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_m", "name": "Read", "input": {"path": "a"}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_m", "content": "x"}]},
        agents,
    )
    _, run2, step2, _ = h.call(loop)
    assert (run2, step2) == (run, 2)


def test_a_compaction_in_the_tool_turn_is_its_own_run_and_what_follows_continues_it() -> None:
    h = Harness()
    session = {"x-claude-code-session-id": "sess-1"}
    flow, run, _, _ = h.call(body_of(user("fix the bug")), session)
    h.end(flow, tool_use("toolu_c"))
    ask = (
        "CRITICAL: Respond with TEXT ONLY. Do NOT call any tools. Your task is to create a detailed summary "
        "of the conversation so far."
    )
    compact = body_of(
        user("fix the bug"),
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_c", "name": "Read", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_c", "content": "x"},
                {"type": "text", "text": ask},
            ],
        },
        tools=[{"name": "Read", "input_schema": {}}],
    )
    flow_c, run_c, step_c, _ = h.call(compact, session)
    assert run_c != run and step_c == 1
    assert h.run(run_c).kind == "compaction"
    assert h.run(run_c).conversation_id == "sess-1"
    summary = "Primary request: fix the parser bug in module x. " + "Details of the work so far. " * 20
    h.end(flow_c, text_reply(summary))
    # no session id at all: the summary alone ties the next turn to the conversation
    continued = body_of(
        user(
            "This session is being continued from a previous conversation. The conversation is summarized below: "
            + summary.lower()
        ),
        user("go on"),
    )
    _, run_n, step_n, _ = h.call(continued)
    # the compaction came in the middle of the tool loop: the loop goes on in its new history
    assert (run_n, step_n) == (run, 2)
    assert h.run(run_n).conversation_id == "sess-1"


def test_side_calls_join_the_conversation_of_the_prompt_they_quote() -> None:
    h = Harness()
    title = {
        "model": "c",
        "max_tokens": 32000,
        "system": "Generate a concise, single-line task title of at most 36 characters.",
        "messages": [user("The user's latest prompt: 'migrate the settings to pydantic v2'")],
    }
    # the title call comes first, under a temporary thread of its own
    _, run_t, _, _ = h.call(title, {"session_id": "temp-thread"})
    assert h.run(run_t).kind == "title_generation"
    assert h.run(run_t).conversation_id == "temp-thread"
    flow, _, _, _ = h.call(body_of(user("migrate the settings to pydantic v2")), {"session_id": "sess-main"})
    assert (h.run(run_t).conversation_id, h.run(run_t).conversation_source) == ("sess-main", "continuation")
    moved = [r for r in h.rows if isinstance(r, RunRow) and r.id == run_t]
    assert moved[-1].conversation_id == "sess-main"  # the move reached storage too
    h.end(flow, text_reply("done"))
    # later title calls find the prompt at once
    _, run_t2, _, _ = h.call(title, {"session_id": "temp-2"})
    assert h.run(run_t2).conversation_id == "sess-main"


def test_a_client_that_goes_away_is_interrupted_at_once_and_a_retry_still_joins() -> None:
    h = Harness()
    body = body_of(user("stream me something"))
    flow, run, _, _ = h.call(body)
    h.end(flow, None, status="interrupted")
    assert h.run(run).status == "interrupted"
    assert h.tracker.runs[run].steps[0].row.status == "interrupted"
    h.now += 2
    flow2, run2, step2, attempt2 = h.call(body)
    assert (run2, step2, attempt2) == (run, 1, 2)
    h.end(flow2, text_reply("here"))
    assert h.run(run).status == "completed"
    assert h.tracker.runs[run].steps[0].row.status == "completed"


def test_a_title_answered_with_a_tool_call_is_complete() -> None:
    h = Harness()
    title = body_of(
        user("Kyoto trip"),
        system="Generate a short chat title (2-5 words) for this conversation.",
        tools=[{"name": "set_title", "input_schema": {}}],
        tool_choice={"type": "tool", "name": "set_title"},
    )
    flow, run, _, _ = h.call(title)
    h.end(flow, tool_use("toolu_t"))
    assert (h.run(run).kind, h.run(run).status) == ("title_generation", "completed")


def test_metadata_user_id_gives_the_session_inside_it() -> None:
    h = Harness()
    user_id = '{"device_id":"dev","account_uuid":"acc","session_id":"5e3c-sess"}'
    _, run, _, _ = h.call(body_of(user("hello there"), metadata={"user_id": user_id}))
    assert (h.run(run).conversation_id, h.run(run).conversation_source) == ("5e3c-sess", "client_session")


def test_a_turn_after_a_compaction_between_turns_is_a_new_run_in_the_conversation() -> None:
    h = Harness()
    flow, run, _, _ = h.call(body_of(user("fix the bug")))
    h.end(flow, text_reply("Fixed it."))
    ask = "Your task is to create a detailed summary of the conversation so far."
    history = [user("fix the bug"), {"role": "assistant", "content": "Fixed it."}]
    flow_c, run_c, _, _ = h.call(body_of(*history, user(ask)))
    summary = "Primary request: fix the parser bug in module x. " + "Details of the work so far. " * 20
    h.end(flow_c, text_reply(summary))
    continued = body_of(
        user("This session is being continued from a previous conversation. Summary: " + summary.lower()),
        user("next: add tests"),
    )
    _, run_n, step_n, _ = h.call(continued)
    assert run_n not in (run, run_c) and step_n == 1
    assert h.run(run_n).kind == "chat_turn" and h.run(run_n).prompt == "next: add tests"
    assert (h.run(run_n).conversation_id, h.run(run_n).conversation_source) == (
        h.run(run).conversation_id,
        "continuation",
    )


def test_settled_runs_past_the_memory_bound_are_let_go_oldest_first_but_none_still_awaited() -> None:
    h = Harness()
    h.tracker.max_settled = 2
    title = {
        "model": "c",
        "max_tokens": 32000,
        "system": "Generate a concise, single-line task title of at most 36 characters.",
        "messages": [user("The user's latest prompt: 'rename the settings module'")],
    }
    flow, run_t, _, _ = h.call(title, {"session_id": "temp-thread"})  # waits for the turn it quotes
    h.end(flow, text_reply("Rename settings"))
    flow, failed, _, _ = h.call(body_of(user("this one fails")))
    h.end(flow, None, status="failed")  # a retry may still come: its failure is not settled yet
    h.tracker.runs[failed].row.status = "completed"  # (as a run whose earlier step completed)
    runs = []
    for i in range(4):
        flow, run, _, _ = h.call(body_of(user(f"q{i}")))
        h.now += 1
        h.end(flow, text_reply("a"))
        runs.append(run)
    flow, open_run, _, _ = h.call(body_of(user("open")))
    h.tracker.tick(h.now)
    assert set(h.tracker.runs) == {run_t, failed, runs[2], runs[3], open_run}
    h.call(body_of(user("rename the settings module")), {"session_id": "sess-main"})
    assert h.run(run_t).conversation_id == "sess-main"  # the title still joined its turn


@dataclass
class Recording:
    """The recording path from the hooks to a SQLite store, wired as the sidecar wires it."""

    store: SqliteStore
    writer: Writer
    pipeline: Pipeline
    recorder: Recorder

    async def call(
        self,
        content: str,
        reply: str = "ok",
        headers: dict[str, str] | None = None,
        status: int = 200,
        stored: bool = True,
    ) -> None:
        """One OpenAI chat call through the recorder's hooks, as mitmproxy drives them, until
        recorded (and, if `stored`, committed)."""
        body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": content}]}
        flow = tflow.tflow(
            req=tutils.treq(
                host="api.openai.com", port=443, scheme=b"https", method=b"POST",
                path=b"/v1/chat/completions", content=json.dumps(body).encode(),
            )
        )  # fmt: skip
        flow.request.headers.update({"content-type": "application/json", **(headers or {})})
        flow.request.timestamp_start = flow.request.timestamp_end = time.time()  # (tflow's are in 2000)
        self.recorder.requestheaders(flow)
        self.recorder.request(flow)
        answer = (
            wire.openai_completion(reply, usage=wire.openai_usage(3, 1))
            if status == 200
            else wire.openai_error("the server had an error", "server_error")
        )
        flow.response = tutils.tresp(status_code=status, content=answer)
        flow.response.headers["content-type"] = "application/json"
        flow.response.timestamp_start = flow.response.timestamp_end = time.time()
        self.recorder.responseheaders(flow)
        assert not callable(flow.response.stream)  # a short whole body: mitmproxy holds it
        self.recorder.response(flow)
        await self.pipeline.drain()
        if stored:
            await self.writer.flush()

    async def settled_step(self, run_id: str) -> dict[str, Any]:
        """The run's one step as stored once its failures have settled (the retry window past)."""
        self.pipeline.tracker.tick(time.time() + 3 * self.pipeline.tracker.retry_window)
        await self.writer.flush()
        stored = await self.store.get_run(run_id)
        assert stored is not None
        (step,) = stored["steps"]
        return step


@contextlib.asynccontextmanager
async def recording(
    tmp_path: Path,
    *,
    linger: float = 0.0,
    spool: bool = False,
    recall_step: Callable[[Writer], RecallStep] | None = None,
) -> AsyncIterator[Recording]:
    """`Recording` over a fresh store; `recall_step`, given the writer, is how the pipeline
    reads a sent step back (the sidecar's: `Writer.get_object`). Closed whatever the test did."""
    store = SqliteStore(str(tmp_path / "db.sqlite"))
    await store.open()
    writer = Writer(
        store, spool=Spool(tmp_path / "db.sqlite.spool", 1 << 20) if spool else None, linger=linger
    )
    writer.start()
    pipeline = Pipeline(
        writer.submit,
        recall=store.get_run,
        history=store.find_history,
        recall_step=recall_step(writer) if recall_step else None,
    )
    pipeline.start()
    try:
        yield Recording(store, writer, pipeline, Recorder(pipeline))
    finally:
        await pipeline.close()
        await writer.close()
        await store.close()


def sent_steps(writer: Writer) -> RecallStep:
    return functools.partial(writer.get_object, "step")


async def test_a_late_retry_of_a_run_a_busy_proxy_let_go_takes_it_up_from_the_store(tmp_path: Path) -> None:
    """Memory keeps `max_settled` settled runs; an identical request with a retry header for an
    older one, still inside the retry window, is its next attempt, read back from the store."""
    async with recording(tmp_path) as r:
        r.pipeline.tracker.max_settled = 1
        await r.call("the first question")
        (first,) = r.pipeline.tracker.runs
        await r.call("another question")
        await r.call("and a third")
        r.pipeline.tracker.tick()
        assert first not in r.pipeline.tracker.runs  # let go: two newer runs settled after it
        await r.call("the first question", headers={"x-stainless-retry-count": "1"})
        await r.call("the first question")  # no retry header, the last attempt fine: asked again
        stored = await r.store.get_run(first)
        assert stored is not None
        ((attempts),) = [step["attempts"] for step in stored["steps"]]
        assert [(a["number"], a["retry_signal"]) for a in attempts] == [
            (1, None),
            (2, "x-stainless-retry-count=1"),
        ]
        runs = await r.store.list_runs(RunFilter(q="the first question"), 10, None)
        assert len(runs) == 2 and r.pipeline.counters.failed == 0


async def test_a_sent_steps_request_and_response_leave_memory_and_come_back_for_a_retry(
    tmp_path: Path,
) -> None:
    """A completed step, once stored, keeps neither its request nor its response in memory; a
    retry after success brings them back from the store first, so every later snapshot of the
    step (the retry's, a failure's settling) carries them whole, and the completed response
    stays the step's. When the store cannot give them back, the retry starts a run of its own."""
    away = False

    def unless_away(writer: Writer) -> RecallStep:
        async def recall_step(step_id: str, current: Callable[[dict[str, Any]], bool]) -> dict | None:
            if away:
                raise StoreUnavailable("the database is locked")
            return await writer.get_object("step", step_id, current)

        return recall_step

    async with recording(tmp_path, recall_step=unless_away) as r:
        question = "which city is largest?"
        await r.call(question, "Tokyo")
        ((run_id, run),) = r.pipeline.tracker.runs.items()
        (step,) = run.steps
        assert step.sent and step.row.request is None and step.row.response is None
        retry = {"x-stainless-retry-count": "1"}
        await r.call(question, headers=retry, status=500)
        stored_step = await r.settled_step(run_id)
        assert [a["status"] for a in stored_step["attempts"]] == ["completed", "failed"]
        assert stored_step["status"] == "completed"
        assert stored_step["request"]["messages"][0]["parts"][0]["text"] == question
        assert stored_step["response"]["content"][0]["text"] == "Tokyo"

        await r.call("and the smallest?", "Vatican City")
        other = next(run for run in r.pipeline.tracker.runs.values() if run.row.id != run_id)
        away = True
        before = set(r.pipeline.tracker.runs)
        await r.call("and the smallest?", headers=retry)
        assert len(set(r.pipeline.tracker.runs) - before) == 1  # placed on its own: the step stays as stored
        stored = await r.store.get_run(other.row.id)
        assert stored is not None and len(stored["steps"][0]["attempts"]) == 1
        assert stored["steps"][0]["request"] is not None and stored["steps"][0]["response"] is not None


async def test_a_retry_right_after_success_finds_the_step_as_it_was_sent_not_as_last_committed(
    tmp_path: Path,
) -> None:
    """The writer lingers before it commits: a retry arriving meanwhile must read the sent step
    back after its last snapshot is written, or it would take the step's older row (no response)
    for the step and write that back over the completed response."""
    async with recording(tmp_path, linger=0.2, recall_step=sent_steps) as r:
        question = "which river is longest?"
        await r.call(question, "the Nile", stored=False)
        ((run_id, run),) = r.pipeline.tracker.runs.items()
        assert run.steps[0].sent
        await r.call(question, headers={"x-stainless-retry-count": "1"}, status=500)
        step = await r.settled_step(run_id)
        assert [a["status"] for a in step["attempts"]] == ["completed", "failed"]
        assert step["status"] == "completed"
        assert step["response"]["content"][0]["text"] == "the Nile"
        assert len(await r.store.list_runs(RunFilter(q=question), 10, None)) == 1


async def test_only_a_retry_brings_a_sent_step_back_and_a_committed_one_comes_while_the_store_is_away(
    tmp_path: Path,
) -> None:
    """An identical request after a success is a new run unless it says it retries: it reads
    nothing back (an evaluation asking the same question again must not wait on commits). A
    retry reads the step from the store at once when what is stored is the step as last sent,
    so it joins its run also while the store refuses writes (another process holds the lock)."""
    reads: list[str] = []

    def counted(writer: Writer) -> RecallStep:
        async def recall_step(step_id: str, current: Callable[[dict[str, Any]], bool]) -> dict | None:
            reads.append(step_id)
            return await writer.get_object("step", step_id, current)

        return recall_step

    async with recording(tmp_path, spool=True, recall_step=counted) as r:
        question = "which mountain is highest?"
        for _ in range(6):
            await r.call(question, "Everest")
        assert reads == [] and len(r.pipeline.tracker.runs) == 6
        run_id, run = list(r.pipeline.tracker.runs.items())[-1]  # the newest: what a retry retries
        blocker = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            await r.call("and the deepest lake?", "Baikal")
            assert r.writer.degraded
            await r.call(question, "Everest", headers={"x-stainless-retry-count": "1"})
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert reads == [run.steps[0].row.id]
        assert [a.status for a in run.steps[0].attempts] == ["completed", "completed"]
        await r.writer.close()  # (probes the store, replays the spool)
        stored = await r.store.get_run(run_id)
        assert stored is not None
        assert [a["retry_signal"] for a in stored["steps"][0]["attempts"]] == [
            None,
            "x-stainless-retry-count=1",
        ]
        assert stored["steps"][0]["response"]["content"][0]["text"] == "Everest"


def test_the_longest_known_prefix_is_found_among_many_unknown() -> None:
    index: Index[str] = Index(10, 60.0)
    keys = [f"h{i}" for i in range(90_000)]
    assert index.last_held(keys) == -1 and index.last_held([]) == -1
    index.put("h7", "seven", 0.0)
    index.put("h42", "forty-two", 0.0)
    assert index.last_held(keys) == 42 and index.last_held(keys[:42]) == 7
