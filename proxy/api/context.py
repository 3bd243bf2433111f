"""What every handler of the API reaches through its request: the store and the process's hooks."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from aiohttp import web

from proxy.api.events import EventHub
from storage.base import Store, StoreUnavailable, within

# Seconds an API request waits for the database: PostgreSQL ends a statement at 30 s itself.
READ_SECONDS = 30.0


class AnsweringStore:
    """The store as the API reads it: every call bounded (`within`), and refused at once while
    the writer knows the database silent, so that a viewer or dashboard gets its 503 rather than
    a request held for as long as the server keeps still. A bound reached here is the reader's
    own: it tells the writer nothing (a heavy query is no sign the database is away)."""

    def __init__(self, store: Store, silent: Callable[[], str | None], seconds: float = READ_SECONDS) -> None:
        self._store, self._silent, self._seconds = store, silent, seconds

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if not inspect.iscoroutinefunction(found):
            return found

        @functools.wraps(found)
        async def answered(*args: Any, **kwargs: Any) -> Any:
            if (why := self._silent()) is not None:
                raise StoreUnavailable(why)
            return await within(found(*args, **kwargs), self._seconds, "a read")

        return answered

    @classmethod
    def of(cls, store: Store, silent: Callable[[], str | None], seconds: float = READ_SECONDS) -> Store:
        return cast(Store, cls(store, silent, seconds))  # every method the Store protocol names, bounded


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
