"""The raw tables of a warehouse and the data files each Delta version added.

A refresh reads only the files that versions after its last one added: the ``add``
actions with ``dataChange = true`` of each commit in ``_delta_log``. Compaction
(``otel-ingest maintain``) rewrites files with ``dataChange = false``: their rows are
already counted, so they are skipped. When a commit file has been cleaned from the log,
or a version removed data, the table is read again in full (``Changes.full``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Literal

import deltalake
import polars as pl
import pyarrow.fs as pafs

from otel_ingest.schema import SIGNALS, TABLE_SUFFIXES, Signal
from otel_ingest.tables import TableName, Warehouse
from otel_ingest.usage.gateway import is_usage_table

# Derived tables live here, outside any catalog.schema.table that clients can name.
DERIVED_FOLDER = "_otel_ingest"


# The AI gateway's usage table is a source too (usage/gateway.py).
GATEWAY: Literal["gateway"] = "gateway"


@dataclass(frozen=True)
class RawTable:
    """One raw table of a table set, or a gateway usage table (its own table set)."""

    name: TableName
    signal: Signal | Literal["gateway"]
    table_set: str

    @property
    def key(self) -> str:
        return str(self.name)


@dataclass
class Changes:
    """What a refresh must read from one raw table: files added after ``since``."""

    table: RawTable
    since: int
    version: int
    files: list[str] = field(default_factory=list)
    full: bool = False
    # Each file's size in bytes (from the add actions), so a large read goes in batches.
    sizes: list[int] = field(default_factory=list)


def _everything(table: RawTable, since: int, delta: deltalake.DeltaTable) -> Changes:
    """Every file of the table's current version (a first or a full read)."""
    actions = pl.DataFrame(delta.get_add_actions(flatten=True))
    sizes = actions["size_bytes"].to_list() if actions.height else []
    return Changes(table, since, delta.version(), list(delta.file_uris()), full=True, sizes=sizes)


