"""Replay captured app traffic through the product's own recorder and pipeline, in-process.

Each fixture line becomes a mitmproxy flow that goes through `addons.recorder.Recorder` hooks
(request headers, request, response headers, the response stream tap, response) into a real
`addons.pipeline.Pipeline`, in capture order, on the capture's clock. The rows the pipeline
emits are read back per call and compared with the truth label the line carries.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mitmproxy import http
from mitmproxy.test import tflow, tutils

from addons.exchange import Exchange
from addons.pipeline import Pipeline
from addons.recorder import Recorder
from storage.records import AttemptRow, Row, RunRow, StepRow

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures/apps"
HOST, PORT = "127.0.0.1", 9443  # where the fake provider was, as the redacted fixtures say
DIMENSIONS = ("parsed", "kind", "run", "step", "attempt", "conversation")


def apps() -> list[str]:
    return sorted(p.name for p in FIXTURES.iterdir() if p.is_dir() and any(p.glob("*.jsonl")))


def load(app: str) -> list[dict[str, Any]]:
    """Every model call of one app, all scenarios on one timeline, in the order they were sent."""
    calls = []
    for path in sorted((FIXTURES / app).glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            call = json.loads(line)
            if call["truth"].get("kind") is None:
                continue
            call["scenario"] = path.stem
            calls.append(call)
    calls.sort(key=lambda c: c["at"])
    return calls


@dataclass
class Recorded:
    """What the product made of one call."""

    call: dict[str, Any]
    attempt: AttemptRow | None
    step: StepRow | None
    run: RunRow | None

    @property
    def parsed(self) -> bool:
        if self.attempt is None or self.step is None or self.step.request is None:
            return False
        if self.attempt.error_class == "proxy_error":
            return False
        return self.call["response"]["status"] >= 400 or self.attempt.response is not None


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _flow(call: dict[str, Any], started: float) -> http.HTTPFlow:
    body = json.dumps(call["body"], ensure_ascii=False, separators=(",", ":")).encode()
    f = tflow.tflow(
        req=tutils.treq(
            host=HOST,
            port=PORT,
            scheme=b"https",
            method=call["method"].encode(),
            path=call["url"].encode(),
            content=body,
        )
    )
    f.request.headers.clear()
    for name, value in call["headers"].items():
        if name.lower() not in ("content-length", "content-encoding"):  # the body is re-encoded plain
            f.request.headers[name] = value
    f.request.headers["content-length"] = str(len(body))
    f.request.timestamp_start = started
    f.request.timestamp_end = started
    return f


def replay(calls: Iterable[dict[str, Any]]) -> list[Recorded]:
    """Drive the recorder and pipeline with the calls; the rows each produced, per call."""
    rows: list[Row] = []
    pipeline = Pipeline(rows.append)
    recorder = Recorder(pipeline)
    base = time.time()
    clock = _Clock(base)
    pipeline.tracker.clock = clock  # the grouping windows run on the capture's own timeline

    def drain() -> None:
        while not pipeline._queue.empty():
            kind, exchange = pipeline._queue.get_nowait()
            (pipeline._start if kind == "start" else pipeline._finish)(exchange)
            pipeline._queue.task_done()

    attempt_ids: list[str | None] = []
    calls = list(calls)
    for call in calls:
        started = base + call["at"]
        clock.now = started
        pipeline.tracker.tick(started)
        f = _flow(call, started)
        recorder.requestheaders(f)
        recorder.request(f)  # the whole body is on the flow already, as for a body mitmproxy held
        drain()
        reply = call["response"]
        f.response = tutils.tresp(status_code=reply["status"], content=b"")
        f.response.headers.clear()
        for name, value in reply["headers"].items():
            f.response.headers[name] = value
        recorder.responseheaders(f)
        stream = f.response.stream
        chunks = [c.encode() for c in reply["chunks"]]
        if callable(stream):
            for chunk in [*chunks, b""]:
                stream(chunk)
        else:  # a body mitmproxy holds: it is on the flow when the response is
            f.response.raw_content = b"".join(chunks)
        recorder.response(f)
        exchange = f.metadata.get("chatdebug")
        if isinstance(exchange, Exchange):
            exchange.finished_at = started + 0.05  # as the capture's clock, not the replay's, has it
            attempt_ids.append(f"att_{exchange.flow_id.replace('-', '')}")
        else:
            attempt_ids.append(None)
        clock.now = started + 0.05
        drain()
    clock.now = base + (calls[-1]["at"] if calls else 0) + 3600
    pipeline.tracker.tick(clock.now)  # settle pending retries and stale runs
    drain()

    latest: dict[tuple[type, str], Row] = {}
    for row in rows:
        latest[(type(row), row.id)] = row
    out = []
    for call, attempt_id in zip(calls, attempt_ids, strict=True):
        attempt = latest.get((AttemptRow, attempt_id or ""))
        step = latest.get((StepRow, attempt.step_id)) if isinstance(attempt, AttemptRow) else None
        run = latest.get((RunRow, attempt.run_id)) if isinstance(attempt, AttemptRow) else None
        out.append(
            Recorded(
                call,
                attempt if isinstance(attempt, AttemptRow) else None,
                step if isinstance(step, StepRow) else None,
                run if isinstance(run, RunRow) else None,
            )
        )
    return out


# ---- comparing with the truth ---------------------------------------------------------------


def _partition_right(truth: list[Any], recorded: list[Any]) -> list[bool]:
    """Per call: does it share a recorded id with exactly the calls that share its truth label?
    A missing recorded id (None) shares nothing."""
    right = []
    for i, (t, r) in enumerate(zip(truth, recorded, strict=True)):
        ok = True
        for j, (t2, r2) in enumerate(zip(truth, recorded, strict=True)):
            if i == j:
                continue
            same_truth = t == t2
            same_recorded = r is not None and r == r2
            if same_truth != same_recorded:
                ok = False
                break
        right.append(ok and r is not None)
    return right


def verdicts(recorded: list[Recorded]) -> dict[str, list[bool]]:
    """Per dimension, per call: is what the product recorded the truth?"""
    truth = [r.call["truth"] for r in recorded]
    return {
        "parsed": [r.parsed for r in recorded],
        "kind": [r.run is not None and r.run.kind == t["kind"] for r, t in zip(recorded, truth, strict=True)],
        "run": _partition_right([t["run"] for t in truth], [r.run.id if r.run else None for r in recorded]),
        "step": [
            r.step is not None and r.step.number == t["step"] for r, t in zip(recorded, truth, strict=True)
        ],
        "attempt": [
            r.attempt is not None and r.attempt.number == t["attempt"]
            for r, t in zip(recorded, truth, strict=True)
        ],
        "conversation": _partition_right(
            [t["conversation"] for t in truth], [r.run.conversation_id if r.run else None for r in recorded]
        ),
    }


def describe(r: Recorded) -> str:
    t = r.call["truth"]
    got = (
        f"kind={r.run.kind if r.run else None} run={r.run.id[-6:] if r.run else None} "
        f"step={r.step.number if r.step else None} attempt={r.attempt.number if r.attempt else None} "
        f"conv={(r.run.conversation_id or '')[-12:] if r.run else None}"
    )
    return (
        f"{r.call['scenario']}#{r.call['seq']}: truth kind={t['kind']} run={t['run']} step={t['step']} "
        f"attempt={t['attempt']} conv={t['conversation']} | recorded {got}"
    )
