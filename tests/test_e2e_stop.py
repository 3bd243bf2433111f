"""SIGTERM with keep-alive clients and streams in flight, against the real sidecar process.

A stop refuses new calls (idle keep-alive connections are closed, responses that start now say
`Connection: close`), lets the calls in flight finish, records them as they ended, and says
nothing alarming on the way out.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import orjson

from proxy.mitm import IDLE_AFTER_STOP
from tests import wire
from tests.conftest import FAKE_OPENAI_KEY, Sidecar, unique
from tests.test_e2e_record import trusting
from tests.test_e2e_resilience import db_runs
from tests.upstream import Gate, Reply, Seen, Upstream

STREAMS = 3  # answering when SIGTERM arrives


@dataclass
class Call:
    content: str
    first_chunk: threading.Event = field(default_factory=threading.Event)
    headers: httpx.Headers | None = None
    body: bytes = b""
    error: BaseException | None = None


def client(sidecar: Sidecar) -> httpx.Client:
    return httpx.Client(proxy=sidecar.proxy_url, verify=trusting(sidecar), timeout=60)


def body(content: str, *, stream: bool) -> bytes:
    return orjson.dumps(
        {"model": "gpt-4.1", "messages": [{"role": "user", "content": content}], "stream": stream}
    )


def stream_call(http: httpx.Client, url: str, call: Call) -> None:
    try:
        headers = {"Authorization": f"Bearer {FAKE_OPENAI_KEY}", "Content-Type": "application/json"}
        with http.stream("POST", url, content=body(call.content, stream=True), headers=headers) as response:
            call.headers = response.headers
            for chunk in response.iter_raw():
                call.body += chunk
                call.first_chunk.set()
    except BaseException as e:
        call.error = e
        call.first_chunk.set()


def quiet_while_stopping() -> None:
    """Hold the streams silent for longer than an idle connection is given on stop: one the
    drain wrongly took for idle would be closed now, under its stream."""
    time.sleep(IDLE_AFTER_STOP * 4)


def wait_for(condition: Callable[[], bool], what: str, sidecar: Sidecar, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{sidecar.log()[-3000:]}"
        time.sleep(0.02)


def test_sigterm_finishes_streams_in_flight_and_refuses_new_calls(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream
) -> None:
    sidecar = own_sidecar("--stop-grace", "60")  # the test decides when the streams end
    marker = unique("drain")
    url = f"{upstream.url}/v1/chat/completions"
    release = threading.Event()
    events = wire.openai_stream(["all ", "of ", "it"], usage=wire.openai_usage(5, 3))

    def respond(seen: Seen) -> Reply:
        if b" late" in seen.body:
            # no response header may leave before the release: the fake provider's loop waits
            # here (the streams above already have theirs, and wait on their gates after it)
            release.wait(30)
            return Reply.events(events)
        if b" stream " in seen.body:
            return Reply(
                200, {"Content-Type": "text/event-stream"}, [events[0], Gate(release, 30), *events[1:]]
            )
        return Reply.json(wire.openai_completion("fine", usage=wire.openai_usage(5, 1)))

    upstream.responder = respond

    # a client that made one call and keeps its connection open for the next
    idle = client(sidecar)
    auth = {"Authorization": f"Bearer {FAKE_OPENAI_KEY}"}
    first = idle.post(url, content=body(f"{marker} idle", stream=False), headers=auth)
    assert first.status_code == 200 and first.headers.get("connection") != "close"

    streams = [Call(f"{marker} stream {i}") for i in range(STREAMS)]
    late = Call(f"{marker} late")  # sent, but its response has not started when SIGTERM arrives
    calls = [*streams, late]
    streaming = client(sidecar)
    threads = [threading.Thread(target=stream_call, args=(streaming, url, c)) for c in calls]
    for thread in threads[:STREAMS]:
        thread.start()
    wait_for(lambda: all(c.first_chunk.is_set() for c in streams), "the streams to start", sidecar)
    threads[-1].start()
    wait_for(
        lambda: any(late.content.encode() in s.body for s in upstream.seen), "the late call upstream", sidecar
    )

    sidecar.process.send_signal(signal.SIGTERM)
    wait_for(lambda: "stopping" in sidecar.log(), "the stop to begin", sidecar)

    # the idle keep-alive connection is closed and the listener too: a new call is refused
    refused: BaseException | None = None
    try:
        idle.post(url, content=body(f"{marker} refused", stream=False), headers=auth)
    except httpx.TransportError as e:
        refused = e
    assert refused is not None, "a call made after SIGTERM was served"
    assert not any(f"{marker} refused".encode() in s.body for s in upstream.seen)

    quiet_while_stopping()
    release.set()
    for thread in threads:
        thread.join(30)
    for call in calls:
        assert call.error is None, f"{call.content}: {call.error!r}"
        assert call.body.endswith(b"data: [DONE]\n\n"), call.body
    # its response started after SIGTERM: the last on its connection
    assert late.headers is not None and late.headers.get("connection") == "close"

    assert sidecar.process.wait(30) == 0
    runs = db_runs(sidecar, marker)
    assert runs == {f"{marker} idle": "completed"} | {c.content: "completed" for c in calls}
    log = sidecar.log()
    assert "Traceback" not in log and "CancelledError" not in log, log[-3000:]
    assert "stopped;" in log
    idle.close()
    streaming.close()


def test_calls_still_running_after_the_grace_period_are_cut_and_recorded(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream
) -> None:
    sidecar = own_sidecar("--stop-grace", "0.5")
    marker = unique("cut")
    url = f"{upstream.url}/v1/chat/completions"
    never = threading.Event()
    events = wire.openai_stream(["never ", "ends"])
    upstream.responder = lambda seen: Reply(
        200, {"Content-Type": "text/event-stream"}, [events[0], Gate(never, 30), *events[1:]]
    )
    calls = [Call(f"{marker} stream {i}") for i in range(STREAMS)]
    streaming = client(sidecar)
    threads = [threading.Thread(target=stream_call, args=(streaming, url, c)) for c in calls]
    for thread in threads:
        thread.start()
    wait_for(lambda: all(c.first_chunk.is_set() for c in calls), "the streams to start", sidecar)

    sidecar.process.send_signal(signal.SIGTERM)
    assert sidecar.process.wait(30) == 0
    never.set()
    for thread in threads:
        thread.join(30)
    assert all(c.error is not None for c in calls)  # cut: the clients see the connection end
    runs = db_runs(sidecar, marker)
    assert set(runs) == {c.content for c in calls}  # every cut call is recorded, as it ended
    assert "in_progress" not in runs.values()
    log = sidecar.log()
    assert "Traceback" not in log and "CancelledError" not in log, log[-3000:]
    streaming.close()


def test_an_http2_stream_in_flight_finishes_after_sigterm(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream
) -> None:
    """curl speaks h2 to the proxy (httpx would pick HTTP/1.1): the stream's connection is
    closed once the stream has ended, not before."""
    sidecar = own_sidecar("--stop-grace", "60")
    marker = unique("drain-h2")
    release = threading.Event()
    events = wire.openai_stream(["over ", "h2"], usage=wire.openai_usage(5, 2))
    upstream.responder = lambda seen: Reply(
        200, {"Content-Type": "text/event-stream"}, [events[0], Gate(release, 30), *events[1:]]
    )
    curl = subprocess.Popen(
        [
            "curl", "-sS", "-N", "--http2", "-x", sidecar.proxy_url, "--cacert", str(sidecar.ca_file),
            "-H", f"Authorization: Bearer {FAKE_OPENAI_KEY}", "-H", "Content-Type: application/json",
            "-d", body(marker, stream=True).decode(), "-w", "\n%{http_version}",
            f"{upstream.url}/v1/chat/completions",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(upstream.sent_first.is_set, "the stream to start", sidecar)
        sidecar.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "stopping" in sidecar.log(), "the stop to begin", sidecar)
        quiet_while_stopping()
        release.set()
        out, err = curl.communicate(timeout=30)
    finally:
        release.set()
        if curl.poll() is None:
            curl.kill()
    assert curl.returncode == 0, err
    assert out == b"".join(events) + b"\n2", out[-300:]
    assert sidecar.process.wait(30) == 0
    assert db_runs(sidecar, marker) == {marker: "completed"}
    log = sidecar.log()
    assert "Traceback" not in log and "CancelledError" not in log, log[-3000:]
