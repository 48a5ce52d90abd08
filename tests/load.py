"""A small load generator for durability tests: concurrent clients sending log records
that each carry a unique ``seq`` attribute, remembering which ones were acknowledged."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

TABLE = "main.telemetry.load_otel_logs"
PREFIX = "main.telemetry.load"


def logs_body(seqs: list[str], padding: int = 0) -> bytes:
    """One log record per seq; ``padding`` bytes of body text per record."""
    request = ExportLogsServiceRequest()
    scope_logs = request.resource_logs.add().scope_logs.add()
    scope_logs.scope.name = "load"
    for seq in seqs:
        record = scope_logs.log_records.add()
        record.time_unix_nano = time.time_ns()
        record.body.CopyFrom(AnyValue(string_value="x" * padding if padding else f"record {seq}"))
        record.attributes.append(KeyValue(key="seq", value=AnyValue(string_value=seq)))
    return request.SerializeToString()


@dataclass
class LoadResult:
    acked: set[str] = field(default_factory=set)
    statuses: Counter[int] = field(default_factory=Counter)
    retry_after: list[str] = field(default_factory=list)
    transport_errors: int = 0
    requests_sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class Load:
    """``clients`` threads, each sending requests of ``records`` records to one of ``urls``."""

    def __init__(
        self,
        urls: list[str],
        clients: int,
        records: int = 20,
        padding: int = 0,
        retry_unavailable: bool = False,
        max_requests: int | None = None,
        table: str = TABLE,
        on_transport_error: Callable[[], bool] = lambda: False,
        tag: str = "",
    ) -> None:
        self.tag = tag  # keeps the seqs of several loads on one table distinct
        self.urls = urls
        self.records = records
        self.padding = padding
        self.retry_unavailable = retry_unavailable
        self.max_requests = max_requests
        self.table = table
        self.on_transport_error = on_transport_error  # True: keep going
        self.stop = threading.Event()
        self.result = LoadResult()
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def join(self, timeout: float = 120) -> LoadResult:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "load clients did not finish"
        return self.result

    def wait_for_acks(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(self.result.acked) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.result.acked) >= count, f"only {len(self.result.acked)} records acknowledged"

    def _client(self, client: int) -> None:
        url = self.urls[client % len(self.urls)]
        headers = {"content-type": "application/x-protobuf", "x-databricks-uc-table-name": self.table}
        result = self.result
        with httpx.Client(base_url=url, timeout=60) as http:
            n = 0
            while not self.stop.is_set() and (self.max_requests is None or n < self.max_requests):
                seqs = [f"{self.tag}{client}-{n}-{k}" for k in range(self.records)]
                body = logs_body(seqs, self.padding)
                n += 1
                while True:  # resend the same request while the server asks us to
                    try:
                        response = http.post("/v1/logs", content=body, headers=headers)
                    except httpx.TransportError:
                        with result.lock:
                            result.transport_errors += 1
                        if not self.on_transport_error():
                            return
                        time.sleep(0.05)
                        continue
                    with result.lock:
                        result.requests_sent += 1
                        result.statuses[response.status_code] += 1
                        if response.status_code == 200:
                            result.acked.update(seqs)
                        if response.status_code in (429, 503):
                            result.retry_after.append(response.headers.get("retry-after", ""))
                    if response.status_code in (429, 503) and self.retry_unavailable and not self.stop.is_set():
                        time.sleep(0.1)
                        continue
                    break
