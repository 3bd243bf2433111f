"""The recorder reads a request's headers once: the joined view it builds is mitmproxy's own."""

from __future__ import annotations

import random

from mitmproxy.http import Headers

from addons.recorder import _joined


def test_joined_headers_are_what_mitmproxy_joins() -> None:
    rnd = random.Random(3)
    repeated = 0
    for _ in range(2000):
        names = ["Host", "X-A", "x-a", "Cookie", "cookie", "X-Chatdebug-Kind"]
        fields = [
            (rnd.choice(names).encode(), rnd.choice(["1", "2", "a b", ""]).encode())
            for _ in range(rnd.randint(0, 6))
        ]
        headers = Headers(fields)
        expected = {k.lower(): v for k, v in headers.items()}
        repeated += len(expected) < len(fields)
        assert _joined(list(headers.items(multi=True))) == expected, fields
    assert repeated > 500  # repeated names, joined, were compared many times
