"""Tiered compaction: merge the small files of recent commits without rewriting old data.

deltalake's ``optimize.compact`` merges every file below the target size (100 MB) into
one, so each pass also rewrites the file the previous pass made: with compacted data at
~5 bytes per record a table's compacted file stays below the target for tens of millions
of records, and every pass left the whole compacted table behind as replaced files, kept
for the deleted-file retention. With a retention of R and a pass every I, storage held
R / I old copies of the compacted data (24 copies with two hours and five minutes) on top
of it, whatever the table's age: storage could never come within 2x the compacted size.

Here a pass merges by level, as log-structured stores do. The files commits write are
level 0; a pass merges all level-0 files into one level-1 file; once FANOUT files of a
level have gathered, they are merged into one file of the next level. A record is thus
rewritten once per level (log base FANOUT of the table size), and what a pass replaces is
the recent data, not the whole table. The level is in the file's name
(``otel-compacted-L<level>-<uuid>.zstd.parquet``); files at or above the target size are
final and never merged again, and no merge reads more than the target size.

Each merge is written with deltalake (so the new file gets the Delta statistics readers
prune with) into a scratch table in a local temporary folder, copied into the table's
location through deltalake's own object-store client, and committed together with the
removal of the files it replaces as one Delta transaction: a reader sees either the small
files or the merged one, never both. Only the maintenance lease's holder compacts
(see maintenance.py), so no other commit removes these files meanwhile; appends that land
in between do not conflict. Should two compactions still overlap, the second one's commit
conflicts and is dropped (``_commit``): no row is ever stored twice.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import deltalake
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake._internal import DeltaFileSystemHandler
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import AddAction, RemoveAction

from otel_ingest.writer import COMPACTED_WRITER_PROPERTIES, POST_COMMIT, RACE_RETRIES

log = logging.getLogger("otel_ingest.compaction")

# Files of one level merged into one of the next once this many have gathered: each
# record is rewritten about log_FANOUT(table size / one pass's data) times, and the live
# table holds at most FANOUT - 1 files per level.
FANOUT = 8
# Delta's target file size when the table sets no delta.targetFileSize: files this large
# are final, and a merge reads at most this much.
DEFAULT_TARGET_BYTES = 100 << 20
COMMIT_ATTEMPTS = 5
COMPACTION_METADATA_KEY = "otelIngestCompaction"
COMPACTION_APP_ID = "otel-ingest-compaction"
_LEVEL = re.compile(r"(?:^|/)otel-compacted-L(\d+)-[0-9a-f-]+\.zstd\.parquet$")


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to the table's root, as the log has it
    size: int
    records: int

    @property
    def level(self) -> int:
        match = _LEVEL.search(self.path)
        return int(match.group(1)) if match else 0


@dataclass
class Compacted:
    """What a compaction pass did: files replaced, files written, merges committed."""

    files_removed: int = 0
    files_added: int = 0
    merges: int = 0


def target_bytes(table: deltalake.DeltaTable) -> int:
    value = table.metadata().configuration.get("delta.targetFileSize")
    return int(value) if value else DEFAULT_TARGET_BYTES


def active_files(table: deltalake.DeltaTable) -> list[DataFile]:
    """The data files of the table's current version, oldest first as the log lists them."""
    adds = pa.table(table.get_add_actions(flatten=True)).select(["path", "size_bytes", "num_records"]).to_pylist()
    return [DataFile(a["path"], int(a["size_bytes"]), int(a["num_records"] or 0)) for a in adds]


def plan(files: list[DataFile], target: int) -> list[tuple[int, list[DataFile]]]:
    """The merges of one pass, lowest level first: (level of the output, inputs). Level 0
    merges as soon as two files exist; higher levels once FANOUT have gathered."""
    by_level: dict[int, list[DataFile]] = {}
    for file in files:
        if file.size < target:
            by_level.setdefault(file.level, []).append(file)
    merges: list[tuple[int, list[DataFile]]] = []
    for level in sorted(by_level):
        waiting = by_level[level]
        if len(waiting) < (2 if level == 0 else FANOUT):
            continue
        group: list[DataFile] = []
        for file in waiting:  # in log order, each merge reading at most ``target`` bytes
            if group and sum(f.size for f in group) + file.size > target:
                merges.append((level + 1, group))
                group = []
            group.append(file)
        if len(group) > 1:
            merges.append((level + 1, group))
    return [(level, group) for level, group in merges if len(group) > 1]


