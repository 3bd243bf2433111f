"""The HTTP API dashboards and the viewer call: `make_app(ApiContext(...))` is all the process needs."""

from proxy.api.app import make_app
from proxy.api.context import ApiContext

__all__ = ["ApiContext", "make_app"]
