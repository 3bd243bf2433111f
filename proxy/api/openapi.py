"""The OpenAPI 3.1 document, generated from the route table and its pydantic models.

Parameters come from the query models the handlers validate with, responses from the models
they serialise with: the document cannot drift from the code.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from proxy.api import models as m

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Served without a token; every other route needs `Authorization: Bearer <token>` when one is set.
OPEN = ("/healthz", "/readyz", "/ca.pem", "/openapi.json", "/api/v1/openapi.json")
# No query parameter takes control characters (NUL would end the text SQLite matches on).
NO_CONTROL_CHARACTERS = "^[^\\x00-\\x1f\\x7f]*$"
ERROR_TEXT = {400: "a parameter is invalid, repeated or unknown (the message names it)",
              401: "no valid bearer token", 404: "no such id", 503: "not ready"}  # fmt: skip


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    content_type: str = "application/json"
    errors: tuple[int, ...] = (400, 401)
    alternatives: tuple[dict[str, Any], ...] = ()  # other shapes of the same answer (a query picks)


def _parameters(route: Route) -> list[dict[str, Any]]:
    out = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", route.path)
    ]
    if route.query is not None:
        schema = route.query.model_json_schema()
        for name, prop in schema["properties"].items():
            description = prop.pop("description", None)
            prop.pop("title", None)
            if prop.get("default", 0) is None:  # optional: absent, never `null`, in a query string
                del prop["default"]
                prop = next(s for s in prop.pop("anyOf") if s.get("type") != "null") | prop
            if prop.get("type") == "string":
                prop["pattern"] = NO_CONTROL_CHARACTERS
            param = {
                "name": name,
                "in": "query",
                "required": name in schema.get("required", []),
                "schema": prop,
            }
            if description:
                param["description"] = description
            out.append(param)
    return out


def _responses(route: Route) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "OK" if route.status == 200 else "done"}
    if route.response is not None:
        schema: dict[str, Any] = {"$ref": f"#/components/schemas/{route.response.__name__}"}
        if route.alternatives:
            schema = {"anyOf": [schema, *route.alternatives]}
        ok["content"] = {route.content_type: {"schema": schema}}
    elif route.status != 204:  # a JSON document without a model of its own (this one) or text
        kind = "object" if route.content_type == "application/json" else "string"
        ok["content"] = {route.content_type: {"schema": {"type": kind}}}
    responses = {str(route.status): ok}
    for status in route.errors:
        if status == 503 and route.response is not None:
            schema = {"$ref": f"#/components/schemas/{route.response.__name__}"}
        else:
            schema = {"$ref": "#/components/schemas/ApiError"}
        responses[str(status)] = {
            "description": ERROR_TEXT[status],
            "content": {"application/json": {"schema": schema}},
        }
    return responses


@cache
def _components(models: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    _, schema = models_json_schema(
        [(model, "serialization") for model in models], ref_template="#/components/schemas/{model}"
    )
    return dict(schema.get("$defs", {}))


def document(routes: list[Route], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "operationId": f"{route.method.lower()}_{re.sub(r'[^a-z]+', '_', route.path.lower()).strip('_')}",
            "parameters": _parameters(route),
            "responses": _responses(route),
        }
        if route.path in OPEN:
            operation["security"] = []
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    models = (*(r.response for r in routes if r.response is not None), m.ApiError)
    return {
        "openapi": "3.1.0",
        "info": {"title": "chatdebug-proxy", "version": version,
                 "description": "Runs, steps and attempts recorded from a chat service's LLM traffic."},
        "paths": paths,
        "components": {
            "schemas": _components(tuple(dict.fromkeys(models))),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }  # fmt: skip
