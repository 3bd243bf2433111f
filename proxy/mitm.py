"""mitmproxy embedded in our asyncio loop: a minimal master with only the addons we need.

DumpMaster's ~35 default addons cost CPU on every hook; we load core, proxyserver, next_layer
and tlsconfig, plus the recorder. Only provider hosts are intercepted (`allow_hosts`); every
other CONNECT is relayed as plain TCP, without TLS interception.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from mitmproxy import options
from mitmproxy.addons import core, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master

from addons.hosts import intercept_regexes
from proxy.settings import Settings

log = logging.getLogger(__name__)

CA_PUBLIC = "mitmproxy-ca-cert.pem"
CA_PRIVATE = "mitmproxy-ca.pem"


class ProxyStartError(RuntimeError):
    pass


@dataclass
class EmbeddedProxy:
    master: Master
    task: asyncio.Task[None]

    @property
    def server(self) -> proxyserver.Proxyserver:
        return self.master.addons.get("proxyserver")

    def listen_addrs(self) -> list[tuple[str, int]]:
        return [(str(a[0]), int(a[1])) for a in self.server.listen_addrs()]

    def listening(self) -> bool:
        return not self.task.done() and all(
            s.is_running and s.last_exception is None for s in self.server.servers
        )

    async def stop(self, grace: float = 10.0) -> None:
        """Refuse new connections, let in-flight ones finish (up to `grace` seconds), stop."""
        self.master.options.update(server=False)
        deadline = time.monotonic() + grace
        while self.server.active_connections() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)  # mitmproxy offers no event for "connections drained"
        self.master.shutdown()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


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
    master.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(), tlsconfig.TlsConfig())
    master.addons.add(*recorders)
    extra_hosts = [*settings.intercept_hosts, *(r.host_port for r in settings.reverse)]
    master.options.update(
        allow_hosts=intercept_regexes(extra_hosts),
        connection_strategy="lazy",  # an unreachable upstream still gives a flow, so it is recorded
        ssl_insecure=settings.upstream_insecure,
        ssl_verify_upstream_trusted_ca=str(settings.upstream_ca) if settings.upstream_ca else None,
    )
    publish_ca(confdir)
    task = asyncio.create_task(master.run(), name="mitmproxy")
    proxy = EmbeddedProxy(master, task)
    deadline = time.monotonic() + 10
    while not (proxy.server.is_running and len(proxy.listen_addrs()) >= len(opts.mode)):
        if task.done() or time.monotonic() > deadline:
            errors = [str(s.last_exception) for s in proxy.server.servers if s.last_exception]
            raise ProxyStartError("; ".join(errors) or "the proxy did not start")
        failed = [s for s in proxy.server.servers if s.last_exception is not None]
        if failed:
            await proxy.stop(grace=0)
            raise ProxyStartError(f"cannot listen: {failed[0].last_exception}")
        await asyncio.sleep(0.01)
    return proxy


def publish_ca(confdir: Path) -> Path:
    """`ca.pem` is what clients trust: the CA's public certificate only; the key stays 0600."""
    private = confdir / CA_PRIVATE
    if private.exists():
        os.chmod(private, 0o600)
    target = confdir / "ca.pem"
    source = confdir / CA_PUBLIC
    if source.exists() and (not target.exists() or target.read_bytes() != source.read_bytes()):
        shutil.copyfile(source, target)
    return target
