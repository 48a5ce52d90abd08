"""No duplicates when storage is slow (issue 8).

OTLP exporters wait 10 s for an answer, then send the same body again. A TCP proxy in
front of the (serialized) moto S3 server stops forwarding for 10 s, then for 40 s, while
exporter-like clients send: every request is answered within the server's commit
deadline (503 + Retry-After when its commit has not finished), the clients resend, and
the resends are recognised. Read back with polars: every record stored exactly once, none
acknowledged and missing.

The 10 s hang runs ``serve --workers 2`` with a 2 s commit deadline (several resends per
request during the hang) and clients that resend on a new connection each time, so that
resends reach the worker that did not receive the first copy: the table's owner keeps the
registry (resend.py), and the hang lasts until the server has logged such a resend
recognised. Without that (the owner not recognising handed-in resends) this run stored 20
records twice. The 40 s hang covers one process alone, with the default 8 s deadline."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import polars as pl
import pytest
from load import PREFIX, TABLE, logs_body
from s3_server import S3Server, start_s3

from support import Server, free_port, wait_until

EXPORTER_TIMEOUT = 10.0  # the OTLP exporters' default


class StallingProxy:
    """A TCP proxy to ``target`` that holds every byte, both ways, while stalled: a store
    that hangs (connections open, nothing answered) rather than one that refuses."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.flowing = threading.Event()
        self.flowing.set()
        self.forwarded = 0
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                self.flowing.wait()  # a stall holds the bytes already received
                sink.sendall(chunk)
                self.forwarded += 1
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self.flowing.set()
        self._listener.close()
        for end in self._sockets:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()


@dataclass
class Exporters:
    """Clients that behave like the OTLP/HTTP exporters: one request at a time, a 10 s
    timeout, and the same body resent after a timeout, a transport error or a 429/503
    (after Retry-After, or 1, 2, 4 s backoff), until 200 or ``give_up`` seconds."""

    url: str
    clients: int
    requests: int
    records: int = 10
    give_up: float = 150.0
    fresh_connections: bool = False  # each attempt on a new connection (not keep-alive)
    acked: set[str] = field(default_factory=set)
    outcomes: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> Exporters:
        threads = [threading.Thread(target=self._client, args=(n,)) for n in range(self.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(self.give_up * self.requests + 60)
        assert not any(thread.is_alive() for thread in threads)
        return self

    def _count(self, outcome: str) -> None:
        with self.lock:
            self.outcomes[outcome] += 1

    def _client(self, client: int) -> None:
        headers = {"content-type": "application/x-protobuf", "x-databricks-uc-table-name": TABLE}
        with httpx.Client(base_url=self.url, timeout=EXPORTER_TIMEOUT) as kept:
            for n in range(self.requests):
                seqs = [f"{client}-{n}-{k}" for k in range(self.records)]
                body = logs_body(seqs)
                started, attempt = time.monotonic(), 0
                while time.monotonic() - started < self.give_up:
                    attempt += 1
                    delay = min(4.0, 2.0 ** (attempt - 1))
                    try:
                        if self.fresh_connections:
                            with httpx.Client(base_url=self.url, timeout=EXPORTER_TIMEOUT) as http:
                                response = http.post("/v1/logs", content=body, headers=headers)
                        else:
                            response = kept.post("/v1/logs", content=body, headers=headers)
                    except httpx.TimeoutException:
                        self._count("timeout")
                    except httpx.TransportError:
                        self._count("transport error")
                    else:
                        self._count(str(response.status_code))
                        if response.status_code == 200:
                            with self.lock:
                                self.acked.update(seqs)
                            break
                        assert response.status_code in (429, 503), response.text
                        delay = float(response.headers.get("retry-after", delay))
                    time.sleep(delay)  # the exporter's backoff before resending


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = start_s3(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


ACROSS_WORKERS = "received by another worker than its first copy"


@pytest.mark.slow
@pytest.mark.parametrize("hang, workers", [(10, 2), (40, 1)], ids=["10s-2-workers", "40s"])
def test_exporters_resending_through_a_storage_hang_store_each_record_once(
    s3: S3Server, tmp_path: Path, hang: float, workers: int
) -> None:
    proxy = StallingProxy(("127.0.0.1", int(s3.endpoint.rsplit(":", 1)[1])))
    warehouse = f"s3://{s3.bucket}/hang-{hang}-{time.monotonic_ns()}"
    env = {**s3.env, "AWS_ENDPOINT_URL": proxy.endpoint}
    # Two workers: a 2 s deadline gives each request in the stalled commit several resends
    # (every 3 s), each on a new connection, to either worker.
    options = ("--workers", "2", "--commit-deadline", "2") if workers > 1 else ()
    server = Server(
        tmp_path / "unused",
        "--create-tables",
        PREFIX,
        "--maintenance-interval",
        "0",
        *options,
        env=env,
        warehouse_uri=warehouse,
    )
    try:
        if workers > 1:
            wait_until(lambda: all(f"Worker slot {n} of 2" in server.log() for n in (0, 1)), "both workers' slots")
        exporters = Exporters(server.url, clients=4, requests=3, fresh_connections=workers > 1)
        runner = threading.Thread(target=exporters.run)
        runner.start()
        wait_until(lambda: len(exporters.acked) >= 20, "some commits before the hang")
        proxy.flowing.clear()
        stalled_at = time.monotonic()

        def stalled_long_enough() -> bool:
            across = workers == 1 or ACROSS_WORKERS in server.log()
            return across and time.monotonic() - stalled_at >= hang

        wait_until(stalled_long_enough, "the hang (and a resend recognised across workers)", hang + 45, 0.2)
        proxy.flowing.set()
        runner.join(400)
        assert not runner.is_alive()
        metrics = server.ops.get("/metrics").text
    finally:
        server.stop()
        proxy.close()
    print(
        f"{hang} s hang: {dict(exporters.outcomes)}, {server.log().count(ACROSS_WORKERS)} resends recognised across workers"
    )
    frame = pl.read_delta(f"{warehouse}/{TABLE.replace('.', '/')}", storage_options=s3.storage_options())
    stored = Counter(frame["attributes"].map.get("seq").to_list())
    duplicates = {seq: n for seq, n in stored.items() if n > 1}
    assert not duplicates, f"{len(duplicates)} records stored twice"
    assert exporters.acked <= set(stored), "acknowledged records are missing"
    assert len(exporters.acked) == 4 * 3 * 10  # every request was answered 200 in the end
    # The hang was felt: requests were answered 503 at the deadline (or timed out) and resent.
    assert exporters.outcomes["503"] + exporters.outcomes["timeout"] > 0, exporters.outcomes
    if workers == 1:  # (with two, /metrics shows the figures of whichever worker answers)
        resends = re.search(r'otel_ingest_resends_total\{table="[^"]+"\} (\S+)', metrics)
        assert resends and float(resends.group(1)) > 0, "no resend was recognised"
