"""`chatdebug runs | show | tail | export`: recorded runs for people at a terminal.

Output is made with rich: tables and trees that fit 80 columns, colour only on a terminal
(rich leaves it out when stdout is not a tty, or under NO_COLOR).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from rich import box
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from proxy.api import models as m
from proxy.api.viewer import present
from proxy.readers import Reader, ReadError, open_reader
from storage.records import timestamp

COMMANDS = ("runs", "show", "tail", "export")
STATUS_STYLE = {
    "completed": "green", "error": "red", "failed": "red", "interrupted": "yellow", "in_progress": "magenta",
}  # fmt: skip
KIND_SHORT = {"chat_turn": "turn", "compaction": "compact", "title_generation": "title", "quickgen": "quick"}
RUN_FILTERS = ("kind", "status", "conversation_id", "provider", "model", "since", "until", "q")
Handler = Callable[[argparse.Namespace, Reader, Console], int]


def _source_flags(p: argparse.ArgumentParser) -> None:
    where = p.add_argument_group("where to read")
    where.add_argument("--database", default=os.environ.get("CHATDEBUG_DATABASE"),
                       help="the store to read (sqlite:///chatdebug.db)")  # fmt: skip
    where.add_argument(
        "--api", metavar="URL", help="a running sidecar's API instead, e.g. http://127.0.0.1:8081"
    )
    where.add_argument("--api-token", default=os.environ.get("CHATDEBUG_API_TOKEN"), help="its bearer token")


def _filter_flags(p: argparse.ArgumentParser) -> None:
    f = p.add_argument_group("filters (as GET /api/v1/runs)")
    f.add_argument("--kind", choices=m.Kind.__args__)
    f.add_argument("--status", choices=m.Status.__args__)
    f.add_argument("--conversation", dest="conversation_id", metavar="ID")
    f.add_argument("--provider")
    f.add_argument("--model")
    f.add_argument("--since", metavar="TIME", help="RFC 3339, e.g. 2026-12-01T00:00:00Z")
    f.add_argument("--until", metavar="TIME")
    f.add_argument("--errors", dest="has_error", action="store_const", const="true", help="only failed runs")
    f.add_argument("-q", dest="q", metavar="TEXT", help="text in the prompt")


def add_commands(subparsers: Any) -> None:
    """Register the commands on an argparse sub-parser set; each sets `handler`."""
    runs = subparsers.add_parser("runs", help="a table of recent runs")
    _filter_flags(runs)
    runs.add_argument("--limit", type=int, default=30)
    runs.set_defaults(handler=cmd_runs)
    show = subparsers.add_parser("show", help="a run's steps and attempts as a tree with the transcript")
    show.add_argument("run_id")
    show.add_argument("--full", action="store_true", help="every message, system prompt and tools too")
    show.set_defaults(handler=cmd_show)
    tail = subparsers.add_parser("tail", help="runs as they happen")
    tail.add_argument("--kind", choices=m.Kind.__args__)
    tail.add_argument("-n", "--lines", type=int, default=10, help="recent runs shown first (10)")
    tail.set_defaults(handler=cmd_tail)
    export = subparsers.add_parser("export", help="runs as a JSON document")
    export.add_argument("run_id", nargs="?")
    _filter_flags(export)
    export.add_argument("--format", default="json", choices=("json", "har", "otlp-json"))
    export.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    export.set_defaults(handler=cmd_export)
    for p in (runs, show, tail, export):
        _source_flags(p)


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="chatdebug", description="Recorded runs at a terminal.")
    add_commands(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    return run_command(args)


def run_command(args: argparse.Namespace) -> int:
    console = Console(highlight=False)
    try:
        reader = open_reader(args.database, args.api, args.api_token)
    except ReadError as e:
        print(f"chatdebug: {e}", file=sys.stderr)
        return 1
    try:
        return args.handler(args, reader, console)
    except ReadError as e:
        print(f"chatdebug: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        reader.close()


# ---- runs -----------------------------------------------------------------------------------------


def _query(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    given = {name: getattr(args, name, None) for name in (*RUN_FILTERS, "has_error")}
    return {k: v for k, v in {**given, **extra}.items() if v is not None}


SHORT_STATUS = {"completed": "ok", "in_progress": "running", "interrupted": "cut"}


def _status(status: str, short: bool = False) -> Text:
    label = SHORT_STATUS.get(status, status) if short else status.replace("in_progress", "running")
    return Text(label, style=STATUS_STYLE.get(status, ""))


def _cost(run: dict[str, Any]) -> str:
    return present.money(run["cost"]["total"] if run.get("cost") else None)


def runs_table(runs: list[dict[str, Any]]) -> Table:
    """One run in two lines (its id, then its prompt) so that 80 columns hold the numbers too."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0))
    id_width = max((len(r["id"]) for r in runs), default=8)
    table.add_column("run · started, prompt", no_wrap=True, min_width=id_width, max_width=id_width)
    table.add_column("kind", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("steps", justify="right", no_wrap=True)
    table.add_column("tokens", justify="right", no_wrap=True)
    table.add_column("cost", justify="right", no_wrap=True)
    for run in runs:
        prompt = " ".join((run.get("prompt") or run.get("first_message") or "").split())
        prompt = f"{present.short_time(run['started_at'])[6:]} {prompt}"
        if len(prompt) > id_width:
            prompt = prompt[: id_width - 1] + "…"
        label = Text(run["id"], style="bold")
        label.append("\n" + prompt, style="")
        steps = str(run["step_count"])
        if run["attempt_count"] > run["step_count"]:
            steps += f"/{run['attempt_count']}"
        table.add_row(
            label,
            KIND_SHORT.get(run["kind"], run["kind"]),
            _status(run["status"], short=True),
            steps,
            present.tokens(run["usage"]["total_tokens"]),
            _cost(run),
        )
    return table


def cmd_runs(args: argparse.Namespace, reader: Reader, console: Console) -> int:
    page = reader.runs(_query(args, limit=args.limit))
    if not page["runs"]:
        console.print("no runs match")
        return 0
    console.print(runs_table(page["runs"]))
    if page["next_cursor"]:
        console.print(Text(f"older runs: --until {page['runs'][-1]['started_at']}", style="dim"))
    return 0


# ---- show -----------------------------------------------------------------------------------------


def _clip(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _inline(value: Any) -> str:
    return _clip(value if isinstance(value, str) else orjson.dumps(value).decode(), 200)


def _part(part: dict[str, Any]) -> Text:
    kind = part.get("type")
    if kind == "text":
        return Text(_clip(part["text"]))
    if kind == "reasoning":
        return Text(f"(reasoning) {_clip(part['text'], 200)}", style="dim italic")
    if kind == "tool_call":
        return Text(f"→ {part['name']}({_inline(part['arguments'])})", style="cyan")
    if kind == "tool_result":
        return Text(f"← {part['id']}: {_inline(part['result'])}", style="green")
    if kind == "media":
        return Text(f"[{part.get('media_type')} · {part.get('size')} bytes]", style="dim")
    return Text(_clip(present.json_text(part), 200), style="dim")


def _message(tree: Tree, message: dict[str, Any]) -> None:
    node = tree.add(Text(message["role"], style="bold blue" if message["role"] == "user" else "bold"))
    for part in message.get("parts") or []:
        node.add(_part(part))


def _attempt_line(attempt: dict[str, Any]) -> Text:
    line = Text(f"attempt {attempt['number']} ")
    line.append_text(_status(attempt["status"]))
    line.append(f"  HTTP {attempt['http_status'] or '-'}")
    if attempt.get("ttfb_ms") is not None:
        line.append(f"  first byte {present.duration(attempt['ttfb_ms'])}")
    line.append(f"  {present.duration(attempt.get('duration_ms'))}")
    return line


def _usage(usage: dict[str, Any] | None, cost: dict[str, Any] | None) -> str:
    u = usage or {}
    split = " · ".join(f"{label} {present.tokens(u.get(key, 0))}" for label, key in present.USAGE_PARTS)
    return f"tokens: {split} · cost {present.money(cost['total'] if cost else None)}"


def run_tree(run: dict[str, Any], full: bool = False) -> Tree:
    head = Text(f"{run['id']}  ", style="bold")
    head.append(f"{run['kind']}  ")
    head.append_text(_status(run["status"]))
    tree = Tree(head)
    tree.add(f"{run.get('provider')} · {run.get('api')} · {run.get('model')}")
    took = present.duration(present.span_ms(run["started_at"], run["finished_at"]))
    tree.add(f"started {run['started_at']} · {took}")
    if run.get("conversation_id"):
        tree.add(f"conversation {run['conversation_id']} ({run.get('conversation_source') or '?'})")
    tree.add(Text(f"prompt: {_clip(run.get('prompt') or '', 300)}"))
    tree.add(_usage(run["usage"], run.get("cost")))
    if run.get("error"):
        tree.add(Text(f"error {run['error']['class']}: {run['error']['message']}", style="red"))
    previous: dict[str, Any] | None = None
    for step in run.get("steps", []):
        request = step.get("request") or {}
        label = Text(f"step {step['number']} ", style="bold")
        label.append_text(_status(step["status"]))
        label.append(f"  {present.duration(present.span_ms(step['started_at'], step['finished_at']))}")
        node = tree.add(label)
        for attempt in step["attempts"]:
            line = node.add(_attempt_line(attempt))
            if attempt.get("retry_signal"):
                line.add(Text(f"retry: {attempt['retry_signal']}", style="yellow"))
            if attempt.get("error"):
                line.add(Text(f"{attempt['error']['class']}: {attempt['error']['message']}", style="red"))
        diff = present.step_diff(previous, request)
        previous = request
        if full:
            sent = node.add("request")
            if request.get("system"):
                sent.add(Text(f"system: {_clip(present.json_text(request['system']), 300)}", style="dim"))
            if request.get("tools"):
                sent.add(Text("tools: " + ", ".join(t["name"] for t in request["tools"]), style="dim"))
            messages = request.get("messages") or []
        else:
            note = f"new in this request: {len(diff.added)} message(s)"
            if step["number"] > 1:
                note += f", {diff.kept} carried over" + (", history rewritten" if diff.rewritten else "")
            sent = node.add(note)
            messages = diff.added
        for message in messages:
            _message(sent, message)
        response = step.get("response")
        if response:
            answer = node.add(Text(f"response ({response.get('finish_reason')})", style="bold"))
            for part in response.get("content") or []:
                answer.add(_part(part))
        if step.get("error"):
            node.add(Text(f"error {step['error']['class']}: {step['error']['message']}", style="red"))
        node.add(_usage(step.get("usage"), step.get("cost")))
    return tree


def cmd_show(args: argparse.Namespace, reader: Reader, console: Console) -> int:
    console.print(run_tree(reader.run(args.run_id), full=args.full))
    return 0


# ---- tail -----------------------------------------------------------------------------------------


def tail_line(run: dict[str, Any]) -> Text:
    line = Text(f"{present.short_time(run['updated_at'])[6:]} ", style="dim")
    line.append_text(_status(run["status"]))
    line.append(f" {KIND_SHORT.get(run['kind'], run['kind'])} {run['id']} ")
    line.append(f"{run['step_count']} step(s) {present.tokens(run['usage']['total_tokens'])} tok ")
    prompt = (run.get("prompt") or run.get("first_message") or "").replace("\n", " ")
    line.append(prompt[:60])
    if run.get("error"):
        line.append(f" {run['error']['class']}", style="red")
    return line


def cmd_tail(args: argparse.Namespace, reader: Reader, console: Console) -> int:
    """Like tail(1): the last few runs first, then each run as it starts and as it ends."""
    start = timestamp(time.time())
    shown: dict[str, str] = {}

    def show(run: dict[str, Any]) -> None:
        if (args.kind and run["kind"] != args.kind) or shown.get(run["id"]) == run["status"]:
            return  # one line per status a run reaches, not one per row written
        shown[run["id"]] = run["status"]
        console.print(tail_line(run), soft_wrap=True)
        console.file.flush()  # a pipe is block-buffered: each run shows when it happens

    recent = reader.runs({"limit": args.lines, **({"kind": args.kind} if args.kind else {})})["runs"]
    for run in reversed(recent):
        show(run)
    for run in reader.follow():
        if run["updated_at"] >= start or run["id"] in shown:  # the event stream replays older changes
            show(run)
    return 0


# ---- export ---------------------------------------------------------------------------------------


def _formatter(name: str) -> Callable[[list[dict[str, Any]]], Any] | None:
    """`har` (one HAR 1.2 log of every run) and `otlp-json` (their traces) from `proxy.exports`."""
    if name == "json":
        return None
    from proxy import exports

    def runs(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [d.get("run", d) for d in documents]

    if name == "har":
        return lambda documents: exports.har(runs(documents))
    return lambda documents: {
        "resourceSpans": [
            span for run in runs(documents) for span in exports.document(run, "otlp-json")["resourceSpans"]
        ]
    }


def cmd_export(args: argparse.Namespace, reader: Reader, console: Console) -> int:
    query = _query(args)
    if args.run_id is None and not query:
        raise ReadError("export: give a RUN_ID, or filters such as --since")
    formatter = _formatter(args.format)
    documents = [reader.export(args.run_id)] if args.run_id else _export_many(reader, query)
    if formatter is not None:
        output: Any = formatter(documents)
    elif args.run_id:
        output = documents[0]
    else:
        output = {"version": 1, "exported_at": timestamp(time.time()), "runs": [d["run"] for d in documents]}
    data = output if isinstance(output, bytes) else orjson.dumps(output, option=orjson.OPT_INDENT_2)
    if args.output:
        with open(args.output, "wb") as f:
            f.write(data + b"\n")
    else:
        sys.stdout.buffer.write(data + b"\n")
    return 0


def _export_many(reader: Reader, query: dict[str, Any]) -> list[dict[str, Any]]:
    """Every matching run, page by page; progress on stderr when it is a terminal."""
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page = reader.runs({**query, "limit": m.MAX_LIMIT, **({"cursor": cursor} if cursor else {})})
        ids += [r["id"] for r in page["runs"]]
        if not (cursor := page["next_cursor"]):
            break
    documents = []
    stderr = Console(stderr=True)
    with Progress(console=stderr, transient=True, disable=not stderr.is_terminal) as progress:
        task = progress.add_task("exporting runs", total=len(ids))
        for run_id in reversed(ids):  # oldest first
            documents.append(reader.export(run_id))
            progress.advance(task)
    return documents
