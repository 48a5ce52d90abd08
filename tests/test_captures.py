"""Every captured client request replayed over real HTTP, checked in the Delta tables
with polars (not with the code that wrote them)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from otel_ingest import otlp_json, wire
from support import CAPTURES, Capture, Server, count_records, load_captures, read_table, row_count

CAPTURE_LIST = load_captures()
PREFIXES = ("main.telemetry.claude", "main.telemetry.codex", "main.telemetry.gemini", "main.telemetry.py")
# Gemini CLI's trace exporter sends no table header (gemini_hello/1.json).
SERVER_ARGS = ("--create-tables", ",".join(PREFIXES), "--default-traces-table", "main.telemetry.gemini_otel_spans")


def _start(tmp_path_factory: pytest.TempPathFactory) -> Server:
    return Server(tmp_path_factory.mktemp("replay") / "warehouse", *SERVER_ARGS)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = _start(tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A warehouse holding every capture, replayed once in recorded order."""
    server = _start(tmp_path_factory)
    for capture in CAPTURE_LIST:
        response = server.replay(capture)
        assert response.status_code == 200, (capture.id, response.text)
    yield server.warehouse
    server.stop()


def test_captures_are_present() -> None:
    runs = {c.run for c in CAPTURE_LIST}
    assert {"cc_hello", "cc_json", "cc_gzip", "gemini_hello", "codex_hello", "codex_json", "py_sdk"} <= runs
    assert (CAPTURES / "README.md").is_file()


def _table_of(capture: Capture) -> str:
    return capture.table or "main.telemetry.gemini_otel_spans"


@pytest.mark.parametrize("capture", CAPTURE_LIST, ids=[c.id for c in CAPTURE_LIST])
def test_replay_writes_one_row_per_record(server: Server, capture: Capture) -> None:
    table = _table_of(capture)
    before = row_count(server.warehouse, table)
    response = server.replay(capture)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == capture.header("content-type")
    assert capture.expected_rows > 0
    assert row_count(server.warehouse, table) - before == capture.expected_rows
    # The answer is an Export*ServiceResponse with nothing rejected.
    encoding = wire.media_type(capture.header("content-type"))
    reply = wire.RESPONSES[capture.signal]()  # type: ignore[index]
    if encoding == "json":
        json_format.Parse(response.content, reply)
    else:
        reply.ParseFromString(response.content)
    assert not reply.HasField("partial_success")


def test_each_table_holds_exactly_its_requests(replayed: Path) -> None:
    expected: dict[str, int] = {}
    for capture in CAPTURE_LIST:
        expected[_table_of(capture)] = expected.get(_table_of(capture), 0) + capture.expected_rows
    for table, rows in expected.items():
        assert row_count(replayed, table) == rows, table
    # Nothing landed in the tables nobody wrote to.
    assert row_count(replayed, "main.telemetry.claude_otel_spans") == 0


def _expected_token_usage() -> dict[str, float]:
    """Sum of claude_code.token.usage by type, from the readable decodings."""
    totals: dict[str, float] = {}
    for capture in CAPTURE_LIST:
        if capture.table != "main.telemetry.claude_otel_metrics":
            continue
        for rm in capture.decoded["message"]["resourceMetrics"]:
            for sm in rm.get("scopeMetrics", []):
                for metric in sm.get("metrics", []):
                    if metric["name"] != "claude_code.token.usage":
                        continue
                    for point in metric["sum"]["dataPoints"]:
                        kind = next(a["value"]["stringValue"] for a in point["attributes"] if a["key"] == "type")
                        value = point.get("asDouble", point.get("asInt", 0))
                        totals[kind] = totals.get(kind, 0.0) + float(value)
    return totals


def test_claude_code_values(replayed: Path) -> None:
    metrics = read_table(replayed, "main.telemetry.claude_otel_metrics")
    usage = (
        metrics.filter(pl.col("name") == "claude_code.token.usage")
        .with_columns(kind=pl.col("sum").struct.field("attributes").map.get("type"))
        .group_by("kind")
        .agg(pl.col("sum").struct.field("value").sum())
    )
    measured = dict(zip(usage["kind"].to_list(), usage["value"].to_list(), strict=True))
    expected = _expected_token_usage()
    assert set(measured) == set(expected) >= {"input", "output"}
    for kind, total in expected.items():
        assert math.isclose(measured[kind], total), kind
    temporalities = metrics.filter(pl.col("metric_type") == "sum")["sum"].struct.field("aggregation_temporality")
    assert set(temporalities.to_list()) == {"AGGREGATION_TEMPORALITY_DELTA"}
    assert metrics["gauge"].null_count() == metrics.height  # only the matching struct is set

    logs = read_table(replayed, "main.telemetry.claude_otel_logs")
    bodies = set(logs["body"].to_list())
    assert {"claude_code.user_prompt", "claude_code.api_request"} <= bodies
    prompts = logs.filter(pl.col("body") == "claude_code.user_prompt")
    assert prompts["attributes"].map.get("event.name").to_list() == ["user_prompt"] * prompts.height
    assert logs["event_name"].null_count() == logs.height  # Claude Code leaves event_name empty