def filesystem(warehouse: Warehouse) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem for the warehouse and the root path within it."""
    if warehouse.is_local:
        return pafs.LocalFileSystem(), warehouse.root
    options = {k.lower(): v for k, v in (warehouse.storage_options or {}).items()}
    if warehouse.root.startswith(("s3://", "s3a://")):
        endpoint = options.get("aws_endpoint_url") or options.get("aws_endpoint") or options.get("endpoint")
        scheme = "https"
        if endpoint and "://" in endpoint:
            scheme, endpoint = endpoint.split("://", 1)
        fs = pafs.S3FileSystem(
            access_key=options.get("aws_access_key_id"),
            secret_key=options.get("aws_secret_access_key"),
            session_token=options.get("aws_session_token"),
            region=options.get("aws_region") or options.get("region") or "us-east-1",
            endpoint_override=endpoint,
            scheme=scheme,
        )
        return fs, warehouse.root.split("://", 1)[1]
    fs, root = pafs.FileSystem.from_uri(warehouse.root)
    return fs, root


def _gateway_table(warehouse: Warehouse, name: TableName) -> RawTable | None:
    """The table if the AI gateway writes its usage there (by its property and columns)."""
    try:
        delta = deltalake.DeltaTable(warehouse.location(name), storage_options=warehouse.storage_options)
        columns = {field.name for field in delta.schema().fields}
        configuration = dict(delta.metadata().configuration)
    except Exception:  # not a readable Delta table: not ours to derive from
        return None
    return RawTable(name, GATEWAY, str(name)) if is_usage_table(configuration, columns) else None


def discover(warehouse: Warehouse) -> list[RawTable]:
    """Every ``catalog/schema/<prefix>_otel_{logs,metrics,spans}`` Delta table, and every
    usage table of the AI gateway."""
    fs, root = filesystem(warehouse)
    found: list[RawTable] = []
    try:
        catalogs = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError:
        return found
    for catalog in catalogs:
        if catalog.type != pafs.FileType.Directory or catalog.base_name.startswith(("_", ".")):
            continue
        for schema in fs.get_file_info(pafs.FileSelector(catalog.path)):
            if schema.type != pafs.FileType.Directory:
                continue
            for table in fs.get_file_info(pafs.FileSelector(schema.path)):
                if table.type != pafs.FileType.Directory:
                    continue
                if not any(table.base_name.endswith(TABLE_SUFFIXES[signal]) for signal in SIGNALS):
                    if fs.get_file_info(f"{table.path}/_delta_log").type == pafs.FileType.Directory:
                        try:
                            other = TableName.parse(f"{catalog.base_name}.{schema.base_name}.{table.base_name}")
                        except ValueError:
                            continue
                        gateway = _gateway_table(warehouse, other)
                        if gateway is not None:
                            found.append(gateway)
                    continue
                for signal in SIGNALS:
                    suffix = TABLE_SUFFIXES[signal]
                    if not table.base_name.endswith(suffix):
                        continue
                    log_dir = fs.get_file_info(f"{table.path}/_delta_log")
                    if log_dir.type != pafs.FileType.Directory:
                        continue
                    try:
                        name = TableName.parse(f"{catalog.base_name}.{schema.base_name}.{table.base_name}")
                    except ValueError:
                        continue
                    prefix = f"{name.catalog}.{name.schema}.{name.table[: -len(suffix)]}"
                    found.append(RawTable(name, signal, prefix))
    return sorted(found, key=lambda t: t.key)


def _join(location: str, relative: str) -> str:
    if "://" in relative or relative.startswith("/"):
        return relative
    from urllib.parse import unquote

    return f"{location.rstrip('/')}/{unquote(relative)}"


def changes(warehouse: Warehouse, table: RawTable, since: int) -> Changes:
    """Files added to ``table`` by versions after ``since`` (-1: none read yet)."""
    location = warehouse.location(table.name)
    delta = deltalake.DeltaTable(location, storage_options=warehouse.storage_options)
    version = delta.version()
    result = Changes(table, since, version)
    if version <= since:
        return result
    added = added_files(warehouse, location, since, version)
    if added is None:
        return _everything(table, since, delta)
    result.files, result.sizes = added.files, added.sizes
    return result


@dataclass
class Added:
    """The data files versions ``since + 1 .. version`` of a table added, with each file's
    size and partition values (from its add action)."""

    files: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    partitions: list[dict[str, str | None]] = field(default_factory=list)


def added_files(warehouse: Warehouse, location: str, since: int, version: int) -> Added | None:
    """The files added (``dataChange = true``) by the versions after ``since`` up to
    ``version``; None when the table must be read in full: nothing read yet, a commit
    file cleaned from the log, or a version that removed data."""
    if since < 0:
        return None
    fs, _ = filesystem(warehouse)
    log_path = location.split("://", 1)[1] if "://" in location else location
    result = Added()
    for each in range(since + 1, version + 1):
        path = f"{log_path}/_delta_log/{each:020d}.json"
        try:
            with fs.open_input_stream(path) as stream:
                text = stream.read().decode("utf-8")
        except (FileNotFoundError, OSError):
            return None
        for line in text.splitlines():
            if not line.strip():
                continue
            action = json.loads(line)
            add = action.get("add")
            if add and add.get("dataChange", True):
                result.files.append(_join(location, add["path"]))
                result.sizes.append(int(add.get("size") or 0))
                result.partitions.append(dict(add.get("partitionValues") or {}))
            remove = action.get("remove")
            if remove and remove.get("dataChange", True):
                return None
    return result


def derived_location(warehouse: Warehouse, name: str) -> str:
    if warehouse.is_local:
        return os.path.join(warehouse.root, DERIVED_FOLDER, "usage", name)
    return f"{warehouse.root}/{DERIVED_FOLDER}/usage/{name}"
