"""The query API dashboards call (aiohttp). One route table serves requests and /openapi.json."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiohttp_sse import sse_response
from pydantic import BaseModel, ValidationError

from proxy import exports
from proxy.api import models as m
from proxy.api import viewer
from proxy.api.events import EventHub, last_event_id
from proxy.api.openapi import NO_CONTROL_CHARACTERS, OPEN, Route, document
from storage.base import Store, StoreUnavailable
from storage.records import timestamp

PREFIX = "/api/v1"
OPEN_PATHS = (*OPEN, *viewer.OPEN_PATHS)
VERSION = "0.1.0"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class ApiContext:
    store: Store
    ca_path: Path
    token: str | None  # None or "": no token
    ready: Callable[[], Awaitable[dict[str, bool]]]
    delete_runs: Callable[[list[str]], Awaitable[list[str]]]
    hub: EventHub
    metrics: Callable[[], bytes]
    cors_origins: list[str] = field(default_factory=list)
    heartbeat: float = 15.0
    reasons: Callable[[], dict[str, str]] = dict  # why a failing readiness check fails
    # Without a token: the Host names (besides loopback) a browser may reach the API by, and
    # whether clients beyond loopback are served at all (`--api-allow-anonymous`).
    allowed_hosts: list[str] = field(default_factory=list)
    allow_anonymous: bool = False


CTX = web.AppKey("ctx", ApiContext)


class ApiError(web.HTTPException):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status_code = status
        error = orjson.dumps({"error": {"code": code, "message": message}}).decode()
        super().__init__(text=error, content_type="application/json")


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    return web.Response(
        body=model.model_dump_json(by_alias=True), status=status, content_type="application/json"
    )


def params[Q: BaseModel](request: web.Request, model: type[Q]) -> Q:
    """Query parameters as a model; a bad, repeated or unknown one is a 400 that names it (a
    mistyped filter must not read as no filter)."""
    known = {f.alias or name for name, f in model.model_fields.items()}
    if unknown := sorted(set(request.query) - known):
        valid = ", ".join(sorted(known)) or "none"
        raise ApiError(400, "bad_request", f"{', '.join(unknown)}: unknown parameter (valid: {valid})")
    for name in request.query:
        values = request.query.getall(name)
        if len(values) > 1:
            raise ApiError(400, "bad_request", f"{name}: given {len(values)} times, give it once")
        if not _NO_CONTROL.fullmatch(values[0]):
            raise ApiError(400, "bad_request", f"{name}: control characters are not allowed")
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as e:
        first = e.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "query"
        raise ApiError(400, "bad_request", f"{name}: {first['msg']}") from None


_NO_CONTROL = re.compile(NO_CONTROL_CHARACTERS)  # NUL ends a C string: `q=%00` matched every run


def encode_cursor(*key: str) -> str:
    return base64.urlsafe_b64encode("\x1f".join(key).encode()).decode().rstrip("=")


def decode_cursor(raw: str | None) -> tuple[str, str] | None:
    if raw is None:
        return None
    try:
        first, sep, second = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode().partition("\x1f")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        sep = ""
    if not sep:
        raise ApiError(400, "bad_request", "cursor: not a cursor this API returned")
    return first, second


def _found(value: Any, what: str, key: str) -> Any:
    if value is None:
        raise ApiError(404, "not_found", f"no {what} {key!r}")
    return value


# ---- middleware -----------------------------------------------------------------------------


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError:
        raise
    except StoreUnavailable as e:
        raise ApiError(503, "unavailable", f"the database is unavailable, try again: {e}") from None
    except web.HTTPException as e:
        if e.status >= 400:
            raise ApiError(e.status, e.reason.lower().replace(" ", "_"), e.reason) from None
        raise


@web.middleware
async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    ctx = request.app[CTX]
    if not ctx.token:  # None and "" alike: no token, so loopback only, and no foreign Host
        _tokenless_guard(request, ctx)
        return await handler(request)
    if request.path in OPEN_PATHS or request.method == "OPTIONS":
        return await handler(request)
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if not scheme and viewer.COOKIE in request.cookies:  # the viewer's pages, and the calls they make
        scheme, value = "bearer", request.cookies[viewer.COOKIE]
    try:
        given = value.strip().encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 are no token of ours
        given = b""
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, ctx.token.encode()):
        raise ApiError(401, "unauthorized", "a valid bearer token is required (Authorization: Bearer ...)")
    return await handler(request)


def _tokenless_guard(request: web.Request, ctx: ApiContext) -> None:
    """Without a token, the API never serves beyond loopback unless told to, and answers only
    requests addressed to a loopback or configured name: a web page whose name an attacker
    re-binds to 127.0.0.1 (DNS rebinding) sends its own name as Host and is refused."""
    if not ctx.allow_anonymous and not _is_loopback(request.remote or ""):
        raise ApiError(403, "forbidden", "this API has no token: it answers clients on this machine only")
    host = request.headers.get("Host")
    if host is not None and not _allowed_host(host, ctx):
        raise ApiError(
            403,
            "forbidden",
            f"Host {host[:100]!r} is not a name of this API; without a token it answers only "
            "localhost, 127.0.0.1, [::1] and the configured allowed hosts",
        )


def _is_loopback(address: str) -> bool:
    if address == "":  # a Unix socket or an in-process test client: not a network peer
        return True
    ip = _ip(address)
    return ip is not None and ip.is_loopback


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address, with IPv4 seen through a dual-stack socket (`::ffff:127.0.0.1`) as IPv4."""
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    return (ip.ipv4_mapped or ip) if isinstance(ip, ipaddress.IPv6Address) else ip