def _gemini_spans() -> list[dict[str, Any]]:
    """The spans as Gemini sent them (the .bin: the readable decoding garbles JSON ids)."""
    (capture,) = [c for c in CAPTURE_LIST if c.run == "gemini_hello" and c.signal == "traces"]
    body = json.loads(capture.body)
    return [span for rs in body["resourceSpans"] for ss in rs["scopeSpans"] for span in ss["spans"]]


def test_gemini_values(replayed: Path, start_server: Callable[..., Server]) -> None:
    spans = read_table(replayed, "main.telemetry.gemini_otel_spans")
    expected = _gemini_spans()
    assert spans["name"].to_list() == [s["name"] for s in expected]
    assert spans["span_id"].to_list() == [s["spanId"] for s in expected]
    assert spans["trace_id"].to_list() == [s["traceId"] for s in expected]
    assert spans["parent_span_id"].to_list() == [s.get("parentSpanId") or None for s in expected]
    assert spans["status"].struct.field("code").to_list() == ["STATUS_CODE_OK"] * len(expected)
    # Gemini's log records point at its spans: the ids join.
    logs = read_table(replayed, "main.telemetry.gemini_otel_logs")
    assert set(logs["span_id"].drop_nulls().to_list()) <= set(spans["span_id"].to_list())
    assert logs["span_id"].drop_nulls().len() > 0

    # Gemini's capture has only root spans; make the second a child of the first to see
    # how a parent id is stored: 16 lower-case hex digits.
    body = json.loads(expected and (CAPTURES / "gemini_hello" / "1.bin").read_bytes())
    first, second = body["resourceSpans"][0]["scopeSpans"][0]["spans"][:2]
    second["parentSpanId"] = first["spanId"].upper()
    server = start_server("--default-traces-table", "main.telemetry.g_otel_spans", "--auto-create")
    response = server.post("/v1/traces", json.dumps(body).encode(), {"content-type": "application/json"})
    assert response.status_code == 200, response.text
    parents = read_table(server.warehouse, "main.telemetry.g_otel_spans")["parent_span_id"].to_list()
    assert parents[1] == first["spanId"].lower()
    assert len(parents[1]) == 16
    assert parents[0] is None

    metrics = read_table(replayed, "main.telemetry.gemini_otel_metrics")
    histograms = metrics.filter(pl.col("metric_type") == "histogram")
    assert histograms.height > 0
    (capture,) = [c for c in CAPTURE_LIST if c.run == "gemini_hello" and c.signal == "metrics"]
    expected_counts = [
        [int(n) for n in point.get("bucketCounts", [])]
        for rm in capture.decoded["message"]["resourceMetrics"]
        for sm in rm["scopeMetrics"]
        for metric in sm["metrics"]
        if "histogram" in metric
        for point in metric["histogram"]["dataPoints"]
    ]
    assert histograms["histogram"].struct.field("bucket_counts").to_list() == expected_counts
    counts = histograms["histogram"].struct.field("count").to_list()
    assert counts == [sum(c) for c in expected_counts]
    sums = metrics.filter(pl.col("metric_type") == "sum")["sum"].struct.field("aggregation_temporality")
    assert set(sums.to_list()) == {"AGGREGATION_TEMPORALITY_CUMULATIVE"}


_STABLE_METRIC_COLUMNS = [
    "name",
    "description",
    "unit",
    "metric_type",
    pl.col("sum").struct.field("aggregation_temporality").alias("sum_temporality"),
    pl.col("sum").struct.field("is_monotonic"),
    # Rounded: Codex computes its exponential bounds afresh in each session, and the two runs
    # sent one bound that differs in the 14th digit (23632.542512088883 in codex_hello's
    # protobuf, 23632.542512093183 in codex_json's JSON; each table stores what was sent).
    pl.col("histogram")
    .struct.field("explicit_bounds")
    .list.eval(pl.element().round_sig_figs(12))
    .alias("explicit_bounds"),
    pl.col("histogram").struct.field("aggregation_temporality").alias("histogram_temporality"),
    pl.col("sum").struct.field("attributes").map.keys().list.sort().alias("sum_attribute_keys"),
]


