"""One app's scenarios run live, and each captured call paired with what the sidecar's API shows.

The pairing goes by request body: the API's stored request body of an attempt is the body the
fake provider received (identical bodies, such as a retry's, pair in order).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from tests.realapps import apps, truth
from tests.realapps.env import Bench


@dataclass
class LiveRecorded:
    """The API's view of one call, shaped like `replay.Recorded` for `replay.verdicts`."""

    call: dict[str, Any]
    attempt: Any
    step: Any
    run: Any

    @property
    def parsed(self) -> bool:
        if self.attempt is None or self.step is None or self.step.request is None:
            return False
        if (self.attempt.error or {}).get("class") == "proxy_error":
            return False
        return self.call["response"]["status"] >= 400 or self.step.response is not None


def _settle(bench: Bench, timeout: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    runs = bench.sidecar.runs()
    while time.monotonic() < deadline and any(r["status"] == "in_progress" for r in runs):
        time.sleep(0.5)
        runs = bench.sidecar.runs()
    return runs


def _key(body: Any) -> str:
    return json.dumps(body, sort_keys=True, ensure_ascii=False)


def capture(app: str) -> list[LiveRecorded]:
    bench = Bench.create()
    try:
        scenarios = apps.SCENARIOS[app](bench)
        labels = truth.label(app, [s.calls for s in scenarios])
        runs = _settle(bench)
        by_body: dict[str, list[tuple[Any, Any, Any]]] = {}
        for run in runs:
            for step in run["steps"]:
                for attempt in sorted(step["attempts"], key=lambda a: a["started_at"]):
                    stored = bench.sidecar.get(f"/api/v1/attempts/{attempt['id']}")
                    try:
                        body = json.loads(stored.get("request_body") or "null")
                    except ValueError:
                        body = stored.get("request_body")
                    entry = (SimpleNamespace(**run), SimpleNamespace(**step), SimpleNamespace(**attempt))
                    by_body.setdefault(_key(body), []).append(entry)
        for pairs in by_body.values():
            pairs.sort(key=lambda e: e[2].started_at)
        out = []
        for scenario, scenario_labels in zip(scenarios, labels, strict=True):
            for seq, (call, label) in enumerate(zip(scenario.calls, scenario_labels, strict=True)):
                if label.get("kind") is None:
                    continue
                line = {**call, "truth": label, "scenario": scenario.name, "seq": seq}
                found = by_body.get(_key(call["body"])) or []
                run, step, attempt = found.pop(0) if found else (None, None, None)
                out.append(LiveRecorded(line, attempt, step, run))
        return out
    finally:
        bench.close()
