"""Reading a request: query parameters as a model, and the keyset cursors pages hand out."""

from __future__ import annotations

import base64
import binascii
import re

from aiohttp import web
from pydantic import BaseModel, ValidationError

from proxy.api.errors import ApiError
from proxy.api.openapi import NO_CONTROL_CHARACTERS


def params[Q: BaseModel](request: web.Request, model: type[Q]) -> Q:
    """Query parameters as a model; a bad, repeated or unknown one is a 400 that names it (a
    mistyped filter must not read as no filter)."""
    known = {f.alias or name for name, f in model.model_fields.items()}
    if unknown := sorted(set(request.query) - known):
        valid = ", ".join(sorted(known)) or "none"
        raise ApiError(400, "bad_request", f"{', '.join(unknown)}: unknown parameter (valid: {valid})")
    for name in request.query:
        values = request.query.getall(name)
        if len(values) > 1:
            raise ApiError(400, "bad_request", f"{name}: given {len(values)} times, give it once")
        if not _NO_CONTROL.fullmatch(values[0]):
            raise ApiError(400, "bad_request", f"{name}: control characters are not allowed")
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as e:
        first = e.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "query"
        raise ApiError(400, "bad_request", f"{name}: {first['msg']}") from None


_NO_CONTROL = re.compile(NO_CONTROL_CHARACTERS)  # NUL ends a C string: `q=%00` matched every run


def encode_cursor(*key: str) -> str:
    return base64.urlsafe_b64encode("\x1f".join(key).encode()).decode().rstrip("=")


def decode_cursor(raw: str | None) -> tuple[str, str] | None:
    if raw is None:
        return None
    try:
        first, sep, second = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode().partition("\x1f")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        sep = ""
    if not sep:
        raise ApiError(400, "bad_request", "cursor: not a cursor this API returned")
    return first, second
