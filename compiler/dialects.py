"""Render a compiled query as SQL text for one of the supported engines.

The compiler builds one dialect-neutral tree (written the DuckDB way). A few
constructs are rewritten per target where sqlglot's transpilation would be
wrong or unsupported; anything else unsupported raises instead of being
silently dropped (``ErrorLevel.RAISE``).
"""
from __future__ import annotations

from typing import Callable

from sqlglot import exp
from sqlglot.errors import ErrorLevel

DIALECTS = ("duckdb", "postgres", "spark", "trino", "snowflake", "bigquery", "clickhouse")


def _case_aggregates(tree: exp.Expression) -> exp.Expression:
    """``AGG(x) FILTER (WHERE c)`` -> ``AGG(CASE WHEN c THEN x END)``: same result, as aggregates skip NULLs."""

    def rewrite(node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.Filter):
            return node
        aggregate, condition = node.this, node.expression.this
        value = exp.Literal.number(1) if isinstance(aggregate.this, exp.Star) else aggregate.this
        aggregate.set("this", exp.Case(ifs=[exp.If(this=condition, true=value)]))
        return aggregate

    return tree.transform(rewrite)


def _clickhouse(tree: exp.Expression) -> exp.Expression:
    """ClickHouse: microsecond timestamps, NULLs (not defaults) for unmatched LEFT JOIN rows, no FILTER."""

    def datetime64(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.TIMESTAMPNTZ:
            return exp.DataType.build("DateTime64(6)", dialect="clickhouse")
        return node

    tree = _case_aggregates(tree).transform(datetime64)
    tree.set("settings", [exp.EQ(this=exp.column("join_use_nulls"), expression=exp.Literal.number(1))])
    return tree


def _bigquery(tree: exp.Expression) -> exp.Expression:
    """BigQuery: DATETIME_ADD for interval arithmetic; window sorts keep BigQuery's default null order
    (the sorted occurred_at is never NULL, so the order is the same)."""

    def rewrite(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Add) and isinstance(node.expression, exp.Interval):
            interval = node.expression
            return exp.DatetimeAdd(this=node.this, expression=exp.Literal.number(int(interval.this.name)),
                                   unit=interval.unit)
        if isinstance(node, exp.Window):
            for ordered in node.find_all(exp.Ordered):
                ordered.set("nulls_first", True)
        return node

    return tree.transform(rewrite)


_REWRITES: dict[str, Callable[[exp.Expression], exp.Expression]] = {
    "clickhouse": _clickhouse,
    "bigquery": _bigquery,
}


def to_sql(query: exp.Expression, dialect: str = "duckdb", pretty: bool = True) -> str:
    """SQL text for ``dialect`` (one of DIALECTS); raises sqlglot's UnsupportedError rather than drop anything."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; expected one of {', '.join(DIALECTS)}")
    rewrite = _REWRITES.get(dialect)
    tree = rewrite(query.copy()) if rewrite else query
    return tree.sql(dialect=dialect, pretty=pretty, unsupported_level=ErrorLevel.RAISE)
