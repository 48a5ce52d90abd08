"""Table maintenance: compaction of small files, checkpoints, vacuum, log clean-up.

Used by ``otel-ingest maintain`` and by the server's background task. It works on its
own DeltaTable object, so appends carry on meanwhile: a compaction that conflicts
with them is retried, and a failure here is logged, never surfaced to a client.

How long replaced files and log entries stay is each table's own business: its
``delta.deletedFileRetentionDuration`` and ``delta.logRetentionDuration`` properties
(set by ``tables create`` and ``sql``, changed by ``tables retention``).

Several replicas write the same tables, and each runs background maintenance. Two
compactions must never overlap: deltalake 1.6.6 lets two compactions that read the same
version both commit, and every row they compacted is then in the table twice
(tests/test_maintenance.py reproduces it). So a pass first takes the table's
*maintenance lease*: a commit that carries a Delta application transaction (``txn``)
whose id is MAINTENANCE_APP_ID and whose version encodes the time (ms) and whether the
lease is held or released. Delta's commit protocol makes two claims from the same table
version conflict, so exactly one replica wins. While its pass runs, the holder renews the
claim every RENEW_SECONDS; the others see a fresh claim in the table state they already
hold and skip. A holder that dies stops renewing, and its claim lapses after
STALE_SECONDS.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import deltalake
import pyarrow as pa
from deltalake.exceptions import CommitFailedError

from otel_ingest.compaction import Compacted, compact
from otel_ingest.tables import DELETED_FILE_RETENTION_PROPERTY, TableName, Warehouse, interval_seconds
from otel_ingest.writer import POST_COMMIT, RACE_RETRIES

log = logging.getLogger("otel_ingest.maintenance")

MAINTENANCE_APP_ID = "otel-ingest-maintenance"
# A pass renews its claim this often; a claim not renewed for STALE_SECONDS belongs to a
# replica that died mid-pass. Renewals are empty commits: a handful per pass. The margin
# is wide because a renewal is a commit: on a slow store under load one took 25 s.
RENEW_SECONDS = 5.0
STALE_SECONDS = 120.0
# A full vacuum lists the table's folder and deletes every data file that neither the
# current version nor a kept tombstone references, once older than its retention. That
# includes the file of a commit still in flight (written, not yet referenced): on a slow
# S3 under load one commit took 105 s, and a 10 s full vacuum deleted its file. So the
# full vacuum never uses a retention below this; shorter table retentions are served by
# a "lite" vacuum, which deletes only files a commit replaced (tombstones) and is safe at
# any retention, but misses tombstones that a checkpoint dropped once they expired.
# (The variable exists for benchmarks that compress hours into minutes: bench/footprint.py.)
FULL_VACUUM_MIN_SECONDS = int(os.environ.get("OTEL_INGEST_FULL_VACUUM_MIN_SECONDS", "3600"))
# Background passes skip a table whose last pass ended less than this share of the
# interval ago: the replicas' timers drift, and a pass that starts a little early gives way.
LEASE_SHARE = 0.8
# Delta's own default when a table has no delta.deletedFileRetentionDuration.
DELTA_DEFAULT_RETENTION = "interval 1 week"


@dataclass(frozen=True)
class MaintenanceReport:
    """What one maintenance pass did to one table (``skipped``: why it did nothing, or why it
    stopped after compacting and left the rest to the next pass)."""

    name: TableName
    files_removed: int = 0
    files_added: int = 0
    files_vacuumed: int = 0
    version: int = 0
    retention: str = ""
    seconds: float = 0.0
    skipped: str | None = None

    def __str__(self) -> str:
        if self.skipped:
            return f"{self.name}: skipped, {self.skipped}"
        return (
            f"{self.name}: compacted {self.files_removed} files into {self.files_added}, "
            f"vacuumed {self.files_vacuumed} (retention {self.retention}), "
            f"checkpoint at version {self.version} ({self.seconds:.1f} s)"
        )


def retention_of(table: deltalake.DeltaTable) -> str:
    """The table's deleted-file retention, as its property says (or Delta's default)."""
    return table.metadata().configuration.get(DELETED_FILE_RETENTION_PROPERTY, DELTA_DEFAULT_RETENTION)


@dataclass(frozen=True)
class Claim:
    """The lease as the table records it: when it was last claimed, renewed or released."""

    at_ms: int
    held: bool

    @classmethod
    def of(cls, table: deltalake.DeltaTable) -> Claim | None:
        version = table.transaction_version(MAINTENANCE_APP_ID)
        return None if version is None else cls(version // 2, version % 2 == 0)

    def version(self) -> int:
        return self.at_ms * 2 + (0 if self.held else 1)


def _record(table: deltalake.DeltaTable, claim: Claim) -> None:
    """Commit ``claim`` (an empty append carrying the lease's txn); CommitFailedError if a
    concurrent commit recorded the lease first."""
    empty = pa.Table.from_batches([], schema=pa.schema(table.schema().to_arrow()))
    properties = deltalake.CommitProperties(
        app_transactions=[deltalake.Transaction(app_id=MAINTENANCE_APP_ID, version=claim.version())],
        max_commit_retries=RACE_RETRIES,  # lost races with appends are retried; only a claim conflicts
    )
    deltalake.write_deltalake(
        table, empty, mode="append", commit_properties=properties, post_commithook_properties=POST_COMMIT
    )


def claim(table: deltalake.DeltaTable, every: float = 0.0, force: bool = False) -> str | None:
    """Take the table's maintenance lease; None when taken, else why not. ``every``: also
    give way when the last pass ended less than LEASE_SHARE of that many seconds ago.
    ``force``: take it even if another holds it (only a concurrent claim still wins)."""
    now_ms = int(time.time() * 1000)
    last = Claim.of(table)
    if last is not None and not force:
        age = (now_ms - last.at_ms) / 1000
        if last.held and age < STALE_SECONDS:
            return f"a pass on another replica holds it (renewed {age:.0f} s ago)"
        if age < every * LEASE_SHARE:
            return f"another pass ended {age:.0f} s ago"
    try:
        _record(table, Claim(now_ms, held=True))
    except CommitFailedError as exc:  # a concurrent claim won
        return f"another pass claimed it at the same moment ({exc})"
    return None


class _Renewal:
    """Renews a held lease every RENEW_SECONDS in a thread, and releases it at the end."""

    def __init__(self, warehouse: Warehouse, name: TableName) -> None:
        self.table = deltalake.DeltaTable(warehouse.location(name), storage_options=warehouse.storage_options)
        self.name = name
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"lease {name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(RENEW_SECONDS):
            try:
                self.table.update_incremental()
                _record(self.table, Claim(int(time.time() * 1000), held=True))
            except Exception as exc:  # the next renewal may succeed; STALE_SECONDS leaves room
                log.warning("Could not renew the maintenance lease of %s: %s", self.name, exc)

    def release(self) -> None:
        self.done.set()
        self.thread.join()
        try:
            self.table.update_incremental()
            _record(self.table, Claim(int(time.time() * 1000), held=False))
        except Exception as exc:  # the claim then lapses after STALE_SECONDS
            log.warning("Could not release the maintenance lease of %s: %s", self.name, exc)


def maintain(
    warehouse: Warehouse,
    name: TableName,
    retention_hours: int | None = None,
    every: float = 0.0,
    force: bool = False,
) -> MaintenanceReport:
    """Compact, checkpoint, vacuum and clean the log of one table, holding its lease.

    ``retention_hours`` overrides the table's own deleted-file retention (it may then be
    shorter than the property: an operator's explicit choice). ``every``: the background
    interval; the pass is skipped if another ended less than about that long ago. A pass
    that finds the lease held by another replica is skipped (see ``MaintenanceReport.skipped``),
    unless ``force``: for when no server runs and one that stopped left its claim behind.
    """
    started = time.perf_counter()
    table = deltalake.DeltaTable(warehouse.location(name), storage_options=warehouse.storage_options)
    busy = claim(table, every, force)
    if busy:
        log.info("Maintenance of %s skipped: %s.", name, busy)
        return MaintenanceReport(name=name, version=table.version(), skipped=busy)
    renewal = _Renewal(warehouse, name)
    try:
        return _pass(table, name, retention_hours, started, warehouse.storage_options)
    finally:
        renewal.release()


def _vacuum(table: deltalake.DeltaTable, retention_hours: int | None, seconds: int) -> int:
    """Delete replaced and unreferenced data files per the retention; returns how many."""
    # Vacuum judges "referenced" by the state it holds: load the commits made meanwhile.
    table.update_incremental()
    enforce = retention_hours is None  # an explicit override may undercut the table's property
    # A vacuum commits its start and end to the log; under a stream of appends the default
    # 15 lost races were not always enough (on moto S3 at load 16 one pass failed so).
    commit = deltalake.CommitProperties(max_commit_retries=RACE_RETRIES)

    def vacuum(hours: int | None, full: bool) -> int:
        return len(
            table.vacuum(
                retention_hours=hours,
                dry_run=False,
                enforce_retention_duration=enforce,
                full=full,
                commit_properties=commit,
            )
        )

    removed = 0
    if seconds < FULL_VACUUM_MIN_SECONDS:
        removed += vacuum(retention_hours, full=False)
        retention_hours = max(1, FULL_VACUUM_MIN_SECONDS // 3600)
    removed += vacuum(retention_hours, full=True)
    return removed


def _pass(
    table: deltalake.DeltaTable,
    name: TableName,
    retention_hours: int | None,
    started: float,
    storage_options: dict[str, str] | None = None,
) -> MaintenanceReport:
    done = Compacted()
    try:
        # Tiered: merges recent small files, never rewrites the whole table (compaction.py).
        done = compact(table, storage_options)
    except Exception as exc:  # a failed merge leaves the table as it was; the next pass retries
        log.warning("Compaction of %s failed: %s", name, exc)
        table.update_incremental()
    retention = retention_of(table) if retention_hours is None else f"interval {retention_hours} hours"
    seconds = interval_seconds(retention)  # a malformed property stops here, before anything is deleted
    # Before the checkpoint: a checkpoint drops tombstones older than the retention, and the
    # lite vacuum finds replaced files only through their tombstones.
    try:
        vacuumed = _vacuum(table, retention_hours, seconds)
    except CommitFailedError as exc:
        # A vacuum records its start and end in the log, and while replicas append without a
        # pause it can lose every race it is allowed (CI, two replicas on moto: "Failed to
        # commit transaction: 15" although max_commit_retries is RACE_RETRIES). If its start
        # did not commit it deleted nothing. The checkpoint waits for the next pass too: it
        # would drop tombstones that the lite vacuum still needs.
        reason = f"its vacuum lost the race to the writers' commits ({exc}); the next pass tries again"
        log.info("Maintenance of %s skipped: %s.", name, reason)
        return MaintenanceReport(
            name=name,
            files_removed=done.files_removed,
            files_added=done.files_added,
            version=table.version(),
            retention=retention,
            seconds=time.perf_counter() - started,
            skipped=reason,
        )
    table.create_checkpoint()
    # Expired log entries go here, not after every append: deleting them lists the
    # whole _delta_log folder, which writers should not pay for on each commit.
    table.cleanup_metadata()
    report = MaintenanceReport(
        name=name,
        files_removed=done.files_removed,
        files_added=done.files_added,
        files_vacuumed=vacuumed,
        version=table.version(),
        retention=retention,
        seconds=time.perf_counter() - started,
    )
    log.info("Maintained %s.", report)
    return report
