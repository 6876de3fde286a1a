"""What each dialect's rendering expects of its tables (``LakeSchema.table_columns`` / ``folded``), checked
against the SQL it renders: the engines CI does not run (Trino, Snowflake, BigQuery) are checked here by
parsing their SQL back; PostgreSQL and ClickHouse also run it (tests/test_compiler_postgres.py,
tests/test_compiler_clickhouse.py), DuckDB and Spark too (test_compiler_differential, test_compiler_spark)."""
from __future__ import annotations

from datetime import datetime

import pytest
import sqlglot
from sqlglot import exp

from compiler import (
    DIALECTS, EventsRelation, LakeSchema, ProfilesRelation, TypedColumn, compile_segment, parse_definition, to_sql,
)

SCHEMA = LakeSchema(
    events=EventsRelation(exp.to_table("events"), properties={
        "total": TypedColumn("p_total", "number"), "paid_at": TypedColumn("p_paid_at", "timestamp")}),
    profiles=ProfilesRelation(exp.to_table("profiles"), traits={
        "plan": TypedColumn("t_plan", "string"), "signed_up_at": TypedColumn("t_signed_up_at", "timestamp")}),
)
AS_OF = datetime(2026, 3, 1, 12, 0, 0, 250001)
DEFINITION = {"logic": "AND", "conditions": [
    {"type": "frequency", "event_type": "order_placed", "operator": "gte", "value": 1,
     "since": "2026-02-01T00:00:00.000001Z",
     "where": [{"property": "paid_at", "operator": "gt", "value": "2026-02-02T10:00:00.123456Z"}]},
    {"type": "trait", "trait": "signed_up_at", "operator": "lte", "value": "2026-01-01T00:00:00.999999Z"},
    {"type": "trait", "trait": "plan", "operator": "lt", "value": "pro"},
]}


def rendered(dialect: str, schema: LakeSchema = SCHEMA) -> exp.Expression:
    query = compile_segment(parse_definition(DEFINITION), schema, tenant_id=1, as_of=AS_OF)
    return sqlglot.parse_one(to_sql(query, dialect), read=dialect)


def timestamp_casts(tree: exp.Expression) -> list[exp.Cast]:
    return [cast for cast in tree.find_all(exp.Cast) if cast.to.this != exp.DataType.Type.DATE]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_timestamp_literals_keep_microseconds_in_the_columns_type(dialect):
    """Every timestamp literal is cast to the type table_columns asks of timestamp columns (compared as
    equals, with no session time zone in between); Trino's TIMESTAMP alone would round to milliseconds."""
    casts = timestamp_casts(rendered(dialect))
    assert {cast.name for cast in casts} == {
        "2026-03-01 12:00:00.250001", "2026-02-01 00:00:00.000001", "2026-02-02 10:00:00.123456",
        "2026-01-01 00:00:00.999999"}
    columns = SCHEMA.table_columns(dialect)
    expected = {columns["events"]["occurred_at"], columns["events"]["p_paid_at"],
                columns["profiles"]["t_signed_up_at"]}
    assert len(expected) == 1
    literal_types = {cast.to.sql(dialect) for cast in casts}
    assert {t.removeprefix("Nullable(").removesuffix(")") if dialect == "clickhouse" else t
            for t in expected} == literal_types


def test_each_warehouse_timestamp_type():
    """The zone-less microsecond type of each engine (README: "SQL dialects")."""
    types = {dialect: SCHEMA.table_columns(dialect)["events"]["occurred_at"] for dialect in DIALECTS}
    assert types == {"duckdb": "TIMESTAMP", "postgres": "TIMESTAMP", "spark": "TIMESTAMP_NTZ",
                     "trino": "TIMESTAMP(6)", "snowflake": "TIMESTAMPNTZ", "bigquery": "DATETIME",
                     "clickhouse": "Nullable(DateTime64(6, 'UTC'))"}


def test_table_columns_list_every_column_the_query_reads():
    columns = SCHEMA.table_columns("postgres")
    assert columns == {
        "events": {"tenant_id": "BIGINT", "user_id": "TEXT", "event_type": "TEXT", "occurred_at": "TIMESTAMP",
                   "event_date": "DATE", "p_total": "DOUBLE PRECISION", "p_paid_at": "TIMESTAMP"},
        "profiles": {"tenant_id": "BIGINT", "user_id": "TEXT", "t_plan": "TEXT", "t_signed_up_at": "TIMESTAMP"},
    }
    read = {column.name for column in rendered("postgres").find_all(exp.Column) if column.this.quoted}
    assert read <= set(columns["events"]) | set(columns["profiles"])


def test_snowflake_folded_schema_names_the_upper_case_columns():
    """Snowflake stores names created unquoted in upper case; a quoted "user_id" would not find USER_ID."""
    tree = rendered("snowflake", SCHEMA.folded("snowflake"))
    quoted = {identifier.name for identifier in tree.find_all(exp.Identifier) if identifier.quoted}
    schema_names = {"TENANT_ID", "USER_ID", "EVENT_TYPE", "OCCURRED_AT", "EVENT_DATE", "P_PAID_AT",
                    "T_PLAN", "T_SIGNED_UP_AT"}
    assert schema_names <= quoted
    assert quoted - schema_names == {"user_id"}  # the query's own output name, quoted where defined and used
    assert SCHEMA.folded("snowflake").table_columns("snowflake")["events"]["OCCURRED_AT"] == "TIMESTAMPNTZ"


@pytest.mark.parametrize("dialect", ["duckdb", "spark", "bigquery", "clickhouse"])
def test_engines_that_do_not_fold_keep_the_names(dialect):
    assert SCHEMA.folded(dialect) is SCHEMA


def test_postgres_folds_to_lower_case():
    shouting = LakeSchema(EventsRelation(exp.to_table("events"), user_id="USER_ID"),
                          ProfilesRelation(exp.to_table("profiles"), traits={"Plan": TypedColumn("T_Plan", "string")}))
    folded = shouting.folded("postgres")
    assert (folded.events.user_id, folded.profiles.traits["Plan"].column) == ("user_id", "t_plan")


@pytest.mark.parametrize("dialect", DIALECTS)
def test_string_order_is_code_point_order(dialect):
    """Only PostgreSQL's default collation may differ from code point order: its comparison says COLLATE "C"."""
    lt = next(node for node in rendered(dialect).find_all(exp.LT) if isinstance(node.expression, exp.Literal))
    if dialect == "postgres":
        assert isinstance(lt.this, exp.Collate) and lt.this.expression.name == "C"
    else:
        assert not list(lt.find_all(exp.Collate))