def compact(table: deltalake.DeltaTable, storage_options: dict[str, str] | None) -> Compacted:
    """Run one pass of tiered compaction on ``table`` (its lease held by the caller)."""
    if table.metadata().partition_columns:  # made elsewhere: merges here ignore partitions
        metrics = table.optimize.compact(writer_properties=COMPACTED_WRITER_PROPERTIES)
        return Compacted(int(metrics["numFilesRemoved"]), int(metrics["numFilesAdded"]), 1)
    done = Compacted()
    # deltalake's own object-store client (local folder or S3, same options as the table);
    # used directly, as its pyarrow wrapper cannot write in deltalake 1.6.6.
    store = DeltaFileSystemHandler(table_uri=table.table_uri, options=storage_options)
    for level, inputs in plan(active_files(table), target_bytes(table)):
        added = _merge(table, store, level, inputs)
        done.files_removed += len(inputs)
        done.files_added += added
        done.merges += 1
    return done


def _batches(files: list[Path], schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=64 * 1024):
            yield batch.cast(schema)


def _merge(table: deltalake.DeltaTable, store: DeltaFileSystemHandler, level: int, inputs: list[DataFile]) -> int:
    """Write ``inputs`` as one file of ``level`` and commit the swap; returns files added."""
    schema = pa.schema(table.schema().to_arrow())
    scratch = Path(tempfile.mkdtemp(prefix="otel-ingest-compaction-"))
    try:
        # The inputs are fetched first: deltalake's store cannot be read from inside its
        # own writer (the reader would run on the writer's async runtime and panic).
        local = []
        for index, file in enumerate(inputs):
            local.append(scratch / f"input-{index}.parquet")
            source = store.open_input_file(file.path)
            with local[-1].open("wb") as copy:
                while chunk := source.read(8 << 20):
                    copy.write(chunk)
        reader = pa.RecordBatchReader.from_batches(schema, _batches(local, schema))
        deltalake.write_deltalake(
            str(scratch / "merged"), reader, mode="append", writer_properties=COMPACTED_WRITER_PROPERTIES
        )
        actions: list[AddAction | RemoveAction] = []
        records = 0
        for entry in _adds(scratch / "merged"):
            name = f"otel-compacted-L{level}-{uuid.uuid4()}.zstd.parquet"
            _upload(scratch / "merged" / str(entry["path"]), store, name)
            stats = entry.get("stats") or "{}"
            records += int(json.loads(stats).get("numRecords", 0))
            actions.append(AddAction(name, int(entry["size"]), {}, int(time.time() * 1000), False, stats))
        expected = sum(f.records for f in inputs)
        if records != expected:  # never swap files that do not hold the same rows
            raise RuntimeError(f"compaction read {records} records from files that hold {expected}")
        now_ms = int(time.time() * 1000)
        actions += [RemoveAction(f.path, False, now_ms, f.size) for f in inputs]
        _commit(table, actions, schema, level, len(inputs))
        return len(actions) - len(inputs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _adds(scratch: Path) -> list[dict[str, Any]]:
    """The add actions of the scratch table's commits (path, size, stats as JSON)."""
    adds = []
    for entry in sorted((scratch / "_delta_log").glob("*.json")):
        for line in entry.read_text().splitlines():
            action = json.loads(line)
            if "add" in action:
                adds.append(action["add"])
    return adds


def _upload(source: Path, store: DeltaFileSystemHandler, name: str) -> None:
    out = store.open_output_stream(name, None)
    with source.open("rb") as data:
        while chunk := data.read(8 << 20):
            out.write(chunk)
    out.close()  # type: ignore[attr-defined]  # the stub omits it; closing completes the upload


def _commit(
    table: deltalake.DeltaTable, actions: list[AddAction | RemoveAction], schema: pa.Schema, level: int, inputs: int
) -> None:
    """Commit the swap. Every compaction commit carries the same application id, so two
    compactions committed from the same table version conflict (Delta refuses a second
    transaction of one app id made concurrently) instead of both removing the same files
    and each adding its copy of their rows (which deltalake 1.6.6 otherwise allows). The
    lease already keeps compactions apart; this makes a lapse of it harmless."""
    removed = {action.path for action in actions if isinstance(action, RemoveAction)}
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        properties = deltalake.CommitProperties(
            custom_metadata={COMPACTION_METADATA_KEY: f"{inputs} files into level {level}"},
            app_transactions=[deltalake.Transaction(app_id=COMPACTION_APP_ID, version=time.time_ns() // 1000)],
            max_commit_retries=RACE_RETRIES,  # lost races with appends: rebase and retry
        )
        try:
            table.create_write_transaction(
                actions,
                mode="append",
                schema=schema,
                commit_properties=properties,
                post_commithook_properties=POST_COMMIT,
            )
            return
        except CommitFailedError:
            table.update_incremental()
            gone = removed - {file.path for file in active_files(table)}
            if gone or attempt == COMMIT_ATTEMPTS:  # another compaction took them: leave it be
                raise
            log.info("Compaction commit of %s conflicted (attempt %d); retrying.", table.table_uri, attempt)
