"""The API's one error shape: `{"error": {"code", "message"}}` with its HTTP status."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


class ApiError(web.HTTPException):
    def __init__(self, status: int, code: str, message: str) -> None:
        self.status_code = status
        error = orjson.dumps({"error": {"code": code, "message": message}}).decode()
        super().__init__(text=error, content_type="application/json")


def or_404(value: Any, what: str, key: str) -> Any:
    if value is None:
        raise ApiError(404, "not_found", f"no {what} {key!r}")
    return value
