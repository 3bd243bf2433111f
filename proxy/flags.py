"""The command line and the README's settings table, both generated from `Settings`.

Each setting is declared once, in `proxy/settings.py`, with its `Flag`; this module turns those
declarations into argparse options (help naming the environment variable and the default) and
into the Markdown table the README carries. `python -m proxy.flags` prints that table.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Iterable
from pathlib import Path

from pydantic import SecretStr

from proxy.settings import ENV_PREFIX, Flag, Settings, env_name, flags


def default_text(setting: str, flag: Flag) -> str:
    """The default as a person reads it."""
    if flag.default is not None:
        return flag.default
    value = Settings.model_fields[setting].default
    match value:
        case None | SecretStr():
            return "unset"
        case bool():
            return "on" if value else "off"
        case (str() as host, int() as port):
            return f"{host}:{port}"
        case []:
            return "none"
        case float() if value.is_integer():
            return str(int(value))
        case Path():
            return str(value)
        case _:
            return str(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for setting, flag in flags().items():
        env = env_name(setting)
        where = f"env {env}, comma-separated" if flag.repeatable else f"env {env}"
        repeat = "; repeatable" if flag.repeatable else ""
        help_ = f"{flag.help}{repeat} ({where}; default {default_text(setting, flag)})"
        # the env value and the default stay pydantic's: an unset flag is absent, not None
        if Settings.model_fields[setting].annotation is bool:
            parser.add_argument(flag.name, dest=setting, help=help_, action="store_const", const=True)
        else:
            action = "append" if flag.repeatable else "store"
            parser.add_argument(flag.name, dest=setting, help=help_, metavar=flag.metavar, action=action)


def flag_and_env(setting: str) -> str:
    flag = flags().get(setting)
    return f"{flag.name} / {env_name(setting)}" if flag else env_name(setting)


# variables of ours that are not settings: the parser fuzz tests' knobs
NOT_SETTINGS = ("CHATDEBUG_FUZZ_",)


def unknown_env(environ: Iterable[str]) -> tuple[str, str | None] | None:
    """A `CHATDEBUG_*` variable no setting reads, and the closest one that does."""
    known = [setting.upper() for setting in flags()]
    for name in sorted(environ):
        suffix = name.removeprefix(ENV_PREFIX)
        if name.startswith(ENV_PREFIX) and suffix not in known and not name.startswith(NOT_SETTINGS):
            close = difflib.get_close_matches(suffix, known, n=1, cutoff=0.6)
            return name, ENV_PREFIX + close[0] if close else None
    return None


def settings_table() -> str:
    """The README's settings table."""
    rows = ["| env | flag | default | what it sets |", "|---|---|---|---|"]
    for setting, flag in flags().items():
        usage = f"`{flag.name} {flag.metavar}`" if flag.metavar else f"`{flag.name}`"
        if flag.repeatable:
            usage += " (repeatable; comma-separated in env)"
        rows.append(
            f"| `{env_name(setting)}` | {usage} | {_code(default_text(setting, flag))} | {flag.help} |"
        )
    return "\n".join(rows) + "\n"


def _code(text: str) -> str:
    """Values in backticks, descriptions of defaults in plain words."""
    return text if " " in text or text in ("unset", "none", "off", "on") else f"`{text}`"


def _main() -> None:
    print(settings_table(), end="")


if __name__ == "__main__":
    _main()
