"""``otel-ingest usage prices``: the prices the usage model uses, as a table SQL can join.

The SQL views (schemas/views/*.sql) cannot call genai-prices. This writes, for each (agent,
model), the rates ``store.price`` applies — the override file's, else genai-prices' on that
day — as rows valid over a range of days (consecutive days with the same rates merged):

``agent, model, valid_from, valid_until`` (ISO days, ``valid_until`` exclusive),
``input_mtok, output_mtok, cache_read_mtok, cache_write_mtok`` (USD per million tokens;
a NULL cache rate: the model has none) and ``request_usd`` (per call).

A model genai-prices does not know gets no row, so its cost stays NULL in SQL too.
Tiered prices (above an input size) are not in the table: the views price such calls at
the base rate (docs/usage.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

import pyarrow as pa

from otel_ingest.usage.pricing import MILLION, Pricer, catalog_rates

SCHEMA = pa.schema(
    [
        pa.field("agent", pa.string()),
        pa.field("model", pa.string()),
        pa.field("valid_from", pa.string()),
        pa.field("valid_until", pa.string()),
        pa.field("input_mtok", pa.float64()),
        pa.field("output_mtok", pa.float64()),
        pa.field("cache_read_mtok", pa.float64()),
        pa.field("cache_write_mtok", pa.float64()),
        pa.field("request_usd", pa.float64()),
    ]
)
OPEN = "9999-12-31"
Rate = tuple[float, float, float | None, float | None, float]


def _rates(pricer: Pricer, agent: str, model: str, day: str) -> Rate | None:
    override = pricer.override(agent, model)
    if override is not None:
        return (override.input_mtok, override.output_mtok, override.cache_read_mtok, override.cache_write_mtok, 0.0)
    found = catalog_rates(agent, model, day)
    if found is None:
        return None

    def mtok(rate: float | None) -> float | None:
        return None if rate is None else rate * MILLION

    return (
        found.input * MILLION,
        found.output * MILLION,
        mtok(found.cache_read),
        mtok(found.cache_write),
        found.per_request,
    )


def table(pricer: Pricer, models: Iterable[tuple[str, str]], first: date, last: date) -> pa.Table:
    """Rows for each (agent, model) over the days ``first`` to ``last``; the last rates stay
    valid after ``last`` (``valid_until`` = OPEN), until the table is written again."""
    rows: list[dict[str, object]] = []
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    for agent, model in sorted(set(models)):
        runs: list[tuple[str, Rate | None]] = []
        for day in days:
            rate = _rates(pricer, agent, model, day.isoformat())
            if not runs or runs[-1][1] != rate:
                runs.append((day.isoformat(), rate))
        for index, (start, rate) in enumerate(runs):
            if rate is None:
                continue
            until = runs[index + 1][0] if index + 1 < len(runs) else OPEN
            rows.append(dict(zip(SCHEMA.names, (agent, model, start, until, *rate), strict=True)))
    return pa.Table.from_pylist(rows, schema=SCHEMA)
