"""OTLP export requests → Arrow record batches in the v1 table schemas (SPEC §3).

One module per signal, shared helpers in ``common``. Each ``flatten_*`` function
returns a ``Flattened``: the batch of accepted rows plus the count and first reason
of records rejected alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from otel_ingest.flatten.common import Flattened
from otel_ingest.flatten.logs import flatten_logs
from otel_ingest.flatten.metrics import flatten_metrics
from otel_ingest.flatten.traces import flatten_traces
from otel_ingest.schema import Signal

FLATTENERS: dict[Signal, Callable[[Any], Flattened]] = {
    "metrics": flatten_metrics,
    "logs": flatten_logs,
    "traces": flatten_traces,
}

__all__ = ["FLATTENERS", "Flattened", "flatten_logs", "flatten_metrics", "flatten_traces"]
