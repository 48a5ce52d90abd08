"""Cost of model calls that arrive without one: the ``genai-prices`` table, priced at the
call's time, or a company's own prices from an override file.

The override file is TOML, one ``[[models]]`` table per price (USD per million tokens)::

    [[models]]
    model = "claude-opus-4-*"     # glob on the normalized model name
    agent = "claude-code"         # optional: only this agent's calls
    input_mtok = 12.0             # uncached input
    output_mtok = 60.0            # output, reasoning included
    cache_read_mtok = 1.2         # optional, default input_mtok
    cache_write_mtok = 15.0       # optional, default input_mtok
    replace_reported = false      # optional: also reprice calls whose agent reported a cost

An unknown model is never priced 0: its cost stays NULL and it is listed by
``otel-ingest usage --unpriced``.
"""

from __future__ import annotations

import fnmatch
import functools
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime

import genai_prices

from otel_ingest.usage.agents import PROVIDERS

MILLION = 1_000_000


class PriceFileError(ValueError):
    """The price-override file cannot be used; the message names the file and entry."""


@dataclass(frozen=True)
class Price:
    """A negotiated price, USD per million tokens."""

    model: str
    agent: str | None
    input_mtok: float
    output_mtok: float
    cache_read_mtok: float
    cache_write_mtok: float
    replace_reported: bool = False

    def matches(self, agent: str, model: str) -> bool:
        return fnmatch.fnmatchcase(model, self.model) and (self.agent is None or self.agent == agent)

    def cost(self, usage: Usage) -> float:
        uncached = usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens
        return (
            uncached * self.input_mtok
            + usage.cache_read_tokens * self.cache_read_mtok
            + usage.cache_write_tokens * self.cache_write_mtok
            + usage.output_tokens * self.output_mtok
        ) / MILLION


@dataclass(frozen=True)
class Usage:
    """One call's tokens in the canonical counting (input includes cache, output reasoning)."""

    input_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    output_tokens: int


def load_overrides(path: str) -> list[Price]:
    """Parse a price-override file; raises PriceFileError naming what to fix."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise PriceFileError(f"Cannot read price file {path}: {exc.strerror}.") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PriceFileError(f"Price file {path} is not valid TOML: {exc}.") from exc
    entries = document.get("models")
    if not isinstance(entries, list):
        raise PriceFileError(f"Price file {path} must hold [[models]] entries.")
    prices = []
    for index, entry in enumerate(entries):
        where = f"{path}: models[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
            raise PriceFileError(f'{where} needs model = "<name or glob>".')
        unknown = set(entry) - {
            "model",
            "agent",
            "input_mtok",
            "output_mtok",
            "cache_read_mtok",
            "cache_write_mtok",
            "replace_reported",
        }
        if unknown:
            raise PriceFileError(f"{where}: unknown keys {sorted(unknown)}.")
        numbers: dict[str, float] = {}
        for key in ("input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok"):
            value = entry.get(key)
            if value is None and key in ("cache_read_mtok", "cache_write_mtok"):
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise PriceFileError(f"{where}: {key} must be a number ≥ 0 (USD per million tokens).")
            numbers[key] = float(value)
        agent = entry.get("agent")
        if agent is not None and not isinstance(agent, str):
            raise PriceFileError(f'{where}: agent must be a string such as "codex".')
        prices.append(
            Price(
                model=entry["model"].lower(),
                agent=agent,
                input_mtok=numbers["input_mtok"],
                output_mtok=numbers["output_mtok"],
                cache_read_mtok=numbers.get("cache_read_mtok", numbers["input_mtok"]),
                cache_write_mtok=numbers.get("cache_write_mtok", numbers["input_mtok"]),
                replace_reported=bool(entry.get("replace_reported", False)),
            )
        )
    return prices


@functools.lru_cache(maxsize=65536)
def catalog_price(agent: str, model: str, day: str, usage: Usage) -> float | None:
    """``calc_price`` of one call at its day's prices; None when genai-prices does not
    know the model. Cached: calls with the same usage on the same day cost the same."""
    when = datetime.fromisoformat(day).replace(tzinfo=UTC)
    provider = PROVIDERS.get(agent)
    request = genai_prices.Usage(
        input_tokens=usage.input_tokens,
        cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=usage.output_tokens,
    )
    for provider_id in (provider, None) if provider else (None,):
        try:
            price = genai_prices.calc_price(
                request, model_ref=model, provider_id=provider_id, genai_request_timestamp=when
            )
        except LookupError:
            continue
        return float(price.total_price)
    return None


@dataclass(frozen=True)
class Rates:
    """A model's prices on a day, USD per token (None: the unit has no price), and the
    input size above which tiered prices apply (None: no tiers)."""

    input: float
    output: float
    cache_read: float | None
    cache_write: float | None
    per_request: float
    tier_above: float | None


@functools.lru_cache(maxsize=4096)
def catalog_rates(agent: str, model: str, day: str) -> Rates | None:
    """The genai-prices rates of a model on a day, for pricing many calls at once the way
    ``calc_price`` does (uncached input, cache reads, cache writes and output, each at
    its rate; tiers apply to all tokens once the input exceeds their start)."""
    when = datetime.fromisoformat(day).replace(tzinfo=UTC)
    provider = PROVIDERS.get(agent)
    probe = genai_prices.Usage(input_tokens=1, output_tokens=1)
    for provider_id in (provider, None) if provider else (None,):
        try:
            model_price = genai_prices.calc_price(
                probe, model_ref=model, provider_id=provider_id, genai_request_timestamp=when
            ).model_price
        except LookupError:
            continue
        tiers: list[float] = []
        rate = functools.partial(_rate, model_price, tiers)
        input_rate, output_rate = rate("input_mtok"), rate("output_mtok")
        requests = getattr(model_price, "requests_kcount", None)
        return Rates(
            input=input_rate or 0.0,
            output=output_rate or 0.0,
            cache_read=rate("cache_read_mtok"),
            cache_write=rate("cache_write_mtok"),
            per_request=float(requests) / 1000 if requests is not None else 0.0,
            tier_above=min(tiers) if tiers else None,
        )
    return None


def _rate(model_price: object, tiers: list[float], name: str) -> float | None:
    """One unit's base price per token (None if unpriced); tier starts go to ``tiers``."""
    value = getattr(model_price, name, None)
    if value is None:
        return None
    if isinstance(value, genai_prices.types.TieredPrices):
        tiers.extend(float(t.start) for t in value.tiers)
        value = value.base
    return float(value) / MILLION


class Pricer:
    """Prices calls: an override wins, else genai-prices; reported costs are kept."""

    def __init__(self, overrides: list[Price] | None = None) -> None:
        self.overrides = overrides or []

    def override(self, agent: str, model: str) -> Price | None:
        return next((p for p in self.overrides if p.matches(agent, model)), None)

    def estimate(self, agent: str, model: str | None, day: str, usage: Usage) -> float | None:
        if model is None:
            return None
        override = self.override(agent, model)
        if override is not None:
            return override.cost(usage)
        return catalog_price(agent, model, day, usage)
