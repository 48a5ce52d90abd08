"""Arrow schemas derived from the Databricks DDL in ``schemas/`` (the only schema source).

The parser understands the subset of Spark SQL DDL that the DDL files use —
``CREATE TABLE name (col TYPE, ...) USING DELTA TBLPROPERTIES ('k' = 'v')`` — and
maps types as SPEC §2 says: STRING→string, LONG/BIGINT→int64, INT→int32,
DOUBLE→float64, BOOLEAN→bool, ARRAY/MAP/STRUCT→list/map/struct, all nullable.
The ``sql`` CLI command runs user-supplied statements through the same parser.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

import pyarrow as pa

Signal = Literal["metrics", "logs", "traces"]
SIGNALS: tuple[Signal, ...] = ("metrics", "logs", "traces")

# The DDL file behind each signal, and the table-name suffix the Databricks guide uses.
DDL_FILES: dict[Signal, str] = {
    "metrics": "otel_metrics.sql",
    "logs": "otel_logs.sql",
    "traces": "otel_spans.sql",
}
TABLE_SUFFIXES: dict[Signal, str] = {
    "metrics": "_otel_metrics",
    "logs": "_otel_logs",
    "traces": "_otel_spans",
}

SCHEMA_VERSION_PROPERTY = "otel.schemaVersion"
SCHEMA_VERSION = "v1"

_PRIMITIVES: dict[str, pa.DataType] = {
    "STRING": pa.string(),
    "LONG": pa.int64(),
    "BIGINT": pa.int64(),
    "INT": pa.int32(),
    "INTEGER": pa.int32(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
}

_TOKEN = re.compile(r"\s*('(?:[^']|'')*'|`[^`]+`|[A-Za-z_][\w.]*|-?\d+(?:\.\d+)?|[(),:<>=;])")
_QUOTED = re.compile(r"'(?:[^']|'')*'|`[^`]*`")
# The table name may hold the guide's placeholders (``<catalog>.<schema>.<table_prefix>_x``),
# so it is cut out by this pattern before the rest is tokenized.
_HEADER = re.compile(r"\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>[^\s(]+)\s*(?=\()", re.IGNORECASE)


class DDLError(ValueError):
    """The SQL is not a CREATE TABLE statement this parser understands."""


@dataclass(frozen=True)
class TableDefinition:
    """One parsed CREATE TABLE statement."""

    name: str
    schema: pa.Schema
    properties: dict[str, str] = field(default_factory=dict)


class _Tokens:
    def __init__(self, sql: str) -> None:
        self.items: list[str] = []
        position = 0
        while position < len(sql):
            if sql[position:].strip() == "":
                break
            match = _TOKEN.match(sql, position)
            if match is None or match.end() == position:
                raise DDLError(f"Unexpected text in DDL near {sql[position : position + 30]!r}.")
            self.items.append(match.group(1))
            position = match.end()
        self.index = 0

    def peek(self) -> str | None:
        return self.items[self.index] if self.index < len(self.items) else None

    def take(self, expected: str | None = None) -> str:
        token = self.peek()
        if token is None:
            raise DDLError(f"DDL ends early; expected {expected or 'more text'}.")
        if expected is not None and token.upper() != expected.upper():
            raise DDLError(f"Expected {expected!r} in DDL but found {token!r}.")
        self.index += 1
        return token


def _parse_type(tokens: _Tokens) -> pa.DataType:
    word = tokens.take().upper()
    if word in _PRIMITIVES:
        return _PRIMITIVES[word]
    if word == "ARRAY":
        tokens.take("<")
        element = _parse_type(tokens)
        tokens.take(">")
        return pa.list_(pa.field("element", element))
    if word == "MAP":
        tokens.take("<")
        key = _parse_type(tokens)
        tokens.take(",")
        value = _parse_type(tokens)
        tokens.take(">")
        return pa.map_(key, value)
    if word == "STRUCT":
        tokens.take("<")
        fields = []
        while True:
            name = tokens.take().strip("`")
            tokens.take(":")
            fields.append(pa.field(name, _parse_type(tokens)))
            if tokens.take() == ">":
                _check_unique([f.name for f in fields], "a STRUCT")
                return pa.struct(fields)
    raise DDLError(f"Unsupported SQL type {word!r}; use STRING, LONG, INT, DOUBLE, BOOLEAN, ARRAY, MAP or STRUCT.")


def _parse_statement(name: str, tokens: _Tokens) -> TableDefinition:
    tokens.take("(")
    columns = []
    while True:
        column = tokens.take().strip("`")
        columns.append(pa.field(column, _parse_type(tokens)))
        if tokens.take() == ")":
            break
    _check_unique([c.name for c in columns], f"CREATE TABLE {name}")
    properties: dict[str, str] = {}
    while (word := (tokens.peek() or "").upper()) and word != ";":
        tokens.take()
        if word == "USING":
            fmt = tokens.take()
            if fmt.upper() != "DELTA":
                raise DDLError(f"Only USING DELTA tables are supported, not {fmt!r}.")
        elif word == "TBLPROPERTIES":
            tokens.take("(")
            while True:
                key = _unquote(tokens.take())
                tokens.take("=")
                properties[key] = _unquote(tokens.take())
                if tokens.take() == ")":
                    break
        else:
            raise DDLError(f"Unsupported clause {word!r} in CREATE TABLE {name}.")
    return TableDefinition(name=name, schema=pa.schema(columns), properties=properties)


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] == "'":
        return token[1:-1].replace("''", "'")
    return token


def _mask_quoted(sql: str) -> str:
    """``sql`` with the inside of every quoted string and backticked name blanked out, so
    that comments and statement starts are looked for only in the SQL itself."""
    return _QUOTED.sub(lambda m: m.group()[0] + "_" * (len(m.group()) - 2) + m.group()[-1], sql)


def _strip_comments(sql: str) -> str:
    masked = _mask_quoted(sql)
    for match in reversed(list(re.finditer(r"--[^\n]*", masked))):
        sql = sql[: match.start()] + " " * (match.end() - match.start()) + sql[match.end() :]
    return sql


def _check_unique(names: list[str], where: str) -> None:
    """Spark and Delta compare column names case-insensitively and refuse duplicates."""
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            raise DDLError(f"Column {name!r} appears twice in {where}; column names must be unique.")
        seen.add(name.lower())


def parse_ddl(sql: str) -> list[TableDefinition]:
    """Parse every CREATE TABLE statement in ``sql``."""
    sql = _strip_comments(sql)
    starts = [m.start() for m in re.finditer(r"CREATE\s+TABLE", _mask_quoted(sql), re.IGNORECASE)]
    if sql[: starts[0] if starts else len(sql)].strip(" \t\r\n;"):
        raise DDLError("Only CREATE TABLE statements are supported; found other text before the first one.")
    definitions = []
    for start, end in zip(starts, [*starts[1:], len(sql)], strict=False):
        statement = sql[start:end].strip().rstrip(";")
        header = _HEADER.match(statement)
        if header is None:
            raise DDLError(
                f"Cannot read the table name in {statement[:60]!r}; write CREATE TABLE catalog.schema.table (...)."
            )
        tokens = _Tokens(statement[header.end() :])
        definitions.append(_parse_statement(header.group("name").replace("`", ""), tokens))
        if tokens.peek() is not None:
            raise DDLError(f"Unexpected {tokens.peek()!r} after CREATE TABLE {definitions[-1].name}.")
    if not definitions:
        raise DDLError("No CREATE TABLE statement found.")
    return definitions


def schemas_dir() -> Path:
    """The folder holding the DDL files (packaged inside ``otel_ingest`` when installed)."""
    packaged = resources.files("otel_ingest") / "schemas"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "schemas"


@cache
def signal_schema(signal: Signal) -> pa.Schema:
    """The Arrow schema of the table that holds ``signal``, parsed from its DDL file."""
    sql = (schemas_dir() / DDL_FILES[signal]).read_text(encoding="utf-8")
    (definition,) = parse_ddl(sql)
    return definition.schema
