"""The middleware every request passes: CORS, the error shape, and the token or loopback guard."""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web

from proxy.api import viewer
from proxy.api.context import CTX, ApiContext
from proxy.api.errors import ApiError
from proxy.api.openapi import OPEN, Handler
from storage.base import StoreUnavailable

OPEN_PATHS = (*OPEN, *viewer.OPEN_PATHS)


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
