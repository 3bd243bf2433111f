"""Drive real coding agents through the real sidecar against the fake provider; save fixtures.

    python tests/realapps/drive.py claude|codex|opencode|gemini|all [--out tests/fixtures/apps]

Each app runs its scenarios (one-shot turn, tool loop, next turn in the same session, a retry,
compaction, the side calls it makes by itself) with a throw-away HOME. Every request the fake
provider saw is saved, redacted, with the reply it got and the truth label decided here from
what the app was asked to do (see `tests/realapps/truth.py`), to
`<out>/<app>/<scenario>.jsonl`. What the sidecar recorded is saved beside it as
`<out>/<app>/recorded.json` for comparison; it is not the truth.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.realapps import apps, truth  # noqa: E402
from tests.realapps.env import Bench  # noqa: E402
from tests.realapps.redact import Redactor  # noqa: E402
from tests.realapps.steps import Scenario  # noqa: E402

FIXTURES = ROOT / "tests/fixtures/apps"


def save(out: Path, app: str, scenarios: list[Scenario], redactor: Redactor) -> None:
    target = out / app
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.jsonl"):
        old.unlink()
    labelled = truth.label(app, [s.calls for s in scenarios])
    for scenario, labels in zip(scenarios, labelled, strict=True):
        lines = []
        for seq, (call, label) in enumerate(zip(scenario.calls, labels, strict=True)):
            line = {
                "seq": seq,
                "at": round(call["started_at"] - scenarios[0].calls[0]["started_at"], 3),
                "method": call["method"],
                "url": call["path"] + (f"?{call['query']}" if call["query"] else ""),
                "headers": call["headers"],
                "body": call["body"],
                "response": call["response"],
                "truth": label,
            }
            lines.append(redactor.apply(json.dumps(line, ensure_ascii=False)))
        (target / f"{scenario.name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        kinds = [label["kind"] for label in labels]
        print(f"  saved {app}/{scenario.name}.jsonl: {len(lines)} calls {kinds}", flush=True)


def drive(app: str, out: Path) -> None:
    started = time.monotonic()
    bench = Bench.create()
    try:
        print(f"{app}: bench in {bench.root}", flush=True)
        scenarios = apps.SCENARIOS[app](bench)
        redactor = Redactor.for_bench(bench, [c for s in scenarios for c in s.calls])
        save(out, app, scenarios, redactor)
        time.sleep(1.5)
        recorded = redactor.apply(json.dumps(bench.sidecar.runs(), ensure_ascii=False, indent=1))
        (out / app / "recorded.json").write_text(recorded + "\n", encoding="utf-8")
    finally:
        bench.close()
    print(f"{app}: done in {time.monotonic() - started:.0f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", choices=[*apps.SCENARIOS, "all"])
    parser.add_argument("--out", type=Path, default=FIXTURES)
    args = parser.parse_args()
    for app in apps.SCENARIOS if args.app == "all" else [args.app]:
        drive(app, args.out)


if __name__ == "__main__":
    main()
