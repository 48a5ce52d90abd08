"""Request bodies → rows: parse an OTLP export request and flatten it to the v1 columns.

Everything here is CPU work on bytes already read, meant to run in a worker thread
(``app.py`` calls it through ``asyncio.to_thread``) so that a large or slow request never
holds the event loop: ``/healthz`` and other clients are served meanwhile.
"""

from __future__ import annotations

from otel_ingest import wire
from otel_ingest.flatten import FLATTENERS, Flattened
from otel_ingest.schema import Signal


def decode(signal: Signal, body: bytes, encoding: wire.Encoding) -> tuple[Flattened, wire.Encoding]:
    """The rows of an (uncompressed) export request body, with the encoding it really had.

    Raises ``DecodeError`` for a body that is not a valid request of ``signal``.
    """
    message, encoding = wire.decode_request(signal, body, encoding)
    return FLATTENERS[signal](message), encoding
