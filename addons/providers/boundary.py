"""The plug-in boundary: what a parser module promises its callers, whatever input it meets.

Parser modules read provider JSON as the provider documents it; input shaped otherwise (a list
where an object belongs, a number where text does) can make them raise anywhere. Here that is
contained once for every module: `parse_request` never raises on decoded JSON, `feed` never raises
(a chunk it cannot read is skipped and remembered as the parser's `fault`), `finish` raises only
`ParseError`, and a response's ids and names are strings.
"""

from __future__ import annotations

from typing import Any

from addons.normalized import Request, Response
from addons.providers.base import Api, Call, ParseError, ResponseParser, noting
from addons.providers.clients import header_signals


class Guarded:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.name = api.name
        self.vendor = api.vendor

    def matches(self, method: str, path: str) -> bool:
        return self.api.matches(method, path)

    def parse_request(self, body: Any, call: Call) -> Request:
        """Never refuses decoded JSON: what the module cannot read becomes a warning, and a body
        it cannot read at all still gives the call its API and model, so it joins its run."""
        with noting() as notes:
            try:
                request = self.api.parse_request(body, call)
            except Exception as e:
                detail = str(e) if isinstance(e, ParseError) else f"{type(e).__name__}: {e}"
                unread = f"could not read the request: {detail}"
                request = Request(api=self.name, model=_model(body), warnings=[unread])
        request.warnings.extend(notes)
        request.signals = header_signals(call.headers, request.signals)
        return request

    def response_parser(self, call: Call, content_type: str, status: int) -> ResponseParser:
        return GuardedParser(self.api.response_parser(call, content_type, status))


class GuardedParser:
    def __init__(self, parser: ResponseParser) -> None:
        self.parser = parser
        self.fault: str | None = None  # the first input the parser could not read
        # a parser of whole bodies reads this many bytes at most (None: it reads all it is given)
        limit = getattr(parser, "body_limit", None)
        self.body_limit: int | None = limit if isinstance(limit, int) else None

    def feed(self, data: bytes) -> None:
        try:
            self.parser.feed(data)
        except Exception as e:
            self.fault = self.fault or f"skipped input the parser could not read ({type(e).__name__}: {e})"

    def finish(self) -> Response:
        try:
            response = self.parser.finish()
        except ParseError:
            raise
        except Exception as e:
            raise ParseError(f"unexpected response shape ({type(e).__name__}: {e})") from e
        if self.fault:
            response.warnings.append(self.fault)
        response.warnings = kept_warnings(response.warnings)
        return strings(response)


# Warnings a response keeps: a stream of junk events has one per event (thousands, within the
# stream's CPU bound), and a reader needs the first few and how many there were.
MAX_WARNINGS = 50


def kept_warnings(warnings: list[str]) -> list[str]:
    if len(warnings) <= MAX_WARNINGS:
        return warnings
    return [*warnings[: MAX_WARNINGS - 1], f"and {len(warnings) - MAX_WARNINGS + 1} more warnings"]


def _model(body: Any) -> str | None:
    model = body.get("model") if isinstance(body, dict) else None
    return model[:200] if isinstance(model, str) else None


def strings(response: Response) -> Response:
    """Ids and names come off the wire: anything but a string (or a number) is dropped."""
    for name in ("id", "model", "raw_finish_reason"):
        value = getattr(response, name)
        if value is not None and not isinstance(value, str):
            setattr(response, name, str(value) if isinstance(value, int | float) else None)
    return response


def unwrap(api: Api | None) -> Api | None:
    """The module's own API under the guard (for callers that care which module answers)."""
    return api.api if isinstance(api, Guarded) else api
