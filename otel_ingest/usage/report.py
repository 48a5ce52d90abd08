"""``otel-ingest usage``: reports as a terminal table, JSON (a contract) or CSV."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

import polars as pl

from otel_ingest.usage import query, rolled
from otel_ingest.usage.derive import TOKEN_COLUMNS
from otel_ingest.usage.store import UsageStore

PERIODS = {"daily": "day", "weekly": "week", "monthly": "month", "session": "session", "blocks": "block"}
BY_KEYS = ("agent", "model", "user", "session", "day", "week", "month", "block", "table_set")
# The JSON contract: grouping keys, then these, in this order.
FIELDS = (
    "calls",
    "input_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_usd",
    "cost_source",
)


def group_keys(period: str | None, by: str | None) -> list[str]:
    """Grouping keys from the report kind and ``--by`` (``agent,model``)."""
    keys: list[str] = []
    if period is not None:
        keys.append(PERIODS[period])
    for key in (by or "").split(","):
        key = key.strip()
        if not key:
            continue
        if key not in BY_KEYS:
            raise ValueError(f"--by {key!r}: group by any of {', '.join(BY_KEYS)}")
        if key not in keys:
            keys.append(key)
    if not keys and by is None:
        keys.append("day")
    return keys


def load(store: UsageStore, filters: query.Filters, keys: list[str]) -> query.Usage | rolled.Rolled:
    """The counted usage of the report's range, read as the dashboard reads it: whole days
    from the rollup tables, partial and gateway days from the facts (``rolled.load``), so a
    report costs time in proportion to the days it covers and gives the dashboard's numbers.
    5-hour blocks need each call's time: they are grouped from the facts."""
    if "block" in keys:
        return query.load(store, filters)
    usage = rolled.load(store, filters.since, filters.until)
    return usage.where(
        agent=list(filters.agents),
        user=list(filters.users),
        model=list(filters.models),
        table_set=list(filters.table_sets),
    )


def rows(usage: query.Usage | rolled.Rolled, keys: list[str]) -> list[dict[str, Any]]:
    grouped = rolled.group(usage.calls, keys) if isinstance(usage, rolled.Rolled) else query.group(usage.calls, keys)
    result = []
    for row in grouped.iter_rows(named=True):
        cost = row["cost_usd"]
        item: dict[str, Any] = {k: row[k] for k in keys}
        item.update({f: row[f] for f in FIELDS})
        item["cost_usd"] = None if cost is None or math.isnan(cost) else cost
        item["unpriced_calls"] = row["unpriced_calls"]
        if "block" in keys:
            # A block's end, and its first and last calls (ccusage's active/idle view).
            item["block_end"] = row["block_end"]
            item["first_call"] = row["first_call"].isoformat()
            item["last_call"] = row["last_call"].isoformat()
        result.append(item)
    return result


def to_json(items: list[dict[str, Any]]) -> str:
    return json.dumps(items, indent=2)


def to_csv(items: list[dict[str, Any]], keys: list[str]) -> str:
    out = io.StringIO()
    extra = ["block_end", "first_call", "last_call"] if "block" in keys else []
    writer = csv.DictWriter(out, fieldnames=[*keys, *FIELDS, "unpriced_calls", *extra], lineterminator="\n")
    writer.writeheader()
    for item in items:
        writer.writerow({k: "" if v is None else v for k, v in item.items()})
    return out.getvalue()


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"${value:,.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def to_table(items: list[dict[str, Any]], keys: list[str]) -> str:
    columns = [
        *keys,
        "calls",
        "input_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cost_usd",
        "cost_source",
    ]
    titles = [c.replace("_tokens", "").replace("_", " ") for c in columns]
    cells = [[_number(item.get(c)) if c not in keys else str(item.get(c) or "-") for c in columns] for item in items]
    if items:
        totals: list[str] = []
        for c in columns:
            if c in keys:
                totals.append("total" if c == columns[0] else "")
            elif c == "cost_usd":
                known = [i[c] for i in items if i[c] is not None]
                totals.append(_number(sum(known)) if known else "-")
            elif c == "cost_source":
                totals.append("")
            else:
                totals.append(_number(sum(i[c] or 0 for i in items)))
        cells.append(totals)
    widths = [max(len(t), *(len(r[i]) for r in cells)) if cells else len(t) for i, t in enumerate(titles)]
    numeric = [c not in keys and c != "cost_source" for c in columns]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True))

    out = [line(titles), line(["-" * w for w in widths])]
    out += [line(r) for r in cells[:-1]]
    if items:
        out += [line(["-" * w for w in widths]), line(cells[-1])]
    else:
        out.append("(no model calls in this range)")
    return "\n".join(out)


def unpriced_note(usage: query.Usage | rolled.Rolled) -> str:
    missing = (
        rolled.unpriced_models(usage.calls) if isinstance(usage, rolled.Rolled) else query.unpriced_models(usage.calls)
    )
    if not missing.height:
        return ""
    names = ", ".join(f"{r['agent']}/{r['model']}" for r in missing.iter_rows(named=True))
    return f"No price for: {names} (cost left empty; add them to a --prices file)."


def mismatch_note(usage: query.Usage | rolled.Rolled) -> str:
    if not usage.mismatches.height:
        return ""
    lines = ["Events and metrics disagree (events counted):"]
    for r in usage.mismatches.iter_rows(named=True):
        diffs = [f"{c} {r[c]} vs {r[c + '_metrics']}" for c in TOKEN_COLUMNS if r[c] != r[c + "_metrics"]]
        lines.append(f"  {r['table_set']} {r['agent']} {r['model']} {r['day']}: " + "; ".join(diffs))
    return "\n".join(lines)


def frame_csv(frame: pl.DataFrame) -> str:
    return frame.write_csv()
