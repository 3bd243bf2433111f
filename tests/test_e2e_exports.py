"""Exports of recorded runs: HAR 1.2 (validated against the specification's schema), OTLP/JSON
and the time-window export, from SDK traffic through the real sidecar."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
from google.protobuf.json_format import ParseDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from proxy.exports import export_window
from storage.base import RunFilter
from storage.records import timestamp
from storage.sqlite import SqliteStore
from tests import wire
from tests.conftest import FAKE_OPENAI_KEY, Sidecar, unique
from tests.test_e2e_record import openai_client
from tests.upstream import Reply, Upstream

HAR_SCHEMA = jsonschema_rs.validator_for(
    json.loads((Path(__file__).parent / "fixtures" / "har-1.2.schema.json").read_text())
)


def har_errors(document: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in HAR_SCHEMA.iter_errors(document)]


def retried_and_streamed(sidecar: Sidecar, upstream: Upstream, marker: str) -> None:
    """One run whose step was retried (429, then 200), one streamed run."""
    upstream.push(
        Reply.json(
            wire.openai_error("Rate limit reached", "requests", "rate_limit_exceeded"),
            429,
            **{"retry-after-ms": "20"},
        ),
        Reply.json(wire.openai_completion(f"fine {marker}", usage=wire.openai_usage(9, 3))),
        Reply.events(wire.openai_stream(text=["Str", "eamed"], usage=wire.openai_usage(7, 2))),
    )
    client = openai_client(sidecar, upstream, max_retries=2)
    client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": f"{marker} retried"}]
    )
    stream = client.chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "user", "content": f"{marker} streamed"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Streamed"


def test_har_of_a_retried_run_is_valid_and_carries_what_was_recorded(
    sidecar: Sidecar, upstream: Upstream
) -> None:
    marker = unique("har")
    retried_and_streamed(sidecar, upstream, marker)
    streamed, retried = sidecar.wait_runs(2, q=marker)
    response = httpx.get(
        f"{sidecar.api_url}/api/v1/runs/{retried['id']}/export", params={"format": "har"}, timeout=10
    )
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == f'attachment; filename="{retried["id"]}.har"'
    har = response.json()
    assert har_errors(har) == []
    log = har["log"]
    assert log["version"] == "1.2" and log["creator"]["name"] == "chatdebug-proxy"
    assert [p["id"] for p in log["pages"]] == [retried["id"]]
    (step,) = sidecar.run(retried["id"])["steps"]
    first, second = log["entries"]
    assert [e["pageref"] for e in log["entries"]] == [retried["id"]] * 2
    for entry, attempt in zip(log["entries"], step["attempts"], strict=True):
        detail = sidecar.get(f"/api/v1/attempts/{attempt['id']}")
        assert entry["startedDateTime"] == attempt["started_at"]
        assert entry["request"]["url"] == attempt["url"]
        assert entry["request"]["postData"]["text"] == detail["request_body"]
        assert entry["response"]["content"]["text"] == detail["response_body"]
        headers = {h["name"]: h["value"] for h in entry["request"]["headers"]}
        assert headers == attempt["request_headers"]
        assert headers["authorization"] == "[REDACTED]"
        assert FAKE_OPENAI_KEY not in json.dumps(entry)
        timings = entry["timings"]
        assert entry["time"] == pytest.approx(sum(v for v in timings.values() if v >= 0))
        assert entry["time"] == pytest.approx(attempt["duration_ms"])
        assert timings["wait"] == pytest.approx(attempt["ttfb_ms"])
    assert (first["response"]["status"], second["response"]["status"]) == (429, 200)
    assert first["_chatdebug"]["error"]["class"] == "rate_limited"
    assert (
        json.loads(second["response"]["content"]["text"])["choices"][0]["message"]["content"]
        == f"fine {marker}"
    )

    har = sidecar.get(f"/api/v1/runs/{streamed['id']}/export", format="har")
    assert har_errors(har) == []
    (entry,) = har["log"]["entries"]
    assert entry["response"]["content"]["mimeType"].startswith("text/event-stream")
    assert "data: [DONE]" in entry["response"]["content"]["text"]


def test_the_schema_rejects_what_is_not_har() -> None:
    """The fixture has teeth: a HAR missing the specification's required fields fails it."""
    assert (
        har_errors({"log": {"version": "1.2", "creator": {"name": "x", "version": "1"}, "entries": []}}) == []
    )
    broken = {"log": {"version": "1.2", "creator": {"name": "x"}, "entries": [{"time": -3}]}}
    errors = har_errors(broken)
    assert any("version" in e for e in errors) and any("request" in e for e in errors)


