"""Shared helpers for the compiler tests: write a World to Parquet, describe it as a
LakeSchema, run compiled queries in DuckDB.

Typed columns are named ``p_<i>`` / ``t_<i>`` (never the property name) so a
compiler that uses the property name as a column fails; tests can pass their
own column names (e.g. a hostile one).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from sqlglot import exp

from compiler import (
    DefinitionError, EventsRelation, LakeSchema, ProfilesRelation, TypedColumn, compile_segment, parse_definition,
    to_sql,
)
from tests.reference_eval import ReferenceEvaluator
from tests.segment_strategies import World

_JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z  # naive datetimes are UTC: "...Z"
_ARROW_TYPES = {"number": pa.float64(), "string": pa.string(), "boolean": pa.bool_(), "timestamp": pa.timestamp("us")}


def default_columns(names: dict[str, str], prefix: str) -> dict[str, str]:
    return {name: f"{prefix}_{i}" for i, name in enumerate(sorted(names))}


def _typed(kind: str, value):
    """The typed-column value of a raw value (type-consistent generators: same kind or null)."""
    if value is None:
        return None
    if kind == "number" and not isinstance(value, bool):
        return float(value)
    return value


def _table(rows: list[dict], base: dict[str, tuple[pa.DataType, callable]], bag: str,
           kinds: dict[str, str], columns: dict[str, str]) -> pa.Table:
    arrays = {name: pa.array([get(r) for r in rows], type=dtype) for name, (dtype, get) in base.items()}
    for name, column in columns.items():
        arrays[column] = pa.array([_typed(kinds[name], r[bag].get(name)) for r in rows], type=_ARROW_TYPES[kinds[name]])
    return pa.table(arrays)


def events_table(world: World, columns: dict[str, str]) -> pa.Table:
    base = {
        "tenant_id": (pa.int64(), lambda r: r["tenant_id"]),
        "user_id": (pa.string(), lambda r: r["user_id"]),
        "event_type": (pa.string(), lambda r: r["event_type"]),
        "occurred_at": (pa.timestamp("us"), lambda r: r["occurred_at"]),
        "event_date": (pa.date32(), lambda r: r["occurred_at"].date()),
        "properties": (pa.string(), lambda r: orjson.dumps(r["properties"], option=_JSON_OPTIONS).decode()),
    }
    return _table(world.events, base, "properties", world.catalog.properties, columns)


def profiles_table(world: World, columns: dict[str, str]) -> pa.Table:
    base = {
        "tenant_id": (pa.int64(), lambda r: r["tenant_id"]),
        "user_id": (pa.string(), lambda r: r["user_id"]),
    }
    return _table(world.profiles, base, "traits", world.catalog.traits, columns)


def read_parquet(path: Path, hive_partitioning: bool = False) -> exp.Expression:
    arguments: list[exp.Expression] = [exp.Array(expressions=[exp.Literal.string(str(path))])]
    if hive_partitioning:
        arguments.append(exp.EQ(this=exp.column("hive_partitioning"), expression=exp.true()))
    return exp.Table(this=exp.ReadParquet(expressions=arguments))


def lake_schema(events_relation: exp.Expression, profiles_relation: exp.Expression, world: World,
                property_columns: dict[str, str], trait_columns: dict[str, str]) -> LakeSchema:
    kinds = world.catalog
    properties = {n: TypedColumn(column=c, kind=kinds.properties[n]) for n, c in property_columns.items()}
    traits = {n: TypedColumn(column=c, kind=kinds.traits[n]) for n, c in trait_columns.items()}
    return LakeSchema(
        events=EventsRelation(relation=events_relation, properties=properties),
        profiles=ProfilesRelation(relation=profiles_relation, traits=traits),
    )


def table_lake(world: World) -> tuple[LakeSchema, dict[str, pa.Table]]:
    """The world as the tables ``events`` and ``profiles`` (to load into an engine), and the schema that
    reads them under those names; the tables hold exactly the columns ``schema.table_columns`` lists."""
    property_columns = default_columns(world.catalog.properties, "p")
    trait_columns = default_columns(world.catalog.traits, "t")
    schema = lake_schema(exp.to_table("events"), exp.to_table("profiles"), world, property_columns, trait_columns)
    tables = {"events": events_table(world, property_columns), "profiles": profiles_table(world, trait_columns)}
    columns = schema.table_columns("duckdb")
    return schema, {name: table.select(list(columns[name])) for name, table in tables.items()}


def create_table_sql(name: str, columns: dict[str, str], dialect: str, suffix: str = "") -> str:
    """``CREATE TABLE name (...)`` with quoted column names and the given types."""
    body = ", ".join(f"{exp.to_identifier(column, quoted=True).sql(dialect)} {sql_type}"
                     for column, sql_type in columns.items())
    return f"CREATE TABLE {name} ({body}){suffix}"


def write_lake(world: World, directory: Path, property_columns: dict[str, str] | None = None,
               trait_columns: dict[str, str] | None = None, hive: bool = False) -> LakeSchema:
    """Write the world's events and profiles as Parquet under ``directory``; the schema reads them
    with read_parquet. ``hive`` lays events out like the lake: ``events/event_date=YYYY-MM-DD/*.parquet``."""
    property_columns = property_columns or default_columns(world.catalog.properties, "p")
    trait_columns = trait_columns or default_columns(world.catalog.traits, "t")
    directory.mkdir(parents=True, exist_ok=True)
    events = events_table(world, property_columns)
    if hive:
        ds.write_dataset(events, directory / "events", format="parquet", partitioning=["event_date"],
                         partitioning_flavor="hive", existing_data_behavior="overwrite_or_ignore")
        # an empty partition: a lake without events still has a file to glob
        empty = directory / "events" / "event_date=1970-01-01"
        empty.mkdir(parents=True, exist_ok=True)
        pq.write_table(events.drop_columns(["event_date"]).slice(0, 0), empty / "empty.parquet")
        events_relation = read_parquet(directory / "events" / "**" / "*.parquet", hive_partitioning=True)
    else:
        pq.write_table(events, directory / "events.parquet")
        events_relation = read_parquet(directory / "events.parquet")
    pq.write_table(profiles_table(world, trait_columns), directory / "profiles.parquet")
    return lake_schema(events_relation, read_parquet(directory / "profiles.parquet"),
                       world, property_columns, trait_columns)


def run_duckdb(con, sql: str) -> list[str]:
    return [row[0] for row in con.execute(sql).fetchall()]


def compile_to_sql(definition: dict, segments: dict, schema: LakeSchema, world: World,
                   dialect: str = "duckdb") -> str:
    query = compile_segment(parse_definition(definition), schema, tenant_id=world.tenant_id, as_of=world.as_of,
                            resolve_segment=segments.__getitem__)
    return to_sql(query, dialect)


@dataclass
class Case:
    """One definition checked in one world (what a bug report needs)."""

    world: World
    definition: dict
    segments: dict[int, dict]


class Checker:
    """Runs cases through an engine (the world loaded, the compiled SQL in the engine's dialect) and
    compares with the reference evaluator; subclasses say how to load a world and run SQL.

    ``problem(case)`` is None when they agree, else a short kind ("mismatch",
    "duplicates" or an exception class name) and a message.
    """

    dialect = "duckdb"

    def load(self, world: World) -> LakeSchema:
        """Make the world's events and profiles queryable; the schema that describes them."""
        raise NotImplementedError

    def run(self, sql: str) -> list[str]:
        raise NotImplementedError

    def problem(self, case: Case) -> tuple[str, str] | None:
        world = case.world
        schema = self.load(world)
        expected = ReferenceEvaluator(world.events, world.profiles, tenant_id=world.tenant_id, as_of=world.as_of,
                                      segments=case.segments).members(case.definition)
        try:
            sql = compile_to_sql(case.definition, case.segments, schema, world, self.dialect)
            got = self.run(sql)
        except DefinitionError as error:  # the generators only make valid definitions
            first = error.errors[0]
            return f"DefinitionError {first.code}: {first.message}", f"DefinitionError: {error}"
        except Exception as error:  # noqa: BLE001 - any crash of a valid definition is a finding
            return type(error).__name__, f"{type(error).__name__}: {error}"
        if set(got) != expected:
            return "mismatch", f"expected={sorted(expected)}\ngot={sorted(got)}\nsql:\n{sql}"
        if len(got) != len(set(got)):
            return "duplicates", f"duplicate user_ids: {sorted(got)}\nsql:\n{sql}"
        return None


class DuckDBChecker(Checker):
    """DuckDB on Parquet files written per case."""

    def __init__(self, con, root: Path, columns: tuple[dict, dict] | None = None, hive: bool = False):
        self.con, self.root, self.columns, self.hive = con, root, columns or (None, None), hive
        self._dirs = itertools.count()

    def load(self, world: World) -> LakeSchema:
        # a fresh directory per run: no engine can serve stale file metadata
        return write_lake(world, self.root / str(next(self._dirs)), *self.columns, hive=self.hive)

    def run(self, sql: str) -> list[str]:
        return run_duckdb(self.con, sql)


def _without_each(items: list) -> list[list]:
    """Candidate lists: halves first, then single removals (a cheap ddmin)."""
    candidates = []
    size = len(items) // 2
    while size >= 1:
        candidates += [items[:i] + items[i + size:] for i in range(0, len(items), size)]
        size //= 2
    return candidates


def _simpler_nodes(node: dict) -> list[dict]:
    """Definitions one step simpler than ``node`` (used to shrink a failing definition)."""
    out = []
    if "logic" in node:
        children = node["conditions"]
        out += children  # a child on its own
        if len(children) > 1:
            out += [{**node, "conditions": rest} for rest in _without_each(children)]
        for i, child in enumerate(children):
            out += [{**node, "conditions": children[:i] + [simpler] + children[i + 1:]}
                    for simpler in _simpler_nodes(child)]
        return out
    required = {"recency": {"window_days"}, "first_seen": {"window_days"}}.get(node["type"], {"event_type"})
    for key in ("where", "window_days", "since", "until", "event_type"):
        if key in node and key not in required:  # the simpler node must still be a valid definition
            out.append({k: v for k, v in node.items() if k != key})
    if len(node.get("where", [])) > 1:
        out += [{**node, "where": [item]} for item in node["where"]]
    steps = node.get("steps", [])
    if len(steps) > 2:
        out += [{**node, "steps": rest} for rest in _without_each(steps) if len(rest) >= 2]
    for i, step in enumerate(steps):
        if "where" in step:
            out.append({**node, "steps": steps[:i] + [{"event_type": step["event_type"]}] + steps[i + 1:]})
    return out


def _referenced(node, found: set) -> set:
    if isinstance(node, dict):
        if node.get("type") == "segment":
            found.add(node["segment_id"])
        for value in node.values():
            _referenced(value, found)
    elif isinstance(node, list):
        for value in node:
            _referenced(value, found)
    return found


def minimize(case: Case, kind: str, problem) -> Case:
    """Greedy shrink of a failing case (same failure kind): simpler definition, fewer events/profiles."""
    def fails(candidate: Case) -> bool:
        found = problem(candidate)
        return found is not None and found[0] == kind

    progress = True
    while progress:
        progress = False
        for definition in _simpler_nodes(case.definition):
            candidate = Case(case.world, definition, case.segments)
            if fails(candidate):
                case, progress = candidate, True
                break
        for bag in ("events", "profiles"):
            for rest in _without_each(getattr(case.world, bag)):
                candidate = Case(replace(case.world, **{bag: rest}), case.definition, case.segments)
                if fails(candidate):
                    case, progress = candidate, True
                    break
    for bag, values in (("events", "properties"), ("profiles", "traits")):
        rows = getattr(case.world, bag)
        for index, row in enumerate(rows):
            for name in list(row[values]):
                smaller = {**row, values: {k: v for k, v in row[values].items() if k != name}}
                candidate = Case(replace(case.world, **{bag: rows[:index] + [smaller] + rows[index + 1:]}),
                                 case.definition, case.segments)
                if fails(candidate):
                    case, rows, row = candidate, getattr(candidate.world, bag), smaller
    used = set()
    pending = _referenced(case.definition, set())
    while pending:
        segment_id = pending.pop()
        used.add(segment_id)
        pending |= _referenced(case.segments[segment_id], set()) - used
    return Case(case.world, case.definition, {k: v for k, v in case.segments.items() if k in used})


def describe(case: Case, message: str) -> str:
    """A failure report with everything needed to reproduce the case."""
    world = case.world
    events = "\n".join(f"    {e}" for e in sorted(world.events, key=lambda e: (e["user_id"], e["occurred_at"])))
    profiles = "\n".join(f"    {p}" for p in world.profiles)
    return (f"as_of={world.as_of!r} tenant_id={world.tenant_id}\ndefinition={case.definition!r}\n"
            f"segments={case.segments!r}\n{message}\nevents:\n{events}\nprofiles:\n{profiles}")


def check_all(checker: Checker, world: World, definitions: list[dict], segments: dict) -> None:
    """Fail with a minimized report on the first definition whose SQL disagrees with the reference."""
    for definition in definitions:
        case = Case(world, definition, segments)
        found = checker.problem(case)
        if found is not None:
            small = minimize(case, found[0], checker.problem)
            pytest.fail(f"{found[0]} (minimized)\n" + describe(small, checker.problem(small)[1]), pytrace=False)
