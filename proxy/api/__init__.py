"""The HTTP API dashboards and the viewer call: `make_app(ApiContext(...))` is all the process needs."""

from proxy.api.routes import ApiContext, make_app

__all__ = ["ApiContext", "make_app"]
