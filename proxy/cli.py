"""`chatdebug [run] [flags]`: flags override `CHATDEBUG_*` environment variables."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from proxy import VERSION
from proxy.app import serve
from proxy.flags import add_arguments, flag_and_env, unknown_env
from proxy.preflight import StartupError
from proxy.settings import Settings

BAD_SETTING = 2


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="chatdebug",
        description="Record a chat service's LLM traffic as runs, steps and attempts. "
        "Every flag has an environment variable; flags win.",
    )
    p.add_argument("command", nargs="?", default="run", choices=["run"], help="run the sidecar (default)")
    p.add_argument("--version", action="version", version=f"chatdebug {VERSION}")
    add_arguments(p)
    return p


def load_settings(argv: list[str]) -> Settings:
    return settings_from(parser().parse_args(argv))


def settings_from(parsed: argparse.Namespace) -> Settings:
    args = vars(parsed)
    args.pop("command")
    given: dict[str, Any] = {k: v for k, v in args.items() if v is not None}
    return Settings(**given)


def describe(error: ValidationError) -> str:
    first = error.errors()[0]
    setting = ".".join(str(p) for p in first["loc"] if not isinstance(p, int))
    message = str(first["msg"]).removeprefix("Value error, ")
    if not setting and ":" in message:
        setting, _, message = message.partition(": ")
    return f"chatdebug: invalid setting {flag_and_env(setting)}: {message}"


def check_environment() -> str | None:
    """A mistyped variable would be ignored silently, and its setting left at the default."""
    found = unknown_env(os.environ)
    if found is None:
        return None
    name, close = found
    hint = f"did you mean {close}?" if close else "no setting has that name (see chatdebug --help)"
    return f"chatdebug: unknown setting {name}: {hint}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # the commands for people at a terminal (runs, show, tail, export) live in proxy.terminal,
    # imported only for them: its rich and readers would stay in the sidecar's memory for good
    if argv and not argv[0].startswith("-") and argv[0] != "run":
        from proxy import terminal

        if argv[0] in terminal.COMMANDS:
            return terminal.main(argv)
    parsed = parser().parse_args(argv)  # --help, --version exit here
    if problem := check_environment():
        print(problem, file=sys.stderr)
        return BAD_SETTING
    try:
        settings = settings_from(parsed)
    except ValidationError as e:
        print(describe(e), file=sys.stderr)
        return BAD_SETTING
    except SettingsError as e:
        print(f"chatdebug: invalid setting: {e}", file=sys.stderr)
        return BAD_SETTING
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiosqlite", "mitmproxy", "hpack", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        asyncio.run(serve(settings))
    except StartupError as e:
        print(f"chatdebug: {e}", file=sys.stderr)
        return BAD_SETTING
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
