"""Independent reference evaluator for segment definitions (test oracle).

Written from the semantics text of issue #3 with Polars, sharing no code with
``compiler/``: it reads the raw generated inputs (Python dicts holding the
property and trait values), never the typed Parquet columns, so a compiler
that reads the wrong column, casts wrongly, leaks another tenant or gets a
window boundary off by one disagrees with it.

Inputs
- events: ``{"tenant_id": int, "user_id": str, "event_type": str,
  "occurred_at": naive UTC datetime, "properties": {name: value}}``; a value
  is a number, str, bool, naive UTC datetime or None, and a missing key means
  "not set". Definitions compare datetimes with ISO 8601 texts.
- profiles: ``{"tenant_id": int, "user_id": str, "traits": {name: value}}``.
- definitions are the raw JSON-shaped dicts, segment references resolve
  through ``segments`` (segment id -> definition dict).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping

import polars as pl

_COMPARISONS = {
    "eq": lambda c, v: c == v,
    "neq": lambda c, v: c != v,
    "gt": lambda c, v: c > v,
    "gte": lambda c, v: c >= v,
    "lt": lambda c, v: c < v,
    "lte": lambda c, v: c <= v,
}


def _python_compare(operator: str, left: Any, value: Any) -> bool:
    """Compare a non-null aggregate (count, sum, ...) with a definition value."""
    if operator == "between":
        low, high = value
        return low <= left <= high
    return bool(_COMPARISONS[operator](left, value))


def _dtype_of(values: list[Any], name: str) -> pl.DataType:
    kinds = {type(v) for v in values if v is not None}
    if not kinds:
        return pl.Null()
    if kinds == {bool}:
        return pl.Boolean()
    if kinds <= {int, float}:
        return pl.Float64()
    if kinds == {str}:
        return pl.String()
    if kinds == {datetime}:
        return pl.Datetime("us")
    raise ValueError(f"property/trait {name!r} has mixed value types {kinds}")


def _value_frame(rows: list[dict], bag: str, base: dict[str, pl.DataType]) -> tuple[pl.DataFrame, dict[str, str]]:
    """A frame with the base columns plus one internal column per property name.

    Property names can be anything (quotes, unicode, ...), so each gets an
    internal column name ``v<i>``; the returned map goes name -> column.
    """
    names = sorted({name for row in rows for name in row[bag]})
    columns = {f"v{i}": name for i, name in enumerate(names)}
    data: dict[str, pl.Series] = {
        key: pl.Series(key, [row[key] for row in rows], dtype=dtype) for key, dtype in base.items()
    }
    for column, name in list(columns.items()):
        values = [row[bag].get(name) for row in rows]
        dtype = _dtype_of(values, name)
        if dtype == pl.Null():  # never set: same as a name nobody uses
            del columns[column]
            continue
        if dtype == pl.Float64():
            values = [None if v is None else float(v) for v in values]
        data[column] = pl.Series(column, values, dtype=dtype)
    return pl.DataFrame(data), {name: column for column, name in columns.items()}


def parse_instant(text: str) -> datetime:
    """ISO 8601 -> naive UTC (a value without offset is taken as UTC)."""
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(timezone.utc).replace(tzinfo=None)
    return parsed


class ReferenceEvaluator:
    """Evaluate definitions for one tenant at one ``as_of`` instant."""

    def __init__(
        self,
        events: Iterable[dict],
        profiles: Iterable[dict],
        *,
        tenant_id: int,
        as_of: datetime,
        segments: Mapping[Any, dict] | None = None,
    ) -> None:
        self.as_of = as_of
        self.segments = dict(segments or {})
        events = [e for e in events if e["tenant_id"] == tenant_id and e["occurred_at"] <= as_of]
        profiles = [p for p in profiles if p["tenant_id"] == tenant_id]
        self.events, self.property_columns = _value_frame(
            events,
            "properties",
            {"user_id": pl.String(), "event_type": pl.String(), "occurred_at": pl.Datetime("us")},
        )
        self.profiles, self.trait_columns = _value_frame(profiles, "traits", {"user_id": pl.String()})
        self.universe = set(self.events["user_id"]) | set(self.profiles["user_id"])

    # -- public ---------------------------------------------------------------------------
    def members(self, node: dict) -> set[str]:
        """The set of user ids matching ``node`` (a group or a condition)."""
        if "logic" in node:
            return self._group(node)
        handler = getattr(self, f"_{node['type']}")
        return handler(node)

    # -- groups ---------------------------------------------------------------------------
    def _group(self, node: dict) -> set[str]:
        children = [self.members(child) for child in node["conditions"]]
        logic = node["logic"]
        if logic == "NOT":
            (child,) = children
            return self.universe - child
        if logic == "AND":
            result = set(self.universe)
            for child in children:
                result &= child
            return result
        if logic == "OR":
            return set().union(*children)
        raise ValueError(f"unknown logic {logic!r}")

    # -- filters --------------------------------------------------------------------------
    @staticmethod
    def _filter_expr(frame: pl.DataFrame, columns: dict[str, str], name: str, operator: str, value: Any) -> pl.Expr:
        """True where the named property/trait passes; null values fail all but is_not_set."""
        if name not in columns:
            return pl.lit(operator == "is_not_set")
        col = pl.col(columns[name])
        if frame.schema[columns[name]] == pl.Datetime("us"):  # timestamp values are ISO 8601 texts
            value = [parse_instant(v) for v in value] if isinstance(value, list) else (
                None if value is None else parse_instant(value))
        if operator == "is_not_set":
            return col.is_null()
        if operator == "is_set":
            expr = col.is_not_null()
        elif operator in _COMPARISONS:
            expr = _COMPARISONS[operator](col, value)
        elif operator == "between":
            expr = (col >= value[0]) & (col <= value[1])
        elif operator == "in":
            expr = pl.any_horizontal([col == v for v in value])
        elif operator == "not_in":
            expr = pl.all_horizontal([col != v for v in value])
        elif operator == "contains":
            expr = col.str.contains(value, literal=True)
        elif operator == "starts_with":
            expr = col.str.starts_with(value)
        else:
            raise ValueError(f"unknown operator {operator!r}")
        return (col.is_not_null() & expr).fill_null(False)

    def _where(self, where: list[dict] | None) -> pl.Expr:
        expr = pl.lit(True)
        for item in where or []:
            expr = expr & self._filter_expr(self.events, self.property_columns, item["property"], item["operator"],
                                            item.get("value"))
        return expr

    def _window(self, node: dict) -> pl.Expr:
        """Window of frequency/monetary/sequence; events after as_of are already gone."""
        at = pl.col("occurred_at")
        if node.get("window_days") is not None:
            return at > self.as_of - timedelta(days=node["window_days"])
        expr = pl.lit(True)
        if node.get("since") is not None:
            expr = expr & (at >= parse_instant(node["since"]))
        if node.get("until") is not None:
            expr = expr & (at <= parse_instant(node["until"]))
        return expr

    def _matching(self, node: dict, *, event_type: str | None, window: bool = True) -> pl.DataFrame:
        predicate = self._where(node.get("where"))
        if event_type is not None:
            predicate = predicate & (pl.col("event_type") == event_type)
        if window:
            predicate = predicate & self._window(node)
        return self.events.filter(predicate)

    # -- conditions -----------------------------------------------------------------------
    def _frequency(self, node: dict) -> set[str]:
        counts = dict(self._matching(node, event_type=node["event_type"]).group_by("user_id").len().iter_rows())
        return {u for u in self.universe if _python_compare(node["operator"], counts.get(u, 0), node["value"])}

    def _monetary(self, node: dict) -> set[str]:
        matching = self._matching(node, event_type=node["event_type"])
        metric = node["metric"]
        column = self.property_columns.get(node["property"])
        if column is None:
            values = {}
        else:
            value = pl.col(column)
            aggregate = {
                "sum": value.sum(),
                "avg": value.mean(),
                "min": value.min(),
                "max": value.max(),
                "count": value.count(),
            }[metric]
            # Users whose matching events all lack the property: sum/count 0, avg/min/max null.
            values = dict(matching.group_by("user_id").agg(aggregate.alias("a")).iter_rows())
        default = 0 if metric in ("sum", "count") else None
        result = set()
        for user in self.universe:
            left = values.get(user, default)
            if left is None and metric in ("sum", "count"):
                left = 0
            if left is not None and _python_compare(node["operator"], left, node["value"]):
                result.add(user)
        return result

    def _recency(self, node: dict) -> set[str]:
        threshold = self.as_of - timedelta(days=node["window_days"])
        matching = self._matching(node, event_type=node.get("event_type"), window=False)
        at = pl.col("occurred_at")
        operator = node["operator"]
        recent = at >= threshold if operator in ("gt", "lte") else at > threshold
        performed = set(matching.filter(recent)["user_id"])
        if operator in ("gt", "gte"):
            return self.universe - performed
        return performed

    def _first_seen(self, node: dict) -> set[str]:
        threshold = self.as_of - timedelta(days=node["window_days"])
        firsts = self.events.group_by("user_id").agg(pl.col("occurred_at").min().alias("first"))
        operator = {"gt": "lt", "gte": "lte", "lt": "gt", "lte": "gte"}[node["operator"]]
        return set(firsts.filter(_COMPARISONS[operator](pl.col("first"), threshold))["user_id"])

    def _trait(self, node: dict) -> set[str]:
        passes = self._filter_expr(self.profiles, self.trait_columns, node["trait"], node["operator"],
                                   node.get("value"))
        matched = set(self.profiles.filter(passes)["user_id"])
        if node["operator"] == "is_not_set":
            # Users without a profile row have no value for any trait.
            matched |= self.universe - set(self.profiles["user_id"])
        return matched

    def _sequence(self, node: dict) -> set[str]:
        within = timedelta(days=node["within_days"])
        per_step: list[dict[str, list[datetime]]] = []
        for step in node["steps"]:
            frame = self._matching({**node, "where": step.get("where")}, event_type=step["event_type"])
            times: dict[str, list[datetime]] = {}
            for user, at in frame.select("user_id", "occurred_at").sort("occurred_at").iter_rows():
                times.setdefault(user, []).append(at)
            per_step.append(times)
        result = set()
        for user, starts in per_step[0].items():
            if any(self._chain_ends_within(user, start, per_step[1:], within) for start in starts):
                result.add(user)
        return result

    @staticmethod
    def _chain_ends_within(user: str, start: datetime, later_steps: list[dict], within: timedelta) -> bool:
        """Greedy: taking the earliest later event for each step minimises the chain's end."""
        current = start
        for times in later_steps:
            current = next((at for at in times.get(user, ()) if at > current), None)
            if current is None:
                return False
        return current - start <= within

    def _segment(self, node: dict) -> set[str]:
        members = self.members(self.segments[node["segment_id"]])
        if node["operator"] == "in":
            return members
        return self.universe - members

    # -- one user's leaf values (explanations) ------------------------------------------------
    def leaf_values(self, node: dict, user: str) -> dict[str, Any]:
        """The decisive values of a condition for ``user``, from the same semantics text: frequency
        count, monetary metric, recency count in its window and last matching event time, first event
        time, trait value, whether a sequence matched."""
        kind = node["type"]
        if kind == "frequency":
            return {"value": self._user_rows(self._matching(node, event_type=node["event_type"]), user).height}
        if kind == "monetary":
            rows = self._user_rows(self._matching(node, event_type=node["event_type"]), user)
            column = self.property_columns.get(node["property"])
            values = [] if column is None else [v for v in rows[column].to_list() if v is not None]
            metric = node["metric"]
            if metric in ("sum", "count"):
                return {"value": sum(values) if metric == "sum" else len(values)}
            if not values:
                return {"value": None}
            return {"value": {"avg": lambda: sum(values) / len(values), "min": lambda: min(values),
                              "max": lambda: max(values)}[metric]()}
        if kind == "recency":
            rows = self._user_rows(self._matching(node, event_type=node.get("event_type"), window=False), user)
            times = rows["occurred_at"].to_list()
            return {"value": len(self._recent(node, times)), "last_at": max(times, default=None)}
        if kind == "first_seen":
            return {"value": min(self._user_rows(self.events, user)["occurred_at"].to_list(), default=None)}
        if kind == "trait":
            column = self.trait_columns.get(node["trait"])
            rows = self._user_rows(self.profiles, user)
            return {"value": rows[column][0] if column is not None and rows.height else None}
        if kind == "sequence":
            return {"matched": user in self._sequence(node)}
        return {}

    def counted_times(self, node: dict, user: str) -> list[datetime]:
        """When the events a condition counts for ``user`` happened, latest first (first_seen: the first)."""
        kind = node["type"]
        if kind in ("frequency", "monetary"):
            times = self._user_rows(self._matching(node, event_type=node["event_type"]), user)["occurred_at"].to_list()
        elif kind == "recency":
            rows = self._user_rows(self._matching(node, event_type=node.get("event_type"), window=False), user)
            times = self._recent(node, rows["occurred_at"].to_list())
        elif kind == "first_seen":
            times = self._user_rows(self.events, user)["occurred_at"].to_list()
            return [min(times)] if times else []
        else:
            return []
        return sorted(times, reverse=True)

    def step_times(self, node: dict, user: str) -> list[list[datetime]]:
        """Per step of a sequence, when ``user``'s events matching that step (inside the window) happened."""
        return [sorted(self._user_rows(self._matching({**node, "where": step.get("where")},
                                                      event_type=step["event_type"]), user)["occurred_at"].to_list())
                for step in node["steps"]]

    def _recent(self, node: dict, times: list[datetime]) -> list[datetime]:
        threshold = self.as_of - timedelta(days=node["window_days"])
        inclusive = node["operator"] in ("gt", "lte")
        return [at for at in times if at >= threshold] if inclusive else [at for at in times if at > threshold]

    @staticmethod
    def _user_rows(frame: pl.DataFrame, user: str) -> pl.DataFrame:
        return frame.filter(pl.col("user_id") == user)
