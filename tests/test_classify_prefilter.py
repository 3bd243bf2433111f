"""The classifier's word tests before its patterns never change a verdict: every text a pattern
matches contains one of the words that stand guard before it."""

from __future__ import annotations

import random
import re

from addons import classify

GUARDED = [
    (classify._TITLE_ASK, classify._TITLE_WORDS),
    (classify._SUMMARY_ASK, classify._SUMMARY_WORDS),
    (classify._ARTIFACT_ASK, classify._ARTIFACT_WORDS),
]
# the patterns' own words, so generated texts reach their matches, plus the glue between them
WORDS = sorted({w for pattern, _ in GUARDED for w in re.findall(r"[a-z]+", pattern.pattern)})
GLUE = ["-", " ", "1", "10", ".", "the", "of", "a", "an", "s", "ing", "e", "ise", "hand", "off", "line"]
GLUE += ["up", "with", "only", "json", "you", "are", "3-5"]


def texts(count: int, seed: int = 1) -> list[str]:
    rnd = random.Random(seed)
    tokens = WORDS + GLUE
    return [
        "".join(rnd.choice(tokens) + rnd.choice([" ", "", " ", "-"]) for _ in range(rnd.randint(1, 12)))
        for _ in range(count)
    ]


def test_a_match_contains_a_guard_word() -> None:
    matched = [0] * len(GUARDED)
    for text in texts(100_000):
        for i, (pattern, words) in enumerate(GUARDED):
            if pattern.search(text):
                matched[i] += 1
                assert any(w in text for w in words), (pattern.pattern[:40], text)
    assert all(n >= 100 for n in matched), matched  # every pattern was reached, many times
