"""The gateway prices a call with genai-prices' coefficients resolved once per model price;
these are the prices genai-prices itself computes, below and above a tier, for flat and
tiered models, and an unknown model stays unknown."""

from __future__ import annotations

import genai_prices
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_ingest.gateway.pricing import genai_cost
from otel_ingest.gateway.usage import Usage

MODELS = [
    ("anthropic", "claude-sonnet-4-5"),  # tiered: long-context rates above 200k input tokens
    ("anthropic", "claude-opus-4-1"),
    ("anthropic", "claude-haiku-4-5"),
    ("openai", "gpt-5-codex"),
    ("openai", "gpt-4o"),
    ("google", "gemini-2.5-pro"),  # tiered
    ("google", "gemini-2.5-flash"),
]


@settings(max_examples=30, deadline=None)
@given(
    model=st.sampled_from(MODELS),
    plain=st.integers(0, 400_000),
    read=st.integers(0, 400_000),
    write=st.integers(0, 100_000),
    output=st.integers(0, 64_000),
)
def test_cost_equals_genai_prices(model: tuple[str, str], plain: int, read: int, write: int, output: int) -> None:
    provider, name = model
    usage = Usage(
        input_tokens=plain + read + write,
        output_tokens=output,
        cache_read_input_tokens=read,
        cache_creation_input_tokens=write,
    )
    expected = genai_prices.calc_price(
        genai_prices.Usage(
            input_tokens=usage.input_tokens, cache_read_tokens=read, cache_write_tokens=write, output_tokens=output
        ),
        name,
        provider_id=provider,
    ).total_price
    assert genai_cost(provider, name, usage) == pytest.approx(float(expected), rel=1e-12, abs=1e-15)


def test_unknown_model_is_a_lookup_error_every_time() -> None:
    for _ in range(2):  # the second answer comes from the cache
        with pytest.raises(LookupError):
            genai_cost("anthropic", "claude-no-such-model-7", Usage(input_tokens=10, output_tokens=1))
