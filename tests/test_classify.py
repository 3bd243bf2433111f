"""Classification of each application's requests, as they arrive on the wire."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from addons.classify import Classifier, load_profiles
from addons.providers.base import Call
from addons.providers.registry import find_api
from tests.apps import CASES


def classify(path: str, body: dict[str, Any], headers: dict[str, str], classifier: Classifier | None = None):
    api = find_api("POST", path)
    assert api is not None, path
    call = Call(method="POST", host="api.example.com", path=path, headers=headers)
    request = api.parse_request(body, call)
    return (classifier or Classifier()).classify(request, path, {})


@pytest.mark.parametrize(
    ("name", "path", "body", "headers", "kind", "source"), CASES, ids=[c[0] for c in CASES]
)
def test_each_application(name: str, path: str, body: dict, headers: dict, kind: str, source: str) -> None:
    result = classify(path, body, headers)
    assert (result.kind, result.source) == (kind, source), result.reason
    assert result.reason


def test_header_wins_over_everything() -> None:
    _, path, body, _, _, _ = next(c for c in CASES if c[0] == "coder-title")
    api = find_api("POST", path)
    assert api is not None
    request = api.parse_request(body, Call("POST", "h", path))
    result = Classifier().classify(request, path, {"x-chatdebug-kind": "compaction"})
    assert (result.kind, result.source, result.reason) == (
        "compaction",
        "header",
        "X-Chatdebug-Kind: compaction",
    )


def test_reasons_name_the_rule() -> None:
    _, path, body, headers, _, _ = next(c for c in CASES if c[0] == "claude-code-compaction")
    assert (
        classify(path, body, headers).reason
        == "Claude Code: Claude Code's /compact instruction after the last tool result"
    )


def test_user_profiles_extend_and_win(tmp_path: Path) -> None:
    profile = {
        "profiles": [
            {
                "name": "Acme Chat",
                "rules": [
                    {
                        "kind": "title_generation",
                        "reason": "Acme's namer",
                        "match": {"system_contains": "name this thread", "max_output_tokens_at_most": 40},
                    },
                    {
                        "kind": "quickgen",
                        "reason": "Acme overrides plain chats",
                        "match": {"system_starts_with": "You are a helpful assistant."},
                    },
                ],
            }
        ]
    }
    path = tmp_path / "acme.json"
    path.write_text(json.dumps(profile))
    classifier = Classifier([path])
    assert next(p.name for p in load_profiles([path])) == "Acme Chat"
    body = {
        "model": "m",
        "max_tokens": 30,
        "messages": [
            {"role": "system", "content": "Please NAME   this thread."},
            {"role": "user", "content": "Kyoto trip"},
        ],
    }
    result = classify("/v1/chat/completions", body, {}, classifier)
    assert (result.kind, result.source, result.reason) == (
        "title_generation",
        "profile",
        "Acme Chat: Acme's namer",
    )
    _, path2, body2, headers2, _, _ = next(c for c in CASES if c[0] == "plain-chat-turn")
    assert classify(path2, body2, headers2, classifier).kind == "quickgen"


# ---- meaning over wording: requests shaped as real applications send them -----------------------

TOOLS = [
    {"name": n, "description": "d", "input_schema": {"type": "object"}} for n in ("Bash", "Read", "Edit")
]


def anthropic(system: str | None, messages: list[dict[str, Any]], **extra: Any):
    body: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 64000, "messages": messages, **extra}
    if system is not None:
        body["system"] = [{"type": "text", "text": system}]
    return classify("/v1/messages", body, {})


def chat(messages: list[dict[str, Any]], **extra: Any):
    return classify("/v1/chat/completions", {"model": "m", "messages": messages, **extra}, {})


def test_titles_whatever_their_output_cap() -> None:
    claude = anthropic(
        "Generate a concise, sentence-case title (3-7 words) that captures the main topic or goal of this "
        "coding session. Return JSON with a single title field.",
        [{"role": "user", "content": "refactor the parser so it never raises"}],
        output_config={
            "format": {"type": "json_schema", "schema": {"properties": {"title": {"type": "string"}}}}
        },
    )
    opencode = chat(
        [
            {
                "role": "system",
                "content": "You are a title generator. You output ONLY a thread title. Nothing else.",
            },
            {"role": "user", "content": "Generate a title for this conversation:\n"},
            {"role": "user", "content": "list the files in this repo"},
        ],
        max_tokens=4096,
    )
    gemini_summary = classify(
        "/v1beta/models/gemini-2.5-flash:generateContent",
        {
            "contents": [
                {
                    "role": "user",
                    "parts": [
                        {
                            "text": "Summarize the user's primary intent or goal in this "
                            "conversation in ONE sentence (max 80 characters). Conversation: user: fix the tests"
                        }
                    ],
                }
            ]
        },
        {},
    )
    schema_tool = chat(
        [{"role": "user", "content": "Kyoto trip plans for three days"}],
        tools=[
            {
                "type": "function",
                "function": {"name": "set_chat_title", "parameters": {"properties": {"title": {}}}},
            }
        ],
    )
    for result in (claude, opencode, gemini_summary, schema_tool):
        assert result.kind == "title_generation", result


def test_a_compaction_instruction_after_tool_results_with_tools_offered() -> None:
    result = anthropic(
        "You are Claude Code, Anthropic's official CLI for Claude.",
        [
            {"role": "user", "content": "fix the bug"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "ok"},
                    {
                        "type": "text",
                        "text": "CRITICAL: Respond with TEXT ONLY. Do NOT call any tools.\n\nYour task is "
                        "to create a detailed summary of the conversation so far, paying close attention to the "
                        "user's explicit requests.",
                    },
                ],
            },
            {"role": "system", "content": "Available agent types for the Agent tool: general-purpose"},
        ],
        tools=TOOLS,
    )
    assert result.kind == "compaction", result


def test_a_turn_that_starts_from_a_summary_is_a_turn() -> None:
    summary = (
        "This session is being continued from a previous conversation that ran out of context. The conversation "
        "is summarized below:\nAnalysis: the user asked to summarize the conversation so far and compact it. "
        + "Details. " * 200
        + "Please continue the conversation from where we left it off without asking the user any further questions."
    )
    result = anthropic("You are Claude Code.", [{"role": "user", "content": summary}], tools=TOOLS)
    assert result.kind == "chat_turn", result


def test_compactions_in_other_words() -> None:
    inline = chat(
        [
            {
                "role": "user",
                "content": "Write a summary that summarizes the conversation below for a handoff.\n"
                + "user: a\nassistant: b\n" * 30,
            }
        ]
    )
    system_role = chat(
        [
            {
                "role": "system",
                "content": "You are a context summarization agent. Produce a summary of the conversation.",
            },
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
        ],
        max_tokens=4096,
    )
    distil = classify(
        "/v1beta/models/gemini-2.5-pro:generateContent",
        {
            "systemInstruction": {
                "parts": [
                    {
                        "text": "You are the component that summarizes internal chat history, "
                        "distilling chat history into a structured XML <state_snapshot>."
                    }
                ]
            },
            "contents": [
                {"role": "user", "parts": [{"text": "a"}]},
                {"role": "model", "parts": [{"text": "b"}]},
                {
                    "role": "user",
                    "parts": [
                        {"text": "First, reason in your scratchpad. Then, generate the <state_snapshot>."}
                    ],
                },
            ],
        },
        {},
    )
    for result in (inline, system_role, distil):
        assert result.kind == "compaction", result


def test_side_calls_that_return_something_to_the_application_are_quickgen() -> None:
    router = classify(
        "/v1beta/models/gemini-2.5-flash-lite:generateContent",
        {
            "contents": [
                {
                    "role": "user",
                    "parts": [{"text": "Evaluate the complexity of this request: fix the tests"}],
                }
            ],
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseJsonSchema": {"properties": {"reasoning": {}, "model_choice": {}}},
            },
        },
        {},
    )
    commit = chat([{"role": "user", "content": "Write a commit message for this diff:\n--- a/x\n+++ b/x"}])
    labels = chat(
        [
            {"role": "system", "content": "You label what these tool calls did, in five words."},
            {"role": "user", "content": "Bash(ls) Read(README.md)"},
        ]
    )
    memory = chat(
        [{"role": "user", "content": "Extract any new memories about the user from this exchange: ..."}]
    )
    for result in (router, commit, memory):
        assert result.kind == "quickgen", result
    assert labels.kind in ("quickgen",), labels


def test_ordinary_turns_stay_turns() -> None:
    assert chat([{"role": "user", "content": "Suggest a good name for my puppy"}]).kind == "chat_turn"
    assert (
        chat(
            [{"role": "user", "content": "Add a title to the chat page of my React app"}],
            tools=[
                {"type": "function", "function": {"name": "edit"}},
                {"type": "function", "function": {"name": "read"}},
            ],
        ).kind
        == "chat_turn"
    )
    big_system = (
        "You are an agent. " + "When the conversation gets long it will be summarized automatically. " * 50
    )
    loop = anthropic(
        big_system, [{"role": "user", "content": "summarize this file for me: README.md"}], tools=TOOLS
    )
    assert loop.kind == "chat_turn", loop


def test_codex_thread_source_beats_its_request_kind() -> None:
    headers = {"x-codex-turn-metadata": '{"request_kind":"turn","thread_source":"thread_title"}'}
    body = {"model": "gpt-5", "input": "x", "instructions": "Be helpful."}
    result = classify("/v1/responses", body, headers)
    assert (result.kind, result.source) == ("title_generation", "client_metadata")
    plain = classify("/v1/responses", body, {"x-codex-turn-metadata": '{"request_kind":"turn"}'})
    assert (plain.kind, plain.source) == ("chat_turn", "client_metadata")


def test_unreadable_only_when_not_json() -> None:
    assert Classifier().classify(None, "/v1/messages", {}).kind == "unknown"
    api = find_api("POST", "/v1/messages")
    assert api is not None
    broken = api.parse_request({"model": "m", "messages": "nope"}, Call("POST", "h", "/v1/messages"))
    assert Classifier().classify(broken, "/v1/messages", {}).kind == "chat_turn"


def test_rules_decided_per_system_prompt_still_read_the_rest_of_each_call(tmp_path: Path) -> None:
    """Which rules a system prompt lets through is kept per prompt; their other conditions are
    asked of every call, and more prompts than are kept still classify as before."""
    profile = {
        "profiles": [
            {
                "name": "Acme",
                "rules": [
                    {
                        "kind": "compaction",
                        "reason": "Acme's compactor",
                        "match": {"system_contains": "acme agent", "last_user_starts_with": "/squash"},
                    },
                ],
            }
        ]
    }
    path = tmp_path / "acme.json"
    path.write_text(json.dumps(profile))
    classifier = Classifier([path])

    def kind(system: str, user: str) -> str:
        body = {"messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}
        return classify("/v1/chat/completions", {"model": "m", **body}, {}, classifier).kind

    for i in range(40):  # past the prompts kept: each is decided again when it comes back
        system = f"You are the Acme  Agent number {i}."
        assert kind(system, "/squash the history") == "compaction"
        assert kind(system, "what is the capital of France?") == "chat_turn"
        assert kind(f"You are helper {i}.", "/squash the history") == "chat_turn"
    assert kind("You are the Acme agent number 0.", "/SQUASH now") == "compaction"
