"""The USD cost of a call: the endpoint's own prices when configured, else genai-prices.

genai-prices counts ``input_tokens`` with the cache tokens included and prices cache reads
and writes at their own rates — the same convention as ``Usage``. The cost source is
recorded with the cost (``config``, ``genai-prices <version>``, or None when the model
is unknown to both), so a table reader knows which figures are estimates.

genai-prices takes 1–3 ms of CPU to price one call (it resolves units and validates each
time), on the event loop, for every call. Most models have flat prices per token, so a
price is an affine function of the four token counts: the gateway asks genai-prices once
per model price for its coefficients (``_Affine``) and then prices each call with four
multiplications. Models with tiered prices (long-context rates) are priced by genai-prices
on every call, as before; ``test_gateway_pricing`` checks both paths against calc_price.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from otel_ingest.gateway.config import Endpoint, Provider
from otel_ingest.gateway.usage import Usage

log = logging.getLogger("otel_ingest.gateway.pricing")

_GENAI_PROVIDER: dict[Provider, str | None] = {
    "anthropic": "anthropic",
    "openai": "openai",
    "google": "google",
    "openai-compatible": None,
}


@lru_cache(maxsize=1)
def _genai_version() -> str:
    from importlib.metadata import version

    return f"genai-prices {version('genai-prices')}"


def cost(endpoint: Endpoint, model: str, usage: Usage) -> tuple[float | None, str | None]:
    """(USD, source) for ``usage`` of ``model`` on ``endpoint``."""
    prices = endpoint.prices
    if prices is not None:
        read = usage.cache_read_input_tokens
        write = usage.cache_creation_input_tokens
        plain = max(0, usage.input_tokens - read - write)
        total = (
            plain * prices.input
            + read * (prices.cache_read if prices.cache_read is not None else prices.input)
            + write * (prices.cache_write if prices.cache_write is not None else prices.input)
            + usage.output_tokens * prices.output
        ) / 1_000_000
        return total, "config"
    provider = _GENAI_PROVIDER[endpoint.provider]
    if provider is None:
        return None, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            price = genai_cost(provider, model, usage)
    except LookupError:
        return None, None
    except Exception:  # a pricing bug must not fail the call or the usage row
        log.warning("genai-prices could not price %s on %s.", model, endpoint.name, exc_info=True)
        return None, None
    return price, _genai_version()


@dataclass(frozen=True)
class _Affine:
    """USD = per_call + per-token prices × the token counts (plain input excludes cache),
    for calls with fewer than ``below`` tokens (tiered prices change above their first tier)."""

    per_call: float
    input: float
    cache_read: float
    cache_write: float
    output: float
    below: float


_MILLION = 1_000_000
_MODELS: dict[tuple[str, str], Any] = {}  # (provider id, model) → (provider, ModelInfo), or None if unknown
_AFFINE: dict[int, tuple[Any, _Affine | None]] = {}  # id(ModelPrice) → (it, its coefficients)


def _affine(model_price: Any) -> _Affine | None:
    """The coefficients of a model price below its first tier (None: a price genai-prices
    computes in a way this does not follow)."""
    from genai_prices import Usage as PriceUsage
    from genai_prices.types import TieredPrices

    starts: list[int] = []
    for value in vars(model_price).values():
        if isinstance(value, TieredPrices):
            starts.extend(tier.start for tier in value.tiers)
        elif value is not None and not isinstance(value, Decimal):
            return None
    below = float(min(starts)) if starts else float("inf")
    probe = int(min(_MILLION, max(1, below // 4)))

    def price(**tokens: int) -> float:
        return float(model_price.calc_price(PriceUsage(**tokens))["total_price"])

    base = price()
    return _Affine(
        per_call=base,
        input=(price(input_tokens=probe) - base) / probe,
        cache_read=(price(input_tokens=probe, cache_read_tokens=probe) - base) / probe,
        cache_write=(price(input_tokens=probe, cache_write_tokens=probe) - base) / probe,
        output=(price(output_tokens=probe) - base) / probe,
        below=below,
    )


def genai_cost(provider_id: str, model: str, usage: Usage, when: dt.datetime | None = None) -> float:
    """USD for ``usage`` by genai-prices' data; raises LookupError for an unknown model."""
    from genai_prices import Usage as PriceUsage
    from genai_prices import data_snapshot

    key = (provider_id, model.lower())
    if key not in _MODELS:
        try:
            _MODELS[key] = data_snapshot.get_snapshot().find_provider_model(model, None, provider_id, None)
        except LookupError:
            _MODELS[key] = None
        if len(_MODELS) > 10_000:  # clients choose model names: keep the cache bounded
            _MODELS.clear()
    found = _MODELS.get(key)
    if found is None:
        raise LookupError(f"genai-prices does not know {model!r} of {provider_id}")
    provider, info = found
    model_price = info.get_prices(when or dt.datetime.now(dt.UTC))
    cached = _AFFINE.get(id(model_price))
    if cached is None or cached[0] is not model_price:
        cached = _AFFINE[id(model_price)] = (model_price, _affine(model_price))
    affine = cached[1]
    if affine is None or usage.input_tokens + usage.output_tokens >= affine.below:
        priced = info.calc_price(
            PriceUsage(
                input_tokens=usage.input_tokens,
                cache_read_tokens=usage.cache_read_input_tokens,
                cache_write_tokens=usage.cache_creation_input_tokens,
                output_tokens=usage.output_tokens,
            ),
            provider,
            genai_request_timestamp=when,
        )
        return float(priced.total_price)
    read, write = usage.cache_read_input_tokens, usage.cache_creation_input_tokens
    return (
        affine.per_call
        + max(0, usage.input_tokens - read - write) * affine.input
        + read * affine.cache_read
        + write * affine.cache_write
        + usage.output_tokens * affine.output
    )


def warm_up_prices() -> None:
    """Load genai-prices' data now rather than during the first call."""
    import contextlib

    with contextlib.suppress(Exception):
        from genai_prices import Usage as PriceUsage
        from genai_prices import calc_price

        calc_price(PriceUsage(input_tokens=1, output_tokens=1), "gpt-4o", provider_id="openai")
