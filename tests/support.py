"""Shared test helpers: captured requests, a real server process, an independent reader."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import polars as pl
from google.protobuf.message import Message

from otel_ingest import otlp_json

CAPTURES = Path(__file__).parent / "captures"
T = TypeVar("T")
# Hop-by-hop and framing headers are re-created by the HTTP client.
_FRAMING_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}
_POINT_KINDS = ("gauge", "sum", "histogram", "exponentialHistogram", "summary")


@dataclass(frozen=True)
class Capture:
    """One recorded export request (see captures/README.md)."""

    run: str
    n: int
    method: str
    path: str
    headers: list[tuple[str, str]]
    chunked: bool
    body: bytes
    decoded: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.run}/{self.n}"

    @property
    def signal(self) -> str:
        return self.path.rsplit("/", 1)[1]

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    @property
    def table(self) -> str | None:
        return self.header("x-databricks-uc-table-name")

    @property
    def expected_rows(self) -> int:
        """Rows the request must produce, counted from the readable decoding."""
        return count_records(self.signal, self.decoded["message"])


def count_records(signal: str, message: dict[str, Any]) -> int:
    """Data points / log records / spans in an OTLP/JSON-shaped request."""
    total = 0
    if signal == "metrics":
        for rm in message.get("resourceMetrics", []):
            for sm in rm.get("scopeMetrics", []):
                for metric in sm.get("metrics", []):
                    for kind in _POINT_KINDS:
                        total += len(metric.get(kind, {}).get("dataPoints", []))
    elif signal == "logs":
        for rl in message.get("resourceLogs", []):
            for sl in rl.get("scopeLogs", []):
                total += len(sl.get("logRecords", []))
    else:
        for rs in message.get("resourceSpans", []):
            for ss in rs.get("scopeSpans", []):
                total += len(ss.get("spans", []))
    return total


def load_captures(run: str | None = None) -> list[Capture]:
    captures = []
    for meta_path in sorted(CAPTURES.glob("*/*.json"), key=lambda p: (p.parent.name, p.name)):
        if meta_path.name.endswith(".decoded.json") or (run and meta_path.parent.name != run):
            continue
        meta = json.loads(meta_path.read_text())
        stem = meta_path.with_suffix("")
        captures.append(
            Capture(
                run=meta_path.parent.name,
                n=meta["n"],
                method=meta["method"],
                path=meta["path"],
                headers=[(k, v) for k, v in meta["headers"]],
                chunked=meta["body_framing"] == "chunked",
                body=stem.with_suffix(".bin").read_bytes(),
                decoded=json.loads(stem.with_suffix(".decoded.json").read_text()),
            )
        )
    return sorted(captures, key=lambda c: (c.run, c.n))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _chunks(body: bytes, size: int = 512) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


class Server:
    """``otel-ingest serve`` in a child process on a free loopback port."""

    def __init__(
        self,
        warehouse: Path,
        *args: str,
        env: dict[str, str] | None = None,
        settings_from_env: bool = False,
        command_prefix: list[str] | None = None,
        warehouse_uri: str | None = None,
    ) -> None:
        """``warehouse`` is a local folder (its parent holds the server log); ``warehouse_uri``,
        if given, is where the server writes instead (an object-store URI)."""
        self.warehouse = warehouse
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The ops listener (/readyz, /metrics): its own free port unless the test chose one.
        chosen = next((args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--ops-port"), None)
        self.ops_port: int | None = free_port() if chosen is None else int(chosen) or None
        self.ops_url = f"http://127.0.0.1:{self.ops_port}" if self.ops_port else self.url
        self.log_path = warehouse.parent / f"server-{self.port}.log"
        command = [*(command_prefix or []), sys.executable, "-m", "otel_ingest", "serve", *args]
        env = dict(env or {})
        if settings_from_env:
            env.update(OTEL_INGEST_PORT=str(self.port), OTEL_INGEST_WAREHOUSE=warehouse_uri or str(warehouse))
            if chosen is None:
                env["OTEL_INGEST_OPS_PORT"] = str(self.ops_port)
        else:
            command += ["--port", str(self.port), "--warehouse", warehouse_uri or str(warehouse)]
            if chosen is None:
                command += ["--ops-port", str(self.ops_port)]
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **env})
        self.client = httpx.Client(base_url=self.url, timeout=60)
        self.ops = httpx.Client(base_url=self.ops_url, timeout=60)
        for port in (self.port, self.ops_port):
            if port is not None:
                self._wait_listening(port)

    def _wait_listening(self, port: int, timeout: float = 90) -> None:
        # A generous deadline: it only matters when the server never comes up, and a loaded
        # machine took over 30 s to start one twice. On failure the process is killed, not left.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.process.kill()
        self.process.wait()
        raise RuntimeError(f"server did not start in {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post(
        self,
        path: str,
        body: bytes,
        headers: dict[str, str] | list[tuple[str, str]] | None = None,
        chunked: bool = False,
    ) -> httpx.Response:
        content: bytes | Iterator[bytes] = _chunks(body) if chunked else body
        return self.client.post(path, content=content, headers=headers)

    def replay(self, capture: Capture) -> httpx.Response:
        headers = [(k, v) for k, v in capture.headers if k.lower() not in _FRAMING_HEADERS]
        return self.client.request(
            capture.method,
            capture.path,
            content=_chunks(capture.body) if capture.chunked else capture.body,
            headers=headers,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        self.client.close()
        self.ops.close()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log.close()
        return code


def wait_until(condition: Callable[[], T], what: str, timeout: float = 60, every: float = 0.02) -> T:
    """Poll ``condition`` until it returns something true, and return that; fail naming
    ``what`` after ``timeout`` seconds. Tests wait for a state this way, never for a fixed time."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)
    return value


def metric(server: Server, name: str) -> float:
    """The value of an unlabelled sample in the server's /metrics."""
    for line in server.ops.get("/metrics").text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


def table_path(warehouse: Path, name: str) -> Path:
    return warehouse.joinpath(*name.lower().split("."))


def read_table(warehouse: Path, name: str) -> pl.DataFrame:
    """Read a Delta table with polars (an independent reader), empty frame if absent."""
    path = table_path(warehouse, name)
    if not (path / "_delta_log").is_dir():
        return pl.DataFrame()
    return pl.read_delta(str(path))


def row_count(warehouse: Path, name: str) -> int:
    return read_table(warehouse, name).height


def peak_rss(pid: int) -> int:
    """VmHWM: the most resident memory a process has ever had, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def export_reply(response: httpx.Response, reply: Message) -> Message:
    """Fill ``reply`` (an Export*ServiceResponse) from a 200 answer, protobuf or OTLP/JSON."""
    assert response.status_code == 200, response.text
    if response.headers["content-type"] == "application/json":
        otlp_json.parse(response.content, reply)
    else:
        reply.ParseFromString(response.content)
    return reply
