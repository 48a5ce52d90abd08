"""The OTLP/HTTP wire format: content types, content encodings, size limits, decoding
request bodies and encoding responses (SPEC §4).

Every function here raises domain errors (``DecodeError``, ``PayloadTooLarge``,
``RequestTimeout``, ``UnsupportedMediaType``); ``app.py`` turns them into statuses.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Literal

import zstandard
from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.message import Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from otel_ingest import otlp_json
from otel_ingest.budget import Reservation
from otel_ingest.errors import DecodeError, PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from otel_ingest.schema import Signal

Encoding = Literal["protobuf", "json"]

MEDIA_TYPES: dict[str, Encoding] = {
    "application/x-protobuf": "protobuf",
    "application/protobuf": "protobuf",
    "application/json": "json",
}
CONTENT_TYPES: dict[Encoding, str] = {
    "protobuf": "application/x-protobuf",
    "json": "application/json",
}

REQUESTS: dict[Signal, type[Message]] = {
    "metrics": metrics_service_pb2.ExportMetricsServiceRequest,
    "logs": logs_service_pb2.ExportLogsServiceRequest,
    "traces": trace_service_pb2.ExportTraceServiceRequest,
}
RESPONSES: dict[Signal, type[Message]] = {
    "metrics": metrics_service_pb2.ExportMetricsServiceResponse,
    "logs": logs_service_pb2.ExportLogsServiceResponse,
    "traces": trace_service_pb2.ExportTraceServiceResponse,
}
# The partial_success counter of each response type.
REJECTED_FIELDS: dict[Signal, str] = {
    "metrics": "rejected_data_points",
    "logs": "rejected_log_records",
    "traces": "rejected_spans",
}

_CHUNK_OUT = 1 << 20


def media_type(content_type: str | None) -> Encoding:
    """The body encoding named by a Content-Type header (parameters ignored)."""
    essence = (content_type or "").split(";", 1)[0].strip().lower()
    encoding = MEDIA_TYPES.get(essence)
    if encoding is None:
        shown = repr(content_type) if content_type else "missing"
        raise UnsupportedMediaType(
            f"Content-Type {shown} is not supported; send application/x-protobuf or application/json."
        )
    return encoding


def _too_large(limit: int, what: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than {limit:,} bytes {what}; "
        "send smaller batches (lower the exporter's max batch size)."
    )


async def read_body(
    chunks: AsyncIterator[bytes],
    content_length: str | None,
    limit: int,
    reservation: Reservation,
    idle_timeout: float,
) -> bytes:
    """Read a (possibly chunked) body, refusing it as soon as it passes ``limit`` bytes,
    or when nothing arrives for ``idle_timeout`` seconds (a stalled client would otherwise
    hold its connection for ever).

    ``reservation`` holds the bytes read so far (back-pressure may refuse them). An
    announced Content-Length that could not be held is refused at once, but only what
    has arrived is held: a client that announces much and sends little holds little.
    """
    if content_length is not None and content_length.strip().isdigit():
        if int(content_length) > limit:
            raise _too_large(limit, "(Content-Length)")
        reservation.check(int(content_length))
    body = bytearray()
    pending = aiter(chunks)
    while True:
        try:
            async with asyncio.timeout(idle_timeout):
                chunk = await anext(pending)
        except StopAsyncIteration:
            break
        except TimeoutError as exc:
            raise RequestTimeout(
                f"Nothing of the body arrived for {idle_timeout:g} s after {len(body):,} bytes; "
                "send each request at once."
            ) from exc
        body += chunk
        if len(body) > limit:
            raise _too_large(limit, "as sent")
        reservation.resize(len(body))
    return bytes(body)


def _inflate(data: bytes, limit: int, wbits: int) -> bytes:
    """zlib/gzip/raw deflate, stopped as soon as the output passes ``limit``."""
    out = bytearray()
    decompressor = zlib.decompressobj(wbits)
    pending = data
    while True:
        # A megabyte at a time: a bomb costs the limit in memory, not twice the limit.
        chunk = decompressor.decompress(pending, min(_CHUNK_OUT, limit + 1 - len(out)))
        out += chunk
        if len(out) > limit:
            raise _too_large(limit, "after decompression")
        pending = decompressor.unconsumed_tail
        if decompressor.eof:
            pending = decompressor.unused_data
            if not pending:
                return bytes(out)
            # Another gzip member follows (concatenated gzip streams are valid).
            decompressor = zlib.decompressobj(wbits)
        elif not pending and not chunk:
            # All input consumed and nothing more comes out (output still held inside
            # zlib is drained by the next round): the stream ends early.
            raise zlib.error("the compressed stream is truncated")


def _gunzip(data: bytes, limit: int) -> bytes:
    return _inflate(data, limit, 16 + zlib.MAX_WBITS)


def _deflate(data: bytes, limit: int) -> bytes:
    # HTTP "deflate" means a zlib stream, but some clients send raw deflate.
    try:
        return _inflate(data, limit, zlib.MAX_WBITS)
    except zlib.error:
        return _inflate(data, limit, -zlib.MAX_WBITS)


# At most this many output bytes per input byte: an RLE block of 4 bytes gives 128 KiB.
_ZSTD_MAX_RATIO = 32 * 1024


def _unzstd(data: bytes, limit: int) -> bytes:
    """Every zstd frame of ``data``, stopped as soon as the output passes ``limit``.

    Input goes in pieces small enough that one piece cannot inflate more than a
    megabyte past the limit, and the pieces of output are joined only at the end, so a
    bomb costs about the limit in memory. A stream that ends inside a frame is an error
    (zstandard's stream reader would return what it had, silently dropping the rest)."""
    parts: list[bytes] = []
    size = position = 0
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    while position < len(data):
        step = max(64, (limit + _CHUNK_OUT - size) // _ZSTD_MAX_RATIO)
        piece = data[position : position + step]
        parts.append(decompressor.decompress(piece))
        size += len(parts[-1])
        position += len(piece)
        if size > limit:
            raise _too_large(limit, "after decompression")
        if decompressor.eof:
            # Another frame may follow (concatenated frames are valid).
            position -= len(decompressor.unused_data)
            if position >= len(data):
                return b"".join(parts)
            decompressor = zstandard.ZstdDecompressor().decompressobj()
    if not decompressor.eof:
        raise zstandard.ZstdError("the compressed stream is truncated")
    return b"".join(parts)


def _identity(data: bytes, limit: int) -> bytes:
    return data


DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "identity": _identity,
    "gzip": _gunzip,
    "x-gzip": _gunzip,
    "deflate": _deflate,
    "zstd": _unzstd,
}


def decompress(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Undo every Content-Encoding (applied in order, so undone in reverse)."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    if not body:
        # An empty body is empty in every encoding; let the decoder judge it.
        codings = [coding for coding in codings if coding not in DECODERS]
    for coding in reversed(codings):
        decoder = DECODERS.get(coding)
        if decoder is None:
            raise UnsupportedMediaType(
                f"Content-Encoding {coding!r} is not supported; use gzip, deflate, zstd or none."
            )
        try:
            body = decoder(body, limit)
        except (zlib.error, zstandard.ZstdError) as exc:
            raise DecodeError(f"The body is not valid {coding} data ({exc}); check Content-Encoding.") from exc
    return body


def _protobuf_problem(name: str, exc: Exception) -> str:
    """What is wrong with a body protobuf refused, in words a client can act on."""
    reason = str(exc)
    if "MaxDepth" in reason:
        return (
            f"The body nests messages more than 100 levels deep (protobuf's limit) and cannot be a valid "
            f"{name}; flatten deeply nested attribute values."
        )
    if "UTF-8" in reason:
        return (
            f"A string field of the {name} holds invalid UTF-8; protobuf strings must be UTF-8 "
            "(send binary data as an AnyValue bytes_value)."
        )
    return f"The body is not a valid protobuf {name} ({reason}); check that Content-Type matches the body."


def mislabelled_json(signal: Signal, body: bytes) -> bool:
    """Whether a body labelled protobuf is read as JSON: it starts with ``{`` and does not parse
    as protobuf (decode_request's rule)."""
    if body.lstrip()[:1] != b"{":
        return False
    try:
        REQUESTS[signal]().ParseFromString(body)
    except (ProtobufDecodeError, RecursionError):
        return True
    return False


def decode_request(signal: Signal, body: bytes, encoding: Encoding) -> tuple[Message, Encoding]:
    """Parse an export request; returns it with the encoding the body really had.

    A body labelled protobuf that does not parse as protobuf but starts with ``{`` is
    read as JSON: Codex CLI sends JSON under a protobuf Content-Type.
    """
    message = REQUESTS[signal]()
    if encoding == "json":
        return otlp_json.parse(body, message), "json"
    try:
        message.ParseFromString(body)
    except (ProtobufDecodeError, RecursionError) as exc:
        if body.lstrip()[:1] == b"{":
            return otlp_json.parse(body, REQUESTS[signal]()), "json"
        raise DecodeError(_protobuf_problem(message.DESCRIPTOR.name, exc)) from exc
    return message, "protobuf"


def _serialize(message: Message, encoding: Encoding) -> bytes:
    if encoding == "json":
        return json_format.MessageToJson(message, indent=None).encode("utf-8")
    return message.SerializeToString()


def encode_response(signal: Signal, rejected: int, error_message: str | None, encoding: Encoding) -> bytes:
    """The Export*ServiceResponse, with ``partial_success`` only when records were rejected."""
    response = RESPONSES[signal]()
    if rejected or error_message:
        partial = response.partial_success  # type: ignore[attr-defined]
        setattr(partial, REJECTED_FIELDS[signal], rejected)
        partial.error_message = error_message or ""
    return _serialize(response, encoding)


def encode_status(code: int, message: str, encoding: Encoding) -> bytes:
    """A ``google.rpc.Status`` error body."""
    return _serialize(status_pb2.Status(code=code, message=message), encoding)
