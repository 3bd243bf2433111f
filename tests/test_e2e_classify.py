"""Each application's title and compaction requests, sent on its real wire format through the proxy."""

from __future__ import annotations

import json
import ssl
from typing import Any

import httpx
import pytest

from tests import wire
from tests.apps import CASES, HISTORY_OPENAI
from tests.conftest import FAKE_OPENAI_KEY, Sidecar, unique
from tests.upstream import Reply, Seen, Upstream

RESPONSES_BODY = {
    "id": "resp_68f0a1b2c3d4",
    "object": "response",
    "created_at": 1764165000,
    "status": "completed",
    "model": "gpt-5-codex",
    "output": [
        {
            "id": "msg_68f0a1",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Summary: tests fixed.", "annotations": []}],
        }
    ],
    "usage": {
        "input_tokens": 40,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 6,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 46,
    },
}


def reply_for(seen: Seen) -> Reply:
    if "/responses" in seen.path:
        return Reply.json(json.dumps(RESPONSES_BODY).encode())
    if seen.path.endswith("/messages"):
        return Reply.json(wire.anthropic_message("A title"))
    return Reply.json(wire.openai_completion("A title", usage=wire.openai_usage(20, 3)))


def send(
    sidecar: Sidecar, upstream: Upstream, path: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    body = {**body, "stream": False}
    verify = ssl.create_default_context(cafile=str(sidecar.ca_file))
    with httpx.Client(proxy=sidecar.proxy_url, verify=verify, timeout=20) as client:
        response = client.post(
            upstream.url + path,
            json=body,
            headers={
                "Authorization": f"Bearer {FAKE_OPENAI_KEY}",
                "anthropic-version": "2023-06-01",
                **headers,
            },
        )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("name", "path", "body", "headers", "kind", "source"), CASES, ids=[c[0] for c in CASES]
)
def test_classified_through_the_proxy(
    sidecar: Sidecar,
    upstream: Upstream,
    name: str,
    path: str,
    body: dict,
    headers: dict,
    kind: str,
    source: str,
) -> None:
    marker = unique(name)
    upstream.responder = reply_for
    send(sidecar, upstream, path, body, {**headers, "X-Chatdebug-Conversation": marker})
    (run,) = sidecar.wait_runs(conversation_id=marker)
    assert (run["kind"], run["classification"]["source"]) == (kind, source), run["classification"]
    assert run["status"] == "completed"


def test_title_and_compaction_join_the_conversation_they_name(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("join")
    upstream.responder = reply_for
    first = f"{marker} Set up a Go workspace template with Docker for our team."
    history = [{"role": "user", "content": first}, *HISTORY_OPENAI[1:]]
    turn = {
        "model": "gpt-4.1",
        "messages": [{"role": "system", "content": "You are Coder's assistant."}, *history],
    }
    send(sidecar, upstream, "/v1/chat/completions", turn, {})
    title = {
        "model": "gpt-4.1-mini",
        "max_tokens": 256,
        "messages": [
            {"role": "system", "content": "Write a short title for the user's message."},
            {"role": "user", "content": first},
        ],
    }
    send(sidecar, upstream, "/v1/chat/completions", title, {})
    compaction = {
        **turn,
        "messages": [
            *turn["messages"],
            {
                "role": "user",
                "content": "You are performing a context compaction. Summarize the work so far.",
            },
        ],
    }
    send(sidecar, upstream, "/v1/chat/completions", compaction, {})
    webui = {
        "model": "llama3.1",
        "messages": [
            {
                "role": "user",
                "content": "### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history.\n"
                f"### Chat History:\n<chat_history>\nUSER: {first}\nASSISTANT: Sure.\n</chat_history>",
            }
        ],
    }
    send(sidecar, upstream, "/v1/chat/completions", webui, {})

    runs = sidecar.wait_runs(4, q=marker)  # the Open WebUI title quotes the marker in its template
    assert sorted(r["kind"] for r in runs) == [
        "chat_turn",
        "compaction",
        "title_generation",
        "title_generation",
    ]
    conversation = next(r["conversation_id"] for r in runs if r["kind"] == "chat_turn")
    assert conversation is not None
    # Coder's title and compaction by their opening messages; Open WebUI's by the text it quotes
    assert [r["conversation_id"] for r in runs] == [conversation] * 4
