"""What a call cost, from its normalized usage and a maintained price table at the time of the call.

Prices come from `genai-prices` (time-aware, cache reads and writes, long-context tiers priced as
the provider bills them); a user's price file (`--prices`) adds or overrides models. A model
whose price is not known costs `None`, never a guess. The library's totals are kept as it
computes them; the split into input / cache read / cache write uses its own unit prices at the
tier the call's input reached.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import genai_prices
import orjson
from genai_prices import data_snapshot
from genai_prices.types import ModelPrice, TieredPrices
from pydantic import BaseModel, ConfigDict

from addons.normalized import Usage

log = logging.getLogger(__name__)

# Our provider names (from the host) as the price table names them; `*_compatible` hosts are
# priced by what the model name says (a gateway in front of a known vendor).
PROVIDERS = {
    "openai": "openai",
    "azure_openai": "azure",
    "anthropic": "anthropic",
    "gemini": "google",
    "vertex_ai": "google",
    "openrouter": "openrouter",
    "groq": "groq",
    "mistral": "mistral",
    "deepseek": "deepseek",
    "xai": "x-ai",
    "together": "together",
    "fireworks": "fireworks",
    "cerebras": "cerebras",
    "perplexity": "perplexity",
    "cohere": "cohere",
    "bedrock": "aws",
}
MILLION = Decimal(1_000_000)
SOURCE = f"genai-prices {genai_prices.__version__}"


class PriceOverride(BaseModel):
    """One model's price per million tokens, in USD."""

    model_config = ConfigDict(extra="forbid")

    model: str  # a regular expression over the model name, matched in full
    provider: str | None = None  # ours (`openai`, `anthropic`, ...); any when unset
    input_mtok: float
    output_mtok: float
    cache_read_mtok: float | None = None  # defaults to the input price
    cache_write_mtok: float | None = None  # defaults to the input price


class PriceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prices: list[PriceOverride]


@dataclass(frozen=True, slots=True)
class Cost:
    input: float
    output: float
    cache_read: float
    cache_write: float
    total: float
    source: str
    currency: str = "USD"

    def as_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "output": self.output,
            "cache_read": self.cache_read,
            "cache_write": self.cache_write,
            "total": self.total,
            "currency": self.currency,
            "source": self.source,
        }


def add(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    """The sum of two costs; unknown stays unknown only when both are."""
    if a is None or b is None:
        return a or b
    out = {k: round(a[k] + b[k], 10) for k in ("input", "output", "cache_read", "cache_write", "total")}
    return {**out, "currency": "USD", "source": a["source"] if a["source"] == b["source"] else "mixed"}


class Prices:
    def __init__(self, files: list[Path] | tuple[Path, ...] = ()) -> None:
        self.overrides = [
            (re.compile(o.model), o, f"price file {path.name}")
            for path in files
            for o in PriceFile.model_validate(orjson.loads(path.read_bytes())).prices
        ]

    def cost(self, provider: str, model: str | None, usage: Usage | None, at: float) -> Cost | None:
        if not model or usage is None or not (usage.input_tokens or usage.output_tokens):
            return None
        for pattern, override, source in self.overrides:
            if (override.provider in (None, provider)) and pattern.fullmatch(model):
                return _overridden(override, usage, source)
        found = _model_price(PROVIDERS.get(provider), model, datetime.fromtimestamp(at, UTC).date())
        if found is None:
            return None
        price, source = found
        return priced(price, usage, source)


def priced(price: ModelPrice, usage: Usage, source: str) -> Cost | None:
    """The library's token prices applied as it applies them (each price at the tier the call's
    input reached, cache reads and writes at their own prices); the tests hold this to the
    library's own `calc_price` for every usage shape. Done here because the library's general
    calculation costs ~0.2 ms a call, more than the rest of recording one."""
    if price.input_mtok is None or price.output_mtok is None:
        return None  # priced by something other than tokens (images, seconds): not a guess
    tokens = usage.input_tokens
    read, write = usage.cache_read_tokens, usage.cache_write_tokens
    plain = max(0, tokens - read - write) * _unit(price.input_mtok, tokens)
    cache_read = read * _unit(price.cache_read_mtok, tokens, price.input_mtok)
    cache_write = write * _unit(price.cache_write_mtok, tokens, price.input_mtok)
    output = usage.output_tokens * _unit(price.output_mtok, tokens)
    parts = [float(v / MILLION) for v in (plain, output, cache_read, cache_write)]
    total = float((plain + output + cache_read + cache_write) / MILLION)
    return Cost(*parts, total=total, source=source)


@lru_cache(maxsize=4096)
def _model_price(provider_id: str | None, model: str, day: Any) -> tuple[ModelPrice, str] | None:
    """The model's prices on that day (looked up once per model and day: the lookup walks regexes)."""
    snapshot = data_snapshot.get_snapshot()
    try:
        provider, info = snapshot.find_provider_model(model, None, provider_id, None)
    except LookupError:
        return None
    at = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    return info.get_prices(at), f"{SOURCE} ({provider.id} {info.id})"


def _unit(price: Decimal | TieredPrices | None, tokens: int, fallback: Any = None) -> Decimal:
    """The unit price (per million) at the tier `tokens` of input reached (a cliff, as billed)."""
    if price is None:
        price = fallback
    if price is None:
        return Decimal(0)
    if isinstance(price, TieredPrices):
        unit = price.base
        for tier in price.tiers:
            if tokens > tier.start:
                unit = tier.price
        return unit
    return Decimal(price)


def _overridden(o: PriceOverride, usage: Usage, source: str) -> Cost:
    read = usage.cache_read_tokens * (o.cache_read_mtok if o.cache_read_mtok is not None else o.input_mtok)
    write_price = o.cache_write_mtok if o.cache_write_mtok is not None else o.input_mtok
    write = usage.cache_write_tokens * write_price
    plain = max(0, usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens) * o.input_mtok
    output = usage.output_tokens * o.output_mtok
    parts = [v / 1_000_000 for v in (plain, output, read, write)]
    return Cost(*parts, total=sum(parts), source=source)
