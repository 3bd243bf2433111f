"""`chatdebug [run] [flags]`: flags override `CHATDEBUG_*` environment variables."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from proxy import terminal
from proxy.app import serve
from proxy.mitm import ProxyStartError
from proxy.settings import Settings

# flag -> (setting, help); repeatable flags collect into lists
FLAGS: dict[str, tuple[str, str]] = {
    "--proxy-addr": ("proxy_addr", "HOST:PORT for HTTPS_PROXY/HTTP_PROXY clients (127.0.0.1:8080)"),
    "--api-addr": ("api_addr", "HOST:PORT of the query API (127.0.0.1:8081)"),
    "--database": (
        "database",
        "sqlite:///relative.db or sqlite:////absolute.db (sqlite:///chatdebug.db)",
    ),
    "--confdir": ("confdir", "directory holding the CA; clients trust its ca.pem (~/.chatdebug)"),
    "--intercept-host": (
        "intercept_hosts",
        "extra host, host:port or *.suffix to intercept (repeatable)",
    ),
    "--upstream-ca": (
        "upstream_ca",
        "PEM bundle to verify upstream servers with (self-hosted models)",
    ),
    "--api-token": ("api_token", "bearer token the API requires"),
    "--retention-days": (
        "retention_days",
        "delete runs idle for this many days; 0 keeps forever (30)",
    ),
    "--reverse": (
        "reverse",
        "URL@PORT: also listen on PORT as a reverse proxy to URL (repeatable)",
    ),
    "--text-limit": ("text_limit", "characters kept per text part (10000)"),
    "--capture-limit": ("capture_limit", "bytes of each body kept for recording (1048576)"),
    "--spool-max-bytes": (
        "spool_max_bytes",
        "cap of the spool that holds records while the database is down (268435456)",
    ),
    "--retry-window": ("retry_window", "seconds within which a re-sent request is a retry (30)"),
    "--stale-after": ("stale_after", "seconds after which an idle open run ends interrupted (300)"),
    "--log-level": ("log_level", "debug, info, warning or error (info)"),
    "--cors-origin": ("cors_origins", "browser origin allowed to call the API, or * (repeatable)"),
    "--profiles": (
        "profiles",
        "JSON file of classification profiles, ahead of the built-in ones (repeatable)",
    ),
}
REPEATABLE = {"--intercept-host", "--reverse", "--profiles", "--cors-origin"}
SWITCHES: dict[str, tuple[str, str]] = {
    "--upstream-insecure": ("upstream_insecure", "do not verify upstream TLS certificates"),
    "--api-allow-anonymous": ("api_allow_anonymous", "allow a non-loopback API without a token"),
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chatdebug",
        description="Record a chat service's LLM traffic as runs, steps and attempts.",
    )
    p.add_argument("command", nargs="?", default="run", choices=["run"], help="run the sidecar (default)")
    for flag, (dest, help_) in FLAGS.items():
        p.add_argument(flag, dest=dest, help=help_, action="append" if flag in REPEATABLE else "store")
    for flag, (dest, help_) in SWITCHES.items():
        p.add_argument(flag, dest=dest, help=help_, action="store_const", const=True)
    return p


def _flag_for(setting: str) -> str:
    for flag, (dest, _) in (FLAGS | SWITCHES).items():
        if dest == setting:
            return f"{flag} / CHATDEBUG_{setting.upper()}"
    return f"CHATDEBUG_{setting.upper()}"


def load_settings(argv: list[str]) -> Settings:
    args = vars(parser().parse_args(argv))
    args.pop("command")
    given: dict[str, Any] = {k: v for k, v in args.items() if v is not None}
    return Settings(**given)


def describe(error: ValidationError) -> str:
    first = error.errors()[0]
    setting = ".".join(str(p) for p in first["loc"] if not isinstance(p, int))
    message = str(first["msg"]).removeprefix("Value error, ")
    if not setting and ":" in message:
        setting, _, message = message.partition(": ")
    return f"chatdebug: invalid setting {_flag_for(setting)}: {message}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # the commands for people at a terminal (runs, show, tail, export) live in proxy.terminal
    if argv and argv[0] in terminal.COMMANDS:
        return terminal.main(argv)
    try:
        settings = load_settings(argv)
    except ValidationError as e:
        print(describe(e), file=sys.stderr)
        return 2
    except SettingsError as e:
        print(f"chatdebug: invalid setting: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiosqlite", "mitmproxy", "hpack", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        asyncio.run(serve(settings))
    except (ProxyStartError, OSError) as e:
        print(f"chatdebug: cannot start: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
