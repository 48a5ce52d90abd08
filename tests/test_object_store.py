"""The warehouse on S3: moto's server on loopback stands in for the object store (it
honours the conditional PUT that delta-rs commits with). Two servers and eight
clients append to one table; the rows are read back with polars from S3."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from load import PREFIX, TABLE, Load

from support import Server, free_port

BUCKET = "otel-warehouse"


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, str]]:
    """A moto S3 server on a free loopback port and the environment that points at it."""
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if moto is None:
        pytest.fail("moto_server is missing: install the test extras (pip install -e '.[test]')")
    port = free_port()
    process = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_ALLOW_HTTP": "true",
    }
    try:
        import boto3

        deadline = time.monotonic() + 30
        while True:
            try:
                boto3.client(
                    "s3",
                    endpoint_url=env["AWS_ENDPOINT_URL"],
                    region_name="us-east-1",
                    aws_access_key_id="test",
                    aws_secret_access_key="test",
                ).create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield env
    finally:
        process.terminate()
        process.wait(30)


def _read(env: dict[str, str], uri: str) -> pl.DataFrame:
    options = {
        "aws_endpoint_url": env["AWS_ENDPOINT_URL"],
        "aws_access_key_id": "test",
        "aws_secret_access_key": "test",
        "aws_region": "us-east-1",
        "aws_allow_http": "true",
    }
    return pl.read_delta(uri, storage_options=options)


def test_two_servers_append_to_one_s3_table(s3: dict[str, str], tmp_path: Path) -> None:
    warehouse = f"s3://{BUCKET}/wh-{os.getpid()}-{time.monotonic_ns()}"
    servers = []
    try:
        for index in range(2):
            folder = tmp_path / f"server{index}"
            folder.mkdir()
            servers.append(
                Server(
                    folder / "unused",
                    "--create-tables",
                    PREFIX,
                    "--commit-max-delay",
                    "0.02",
                    env=s3,
                    warehouse_uri=warehouse,
                )
            )
        assert servers[0].client.get("/readyz").status_code == 200
        load = Load([s.url for s in servers], clients=8, records=10, max_requests=8).start()
        result = load.join()
    finally:
        for server in servers:
            server.stop()
    assert result.statuses == Counter({200: 64})
    frame = _read(s3, f"{warehouse}/{TABLE.replace('.', '/')}")
    counts = Counter(frame["attributes"].map.get("seq").to_list())
    assert set(counts) == result.acked
    assert set(counts.values()) == {1}
    assert frame.height == 640


def test_missing_s3_table_is_404(s3: dict[str, str], tmp_path: Path) -> None:
    warehouse = f"s3://{BUCKET}/empty-{time.monotonic_ns()}"
    server = Server(tmp_path / "unused", env=s3, warehouse_uri=warehouse)
    try:
        headers = {"content-type": "application/json", "x-databricks-uc-table-name": "main.telemetry.none_otel_logs"}
        response = server.post("/v1/logs", b"{}", headers)
        assert response.status_code == 404
    finally:
        server.stop()
