"""The CA clients trust: created in `confdir` on first start, its public half published as `ca.pem`."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from mitmproxy import certs
from mitmproxy.options import CONF_BASENAME, KEY_SIZE

CA_PUBLIC = f"{CONF_BASENAME}-ca-cert.pem"
CA_PRIVATE = f"{CONF_BASENAME}-ca.pem"
TRUSTED = "ca.pem"


def ensure_ca(confdir: Path) -> Path:
    """Create the CA if it is missing, check it loads, and publish it; `OSError`/`ValueError` if not.

    mitmproxy would create it too, but on failure it logs a traceback and carries on without a
    TLS context, so every intercepted call would fail after a successful start.
    """
    confdir.mkdir(parents=True, exist_ok=True)
    certs.CertStore.from_store(confdir, CONF_BASENAME, KEY_SIZE)
    return publish_ca(confdir)


def publish_ca(confdir: Path) -> Path:
    """`ca.pem` is what clients trust: the CA's public certificate only; the key stays 0600."""
    private = confdir / CA_PRIVATE
    if private.exists() and stat.S_IMODE(private.stat().st_mode) != 0o600:
        os.chmod(private, 0o600)  # only when needed: a provisioned CA may sit on a read-only mount
    target = confdir / TRUSTED
    source = confdir / CA_PUBLIC
    if source.exists() and (not target.exists() or target.read_bytes() != source.read_bytes()):
        shutil.copyfile(source, target)
    return target
