"""mitmproxy embedded in our asyncio loop: a minimal master with only the addons we need.

DumpMaster's ~35 default addons cost CPU on every hook; we load core, proxyserver, next_layer
and tlsconfig, plus the recorder and two small addons of ours: `Drain` (what a clean stop needs
to know) and `TunnelNotice`, and dispatch hooks from a table (`proxy/hook_table.py`). Only
provider hosts are intercepted (`allow_hosts`); every other CONNECT is relayed as plain TCP,
without TLS interception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mitmproxy import connection, http, options
from mitmproxy.addons import core, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master
from mitmproxy.proxy import layer, layers
from mitmproxy.proxy.mode_servers import ServerInstance
from mitmproxy.proxy.server import ConnectionHandler

from addons.hosts import intercept_regexes
from proxy.ca import publish_ca
from proxy.hook_table import HookTable
from proxy.preflight import StartupError, reason
from proxy.settings import Settings

log = logging.getLogger(__name__)


# on stop, a connection with no call in flight that moved nothing for this long is closed
IDLE_AFTER_STOP = 0.5
# hosts remembered for "tunnelled, not recorded" notices; past it new hosts go unmentioned
MAX_NOTED_HOSTS = 10_000


class ProxyStartError(StartupError):
    pass


class Drain:
    """Knows which client connections have a call in flight, and refuses new calls on stop.

    mitmproxy keeps serving keep-alive connections after its listeners close; to stop cleanly
    a connection must be closed as soon as its last call has ended, and no new call may start.
    """

    def __init__(self) -> None:
        self.stopping = False
        self.in_flight: dict[str, set[str]] = {}  # client connection id -> flow ids

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if self.stopping:
            flow.kill()  # refused: a call that starts now might not be given the time to finish
            return
        self.in_flight.setdefault(flow.client_conn.id, set()).add(flow.id)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        # HTTP/1 only: HTTP/2 forbids the header, and its idle connections are closed instead
        if self.stopping and flow.response is not None and flow.request.http_version.startswith("HTTP/1"):
            flow.response.headers["connection"] = "close"

    def response(self, flow: http.HTTPFlow) -> None:
        self._ended(flow)

    def error(self, flow: http.HTTPFlow) -> None:
        self._ended(flow)

    def client_disconnected(self, client: connection.Client) -> None:
        self.in_flight.pop(client.id, None)

    def _ended(self, flow: http.HTTPFlow) -> None:
        flows = self.in_flight.get(flow.client_conn.id)
        if flows is not None:
            flows.discard(flow.id)
            if not flows:
                del self.in_flight[flow.client_conn.id]

    def idle(self, handler: ConnectionHandler) -> bool:
        quiet = time.time() - handler.timeout_watchdog.last_activity > IDLE_AFTER_STOP
        return handler.client.id not in self.in_flight and quiet


class TunnelNotice:
    """Says once per host that its traffic passes untouched: nothing else would tell."""

    def __init__(self) -> None:
        self.noted: set[str] = set()

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        chosen = nextlayer.layer
        if not isinstance(chosen, layers.TCPLayer) or chosen.flow is not None:
            return
        address = nextlayer.context.server.address
        if address is None or len(self.noted) >= MAX_NOTED_HOSTS:
            return
        host = f"{address[0]}:{address[1]}"
        if host not in self.noted:
            self.noted.add(host)
            log.info(
                "%s is tunnelled untouched and not recorded; to record it, pass --intercept-host %s",
                host,
                host,
            )


@dataclass
class EmbeddedProxy:
    master: Master
    task: asyncio.Task[None]
    drain: Drain

    @property
    def server(self) -> proxyserver.Proxyserver:
        return self.master.addons.get("proxyserver")

    def listen_addrs(self) -> list[tuple[str, int]]:
        return [(str(a[0]), int(a[1])) for a in self.server.listen_addrs()]

    def listening(self) -> bool:
        return not self.task.done() and all(
            s.is_running and s.last_exception is None for s in self.server.servers
        )

    async def stop(self, grace: float = 8.0) -> None:
        """Refuse new calls, let in-flight ones finish (up to `grace` seconds), close, stop.

        Listeners close first; idle keep-alive connections are closed as soon as they are idle
        (HTTP/1 responses that start now say `Connection: close`); what is still running at the
        deadline is closed by us, so its calls end with an error the recorder sees, not with
        the tasks cancelled under it.
        """
        self.drain.stopping = True
        self.master.options.update(server=False)
        deadline = time.monotonic() + grace
        while self.server.connections and time.monotonic() < deadline:
            self._close(self.drain.idle)
            await asyncio.sleep(0.05)  # mitmproxy offers no event for "connection idle"
        if self.server.connections:
            log.warning(
                "%d connection(s) still busy after %g s: closing them", len(self.server.connections), grace
            )
            self._close(lambda _: True)
            deadline = time.monotonic() + 2
            while self.server.connections and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        self.master.shutdown()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def _close(self, which: Callable[[ConnectionHandler], bool]) -> None:
        for handler in list(self.server.connections.values()):
            if handler.client in handler.transports and which(handler):
                handler.close_connection(handler.client)


def modes(settings: Settings) -> list[str]:
    host, port = settings.proxy_addr
    specs = [f"regular@{host}:{port}"]
    specs += [f"reverse:{r.url}@{host}:{r.port}" for r in settings.reverse]
    return specs


async def start_proxy(settings: Settings, *recorders: object) -> EmbeddedProxy:
    confdir = settings.confdir
    confdir.mkdir(parents=True, exist_ok=True)
    opts = options.Options(confdir=str(confdir), mode=modes(settings))
    master = Master(opts)
    master.addons = HookTable(master)  # before any addon: the same dispatch, without the walk
    drain = Drain()
    master.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig())
    master.addons.add(drain, TunnelNotice(), *recorders)
    extra_hosts = [*settings.intercept_hosts, *(r.host_port for r in settings.reverse)]
    master.options.update(
        allow_hosts=intercept_regexes(extra_hosts),
        connection_strategy="lazy",  # an unreachable upstream still gives a flow, so it is recorded
        ssl_insecure=settings.upstream_insecure,
        ssl_verify_upstream_trusted_ca=str(settings.upstream_ca) if settings.upstream_ca else None,
    )
    publish_ca(confdir)
    task = asyncio.create_task(master.run(), name="mitmproxy")
    proxy = EmbeddedProxy(master, task, drain)
    deadline = time.monotonic() + 10
    while not (proxy.server.is_running and len(proxy.listen_addrs()) >= len(opts.mode)):
        failed = [s for s in proxy.server.servers if s.last_exception is not None]
        if failed or task.done() or time.monotonic() > deadline:
            await proxy.stop(grace=0)
            raise _start_error(settings, failed)
        await asyncio.sleep(0.01)
    return proxy


def _start_error(settings: Settings, failed: list[ServerInstance[Any]]) -> ProxyStartError:
    if not failed:
        return ProxyStartError("proxy_addr", "the proxy did not start")
    server = failed[0]
    error = server.last_exception
    why = reason(error) if isinstance(error, OSError) else str(error) or type(error).__name__
    setting = "reverse" if server.mode.type_name == "reverse" else "proxy_addr"
    return ProxyStartError(setting, f"cannot listen ({server.mode.full_spec}): {why}")
