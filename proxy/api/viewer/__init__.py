"""The built-in viewer for people: server-rendered pages over the same store the API reads.

`proxy.api.routes` imports this package for the names its auth middleware needs, so the routes (which
use the API's context) are imported only when `add_routes` is called.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

COOKIE = "chatdebug_token"
STATIC = Path(__file__).parent / "static"
# reachable without the token: the login form and what it needs to render
OPEN_PATHS = ("/login", *(f"/static/{p.name}" for p in sorted(STATIC.iterdir()) if p.is_file()))


def add_routes(app: web.Application) -> None:
    from proxy.api.viewer.routes import register

    register(app)
