"""Content encodings, size limits and the buffer budget of the wire layer, in process
(issue 10: seeded bugs that the server-level tests let through).

``Content-Encoding: gzip, zstd`` means gzip was applied first: it is undone in reverse.
Every coding is bounded *after* decompression exactly at the limit. An announced
Content-Length that the buffer could not hold is refused before a byte is read.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable

import pytest
import zstandard
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

from otel_ingest import wire
from otel_ingest.budget import MemoryBudget
from otel_ingest.errors import DecodeError, PayloadTooLarge, RequestTimeout, Unavailable, UnsupportedMediaType
from otel_ingest.schema import Signal
from otel_ingest.wire import Encoding

LIMIT = 100_000


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


CODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,
    "raw-deflate": lambda data: _raw_deflate(data),
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
    "identity": lambda data: data,
}


def _header(name: str) -> str:
    return "deflate" if name == "raw-deflate" else name


@pytest.mark.parametrize("coding", list(CODERS))
def test_each_coding_is_bounded_exactly_at_the_limit(coding: str) -> None:
    """Output of exactly LIMIT bytes passes; one byte more is 413, in every coding."""
    exact = bytes(range(256)) * (LIMIT // 256) + b"x" * (LIMIT % 256)
    assert len(exact) == LIMIT
    encode = CODERS[coding]
    assert wire.decompress(encode(exact), _header(coding), LIMIT) == exact
    if coding == "identity":
        return  # identity is bounded by read_body, as sent
    with pytest.raises(PayloadTooLarge, match="after decompression"):
        wire.decompress(encode(exact + b"!"), _header(coding), LIMIT)


def test_codings_are_undone_in_reverse_order() -> None:
    body = b"the payload " * 1000
    gzipped_then_zstd = zstandard.ZstdCompressor().compress(gzip.compress(body))
    assert wire.decompress(gzipped_then_zstd, "gzip, zstd", LIMIT) == body
    zstd_then_deflate = zlib.compress(zstandard.ZstdCompressor().compress(body))
    assert wire.decompress(zstd_then_deflate, "zstd,deflate", LIMIT) == body
    # Listed the wrong way round, the same bytes are not valid data for the outer coding.
    with pytest.raises(DecodeError, match="not valid gzip data"):
        wire.decompress(gzipped_then_zstd, "zstd, gzip", LIMIT)


def test_layered_codings_are_bounded_at_every_layer() -> None:
    """A small outer layer that inflates past the limit inside is refused."""
    inner = gzip.compress(bytes(LIMIT + 1))
    with pytest.raises(PayloadTooLarge, match="after decompression"):
        wire.decompress(zstandard.ZstdCompressor().compress(inner), "gzip, zstd", LIMIT)


def test_concatenated_gzip_members_and_zstd_frames_are_one_body() -> None:
    assert wire.decompress(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", LIMIT) == b"abcd"
    frames = [zstandard.ZstdCompressor().compress(part) for part in (b"ab", b"", bytes(5000), b"cd")]
    assert wire.decompress(b"".join(frames), "zstd", LIMIT) == b"ab" + bytes(5000) + b"cd"


def test_a_truncated_zstd_body_is_an_error_not_an_empty_export() -> None:
    """zstandard's stream reader returns what it has when the input ends inside a frame:
    half a body became an empty export, answered 200 with nothing stored."""
    whole = zstandard.ZstdCompressor().compress(b"some bytes " * 500)
    for cut in (1, len(whole) // 2, len(whole) - 1):
        with pytest.raises(DecodeError, match="truncated"):
            wire.decompress(whole[:cut], "zstd", LIMIT)


def test_truncated_streams_are_decode_errors() -> None:
    for coding in ("gzip", "deflate", "zstd"):
        whole = CODERS[coding](b"some bytes " * 500)
        with pytest.raises(DecodeError, match=f"not valid {coding} data"):
            wire.decompress(whole[: len(whole) // 2], coding, LIMIT)


def test_unknown_coding_is_415_and_empty_bodies_pass() -> None:
    with pytest.raises(UnsupportedMediaType, match="'br' is not supported"):
        wire.decompress(b"x", "br", LIMIT)
    assert wire.decompress(b"", "gzip", LIMIT) == b""
    assert wire.decompress(b"", "identity", LIMIT) == b""


class Chunks:
    """An async body that counts what was read from it."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.read += 1
            yield chunk


def _read(chunks: Chunks, content_length: str | None, limit: int, budget: MemoryBudget) -> bytes:
    async def run() -> bytes:
        with budget.reservation() as held:
            return await wire.read_body(chunks.__aiter__(), content_length, limit, held, idle_timeout=5)

    return asyncio.run(run())


def test_announced_length_over_the_whole_buffer_is_refused_before_reading() -> None:
    body = Chunks(b"x" * 10)
    with pytest.raises(PayloadTooLarge, match="more than the server's whole buffer of 500 bytes"):
        _read(body, "1000", LIMIT, MemoryBudget(500))
    assert body.read == 0


