"""How an attempt ended: its status and `error.class`, from the status code, body and flow error."""

from __future__ import annotations

from dataclasses import dataclass

from addons.normalized import Error, ErrorClass, Response
from addons.providers.base import error_class_for_status

_CANCELED = ("client disconnected", "stream reset by client", "cancel", "client closed")
_TIMEOUT = ("timeout", "timed out")


@dataclass(slots=True)
class Outcome:
    status: str  # attempt status: completed | failed | interrupted
    error: Error | None = None


def _error(error_class: ErrorClass, message: str, type_: str | None = None) -> Error:
    return Error.model_validate({"class": error_class, "message": message, "type": type_})


def classify_flow_error(message: str) -> ErrorClass:
    lower = message.lower()
    if any(word in lower for word in _CANCELED):
        return "canceled"
    if any(word in lower for word in _TIMEOUT):
        return "timeout"
    return "connection_error"


def decide(
    http_status: int | None,
    response: Response | None,
    flow_error: str | None,
    fault: str | None,
    client_gone: bool = False,
) -> Outcome:
    """The attempt's ending, most telling evidence first. A response that arrived whole (a
    stream's terminal event included) completed, whatever the client did next: SDKs close the
    connection right after `[DONE]`."""
    delivered = (
        response is not None
        and response.complete
        and response.error is None
        and (response.finish_reason is not None or bool(response.content))
        and (http_status is None or http_status < 400)
    )
    if flow_error is not None and not delivered:
        error_class = "canceled" if client_gone else classify_flow_error(flow_error)
        status = "interrupted" if error_class == "canceled" else "failed"
        return Outcome(status, _error(error_class, flow_error))
    if http_status is not None and http_status >= 400:
        if response is not None and response.error is not None:
            return Outcome("failed", response.error)
        return Outcome("failed", _error(error_class_for_status(http_status), f"HTTP {http_status}"))  # type: ignore[arg-type]
    if response is not None and response.error is not None:
        return Outcome("failed", response.error)
    if response is not None and not response.complete:
        return Outcome("failed", _error("stream_error", "the stream ended without its terminal event"))
    if fault is not None:
        return Outcome("completed", _error("proxy_error", fault))
    return Outcome("completed")
