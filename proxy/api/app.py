"""The API as an aiohttp application: the route table, the viewer's pages and the middleware."""

from __future__ import annotations

from aiohttp import web

from proxy.api.context import CTX, ApiContext
from proxy.api.middleware import auth, cors, errors
from proxy.api.routes import ROUTES
from proxy.api.viewer import routes as viewer_routes


def make_app(ctx: ApiContext) -> web.Application:
    app = web.Application(middlewares=[cors, errors, auth], client_max_size=64 * 1024)
    app[CTX] = ctx
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    viewer_routes.register(app)
    return app
