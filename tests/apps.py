"""Requests as real chat applications send them: titles, compactions and chat turns.

Each case is (name, path, body, headers, expected kind, expected classification source).
Profiled applications are matched by `profiles/builtin.json`; the "unprofiled" ones exercise
the heuristics, which must generalise to applications nobody wrote a profile for.
"""

from __future__ import annotations

from typing import Any

HISTORY_OPENAI = [
    {"role": "user", "content": "Set up a Go workspace template with Docker for our team."},
    {"role": "assistant", "content": "Sure. First, create a main.tf that declares the docker provider..."},
    {"role": "user", "content": "Add a persistent volume for /home/coder and pin the image tag."},
    {
        "role": "assistant",
        "content": "Done: added docker_volume.home and image = codercom/enterprise-base:2.4.",
    },
]
HISTORY_ANTHROPIC = [
    {"role": "user", "content": [{"type": "text", "text": "Refactor the parser module into smaller files."}]},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "I'll start by reading the module."},
            {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"file_path": "/src/parser.py"}},
        ],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01", "content": "def parse(x): ...\n" * 40}
        ],
    },
    {
        "role": "assistant",
        "content": [{"type": "text", "text": "The module mixes lexing and parsing; I split it."}],
    },
]
CLAUDE_TOOLS = [
    {"name": "Read", "description": "Read a file", "input_schema": {"type": "object"}},
    {"name": "Edit", "description": "Edit a file", "input_schema": {"type": "object"}},
]

Case = tuple[str, str, dict[str, Any], dict[str, str], str, str]

