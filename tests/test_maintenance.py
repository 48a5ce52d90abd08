"""Maintenance with short retentions: what vacuum may delete, and several replicas
maintaining the same table while clients append to it (real servers, real Delta
tables read back with polars)."""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import deltalake
import polars as pl
import pyarrow as pa
import pytest
from deltalake.exceptions import CommitFailedError
from load import PREFIX, TABLE, Load, logs_body
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from s3_server import start_s3
from test_cli import run_cli

from otel_ingest import compaction
from otel_ingest.compaction import DataFile, active_files
from otel_ingest.flatten import FLATTENERS
from otel_ingest.maintenance import STALE_SECONDS, Claim, _record, claim, maintain
from otel_ingest.schema import signal_schema
from otel_ingest.tables import (
    DELETED_FILE_RETENTION_PROPERTY,
    LOG_RETENTION_PROPERTY,
    TableName,
    Warehouse,
    table_set,
)
from otel_ingest.writer import POST_COMMIT, WRITER_PROPERTIES
from support import Server, load_captures, read_table, table_path, wait_until


def _short_retention_tables(warehouse: Path, retention: str) -> Warehouse:
    """The load table set, created as ``tables create`` does, then given ``retention``."""
    store = Warehouse(str(warehouse))
    for signal, name in table_set(PREFIX).items():
        store.create_for_signal(name, signal)
        store.set_properties(name, {DELETED_FILE_RETENTION_PROPERTY: retention, LOG_RETENTION_PROPERTY: retention})
    return store


def _rows_at(location: Path, version: int) -> pl.DataFrame:
    """The table as of ``version``, read with polars, in a stable order."""
    frame = pl.read_delta(str(location), version=version)
    return frame.with_columns(seq=pl.col("attributes").map.get("seq")).sort("seq")


def _seqs(frame: pl.DataFrame) -> Counter[str]:
    return Counter(frame["attributes"].map.get("seq").to_list())


def test_short_retention_vacuum_keeps_every_file_a_reader_may_still_need(
    tmp_path: Path, start_server: Callable[..., Server]
) -> None:
    """While a client keeps appending, passes of compaction + vacuum with a 5-second
    retention never remove a file of the current version, and a version read just
    before a pass reads back identically after it; vacuum does remove replaced files.
    (Below an hour vacuum deletes only replaced files, never unreferenced ones, which
    may belong to a commit in flight.)"""
    warehouse = tmp_path / "warehouse"
    store = _short_retention_tables(warehouse, "interval 10 seconds")
    name = TableName.parse(TABLE)
    location = table_path(warehouse, TABLE)
    server = start_server("--maintenance-interval", "0")
    load = Load([server.url], clients=4, records=10).start()
    passes = vacuumed = 0
    deadline = time.monotonic() + 120
    try:
        load.wait_for_acks(100)
        while (passes < 4 or vacuumed == 0) and time.monotonic() < deadline:
            table = deltalake.DeltaTable(str(location))
            version = table.version()
            before = _rows_at(location, version)
            report = maintain(store, name)
            assert report.retention == "interval 10 seconds"
            passes += 1
            vacuumed += report.files_vacuumed
            current = deltalake.DeltaTable(str(location))
            missing = [uri for uri in current.file_uris() if not Path(uri.removeprefix("file://")).exists()]
            assert missing == [], f"vacuum removed files of version {current.version()}"
            assert _rows_at(location, version).equals(before), f"version {version} reads differently after vacuum"
            # The next pass once more commits have landed (and replaced files have aged).
            acked = len(load.result.acked)
            load.wait_for_acks(acked + 50)
    finally:
        load.stop.set()
        result = load.join()
    assert vacuumed > 0, f"{passes} passes over {120 - (deadline - time.monotonic()):.0f} s vacuumed nothing"
    assert set(result.statuses) == {200}, result.statuses
    counts = _seqs(read_table(warehouse, TABLE))
    assert set(counts) == result.acked
    assert set(counts.values()) == {1}


