"""Literals and filter predicates, built as sqlglot nodes (user strings are never parsed).

Values become literals; property/trait names were validated and map to the
schema's typed columns, always quoted.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlglot import exp

from .errors import FieldError
from .model import parse_timestamp, scalar_kind
from .schema import TypedColumn

TIMESTAMP = exp.DataType(this=exp.DataType.Type.TIMESTAMPNTZ)  # naive UTC, like the Parquet columns
DATE = exp.DataType(this=exp.DataType.Type.DATE)

# Which operators each column kind accepts (is_set/is_not_set work on every kind).
_KIND_OPERATORS = {
    "number": {"eq", "neq", "gt", "gte", "lt", "lte", "between", "in", "not_in"},
    "string": {"eq", "neq", "gt", "gte", "lt", "lte", "between", "in", "not_in", "contains", "starts_with"},
    "boolean": {"eq", "neq"},
    "timestamp": {"eq", "neq", "gt", "gte", "lt", "lte", "between", "in", "not_in"},
}
_COMPARE = {"eq": exp.EQ, "neq": exp.NEQ, "gt": exp.GT, "gte": exp.GTE, "lt": exp.LT, "lte": exp.LTE}


class InvalidFilter(Exception):
    """Raised by filter_predicate; carries the FieldError to report."""

    def __init__(self, error: FieldError):
        super().__init__(str(error))
        self.error = error


def column(name: str, table: str | None = None) -> exp.Column:
    """A schema column (quoted), optionally qualified by one of our own relation names (unquoted)."""
    return exp.Column(this=exp.to_identifier(name, quoted=True), table=exp.to_identifier(table) if table else None)


def relation(name: str, alias: str | None = None) -> exp.Table:
    """One of our own relations (a CTE) by name, optionally aliased; built directly, never parsed."""
    table = exp.Table(this=exp.to_identifier(name))
    if alias is not None:
        table.set("alias", exp.TableAlias(this=exp.to_identifier(alias)))
    return table


def renamed(name: str, output: str) -> exp.Expression:
    """Schema column ``name`` selected under our fixed ``output`` name."""
    return column(name) if name == output else exp.alias_(column(name), output, quoted=True)


def timestamp_literal(moment: datetime) -> exp.Expression:
    return exp.Cast(this=exp.Literal.string(moment.isoformat(sep=" ")), to=TIMESTAMP.copy())


def date_literal(moment: datetime) -> exp.Expression:
    return exp.Cast(this=exp.Literal.string(moment.date().isoformat()), to=DATE.copy())


def number_literal(value: int | float) -> exp.Literal:
    return exp.Literal.number(str(value) if isinstance(value, int) else repr(value))


def compare(operator: str, left: exp.Expression, value: Any, to_literal=number_literal) -> exp.Expression:
    """eq..lte or between ([lo, hi] inclusive) of ``left`` against literal values."""
    if operator == "between":
        return exp.Between(this=left, low=to_literal(value[0]), high=to_literal(value[1]))
    return _COMPARE[operator](this=left, expression=to_literal(value))


def filter_predicate(col: exp.Expression, typed: TypedColumn, operator: str, value: Any, path: str) -> exp.Expression:
    """A filter on a typed column. NULL (missing) yields NULL or FALSE for every operator but is_not_set."""
    if operator == "is_set":
        return exp.Not(this=exp.Is(this=col, expression=exp.Null()))
    if operator == "is_not_set":
        return exp.Is(this=col, expression=exp.Null())
    if operator not in _KIND_OPERATORS[typed.kind]:
        raise InvalidFilter(FieldError(
            f"{path}.operator", f"{operator} does not apply to a {typed.kind} column", "invalid_operator"))
    to_literal = _literal_maker(typed.kind, path)
    if operator in ("in", "not_in"):
        members = exp.In(this=col, expressions=[to_literal(item, f"[{i}]") for i, item in enumerate(value)])
        return members if operator == "in" else exp.Not(this=members)
    if operator == "contains":
        return exp.GT(this=exp.StrPosition(this=col, substr=to_literal(value)), expression=exp.Literal.number(0))
    if operator == "starts_with":
        return exp.StartsWith(this=col, expression=to_literal(value))
    if operator == "between":
        low, high = to_literal(value[0], "[0]"), to_literal(value[1], "[1]")
        ordered = (parse_timestamp(value[0]), parse_timestamp(value[1])) if typed.kind == "timestamp" else value
        if ordered[0] > ordered[1]:
            raise InvalidFilter(FieldError(f"{path}.value", "lo must not be greater than hi", "invalid_value"))
        return exp.Between(this=col, low=low, high=high)
    return _COMPARE[operator](this=col, expression=to_literal(value))


def _literal_maker(kind: str, path: str):
    """Literal builder for a column kind that reports type mismatches at ``path.value[...]``."""

    def to_literal(value: Any, suffix: str = "") -> exp.Expression:
        where = f"{path}.value{suffix}"
        if kind == "timestamp":
            if not isinstance(value, str):
                raise InvalidFilter(FieldError(where, "expected an ISO 8601 timestamp string", "invalid_value_type"))
            try:
                return timestamp_literal(parse_timestamp(value))
            except ValueError:  # pydantic's error type subclasses ValueError
                raise InvalidFilter(FieldError(where, "expected an ISO 8601 timestamp", "invalid_timestamp")) from None
        if scalar_kind(value) != kind:
            raise InvalidFilter(FieldError(where, f"expected a {kind} for this {kind} column", "invalid_value_type"))
        if kind == "string":
            return exp.Literal.string(value)
        if kind == "boolean":
            return exp.Boolean(this=value)
        return number_literal(value)

    return to_literal
