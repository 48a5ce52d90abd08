"""The USD cost of a call: the endpoint's own prices when configured, else genai-prices.

genai-prices counts ``input_tokens`` with the cache tokens included and prices cache reads
and writes at their own rates — the same convention as ``Usage``. The cost source is
recorded with the cost (``config``, ``genai-prices <version>``, or None when the model
is unknown to both), so a table reader knows which figures are estimates.
"""

from __future__ import annotations

import logging
import warnings
from functools import lru_cache

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
        from genai_prices import Usage as PriceUsage
        from genai_prices import calc_price

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = calc_price(
                PriceUsage(
                    input_tokens=usage.input_tokens,
                    cache_read_tokens=usage.cache_read_input_tokens,
                    cache_write_tokens=usage.cache_creation_input_tokens,
                    output_tokens=usage.output_tokens,
                ),
                model,
                provider_id=provider,
            )
    except LookupError:
        return None, None
    except Exception:  # a pricing bug must not fail the call or the usage row
        log.warning("genai-prices could not price %s on %s.", model, endpoint.name, exc_info=True)
        return None, None
    return float(result.total_price), _genai_version()


def warm_up_prices() -> None:
    """Load genai-prices' data now rather than during the first call."""
    import contextlib

    with contextlib.suppress(Exception):
        from genai_prices import Usage as PriceUsage
        from genai_prices import calc_price

        calc_price(PriceUsage(input_tokens=1, output_tokens=1), "gpt-4o", provider_id="openai")