def test_two_replicas_maintaining_under_load_take_turns_and_lose_nothing(
    tmp_path: Path, start_server: Callable[..., Server]
) -> None:
    """Two servers on one warehouse, both maintaining every second with a 10-second
    retention, while eight clients append through both: every append succeeds, every
    acknowledged record is in the table once, and the replicas take turns."""
    warehouse = tmp_path / "warehouse"
    _short_retention_tables(warehouse, "interval 10 seconds")
    servers = [start_server("--maintenance-interval", "1", warehouse=warehouse) for _ in range(2)]
    load = Load([s.url for s in servers], clients=8, records=10).start()
    location = table_path(warehouse, TABLE)

    def maintained() -> list[str]:
        return [line for s in servers for line in s.log().splitlines() if f"Maintained {TABLE}" in line]

    deadline = time.monotonic() + 120
    try:
        # Enough passes that both replicas have tried many times and vacuum has had work.
        while time.monotonic() < deadline and not (
            len(maintained()) >= 6 and any(not re.search(r"vacuumed 0 ", line) for line in maintained())
        ):
            load.wait_for_acks(len(load.result.acked) + 50)
    finally:
        load.stop.set()
        result = load.join()
    logs = "".join(s.log() for s in servers)
    lines = maintained()
    assert len(lines) >= 6, logs[-3000:]
    assert any(not re.search(r"vacuumed 0 ", line) for line in lines)
    assert f"Maintenance of {TABLE} skipped" in logs  # a replica gave way to the other
    # No pass failed, no compaction gave up, no commit ran out of retries.
    assert "Background maintenance" not in logs and "gave up" not in logs
    assert not re.search(r"Commit of \d+ rows .* failed", logs)
    assert set(result.statuses) == {200}, result.statuses
    frame = read_table(warehouse, TABLE)
    counts = _seqs(frame)
    assert set(counts) == result.acked
    assert set(counts.values()) == {1}
    # Compaction kept up: far fewer files than commits.
    table = deltalake.DeltaTable(str(location))
    assert len(table.file_uris()) < table.version() / 4


def test_concurrent_compactions_duplicate_rows_in_deltalake(tmp_path: Path) -> None:
    """Why maintenance takes a lease: deltalake 1.6.6 lets two compactions that read the
    same version both commit, and every compacted row is then in the table twice. If this
    starts failing, deltalake detects the conflict itself; the lease stays harmless."""
    location = str(tmp_path / "table")
    table = deltalake.DeltaTable.create(location, pa.schema([("n", pa.int64())]))
    for n in range(5):
        deltalake.write_deltalake(table, pa.table({"n": [n]}), mode="append")
    first, second = deltalake.DeltaTable(location), deltalake.DeltaTable(location)
    assert first.optimize.compact()["numFilesRemoved"] == 5
    assert second.optimize.compact()["numFilesRemoved"] == 5  # no conflict raised
    assert sorted(pl.read_delta(location)["n"].to_list()) == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_two_tiered_compactions_of_one_version_store_each_row_once(tmp_path: Path) -> None:
    """Ours, unlike deltalake's: should two compactions overlap (a lapsed lease), the second
    commit conflicts (both carry the compaction's application id) and is dropped."""
    location = str(tmp_path / "table")
    table = deltalake.DeltaTable.create(location, pa.schema([("n", pa.int64())]))
    for n in range(5):
        deltalake.write_deltalake(table, pa.table({"n": [n]}), mode="append")
    first, second = deltalake.DeltaTable(location), deltalake.DeltaTable(location)
    assert compaction.compact(first, None).files_removed == 5
    with pytest.raises(CommitFailedError, match="Concurrent transaction"):
        compaction.compact(second, None)
    assert sorted(pl.read_delta(location)["n"].to_list()) == [0, 1, 2, 3, 4]
    assert [f.level for f in active_files(deltalake.DeltaTable(location))] == [1]


