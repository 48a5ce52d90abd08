"""Request bodies → rows: parse an OTLP export request and flatten it to the v1 columns.

Everything here is CPU work on bytes already read, meant to run in a worker thread
(``app.py`` calls it through ``asyncio.to_thread``) so that a large or slow request never
holds the event loop: ``/healthz`` and other clients are served meanwhile.

Two decoders give the same rows: the compiled one (``native``, protobuf logs, spans and
metrics, the GIL released while it works) and the Python flatteners (``otel_ingest.flatten``),
the reference, used for everything else, when the compiled module was not built, or when
``OTEL_INGEST_DECODER=python``. OTLP/JSON bodies are first turned into protobuf bytes in C
(``jsonpb``), which either decoder then reads; json_format.ParseDict only answers the bodies
that step declines (invalid ones among them).
"""

from __future__ import annotations

import os

from google.protobuf.message import DecodeError as ProtobufDecodeError

from otel_ingest import wire
from otel_ingest.decode import jsonpb, native
from otel_ingest.flatten import FLATTENERS, Flattened
from otel_ingest.schema import SIGNALS, Signal

DECODER_VARIABLE = "OTEL_INGEST_DECODER"


def use_native() -> bool:
    """Whether the compiled decoder is used (built, and not turned off by OTEL_INGEST_DECODER=python)."""
    return native.available() and os.environ.get(DECODER_VARIABLE, "").strip().lower() != "python"


def describe() -> tuple[bool, str]:
    """(is it the fast path, a sentence for the start-up log)."""
    if os.environ.get(DECODER_VARIABLE, "").strip().lower() == "python":
        return False, f"Decoding with the Python decoder ({DECODER_VARIABLE}=python)."
    if not native.available():
        return False, (
            "The native decoder was not built (no C compiler at install time?); decoding with the "
            "slower Python decoder. Install gcc and the Python headers and reinstall for the fast path."
        )
    covered = ", ".join(native.SIGNALS)
    others = [signal for signal in SIGNALS if signal not in native.SIGNALS]
    rest = f", protobuf {', '.join(others)} with the Python decoder" if others else ""
    json_note = "OTLP/JSON is turned into protobuf in C first" if jsonpb.available() else "OTLP/JSON with json_format"
    return True, f"Decoding protobuf {covered} with the native decoder{rest}; {json_note}."


def decode(
    signal: Signal, body: bytes, encoding: wire.Encoding, max_output_bytes: int = -1
) -> tuple[Flattened, wire.Encoding]:
    """The rows of an (uncompressed) export request body, with the encoding it really had.

    ``max_output_bytes`` bounds what the native decoder may build (-1: no bound); a body
    past it is decoded by the Python path, which charges and refuses it as usual. Raises
    ``DecodeError`` for a body that is not a valid request of ``signal``.
    """
    if use_native():
        if encoding == "protobuf":
            flattened = native.decode(signal, body, max_output_bytes)
            if flattened is not None:
                return flattened, "protobuf"
            if wire.mislabelled_json(signal, body):  # Codex CLI sends JSON labelled protobuf
                encoding = "json"
        if encoding == "json":
            flattened = from_json(signal, body, max_output_bytes)
            if flattened is not None:
                return flattened, "json"
    message, encoding = wire.decode_request(signal, body, encoding)
    return FLATTENERS[signal](message), encoding


def from_json(signal: Signal, body: bytes, max_output_bytes: int) -> Flattened | None:
    """The rows of an OTLP/JSON body by way of protobuf bytes, or None when json_format must answer."""
    proto = jsonpb.transcode(signal, body)
    if proto is None:
        return None
    flattened = native.decode(signal, proto, max_output_bytes)
    if flattened is not None:
        return flattened
    try:  # the other signals, or rows past the limit: the same message, parsed by protobuf
        message = wire.REQUESTS[signal].FromString(proto)
    except (ProtobufDecodeError, RecursionError):
        return None
    return FLATTENERS[signal](message)
