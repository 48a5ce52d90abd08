"""Table maintenance: compaction of small files, checkpoints, vacuum, log clean-up.

Used by ``otel-ingest maintain`` and by the server's optional background task. It
works on its own DeltaTable object, so appends carry on meanwhile: a compaction
that conflicts with them is retried, and a failure here is logged, never surfaced
to a client.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import deltalake

from otel_ingest.tables import TableName, Warehouse

log = logging.getLogger("otel_ingest.maintenance")

COMPACT_ATTEMPTS = 3
# Delta's default for delta.deletedFileRetentionDuration: readers of older versions
# keep working for a week.
DEFAULT_RETENTION_HOURS = 168


@dataclass(frozen=True)
class MaintenanceReport:
    """What one maintenance pass did to one table."""

    name: TableName
    files_removed: int
    files_added: int
    files_vacuumed: int
    version: int
    seconds: float

    def __str__(self) -> str:
        return (
            f"{self.name}: compacted {self.files_removed} files into {self.files_added}, "
            f"vacuumed {self.files_vacuumed}, checkpoint at version {self.version} ({self.seconds:.1f} s)"
        )


def maintain(
    warehouse: Warehouse, name: TableName, retention_hours: int = DEFAULT_RETENTION_HOURS
) -> MaintenanceReport:
    """Compact, checkpoint, vacuum and clean the log of one table."""
    started = time.perf_counter()
    table = deltalake.DeltaTable(warehouse.location(name), storage_options=warehouse.storage_options)
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
    vacuumed = table.vacuum(
        retention_hours=retention_hours,
        dry_run=False,
        enforce_retention_duration=retention_hours >= DEFAULT_RETENTION_HOURS,
    )
    table.cleanup_metadata()
    report = MaintenanceReport(
        name=name,
        files_removed=int(metrics.get("numFilesRemoved", 0)),
        files_added=int(metrics.get("numFilesAdded", 0)),
        files_vacuumed=len(vacuumed),
        version=table.version(),
        seconds=time.perf_counter() - started,
    )
    log.info("Maintained %s.", report)
    return report
