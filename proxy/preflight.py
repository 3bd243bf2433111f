"""Checks that run before anything starts: each failure is one line naming the setting and the fix.

Everything a new user gets wrong on the first start (a directory they cannot write, a port
already taken) is found here, before migrations run and before `ready` is printed, rather than
as a traceback from deep inside SQLite or mitmproxy, or not at all.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import tempfile
from pathlib import Path

from proxy.ca import CA_PRIVATE, ensure_ca
from proxy.flags import flag_and_env
from proxy.settings import Settings

log = logging.getLogger("chatdebug")

# a relative sqlite path starting like this was most likely meant to be absolute
_ABSOLUTE_LOOKING = {"tmp", "var", "home", "data", "srv", "opt", "mnt", "root", "usr", "etc"}


class StartupError(RuntimeError):
    """One line: which setting, what is wrong, how to fix it."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{flag_and_env(setting)}: {message}")
        self.setting = setting


def reason(error: OSError) -> str:
    return (error.strerror or str(error) or type(error).__name__).lower()


def check(settings: Settings) -> None:
    """Raise `StartupError` for the first problem; warn about suspicious but valid settings."""
    create_ca(settings.confdir)
    if not settings.postgres:  # a server that is down or refuses us is not fatal either: spooled
        writable_dir("database", settings.database_file.parent, "the database")
        # an existing database that cannot be written now (read-only, locked, not yet mounted rw)
        # is not fatal: the proxy serves, records are spooled and the store is taken up when it can be
        writable_file("database", settings.database_file, "the database", fatal=False)
        warn_relative_database(settings)
    writable_dir("spool_path", settings.spool_file.absolute().parent, "the spool")
    writable_file("spool_path", settings.spool_file.absolute(), "the spool")
    free_ports(settings)


def create_ca(confdir: Path) -> None:
    confdir = confdir.absolute()
    try:
        _mkdir(confdir)
        ensure_ca(confdir)
    except OSError as e:
        raise StartupError(
            "confdir", f"cannot write the CA to {confdir}: {reason(e)}; choose a directory you can write"
        ) from None
    except ValueError as e:  # a CA file that is there but is not a key and certificate
        raise StartupError(
            "confdir", f"{confdir / CA_PRIVATE} is not a usable CA ({e}); move it away"
        ) from None


def writable_dir(setting: str, directory: Path, what: str) -> None:
    try:
        _mkdir(directory)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise StartupError(
            setting, f"cannot create {what} in {directory}: {reason(e)}; choose a directory you can write"
        ) from None


def writable_file(setting: str, path: Path, what: str, *, fatal: bool = True) -> None:
    """An existing file must open for writing (opened, not changed); else fail, or only warn."""
    if not path.exists():
        return
    try:
        with path.open("r+b"):
            pass
    except OSError as e:
        problem = StartupError(
            setting, f"cannot write {what} {path}: {reason(e)}; fix its permissions or choose another path"
        )
        if fatal or isinstance(e, IsADirectoryError):  # a mistake no waiting fixes
            raise problem from None
        log.warning("%s (recording is spooled until it can)", problem)


def _mkdir(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(directory))
    directory.mkdir(parents=True, exist_ok=True)


def warn_relative_database(settings: Settings) -> None:
    path = Path(settings.sqlite_path)
    if not path.is_absolute() and path.parts and path.parts[0] in _ABSOLUTE_LOOKING:
        log.warning(
            "the database %s is relative to the working directory (%s); for /%s write sqlite:////%s",
            path,
            settings.database_file,
            path,
            path,
        )


def free_ports(settings: Settings) -> None:
    host, port = settings.proxy_addr
    wanted = [("proxy_addr", host, port), *(("reverse", host, r.port) for r in settings.reverse)]
    wanted.append(("api_addr", *settings.api_addr))
    for setting, host, port in wanted:
        if port == 0:  # the system picks a free one
            continue
        try:
            _try_bind(host, port)
        except OSError as e:
            hint = "choose another port or stop what uses it"
            if e.errno in (errno.EACCES, errno.EPERM):
                hint = "ports below 1024 need privileges; choose a higher one"
            elif e.errno == errno.EADDRNOTAVAIL:
                hint = "that address is not one of this machine's"
            raise StartupError(setting, f"cannot listen on {host}:{port}: {reason(e)}; {hint}") from None


def _try_bind(host: str, port: int) -> None:
    """Bind as asyncio's servers do (SO_REUSEADDR) and let go at once."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            if os.name == "posix":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
