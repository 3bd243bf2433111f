"""The known APIs, and which one a request speaks.

Adding an API is one module with an `API` object and one line here. The first match wins, so a
more specific path goes before a more general one.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from addons.normalized import Request
from addons.providers import (
    anthropic_messages,
    bedrock,
    gemini,
    ollama,
    openai_chat,
    openai_responses,
)
from addons.providers.base import Api, Call, ResponseParser
from addons.providers.boundary import Guarded

_AZURE_DEPLOYMENT = re.compile(r"/openai/deployments/([^/]+)/")


class AzureDeployment:
    """An OpenAI API as Azure serves it: `/openai/deployments/{deployment}/...`.

    The request is the wrapped API's own; only the model differs, since Azure names it by the
    deployment in the path and the body usually carries none.
    """

    def __init__(self, api: Api) -> None:
        self.api = api
        self.name = api.name
        self.vendor = api.vendor

    def matches(self, method: str, path: str) -> bool:
        return _AZURE_DEPLOYMENT.search(path) is not None and self.api.matches(method, path)

    def parse_request(self, body: Any, call: Call) -> Request:
        request = self.api.parse_request(body, call)
        if not request.model and (match := _AZURE_DEPLOYMENT.search(call.path)):
            request.model = unquote(match.group(1))
        return request

    def response_parser(self, call: Call, content_type: str, status: int) -> ResponseParser:
        return self.api.response_parser(call, content_type, status)


APIS: list[Api] = [
    Guarded(api)  # what every module promises, held once at the boundary
    for api in (
        AzureDeployment(openai_chat.API),
        AzureDeployment(openai_responses.API),
        openai_chat.API,  # any path ending /chat/completions: OpenAI and most compatible servers
        anthropic_messages.API,
        openai_responses.API,
        gemini.API,
        ollama.API,
        ollama.GENERATE,
        bedrock.API,
    )
]


def find_api(method: str, path: str) -> Api | None:
    """The API a request speaks, from its method and path (without the query string)."""
    for api in APIS:
        if api.matches(method, path):
            return api
    return None
