"""OTLP/JSON bodies → protobuf bytes, in C (``_jsonpb.c``), with the GIL released.

``json_format.ParseDict`` costs about 480 µs per log record; this reads the JSON once and
writes the protobuf bytes of the very message ``otlp_json.parse`` would build, which the
compiled decoder (or protobuf and the Python flatteners) then reads as any protobuf body.

The C code is driven by a table of the OTLP messages made here from the installed protobuf
descriptors (field names in both spellings, numbers, types, oneofs, enum names), so it reads
exactly the fields json_format knows. For a body it is not sure to read exactly as
``otlp_json.parse`` would, every invalid body included, it returns None and the Python path
answers (tests/test_jsonpb.py compares the two).
"""

from __future__ import annotations

import struct
from types import ModuleType
from typing import cast

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from otel_ingest.otlp_json import ID_KEYS
from otel_ingest.schema import SIGNALS, Signal
from otel_ingest.wire import REQUESTS

_compiled: ModuleType | None
try:
    from otel_ingest.decode import _jsonpb as _compiled
except ImportError:  # not compiled (no C compiler at install time)
    _compiled = None

_F_REPEATED, _F_ID, _F_UNSUPPORTED = 1, 2, 4
# The bytes fields otlp_json reads as hex ids (by key, wherever they are).
_ID_FIELDS = frozenset({"trace_id", "span_id", "parent_span_id"})


def _u32(value: int) -> bytes:
    return struct.pack("<I", value & 0xFFFFFFFF)


def _text(value: str) -> bytes:
    data = value.encode()
    return _u32(len(data)) + data


def _field_flags(field: FieldDescriptor, oneof_clash: bool) -> int:
    flags = _F_REPEATED if field.is_repeated else 0
    if field.type == FieldDescriptor.TYPE_BYTES and field.name in _ID_FIELDS and field.json_name in ID_KEYS:
        flags |= _F_ID
    elif field.name in ID_KEYS or field.json_name in ID_KEYS:
        flags |= _F_UNSUPPORTED  # an id key holding something else: otlp_json would rewrite it
    message = field.message_type
    if message is not None and (message.GetOptions().map_entry or message.full_name.startswith("google.protobuf.")):
        flags |= _F_UNSUPPORTED  # maps and well-known types have JSON forms of their own
    if field.is_extension or oneof_clash:
        flags |= _F_UNSUPPORTED
    return flags


def messages() -> tuple[list[Descriptor], list[EnumDescriptor]]:
    """Every message and enum the three export requests hold, in table order."""
    found: list[Descriptor] = []
    enums: list[EnumDescriptor] = []
    seen: set[str] = set()

    def visit(message: Descriptor) -> None:
        if message.full_name in seen:
            return
        seen.add(message.full_name)
        found.append(message)
        for field in message.fields:
            if field.message_type is not None:
                visit(field.message_type)
            if field.enum_type is not None and field.enum_type.full_name not in seen:
                seen.add(field.enum_type.full_name)
                enums.append(field.enum_type)

    for signal in SIGNALS:
        visit(cast(Descriptor, REQUESTS[signal].DESCRIPTOR))
    return found, enums


def table() -> tuple[bytes, dict[Signal, int]]:
    """The message table _jsonpb.c reads, and the index of each signal's request message."""
    messages_, enums = messages()
    index = {m.full_name: i for i, m in enumerate(messages_)} | {e.full_name: i for i, e in enumerate(enums)}
    out = bytearray(_u32(len(enums)))
    for enum in enums:
        out += _u32(len(enum.values))
        for value in enum.values:
            out += _text(value.name) + _u32(value.number)
    out += _u32(len(messages_))
    for message in messages_:
        out += _u32(len(message.fields))
        # json_format counts a oneof's name among the keys met: a field of the same name would clash.
        names = {f.name for f in message.fields} | {f.json_name for f in message.fields}
        clash = any(oneof.name in names for oneof in message.oneofs)
        for field in message.fields:
            oneof = field.containing_oneof
            sub = field.message_type or field.enum_type
            out += _u32(field.number) + _u32(field.type) + _u32(_field_flags(field, clash))
            out += _u32(message.oneofs.index(oneof) if oneof is not None else -1)
            out += _u32(index[sub.full_name] if sub is not None else -1)
            out += _text(field.json_name) + _text(field.name)
    return bytes(out), {signal: index[REQUESTS[signal].DESCRIPTOR.full_name] for signal in SIGNALS}


_ROOTS: dict[Signal, int] = {}
if _compiled is not None:
    _table, _ROOTS = table()
    _compiled.configure(_table)


def available() -> bool:
    return _compiled is not None


def transcode(signal: Signal, body: bytes) -> bytes | None:
    """The protobuf bytes of an OTLP/JSON ``signal`` request, or None when the Python path must answer."""
    if _compiled is None:
        return None
    result: bytes | None = _compiled.transcode(_ROOTS[signal], body)
    return result