def _allowed_host(host: str, ctx: ApiContext) -> bool:
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:8081
        name = name[1 : name.find("]")] if "]" in name else name
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.rstrip(".")
    if name == "localhost" or name in {h.lower().rstrip(".") for h in ctx.allowed_hosts}:
        return True
    ip = _ip(name)
    # Served beyond loopback on purpose, any address will do: re-binding needs a name.
    return ip is not None and (ip.is_loopback or ctx.allow_anonymous)


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Browser dashboards on the configured origins may read the API."""
    origins = request.app[CTX].cors_origins
    origin = request.headers.get("Origin")
    if origin is None or not ("*" in origins or origin in origins):
        return await handler(request)
    allow = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
    if request.method == "OPTIONS":  # a preflight: answered here, whatever the route
        return web.Response(status=204, headers={
            **allow,
            "Access-Control-Allow-Methods": "GET, DELETE, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Last-Event-ID, Content-Type",
            "Access-Control-Max-Age": "600",
        })  # fmt: skip
    try:
        response = await handler(request)
    except web.HTTPException as e:
        e.headers.update(allow)
        raise
    response.headers.update(allow)
    return response


# ---- runs -------------------------------------------------------------------------------------


async def list_runs(request: web.Request) -> web.Response:
    q = params(request, m.RunsQuery)
    where = q.where()
    rows = await request.app[CTX].store.list_runs(where, q.limit + 1, decode_cursor(q.cursor))
    page = rows[: q.limit]
    cursor = encode_cursor(page[-1]["started_at"], page[-1]["id"]) if len(rows) > q.limit else None
    return json_response(m.RunList(runs=[m.Run.model_validate(r) for r in page], next_cursor=cursor))


async def get_run(request: web.Request) -> web.Response:
    run_id = request.match_info["id"]
    return json_response(
        m.RunDetail.model_validate(_found(await request.app[CTX].store.get_run(run_id), "run", run_id))
    )


async def export_run(request: web.Request) -> web.Response:
    q = params(request, exports.ExportQuery)
    run_id = request.match_info["id"]
    run = _found(await exports.load_run(request.app[CTX].store, run_id), "run", run_id)
    body = orjson.dumps(exports.document(run, q.format, content=q.content))
    response = web.Response(body=body, content_type=exports.MEDIA_TYPES[q.format])
    response.headers["Content-Disposition"] = f'attachment; filename="{exports.filename(run_id, q.format)}"'
    return response


async def delete_run(request: web.Request) -> web.Response:
    run_id = request.match_info["id"]
    _found(await request.app[CTX].delete_runs([run_id]) or None, "run", run_id)
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
    found = await request.app[CTX].store.get_attempt(attempt_id)
    return json_response(m.AttemptDetail.model_validate(_found(found, "attempt", attempt_id)))


# ---- conversations, stats, events -------------------------------------------------------------


async def list_conversations(request: web.Request) -> web.Response:
    q = params(request, m.ConversationsQuery)
    rows = await request.app[CTX].store.list_conversations(q.limit + 1, decode_cursor(q.cursor), q.q or None)
    page = rows[: q.limit]
    cursor = encode_cursor(page[-1]["last_activity_at"], page[-1]["id"]) if len(rows) > q.limit else None
    return json_response(
        m.ConversationList(conversations=[m.Conversation.model_validate(r) for r in page], next_cursor=cursor)
    )


async def get_stats(request: web.Request) -> web.Response:
    q = params(request, m.StatsQuery)
    until = m.stamp(q.until) or timestamp(time.time())
    since = m.stamp(q.since) or timestamp((q.until.timestamp() if q.until else time.time()) - 86_400)
    return json_response(m.Stats.model_validate(await request.app[CTX].store.stats(since, until)))


async def events(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    q = params(request, m.EventsQuery)
    last = last_event_id(request.headers.get("Last-Event-ID"))
    sub = ctx.hub.subscribe(q.conversation_id, q.kind)
    try:
        async with sse_response(request) as stream:
            stream.ping_interval = ctx.heartbeat
            for event in ctx.hub.replay(last, sub):
                await stream.send(event.data.decode(), event=event.type, id=str(event.id))
                last = event.id
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


def make_app(ctx: ApiContext) -> web.Application:
    app = web.Application(middlewares=[cors, errors, auth], client_max_size=64 * 1024)
    app[CTX] = ctx
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    viewer.add_routes(app)
    return app
