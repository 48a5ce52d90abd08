"""The compiled decoder (``_native.c``): protobuf export requests straight to Arrow.

It covers Export{Logs,Trace,Metrics}ServiceRequest in protobuf; OTLP/JSON reaches it as
protobuf bytes from the JSON transcoder (jsonpb.py). For a body it is not sure to read
exactly as the Python path would (an invalid body, anything protobuf would merge or treat
as unknown, output past the memory limit) it returns None, and the Python path answers, so
both give the same rows, rejected counts, first messages and statuses (tests/test_decoder.py).
"""

from __future__ import annotations

from types import ModuleType

import pyarrow as pa
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from otel_ingest.flatten.common import BatchColumns, Flattened, enum_names
from otel_ingest.schema import Signal, signal_schema

_native: ModuleType | None
try:
    from otel_ingest.decode import _native as _compiled
except ImportError:  # not compiled (no C compiler at install time)
    _native = None
else:
    _compiled.configure(
        enum_names(SeverityNumber.DESCRIPTOR),
        enum_names(Span.SpanKind.DESCRIPTOR),
        enum_names(Status.StatusCode.DESCRIPTOR),
        enum_names(AggregationTemporality.DESCRIPTOR),
    )
    _native = _compiled

SIGNALS: tuple[Signal, ...] = ("logs", "traces", "metrics")
_NOUNS: dict[Signal, str] = {"logs": "log record", "traces": "span", "metrics": "data point"}


def available() -> bool:
    return _native is not None


def decode(signal: Signal, body: bytes, max_output_bytes: int) -> Flattened | None:
    """The rows of a protobuf ``signal`` request, or None when the Python path must answer."""
    if _native is None or signal not in SIGNALS:
        return None
    if signal == "logs":
        result = _native.decode_logs(body, max_output_bytes)
    elif signal == "traces":
        result = _native.decode_traces(body, max_output_bytes)
    else:
        result = _native.decode_metrics(body, max_output_bytes)
    if result is None:
        return None
    rows, rejected, first_error, address, size = result
    # The C data interface: Arrow takes the buffers over without copying them.
    batch = pa.RecordBatch._import_from_c(address, signal_schema(signal))
    assert batch.num_rows == rows
    message = None
    if rejected:
        noun = _NOUNS[signal] + ("s" if rejected > 1 else "")
        message = f"{rejected} {noun} rejected; first: {first_error}"
    return Flattened(BatchColumns(batch, size), rejected, message)


def known_fields() -> dict[str, list[int]]:
    """The field numbers of each message the native decoder reads (checked against protobuf's)."""
    return _native.known_fields() if _native is not None else {}
