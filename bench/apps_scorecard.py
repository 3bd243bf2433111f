"""How well the product records real coding agents: fixtures replayed, compared with the truth.

    python bench/apps_scorecard.py [--verbose]

Every call captured from Claude Code, Codex CLI, opencode and Gemini CLI (tests/fixtures/apps,
made by tests/realapps/drive.py) is replayed through the recorder and pipeline in-process, and
each dimension is scored per application as right/total: parsed (request and response
normalized, no proxy error), kind, run, step, attempt, conversation. Run and conversation are
compared as partitions: calls with the same truth label must share the recorded id, calls with
different labels must not. A scorecard, not a test: the exit code is always 0.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.realapps.replay import DIMENSIONS, apps, describe, load, replay, verdicts  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", "-v", action="store_true", help="list every call a dimension got wrong")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    width = max(len(d) for d in DIMENSIONS) + 2
    print(f"{'app':<10}{'calls':>6}" + "".join(f"{d:>{width + 3}}" for d in DIMENSIONS))
    wrong: list[str] = []
    for app in apps():
        recorded = replay(load(app))
        scores = verdicts(recorded)
        cells = "".join(f"{f'{sum(v)}/{len(v)}':>{width + 3}}" for v in scores.values())
        print(f"{app:<10}{len(recorded):>6}{cells}")
        for dimension, marks in scores.items():
            pairs = zip(recorded, marks, strict=True)
            wrong += [f"{app} {dimension}: {describe(r)}" for r, ok in pairs if not ok]
    if args.verbose:
        print()
        print("\n".join(wrong) or "nothing wrong")
    return 0


if __name__ == "__main__":
    sys.exit(main())