def test_a_partitioned_table_is_compacted_by_deltalake_per_partition(tmp_path: Path) -> None:
    """otel-ingest makes unpartitioned tables; one made elsewhere with partitions is left to
    deltalake's compaction, which keeps each partition's rows in its own files."""
    location = str(tmp_path / "table")
    for n in range(3):
        deltalake.write_deltalake(
            location, pa.table({"n": [n, n + 10], "p": ["a", "b"]}), mode="append", partition_by=["p"]
        )
    done = compaction.compact(deltalake.DeltaTable(location), None)
    assert (done.files_removed, done.files_added) == (6, 2)
    frame = pl.read_delta(location)
    assert sorted(frame.filter(pl.col("p") == "b")["n"].to_list()) == [10, 11, 12]
    assert sorted(frame["n"].to_list()) == [0, 1, 2, 10, 11, 12]


def test_the_lease_lets_one_pass_run_at_a_time(tmp_path: Path) -> None:
    """Of two replicas that loaded the same version, one claim wins; a held claim makes
    every other pass skip until it is released or lapses; a background pass also gives
    way to one that ended less than an interval ago."""
    store = _short_retention_tables(tmp_path / "warehouse", "interval 2 hours")
    name = TableName.parse(TABLE)
    location = str(table_path(tmp_path / "warehouse", TABLE))

    def fresh() -> deltalake.DeltaTable:
        return deltalake.DeltaTable(location)

    first, second = fresh(), fresh()
    assert claim(first) is None
    assert "claimed it at the same moment" in (claim(second) or "")
    assert re.fullmatch(r"a pass on another replica holds it \(renewed \d+ s ago\)", claim(fresh(), 300) or "")
    skipped = maintain(store, name)  # `otel-ingest maintain` gives way too
    assert skipped.skipped and "holds it" in skipped.skipped
    now_ms = int(time.time() * 1000)
    _record(fresh(), Claim(now_ms, held=False))  # the pass ended
    assert re.fullmatch(r"another pass ended \d+ s ago", claim(fresh(), 300) or "")
    assert maintain(store, name).skipped is None  # a pass that is not on a schedule runs
    assert Claim.of(fresh()) == Claim(Claim.of(fresh()).at_ms, held=False)  # ...and releases the lease
    # A replica that died holding the lease: its claim lapses after STALE_SECONDS.
    _record(fresh(), Claim(now_ms - int(STALE_SECONDS * 1000) - 1000, held=True))
    assert claim(fresh()) is None
    claimed = Claim.of(fresh())
    assert claimed is not None and claimed.held and abs(claimed.at_ms - time.time() * 1000) < 60_000


def test_tables_get_hours_of_retention_and_maintain_honours_each_tables_own(
    tmp_path: Path, start_server: Callable[..., Server]
) -> None:
    warehouse = tmp_path / "warehouse"
    created = run_cli("tables", "create", "main.telemetry.claude", "--warehouse", str(warehouse))
    assert created.returncode == 0, created.stderr
    shown = run_cli("tables", "retention", "main.telemetry.claude", "--warehouse", str(warehouse))
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("deleted files kept interval 2 hours, log entries kept interval 2 hours") == 3
    logs = "main.telemetry.claude_otel_logs"
    server = start_server("--maintenance-interval", "0")
    (capture,) = [c for c in load_captures("cc_hello") if c.signal == "logs"]
    headers = {"content-type": "application/x-protobuf", "x-databricks-uc-table-name": logs}
    for _ in range(3):
        assert server.post("/v1/logs", capture.body, headers).status_code == 200
    server.stop()
    before = read_table(warehouse, logs).sort(pl.all())

    first = run_cli("maintain", logs, "--warehouse", str(warehouse))
    assert first.returncode == 0, first.stderr
    # Two hours: the three replaced files stay for readers of the older versions.
    assert "compacted 3 files into 1, vacuumed 0 (retention interval 2 hours)" in first.stdout
    assert len(list(table_path(warehouse, logs).glob("*.parquet"))) == 4

    bad = run_cli("tables", "retention", logs, "--deleted-files", "2h", "--warehouse", str(warehouse))
    assert bad.returncode == 2
    assert "'2h' is not a Delta interval; write e.g. 'interval 2 hours'" in bad.stderr
    changed = run_cli(
        "tables", "retention", logs, "--deleted-files", "interval 1 second", "--warehouse", str(warehouse)
    )
    assert changed.returncode == 0, changed.stderr
    assert "deleted files kept interval 1 second, log entries kept interval 2 hours" in changed.stdout
    # Once the replaced files are a second old, the table's own retention lets them go.
    deadline = time.monotonic() + 60
    while True:
        again = run_cli("maintain", logs, "--warehouse", str(warehouse))
        assert again.returncode == 0, again.stderr
        if "vacuumed 3 (retention interval 1 second)" in again.stdout or time.monotonic() > deadline:
            break
    assert "vacuumed 3 (retention interval 1 second)" in again.stdout
    assert len(list(table_path(warehouse, logs).glob("*.parquet"))) == 1
    assert read_table(warehouse, logs).sort(pl.all()).equals(before)
    # The other tables of the set kept theirs.
    shown = run_cli("tables", "retention", "main.telemetry.claude_otel_spans", "--warehouse", str(warehouse))
    assert "deleted files kept interval 2 hours" in shown.stdout