def test_otlp_json_and_default_json_downloads(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("otlpjson")
    retried_and_streamed(sidecar, upstream, marker)
    _, retried = sidecar.wait_runs(2, q=marker)
    document = sidecar.get(f"/api/v1/runs/{retried['id']}/export", format="otlp-json")
    (resource_spans,) = document["resourceSpans"]
    spans = resource_spans["scopeSpans"][0]["spans"]
    assert [s["name"] for s in spans] == ["chat_turn gpt-4.1", "chat gpt-4.1", "POST", "POST"]
    for span in spans:
        assert len(span["traceId"]) == 32 and int(span["traceId"], 16)  # hex, as OTLP/JSON says
        assert len(span["spanId"]) == 16 and int(span["spanId"], 16)
        assert int(span["startTimeUnixNano"]) <= int(span["endTimeUnixNano"])
    assert [s["kind"] for s in spans] == [1, 3, 3, 3]  # enums as integers
    step_attrs = {a["key"]: a["value"] for a in spans[1]["attributes"]}
    assert marker in step_attrs["gen_ai.input.messages"]["stringValue"]  # content unless content=false
    bare = sidecar.get(f"/api/v1/runs/{retried['id']}/export", format="otlp-json", content="false")
    assert "gen_ai.input.messages" not in json.dumps(bare)
    # the protobuf JSON mapping (ids as base64) reads it back as an ExportTraceServiceRequest
    for span in spans:
        for key in ("traceId", "spanId", "parentSpanId"):
            if key in span:
                span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    request = ParseDict(document, ExportTraceServiceRequest())
    retry = request.resource_spans[0].scope_spans[0].spans[3]
    assert {a.key: a.value.int_value for a in retry.attributes}["http.request.resend_count"] == 1

    default = sidecar.get(f"/api/v1/runs/{retried['id']}/export")
    assert default["version"] == 1 and default["run"]["id"] == retried["id"]
    assert default["run"]["steps"][0]["attempts"][1]["response_body"]
    bad = httpx.get(
        f"{sidecar.api_url}/api/v1/runs/{retried['id']}/export", params={"format": "pcap"}, timeout=10
    )
    assert bad.status_code == 400 and "format" in bad.json()["error"]["message"]


async def test_time_window_export_streams_oldest_first_with_progress(
    own_sidecar: Callable[..., Sidecar], upstream: Upstream
) -> None:
    sidecar = own_sidecar()
    since = timestamp(time.time() - 1)
    marker = unique("window")
    retried_and_streamed(sidecar, upstream, marker)
    newest, oldest = sidecar.wait_runs(2, q=marker)
    assert sidecar.stop() == 0
    store = SqliteStore(str(sidecar.db_path))
    await store.open()
    try:
        chunks: list[bytes] = []
        progress: list[tuple[int, int]] = []
        count = await export_window(
            store, "json", chunks.append, since=since, progress=lambda d, t: progress.append((d, t))
        )
        assert count == 2 and progress == [(1, 2), (2, 2)]
        lines = b"".join(chunks).splitlines()
        assert [json.loads(line)["run"]["id"] for line in lines] == [oldest["id"], newest["id"]]

        chunks.clear()
        assert await export_window(store, "otlp-json", chunks.append, since=since, page_size=1) == 2
        roots = [
            json.loads(line)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
            for line in b"".join(chunks).splitlines()
        ]
        assert [r["name"] for r in roots] == ["chat_turn gpt-4.1"] * 2

        chunks.clear()
        assert await export_window(store, "har", chunks.append, since=since) == 2
        har = json.loads(b"".join(chunks))
        assert har_errors(har) == []
        assert [p["id"] for p in har["log"]["pages"]] == [oldest["id"], newest["id"]]
        assert [e["pageref"] for e in har["log"]["entries"]] == [oldest["id"]] * 2 + [newest["id"]]

        chunks.clear()
        later = await export_window(store, "har", chunks.append, since=timestamp(time.time() + 60))
        assert later == 0 and har_errors(json.loads(b"".join(chunks))) == []
        narrowed = await export_window(
            store, "json", chunks.append, since=since, where=RunFilter(has_error=True)
        )
        assert narrowed == 0  # the retried run ended well
    finally:
        await store.close()
