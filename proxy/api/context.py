"""What every handler of the API reaches through its request: the store and the process's hooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from proxy.api.events import EventHub
from storage.base import Store


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
