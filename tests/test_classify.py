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
    return (classifier or Classifier()).classify(request, body, path, headers, {})


@pytest.mark.parametrize(
    ("name", "path", "body", "headers", "kind", "source"), CASES, ids=[c[0] for c in CASES]
)
def test_each_application(name: str, path: str, body: dict, headers: dict, kind: str, source: str) -> None:
    result = classify(path, body, headers)
    assert (result.kind, result.source) == (kind, source), result.reason
    assert result.reason


def test_header_wins_over_everything() -> None:
    _, path, body, headers, _, _ = next(c for c in CASES if c[0] == "coder-title")
    api = find_api("POST", path)
    assert api is not None
    request = api.parse_request(body, Call("POST", "h", path))
    result = Classifier().classify(request, body, path, headers, {"x-chatdebug-kind": "compaction"})
    assert (result.kind, result.source, result.reason) == (
        "compaction",
        "header",
        "X-Chatdebug-Kind: compaction",
    )


def test_reasons_name_the_rule() -> None:
    _, path, body, headers, _, _ = next(c for c in CASES if c[0] == "claude-code-compaction")
    assert classify(path, body, headers).reason == "Claude Code: Claude Code's /compact summary instruction"


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
