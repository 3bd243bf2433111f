"""The query API dashboards call (aiohttp). Reads only; every response is a pydantic model."""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
from aiohttp import web
from pydantic import BaseModel

from proxy import api_models as m
from storage.base import RunFilter, Store
from storage.records import timestamp

PREFIX = "/api/v1"
OPEN_PATHS = ("/healthz", "/readyz", "/ca.pem")
MAX_LIMIT = 500


@dataclass
class ApiContext:
    store: Store
    ca_path: Path
    token: str | None
    ready: Callable[[], Awaitable[dict[str, bool]]]


CTX = web.AppKey("ctx", ApiContext)


class ApiError(web.HTTPException):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status_code = status
        super().__init__(
            body=orjson.dumps({"error": {"code": code, "message": message}}),
            content_type="application/json",
        )


def bad_request(param: str, problem: str) -> ApiError:
    return ApiError(400, "bad_request", f"{param}: {problem}")


def json_response(model: BaseModel, status: int = 200) -> web.Response:
    body = model.model_dump_json(by_alias=True).encode()
    return web.Response(body=body, status=status, content_type="application/json")


# ---- middleware -----------------------------------------------------------------------------


@web.middleware
async def errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError:
        raise
    except web.HTTPException as e:
        if e.status >= 400:
            raise ApiError(e.status, e.reason.lower().replace(" ", "_"), e.reason) from None
        raise


@web.middleware
async def auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    token = request.app[CTX].token
    if token is None or request.path in OPEN_PATHS:
        return await handler(request)
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise ApiError(401, "unauthorized", "a valid bearer token is required (Authorization: Bearer ...)")
    return await handler(request)


# ---- parameters -----------------------------------------------------------------------------


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise bad_request("limit", f"expected an integer from 1 to {MAX_LIMIT}, got {raw!r}")
    return int(raw)


def _time(request: web.Request, name: str) -> str | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(name, f"expected an RFC 3339 timestamp, got {raw!r}") from None
    if parsed.tzinfo is None:
        raise bad_request(name, "the timestamp needs a time zone, e.g. 2026-01-01T00:00:00Z")
    return timestamp(parsed.timestamp())


def _choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str | None:
    raw = request.query.get(name)
    if raw is not None and raw not in allowed:
        raise bad_request(name, f"expected one of {', '.join(allowed)}, got {raw!r}")
    return raw


def _bool(request: web.Request, name: str) -> bool | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if raw.lower() not in ("true", "false", "1", "0"):
        raise bad_request(name, f"expected true or false, got {raw!r}")
    return raw.lower() in ("true", "1")


def encode_cursor(started_at: str, run_id: str) -> str:
    return base64.urlsafe_b64encode(f"{started_at}|{run_id}".encode()).decode().rstrip("=")


def decode_cursor(raw: str | None) -> tuple[str, str] | None:
    if raw is None:
        return None
    try:
        started_at, sep, run_id = (
            base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode().partition("|")
        )
    except (binascii.Error, UnicodeDecodeError, ValueError):
        sep = ""
    if not sep:
        raise bad_request("cursor", "not a cursor this API returned")
    return started_at, run_id


KINDS = ("chat_turn", "compaction", "title_generation", "quickgen", "unknown")
STATUSES = ("in_progress", "completed", "error", "interrupted")


def run_filter(request: web.Request) -> RunFilter:
    query = request.query
    return RunFilter(
        kind=_choice(request, "kind", KINDS),
        status=_choice(request, "status", STATUSES),
        conversation_id=query.get("conversation_id"),
        provider=query.get("provider"),
        model=query.get("model"),
        since=_time(request, "since"),
        until=_time(request, "until"),
        has_error=_bool(request, "has_error"),
        q=query.get("q") or None,
    )


# ---- routes ---------------------------------------------------------------------------------


async def list_runs(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    limit = _limit(request)
    where = run_filter(request)
    rows = await ctx.store.list_runs(where, limit + 1, decode_cursor(request.query.get("cursor")))
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = encode_cursor(rows[-1]["started_at"], rows[-1]["id"]) if more and rows else None
    return json_response(m.RunList(runs=[m.Run.model_validate(r) for r in rows], next_cursor=cursor))


async def get_run(request: web.Request) -> web.Response:
    run = await request.app[CTX].store.get_run(request.match_info["id"])
    if run is None:
        raise ApiError(404, "not_found", f"no run {request.match_info['id']!r}")
    return json_response(m.RunDetail.model_validate(run))


async def get_attempt(request: web.Request) -> web.Response:
    attempt = await request.app[CTX].store.get_attempt(request.match_info["id"])
    if attempt is None:
        raise ApiError(404, "not_found", f"no attempt {request.match_info['id']!r}")
    return json_response(m.AttemptDetail.model_validate(attempt))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = await request.app[CTX].ready()
    ok = all(checks.values())
    return web.json_response(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )


async def ca_pem(request: web.Request) -> web.StreamResponse:
    path = request.app[CTX].ca_path
    if not path.exists():
        raise ApiError(404, "not_found", "the CA has not been created yet")
    return web.Response(body=path.read_bytes(), content_type="application/x-pem-file")


def make_app(ctx: ApiContext) -> web.Application:
    app = web.Application(middlewares=[errors, auth], client_max_size=64 * 1024)
    app[CTX] = ctx
    app.router.add_get(f"{PREFIX}/runs", list_runs)
    app.router.add_get(f"{PREFIX}/runs/{{id}}", get_run)
    app.router.add_get(f"{PREFIX}/attempts/{{id}}", get_attempt)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/ca.pem", ca_pem)
    return app
