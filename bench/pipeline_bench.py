"""What recording costs per call inside the proxy process, without mitmproxy and the network.

The proxy benchmark's calls (a new chat turn each, streamed or not, the same bytes its upstream
sends) go through the recorder's work after the hooks: `Capture` fed the response chunk by
chunk, then the pipeline (parse, classify, group, track) and the redacting hand-off to a writer
that only keeps the rows. CPU per call is steady here (no client or upstream share the
measurement), so a change to our own code shows in it long before it shows in the proxy bench.

    .venv/bin/python bench/pipeline_bench.py                 # a few seconds
    .venv/bin/python bench/pipeline_bench.py --profile 25    # the top of a cProfile, by self time
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import time
import uuid
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from addons.capture import Capture  # noqa: E402
from addons.exchange import Exchange  # noqa: E402
from addons.pipeline import Pipeline  # noqa: E402
from addons.providers.base import Call  # noqa: E402
from addons.providers.registry import find_api  # noqa: E402
from addons.redact import Redactor  # noqa: E402
from bench.proxy_bench import FAKE_KEY, MODEL, SYSTEM_PROMPT  # noqa: E402
from bench.upstream import COMPLETION, EVENTS  # noqa: E402
from storage.records import Row  # noqa: E402

HOST, PATH = "127.0.0.1", "/v1/chat/completions"
URL = f"https://{HOST}:8443{PATH}"


def request(tag: str, i: int, stream: bool) -> tuple[bytes, list[tuple[str, str]]]:
    body: dict[str, object] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"[{tag}-{i}] Which city is the capital of France?"},
        ],
        "temperature": 0.2,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    raw = orjson.dumps(body)
    headers = [
        ("Host", f"{HOST}:8443"),
        ("Accept", "*/*"),
        ("Accept-Encoding", "gzip, deflate"),
        ("Connection", "keep-alive"),
        ("User-Agent", "python-httpx/0.28.1"),
        ("Authorization", f"Bearer {FAKE_KEY}"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(raw))),
    ]
    return raw, headers


class Calls:
    """Unique chat turns through one pipeline, the way the recorder hands them over."""

    def __init__(self, stream: bool) -> None:
        self.stream = stream
        self.tag = uuid.uuid4().hex[:8]
        self.count = 0
        self.rows = 0
        self.api = find_api("POST", PATH)
        assert self.api is not None
        redactor = Redactor()  # as the writer scrubs each row (here every snapshot: the most it does)
        self.pipeline = Pipeline(lambda row: self.keep(redactor.row(row)))

    def keep(self, row: Row) -> None:
        self.rows += 1

    async def one(self) -> None:
        self.count += 1
        raw, headers = request(self.tag, self.count, self.stream)
        now = time.time()
        call = Call(
            method="POST",
            host=HOST,
            path=PATH,
            headers={k.lower(): v for k, v in headers},
        )
        ex = Exchange(
            flow_id=str(uuid.uuid4()),
            api=self.api,
            provider="openai_compatible",
            call=call,
            url=URL,
            started_at=now,
            request_headers=headers,
            request_body=raw,
            request_size=len(raw),
        )
        self.pipeline.started(ex)
        content_type = "text/event-stream; charset=utf-8" if self.stream else "application/json"
        ex.status = 200
        ex.response_headers = [("Content-Type", content_type), ("Date", "Wed, 02 Dec 2026 00:00:00 GMT")]
        capture = Capture(self.api.response_parser(call, content_type, 200), "", call.capture_limit)
        ex.capture = capture
        for chunk in EVENTS if self.stream else [COMPLETION]:
            capture.tap(chunk)
        capture.tap(b"")
        ex.finished_at = time.time()
        self.pipeline.finished(ex)
        await self.pipeline.drain()


async def measure(stream: bool, calls: int, rounds: int, profile: cProfile.Profile | None) -> list[float]:
    each = Calls(stream)
    each.pipeline.start()
    for _ in range(30):  # warm-up: caches, imports, the first runs
        await each.one()
    per_call = []
    for _ in range(rounds):
        if profile is not None:
            profile.enable()
        started = time.thread_time()
        for _ in range(calls):
            await each.one()
        per_call.append((time.thread_time() - started) / calls * 1e6)
        if profile is not None:
            profile.disable()
    await each.pipeline.close()
    return per_call


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--calls", type=int, default=300, help="calls per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--profile", type=int, metavar="N", help="print the top N functions by self time")
    p.add_argument("--only", choices=("plain", "stream"), help="one kind of call")
    args = p.parse_args()
    profile = cProfile.Profile() if args.profile else None
    kinds = {"plain": (False,), "stream": (True,), None: (False, True)}[args.only]
    for stream in kinds:
        per_call = asyncio.run(measure(stream, args.calls, args.rounds, profile))
        what = "streamed (50 SSE events)" if stream else "non-streamed"
        print(
            f"{what:>26}: {statistics.median(per_call):7.0f} us CPU per call "
            f"(rounds {min(per_call):.0f}-{max(per_call):.0f})"
        )
    if profile is not None:
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
