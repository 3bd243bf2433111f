"""Cost: the price table's own figures for each provider's usage shapes; unknown stays unknown."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import genai_prices
import pytest

from addons.cost import Prices, add
from addons.normalized import Usage
from addons.providers import anthropic_messages, gemini, openai_chat, openai_responses

AT = datetime(2026, 11, 30, 12, tzinfo=UTC).timestamp()

# (our provider, the table's provider, model, usage as each provider's parser normalizes it)
CASES = [
    ("openai", "openai", "gpt-4.1", openai_chat.parse_usage(
        {"prompt_tokens": 2000, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 1500}})),
    ("openai", "openai", "o3", openai_responses.parse_usage(
        {"input_tokens": 900, "output_tokens": 1200, "input_tokens_details": {"cached_tokens": 100},
         "output_tokens_details": {"reasoning_tokens": 1000}})),
    ("anthropic", "anthropic", "claude-sonnet-4-5", anthropic_messages.parse_usage(
        {"input_tokens": 40, "output_tokens": 500, "cache_read_input_tokens": 30000,
         "cache_creation_input_tokens": 2000})),
    ("gemini", "google", "gemini-2.5-pro", gemini.parse_usage(  # past the 200k long-context tier
        {"promptTokenCount": 250000, "candidatesTokenCount": 800, "thoughtsTokenCount": 1200,
         "cachedContentTokenCount": 100000})),
    ("gemini", "google", "gemini-2.5-flash", gemini.parse_usage({"promptTokenCount": 1000, "candidatesTokenCount": 50})),
]  # fmt: skip


@pytest.mark.parametrize(("ours", "theirs", "model", "usage"), CASES, ids=[c[2] for c in CASES])
def test_cost_equals_the_librarys_own_figures(
    ours: str, theirs: str, model: str, usage: Usage | None
) -> None:
    assert usage is not None
    cost = Prices().cost(ours, model, usage, AT)
    assert cost is not None
    expected = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
        ),
        model,
        provider_id=theirs,
        genai_request_timestamp=datetime.fromtimestamp(AT, UTC),
    )
    assert cost.total == pytest.approx(float(expected.total_price), rel=1e-9)
    assert cost.output == pytest.approx(float(expected.output_price), rel=1e-9)
    assert cost.input + cost.cache_read + cost.cache_write == pytest.approx(
        float(expected.input_price), rel=1e-9
    )
    assert cost.total > 0 and cost.currency == "USD" and "genai-prices" in cost.source
    if usage.cache_read_tokens:
        assert 0 < cost.cache_read < cost.total


def test_unknown_models_and_local_servers_cost_nothing_known() -> None:
    usage = Usage(input_tokens=10, output_tokens=10)
    assert Prices().cost("openai", "my-finetune-that-does-not-exist", usage, AT) is None
    assert Prices().cost("ollama", "llama3.1", usage, AT) is None
    assert Prices().cost("openai", None, usage, AT) is None
    assert Prices().cost("openai", "gpt-4.1", Usage(), AT) is None  # nothing used, nothing to price


def test_a_price_file_adds_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"prices": [
        {"model": "acme-.*", "input_mtok": 1.0, "output_mtok": 2.0, "cache_read_mtok": 0.1},
        {"model": "gpt-4\\.1", "provider": "openai", "input_mtok": 100.0, "output_mtok": 100.0},
    ]}))  # fmt: skip
    prices = Prices([path])
    cost = prices.cost("openai_compatible", "acme-7b", Usage(input_tokens=1_000_000, output_tokens=500_000,
                                                            cache_read_tokens=400_000), AT)  # fmt: skip
    assert cost is not None
    assert (cost.input, cost.cache_read, cost.output, cost.total) == pytest.approx((0.6, 0.04, 1.0, 1.64))
    assert cost.source == "price file prices.json"
    assert prices.cost(
        "openai", "gpt-4.1", Usage(input_tokens=10_000, output_tokens=0), AT
    ).total == pytest.approx(1.0)
    assert prices.cost("azure_openai", "gpt-4.1", Usage(input_tokens=10_000), AT).source.startswith(
        "genai-prices"
    )


def test_sums_keep_unknown_apart_from_zero() -> None:
    a = {
        "input": 1.0,
        "output": 2.0,
        "cache_read": 0.0,
        "cache_write": 0.0,
        "total": 3.0,
        "currency": "USD",
        "source": "x",
    }
    assert add(None, None) is None
    assert add(a, None) == a
    assert add(a, a)["total"] == 6.0


def test_a_recorded_call_carries_its_cost_up_to_run_conversation_and_stats(sidecar, upstream) -> None:  # type: ignore[no-untyped-def]
    from tests import wire
    from tests.conftest import unique
    from tests.test_e2e_record import openai_client
    from tests.upstream import Reply

    marker = unique("priced")
    before = sidecar.get("/api/v1/stats")["cost"]["total"] or 0.0
    upstream.push(
        Reply.json(
            wire.openai_completion("ok", usage=wire.openai_usage(prompt=1000, completion=100, cached=400))
        )
    )
    openai_client(sidecar, upstream).chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": marker}]
    )
    (run,) = sidecar.wait_runs(1, q=marker)
    detail = sidecar.run(run["id"])
    attempt = detail["steps"][0]["attempts"][0]
    expected = Prices().cost(
        "openai_compatible", "gpt-4.1", Usage(input_tokens=1000, output_tokens=100, cache_read_tokens=400), AT
    )
    assert expected is not None
    assert attempt["cost"]["total"] == pytest.approx(expected.total)
    assert detail["cost"]["total"] == detail["steps"][0]["cost"]["total"] == attempt["cost"]["total"]
    conversation = next(
        c
        for c in sidecar.get("/api/v1/conversations", limit=500)["conversations"]
        if c["id"] == run["conversation_id"]
    )
    assert conversation["cost_total"] == pytest.approx(expected.total)
    assert conversation["kinds"] == ["chat_turn"] and conversation["total_tokens"] == 1100
    assert sidecar.get("/api/v1/stats")["cost"]["total"] == pytest.approx(before + expected.total)
