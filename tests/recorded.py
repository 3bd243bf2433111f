"""Real SDK traffic for the viewer and terminal tests: one conversation holding a tool loop, a
rate-limited call the SDK retries, a title generation and a compaction."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests import wire
from tests.conftest import Sidecar, unique
from tests.test_e2e_grouping import run_tool_loop, tool_loop_reply
from tests.test_e2e_record import openai_client
from tests.upstream import Reply, Seen, Upstream

TITLE_PROMPT = "Write a short title for the user's message."
COMPACTION_PROMPT = "You are performing a context compaction. Summarize the work so far."


@dataclass
class Recorded:
    marker: str
    conversation_id: str
    tool_loop: dict[str, Any]  # the run, as the API lists it
    retried: dict[str, Any]
    title: dict[str, Any]
    compaction: dict[str, Any]

    @property
    def runs(self) -> list[dict[str, Any]]:
        return [self.tool_loop, self.retried, self.title, self.compaction]


def _side_call_reply(seen: Seen) -> Reply:
    body = json.loads(seen.body)
    system = body["messages"][0]["content"]
    if system == TITLE_PROMPT:
        return Reply.json(wire.openai_completion("Paris weather", usage=wire.openai_usage(30, 3)))
    return Reply.json(
        wire.openai_completion("Summary: asked for the weather.", usage=wire.openai_usage(200, 12))
    )


def record(sidecar: Sidecar, upstream: Upstream) -> Recorded:
    marker = unique("viewer")
    conversation = f"conv-{marker}"
    headers = {"X-Chatdebug-Conversation": conversation}
    client = openai_client(sidecar, upstream, default_headers=headers, max_retries=2)

    upstream.responder = tool_loop_reply
    messages: list[dict[str, Any]] = [{"role": "user", "content": f"{marker} weather twice please"}]
    run_tool_loop(client, messages)
    (tool_loop,) = sidecar.wait_runs(q=f"{marker} weather")

    upstream.responder = None
    upstream.push(
        Reply.json(
            wire.openai_error("Rate limit reached for gpt-4.1", "requests", "rate_limit_exceeded"),
            status=429,
            **{"retry-after-ms": "50"},
        ),
        Reply.json(wire.openai_completion("after the wait", usage=wire.openai_usage(9, 3))),
    )
    client.chat.completions.create(
        model="gpt-4.1", messages=[*messages, {"role": "user", "content": f"{marker} and tomorrow?"}]
    )
    (retried,) = sidecar.wait_runs(q=f"{marker} and tomorrow")

    upstream.responder = _side_call_reply
    client.chat.completions.create(
        model="gpt-4.1-mini",
        messages=[
            {"role": "system", "content": TITLE_PROMPT},
            {"role": "user", "content": messages[0]["content"]},
        ],
    )
    client.chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "system", "content": COMPACTION_PROMPT}, *messages[1:]],
    )
    runs = sidecar.wait_runs(4, conversation_id=conversation)
    by_kind = {r["kind"]: r for r in runs}
    upstream.responder = None
    return Recorded(
        marker, conversation, tool_loop, retried, by_kind["title_generation"], by_kind["compaction"]
    )
