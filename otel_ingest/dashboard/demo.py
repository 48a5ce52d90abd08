"""``otel-ingest demo``: replay the bundled sample captures (real exports of Claude Code,
Gemini CLI and Codex CLI, see tests/captures/README.md) through a real ``serve`` process
into a warehouse, so that a newcomer sees a populated dashboard."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import httpx

SAMPLES = ("cc_hello", "cc_tool", "gemini_hello", "codex_hello")
_FRAMING = {"host", "content-length", "transfer-encoding", "connection"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def replay_samples(warehouse: str) -> int:
    """Start ``otel-ingest serve`` on a free loopback port, send every sample, stop it.
    Returns the number of requests the server stored (answered 200)."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "otel_ingest",
        "serve",
        "--port",
        str(port),
        "--warehouse",
        warehouse,
        "--auto-create",
        "--default-traces-table",
        "main.telemetry.gemini_otel_spans",
        "--log-level",
        "warning",
    ]
    server = subprocess.Popen(command, env={**os.environ, "OTEL_INGEST_HOST": "127.0.0.1"})
    stored = 0
    try:
        deadline = time.monotonic() + 30
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"otel-ingest serve exited with {server.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("otel-ingest serve did not start in 30 s") from None
                time.sleep(0.05)
        samples = resources.files("otel_ingest.dashboard").joinpath("samples")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for run in SAMPLES:
                folder = Path(str(samples.joinpath(run)))
                for meta_path in sorted(folder.glob("*.json"), key=lambda p: int(p.stem)):
                    meta = json.loads(meta_path.read_text())
                    headers = [(k, v) for k, v in meta["headers"] if k.lower() not in _FRAMING]
                    body = meta_path.with_suffix(".bin").read_bytes()
                    response = client.request(meta["method"], meta["path"], content=body, headers=headers)
                    stored += response.status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    return stored
