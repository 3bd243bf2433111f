"""Byte-accurate provider responses, built the way the real APIs emit them.

Field order, `null`s and framing follow what api.openai.com and api.anthropic.com send, so the
SDKs parse them as they would parse the real thing.
"""

from __future__ import annotations

import json
from typing import Any

CREATED = 1764165000


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# ---- OpenAI Chat Completions ------------------------------------------------------------------


def openai_chunk(
    cid: str,
    model: str,
    delta: dict[str, Any] | None,
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
) -> bytes:
    choices = (
        [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    )
    chunk = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_3f58d112f7",
        "choices": choices,
        "usage": usage,
    }
    return f"data: {_compact(chunk)}\n\n".encode()


def openai_usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def openai_stream(
    text: list[str] | None = None,
    tool_calls: list[tuple[str, str, list[str]]] | None = None,
    *,
    usage: dict[str, Any] | None = None,
    cid: str = "chatcmpl-CXe9pQq0w8lZcD6d1hT2sVbQmN7aa",
    model: str = "gpt-4.1-2025-04-14",
    done: bool = True,
) -> list[bytes]:
    """Events of a streamed chat completion: text deltas or tool-call fragments, usage, [DONE]."""
    events = [
        openai_chunk(
            cid, model, {"role": "assistant", "content": None if tool_calls else "", "refusal": None}
        )
    ]
    for piece in text or []:
        events.append(openai_chunk(cid, model, {"content": piece}))
    for index, (call_id, name, fragments) in enumerate(tool_calls or []):
        first = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        events.append(openai_chunk(cid, model, {"tool_calls": [first]}))
        for fragment in fragments:
            events.append(
                openai_chunk(
                    cid, model, {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}
                )
            )
    events.append(openai_chunk(cid, model, {}, "tool_calls" if tool_calls else "stop"))
    if usage is not None:
        events.append(openai_chunk(cid, model, None, usage=usage))
    if done:
        events.append(b"data: [DONE]\n\n")
    return events


def openai_completion(
    text: str | None = None,
    tool_calls: list[tuple[str, str, str]] | None = None,
    *,
    usage: dict[str, Any],
    cid: str = "chatcmpl-CXe9pQq0w8lZcD6d1hT2sVbQmN7bb",
    model: str = "gpt-4.1-2025-04-14",
) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
    if tool_calls:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in tool_calls
        ]
    body = {
        "id": cid,
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if tool_calls else "stop",
            }
        ],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": "fp_3f58d112f7",
    }
    return json.dumps(body, indent=2, ensure_ascii=False).encode()


def openai_error(message: str, type_: str, code: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": type_, "param": None, "code": code}}, indent=2
    ).encode()


# ---- Anthropic Messages -----------------------------------------------------------------------


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {_compact(data)}\n\n".encode()


def anthropic_stream(
    text: list[str] | None = None,
    tool_use: tuple[str, str, list[str]] | None = None,
    *,
    input_tokens: int = 25,
    output_tokens: int = 12,
    cache_read: int = 0,
    cache_write: int = 0,
    mid: str = "msg_01XFDUDYJgAACzvnptvVoYEL",
    model: str = "claude-sonnet-4-5-20250929",
    stop: bool = True,
) -> list[bytes]:
    usage = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "output_tokens": 1,
        "service_tier": "standard",
    }
    message = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    events = [_event("message_start", {"type": "message_start", "message": message})]
    index = 0
    if text:
        events.append(
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            )
        )
        events.append(_event("ping", {"type": "ping"}))
        for piece in text:
            delta = {"type": "text_delta", "text": piece}
            events.append(
                _event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
            )
        events.append(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        index = 1
    if tool_use:
        tool_id, name, fragments = tool_use
        block = {"type": "tool_use", "id": tool_id, "name": name, "input": {}}
        events.append(
            _event(
                "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
            )
        )
        for fragment in ["", *fragments]:
            delta = {"type": "input_json_delta", "partial_json": fragment}
            events.append(
                _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            )
        events.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    if not stop:
        return events
    final_usage = {"output_tokens": output_tokens}
    reason = "tool_use" if tool_use else "end_turn"
    events.append(
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": None},
                "usage": final_usage,
            },
        )
    )
    events.append(_event("message_stop", {"type": "message_stop"}))
    return events


def anthropic_message(
    text: str | None = None,
    tool_use: tuple[str, str, dict[str, Any]] | None = None,
    *,
    input_tokens: int = 25,
    output_tokens: int = 12,
    cache_read: int = 0,
    cache_write: int = 0,
    mid: str = "msg_01Aq9w938a90dw8q",
    model: str = "claude-sonnet-4-5-20250929",
) -> bytes:
    content: list[dict[str, Any]] = []
    if text:
        content.append({"type": "text", "text": text})
    if tool_use:
        content.append({"type": "tool_use", "id": tool_use[0], "name": tool_use[1], "input": tool_use[2]})
    body = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": "tool_use" if tool_use else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        },
    }
    return _compact(body).encode()


def anthropic_error(type_: str, message: str) -> bytes:
    return _compact({"type": "error", "error": {"type": type_, "message": message}}).encode()


def anthropic_error_event(type_: str, message: str) -> bytes:
    return _event("error", {"type": "error", "error": {"type": type_, "message": message}})
