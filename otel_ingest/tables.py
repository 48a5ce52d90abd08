"""Table names → storage locations, and creating and checking Delta tables (SPEC §2).

A name is validated before anything touches storage. A table is usable for a signal
when its columns match the signal's DDL exactly (names, types, nullability) and its
``otel.schemaVersion`` property, if set, is ``v1``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from dataclasses import dataclass
from typing import Any

import deltalake
import pyarrow as pa

from otel_ingest.errors import BadTableName, SchemaMismatch, TableNotFound
from otel_ingest.schema import (
    SCHEMA_VERSION,
    SCHEMA_VERSION_PROPERTY,
    SIGNALS,
    TABLE_SUFFIXES,
    Signal,
    TableDefinition,
    signal_schema,
)

log = logging.getLogger("otel_ingest.tables")

_PART = re.compile(r"[a-z0-9_][a-z0-9_-]*")
MAX_PART_LENGTH = 255
# Under load every commit writes one small Parquet file and one log entry, and
# `maintain` compacts the small files into large ones. What is replaced stays in
# storage for the retentions below, so they bound the footprint: Delta's defaults (a
# week of replaced files, 30 days of log) kept ~25x the compacted data at 15k
# records/s. Two hours still let a query that started two hours ago finish, and time
# travel reach back two hours, which is all telemetry readers need (docs/operations.md,
# "Retention"). The log keeps as long as the files: an entry whose files are gone only
# serves history, and delta-rs lists the log folder on every commit (bench/versions.py).
# Maintenance (`maintain`, or the server's background pass) deletes what expired.
DELETED_FILE_RETENTION_PROPERTY = "delta.deletedFileRetentionDuration"
LOG_RETENTION_PROPERTY = "delta.logRetentionDuration"
DEFAULT_DELETED_FILE_RETENTION = "interval 2 hours"
DEFAULT_LOG_RETENTION = "interval 2 hours"
TABLE_DEFAULTS = {
    DELETED_FILE_RETENTION_PROPERTY: DEFAULT_DELETED_FILE_RETENTION,
    LOG_RETENTION_PROPERTY: DEFAULT_LOG_RETENTION,
}
_INTERVAL = re.compile(r"interval\s+(\d+)\s+(second|minute|hour|day|week)s?", re.IGNORECASE)
_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
OBJECT_STORE_SCHEMES = ("s3://", "s3a://", "az://", "abfs://", "abfss://", "gs://")


@dataclass(frozen=True)
class TableName:
    """A validated, lower-cased ``catalog.schema.table``."""

    catalog: str
    schema: str
    table: str

    @classmethod
    def parse(cls, raw: str) -> TableName:
        """Validate a header value; raises BadTableName saying what is wrong."""
        if not raw.isascii():
            # Checked before lower-casing: str.lower() turns some look-alikes into ASCII
            # (the Kelvin sign U+212A becomes "k").
            raise BadTableName(f"Table name {raw[:300]!r} may only hold ASCII letters, digits, _ and -.")
        parts = raw.strip().lower().split(".")
        if len(parts) != 3:
            raise BadTableName(f"Table name {raw[:300]!r} must have three dot-separated parts, catalog.schema.table.")
        for part in parts:
            if not part:
                raise BadTableName(f"Table name {raw[:300]!r} has an empty part; write catalog.schema.table.")
            if len(part) > MAX_PART_LENGTH:
                raise BadTableName(
                    f"Table name part {part[:40]!r}… is {len(part)} characters; the limit is {MAX_PART_LENGTH}."
                )
            if not _PART.fullmatch(part):
                raise BadTableName(
                    f"Table name part {part[:300]!r} may only hold a-z, 0-9, _ and - (not starting with -)."
                )
        return cls(*parts)

    def __str__(self) -> str:
        return f"{self.catalog}.{self.schema}.{self.table}"


def table_set(prefix: str) -> dict[Signal, TableName]:
    """``catalog.schema.prefix`` → the three table names of the Databricks guide."""
    base = TableName.parse(prefix)
    return {signal: TableName.parse(f"{base}{TABLE_SUFFIXES[signal]}") for signal in SIGNALS}


def interval_seconds(value: str) -> int:
    """Seconds of a Delta interval such as ``interval 2 hours``; ValueError naming the format."""
    match = _INTERVAL.fullmatch(value.strip())
    if not match:
        raise ValueError(
            f"{value!r} is not a Delta interval; write e.g. 'interval 2 hours' "
            "(a whole number of seconds, minutes, hours, days or weeks)."
        )
    return int(match[1]) * _UNIT_SECONDS[match[2].lower()]


def _first_difference(expected: Any, actual: Any, path: str) -> str | None:
    """Where two Delta JSON types differ first, as a sentence fragment, or None."""
    if isinstance(expected, str) or isinstance(actual, str):
        if expected != actual:
            return f"column {path} is {_render(actual)}, the v1 schema has {_render(expected)}"
        return None
    if expected["type"] != actual["type"]:
        return f"column {path} is {_render(actual)}, the v1 schema has {_render(expected)}"
    if expected["type"] == "struct":
        actual_fields = {f["name"]: f for f in actual["fields"]}
        for want in expected["fields"]:
            name = f"{path}.{want['name']}" if path else want["name"]
            have = actual_fields.get(want["name"])
            if have is None:
                return f"column {name} is missing"
            if want.get("nullable", True) and not have.get("nullable", True):
                return f"column {name} is NOT NULL, but the v1 schema allows NULL"
            difference = _first_difference(want["type"], have["type"], name)
            if difference:
                return difference
        wanted = {f["name"] for f in expected["fields"]}
        for have in actual["fields"]:
            if have["name"] not in wanted:
                name = f"{path}.{have['name']}" if path else have["name"]
                return f"column {name} is not in the v1 schema"
        return None
    if expected["type"] == "array":
        if expected.get("containsNull", True) and not actual.get("containsNull", True):
            return f"column {path} holds no NULL elements, but the v1 schema allows them"
        return _first_difference(expected["elementType"], actual["elementType"], path + "[]")
    if expected["type"] == "map":
        if expected.get("valueContainsNull", True) and not actual.get("valueContainsNull", True):
            return f"column {path} holds no NULL values, but the v1 schema allows them"
        return _first_difference(expected["keyType"], actual["keyType"], path + ".key") or _first_difference(
            expected["valueType"], actual["valueType"], path + ".value"
        )
    return None


def _render(data_type: Any) -> str:
    if isinstance(data_type, str):
        return data_type
    kind = data_type["type"]
    if kind == "array":
        return f"array<{_render(data_type['elementType'])}>"
    if kind == "map":
        return f"map<{_render(data_type['keyType'])}, {_render(data_type['valueType'])}>"
    return "struct<" + ", ".join(f"{f['name']}: {_render(f['type'])}" for f in data_type["fields"]) + ">"


def _schema_json(schema: deltalake.Schema) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(schema.to_json())
    return document


def s3_filesystem(storage_options: dict[str, str]) -> Any:
    """A pyarrow S3 filesystem configured like delta-rs: from the storage options (keys as
    delta-rs spells them, any case), then the AWS_* environment variables."""
    options = {key.lower(): value for key, value in os.environ.items() if key.startswith("AWS_")}
    options.update((key.lower(), value) for key, value in storage_options.items())

    def option(*names: str) -> str | None:
        return next((options[name] for name in names if name in options), None)

    import pyarrow.fs

    settings: dict[str, Any] = {"connect_timeout": 5.0, "request_timeout": 10.0}
    key, secret = option("aws_access_key_id", "access_key_id"), option("aws_secret_access_key", "secret_access_key")
    if key and secret:
        settings.update(access_key=key, secret_key=secret)
        token = option("aws_session_token", "session_token", "aws_token", "token")
        if token:
            settings["session_token"] = token
    region = option("aws_region", "region", "aws_default_region", "default_region")
    if region:
        settings["region"] = region
    endpoint = option("aws_endpoint_url", "aws_endpoint", "endpoint_url", "endpoint", "aws_endpoint_url_s3")
    if endpoint:
        scheme, separator, address = endpoint.partition("://")
        settings["endpoint_override"] = address if separator else endpoint
        if separator:
            settings["scheme"] = scheme
    return pyarrow.fs.S3FileSystem(**settings)


class Warehouse:
    """The root under which ``catalog/schema/table`` folders hold Delta tables."""

    def __init__(self, root: str, storage_options: dict[str, str] | None = None) -> None:
        self.is_local = not root.lower().startswith(OBJECT_STORE_SCHEMES)
        self.root = os.path.abspath(root) if self.is_local else root.rstrip("/")
        self.storage_options = dict(storage_options or {}) or None

    def location(self, name: TableName) -> str:
        if self.is_local:
            return os.path.join(self.root, name.catalog, name.schema, name.table)
        return f"{self.root}/{name.catalog}/{name.schema}/{name.table}"

    def probe(self) -> None:
        """Write and delete a small object at the warehouse root; raises if it cannot."""
        marker = f".otel-ingest-ready-{uuid.uuid4().hex}"
        if self.is_local:
            os.makedirs(self.root, exist_ok=True)
            path = os.path.join(self.root, marker)
            with open(path, "wb") as file:
                file.write(b"ready")
            os.unlink(path)
            return
        # pyarrow's filesystems release the GIL while they wait on the network; delta-rs's
        # (deltalake.fs) do not, so a probe hanging on a storage outage froze the server.
        import pyarrow.fs

        if self.root.lower().startswith(("s3://", "s3a://")):
            filesystem: pyarrow.fs.FileSystem = s3_filesystem(self.storage_options or {})
            root = self.root.split("://", 1)[1]
        else:
            # Azure and GCS: credentials from the environment only (docs/operations.md).
            filesystem, root = pyarrow.fs.FileSystem.from_uri(self.root)
        with filesystem.open_output_stream(f"{root}/{marker}") as stream:
            stream.write(b"ready")
        filesystem.delete_file(f"{root}/{marker}")

    def exists(self, name: TableName) -> bool:
        return bool(deltalake.DeltaTable.is_deltatable(self.location(name), self.storage_options))

    def create(self, name: TableName, schema: pa.Schema, properties: dict[str, str]) -> deltalake.DeltaTable:
        """Create a table if it does not exist (idempotent; concurrent creators are fine)."""
        location = self.location(name)
        if self.is_local:
            os.makedirs(location, exist_ok=True)
        # Passing the property at creation keeps create + property in one commit, so
        # no crash can leave a table without it (deltalake refuses unknown keys unless
        # raise_if_key_not_exists=False).
        try:
            table = deltalake.DeltaTable.create(
                location,
                schema,
                mode="ignore",
                name=name.table,
                configuration=properties,
                storage_options=self.storage_options,
                raise_if_key_not_exists=False,
            )
        except Exception:
            # Another process created it between our check and our commit of version 0.
            if not self.exists(name):
                raise
            table = deltalake.DeltaTable(location, storage_options=self.storage_options)
        log.info("Table %s is ready at %s.", name, location)
        return table

    def create_for_signal(self, name: TableName, signal: Signal) -> deltalake.DeltaTable:
        table = self.create(name, signal_schema(signal), {SCHEMA_VERSION_PROPERTY: SCHEMA_VERSION, **TABLE_DEFAULTS})
        self.check(name, signal, table)
        return self._add_missing_defaults(name, table)

    def _add_missing_defaults(self, name: TableName, table: deltalake.DeltaTable) -> deltalake.DeltaTable:
        """Give a table made by an older version (or another tool) the retentions it lacks;
        values already set, e.g. by ``tables retention``, are left alone."""
        configuration = table.metadata().configuration
        missing = {key: value for key, value in TABLE_DEFAULTS.items() if key not in configuration}
        if missing:
            try:
                table.alter.set_table_properties(missing, raise_if_not_exists=False)
                log.info("Table %s: set %s.", name, ", ".join(f"{k} = {v!r}" for k, v in missing.items()))
            except Exception as exc:  # a concurrent creator set them first, or storage failed: not fatal
                log.warning("Could not set %s on table %s: %s", ", ".join(missing), name, exc)
        return table

    def set_properties(self, name: TableName, properties: dict[str, str]) -> dict[str, str]:
        """Change table properties (e.g. the retentions); returns the table's configuration."""
        table = deltalake.DeltaTable(self.location(name), storage_options=self.storage_options)
        table.alter.set_table_properties(properties, raise_if_not_exists=False)
        return dict(table.metadata().configuration)

    def properties(self, name: TableName) -> dict[str, str]:
        table = deltalake.DeltaTable(self.location(name), storage_options=self.storage_options)
        return dict(table.metadata().configuration)

    def create_definition(self, definition: TableDefinition) -> deltalake.DeltaTable:
        """Create a table from a parsed CREATE TABLE statement; an existing table must match it."""
        name = TableName.parse(definition.name)
        # The statement's own properties win over the retention defaults.
        table = self.create(name, definition.schema, {**TABLE_DEFAULTS, **definition.properties})
        expected = _schema_json(deltalake.Schema.from_arrow(definition.schema))
        difference = _first_difference(expected, _schema_json(table.schema()), "")
        if difference:
            raise SchemaMismatch(f"Table {name} already exists and differs from the statement: {difference}.")
        return table

    def open(self, name: TableName, signal: Signal, auto_create: bool) -> deltalake.DeltaTable:
        """Open a table for writing ``signal`` rows, checking that it fits."""
        location = self.location(name)
        if not self.exists(name):
            if not auto_create:
                raise TableNotFound(
                    f"Table {name} does not exist; create it with "
                    f"`otel-ingest tables create {name.catalog}.{name.schema}.<prefix>` "
                    "or start the server with --auto-create."
                )
            return self.create_for_signal(name, signal)
        table = deltalake.DeltaTable(location, storage_options=self.storage_options)
        self.check(name, signal, table)
        return table

    def check(self, name: TableName, signal: Signal, table: deltalake.DeltaTable) -> None:
        """Raise SchemaMismatch naming the first column that does not fit ``signal``."""
        expected = _schema_json(deltalake.Schema.from_arrow(signal_schema(signal)))
        difference = _first_difference(expected, _schema_json(table.schema()), "")
        if difference:
            raise SchemaMismatch(
                f"Table {name} does not fit {signal} rows: {difference}; send {signal} to a table created for them."
            )
        version = table.metadata().configuration.get(SCHEMA_VERSION_PROPERTY)
        if version is not None and version != SCHEMA_VERSION:
            raise SchemaMismatch(
                f"Table {name} has {SCHEMA_VERSION_PROPERTY}={version!r}; this server writes {SCHEMA_VERSION!r}."
            )
