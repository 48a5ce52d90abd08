"""OTLP/JSON in C (otel_ingest/decode/jsonpb.py, _jsonpb.c) against json_format (the reference).

For every body — JSON captures, every capture in each JSON dialect clients send, the hypothesis
strategies of test_properties.py for all three signals, records made invalid, mutated JSON and
fixed malformed cases — either the transcoder declines (the Python path answers, as before), or
the protobuf bytes it writes parse into exactly the message ``otlp_json.parse`` builds (compared
serialized, so presence and NaN count), and ``decode.decode`` serves the same batch, rejected
count and first message as the Python path, or the same refusal. It must decide every valid
body clients send, so that the comparison is not empty.
"""

from __future__ import annotations

import json
import os
import random
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_decoder import assert_same

from otel_ingest import decode, wire
from otel_ingest.decode import jsonpb
from otel_ingest.errors import DecodeError
from otel_ingest.schema import SIGNALS, Signal
from support import load_captures
from test_properties import PROPERTY, REQUESTS, json_bodies

LIMIT = 64 << 20


@pytest.fixture(autouse=True)
def _native_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests compare the two paths whatever the suite runs with."""
    monkeypatch.delenv(decode.DECODER_VARIABLE, raising=False)


def test_the_transcoder_is_built() -> None:
    if os.environ.get("OTEL_INGEST_NATIVE") == "0":
        pytest.skip("OTEL_INGEST_NATIVE=0: built without the native decoder on purpose")
    assert jsonpb.available()


def same_message(signal: Signal, body: bytes, encoding: wire.Encoding = "json") -> bool:
    """The transcoder's message is json_format's, or it declines; True when it decided."""
    try:
        expected: Any = wire.decode_request(signal, body, encoding)[0]
    except DecodeError:
        expected = None
    is_json = encoding == "json" or wire.mislabelled_json(signal, body)
    proto = jsonpb.transcode(signal, body) if is_json else None
    if proto is None:
        return False
    assert expected is not None, "the transcoder accepted a body json_format refuses"
    actual = wire.REQUESTS[signal].FromString(proto)
    assert actual.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)
    return True


def same_everything(signal: Signal, body: bytes, encoding: wire.Encoding = "json") -> bool:
    decided = same_message(signal, body, encoding)
    assert_same(signal, body, encoding)  # the served batch, rejections and statuses
    return decided


# --------------------------------------------------------------------------- captures


def _capture_bodies() -> list[tuple[str, Signal, list[tuple[bytes, wire.Encoding]]]]:
    """Each capture: as sent when it is JSON, then in every JSON dialect (test_properties.json_bodies)."""
    out = []
    for capture in load_captures():
        signal: Signal = capture.signal  # type: ignore[assignment]
        body = wire.decompress(capture.body, capture.header("content-encoding"), LIMIT)
        encoding = wire.media_type(capture.header("content-type"))
        message, real = wire.decode_request(signal, body, encoding)
        bodies = [(body, encoding)] if real == "json" else []  # Codex labels its JSON protobuf
        bodies += [(json_body, "json") for _, json_body in json_bodies(message)]
        out.append((capture.id, signal, bodies))
    return out


CAPTURED = _capture_bodies()


@pytest.mark.parametrize(("signal", "bodies"), [c[1:] for c in CAPTURED], ids=[c[0] for c in CAPTURED])
def test_every_capture_in_json_decodes_the_same(signal: Signal, bodies: list[tuple[bytes, wire.Encoding]]) -> None:
    """The whole pipeline on the first body (as sent, or camelCase), the message on the others."""
    assert same_everything(signal, *bodies[0]), "the transcoder declined a valid captured request"
    for body, encoding in bodies[1:]:
        assert same_message(signal, body, encoding), "the transcoder declined a valid captured request"


# --------------------------------------------------------------------------- generated messages


@pytest.mark.parametrize("signal", SIGNALS)
@settings(PROPERTY, max_examples=15)
@given(data=st.data())
def test_generated_requests_in_json_are_served_the_same(signal: Signal, data: st.DataObject) -> None:
    """The whole pipeline on a few generated requests; test_properties.py compares the messages of
    every dialect of its generated requests, valid ones and with invalid records
    (assert_transcoded)."""
    request = data.draw(REQUESTS[signal], label="request")
    dialects = list(json_bodies(request))
    _, body = dialects[data.draw(st.integers(0, len(dialects) - 1), label="dialect")]
    assert same_everything(signal, body), "the transcoder declined a valid request"


# --------------------------------------------------------------------------- fixed cases

RECORD = '{"resourceLogs":[{"scopeLogs":[{"logRecords":[%s]}]}]}'
POINT = '{"resourceMetrics":[{"scopeMetrics":[{"metrics":[%s]}]}]}'
SPAN = '{"resourceSpans":[{"scopeSpans":[{"spans":[%s]}]}]}'
BODY = RECORD % '{"body":%s}'


def _deep(levels: int, kvlist: bool = False) -> str:
    value = '{"stringValue":"leaf"}'
    for level in range(levels):
        if kvlist and level % 2:
            value = '{"kvlistValue":{"values":[{"key":"k","value":' + value + "}]}}"
        else:
            value = '{"arrayValue":{"values":[' + value + "]}}"
    return value


FIXED: dict[str, tuple[Signal, str | bytes]] = {
    # the document
    "empty": ("logs", ""),
    "blank": ("logs", " \r\n\t"),
    "empty object": ("logs", "{}"),
    "empty lists": ("logs", '{"resourceLogs":[{"scopeLogs":[]}]}'),
    "spaces everywhere": ("logs", ' { "resourceLogs" : [ { "scopeLogs" : [ { "logRecords" : [ { } ] } ] } ] } \n'),
    "a list": ("logs", "[]"),
    "a string": ("logs", '"resourceLogs"'),
    "trailing garbage": ("logs", "{} x"),
    "two documents": ("logs", "{}{}"),
    "form feed after": ("logs", "{}\f"),
    "byte order mark": ("logs", b"\xef\xbb\xbf{}"),
    "utf-16": ("logs", "{}".encode("utf-16-le")),
    "truncated": ("logs", RECORD[:-3] % "{}"),
    "unterminated string": ("logs", '{"resourceLogs'),
    # nesting
    "deep lists": ("logs", '{"resourceLogs":' + "[" * 100_000),
    "deep unknown value": ("logs", '{"x":' + "[" * 5000 + "]" * 5000 + "}"),
    "deep unknown objects": ("logs", '{"x":' + '{"a":' * 300 + "1" + "}" * 300 + "}"),
    **{f"any value {n} deep": ("logs", BODY % _deep(n)) for n in (30, 31, 32, 33, 44, 45, 46, 47, 48, 60)},
    **{f"kvlist {n} deep": ("logs", BODY % _deep(n, kvlist=True)) for n in (28, 29, 30, 31, 32)},
    # numbers
    "time as number": ("logs", RECORD % '{"timeUnixNano":1700000000000000000}'),
    "time as string": ("logs", RECORD % '{"timeUnixNano":"1700000000000000000"}'),
    "time 2^64-1": ("logs", RECORD % '{"timeUnixNano":"18446744073709551615"}'),
    "time 2^64": ("logs", RECORD % '{"timeUnixNano":"18446744073709551616"}'),
    "time 2^64 number": ("logs", RECORD % '{"timeUnixNano":18446744073709551616}'),
    "time negative": ("logs", RECORD % '{"timeUnixNano":-1}'),
    "time minus zero": ("logs", RECORD % '{"timeUnixNano":"-0"}'),
    "time with zeros": ("logs", RECORD % '{"timeUnixNano":"007"}'),
    "time 1.0": ("logs", RECORD % '{"timeUnixNano":1.0}'),
    "time 1e3": ("logs", RECORD % '{"timeUnixNano":1e3}'),
    "time 1e400": ("logs", RECORD % '{"timeUnixNano":1e400}'),
    "time '1e3'": ("logs", RECORD % '{"timeUnixNano":"1e3"}'),
    "time ' 1'": ("logs", RECORD % '{"timeUnixNano":" 1"}'),
    "time '+1'": ("logs", RECORD % '{"timeUnixNano":"+1"}'),
    "time '1_0'": ("logs", RECORD % '{"timeUnixNano":"1_0"}'),
    "time ''": ("logs", RECORD % '{"timeUnixNano":""}'),
    "time true": ("logs", RECORD % '{"timeUnixNano":true}'),
    "time 01": ("logs", RECORD % '{"timeUnixNano":01}'),
    "time -": ("logs", RECORD % '{"timeUnixNano":-}'),
    "time 1.": ("logs", RECORD % '{"timeUnixNano":1.}'),
    "time 400 digits": ("logs", RECORD % ('{"timeUnixNano":' + "9" * 400 + "}")),
    "flags -1": ("logs", RECORD % '{"flags":-1}'),
    "flags 2^32-1": ("logs", RECORD % '{"flags":4294967295}'),
    "dropped 2^32": ("logs", RECORD % '{"droppedAttributesCount":4294967296}'),
    "int -2^63": ("logs", BODY % '{"intValue":"-9223372036854775808"}'),
    "int -2^63-1": ("logs", BODY % '{"intValue":"-9223372036854775809"}'),
    "int 2^63": ("logs", BODY % '{"intValue":9223372036854775808}'),
    "int 10^29": ("logs", BODY % '{"intValue":100000000000000000000000000000}'),
    **{
        f"double {text}": ("logs", BODY % ('{"doubleValue":' + text + "}"))
        for text in (
            "0",
            "-0",
            "-0.0",
            "0.0",
            "1",
            "-1",
            "1.5",
            "1e308",
            "1e309",
            "-1e309",
            "1e-400",
            "5e-324",
            "2.5e-324",
            "123456789012345678901234567890",
            "1" + "0" * 309,
            "9007199254740993",
            "0.1",
            "1E5",
            "1e+5",
            "1.7976931348623157e308",
            '"NaN"',
            '"Infinity"',
            '"-Infinity"',
            '"nan"',
            '"inf"',
            '"infinity"',
            '"1.5"',
            '"-0"',
            '" 1.5"',
            '"1e5"',
            '"01"',
            '"1_0"',
            '""',
            "NaN",
            "Infinity",
            "-Infinity",
            "true",
            "null",
            "[1]",
            '"0x10"',
        )
    },
    # enums
    **{
        f"severity {text}": ("logs", RECORD % ('{"severityNumber":' + text + "}"))
        for text in (
            '"SEVERITY_NUMBER_INFO"',
            "9",
            '"9"',
            '"-3"',
            "1000",
            '"UNKNOWN_NAME"',
            '""',
            '"1.5"',
            "1.5",
            "true",
            "2147483648",
            "-2147483649",
            '"SEVERITY_NUMBER_INFO "',
            '"9a"',
            '" 9"',
            "null",
            '"severity_number_info"',
        )
    },
    "span kind by name": ("traces", SPAN % '{"kind":"SPAN_KIND_SERVER","status":{"code":"STATUS_CODE_ERROR"}}'),
    "span kind by number": ("traces", SPAN % '{"kind":2,"status":{"code":2,"message":"m"}}'),
    "temporality unknown name": ("metrics", POINT % '{"sum":{"aggregationTemporality":"NOPE","dataPoints":[]}}'),
    # strings and escapes
    **{
        f"string {name}": ("logs", BODY % ('{"stringValue":' + text + "}"))
        for name, text in {
            "escapes": r'"\" \\ \/ \b \f \n \r \t \u00e9 \u65e5 \ud83d\ude00 \u0000"',
            "unknown escape": r'"\x41"',
            "short unicode escape": r'"\u12"',
            "lone high surrogate": r'"\ud800"',
            "lone low surrogate": r'"\udc00"',
            "high surrogate then letter": r'"\ud800\u0041"',
            "control character": '"\x01"',
            "tab raw": '"\t"',
            "delete raw": '"\x7f"',
            "non-ASCII raw": '"é日本😀"',
            "number": "5",
            "list": '["a"]',
        }.items()
    },
    "invalid UTF-8": ("logs", (BODY % '{"stringValue":"@"}').encode().replace(b"@", b"\xff")),
    "overlong UTF-8": ("logs", (BODY % '{"stringValue":"@"}').encode().replace(b"@", b"\xc0\x80")),
    "surrogate in UTF-8": ("logs", (BODY % '{"stringValue":"@"}').encode().replace(b"@", b"\xed\xa0\x80")),
    "cut UTF-8": ("logs", (BODY % '{"stringValue":"@"}').encode().replace(b"@", b"\xe2\x82")),
    "invalid UTF-8 in a key": ("logs", (RECORD % '{"@":1}').encode().replace(b"@", b"\xff")),
    "escaped key": ("logs", RECORD % r'{"time\u0055nixNano":"5"}'),
    "escaped unknown key": ("logs", RECORD % r'{"\u0061":1}'),
    "lone surrogate key": ("logs", RECORD % r'{"\ud800":1}'),  # upb raised SystemError: a 500 before
    "lone surrogate enum": ("logs", RECORD % r'{"severityNumber":"\udfff"}'),
    "escaped backslash before u": ("logs", BODY % r'{"stringValue":"\\ud800"}'),
    # duplicates and both spellings
    "duplicate top-level key": ("logs", '{"resourceLogs":[],"resourceLogs":[]}'),
    "duplicate body": ("logs", RECORD % '{"body":{"stringValue":"a"},"body":{"stringValue":"b"}}'),
    "duplicate unknown key": ("logs", RECORD % '{"x":1,"x":2}'),
    "duplicate key in an unknown value": ("logs", RECORD % '{"x":{"a":1,"a":2}}'),
    "duplicate null": ("logs", RECORD % '{"traceId":null,"traceId":"00"}'),
    "both spellings": ("logs", RECORD % '{"traceId":"0102","trace_id":"0304"}'),
    "both spellings of a list": ("logs", RECORD % '{"attributes":[{"key":"a"}],"attributes":[]}'),
    "both spellings of a message": (
        "logs",
        '{"resourceLogs":[{"scopeLogs":[{"scope":{"name":"a"},"scope":{"version":"b"}}]}]}',
    ),
    "snake case everywhere": (
        "logs",
        '{"resource_logs":[{"scope_logs":[{"log_records":[{"time_unix_nano":"1","severity_number":9,'
        '"trace_id":"00ff","body":{"string_value":"s"}}]}]}]}',
    ),
    "oneof twice": ("logs", BODY % '{"stringValue":"a","intValue":1}'),
    "oneof null then set": ("logs", BODY % '{"intValue":null,"stringValue":"a"}'),
    "oneof set then null": ("logs", BODY % '{"stringValue":"a","intValue":null}'),
    "null body": ("logs", RECORD % '{"body":null}'),
    "null list": ("logs", '{"resourceLogs":null}'),
    "null in a list": ("logs", '{"resourceLogs":[null]}'),
    "null in a number list": ("metrics", POINT % '{"histogram":{"dataPoints":[{"bucketCounts":[1,null]}]}}'),
    # shapes json_format reads loosely
    "message as a string": ("logs", '{"resourceLogs":[{"resource":"abc"}]}'),
    "message as a list": ("logs", '{"resourceLogs":[{"resource":["attributes"]}]}'),
    "message as a number": ("logs", '{"resourceLogs":[{"resource":5}]}'),
    "list as an object": ("logs", '{"resourceLogs":{}}'),
    "attributes as an object": ("logs", RECORD % '{"attributes":{"k":"v"}}'),
    "empty messages": ("logs", RECORD % '{"body":{},"attributes":[{}]}'),
    "empty value lists": ("logs", BODY % '{"arrayValue":{},"kvlist_value":null}'),
    "bool as string": ("logs", BODY % '{"boolValue":"true"}'),
    "bool as number": ("logs", BODY % '{"boolValue":1}'),
    # ids and bytes
    **{
        f"trace id {text}": ("logs", RECORD % ('{"traceId":' + text + ',"spanId":"0102030405060708"}'))
        for text in (
            '""',
            '"0A0b"',
            '"zz"',
            '"abc"',
            '" 0a"',
            '"0a 0b"',
            "12",
            "[1]",
            "null",
            '"\\u0030\\u0041"',
            '"' + "ab" * 16 + '"',
            '"' + "ab" * 17 + '"',
        )
    },
    "invalid id in an unknown field": ("logs", RECORD % '{"x":{"spanId":"zz"}}'),
    "invalid id under an unknown key": ("logs", '{"resourceLogs":[{"traceId":"xyz"}]}'),
    "valid id under an unknown key": ("logs", '{"resourceLogs":[{"traceId":"00"}]}'),
    "number id under an unknown key": ("logs", '{"resourceLogs":[{"traceId":5}]}'),
    "parent span id": ("traces", SPAN % '{"traceId":"01","parentSpanId":"02","parent_span_id":"03"}'),
    "link ids": ("traces", SPAN % '{"links":[{"traceId":"0a","span_id":"0b","flags":1}]}'),
    **{
        f"bytes {text}": ("logs", BODY % ('{"bytesValue":' + text + "}"))
        for text in (
            '""',
            '"QQ=="',
            '"QQ"',
            '"QUI="',
            '"QUI"',
            '"QUJD"',
            '"-_-_"',
            '"+/+/"',
            '"Q"',
            '"Q==="',
            '"QQ="',
            '"QR=="',
            '"Q Q="',
            '"QQ==QQ=="',
            '"===="',
            '"\\u0051\\u0051"',
            "5",
            "[1,2]",
        )
    },
    # unknown and extension keys
    "unknown fields everywhere": (
        "logs",
        '{"x":1,"resourceLogs":[{"y":[true,false,null,{"z":"é"}],"scopeLogs":[{"logRecords":[{"w":-1.5e3}]}]}]}',
    ),
    "unknown NaN literal": ("logs", RECORD % '{"x":NaN}'),
    "extension key": ("logs", RECORD % '{"[foo.bar]":1}'),
    "bracketed unknown key": ("logs", RECORD % '{"[not an extension":1}'),
    "oneof name as key": ("logs", BODY % '{"value":1}'),
    # metrics and traces
    "histogram": (
        "metrics",
        POINT % '{"name":"h","histogram":{"aggregationTemporality":2,"dataPoints":[{"count":"3","sum":0,"min":-1,"max":'
        '"Infinity","bucketCounts":["1",2,"0"],"explicitBounds":[0,1.5,"2"],"exemplars":[{"asInt":"5",'
        '"traceId":"01","filteredAttributes":[{"key":"a","value":{"boolValue":false}}]}]}]}}',
    ),
    "exponential histogram": (
        "metrics",
        POINT % '{"exponentialHistogram":{"dataPoints":[{"scale":-3,"zeroCount":1,"zeroThreshold":0,"positive":'
        '{"offset":-2,"bucketCounts":[1,"2"]},"negative":{}}]}}',
    ),
    "summary": ("metrics", POINT % '{"summary":{"dataPoints":[{"quantileValues":[{"quantile":0.5,"value":-0}]}]}}'),
    "gauge as int": ("metrics", POINT % '{"gauge":{"dataPoints":[{"asDouble":null,"asInt":"-7"}]}}'),
    "gauge int then null double": ("metrics", POINT % '{"gauge":{"dataPoints":[{"asInt":"-7","asDouble":null}]}}'),
    "two data kinds": ("metrics", POINT % '{"gauge":{},"sum":{}}'),
    "metadata": ("metrics", POINT % '{"metadata":[{"key":"k","value":{"stringValue":"v"}}]}'),
    "bucket counts negative": ("metrics", POINT % '{"histogram":{"dataPoints":[{"bucketCounts":[-1]}]}}'),
    "bounds with NaN": ("metrics", POINT % '{"histogram":{"dataPoints":[{"explicitBounds":["NaN",1e999]}]}}'),
    "scale past int32": ("metrics", POINT % '{"exponentialHistogram":{"dataPoints":[{"scale":2147483648}]}}'),
    "events and status": (
        "traces",
        SPAN % '{"name":"s","events":[{"timeUnixNano":"1","name":"e"}],"status":{},"traceState":"a=b","flags":256}',
    ),
}


@pytest.mark.parametrize(("signal", "body"), FIXED.values(), ids=FIXED.keys())
def test_fixed_cases_are_answered_the_same(signal: Signal, body: str | bytes) -> None:
    same_everything(signal, body.encode() if isinstance(body, str) else body)


def test_the_common_forms_are_decided() -> None:
    """Guards against a transcoder that declines everything and passes the tests above."""
    decided = {name for name, (signal, body) in FIXED.items() if same_message(signal, _bytes(body))}
    for name in ("empty object", "spaces everywhere", "time as number", "time as string", "snake case everywhere",
                 "string escapes", "string non-ASCII raw", "severity \"SEVERITY_NUMBER_INFO\"", "severity 9",
                 "severity \"UNKNOWN_NAME\"", "double \"NaN\"", "double -0", "double 1e-400", "trace id \"0A0b\"",
                 "trace id \"\"", "bytes \"QQ\"", "bytes \"-_-_\"", "unknown fields everywhere", "histogram",
                 "exponential histogram", "summary", "gauge as int", "events and status", "oneof null then set",
                 "valid id under an unknown key", "null body", "empty messages"):  # fmt: skip
        assert name in decided, name


def _bytes(body: str | bytes) -> bytes:
    return body.encode() if isinstance(body, str) else body


def test_every_truncation_is_answered_the_same() -> None:
    body = next(b[-1][0] for _, signal, b in CAPTURED if signal == "logs" and len(b[-1][0]) < 4000)  # pretty
    for end in range(0, len(body), 3):
        same_message("logs", body[:end])


# --------------------------------------------------------------------------- mutated JSON

_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*"\s*:?|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null|[\[\]{},]')
_KEYS = [
    b'"traceId":', b'"trace_id":', b'"spanId":', b'"body":', b'"stringValue":', b'"string_value":', b'"intValue":',
    b'"doubleValue":', b'"attributes":', b'"timeUnixNano":', b'"time_unix_nano":', b'"severityNumber":',
    b'"kind":', b'"x":', b'"[ext]":', b'"value":', b'"asDouble":', b'"bucketCounts":', b'"resource":',
]  # fmt: skip
_VALUES = [
    b"null", b'""', b'"x"', b"0", b"-0", b"1.5", b"1e999", b"-1", b"true", b"[]", b"{}", b'"NaN"', b"NaN",
    b'"0a"', b'"zz"', b'"-1"', b'"18446744073709551616"', b'"SEVERITY_NUMBER_INFO"', b'"\\ud800"', b'"\\u00e9"',
    b'"QUJD"', b'"1e3"', b"9223372036854775808", b'{"stringValue":"v"}', b'[{"key":"k"}]', b"\xff", b'"\xc3\xa9"',
]  # fmt: skip


def _mutate(body: bytes, rng: random.Random) -> bytes:
    data = bytearray(body)
    for _ in range(rng.randint(1, 3)):
        tokens = list(_TOKEN.finditer(bytes(data)))
        choice = rng.randrange(6)
        if not tokens or choice == 0:  # bytes: flip, insert, cut
            position = rng.randrange(len(data) + 1)
            if rng.random() < 0.5 and data:
                data[min(position, len(data) - 1)] ^= 1 << rng.randrange(8)
            else:
                del data[position : position + rng.randint(0, 4)]
            continue
        token = rng.choice(tokens)
        start, end = token.span()
        if token.group().endswith(b":"):  # a key: another one (both spellings, duplicates, unknown)
            data[start:end] = rng.choice(_KEYS)
        elif choice == 1:  # repeat a member or an element (duplicate keys, longer lists)
            data[end:end] = b"," + data[start:end]
        elif choice == 2:  # a key of the same object twice
            data[start:start] = rng.choice(_KEYS) + rng.choice(_VALUES) + b","
        else:
            data[start:end] = rng.choice(_VALUES)
    return bytes(data)


def test_mutated_json_is_answered_the_same() -> None:
    rng = random.Random(13)
    count = int(os.environ.get("JSONPB_MUTATIONS", "1500"))
    seeds = [(signal, body) for _, signal, bodies in CAPTURED for body, _ in bodies if len(body) < 20_000]
    seeds += [(signal, _bytes(body)) for signal, body in FIXED.values() if len(body) < 2000]
    decided = 0
    for i in range(count):
        signal, body = seeds[i % len(seeds)]
        mutated = _mutate(body, rng)
        if i % 10 == 0:  # the whole pipeline on some; the message on all (ParseDict is slow)
            decided += same_everything(signal, mutated)
        else:
            decided += same_message(signal, mutated)
    assert decided > count // 10, f"the transcoder decided only {decided} of {count} mutated bodies"


# --------------------------------------------------------------------------- plumbing


def test_the_python_decoder_setting_keeps_json_format(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(signal: Signal, body: bytes) -> bytes | None:
        raise AssertionError("the transcoder ran with OTEL_INGEST_DECODER=python")

    monkeypatch.setenv(decode.DECODER_VARIABLE, "python")
    monkeypatch.setattr(jsonpb, "transcode", refuse)
    flattened, encoding = decode.decode("logs", (RECORD % '{"body":{"stringValue":"a"}}').encode(), "json")
    assert (flattened.rows, encoding) == (1, "json")


def test_json_labelled_protobuf_is_transcoded() -> None:
    body = (RECORD % '{"severityNumber":9}').encode()
    assert jsonpb.transcode("logs", body) is not None
    assert wire.mislabelled_json("logs", body)
    flattened, encoding = decode.decode("logs", body, "protobuf", LIMIT)
    assert (flattened.rows, encoding) == (1, "json")


def test_rows_past_the_limit_take_the_python_path() -> None:
    """The native decoder declines them; the same message is then flattened in Python."""
    document = json.loads(RECORD % ",".join(["{}"] * 50))
    document["resourceLogs"][0]["resource"] = {"attributes": [{"key": "big", "value": {"stringValue": "x" * 100_000}}]}
    body = json.dumps(document).encode()
    small, _ = decode.decode("logs", body, "json", 1 << 20)
    large, _ = decode.decode("logs", body, "json", 64 << 20)
    assert small.rows == large.rows == 50
    assert small.batch.equals(large.batch)
