"""The compiled decoder (``_native.c``): protobuf export requests straight to Arrow.

It covers ExportLogsServiceRequest in protobuf. Metrics, traces and OTLP/JSON go through the
Python flatteners. For a body it is not sure to read exactly as the Python path would (an
invalid body, anything protobuf would merge or treat as unknown, output past the memory
limit) it returns None, and the Python path answers, so both give the same rows, rejected
counts, first messages and statuses (tests/test_decoder.py).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pyarrow as pa
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber

from otel_ingest.flatten.common import BatchColumns, Flattened, enum_names
from otel_ingest.schema import Signal, signal_schema

_native: ModuleType | None
try:
    from otel_ingest.decode import _native as _compiled
except ImportError:  # not compiled (no C compiler at install time)
    _native = None
else:
    _compiled.configure(enum_names(SeverityNumber.DESCRIPTOR))
    _native = _compiled

SIGNALS: tuple[Signal, ...] = ("logs",)
_NOUNS: dict[Signal, str] = {"logs": "log record"}


def available() -> bool:
    return _native is not None


def _buffer(data: bytes) -> pa.Buffer:
    return pa.py_buffer(data)


def _array(kind: pa.DataType, length: int, parts: Any) -> pa.Array:
    """An Arrow array of ``kind`` from the buffers the native decoder made."""
    if pa.types.is_string(kind):
        validity, offsets, data, nulls = parts
        buffers = [None if validity is None else _buffer(validity), _buffer(offsets), _buffer(data)]
        return pa.Array.from_buffers(kind, length, buffers, null_count=nulls)
    if pa.types.is_int64(kind) or pa.types.is_int32(kind):
        (data,) = parts
        return pa.Array.from_buffers(kind, length, [None, _buffer(data)], null_count=0)
    if pa.types.is_map(kind):
        offsets, keys, values, entries = parts
        items = pa.StructArray.from_arrays(
            [_array(kind.key_type, entries, keys), _array(kind.item_type, entries, values)],
            fields=[kind.key_field, kind.item_field],
        )
        return pa.Array.from_buffers(kind, length, [None, _buffer(offsets)], null_count=0, children=[items])
    if pa.types.is_struct(kind):
        fields = [kind.field(i) for i in range(kind.num_fields)]
        children = [_array(field.type, length, parts[field.name]) for field in fields]
        return pa.StructArray.from_arrays(children, fields=fields)
    raise TypeError(f"the native decoder does not build {kind}")


def decode(signal: Signal, body: bytes, max_output_bytes: int) -> Flattened | None:
    """The rows of a protobuf ``signal`` request, or None when the Python path must answer."""
    if _native is None or signal not in SIGNALS:
        return None
    result = _native.decode_logs(body, max_output_bytes)
    if result is None:
        return None
    rows, rejected, first_error, columns = result
    schema = signal_schema(signal)
    arrays = [_array(field.type, rows, columns[field.name]) for field in schema]
    batch = pa.RecordBatch.from_arrays(arrays, schema=schema)
    message = None
    if rejected:
        noun = _NOUNS[signal] + ("s" if rejected > 1 else "")
        message = f"{rejected} {noun} rejected; first: {first_error}"
    return Flattened(BatchColumns(batch), rejected, message)


def known_fields() -> dict[str, list[int]]:
    """The field numbers of each message the native decoder reads (checked against protobuf's)."""
    return _native.known_fields() if _native is not None else {}
