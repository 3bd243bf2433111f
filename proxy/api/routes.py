"""The API's routes: the handlers and the one route table that serves requests and /openapi.json."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson
from aiohttp import web
from aiohttp_sse import sse_response
from pydantic import BaseModel

from addons import offloop
from proxy import exports
from proxy.api import models as m
from proxy.api.context import CTX
from proxy.api.errors import ApiError, or_404
from proxy.api.events import ReplayFailed, last_event_id
from proxy.api.openapi import Route, document
from proxy.api.params import decode_cursor, encode_cursor, params
from storage.records import timestamp

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
VERSION = "0.1.0"


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    """A small body, built on the loop (health, a count)."""
    return web.Response(body=_encode(model), status=status, content_type="application/json")


async def shaped(build: Callable[[], BaseModel]) -> web.Response:
    """The model `build` makes, validated and encoded beside the loop (`offloop.reading`), with
    its payloads as stored (`models.Payload`): a run of 90,000 messages decoded and encoded
    again took 0.17 s of the loop the proxy's traffic shares, copied it takes 4 ms."""
    body = await offloop.reading(lambda: _encode(build()))
    return web.Response(body=body, content_type="application/json")


def _encode(model: BaseModel) -> bytes:
    # python mode hands a payload's Fragment to orjson untouched (json mode cannot encode one)
    return orjson.dumps(model.model_dump(by_alias=True, warnings=False))


# ---- runs -------------------------------------------------------------------------------------


async def list_runs(request: web.Request) -> web.Response:
    q = params(request, m.RunsQuery)
    where = q.where()
    rows = await request.app[CTX].store.list_runs(where, q.limit + 1, decode_cursor(q.cursor))
    page = rows[: q.limit]
    cursor = encode_cursor(page[-1]["started_at"], page[-1]["id"]) if len(rows) > q.limit else None
    return await shaped(lambda: m.RunList(runs=[m.Run.model_validate(r) for r in page], next_cursor=cursor))


async def get_run(request: web.Request) -> web.Response:
    run_id = request.match_info["id"]
    found = or_404(await request.app[CTX].store.get_run(run_id, as_stored=True), "run", run_id)
    return await shaped(lambda: m.RunDetail.model_validate(found))


async def export_run(request: web.Request) -> web.Response:
    q = params(request, exports.ExportQuery)
    run_id = request.match_info["id"]
    found = exports.load_run(
        request.app[CTX].store, run_id, as_stored=q.format == "json", beside=offloop.reading
    )
    run = or_404(await found, "run", run_id)
    body = await offloop.reading(lambda: orjson.dumps(exports.document(run, q.format, content=q.content)))
    response = web.Response(body=body, content_type=exports.MEDIA_TYPES[q.format])
    response.headers["Content-Disposition"] = f'attachment; filename="{exports.filename(run_id, q.format)}"'
    return response


async def delete_run(request: web.Request) -> web.Response:
    run_id = request.match_info["id"]
    or_404(await request.app[CTX].delete_runs([run_id]) or None, "run", run_id)
    return web.Response(status=204)