def test_announced_length_the_buffer_cannot_hold_now_is_503_before_reading() -> None:
    budget = MemoryBudget(1000)
    other = budget.reservation()
    other.resize(800)  # earlier requests hold 800 of 1,000 bytes
    body = Chunks(b"x" * 10)
    with pytest.raises(Unavailable, match="holding 800 bytes for earlier requests"):
        _read(body, "300", LIMIT, budget)
    assert body.read == 0
    assert _read(Chunks(b"x" * 150), "150", LIMIT, budget) == b"x" * 150  # what fits is read
    assert budget.used == 800  # and released once done


def test_announced_length_over_the_limit_is_413_before_reading() -> None:
    body = Chunks(b"x")
    with pytest.raises(PayloadTooLarge, match=r"\(Content-Length\)"):
        _read(body, str(LIMIT + 1), LIMIT, MemoryBudget(10 * LIMIT))
    assert body.read == 0
    assert _read(Chunks(b"x" * LIMIT), str(LIMIT), LIMIT, MemoryBudget(10 * LIMIT)) == b"x" * LIMIT


def test_body_sent_past_the_limit_is_413_and_what_arrives_is_held() -> None:
    budget = MemoryBudget(10 * LIMIT)
    with pytest.raises(PayloadTooLarge, match="as sent"):
        _read(Chunks(b"x" * LIMIT, b"y"), None, LIMIT, budget)
    assert budget.used == 0

    async def holding() -> int:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"x" * 300
            yield b"x" * 200

        with budget.reservation() as held:
            await wire.read_body(chunks(), "1000", LIMIT, held, idle_timeout=5)
            return held.size

    assert asyncio.run(holding()) == 500  # announced 1,000, holds what arrived


def test_stalled_body_times_out() -> None:
    async def run() -> None:
        async def stalled() -> AsyncIterator[bytes]:
            yield b"x"
            await asyncio.Event().wait()
            yield b""

        with MemoryBudget(LIMIT).reservation() as held:
            await wire.read_body(stalled(), None, LIMIT, held, idle_timeout=0.05)

    with pytest.raises(RequestTimeout, match="after 1 bytes"):
        asyncio.run(run())


MIB = 1 << 20


@pytest.mark.parametrize(
    ("coding", "limit", "bound", "prefix"),
    [
        ("gzip", 100_000, 600_000, 0),
        ("deflate", 100_000, 600_000, 0),
        ("gzip", 8 * MIB, 13 * MIB, 0),
        ("deflate", 8 * MIB, 13 * MIB, 0),
        # zstd goes in input pieces of at least 64 bytes, which can inflate to 2 MiB.
        ("zstd", 100_000, 4 * MIB, 0),
        ("zstd", 8 * MIB, 13 * MIB, 0),
        # 1.5 MiB that do not compress, then the zeros: the pieces shrink as the output
        # grows (pieces that grew with it held 7.1 MiB here, not 3.7).
        ("zstd", 2 * MIB, 5 * MIB, 3 * MIB // 2),
    ],
)
def test_a_bomb_costs_about_the_limit_in_memory(coding: str, limit: int, bound: int, prefix: int) -> None:
    """64 MiB of zeros (after ``prefix`` random bytes), compressed: refused after
    ``limit`` bytes, having held about the limit once plus a megabyte being inflated
    (Python allocations, traced)."""
    bomb = CODERS[coding](os.urandom(prefix) + bytes(64 * MIB))
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge, match="after decompression"):
            wire.decompress(bomb, coding, limit)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < bound, f"{peak:,} bytes held for a {limit:,}-byte limit"


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate", "zstd"])
def test_bodies_inflating_past_a_megabyte_come_out_whole(coding: str) -> None:
    """Output comes a megabyte at a time: input all consumed while output is still held
    inside the decompressor is not the end of the stream."""
    repetitive = b"".join(b"record %d of a repetitive log; " % n for n in range(200_000))
    random_hex = os.urandom(1_500_000).hex().encode()  # compresses about 2:1
    for body in (repetitive, random_hex):
        assert len(body) > 2 * MIB
        assert wire.decompress(CODERS[coding](body), _header(coding), 64 * MIB) == body


# Content types and message coding (wire.media_type, decode_request, encode_response,
# encode_status), in process.


@pytest.mark.parametrize(
    ("content_type", "encoding"),
    [
        ("application/x-protobuf", "protobuf"),
        ("application/protobuf", "protobuf"),
        ("application/json", "json"),
        ("Application/JSON; charset=utf-8", "json"),
        (" application/x-protobuf ;q=1", "protobuf"),
    ],
)
def test_media_types_are_read_by_their_essence(content_type: str, encoding: str) -> None:
    assert wire.media_type(content_type) == encoding


@pytest.mark.parametrize(
    ("content_type", "shown"),
    [(None, "missing"), ("", "missing"), ("text/plain", "'text/plain'"), (";json", "';json'")],
)
def test_other_media_types_are_415_naming_what_to_send(content_type: str | None, shown: str) -> None:
    with pytest.raises(UnsupportedMediaType, match=f"Content-Type {shown} is not supported; send application/x-pr"):
        wire.media_type(content_type)


