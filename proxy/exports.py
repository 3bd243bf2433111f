"""A run as a document to take elsewhere: our own JSON (version 1), HAR 1.2, or OTLP/JSON.

HAR has one entry per attempt, with the request and response headers and bodies as they were
recorded (redacted, capped) and the timings we measured, so a browser's network panel opens
it; each run is a HAR page. OTLP/JSON is the run's trace (proxy/run_trace.py) in the OTLP
JSON encoding, which a collector's `otlpjsonfile` receiver or any OTLP backend reads.

`export_window` streams every run of a time window, oldest first, as JSON lines (one document
per run) or as one HAR log, with a progress callback: what `chatdebug export --since` uses.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field

from proxy import VERSION
from proxy.api import models as m
from storage.base import Beside, RunFilter, Store
from storage.records import ns, timestamp

Format = Literal["json", "har", "otlp-json"]
GENERATOR = f"chatdebug-proxy {VERSION}"
MEDIA_TYPES: dict[Format, str] = {
    "json": "application/json",
    "har": "application/json",
    "otlp-json": "application/json",
}
# the other shapes of the export's 200 answer, for the OpenAPI document
ALTERNATIVES: tuple[dict[str, Any], ...] = (
    {
        "title": "HAR",
        "description": "format=har: a HAR 1.2 log, one page per run and one entry per attempt",
        "type": "object",
        "required": ["log"],
        "properties": {"log": {"type": "object", "required": ["version", "creator", "entries"]}},
    },
    {
        "title": "OTLP/JSON",
        "description": "format=otlp-json: the run's trace as an OTLP ExportTraceServiceRequest (JSON)",
        "type": "object",
        "required": ["resourceSpans"],
        "properties": {"resourceSpans": {"type": "array"}},
    },
)
SUFFIXES: dict[Format, str] = {"json": "json", "har": "har", "otlp-json": "otlp.json"}


class ExportQuery(BaseModel):
    """`GET /runs/{id}/export` parameters."""

    model_config = ConfigDict(extra="forbid")

    format: Format = Field("json", description="json (version 1 document), har (HAR 1.2) or otlp-json")
    content: bool = Field(True, description="otlp-json: include message content in the spans")


async def load_run(
    store: Store, run_id: str, *, as_stored: bool = False, beside: Beside | None = None
) -> dict[str, Any] | None:
    """The run detail with each attempt's raw (redacted, capped) bodies (`as_stored`, `beside`:
    as for `Store.get_run`; a JSON document sends stored payloads on as they are)."""
    run = await store.get_run(run_id, as_stored=as_stored, beside=beside)
    if run is None:
        return None
    bodies = await store.attempt_bodies(run_id)
    for step in run["steps"]:
        for attempt in step["attempts"]:
            attempt.update(bodies.get(attempt["id"], {}))
    return run


def document(run: Mapping[str, Any], fmt: Format, *, content: bool = True) -> dict[str, Any]:
    if fmt == "har":
        return har([run])
    if fmt == "otlp-json":
        # imported here: the OpenTelemetry SDK and protobuf cost ~5 MiB the proxy keeps for good
        from proxy.run_trace import otlp_json, run_spans

        return otlp_json(run_spans(run, content=content))
    export = m.Export(exported_at=timestamp(time.time()), generator=GENERATOR, run=run)  # type: ignore[arg-type]
    # python mode hands stored payloads (`orjson.Fragment`) to orjson untouched
    return export.model_dump(by_alias=True, warnings=False)


def filename(run_id: str, fmt: Format) -> str:
    return f"{run_id}.{SUFFIXES[fmt]}"


# ---- HAR 1.2 ------------------------------------------------------------------------------------


def har(runs: list[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "log": {
            **_har_head(),
            "pages": [har_page(r) for r in runs],
            "entries": [e for r in runs for e in har_entries(r)],
        }
    }


def _har_head() -> dict[str, Any]:
    return {"version": "1.2", "creator": {"name": "chatdebug-proxy", "version": VERSION}}


def har_page(run: Mapping[str, Any]) -> dict[str, Any]:
    title = run.get("prompt") or run.get("first_message") or run["id"]
    return {
        "startedDateTime": run["started_at"],
        "id": run["id"],
        "title": f"{run.get('kind')} {run.get('model') or ''}: {title}"[:200],
        "pageTimings": {"onContentLoad": -1, "onLoad": -1},
    }


def har_entries(run: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        har_entry(run, step, attempt)
        for step in run.get("steps") or []
        for attempt in step.get("attempts") or []
    ]


def har_entry(run: Mapping[str, Any], step: Mapping[str, Any], attempt: Mapping[str, Any]) -> dict[str, Any]:
    duration = attempt.get("duration_ms")
    if duration is None:
        duration = _elapsed_ms(attempt.get("started_at"), attempt.get("finished_at"))
    duration = max(float(duration or 0.0), 0.0)
    ttfb = attempt.get("ttfb_ms")
    wait = min(max(float(ttfb), 0.0), duration) if ttfb is not None else duration
    url = attempt.get("url") or ""
    request_headers = _headers(attempt.get("request_headers"))
    response_headers = _headers(attempt.get("response_headers"))
    request: dict[str, Any] = {
        "method": attempt.get("method") or "POST",
        "url": url,
        "httpVersion": "HTTP/1.1",
        "cookies": [],
        "headers": request_headers,
        "queryString": [{"name": k, "value": v} for k, v in parse_qsl(urlsplit(url).query, True)],
        "headersSize": -1,
        "bodySize": int(attempt.get("request_bytes") or 0),
    }
    if attempt.get("request_body") is not None:
        request["postData"] = {
            "mimeType": _header(request_headers, "content-type") or "application/json",
            "text": attempt["request_body"],
        }
        if attempt.get("request_truncated"):
            request["postData"]["comment"] = "cut to the capture limit"
    response_content: dict[str, Any] = {
        "size": int(attempt.get("response_bytes") or 0),
        "mimeType": _header(response_headers, "content-type") or "",
    }
    if attempt.get("response_body") is not None:
        response_content["text"] = attempt["response_body"]
        if attempt.get("response_truncated"):
            response_content["comment"] = "cut to the capture limit"
    error = attempt.get("error") or {}
    status = attempt.get("http_status")
    entry: dict[str, Any] = {
        "pageref": run["id"],
        "startedDateTime": attempt.get("started_at") or run["started_at"],
        "time": duration,
        "request": request,
        "response": {
            "status": int(status or 0),
            "statusText": "" if status else str(error.get("class") or ""),
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": response_headers,
            "content": response_content,
            "redirectURL": _header(response_headers, "location") or "",
            "headersSize": -1,
            "bodySize": int(attempt.get("response_bytes") or 0) if status else -1,
        },
        "cache": {},
        "timings": {
            "blocked": -1,
            "dns": -1,
            "connect": -1,
            "ssl": -1,
            "send": 0,
            "wait": wait,
            "receive": duration - wait,
        },
        "_chatdebug": {
            "run_id": run["id"],
            "step": step.get("number"),
            "attempt": attempt.get("number"),
            "status": attempt.get("status"),
            "error": attempt.get("error"),
        },
    }
    if error:
        entry["comment"] = f"{error.get('class')}: {error.get('message')}"
    return entry


def _headers(headers: Mapping[str, Any] | None) -> list[dict[str, str]]:
    return [{"name": str(k), "value": str(v)} for k, v in (headers or {}).items()]


def _header(headers: list[dict[str, str]], name: str) -> str | None:
    return next((h["value"] for h in headers if h["name"].lower() == name), None)


def _elapsed_ms(start: str | None, end: str | None) -> float | None:
    first, last = ns(start), ns(end)
    return (last - first) / 1e6 if first is not None and last is not None else None


# ---- a time window, streamed --------------------------------------------------------------------

Progress = Callable[[int, int], None]  # (runs done, runs in the window)


async def export_window(
    store: Store,
    fmt: Format,
    write: Callable[[bytes], object],
    *,
    since: str | None = None,
    until: str | None = None,
    where: RunFilter | None = None,
    content: bool = True,
    progress: Progress | None = None,
    page_size: int = 200,
) -> int:
    """Every run started in [since, until) (RFC 3339; `where` narrows further), oldest first:
    JSON lines of one document per run for `json` and `otlp-json`, one HAR log for `har`.
    Runs are read one at a time, so memory stays flat whatever the window. Returns the count."""
    base = where or RunFilter()
    base = dataclasses.replace(base, since=since or base.since, until=until or base.until)
    ids: list[str] = []
    cursor: tuple[str, str] | None = None
    while True:  # ids only (newest first), then the runs themselves oldest first
        page = await store.list_runs(base, page_size, cursor)
        ids += [r["id"] for r in page]
        if len(page) < page_size:
            break
        cursor = (page[-1]["started_at"], page[-1]["id"])
    ids.reverse()
    total = len(ids)
    done = 0
    if fmt == "har":
        head = orjson.dumps(_har_head())[:-1]  # the log object, left open for pages and entries
        write(b'{"log":' + head + b',"entries":[')
        pages: list[dict[str, Any]] = []
        first = True
        for run_id in ids:
            run = await load_run(store, run_id, as_stored=fmt == "json")
            if run is not None:
                pages.append(har_page(run))
                for entry in har_entries(run):
                    write((b"" if first else b",") + orjson.dumps(entry))
                    first = False
            done += 1
            if progress is not None:
                progress(done, total)
        write(b'],"pages":' + orjson.dumps(pages) + b"}}\n")
        return done
    for run_id in ids:
        run = await load_run(store, run_id, as_stored=fmt == "json")
        if run is not None:
            write(orjson.dumps(document(run, fmt, content=content)) + b"\n")
        done += 1
        if progress is not None:
            progress(done, total)
    return done
