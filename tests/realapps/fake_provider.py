"""A scripted LLM provider that real coding agents accept: Anthropic, OpenAI and Gemini wire formats.

It answers every request the way the real API would frame it (SSE events, field order, error
bodies), with a tiny script instead of a model:

- a user prompt containing "list the files" gets one tool call (two with "twice") to whichever
  shell/list tool the request offers, and the follow-up request carrying the tool result gets text;
- a request asking for structured output (Anthropic `output_config.format`, OpenAI `text.format`
  or `response_format`, Gemini `responseJsonSchema`) gets a JSON object that fits the schema;
- `fail_next(status)` makes the next model call fail once with 529 `overloaded_error` (Anthropic)
  or 429 `rate_limit_exceeded` (OpenAI, Gemini), so the app retries.

Every request is logged with the reply it got to a JSONL file, one object a line.
Run alone: `python tests/realapps/fake_provider.py --log requests.jsonl` (prints its port and CA).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any

import trustme

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import wire  # noqa: E402
from tests.upstream import Reply, Seen, Upstream  # noqa: E402

SHELL_TOOLS = (
    "Bash",
    "bash",
    "shell",
    "shell_command",
    "exec_command",
    "run_shell_command",
    "list_directory",
    "list",
    "ls",
    "LS",
    "Glob",
    "glob",
)
TRIGGER = "list the files"
# A history this long reports this many more prompt tokens, so that an app's automatic
# compaction (at a small configured limit) starts after a couple of turns, and stops once the
# compacted history is short again.
LONG_HISTORY_ITEMS = 10
LONG_HISTORY_TOKENS = 30_000
FILES_ANSWER = "The directory holds README.md and notes.txt."


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _digest(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


# ---- the script, provider-neutral ---------------------------------------------------------


def fill_schema(schema: Any, name: str = "") -> Any:
    """A small value that validates against a JSON schema (titles, routers, classifiers)."""
    if not isinstance(schema, dict):
        return "ok"
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return fill_schema(schema[key][0], name)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    kind = str(kind or ("object" if "properties" in schema else "string")).lower()
    if kind == "object":
        props = schema.get("properties") or {}
        return {key: fill_schema(sub, key) for key, sub in props.items()}
    if kind == "array":
        return []
    if kind in ("integer", "number"):
        return schema.get("minimum", 1)
    if kind == "boolean":
        return False
    if "title" in name.lower():
        return "Listing the project files"
    if "reason" in name.lower():
        return "A simple request."
    return "Listing the project files"


def tool_arguments(schema: Any) -> dict[str, Any]:
    """Arguments for a shell or list tool, read off its parameter schema."""
    props = (schema or {}).get("properties") or {}
    args: dict[str, Any] = {}
    for key, sub in props.items():
        lowered = key.lower()
        kind = (sub or {}).get("type") if isinstance(sub, dict) else None
        if lowered in ("command", "cmd"):
            args[key] = ["ls"] if kind == "array" else "ls"
        elif lowered == "description":
            args[key] = "List the files in the working directory"
        elif lowered in ("path", "dir_path", "directory", "workdir", "absolute_path"):
            args[key] = "."
        elif lowered == "pattern":
            args[key] = "*"
    return args


def pick_tool(tools: list[tuple[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    by_name = dict(tools)
    for name in SHELL_TOOLS:
        if name in by_name:
            return name, tool_arguments(by_name[name])
    return None


def tool_calls_wanted(prompt: str) -> int:
    lowered = prompt.lower()
    if TRIGGER not in lowered:
        return 0
    return 2 if "twice" in lowered else 1


def answer_text(prompt: str) -> str:
    lowered = prompt.lower()
    if TRIGGER in lowered:
        return FILES_ANSWER
    if "summar" in lowered or "compact" in lowered or "checkpoint" in lowered:
        return (
            "<summary>The user asked for the files in the working directory; they are README.md "
            "and notes.txt. No further work is pending.</summary>"
        )
    return "Hello! " + " ".join(prompt.split()[:8])[:80]


# ---- the server's brain -------------------------------------------------------------------


class FakeProvider:
    """The responder behind `tests.upstream.Upstream`; thread-safe, logs every exchange."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._lock = threading.Lock()
        self._fail: int | None = None
        self._fail_model: str | None = None

    def fail_next(self, status: int, model: str | None = None) -> None:
        """The next model call (to `model`, if given) fails once with this status (529 or 429)."""
        with self._lock:
            self._fail = status
            self._fail_model = model

    def __call__(self, seen: Seen) -> Reply:
        started = time.time()
        try:
            reply = self._reply(seen)
        except Exception as e:  # a bug here must show in the log, not hang the app
            reply = Reply.json(_compact({"error": {"message": f"fake provider: {e!r}"}}).encode(), 500)
        self._log(seen, reply, started)
        return reply

    def _log(self, seen: Seen, reply: Reply, started: float) -> None:
        path, _, query = seen.path.partition("?")
        try:
            body: Any = json.loads(seen.body) if seen.body else None
        except ValueError:
            body = seen.body.decode("utf-8", "replace")
        record = {
            "started_at": started,
            "method": seen.method,
            "path": path,
            "query": query,
            "headers": seen.headers,
            "body": body,
            "response": {
                "status": reply.status,
                "headers": reply.headers,
                "chunks": [c.decode() for c in reply.chunks if isinstance(c, bytes)],
            },
        }
        with self._lock, self.log_path.open("a", encoding="utf-8") as out:
            out.write(_compact(record) + "\n")

    def _take_failure(self, model: str) -> int | None:
        with self._lock:
            if self._fail is None or self._fail_model not in (None, model):
                return None
            status, self._fail = self._fail, None
            return status

    def _reply(self, seen: Seen) -> Reply:
        path = seen.path.split("?", 1)[0]
        body = json.loads(seen.body) if seen.body and seen.body[:1] in (b"{", b"[") else {}
        if seen.method == "GET" and path.rstrip("/").endswith("/models"):
            return self._models(path)
        if path.endswith("/count_tokens") or path.endswith(":countTokens"):
            return Reply.json(_compact({"input_tokens": 1200, "totalTokens": 1200}).encode())
        if path.endswith("/v1/messages"):
            return self._anthropic(body)
        if path.endswith("/responses/compact"):
            return self._responses_compact(body)
        if path.endswith("/responses"):
            return self._responses(body)
        if path.endswith("/chat/completions"):
            return self._chat(body)
        if ":generateContent" in path or ":streamGenerateContent" in path:
            return self._gemini(path, body)
        return Reply.json(_compact({"error": {"message": f"no route {path}"}}).encode(), 404)

    def _models(self, path: str) -> Reply:
        if "/v1beta" in path:
            models = [{"name": "models/gemini-2.5-pro", "supportedGenerationMethods": ["generateContent"]}]
            return Reply.json(_compact({"models": models}).encode())
        return Reply.json(
            _compact(
                {
                    "object": "list",
                    "data": [{"id": "gpt-5.1-codex", "object": "model", "created": 0, "owned_by": "fake"}],
                    "models": [],
                }
            ).encode()
        )

    # ---- Anthropic Messages --------------------------------------------------------------

    def _anthropic(self, body: dict[str, Any]) -> Reply:
        if self._take_failure(str(body.get("model"))) is not None:
            return Reply.json(
                wire.anthropic_error("overloaded_error", "Overloaded"),
                529,
                **{"request-id": "req_011CVfakeoverloaded", "x-should-retry": "true"},
            )
        messages = body.get("messages") or []
        prompt, results = _anthropic_turn(messages)
        model = str(body.get("model") or "claude-sonnet-4-5")
        mid = "msg_01" + _digest(_compact(messages), model)[:22]
        schema = ((body.get("output_config") or {}).get("format") or {}).get("schema")
        tools = [(t.get("name", ""), t.get("input_schema")) for t in body.get("tools") or []]
        picked = pick_tool(tools) if results < tool_calls_wanted(prompt) else None
        text = _compact(fill_schema(schema)) if schema is not None else answer_text(prompt)
        inputs = 40 + len(_compact(messages)) // 4
        if picked is not None:
            name, args = picked
            tool_id = "toolu_01" + _digest(mid, str(results))[:22]
            if not body.get("stream"):
                return Reply.json(
                    wire.anthropic_message(
                        tool_use=(tool_id, name, args), mid=mid, model=model, input_tokens=inputs
                    )
                )
            raw = _compact(args)
            fragments = [raw[: len(raw) // 2], raw[len(raw) // 2 :]]
            return Reply.events(
                wire.anthropic_stream(
                    tool_use=(tool_id, name, fragments), mid=mid, model=model, input_tokens=inputs
                )
            )
        if not body.get("stream"):
            return Reply.json(wire.anthropic_message(text, mid=mid, model=model, input_tokens=inputs))
        pieces = [text[: len(text) // 2], text[len(text) // 2 :]] if len(text) > 1 else [text]
        return Reply.events(wire.anthropic_stream(pieces, mid=mid, model=model, input_tokens=inputs))

    # ---- OpenAI Responses ----------------------------------------------------------------

    def _responses(self, body: dict[str, Any]) -> Reply:
        if self._take_failure(str(body.get("model"))) is not None:
            return _openai_rate_limited()
        items = body.get("input") or []
        if isinstance(items, str):
            items = [{"type": "message", "role": "user", "content": items}]
        prompt, results = _responses_turn(items)
        model = str(body.get("model") or "gpt-5.1-codex")
        rid = "resp_" + _digest(_compact(items), model)[:32]
        fmt = (body.get("text") or {}).get("format") or {}
        schema = fmt.get("schema") if fmt.get("type") == "json_schema" else None
        tools = [(t.get("name", ""), t.get("parameters")) for t in body.get("tools") or [] if t.get("name")]
        picked = pick_tool(tools) if results < tool_calls_wanted(prompt) else None
        if picked is not None:
            name, args = picked
            item = {
                "type": "function_call",
                "id": "fc_" + _digest(rid, "fc", str(results))[:32],
                "status": "completed",
                "arguments": _compact(args),
                "call_id": "call_" + _digest(rid, str(results))[:24],
                "name": name,
            }
        else:
            text = _compact(fill_schema(schema)) if schema is not None else answer_text(prompt)
            item = {
                "type": "message",
                "id": "msg_" + _digest(rid, "msg")[:32],
                "status": "completed",
                "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}],
                "role": "assistant",
            }
        inputs = 40 + len(_compact(items)) // 4
        if len(items) >= LONG_HISTORY_ITEMS:
            inputs += LONG_HISTORY_TOKENS
        return Reply.events(responses_stream(rid, model, item, inputs))

    def _responses_compact(self, body: dict[str, Any]) -> Reply:
        items = body.get("input") or []
        prompt, _ = _responses_turn(items if isinstance(items, list) else [])
        summary = answer_text("summarize: " + prompt)
        output = [
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": prompt or "(no prompt)"}],
            },
            {"type": "compaction", "encrypted_content": "gAAAAABfakeEncryptedCompactionSummary=="},
        ]
        return Reply.json(
            _compact(
                {
                    "id": "resp_" + _digest(summary)[:32],
                    "object": "response.compaction",
                    "created_at": wire.CREATED,
                    "output": output,
                    "usage": {
                        "input_tokens": 400,
                        "input_tokens_details": {"cached_tokens": 0},
                        "output_tokens": 60,
                        "output_tokens_details": {"reasoning_tokens": 0},
                        "total_tokens": 460,
                    },
                }
            ).encode()
        )

    # ---- OpenAI Chat Completions ----------------------------------------------------------

    def _chat(self, body: dict[str, Any]) -> Reply:
        if self._take_failure(str(body.get("model"))) is not None:
            return _openai_rate_limited()
        messages = body.get("messages") or []
        prompt, results = _chat_turn(messages)
        model = str(body.get("model") or "gpt-4.1")
        cid = "chatcmpl-" + _digest(_compact(messages), model)[:29]
        fmt = body.get("response_format") or {}
        schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
        tools = [
            ((t.get("function") or {}).get("name", ""), (t.get("function") or {}).get("parameters"))
            for t in body.get("tools") or []
        ]
        picked = pick_tool(tools) if results < tool_calls_wanted(prompt) else None
        prompt_tokens = 40 + len(_compact(messages)) // 4
        if len(messages) >= LONG_HISTORY_ITEMS:
            prompt_tokens += LONG_HISTORY_TOKENS
        usage = wire.openai_usage(prompt=prompt_tokens, completion=20)
        if picked is not None:
            name, args = picked
            raw = _compact(args)
            call = (
                "call_" + _digest(cid, str(results))[:24],
                name,
                [raw[: len(raw) // 2], raw[len(raw) // 2 :]],
            )
            if not body.get("stream"):
                return Reply.json(
                    wire.openai_completion(
                        tool_calls=[(call[0], name, raw)], usage=usage, cid=cid, model=model
                    )
                )
            return Reply.events(wire.openai_stream(tool_calls=[call], usage=usage, cid=cid, model=model))
        text = _compact(fill_schema(schema)) if schema is not None else _chat_text(messages, prompt)
        if not body.get("stream"):
            return Reply.json(wire.openai_completion(text, usage=usage, cid=cid, model=model))
        pieces = [text[: len(text) // 2], text[len(text) // 2 :]] if len(text) > 1 else [text]
        return Reply.events(wire.openai_stream(pieces, usage=usage, cid=cid, model=model))

    # ---- Gemini --------------------------------------------------------------------------

    def _gemini(self, path: str, body: dict[str, Any]) -> Reply:
        if self._take_failure(path.rsplit("/", 1)[-1].split(":", 1)[0]) is not None:
            error = {
                "error": {
                    "code": 429,
                    "message": "Resource has been exhausted (e.g. check quota).",
                    "status": "RESOURCE_EXHAUSTED",
                }
            }
            return Reply.json(json.dumps(error, indent=2).encode(), 429)
        contents = body.get("contents") or []
        prompt, results = _gemini_turn(contents)
        model = path.rsplit("/", 1)[-1].split(":", 1)[0]
        config = body.get("generationConfig") or {}
        schema = config.get("responseJsonSchema") or config.get("responseSchema")
        tools = [
            (d.get("name", ""), d.get("parametersJsonSchema") or d.get("parameters"))
            for t in body.get("tools") or []
            for d in t.get("functionDeclarations") or []
        ]
        picked = pick_tool(tools) if results < tool_calls_wanted(prompt) else None
        if picked is not None:
            parts: list[dict[str, Any]] = [{"functionCall": {"name": picked[0], "args": picked[1]}}]
        elif schema is not None:
            parts = [{"text": _compact(fill_schema(schema))}]
        else:
            parts = [{"text": answer_text(prompt)}]
        inputs = 40 + len(_compact(contents)) // 4
        chunk = {
            "candidates": [
                {"content": {"parts": parts, "role": "model"}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": {
                "promptTokenCount": inputs,
                "candidatesTokenCount": 12,
                "totalTokenCount": inputs + 12,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": inputs}],
            },
            "modelVersion": model,
            "responseId": _digest(_compact(contents), model)[:22],
        }
        if ":streamGenerateContent" in path:
            return Reply.events([f"data: {_compact(chunk)}\r\n\r\n".encode()])
        return Reply.json(json.dumps(chunk, indent=2).encode())


# ---- reading the current turn out of each wire format -----------------------------------------


def _anthropic_turn(messages: list[dict[str, Any]]) -> tuple[str, int]:
    """The newest user text, and how many tool results came after it."""
    results = 0
    for message in reversed(messages):
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        if message.get("role") == "user":
            results += sum(1 for b in blocks if b.get("type") == "tool_result")
            texts = [b.get("text", "") for b in blocks if b.get("type") == "text"]
            real = [t for t in texts if t.strip() and not t.lstrip().startswith("<system-reminder>")]
            if real:
                return real[-1], results
    return "", results


def _responses_turn(items: list[dict[str, Any]]) -> tuple[str, int]:
    results = 0
    for item in reversed(items):
        if item.get("type") in ("function_call_output", "custom_tool_call_output", "local_shell_call_output"):
            results += 1
            continue
        if item.get("role") != "user":
            continue
        content = item.get("content")
        texts = [content] if isinstance(content, str) else [c.get("text", "") for c in content or []]
        real = [
            t
            for t in texts
            if t.strip()
            and not t.lstrip().startswith(
                ("<environment_context", "<user_instructions", "# AGENTS.md", "<permissions")
            )
        ]
        if real:
            return real[-1], results
    return "", results


def _chat_turn(messages: list[dict[str, Any]]) -> tuple[str, int]:
    results = 0
    for message in reversed(messages):
        if message.get("role") == "tool":
            results += 1
            continue
        if message.get("role") != "user":
            continue
        content = message.get("content")
        texts = [content] if isinstance(content, str) else [c.get("text", "") for c in content or []]
        real = [t for t in texts if t and t.strip()]
        if real:
            return real[-1], results
    return "", results


def _chat_text(messages: list[dict[str, Any]], prompt: str) -> str:
    """opencode's title call asks for a bare title in plain text."""
    system = " ".join(
        m["content"] if isinstance(m.get("content"), str) else _compact(m.get("content"))
        for m in messages
        if m.get("role") == "system"
    )
    if "title" in system.lower() and "tool" not in system.lower()[:200]:
        return "Listing the project files"
    return answer_text(prompt)


def _gemini_turn(contents: list[dict[str, Any]]) -> tuple[str, int]:
    results = 0
    for content in reversed(contents):
        parts = content.get("parts") or []
        results += sum(1 for p in parts if "functionResponse" in p)
        if content.get("role", "user") != "user":
            continue
        texts = [p.get("text", "") for p in parts if "text" in p]
        real = [t for t in texts if t.strip()]
        if real:
            return real[-1], results
    return "", results


def _openai_rate_limited() -> Reply:
    error = wire.openai_error(
        "Rate limit reached for requests. Please try again in 1s.", "requests", "rate_limit_exceeded"
    )
    return Reply.json(error, 429, **{"retry-after": "1", "x-request-id": "req_fake429"})


def responses_stream(rid: str, model: str, item: dict[str, Any], inputs: int) -> list[bytes]:
    """The events api.openai.com sends for one output item, each `event:` + `data:` framed."""
    seq = iter(range(1000))
    response: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": wire.CREATED,
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": [],
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": "medium", "summary": None},
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": None,
        "user": None,
        "metadata": {},
    }

    def event(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {_compact({'type': name, 'sequence_number': next(seq), **data})}\n\n".encode()

    events = [
        event("response.created", {"response": response}),
        event("response.in_progress", {"response": response}),
    ]
    if item["type"] == "function_call":
        started = {**item, "status": "in_progress", "arguments": ""}
        events.append(event("response.output_item.added", {"output_index": 0, "item": started}))
        events.append(
            event(
                "response.function_call_arguments.delta",
                {"item_id": item["id"], "output_index": 0, "delta": item["arguments"]},
            )
        )
        events.append(
            event(
                "response.function_call_arguments.done",
                {"item_id": item["id"], "output_index": 0, "arguments": item["arguments"]},
            )
        )
    else:
        text = item["content"][0]["text"]
        started = {**item, "status": "in_progress", "content": []}
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        ids = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        events.append(event("response.output_item.added", {"output_index": 0, "item": started}))
        events.append(event("response.content_part.added", {**ids, "part": part}))
        for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
            events.append(event("response.output_text.delta", {**ids, "delta": piece, "logprobs": []}))
        events.append(event("response.output_text.done", {**ids, "text": text, "logprobs": []}))
        events.append(event("response.content_part.done", {**ids, "part": {**part, "text": text}}))
    events.append(event("response.output_item.done", {"output_index": 0, "item": item}))
    usage = {
        "input_tokens": inputs,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 20,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": inputs + 20,
    }
    done = {**response, "status": "completed", "output": [item], "usage": usage}
    events.append(event("response.completed", {"response": done}))
    return events


# ---- running it ---------------------------------------------------------------------------


class Server:
    """The fake provider on https://127.0.0.1:PORT, its CA written to `ca_file`."""

    def __init__(self, log_path: Path, ca_file: Path) -> None:
        ca = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
        ca.cert_pem.write_to_path(str(ca_file))
        self.ca_file = ca_file
        self.provider = FakeProvider(log_path)
        self.upstream = Upstream(context)
        self.upstream.responder = self.provider

    def start(self) -> Server:
        self.upstream.start()
        return self

    def stop(self) -> None:
        self.upstream.stop()

    @property
    def port(self) -> int:
        return self.upstream.port

    @property
    def url(self) -> str:
        return self.upstream.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, required=True, help="JSONL file the requests are appended to")
    parser.add_argument("--ca", type=Path, default=Path("fake-ca.pem"), help="where the CA certificate goes")
    args = parser.parse_args()
    server = Server(args.log, args.ca).start()
    print(f"fake provider ready url={server.url} ca={args.ca}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