def _logs_request(body: str = "hello") -> logs_service_pb2.ExportLogsServiceRequest:
    request = logs_service_pb2.ExportLogsServiceRequest()
    record = request.resource_logs.add().scope_logs.add().log_records.add()
    record.body.string_value = body
    return request


def test_bodies_decode_in_the_encoding_they_really_have() -> None:
    request = _logs_request()
    as_json = json_format.MessageToJson(request).encode()
    assert wire.decode_request("logs", request.SerializeToString(), "protobuf") == (request, "protobuf")
    assert wire.decode_request("logs", as_json, "json") == (request, "json")
    # Codex CLI sends JSON labelled protobuf, leading white space included.
    assert wire.decode_request("logs", b" \n" + as_json, "protobuf") == (request, "json")
    with pytest.raises(DecodeError, match=r"not valid JSON .*; send an OTLP/JSON ExportLogsServiceRequest"):
        wire.decode_request("logs", request.SerializeToString(), "json")


def test_protobuf_that_does_not_parse_is_400_saying_why() -> None:
    with pytest.raises(
        DecodeError, match=r"not a valid protobuf ExportLogsServiceRequest \(.*\); check that Content-Type"
    ):
        wire.decode_request("logs", b"\x0a\xff\xff\xff", "protobuf")
    nested = common_pb2.AnyValue(string_value="x")
    for _ in range(120):
        outer = common_pb2.AnyValue()
        outer.array_value.values.add().CopyFrom(nested)
        nested = outer
    deep = _logs_request()
    deep.resource_logs[0].scope_logs[0].log_records[0].body.CopyFrom(nested)
    with pytest.raises(DecodeError, match="nests messages more than 100 levels deep"):
        wire.decode_request("logs", deep.SerializeToString(), "protobuf")
    invalid = _logs_request("\u00e9\u00e9").SerializeToString().replace("\u00e9\u00e9".encode(), b"\xff\xfe\xff\xfe")
    with pytest.raises(DecodeError, match="ExportLogsServiceRequest holds invalid UTF-8"):
        wire.decode_request("logs", invalid, "protobuf")


@pytest.mark.parametrize("signal", ["logs", "metrics", "traces"])
def test_responses_carry_partial_success_only_when_something_was_rejected(signal: Signal) -> None:
    field = wire.REJECTED_FIELDS[signal]
    response = wire.RESPONSES[signal]
    assert wire.encode_response(signal, 0, None, "protobuf") == b""
    assert json.loads(wire.encode_response(signal, 0, None, "json")) == {}
    decoded = response.FromString(wire.encode_response(signal, 3, "3 rejected; first: x", "protobuf"))
    assert decoded.HasField("partial_success")
    assert getattr(decoded.partial_success, field) == 3
    assert decoded.partial_success.error_message == "3 rejected; first: x"
    camel = "".join(part if i == 0 else part.title() for i, part in enumerate(field.split("_")))
    assert json.loads(wire.encode_response(signal, 2, None, "json")) == {"partialSuccess": {camel: "2"}}
    warning = response.FromString(wire.encode_response(signal, 0, "a warning", "protobuf"))
    assert warning.HasField("partial_success")
    assert (getattr(warning.partial_success, field), warning.partial_success.error_message) == (0, "a warning")


def test_status_bodies_in_both_encodings() -> None:
    assert status_pb2.Status.FromString(wire.encode_status(3, "bad body", "protobuf")) == status_pb2.Status(
        code=3, message="bad body"
    )
    assert json.loads(wire.encode_status(8, "slow down", "json")) == {"code": 8, "message": "slow down"}


def test_only_json_that_is_not_protobuf_counts_as_json_labelled_protobuf() -> None:
    """The native decoder's fallback asks mislabelled_json whether a body it could not read as
    protobuf is Codex CLI's JSON: yes only for a body starting with ``{`` (after white space)
    that protobuf cannot parse; other garbage must keep its protobuf error message."""
    assert wire.mislabelled_json("logs", b'{"resourceLogs":[]}')
    assert wire.mislabelled_json("logs", b' \n{"resourceLogs":[]}')
    assert not wire.mislabelled_json("logs", b"\xff\xff")  # not protobuf, not JSON either
    assert not wire.mislabelled_json("logs", b"")
    # `{|` is field 15 as a group that opens and closes: valid protobuf that starts with `{`.
    assert logs_service_pb2.ExportLogsServiceRequest.FromString(b"{|") is not None
    assert not wire.mislabelled_json("logs", b"{|")


@pytest.mark.parametrize("encoding", ["protobuf", "json"])
def test_a_response_is_labelled_with_the_encoding_of_its_body(encoding: Encoding) -> None:
    """The server answers in the request's encoding under CONTENT_TYPES[encoding]: read
    back as a request's Content-Type would be, the label names the body's encoding."""
    body = wire.encode_response("logs", 1, "one rejected", encoding)
    assert wire.media_type(wire.CONTENT_TYPES[encoding]) == encoding
    assert body.startswith(b"{") == (encoding == "json")
