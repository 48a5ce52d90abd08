"""Processes for the gateway tests: the fake providers and ``otel-ingest gateway``, each a
real server on a free loopback port, plus polling helpers (tests wait for states)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from support import free_port, wait_until

HERE = Path(__file__).parent
FAKE_KEY = "sk-fake-provider-key-0123456789abcdef"
ALICE = "alice-token-0123456789abcdef"  # every endpoint
BOB = "bob-token-0123456789abcdefgh"  # claude-* only

PRINCIPALS = f"""
[[principals]]
name = "alice"
token = "{ALICE}"
tables = []
[principals.gateway]
endpoints = ["*"]

[[principals]]
name = "bob"
token = "{BOB}"
tables = []
[principals.gateway]
endpoints = ["claude"]

[[principals]]
name = "ingest-only"
token = "ingest-only-token-0123456789"
tables = ["main.telemetry.*"]
"""


class Process:
    def __init__(self, command: list[str], log_path: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        self.wait_listening(port)

    def wait_listening(self, port: int) -> None:
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.process.args} exited {self.process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.process.args} did not listen on {port} in time:\n{self.log()}") from None
                time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class Fake(Process):
    """tests/fake_providers.py in its own process."""

    def __init__(self, folder: Path) -> None:
        port = free_port()
        super().__init__(
            [sys.executable, str(HERE / "fake_providers.py"), str(port)],
            folder / f"fake-{port}.log",
            port,
            {"FAKE_KEY": FAKE_KEY},
        )

    def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = httpx.get(f"{self.url}/_requests").json()
        return result

    def stats(self) -> dict[str, int]:
        result: dict[str, int] = httpx.get(f"{self.url}/_stats").json()
        return result


def endpoints_toml(fake_url: str, extra: str = "") -> str:
    return f"""
[[endpoints]]
name = "claude"
provider = "anthropic"
base_url = "{fake_url}"
api_key_env = "GW_TEST_PROVIDER_KEY"
models = ["claude-*"]
timeout_seconds = 3

[[endpoints]]
name = "gpt"
provider = "openai"
base_url = "{fake_url}/v1"
api_key_env = "GW_TEST_PROVIDER_KEY"
models = ["gpt-*"]
timeout_seconds = 3

[[endpoints]]
name = "gemini"
provider = "google"
base_url = "{fake_url}"
api_key_env = "GW_TEST_PROVIDER_KEY"
models = ["gemini-*"]
timeout_seconds = 3

[[endpoints]]
name = "local"
provider = "openai-compatible"
base_url = "{fake_url}/v1"
api_key_env = "GW_TEST_PROVIDER_KEY"
models = ["local-*"]
timeout_seconds = 3
[endpoints.prices]
input = 1.0
output = 2.0
cache_read = 0.5
{extra}
"""


class GatewayProcess(Process):
    """``python -m otel_ingest gateway CONFIG`` on a free port, its ops listener (/metrics)
    on another."""

    def __init__(
        self,
        folder: Path,
        endpoints: str,
        gateway: str = "",
        principals: str = PRINCIPALS,
        env: dict[str, str] | None = None,
    ) -> None:
        port, self.ops_port = free_port(), free_port()
        self.ops_url = f"http://127.0.0.1:{self.ops_port}"
        folder.mkdir(parents=True, exist_ok=True)
        self.warehouse = folder / "warehouse"
        (folder / "tokens.toml").write_text(principals)
        config = folder / f"gateway-{port}.toml"
        if "commit_every_seconds" not in gateway:  # tests wait for rows: commit them sooner
            gateway += "\ncommit_every_seconds = 1"
        config.write_text(f'[gateway]\ntokens = "tokens.toml"\nwarehouse = "{self.warehouse}"\n{gateway}\n{endpoints}')
        super().__init__(
            [
                *(sys.executable, "-m", "otel_ingest", "gateway", str(config)),
                *("--port", str(port), "--ops-port", str(self.ops_port)),
            ],
            folder / f"gateway-{port}.log",
            port,
            {"GW_TEST_PROVIDER_KEY": FAKE_KEY, **(env or {})},
        )
        self.wait_listening(self.ops_port)

    def table(self, name: str) -> pl.DataFrame:
        path = self.warehouse.joinpath(*name.split("."))
        if not (path / "_delta_log").is_dir():
            return pl.DataFrame()
        return pl.read_delta(str(path))

    def row(self, table: str, request_id: str, timeout: float = 30) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            frame = self.table(table)
            if frame.is_empty():
                return None
            rows = frame.filter(pl.col("request_id") == request_id).to_dicts()
            return rows[0] if rows else None

        found: dict[str, Any] = wait_until(find, f"{table} row {request_id}", timeout)
        return found

    def metric(self, name: str) -> float:
        """Sum of a metric's samples in the ops listener's /metrics (0 when absent)."""
        total = 0.0
        for line in httpx.get(f"{self.ops_url}/metrics").text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total
