"""Render a compiled query as SQL text for one of the supported engines.

The compiler builds one dialect-neutral tree (written the DuckDB way). A few
constructs are rewritten per target where sqlglot's transpilation would be
wrong, unsupported, or depend on the session's settings; anything else
unsupported raises instead of being silently dropped (``ErrorLevel.RAISE``).

Every rendering answers the same whatever the session's time zone or default
collation: timestamp literals are cast to the zone-less type of
``schema.TABLES`` (ClickHouse: ``DateTime64(6, 'UTC')``), day intervals are
fixed lengths of time, and string order comparisons are code point order
(``COLLATE "C"`` where the default collation is not binary: PostgreSQL only;
DuckDB, Spark, Trino, Snowflake, BigQuery and ClickHouse compare bytes unless
a column says otherwise, see ``compiler.schema``).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

from sqlglot import exp
from sqlglot.errors import ErrorLevel

from .schema import TABLES, timestamp_type
from .sequence import SEQUENCE, windowed_sequence

DIALECTS = tuple(TABLES)  # duckdb, postgres, spark, trino, snowflake, bigquery, clickhouse
_ORDER = (exp.GT, exp.GTE, exp.LT, exp.LTE)
_NEUTRAL_TIMESTAMP = exp.DataType(this=exp.DataType.Type.TIMESTAMPNTZ)  # what the compiler casts literals to


@lru_cache(maxsize=None)
def _retyped(dialect: str) -> exp.DataType | None:
    """The dialect's timestamp type where sqlglot would render the neutral one differently (Trino's
    TIMESTAMP is milliseconds; ClickHouse's needs its zone), else None."""
    typed = timestamp_type(dialect)
    return None if typed.sql(dialect) == _NEUTRAL_TIMESTAMP.sql(dialect) else typed


def _timestamps(tree: exp.Expression, typed: exp.DataType) -> exp.Expression:
    def rewrite(node: exp.Expression) -> exp.Expression:
        return typed.copy() if node == _NEUTRAL_TIMESTAMP else node

    return tree.transform(rewrite)


def _code_point_order(tree: exp.Expression, collation: str) -> exp.Expression:
    """``column < 'text'`` (and <=, >, >=, BETWEEN) under ``collation``: the definition language orders
    strings by code point, not by the database's default collation. Only string values are compared
    with string literals (timestamps are CASTs), and equality needs no collation (deterministic)."""

    def is_text(node: exp.Expression | None) -> bool:
        return isinstance(node, exp.Literal) and node.is_string

    def rewrite(node: exp.Expression) -> exp.Expression:
        ordered = (isinstance(node, _ORDER) and is_text(node.expression)) or (
            isinstance(node, exp.Between) and is_text(node.args.get("low")))
        if ordered:
            node.set("this", exp.Collate(this=node.this, expression=exp.to_identifier(collation, quoted=True)))
        return node

    return tree.transform(rewrite)


def _drop_unused_ctes(tree: exp.Expression) -> exp.Expression:
    """Remove the CTEs nothing refers to any more (a rewrite replaced their users)."""
    with_ = tree.args.get("with_")
    if with_ is None:
        return tree
    tree.set("with_", None)
    needed = {table.name for table in tree.find_all(exp.Table)}
    kept = []
    for cte in reversed(with_.expressions):  # a CTE refers only to earlier ones
        if cte.alias in needed:
            kept.append(cte)
            needed |= {table.name for table in cte.this.find_all(exp.Table)}
    with_.set("expressions", kept[::-1])
    tree.set("with_", with_)
    return tree


def _windowed_sequences(tree: exp.Expression) -> exp.Expression:
    """Sequences by window functions only (``sequence.windowed_sequence``): PostgreSQL has no statistics
    for CTE columns, misestimates the greedy joins of aggregated CTEs and nests loops over them."""
    with_ = tree.args.get("with_")
    if with_ is None:
        return tree
    ctes = []
    for cte in with_.expressions:
        shape = cte.this.meta.get(SEQUENCE)
        if shape is None:
            ctes.append(cte)
            continue
        ctes += [exp.CTE(this=select, alias=exp.TableAlias(this=exp.to_identifier(name)))
                 for name, select in windowed_sequence(cte.alias, *shape)]
    with_.set("expressions", ctes)
    return _drop_unused_ctes(tree)


def _postgres(tree: exp.Expression) -> exp.Expression:
    """PostgreSQL: byte-wise string order whatever the database's collation; sequences without CTE joins."""
    return _windowed_sequences(_code_point_order(tree, "C"))


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
    """ClickHouse: NULLs (not defaults) for unmatched LEFT JOIN rows, no FILTER, and days as seconds: a
    DateTime64 column declared without a zone is in the server's zone, where adding a day across a
    daylight saving change adds 23 or 25 hours."""

    def seconds(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Interval) and node.unit is not None and node.unit.name.upper() == "DAY":
            return exp.Interval(this=exp.Literal.string(str(int(node.this.name) * 86400)), unit=exp.Var(this="SECOND"))
        return node

    tree = _case_aggregates(tree).transform(seconds)
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
    "postgres": _postgres,
    "clickhouse": _clickhouse,
    "bigquery": _bigquery,
}


def to_sql(query: exp.Expression, dialect: str = "duckdb", pretty: bool = True) -> str:
    """SQL text for ``dialect`` (one of DIALECTS); raises sqlglot's UnsupportedError rather than drop anything."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; expected one of {', '.join(DIALECTS)}")
    rewrite, typed = _REWRITES.get(dialect), _retyped(dialect)
    tree = query.copy() if rewrite or typed else query
    if typed is not None:
        tree = _timestamps(tree, typed)
    if rewrite is not None:
        tree = rewrite(tree)
    return tree.sql(dialect=dialect, pretty=pretty, unsupported_level=ErrorLevel.RAISE)