def test_codex_json_and_protobuf_runs_give_the_same_rows(start_server: Callable[..., Server]) -> None:
    """codex_hello (protobuf) and codex_json (JSON) recorded the same kinds of data in two
    sessions: the rows agree in everything that does not change from one session to the next."""
    server = start_server("--auto-create")
    for capture in load_captures("codex_hello") + load_captures("codex_json"):
        protocol = "json" if capture.run == "codex_json" else "protobuf"
        headers = dict((k.lower(), v) for k, v in capture.headers if k.lower() not in {"content-length", "host"})
        headers["x-databricks-uc-table-name"] = f"main.{protocol}.codex_otel_{capture.signal}"
        assert server.post(capture.path, capture.body, headers).status_code == 200

    shapes = {
        protocol: read_table(server.warehouse, f"main.{protocol}.codex_otel_metrics")
        .select(_STABLE_METRIC_COLUMNS)
        .unique()
        for protocol in ("protobuf", "json")
    }
    names = set(shapes["protobuf"]["name"]) & set(shapes["json"]["name"])
    assert len(names) > 40
    protobuf, json_rows = (shapes[p].filter(pl.col("name").is_in(names)).sort(pl.all()) for p in ("protobuf", "json"))
    assert protobuf.equals(json_rows)

    events = {
        protocol: set(
            read_table(server.warehouse, f"main.{protocol}.codex_otel_logs")["attributes"]
            .map.get("event.name")
            .drop_nulls()
        )
        for protocol in ("protobuf", "json")
    }
    assert events["protobuf"] & events["json"] >= {
        "codex.conversation_starts",
        "codex.user_prompt",
        "codex.api_request",
    }
    for protocol in ("protobuf", "json"):
        logs = read_table(server.warehouse, f"main.{protocol}.codex_otel_logs")
        # Codex puts a code location in event_name; the row keeps it as sent.
        assert logs["event_name"].str.starts_with("event ").all()
        assert logs["trace_id"].drop_nulls().str.len_chars().unique().to_list() in ([], [32])


@pytest.mark.parametrize("run", ["codex_json", "cc_json", "gemini_hello"])
def test_json_capture_equals_its_protobuf_encoding(
    start_server: Callable[..., Server], run: str, tmp_path: Path
) -> None:
    """The same request sent as OTLP/JSON and re-encoded as protobuf lands as identical rows."""
    captures = [c for c in load_captures(run) if c.header("content-type") == "application/json"]
    results = {}
    for protocol in ("json", "protobuf"):
        server = start_server(*SERVER_ARGS, warehouse=tmp_path / protocol)
        for capture in captures:
            body = capture.body
            content_type = "application/json"
            if protocol == "protobuf":
                message = otlp_json.parse(body, wire.REQUESTS[capture.signal]())  # type: ignore[index]
                body, content_type = message.SerializeToString(), "application/x-protobuf"
            headers = {"content-type": content_type, "x-databricks-uc-table-name": _table_of(capture)}
            assert server.post(capture.path, body, headers).status_code == 200
        results[protocol] = {table: read_table(server.warehouse, table) for table in {_table_of(c) for c in captures}}
    for table, frame in results["json"].items():
        assert frame.height > 0
        assert frame.equals(results["protobuf"][table]), table


