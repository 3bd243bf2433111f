"""LLM provider hosts: which CONNECTs to intercept, and which provider a host belongs to."""

from __future__ import annotations

import re
from collections.abc import Iterable

# host pattern -> provider; `*.suffix` matches any subdomain
PROVIDER_HOSTS: dict[str, str] = {
    "api.openai.com": "openai",
    "api.anthropic.com": "anthropic",
    "generativelanguage.googleapis.com": "gemini",
    "*-aiplatform.googleapis.com": "vertex_ai",
    "aiplatform.googleapis.com": "vertex_ai",
    "*.openai.azure.com": "azure_openai",
    "*.services.ai.azure.com": "azure_openai",
    "openrouter.ai": "openrouter",
    "api.groq.com": "groq",
    "api.mistral.ai": "mistral",
    "api.deepseek.com": "deepseek",
    "api.x.ai": "xai",
    "api.together.xyz": "together",
    "api.fireworks.ai": "fireworks",
    "api.cerebras.ai": "cerebras",
    "api.perplexity.ai": "perplexity",
    "api.cohere.com": "cohere",
    "*.bedrock-runtime.amazonaws.com": "bedrock",
}


def _host_regex(pattern: str) -> str:
    """`host`, `host:port` or `*.suffix` (also `*-suffix`) as an anchored regex over `host:port`."""
    host, _, port = pattern.lower().rpartition(":") if _has_port(pattern) else (pattern.lower(), "", "")
    body = r"[^:]+" + re.escape(host[1:]) if host.startswith("*") else re.escape(host)
    return f"^{body}:{re.escape(port) if port else r'\d+'}$"


def _has_port(pattern: str) -> bool:
    head, sep, tail = pattern.rpartition(":")
    return bool(sep) and tail.isdigit() and not head.endswith(":")


def intercept_regexes(extra: Iterable[str] = ()) -> list[str]:
    """mitmproxy `allow_hosts` entries: provider hosts plus the user's extra ones."""
    return [_host_regex(p) for p in [*PROVIDER_HOSTS, *extra]]


def provider_for_host(host: str) -> str | None:
    host = host.lower()
    for pattern, provider in PROVIDER_HOSTS.items():
        if host == pattern or (pattern.startswith("*") and host.endswith(pattern[1:])):
            return provider
    return None
