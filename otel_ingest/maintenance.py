"""Table maintenance: compaction of small files, checkpoints, vacuum, log clean-up.

Used by ``otel-ingest maintain`` and by the server's background task. It works on its
own DeltaTable object, so appends carry on meanwhile: a compaction that conflicts
with them is retried, and a failure here is logged, never surfaced to a client.

How long replaced files and log entries stay is each table's own business: its
``delta.deletedFileRetentionDuration`` and ``delta.logRetentionDuration`` properties
(set by ``tables create`` and ``sql``, changed by ``tables retention``).

Several replicas write the same tables, and each runs background maintenance. A pass
first takes the table's *maintenance lease*: a commit that carries a Delta application
transaction (``txn``) whose id is MAINTENANCE_APP_ID and whose version is the time of
the claim in milliseconds. Delta's commit protocol makes two claims made from the same
table version conflict, so exactly one replica wins; the others see a claim younger
than the interval in the table state they already hold and skip the pass. A replica
that dies mid-pass leaves a claim that expires after one interval.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import deltalake
import pyarrow as pa
from deltalake.exceptions import CommitFailedError

from otel_ingest.tables import DELETED_FILE_RETENTION_PROPERTY, TableName, Warehouse, interval_seconds

log = logging.getLogger("otel_ingest.maintenance")

COMPACT_ATTEMPTS = 3
MAINTENANCE_APP_ID = "otel-ingest-maintenance"
# A claim younger than this share of the interval makes a replica skip its pass: the
# replicas' timers drift, and a pass that starts a little early must still give way.
LEASE_SHARE = 0.8
# Delta's own default when a table has no delta.deletedFileRetentionDuration.
DELTA_DEFAULT_RETENTION = "interval 1 week"


@dataclass(frozen=True)
class MaintenanceReport:
    """What one maintenance pass did to one table (``skipped``: why it did nothing)."""

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


def last_claim_ms(table: deltalake.DeltaTable) -> int | None:
    """When (epoch ms) a maintenance pass last claimed this table, per the loaded state."""
    return table.transaction_version(MAINTENANCE_APP_ID)


def claim(table: deltalake.DeltaTable, interval: float) -> str | None:
    """Take the table's maintenance lease for ``interval`` seconds; None when taken, else
    why not (another replica holds it, or won the race for it)."""
    now_ms = int(time.time() * 1000)
    last = last_claim_ms(table)
    if last is not None and now_ms - last < interval * 1000 * LEASE_SHARE:
        return f"another pass claimed it {(now_ms - last) / 1000:.0f} s ago"
    empty = pa.Table.from_batches([], schema=pa.schema(table.schema().to_arrow()))
    lease = deltalake.CommitProperties(
        app_transactions=[deltalake.Transaction(app_id=MAINTENANCE_APP_ID, version=now_ms)]
    )
    try:
        deltalake.write_deltalake(table, empty, mode="append", commit_properties=lease)
    except CommitFailedError as exc:  # a concurrent claim won
        return f"another pass claimed it at the same moment ({exc})"
    return None


def maintain(
    warehouse: Warehouse,
    name: TableName,
    retention_hours: int | None = None,
    lease_seconds: float | None = None,
) -> MaintenanceReport:
    """Compact, checkpoint, vacuum and clean the log of one table.

    ``retention_hours`` overrides the table's own deleted-file retention (it may then be
    shorter than the property: an operator's explicit choice). ``lease_seconds``: take
    the maintenance lease for that long first and skip the pass if another replica
    holds it (background maintenance); None runs unconditionally (``otel-ingest maintain``).
    """
    started = time.perf_counter()
    table = deltalake.DeltaTable(warehouse.location(name), storage_options=warehouse.storage_options)
    if lease_seconds is not None:
        busy = claim(table, lease_seconds)
        if busy:
            log.info("Maintenance of %s skipped: %s.", name, busy)
            return MaintenanceReport(name=name, version=table.version(), skipped=busy)
    metrics: dict[str, int] = {}
    for attempt in range(1, COMPACT_ATTEMPTS + 1):
        try:
            metrics = table.optimize.compact()
            break
        except Exception as exc:  # a concurrent commit: reload and try again
            if attempt == COMPACT_ATTEMPTS:
                log.warning("Compaction of %s gave up after %d conflicts: %s", name, attempt, exc)
                break
            table.update_incremental()
    table.create_checkpoint()
    retention = retention_of(table) if retention_hours is None else f"interval {retention_hours} hours"
    interval_seconds(retention)  # a malformed property stops here, before anything is deleted
    vacuumed = table.vacuum(
        retention_hours=retention_hours,  # None: the table's property
        dry_run=False,
        enforce_retention_duration=retention_hours is None,
        # Full: also data files no commit references (a commit or a compaction that
        # lost its race), once older than the retention; "lite" keeps them for ever.
        full=True,
    )
    # Expired log entries go here, not after every append: deleting them lists the
    # whole _delta_log folder, which writers should not pay for on each commit.
    table.cleanup_metadata()
    report = MaintenanceReport(
        name=name,
        files_removed=int(metrics.get("numFilesRemoved", 0)),
        files_added=int(metrics.get("numFilesAdded", 0)),
        files_vacuumed=len(vacuumed),
        version=table.version(),
        retention=retention,
        seconds=time.perf_counter() - started,
    )
    log.info("Maintained %s.", report)
    return report
