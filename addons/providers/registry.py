"""The known APIs, and which one a request speaks.

Adding an API is one module with an `API` object and one line here.
"""

from __future__ import annotations

from addons.providers import anthropic_messages, openai_chat
from addons.providers.base import Api

APIS: list[Api] = [
    openai_chat.API,
    anthropic_messages.API,
]


def find_api(method: str, path: str) -> Api | None:
    """The API a request speaks, from its method and path (without the query string)."""
    for api in APIS:
        if api.matches(method, path):
            return api
    return None