CASES: list[Case] = [
    # ---- Coder ----
    (
        "coder-title",
        "/v1/chat/completions",
        {
            "model": "gpt-4.1-mini",
            "max_tokens": 256,
            "messages": [
                {"role": "system", "content": "Write a short title for the user's message."},
                {"role": "user", "content": "Set up a Go workspace template with Docker for our team."},
            ],
        },
        {},
        "title_generation",
        "profile",
    ),
    (
        "coder-title-tool",
        "/v1/messages",
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 256,
            "system": "Propose a title for this chat.",
            "tools": [{"name": "propose_title", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "propose_title"},
            "messages": [
                {"role": "user", "content": "Set up a Go workspace template with Docker for our team."}
            ],
        },
        {},
        "title_generation",
        "profile",
    ),
    (
        "coder-compaction",
        "/v1/chat/completions",
        {
            "model": "gpt-4.1",
            "messages": [
                {"role": "system", "content": "You are Coder's assistant."},
                *HISTORY_OPENAI,
                {
                    "role": "user",
                    "content": "You are performing a context compaction. Summarize the work so far.",
                },
            ],
        },
        {},
        "compaction",
        "profile",
    ),
    # ---- Claude Code ----
    (
        "claude-code-compaction",
        "/v1/messages",
        {
            "model": "claude-sonnet-4-6",
            "max_tokens": 20000,
            "system": [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."}],
            "tools": CLAUDE_TOOLS,
            "metadata": {"user_id": "user_ab12_account_cd34_session_5f1e2d3c"},
            "messages": [
                *HISTORY_ANTHROPIC,
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": "Your task is to create a detailed summary of the conversation so far, "
                            "paying close attention to the user's explicit requests and your previous actions.",
                            "cache_control": {"type": "ephemeral"},
                        }
                    ],
                },
            ],
        },
        {},
        "compaction",
        "profile",
    ),
    (
        "claude-code-title",
        "/v1/messages",
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 512,
            "system": [
                {
                    "type": "text",
                    "text": "Analyze if this message indicates a new conversation topic. If it does, extract a "
                    "2-3 word title that captures the new topic. Format your response as a JSON object.",
                }
            ],
            "messages": [{"role": "user", "content": "Refactor the parser module into smaller files."}],
        },
        {},
        "title_generation",
        "profile",
    ),
    # ---- Codex CLI (OpenAI Responses) ----
    (
        "codex-compaction-prompt",
        "/v1/responses",
        {
            "model": "gpt-5-codex",
            "instructions": "You are Codex, a coding agent.",
            "input": [
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Fix the tests."}],
                },
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": "Fixed."}],
                },
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {
                            "type": "input_text",
                            "text": "You are performing a CONTEXT CHECKPOINT COMPACTION. Create a handoff summary "
                            "for another LLM that will resume the task.",
                        }
                    ],
                },
            ],
            "stream": True,
            "prompt_cache_key": "019a-codex-session",
        },
        {},
        "compaction",
        "profile",
    ),
    (
        "codex-compact-endpoint",
        "/v1/responses/compact",
        {
            "model": "gpt-5-codex",
            "input": [
                {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "Fix the tests."}],
                }
            ],
        },
        {},
        "compaction",
        "profile",
    ),
    (
        "codex-turn-metadata",
        "/v1/responses",
        {"model": "gpt-5-codex", "input": "Fix the flaky test in ci.yml", "stream": True},
        {"x-codex-turn-metadata": '{"turn_id":"t-1","request_kind":"compaction"}'},
        "compaction",
        "client_metadata",
    ),
    # ---- Open WebUI ----
    (
        "open-webui-title",
        "/v1/chat/completions",
        {
            "model": "llama3.1:8b",
            "stream": False,
            "max_tokens": 1000,
            "messages": [
                {
                    "role": "user",
                    "content": "### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat "
                    "history.\n### Guidelines:\n- The title should clearly represent the main theme.\n"
                    '### Output:\nJSON format: { "title": "your concise title here" }\n### Chat History:\n'
                    "<chat_history>\nUSER: What is the tallest mountain in Europe?\nASSISTANT: Mount Elbrus.\n"
                    "</chat_history>",
                }
            ],
        },
        {},
        "title_generation",
        "profile",
    ),
    # ---- Vercel ai-chatbot ----
    (
        "vercel-title",
        "/v1/chat/completions",
        {
            "model": "gpt-4.1-mini",
            "messages": [
                {
                    "role": "system",
                    "content": "Generate a short chat title (2-5 words) summarizing the user's message. "
                    "Output ONLY the title text.",
                },
                {
                    "role": "user",
                    "content": '{"role":"user","parts":[{"type":"text","text":"Plan a trip to Kyoto"}]}',
                },
            ],
        },
        {},
        "title_generation",
        "profile",
    ),
    # ---- applications without a profile: heuristics ----
    (
        "librechat-title",
        "/v1/chat/completions",
        {
            "model": "gpt-4o-mini",
            "max_tokens": 16,
            "messages": [
                {
                    "role": "user",
                    "content": "Please generate a concise, 5-word-or-less title for the conversation, using its "
                    'same language, with no punctuation.\n||>User:\n"How do tides work?"\n||>Response:\n'
                    '"The moon\'s gravity..."\n\n||>Title:',
                }
            ],
        },
        {},
        "title_generation",
        "heuristic",
    ),
    (
        "lobechat-title",
        "/v1/chat/completions",
        {
            "model": "gpt-4o-mini",
            "messages": [
                {
                    "role": "system",
                    "content": "You are a conversation naming assistant. Name the conversation in "
                    "at most 10 words, return only the name.",
                },
                {
                    "role": "user",
                    "content": "user: How do tides work?\nassistant: The moon's gravity pulls...",
                },
            ],
        },
        {},
        "title_generation",
        "heuristic",
    ),
    (
        "cline-condense",
        "/v1/messages",
        {
            "model": "claude-sonnet-4-6",
            "max_tokens": 8000,
            "system": "You are Cline, a highly skilled software engineer.",
            "messages": [
                *HISTORY_ANTHROPIC,
                {
                    "role": "user",
                    "content": "Please summarize the conversation so far in detail, so a new session can pick up "
                    "the task where we left off.",
                },
            ],
        },
        {},
        "compaction",
        "heuristic",
    ),
    (
        "langchain-summary-memory",
        "/v1/chat/completions",
        {
            "model": "gpt-4o-mini",
            "messages": [
                {
                    "role": "user",
                    "content": "Progressively summarize the lines of conversation provided, adding onto the "
                    "previous summary returning a new summary.\n\nCurrent summary:\nThe human asks about tides.\n"
                    "\nNew lines of conversation:\n"
                    + "Human: and the moon?\nAI: It pulls the oceans.\n" * 40
                    + "\nNew summary:",
                }
            ],
        },
        {},
        "compaction",
        "heuristic",
    ),
    (
        "plain-chat-turn",
        "/v1/chat/completions",
        {
            "model": "gpt-4.1",
            "stream": True,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What's a good name for a golden retriever puppy?"},
            ],
        },
        {},
        "chat_turn",
        "default",
    ),
    (
        "structured-extraction",
        "/v1/chat/completions",
        {
            "model": "gpt-4.1-mini",
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
            "messages": [
                {"role": "user", "content": "Extract the invoice number from: INV-2291, due 2026-12-01"}
            ],
        },
        {},
        "quickgen",
        "heuristic",
    ),
]
