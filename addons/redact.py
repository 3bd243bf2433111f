"""Secrets never reach storage: headers, URLs, JSON fields and text are scrubbed here."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlsplit, urlunsplit

import orjson

REDACTED = "[REDACTED]"

_SECRET_HEADERS = {
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-amz-security-token",
}
_SECRET_HEADER_WORDS = ("key", "token", "secret", "auth")
_RATE_LIMIT = re.compile(r"rate-?limit", re.IGNORECASE)

_SECRET_PARAMS = {
    "key", "apikey", "token", "accesstoken", "authtoken", "secret", "clientsecret", "password",
    "sig", "signature", "code", "xamzsignature", "xamzcredential", "xamzsecuritytoken",
}  # fmt: skip
_SECRET_FIELDS = {
    "apikey", "xapikey", "password", "passwd", "secret", "token", "accesstoken", "refreshtoken",
    "idtoken", "sessiontoken", "authtoken", "bearertoken", "clientsecret", "privatekey",
    "secretkey", "accesskey", "secretaccesskey", "authorization", "auth", "credentials", "cookie",
}  # fmt: skip
_SECRET_FIELD_ENDINGS = ("apikey", "password", "secret", "accesstoken", "privatekey", "secretkey")

# Key formats of the providers we see; also catches the masked keys error messages echo back.
_KEY_PATTERN = re.compile(
    r"\b(?:sk-[A-Za-z0-9_*\-]{8,}|AIza[0-9A-Za-z_\-]{30,}|AKIA[0-9A-Z]{16}"
    r"|(?:xai|gsk|hf|pplx|csk|fw)[-_][A-Za-z0-9]{20,})"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/\-]{8,}=*"
)


def _squash(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "")


@cache
def is_secret_header(name: str) -> bool:
    lower = name.lower()
    if lower in _SECRET_HEADERS:
        return True
    if _RATE_LIMIT.search(lower):
        return False
    return any(word in lower for word in _SECRET_HEADER_WORDS)


@cache
def is_secret_field(name: str) -> bool:
    squashed = _squash(name)
    return squashed in _SECRET_FIELDS or squashed.endswith(_SECRET_FIELD_ENDINGS)


def headers(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-case header names to values, secrets replaced; repeated headers joined by ', '."""
    out: dict[str, str] = {}
    for name, value in items:
        name = name.lower()
        value = REDACTED if is_secret_header(name) else value
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def secret_values(header_items: Iterable[tuple[str, str]], url: str) -> set[str]:
    """The credentials a request carries, so their values can be scrubbed from any text."""
    found: set[str] = set()
    for name, value in header_items:
        if is_secret_header(name):
            found.add(value)
            if " " in value:
                found.add(value.split(" ", 1)[1])  # "Bearer <token>"
    parts = urlsplit(url)
    if parts.password:
        found.add(parts.password)
    found.update(v for k, v in parse_qsl(parts.query) if _squash(k) in _SECRET_PARAMS)
    return {v for v in found if len(v) >= 8}


def url(raw: str) -> str:
    """The URL without user-info and with credential query parameters redacted (the rest as sent)."""
    parts = urlsplit(raw)
    netloc = parts.netloc.rpartition("@")[2]
    pairs = parts.query.split("&") if parts.query else []
    query = "&".join(
        f"{name}={REDACTED}"
        if sep and _squash(unquote_plus(name)) in _SECRET_PARAMS
        else f"{name}{sep}{value}"
        for name, sep, value in (pair.partition("=") for pair in pairs)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def json_fields(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of a decoded JSON value with credential-named fields redacted at any depth, and
    known credential values and key-shaped strings scrubbed from every string in it."""
    secrets = [s for s in secrets if s]
    text = orjson.dumps(value).decode()  # one fast look at everything: most dumps need no scrubbing
    scrub = any(s in text for s in [*secrets, *_KEY_HINTS]) and (
        any(s in text for s in secrets) or _KEY_PATTERN.search(text) is not None
    )
    return _fields(value, secrets if scrub else None)


def _fields(value: Any, secrets: list[str] | None) -> Any:
    if isinstance(value, dict):
        return {
            k: REDACTED if is_secret_field(k) and isinstance(v, str | int) else _fields(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_fields(v, secrets) for v in value]
    if isinstance(value, str) and secrets is not None:
        return _scrub(value, secrets)
    return value


_KEY_HINTS = ("sk-", "AIza", "AKIA", "xai-", "gsk_", "hf_", "pplx-", "csk-", "fw_", "earer", "EARER")


def _scrub(raw: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret in raw:
            raw = raw.replace(secret, REDACTED)
    if any(hint in raw for hint in _KEY_HINTS):  # substring tests are far cheaper than the regex
        raw = _KEY_PATTERN.sub(REDACTED, raw)
    return raw


# Only keys that could name a credential are looked at twice: most JSON keys never match.
_FIELD_IN_TEXT = re.compile(
    r'"([A-Za-z_\-]{0,30}(?:key|password|passwd|secret|token|auth|credential|cookie)[A-Za-z_\-]{0,30})"'
    r'\s*:\s*"((?:[^"\\]|\\.)*)"',
    re.IGNORECASE,
)


def text(raw: str, secrets: Iterable[str] = ()) -> str:
    """Scrub known credential values, key-shaped strings and credential JSON fields from text."""
    return _FIELD_IN_TEXT.sub(_redact_field, _scrub(raw, secrets))


def _redact_field(match: re.Match[str]) -> str:
    if is_secret_field(match.group(1)):
        return f'"{match.group(1)}": "{REDACTED}"'
    return match.group(0)
