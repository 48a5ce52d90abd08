"""OTLP/JSON ↔ protobuf messages.

OTLP/JSON is the proto3 JSON mapping with one difference: trace and span ids are hex
strings, not base64. Parsing rewrites the id fields to what ``json_format`` expects
and lets it do the rest (lowerCamelCase or snake_case keys, int64 as number or string,
enums as names or numbers, unknown fields ignored).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from otel_ingest.errors import DecodeError

M = TypeVar("M", bound=Message)

# Every bytes field in the OTLP export requests is an id, under one of these keys.
ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def _hex_ids_to_base64(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ID_KEYS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
                except ValueError as exc:
                    raise DecodeError(
                        f"{key} {value[:64]!r} is not a hex string; OTLP/JSON ids are hex-encoded bytes."
                    ) from exc
            elif isinstance(value, (dict, list)):
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)):
                _hex_ids_to_base64(item)


# A \uD800-\uDFFF escape: a lone one makes a str protobuf cannot take (upb raises SystemError
# when such a str is looked up as a field or enum name, a 500 before).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _refuse_lone_surrogates(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _refuse_lone_surrogates(key)
            _refuse_lone_surrogates(value)
    elif isinstance(node, list):
        for item in node:
            _refuse_lone_surrogates(item)
    elif isinstance(node, str):
        try:
            node.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DecodeError(
                f"The JSON body holds a lone UTF-16 surrogate in {node[:64]!r}; escape characters past "
                "U+FFFF as a surrogate pair, or send them as UTF-8."
            ) from exc


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of repeated keys silently; protobuf's own JSON parser
    # refuses them, and so do we: which value the client meant is unknowable.
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"the key {key[:64]!r} appears twice in one object")
            seen.add(key)
    return document


def _shorten(reason: str, limit: int = 300) -> str:
    """json_format names every enclosing field ("Failed to parse X field: " per level);
    keep the start and the end, where the cause is."""
    return reason if len(reason) <= limit else f"{reason[:100]} … {reason[-(limit - 100) :]}"


def parse(body: bytes, message: M) -> M:
    """Fill ``message`` from an OTLP/JSON body; raises DecodeError with the reason."""
    name = type(message).__name__
    if not body.strip():
        raise DecodeError(f"The body is empty; an OTLP/JSON {name} is at least {{}}.")
    try:
        document = json.loads(body, object_pairs_hook=_object_without_duplicates)
    except RecursionError as exc:
        raise DecodeError(f"The JSON body nests too deeply to be an OTLP {name}.") from exc
    except ValueError as exc:
        raise DecodeError(f"The body is not valid JSON ({_shorten(str(exc))}); send an OTLP/JSON {name}.") from exc
    if not isinstance(document, dict):
        raise DecodeError(f"The JSON body must be an object holding an OTLP {name}.")
    try:
        if _SURROGATE_ESCAPE.search(body):
            _refuse_lone_surrogates(document)
        _hex_ids_to_base64(document)
        json_format.ParseDict(document, message, ignore_unknown_fields=True)
    except RecursionError as exc:
        raise DecodeError(f"The JSON body nests too deeply to be an OTLP {name}.") from exc
    # OverflowError: json_format's float() of an integer past the double range (a 500 before).
    except (json_format.ParseError, ValueError, TypeError, OverflowError, binascii.Error) as exc:
        reason = str(exc)
        if "too deep" in reason:
            raise DecodeError(
                f"The JSON body nests messages more than 100 levels deep (protobuf's limit) "
                f"and cannot be an OTLP {name}; flatten deeply nested attribute values."
            ) from exc
        raise DecodeError(f"The JSON body is not a valid OTLP {name}: {_shorten(reason)}") from exc
    return message


def _base64_ids_to_hex(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ID_KEYS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _base64_ids_to_hex(value)
    elif isinstance(node, list):
        for item in node:
            _base64_ids_to_hex(item)


def to_dict(message: Message) -> dict[str, Any]:
    """A message in OTLP/JSON form (hex ids, lowerCamelCase keys, int64 as strings)."""
    document = json_format.MessageToDict(message)
    _base64_ids_to_hex(document)
    return document


def dumps(message: Message) -> bytes:
    """A message as a compact OTLP/JSON body."""
    return json.dumps(to_dict(message), separators=(",", ":")).encode("utf-8")