async def delete_runs(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    q = params(request, m.DeleteRunsQuery)
    if q.conversation_id is None and q.started_before is None:
        raise ApiError(400, "bad_request", "conversation_id or started_before: give at least one")
    deleted = 0
    while ids := await ctx.store.select_run_ids(
        conversation_id=q.conversation_id, started_before=m.stamp(q.started_before), limit=1000
    ):
        deleted += len(await ctx.delete_runs(ids))
    return json_response(m.Deleted(deleted=deleted))


async def get_attempt(request: web.Request) -> web.Response:
    attempt_id = request.match_info["id"]
    found = or_404(
        await request.app[CTX].store.get_attempt(attempt_id, as_stored=True), "attempt", attempt_id
    )
    return await shaped(lambda: m.AttemptDetail.model_validate(found))


# ---- conversations, stats, events -------------------------------------------------------------


async def list_conversations(request: web.Request) -> web.Response:
    q = params(request, m.ConversationsQuery)
    rows = await request.app[CTX].store.list_conversations(q.limit + 1, decode_cursor(q.cursor), q.q or None)
    page = rows[: q.limit]
    cursor = encode_cursor(page[-1]["last_activity_at"], page[-1]["id"]) if len(rows) > q.limit else None
    return await shaped(
        lambda: m.ConversationList(
            conversations=[m.Conversation.model_validate(r) for r in page], next_cursor=cursor
        )
    )


async def get_stats(request: web.Request) -> web.Response:
    q = params(request, m.StatsQuery)
    until = m.stamp(q.until) or timestamp(time.time())
    since = m.stamp(q.since) or timestamp((q.until.timestamp() if q.until else time.time()) - 86_400)
    found = await request.app[CTX].store.stats(since, until)
    return await shaped(lambda: m.Stats.model_validate(found))


async def events(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    q = params(request, m.EventsQuery)
    last = last_event_id(request.headers.get("Last-Event-ID"))
    sub = ctx.hub.subscribe(q.conversation_id, q.kind)
    try:
        async with sse_response(request) as stream:
            stream.ping_interval = ctx.heartbeat
            try:
                async for event in ctx.hub.replay(last, sub):
                    await stream.send(event.data.decode(), event=event.type, id=str(event.id))
                    last = event.id
            except ReplayFailed as e:  # the client reconnects from its last id, once the store answers
                log.warning("ended an event stream: %s", e)
                return stream
            while (event := await sub.queue.get()) is not None:
                if event.id > last:
                    await stream.send(event.data.decode(), event=event.type, id=str(event.id))
                    last = event.id
            return stream
    finally:
        ctx.hub.unsubscribe(sub)


# ---- outside the prefix -------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return json_response(m.Health(status="ok"))


async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    checks = await ctx.ready()
    ok = all(checks.values())
    return json_response(
        m.Health(status="ok" if ok else "unavailable", checks=checks, reasons=ctx.reasons()),
        status=200 if ok else 503,
    )


async def ca_pem(request: web.Request) -> web.Response:
    path = request.app[CTX].ca_path
    if not path.exists():
        raise ApiError(404, "not_found", "the CA has not been created yet")
    return web.Response(body=path.read_bytes(), content_type="application/x-pem-file")


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=request.app[CTX].metrics())
    response.content_type = "text/plain"
    response.charset = "utf-8"
    return response


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(document(ROUTES, VERSION)), content_type="application/json")


# ---- the route table --------------------------------------------------------------------------


ROUTES: list[Route] = [
    Route("GET", f"{PREFIX}/runs", list_runs, "Runs, newest first", m.RunsQuery, m.RunList),
    Route(
        "DELETE",
        f"{PREFIX}/runs",
        delete_runs,
        "Delete runs by conversation and/or age",
        m.DeleteRunsQuery,
        m.Deleted,
    ),
    Route(
        "GET",
        f"{PREFIX}/runs/{{id}}",
        get_run,
        "A run with its steps and attempts",
        None,
        m.RunDetail,
        errors=(401, 404),
    ),
    Route("DELETE", f"{PREFIX}/runs/{{id}}", delete_run, "Delete a run", None, None, 204, errors=(401, 404)),
    Route(
        "GET",
        f"{PREFIX}/runs/{{id}}/export",
        export_run,
        "A self-contained document of a run: JSON (version 1), HAR 1.2 or OTLP/JSON",
        exports.ExportQuery,
        m.Export,
        errors=(400, 401, 404),
        alternatives=exports.ALTERNATIVES,
    ),
    Route(
        "GET",
        f"{PREFIX}/attempts/{{id}}",
        get_attempt,
        "An attempt with its raw (redacted) bodies",
        None,
        m.AttemptDetail,
        errors=(401, 404),
    ),
    Route(
        "GET",
        f"{PREFIX}/conversations",
        list_conversations,
        "Conversations by last activity",
        m.ConversationsQuery,
        m.ConversationList,
    ),
    Route(
        "GET",
        f"{PREFIX}/stats",
        get_stats,
        "Counts, tokens, latency and error rates over a window",
        m.StatsQuery,
        m.Stats,
    ),
    Route(
        "GET",
        f"{PREFIX}/events",
        events,
        "Server-Sent Events: run, step, attempt, delete",
        m.EventsQuery,
        None,
        content_type="text/event-stream",
    ),
    Route("GET", f"{PREFIX}/openapi.json", openapi, "This document", errors=()),
    Route("GET", "/openapi.json", openapi, "This document (also under the prefix)", errors=()),
    Route("GET", "/healthz", healthz, "The process is alive", None, m.Health, errors=()),
    Route(
        "GET",
        "/readyz",
        readyz,
        "The database is writable and the proxy listening",
        None,
        m.Health,
        errors=(503,),
    ),
    Route("GET", "/metrics", metrics, "Prometheus metrics", content_type="text/plain", errors=(401,)),
    Route(
        "GET",
        "/ca.pem",
        ca_pem,
        "The CA certificate clients trust",
        content_type="application/x-pem-file",
        errors=(404,),
    ),
]
