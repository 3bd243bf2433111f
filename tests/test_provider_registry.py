"""Which API a request speaks, from its method and path, and Azure's deployment-named model."""

from __future__ import annotations

import pytest

from addons.providers import openai_chat, openai_responses
from addons.providers.base import Call
from addons.providers.boundary import Guarded
from addons.providers.registry import APIS, AzureDeployment, find_api

AZURE_CHAT = "/openai/deployments/gpt-4o-prod/chat/completions"


@pytest.mark.parametrize(
    ("path", "api"),
    [
        ("/v1/chat/completions", "openai.chat_completions"),
        ("/api/v1/chat/completions", "openai.chat_completions"),  # OpenRouter
        ("/openai/v1/chat/completions", "openai.chat_completions"),  # Groq
        (AZURE_CHAT, "openai.chat_completions"),
        ("/v1/messages", "anthropic.messages"),
        ("/v1/responses", "openai.responses"),
        ("/v1/responses/compact", "openai.responses"),
        ("/backend-api/codex/responses", "openai.responses"),
        ("/v1beta/models/gemini-2.5-flash:generateContent", "gemini.generate_content"),
        ("/v1beta/models/gemini-2.5-flash:streamGenerateContent", "gemini.generate_content"),
        ("/v1/projects/p/locations/global/publishers/google/models/gemini-2.5-pro:generateContent",
         "gemini.generate_content"),
        ("/api/chat", "ollama.chat"),
        ("/api/generate", "ollama.generate"),
        ("/model/amazon.nova-pro-v1:0/converse", "bedrock.converse"),
        ("/model/amazon.nova-pro-v1:0/converse-stream", "bedrock.converse"),
    ],
)  # fmt: skip
def test_paths(path: str, api: str) -> None:
    found = find_api("POST", path)
    assert found is not None and found.name == api


@pytest.mark.parametrize(
    "path", ["/v1/models", "/v1/embeddings", "/v1/files", "/api/tags", "/v1/responses/resp_1/cancel"]
)
def test_other_paths_are_not_recorded_as_calls(path: str) -> None:
    assert find_api("POST", path) is None


def test_every_api_names_itself_and_its_vendor() -> None:
    for api in APIS:
        assert api.name and api.vendor


def test_azure_goes_through_openai_chat_and_takes_the_model_from_the_deployment() -> None:
    api = find_api("POST", AZURE_CHAT)
    assert (
        isinstance(api, Guarded) and isinstance(api.api, AzureDeployment) and api.api.api is openai_chat.API
    )
    chat = find_api("POST", "/v1/chat/completions")
    assert isinstance(chat, Guarded) and chat.api is openai_chat.API
    call = Call(
        method="POST", host="myco.openai.azure.com", path=AZURE_CHAT, query={"api-version": "2024-10-21"}
    )
    request = api.parse_request({"messages": [{"role": "user", "content": "hi"}]}, call)
    assert request.api == "openai.chat_completions"
    assert request.model == "gpt-4o-prod"
    # a body that names its model keeps it
    assert api.parse_request({"model": "gpt-4o", "messages": []}, call).model == "gpt-4o"
    # the response side is openai_chat's own
    parser = api.response_parser(call, "application/json", 200)
    parser.feed(b'{"id":"c1","model":"gpt-4o-2024-08-06","choices":[]}')
    assert parser.finish().model == "gpt-4o-2024-08-06"


def test_azure_responses_deployment() -> None:
    path = "/openai/deployments/o4-mini/responses"
    api = find_api("POST", path)
    assert isinstance(api, Guarded) and isinstance(api.api, AzureDeployment)
    assert api.api.api is openai_responses.API
    request = api.parse_request({"input": "hi"}, Call(method="POST", host="x.openai.azure.com", path=path))
    assert (request.api, request.model) == ("openai.responses", "o4-mini")
