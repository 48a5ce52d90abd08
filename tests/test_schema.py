"""The DDL files are the only schema source (SPEC §2): ``otel_ingest.schema`` parses them
into Arrow schemas with the SPEC type mapping, and rejects what it cannot read with a
message that says what is wrong."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from otel_ingest.schema import (
    DDL_FILES,
    SIGNALS,
    DDLError,
    Signal,
    TableDefinition,
    parse_ddl,
    schemas_dir,
    signal_schema,
)

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
SQL_FILES = sorted(SCHEMAS.glob("*.sql"))

# A top-level column is a line indented by two spaces: `  name TYPE...`; nested struct
# fields are written `name: TYPE` and indented further.
_COLUMN_LINE = re.compile(r"^ {2}`?(\w+)`?\s+([A-Z]+)", re.MULTILINE)
_STRUCT_FIELD = re.compile(r"`?(\w+)`?\s*:")
_ARROW_TYPE_OF_KEYWORD = {
    "STRING": pa.types.is_string,
    "LONG": lambda t: t == pa.int64(),
    "BIGINT": lambda t: t == pa.int64(),
    "INT": lambda t: t == pa.int32(),
    "DOUBLE": lambda t: t == pa.float64(),
    "BOOLEAN": pa.types.is_boolean,
    "ARRAY": pa.types.is_list,
    "MAP": pa.types.is_map,
    "STRUCT": pa.types.is_struct,
}


def _walk(fields: list[pa.Field] | pa.Schema, path: str = "") -> Iterator[tuple[str, pa.Field]]:
    """Every field, depth first, with list elements and map keys/values included."""
    for field in fields:
        name = f"{path}{field.name}"
        yield name, field
        yield from _walk_type(field.type, name)


def _walk_type(data_type: pa.DataType, path: str) -> Iterator[tuple[str, pa.Field]]:
    if pa.types.is_struct(data_type):
        yield from _walk([data_type.field(i) for i in range(data_type.num_fields)], f"{path}.")
    elif pa.types.is_map(data_type):
        yield f"{path}.<key>", data_type.key_field
        yield from _walk_type(data_type.key_type, f"{path}.<key>")
        yield f"{path}.<value>", data_type.item_field
        yield from _walk_type(data_type.item_type, f"{path}.<value>")
    elif pa.types.is_list(data_type):
        yield f"{path}[]", data_type.value_field
        yield from _walk_type(data_type.value_type, f"{path}[]")


def _struct_field_names(schema: pa.Schema) -> list[str]:
    """Names of the fields inside STRUCTs, in the order the DDL text writes them."""
    return [
        field.name
        for name, field in _walk(schema)
        if "." in name and not name.endswith((">", "[]")) and not name.rsplit(".", 1)[1].startswith("<")
    ]


def _one(sql: str) -> TableDefinition:
    (definition,) = parse_ddl(sql)
    return definition


# --------------------------------------------------------------------------- the DDL files


def test_the_three_ddl_files_are_there() -> None:
    assert sorted(p.name for p in SQL_FILES) == sorted(DDL_FILES.values())
    assert schemas_dir().resolve() == SCHEMAS or all(
        (schemas_dir() / name).read_bytes() == (SCHEMAS / name).read_bytes() for name in DDL_FILES.values()
    )


@pytest.mark.parametrize("signal", SIGNALS)
def test_ddl_file_columns_are_the_schema_columns(signal: Signal) -> None:
    sql = (SCHEMAS / DDL_FILES[signal]).read_text(encoding="utf-8")
    columns = _COLUMN_LINE.findall(sql)
    assert len(columns) > 5
    schema = signal_schema(signal)
    assert schema.names == [name for name, _ in columns]
    for (name, keyword), field in zip(columns, schema, strict=True):
        assert _ARROW_TYPE_OF_KEYWORD[keyword](field.type), (name, keyword, field.type)
    # Every `name:` inside a STRUCT<...> of the text is a struct field of the schema, in order.
    assert _struct_field_names(schema) == _STRUCT_FIELD.findall(sql)


@pytest.mark.parametrize("signal", SIGNALS)
def test_ddl_files_parse_to_one_delta_table_with_the_schema_version(signal: Signal) -> None:
    sql = (SCHEMAS / DDL_FILES[signal]).read_text(encoding="utf-8")
    definition = _one(sql)
    assert definition.name.endswith(DDL_FILES[signal].removesuffix(".sql"))
    assert definition.properties == {"otel.schemaVersion": "v1"}
    assert definition.schema.equals(signal_schema(signal))


@pytest.mark.parametrize("signal", SIGNALS)
def test_every_field_of_the_signal_schemas_is_nullable(signal: Signal) -> None:
    for name, field in _walk(signal_schema(signal)):
        if name.endswith(".<key>"):
            assert not field.nullable  # Arrow map keys cannot be null
        else:
            assert field.nullable, name


def test_signal_schemas_use_only_the_spec_types() -> None:
    allowed = {pa.string(), pa.int64(), pa.int32(), pa.float64(), pa.bool_()}
    for signal in SIGNALS:
        for name, field in _walk(signal_schema(signal)):
            data_type = field.type
            nested = pa.types.is_list(data_type) or pa.types.is_map(data_type) or pa.types.is_struct(data_type)
            assert nested or data_type in allowed, (signal, name, data_type)


def test_known_columns_of_each_signal() -> None:
    """Spot checks of the Databricks schema the queries in SPEC §3 rely on."""
    metrics, logs, spans = (signal_schema(s) for s in ("metrics", "logs", "traces"))
    assert metrics.field("sum").type.field("value").type == pa.float64()
    assert metrics.field("sum").type.field("attributes").type == pa.map_(pa.string(), pa.string())
    assert metrics.field("histogram").type.field("bucket_counts").type.value_type == pa.int64()
    exponential = metrics.field("exponential_histogram").type
    assert exponential.field("positive_bucket").type.field("offset").type == pa.int32()
    assert logs.field("body").type == pa.string()
    assert logs.field("time_unix_nano").type == pa.int64()
    assert spans.field("status").type.field("code").type == pa.string()
    assert spans.field("events").type.value_type.field("time_unix_nano").type == pa.int64()


# --------------------------------------------------------------------------- type mapping


def test_every_sql_type_maps_as_the_spec_says() -> None:
    definition = _one(
        """CREATE TABLE main.telemetry.types (
          s STRING, l LONG, b BIGINT, i INT, d DOUBLE, f BOOLEAN,
          a ARRAY<STRING>,
          m MAP<STRING, LONG>,
          st STRUCT<x: INT, y: DOUBLE>
        ) USING DELTA"""
    )
    schema = definition.schema
    assert definition.name == "main.telemetry.types"
    assert schema.names == ["s", "l", "b", "i", "d", "f", "a", "m", "st"]
    assert [schema.field(n).type for n in ("s", "l", "b", "i", "d", "f")] == [
        pa.string(),
        pa.int64(),
        pa.int64(),
        pa.int32(),
        pa.float64(),
        pa.bool_(),
    ]
    assert pa.types.is_list(schema.field("a").type)
    assert schema.field("a").type.value_type == pa.string()
    assert schema.field("m").type == pa.map_(pa.string(), pa.int64())
    assert schema.field("st").type == pa.struct([pa.field("x", pa.int32()), pa.field("y", pa.float64())])


def test_nested_types() -> None:
    schema = _one(
        """CREATE TABLE t (
          deep ARRAY<STRUCT<name: STRING, values: ARRAY<ARRAY<LONG>>, tags: MAP<STRING, ARRAY<INT>>>>,
          maps MAP<STRING, MAP<STRING, STRUCT<ok: BOOLEAN>>>,
          inner STRUCT<a: STRUCT<b: STRUCT<c: DOUBLE>>>
        )"""
    ).schema
    deep = schema.field("deep").type
    assert pa.types.is_list(deep)
    element = deep.value_type
    assert [element.field(i).name for i in range(element.num_fields)] == ["name", "values", "tags"]
    assert element.field("name").type == pa.string()
    values = element.field("values").type
    assert pa.types.is_list(values)
    assert pa.types.is_list(values.value_type)
    assert values.value_type.value_type == pa.int64()
    tags = element.field("tags").type
    assert pa.types.is_map(tags)
    assert tags.key_type == pa.string()
    assert pa.types.is_list(tags.item_type)
    assert tags.item_type.value_type == pa.int32()

    maps = schema.field("maps").type
    assert maps.key_type == pa.string()
    assert maps.item_type == pa.map_(pa.string(), pa.struct([pa.field("ok", pa.bool_())]))

    inner = schema.field("inner").type
    assert inner == pa.struct([pa.field("a", pa.struct([pa.field("b", pa.struct([pa.field("c", pa.float64())]))]))])


def test_all_fields_of_a_parsed_table_are_nullable() -> None:
    schema = _one(
        "CREATE TABLE t (a STRING, b ARRAY<STRUCT<c: MAP<STRING, ARRAY<INT>>>>, d STRUCT<e: LONG>) USING DELTA"
    ).schema
    walked = list(_walk(schema))
    assert len(walked) == 9
    for name, field in walked:
        assert field.nullable or name.endswith(".<key>"), name


def test_types_and_keywords_are_case_insensitive() -> None:
    lower = _one("create table t (a string, b array<long>, c map<string, int>, d struct<x: boolean>) using delta")
    upper = _one("CREATE TABLE t (a STRING, b ARRAY<LONG>, c MAP<STRING, INT>, d STRUCT<x: BOOLEAN>) USING DELTA")
    assert lower.schema.equals(upper.schema)


def test_the_parsed_schema_builds_a_table() -> None:
    schema = _one("CREATE TABLE t (a STRING, m MAP<STRING, STRING>, l ARRAY<LONG>, s STRUCT<x: INT>)").schema
    table = pa.Table.from_pylist([{"a": "x", "m": [("k", "v")], "l": [1, None], "s": {"x": 3}}, {}], schema=schema)
    assert table.to_pylist()[0] == {"a": "x", "m": [("k", "v")], "l": [1, None], "s": {"x": 3}}
    assert table.to_pylist()[1] == {"a": None, "m": None, "l": None, "s": None}


# --------------------------------------------------------------------------- statements


def test_tblproperties_are_parsed() -> None:
    definition = _one(
        """CREATE TABLE IF NOT EXISTS c.s.t (a INT)
        USING DELTA
        TBLPROPERTIES ('otel.schemaVersion' = 'v1', 'delta.appendOnly' = 'true', 'note' = 'it''s here')"""
    )
    assert definition.name == "c.s.t"
    assert definition.properties == {"otel.schemaVersion": "v1", "delta.appendOnly": "true", "note": "it's here"}


def test_a_table_without_clauses_has_no_properties() -> None:
    definition = _one("CREATE TABLE c.s.t (a INT)")
    assert definition.properties == {}
    assert definition.schema.names == ["a"]


@pytest.mark.parametrize("separator", [";\n", "\n", " ; ", "\n\n"])
def test_several_statements_in_one_string(separator: str) -> None:
    sql = separator.join(
        [
            "CREATE TABLE c.s.one (a STRING) USING DELTA TBLPROPERTIES ('k' = '1')",
            "CREATE TABLE c.s.two (b LONG, c ARRAY<INT>)",
            "create table c.s.three (d DOUBLE) using delta",
        ]
    )
    for text in (sql, sql + ";", sql + ";\n"):
        definitions = parse_ddl(text)
        assert [d.name for d in definitions] == ["c.s.one", "c.s.two", "c.s.three"]
        assert [d.schema.names for d in definitions] == [["a"], ["b", "c"], ["d"]]
        assert [d.properties for d in definitions] == [{"k": "1"}, {}, {}]


def test_the_three_ddl_files_concatenated() -> None:
    for joiner in ("\n", ";\n"):
        sql = joiner.join((SCHEMAS / DDL_FILES[s]).read_text(encoding="utf-8") for s in SIGNALS)
        definitions = parse_ddl(sql)
        assert [d.schema for d in definitions] == [signal_schema(s) for s in SIGNALS]


def test_backticked_names() -> None:
    definition = _one(
        "CREATE TABLE `main`.`telemetry`.`t` (`a` STRING, `select` INT, `with space` LONG,"
        " s STRUCT<`x`: INT, `y z`: STRING>)"
    )
    assert definition.name == "main.telemetry.t"
    assert definition.schema.names == ["a", "select", "with space", "s"]
    assert definition.schema.field("with space").type == pa.int64()
    assert definition.schema.field("s").type == pa.struct([pa.field("x", pa.int32()), pa.field("y z", pa.string())])


def test_placeholders_in_the_table_name_as_in_the_databricks_guide() -> None:
    definition = _one("CREATE TABLE <catalog>.<schema>.<table_prefix>_otel_logs (a STRING) USING DELTA")
    assert definition.name == "<catalog>.<schema>.<table_prefix>_otel_logs"


def test_comments_are_ignored() -> None:
    definition = _one(
        """-- leading comment: CREATE TABLE x (y BOGUS)
        CREATE TABLE c.s.t ( -- the columns
          a STRING, -- first
          -- b DOUBLE,
          c MAP<STRING, -- key
                STRING> -- value
        ) USING DELTA -- format
        TBLPROPERTIES ('k' = 'v') -- end
        -- trailing comment"""
    )
    assert definition.name == "c.s.t"
    assert definition.schema.names == ["a", "c"]
    assert definition.schema.field("c").type == pa.map_(pa.string(), pa.string())
    assert definition.properties == {"k": "v"}


# --------------------------------------------------------------------------- errors


def _error(sql: str) -> str:
    with pytest.raises(DDLError) as raised:
        parse_ddl(sql)
    assert isinstance(raised.value, ValueError)
    return str(raised.value)


@pytest.mark.parametrize("unknown", ["VARCHAR", "DECIMAL", "TIMESTAMP", "FLOAT", "BINARY"])
def test_unknown_type(unknown: str) -> None:
    message = _error(f"CREATE TABLE t (a STRING, b {unknown})")
    assert unknown in message
    assert "Unsupported SQL type" in message
    assert "STRING" in message  # says what is supported


def test_unknown_type_inside_a_nested_type() -> None:
    message = _error("CREATE TABLE t (a ARRAY<STRUCT<x: CHAR>>)")
    assert "CHAR" in message


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE t (a STRING",
        "CREATE TABLE t (a STRING, b INT USING DELTA",
        "CREATE TABLE t (a STRING) TBLPROPERTIES ('k' = 'v'",
    ],
)
def test_missing_closing_parenthesis(sql: str) -> None:
    message = _error(sql)
    assert message  # a non-empty explanation
    assert "DDL" in message


def test_missing_opening_parenthesis() -> None:
    message = _error("CREATE TABLE c.s.t a STRING)")
    assert "c.s.t" in message
    assert "CREATE TABLE" in message


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("CREATE TABLE t (a ARRAY<STRING)", "'>'"),
        ("CREATE TABLE t (a MAP<STRING STRING>)", "','"),
        ("CREATE TABLE t (a STRUCT<x INT>)", "':'"),
    ],
)
def test_malformed_nested_type(sql: str, expected: str) -> None:
    assert expected in _error(sql)


@pytest.mark.parametrize("fmt", ["PARQUET", "csv", "ICEBERG"])
def test_only_delta_tables(fmt: str) -> None:
    message = _error(f"CREATE TABLE t (a STRING) USING {fmt}")
    assert "DELTA" in message
    assert fmt in message


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1; CREATE TABLE t (a STRING)",
        "DROP TABLE t;\nCREATE TABLE t (a STRING)",
        "garbage CREATE TABLE t (a STRING)",
    ],
)
def test_text_before_create(sql: str) -> None:
    assert "CREATE TABLE" in _error(sql)


@pytest.mark.parametrize("sql", ["", "   \n", "-- only a comment", "SELECT 1", ";"])
def test_no_statement(sql: str) -> None:
    assert "CREATE TABLE" in _error(sql)


def test_unsupported_clause_is_named() -> None:
    message = _error("CREATE TABLE c.s.t (a STRING) USING DELTA PARTITIONED BY (a)")
    assert "PARTITIONED" in message
    assert "c.s.t" in message


def test_text_between_statements() -> None:
    message = _error("CREATE TABLE a (x INT); SELECT 1; CREATE TABLE b (y INT)")
    assert "Unexpected" in message


# ------------------------------------------------------- parser edge cases (fixed bugs)


def test_double_dash_inside_a_quoted_property_is_not_a_comment() -> None:
    definition = _one("CREATE TABLE t (a INT) USING DELTA TBLPROPERTIES ('comment' = 'a -- b')")
    assert definition.properties == {"comment": "a -- b"}


def test_create_table_inside_a_quoted_property_does_not_start_a_statement() -> None:
    definition = _one("CREATE TABLE t (a INT) TBLPROPERTIES ('origin' = 'CREATE TABLE from the guide')")
    assert definition.properties == {"origin": "CREATE TABLE from the guide"}


def test_numeric_property_value() -> None:
    definition = _one("CREATE TABLE t (a INT) TBLPROPERTIES ('delta.checkpointInterval' = 10)")
    assert definition.properties == {"delta.checkpointInterval": "10"}


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE TABLE t (a INT, a STRING)",
        "CREATE TABLE t (a INT, A STRING)",
        "CREATE TABLE t (s STRUCT<x: INT, x: STRING>)",
    ],
)
def test_duplicate_column_names_are_rejected(sql: str) -> None:
    with pytest.raises(DDLError):
        parse_ddl(sql)


def test_errors_are_ddl_errors_not_other_exceptions() -> None:
    bad = [
        "CREATE TABLE t (",
        "CREATE TABLE t ()",
        "CREATE TABLE t (a)",
        "CREATE TABLE t (a INT,)",
        "CREATE TABLE t (a INT) TBLPROPERTIES",
        "CREATE TABLE t (a INT) TBLPROPERTIES ('k')",
        "CREATE TABLE t (a INT) USING",
        "CREATE TABLE t (a STRUCT<>)",
        "CREATE TABLE t (a MAP<STRING>)",
        "CREATE TABLE t (a INT) ) ",
        "CREATE TABLE t (a INT) USING DELTA !",
        "CREATE TABLE t (a INT \x00)",
    ]
    for sql in bad:
        with pytest.raises(DDLError):
            parse_ddl(sql)