def test_python_sdk_values(replayed: Path) -> None:
    metrics = read_table(replayed, "main.telemetry.py_otel_metrics")
    assert set(metrics["metric_type"].to_list()) == {"gauge", "sum", "histogram", "exponential_histogram"}
    for kind in ("gauge", "sum", "histogram", "exponential_histogram", "summary"):
        of_kind = metrics.filter(pl.col("metric_type") == kind)
        assert of_kind[kind].null_count() == 0
        others = [k for k in ("gauge", "sum", "histogram", "exponential_histogram", "summary") if k != kind]
        assert all(of_kind[other].null_count() == of_kind.height for other in others)
    sums = metrics.filter(pl.col("metric_type") == "sum")["sum"].struct.field("aggregation_temporality")
    assert set(sums.to_list()) == {"AGGREGATION_TEMPORALITY_DELTA", "AGGREGATION_TEMPORALITY_CUMULATIVE"}

    # Every gauge and sum point: time, value and attributes, as the SDK sent them.
    def number(point: dict[str, Any]) -> float:
        return float(point["asDouble"]) if "asDouble" in point else float(point.get("asInt", 0))

    def text(value: object) -> str:  # SPEC §3: booleans as true/false
        return str(value).lower() if isinstance(value, bool) else str(value)

    def attribute_map(point: dict[str, Any]) -> dict[str, str]:
        return {a["key"]: text(next(iter(a["value"].values()))) for a in point.get("attributes", [])}

    for kind in ("gauge", "sum"):
        expected = sorted(
            (int(p["timeUnixNano"]), number(p), sorted(attribute_map(p).items()))
            for p in _decoded_points("py_sdk", kind)
        )
        points = metrics.filter(pl.col("metric_type") == kind)[kind]
        stored = sorted(
            (time, value, sorted(attrs.items()))
            for time, value, attrs in zip(
                points.struct.field("time_unix_nano"),
                points.struct.field("value"),
                points.struct.field("attributes").to_list(),
                strict=True,
            )
        )
        assert stored == expected, kind
    # Every histogram point: count, sum, buckets and bounds.
    expected_histograms = sorted(
        (int(p["count"]), p["sum"], [int(n) for n in p["bucketCounts"]], p["explicitBounds"])
        for p in _decoded_points("py_sdk", "histogram")
    )
    histograms = metrics.filter(pl.col("metric_type") == "histogram")["histogram"]
    stored_histograms = sorted(
        zip(
            histograms.struct.field("count"),
            histograms.struct.field("sum"),
            histograms.struct.field("bucket_counts").to_list(),
            histograms.struct.field("explicit_bounds").to_list(),
            strict=True,
        )
    )
    assert stored_histograms == expected_histograms

    decoded_points = _decoded_points("py_sdk", "exponentialHistogram")
    expo = metrics.filter(pl.col("metric_type") == "exponential_histogram")["exponential_histogram"]
    # Three requests went to this table; Delta keeps no order between commits, so compare sorted.
    assert sorted(expo.struct.field("scale")) == sorted(p.get("scale", 0) for p in decoded_points)
    for side in ("positive", "negative"):
        buckets = expo.struct.field(f"{side}_bucket")
        assert sorted(buckets.struct.field("bucket_counts").to_list()) == sorted(
            [int(n) for n in p.get(side, {}).get("bucketCounts", [])] for p in decoded_points
        )
        assert sorted(buckets.struct.field("offset")) == sorted(
            p.get(side, {}).get("offset", 0) for p in decoded_points
        )
    assert sorted(expo.struct.field("zero_count")) == sorted(int(p.get("zeroCount", 0)) for p in decoded_points)
    assert any(sum(counts) for counts in expo.struct.field("positive_bucket").struct.field("bucket_counts"))

    exemplar_ids = {
        (e["traceId"], e["spanId"])
        for kind in ("gauge", "sum", "histogram", "exponentialHistogram")
        for p in _decoded_points("py_sdk", kind)
        for e in p.get("exemplars", [])
        if e.get("traceId")
    }
    assert exemplar_ids
    stored = set()
    for kind in ("gauge", "sum", "histogram", "exponential_histogram"):
        for exemplars in metrics[kind].struct.field("exemplars").drop_nulls().to_list():
            stored |= {(e["trace_id"], e["span_id"]) for e in exemplars if e["trace_id"]}
    assert stored == exemplar_ids

    logs = read_table(replayed, "main.telemetry.py_otel_logs")
    bodies = dict(zip(logs["attributes"].map.get("kind").to_list(), logs["body"].to_list(), strict=True))
    assert bodies["int body"] == "42"
    assert bodies["double body"] == "3.14"
    assert bodies["bool body"] == "true"
    assert bodies["array body"] == '[1,"two",{"three":3}]'
    assert bodies["bytes body"] == "cmF3LWJ5dGVzAAE="
    assert logs.filter(pl.col("event_name") == "only.event_name.no.body")["body"].to_list() == [None]
    assert logs["body"].str.starts_with('{"message":"map body"').any()
    assert "plain string body" in logs["body"].to_list()
    attrs = logs.filter(pl.col("event_name") == "py.capture.event")["attributes"][0]
    as_dict = dict(attrs)
    assert as_dict["attr.str_array"] == '["x","y"]'
    assert as_dict["attr.double"] == "2.5"
    assert as_dict["attr.bool"] == "true"
    assert as_dict["attr.bytes"] == "3q2+7w=="
    assert as_dict["attr.map"] == '{"k1":"v1","k2":2,"k3":{"deep":[true,1.5]}}'
    assert logs["severity_number"].str.starts_with("SEVERITY_NUMBER_").all()


def _decoded_points(run: str, kind: str) -> list[dict[str, object]]:
    return [
        point
        for capture in load_captures(run)
        if capture.signal == "metrics"
        for rm in capture.decoded["message"]["resourceMetrics"]
        for sm in rm.get("scopeMetrics", [])
        for metric in sm["metrics"]
        if kind in metric
        for point in metric[kind]["dataPoints"]
    ]


def test_count_records_matches_protobuf() -> None:
    """The test oracle (counting in the readable decoding) agrees with the protobuf body."""
    for capture in load_captures("py_sdk"):
        if capture.signal != "metrics":
            continue
        message = ExportMetricsServiceRequest()
        message.ParseFromString(capture.body)
        assert count_records("metrics", otlp_json.to_dict(message)) == capture.expected_rows
