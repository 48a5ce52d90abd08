"""Decoding runs off the event loop (issue 13): while one large OTLP/JSON request is being
decoded, ``/healthz`` and other clients' requests are answered and committed.

State-driven, no timing threshold: the large request is known to be decoding once the
server holds its inflated-body reservation (``otel_ingest_buffered_bytes``). From then on
another client sends small requests one after the other, each waiting for its 200 (a
commit); the test checks that they were acknowledged while the large one was still in
flight. When parsing ran on the event loop, none could be until it was done.

Twice: with the Python decoder (json_format, slow enough on 4,000 records that ten small
requests fit in its decoding), and with the compiled one on a 63 MiB body (JSON → protobuf
in C with the GIL released, then the native decoder): the small requests go to another
table, so that they are not committed behind the large one, and at least one must be
acknowledged while it is in flight.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from otel_ingest.budget import DECODE_OVERHEAD
from otel_ingest.decode import jsonpb, native
from support import Server, load_captures

LOGS_PATH = "/api/2.0/otel/v1/logs"
OTHER_REQUESTS = 10
TABLE = {"X-Databricks-UC-Table-Name": "main.telemetry.claude_otel_logs", "Content-Type": "application/json"}
OTHER_TABLE = {**TABLE, "X-Databricks-UC-Table-Name": "main.telemetry.other_otel_logs"}


def _large_json_logs(records: int, size: int = 0) -> bytes:
    """A cc_json logs request of ``records`` records, or of as many as fit in ``size`` bytes."""
    (capture,) = [c for c in load_captures("cc_json") if c.signal == "logs"]
    document = json.loads(capture.body)
    scope = document["resourceLogs"][0]["scopeLogs"][0]
    template = scope["logRecords"]
    if size:
        each = len(json.dumps(template).encode()) / len(template) + 1
        records = int((size - len(capture.body)) / each)
    scope["logRecords"] = [template[i % len(template)] for i in range(records)]
    body = json.dumps(document).encode()
    assert len(body) <= size or not size
    return body


def _buffered_bytes(server: Server) -> float:
    text = server.ops.get("/metrics").text
    for family in text_string_to_metric_families(text):
        if family.name == "otel_ingest_buffered_bytes":
            return family.samples[0].value
    raise AssertionError("no otel_ingest_buffered_bytes gauge")


@pytest.mark.parametrize("decoder", ["python", "native"])
def test_a_large_json_request_does_not_hold_other_requests(start_server: Callable[..., Server], decoder: str) -> None:
    if decoder == "native" and not (native.available() and jsonpb.available()):
        pytest.skip("the native decoder was not built")
    server = start_server(
        # No commit deadline: on a loaded machine the large body may take longer than the default
        # 8 s to decode, and the 503 + resend path it would take is tested in test_resend.py.
        "--create-tables",
        "main.telemetry.claude,main.telemetry.other",
        "--commit-deadline",
        "0",
        env={"OTEL_INGEST_DECODER": decoder},
    )
    if decoder == "python":
        body, others, wanted = _large_json_logs(4000), TABLE, OTHER_REQUESTS
    else:  # just under the 64 MiB default body limit
        body, others, wanted = _large_json_logs(0, size=63 << 20), OTHER_TABLE, 1
    small = json.dumps(json.loads(_large_json_logs(2))).encode()
    big_answer: list[httpx.Response] = []

    def send_big() -> None:
        with httpx.Client(base_url=server.url, timeout=300) as client:
            big_answer.append(client.post(LOGS_PATH, content=body, headers=TABLE))

    sender = threading.Thread(target=send_big)
    sender.start()
    # Decoding has started once the inflated body is held (read, then reserved 1 + 4 times).
    deadline = time.monotonic() + 120
    while _buffered_bytes(server) < len(body) * (1 + DECODE_OVERHEAD):
        assert sender.is_alive() and time.monotonic() < deadline, "the large request never started decoding"
        time.sleep(0.01)
    acknowledged = 0
    with httpx.Client(base_url=server.url, timeout=300) as other:
        while sender.is_alive() and acknowledged < OTHER_REQUESTS:
            assert other.get("/healthz").status_code == 200
            answer = other.post(LOGS_PATH, content=small, headers=others)
            assert answer.status_code == 200, answer.text
            acknowledged += sender.is_alive()
    sender.join()
    assert acknowledged >= wanted, f"only {acknowledged} other requests were answered meanwhile"
    assert big_answer[0].status_code == 200, big_answer[0].text
