"""`AnyOf` answers what `any(hint in text for hint in hints)` does, whatever the text's density
in the characters it searches for."""

from __future__ import annotations

import random

from addons.redact import _KEY_HINTS, _NAME_HINTS, AnyOf

ALPHABET = "ab_-AJxEeryzk \\\"':"


def test_any_of_agrees_with_one_scan_per_hint() -> None:
    rnd = random.Random(7)
    hits = 0
    for hints in (_KEY_HINTS, _NAME_HINTS, ("a_b", "-x", "zz", "A")):
        found = AnyOf(hints)
        for _ in range(20_000):
            pieces = [rnd.choice(ALPHABET) * rnd.randint(1, 3) for _ in range(rnd.randint(0, 40))]
            if rnd.random() < 0.3:
                pieces.insert(rnd.randint(0, len(pieces)), rnd.choice(hints))
            text = "".join(pieces) * rnd.choice((1, 1, 30))  # long texts dense in anchors too
            expected = any(h in text for h in hints)
            hits += expected
            assert found(text) == expected, (hints, text)
    assert hits > 10_000  # both answers were given many times
