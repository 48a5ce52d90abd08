"""The warehouse on S3: moto's server on loopback stands in for the object store (it
honours the conditional PUT that delta-rs commits with; s3_server.py makes that check
atomic). Two servers and eight clients append to one table; the rows are read back with
polars from S3. A commit's S3 requests stay the same as the log grows."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import deltalake
import polars as pl
import pytest
from load import PREFIX, TABLE, Load, logs_body
from s3_server import S3Server, start_s3

from otel_ingest.tables import TableName, Warehouse
from support import Server


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 server with its handlers serialized (see s3_server.py for why)."""
    server = start_s3(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


def _read(s3: S3Server, uri: str) -> pl.DataFrame:
    return pl.read_delta(uri, storage_options=s3.storage_options())


def test_two_servers_append_to_one_s3_table(s3: S3Server, tmp_path: Path) -> None:
    warehouse = f"s3://{s3.bucket}/wh-{os.getpid()}-{time.monotonic_ns()}"
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
                    env=s3.env,
                    warehouse_uri=warehouse,
                )
            )
        deadline = time.monotonic() + 30
        while servers[0].ops.get("/readyz").status_code != 200:  # the first probe may still run
            assert time.monotonic() < deadline, servers[0].ops.get("/readyz").text
            time.sleep(0.05)
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


def test_missing_s3_table_is_404(s3: S3Server, tmp_path: Path) -> None:
    warehouse = f"s3://{s3.bucket}/empty-{time.monotonic_ns()}"
    server = Server(tmp_path / "unused", env=s3.env, warehouse_uri=warehouse)
    try:
        headers = {"content-type": "application/json", "x-databricks-uc-table-name": "main.telemetry.none_otel_logs"}
        response = server.post("/v1/logs", b"{}", headers)
        assert response.status_code == 404
    finally:
        server.stop()


CHECKPOINT_INTERVAL = 10


def test_commit_requests_stay_flat_as_the_log_grows(s3: S3Server, tmp_path: Path) -> None:
    """delta-rs 1.6.6 by default deletes expired log entries after every commit and lists
    the whole _delta_log/ to find them: the keys listed per commit grew with the log.
    The writer turns that off, so a commit lists only from the last checkpoint: with a
    checkpoint every 10 versions, the 10 commits after version 50 make exactly the same
    requests (count and keys listed) as the 10 after version 10."""
    warehouse = f"s3://{s3.bucket}/flat-{time.monotonic_ns()}"
    name = TableName.parse(TABLE)
    Warehouse(warehouse, s3.storage_options()).create_for_signal(name, "logs")
    location = f"{warehouse}/{TABLE.replace('.', '/')}"
    deltalake.DeltaTable(location, storage_options=s3.storage_options()).alter.set_table_properties(
        {"delta.checkpointInterval": str(CHECKPOINT_INTERVAL)}, raise_if_not_exists=False
    )
    server = Server(tmp_path / "unused", "--maintenance-interval", "0", env=s3.env, warehouse_uri=warehouse)
    headers = {"content-type": "application/x-protobuf", "x-databricks-uc-table-name": TABLE}
    per_version: dict[int, list[dict[str, object]]] = {}
    try:
        s3.requests()
        for n in range(60):
            response = server.post("/v1/logs", logs_body([f"flat-{n}"]), headers)
            assert response.status_code == 200, response.text
            requests = s3.requests()  # everything this commit asked of S3
            (version,) = [
                int(str(r["path"]).rsplit("/", 1)[1].removesuffix(".json"))
                for r in requests
                if r["method"] == "PUT" and str(r["path"]).endswith(".json") and r["status"] == 200
            ]
            per_version[version] = requests
    finally:
        server.stop()

    def listed(first: int) -> list[tuple[int, int]]:
        """(LIST requests, keys listed) of the commits that made versions first..first+9."""
        return [
            (sum(1 for r in per_version[v] if r["list"]), sum(int(str(r["keys"])) for r in per_version[v]))
            for v in range(first + 1, first + 1 + CHECKPOINT_INTERVAL)
        ]

    assert max(per_version) == 61  # created at 0, altered at 1
    early, late = listed(10), listed(50)
    assert late == early, (early, late)
    assert max(keys for _, keys in late) < 4 * CHECKPOINT_INTERVAL, late
    assert _read(s3, location).height == 60
