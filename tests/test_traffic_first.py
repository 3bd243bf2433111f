"""The recording's work waits for the traffic it records, in the sidecar's own event loop.

The sidecar runs in this test's loop, with real mitmproxy, TLS and an upstream in a thread;
the pipeline's turns are made to hold the loop for a while, as a slow machine would. A short
body is held whole (`WHOLE_BODY`), so mitmproxy sends it on only after the recorder's hook:
the request must reach the upstream, and the response the client, before that turn starts.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path

import httpx
import pytest

from addons.pipeline import Pipeline
from proxy.app import Sidecar
from proxy.cli import load_settings
from storage.base import RunFilter
from tests import wire
from tests.conftest import Certs, sidecar_options
from tests.upstream import Reply, Seen, Upstream

HOLD = 0.4  # seconds each pipeline turn holds the loop


async def test_a_slow_recording_turn_runs_after_the_flow_it_records_moved_on(
    tmp_path: Path, upstream: Upstream, certs: Certs, monkeypatch: pytest.MonkeyPatch
) -> None:
    turns: dict[str, float] = {}
    begin, finish = Pipeline._begin, Pipeline._finish

    def held(name: str, work):  # type: ignore[no-untyped-def]
        def slow(self: Pipeline, *args: object) -> None:
            if reached:  # the first call only opens the connections (a connect takes turns)
                turns[name] = time.monotonic()
                time.sleep(HOLD)  # the loop is held: nothing of the traffic moves meanwhile
            work(self, *args)

        return slow

    monkeypatch.setattr(Pipeline, "_begin", held("begin", begin))
    monkeypatch.setattr(Pipeline, "_finish", held("finish", finish))
    answer = wire.openai_completion("on time", usage=wire.openai_usage(3, 2))
    reached: list[float] = []

    def respond(seen: Seen) -> Reply:
        reached.append(time.monotonic())
        return Reply.json(answer)

    upstream.responder = respond
    settings = load_settings(sidecar_options(tmp_path, upstream, certs))
    sidecar = await Sidecar.start(settings)
    try:
        assert sidecar.proxy is not None
        host, port = sidecar.proxy.listen_addrs()[0]

        def calls() -> list[tuple[bytes, float]]:  # a client of its own thread: this loop is the proxy's
            verify = ssl.create_default_context(cafile=settings.confdir / "ca.pem")
            got = []
            with httpx.Client(proxy=f"http://{host}:{port}", verify=verify, timeout=10) as http:
                for question in ("first?", "when?"):  # one keep-alive connection, both ways
                    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": question}]}
                    got.append(
                        (
                            http.post(f"{upstream.url}/v1/chat/completions", json=body).content,
                            time.monotonic(),
                        )
                    )
            return got

        (first, _), (content, received) = await asyncio.to_thread(calls)
        assert first == content == answer
        await sidecar.pipeline.drain()
        # sent on before the turn held the loop: the upstream and the client, each in a thread
        # of its own, get it while the turn is still sleeping
        assert len(reached) == 2 and reached[1] < turns["begin"] + HOLD / 2, "the request waited"
        assert received < turns["finish"] + HOLD / 2, "the response waited for the recording"
        await sidecar.writer.flush()
        runs = await sidecar.store.list_runs(RunFilter(), 10, None)
        assert [run["status"] for run in runs] == ["completed"] * 2
    finally:
        upstream.reset()
        await sidecar.stop()