def test_tables_create_gives_an_older_table_the_retentions_it_lacks(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse"
    spans = TableName.parse("main.telemetry.old_otel_spans")
    store = Warehouse(str(warehouse))
    # As otel-ingest made tables before: Delta's default for replaced files, a day of log.
    store.create(spans, signal_schema("traces"), {"otel.schemaVersion": "v1", LOG_RETENTION_PROPERTY: "interval 1 day"})
    result = run_cli("tables", "create", "main.telemetry.old", "--warehouse", str(warehouse))
    assert result.returncode == 0, result.stderr
    properties = store.properties(spans)
    assert properties[DELETED_FILE_RETENTION_PROPERTY] == "interval 2 hours"
    assert properties[LOG_RETENTION_PROPERTY] == "interval 1 day"  # a value already set is kept


def test_two_replicas_maintaining_an_s3_table_under_load_lose_nothing(tmp_path: Path) -> None:
    """The same on S3 (moto, atomic conditional PUT): the lease is a commit, so it holds
    wherever delta-rs can commit. Both replicas maintain every second; after the load the
    table holds every acknowledged record once and passes were skipped for the lease.
    (On a loaded machine a pass on the serialized moto takes minutes: one is enough.)"""
    (tmp_path / "s3").mkdir()
    s3 = start_s3(tmp_path / "s3")
    uri = f"s3://{s3.bucket}/wh-{time.monotonic_ns()}"
    store = Warehouse(uri, s3.storage_options())
    for signal, name in table_set(PREFIX).items():
        store.create_for_signal(name, signal)
        retention = "interval 10 seconds"
        store.set_properties(name, {DELETED_FILE_RETENTION_PROPERTY: retention, LOG_RETENTION_PROPERTY: retention})
    servers: list[Server] = []
    try:
        for index in range(2):
            folder = tmp_path / f"server{index}"
            folder.mkdir()
            # No commit deadline: on a loaded machine a commit on the serialized moto can take
            # longer than 8 s, and a 503 whose commit lands later would be stored but not acked.
            servers.append(
                Server(
                    folder / "unused",
                    *("--maintenance-interval", "1", "--commit-deadline", "0"),
                    env=s3.env,
                    warehouse_uri=uri,
                )
            )

        def passes() -> int:
            return sum(s.log().count(f"Maintained {TABLE}") for s in servers)

        load = Load([s.url for s in servers], clients=4, records=10).start()
        try:
            # The load runs until a pass has finished; moto serializes every request, so on a
            # loaded machine one pass can take minutes. Wait for the state, with a deadline
            # far past what the slowest run took (212 s at a load average of 25).
            load.wait_for_acks(40, timeout=300)
            wait_until(lambda: passes() >= 1, "a maintenance pass on S3 under load", timeout=600, every=0.5)
        finally:
            load.stop.set()
            result = load.join()
        logs = "".join(s.log() for s in servers)
    finally:
        for server in servers:
            server.stop()
        frame = pl.read_delta(store.location(TableName.parse(TABLE)), storage_options=s3.storage_options())
        s3.stop()
    assert passes() >= 1, logs[-3000:]
    assert f"Maintenance of {TABLE} skipped" in logs
    assert "Background maintenance" not in logs and "gave up" not in logs
    assert set(result.statuses) == {200}, result.statuses
    counts = _seqs(frame)
    assert set(counts) == result.acked
    assert set(counts.values()) == {1}


def test_vacuum_deletes_unreferenced_files_only_when_an_hour_old(tmp_path: Path) -> None:
    """A data file no commit references (a commit that failed after writing it) goes once
    it is older than the retention and at least an hour old: a younger one could be the
    file of a commit still in flight, however short the table's retention."""
    warehouse = tmp_path / "warehouse"
    store = _short_retention_tables(warehouse, "interval 10 seconds")
    folder = table_path(warehouse, TABLE)
    recent, old = folder / "part-00000-recent-orphan.zstd.parquet", folder / "part-00000-old-orphan.zstd.parquet"
    for path, age in ((recent, 1800), (old, 7200)):
        path.write_bytes(b"not referenced")
        os.utime(path, (time.time() - age, time.time() - age))
    assert maintain(store, TableName.parse(TABLE)).files_vacuumed == 1
    assert recent.exists() and not old.exists()


def _commit_seqs(location: str, seqs: list[str]) -> None:
    """One commit of one log record per seq, written as the server's writer writes."""
    batch = FLATTENERS["logs"](ExportLogsServiceRequest.FromString(logs_body(seqs))).columns.finish()
    deltalake.write_deltalake(
        location,
        pa.Table.from_batches([batch]),
        mode="append",
        writer_properties=WRITER_PROPERTIES,
        post_commithook_properties=POST_COMMIT,
    )


def test_compaction_merges_new_files_and_never_rewrites_the_whole_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each pass merges the files commits wrote since the last (level 0 -> 1); a level-1
    file stays as it is until FANOUT of them have gathered, then they become one level-2
    file. Rows read back by polars are exactly the committed ones after every pass, and
    compacted files carry the min/max statistics readers prune with (commit files do not)."""
    monkeypatch.setattr(compaction, "FANOUT", 3)  # fewer passes; the rule is the same
    fanout = compaction.FANOUT
    store = _short_retention_tables(tmp_path / "warehouse", "interval 2 hours")
    name = TableName.parse(TABLE)
    location = store.location(name)
    committed: list[str] = []

    def commit(files: int) -> None:
        for _ in range(files):
            seqs = [str(len(committed) + i) for i in range(5)]
            _commit_seqs(location, seqs)
            committed.extend(seqs)

    def files() -> list[DataFile]:
        return active_files(deltalake.DeltaTable(location))

    def check_rows() -> None:
        counts = _seqs(pl.read_delta(location))
        assert set(counts) == set(committed) and set(counts.values()) == {1}

    commit(4)
    no_stats = pa.table(deltalake.DeltaTable(location).get_add_actions(flatten=True))
    assert no_stats["num_records"].to_pylist() == [5] * 4  # Delta's record count stays
    assert no_stats["min.time_unix_nano"].null_count == 4  # no min/max in commit files
    report = maintain(store, name)
    assert (report.files_removed, report.files_added) == (4, 1)
    [first] = files()
    assert first.level == 1
    stats = pa.table(deltalake.DeltaTable(location).get_add_actions(flatten=True))
    assert stats["min.time_unix_nano"].to_pylist()[0] is not None
    check_rows()
    for _ in range(fanout - 1):
        commit(3)
        report = maintain(store, name)
        assert (report.files_removed, report.files_added) == (3, 1)  # only the new files
        assert first in files()  # the older compacted file was not rewritten
        check_rows()
    assert sorted(f.level for f in files()) == [1] * fanout
    commit(2)
    report = maintain(store, name)
    assert (report.files_removed, report.files_added) == (2 + fanout, 2)
    assert sorted(f.level for f in files()) == [1, 2]
    check_rows()
