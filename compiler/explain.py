"""Why one user is in (or out of) a segment: membership's own predicates, evaluated for one user.

``compile_explain`` compiles a definition exactly as ``compile_segment`` does (the same
``_Compiler``, the same aggregates, profile columns and sequence CTEs, the same boolean tree),
over the user's events: one materialized CTE (``explain_user_events``: the tenant's events of
``user_id = U`` up to as_of) stands in for the events relation, so the lake is read once, and every
scan of the tree (also testing ``user_id = U``) reads that slice. Instead of the members, one
statement selects a row of values (``explain_values``):

- ``in_universe``: U has an event at or before as_of, or a profile row;
- for every node i, ``held_i`` = in_universe AND COALESCE(<node i's predicate>, FALSE). The
  predicate is the very expression membership filters on, NULL reads FALSE as in its WHERE, and
  every node's member set lies in the universe, so ``held_i`` says "U is in node i's set" and the
  root's ``held`` is membership itself;
- every condition's decisive values from the same event_stats aggregates and profile columns:
  frequency count, monetary metric, recency count in its window (plus the last matching event
  time, one extra aggregate), first event time, trait value;

joined (once, to the first of them) with U's event rows that some condition counts, flagged per
condition with the same conjuncts as its aggregate's FILTER (``f_<i>``): the latest
``EVENTS_PER_CONDITION`` of them (for first_seen, the first), and every row of each sequence's
step scan (``s_<i>_<step>``, the conditions of its own ``<name>_events`` CTE), from which
``assemble`` picks a chain: the earliest-ending one within ``within_days``, starting as late as
possible. A sequence's ``held``
still comes from its compiled CTEs; the chain is the evidence, present exactly when it held.

Paths are the compiler's: inside a referenced segment they are relative to that segment's
definition (the reference node holds its explained definition).
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any, Mapping

from sqlglot import exp

from .compile import EVENT_DATES, EVENT_STATS, PROFILE, _Aggregate, _Compiler, _Compiled, _days_before, _tenant_literal
from .errors import DefinitionError
from .model import (
    Definition, FirstSeen, Frequency, Group, Monetary, Recency, SegmentRef, Sequence, Trait, parse_definition,
    to_utc_naive,
)
from .predicates import column, relation, renamed, timestamp_literal

EVENTS_PER_CONDITION = 10
_USER = "explain_user"
USER_EVENTS = "explain_user_events"  # the user's events, read once
_COUNTED = (Frequency, Monetary, Recency, FirstSeen)  # conditions over one event_stats aggregate


@dataclass(eq=False)
class _Frame:
    """One node as the compiler visited it."""

    node: Any
    path: str
    index: int
    children: list[_Frame] = field(default_factory=list)
    aggregates: list[_Aggregate] = field(default_factory=list)
    sql: exp.Expression | None = None
    sequence: str | None = None  # name of a sequence's CTEs
    values: dict[str, exp.Expression] = field(default_factory=dict)  # value key -> expression


@dataclass
class _ExplainCompiler(_Compiler):
    user: str = ""
    frames: list[_Frame] = field(default_factory=list)  # pre-order
    stack: list[_Frame] = field(default_factory=list)

    def node(self, node: Any, path: str, negated: bool) -> _Compiled:
        frame = _Frame(node, path, len(self.frames))
        if self.stack:
            self.stack[-1].children.append(frame)
        self.frames.append(frame)
        self.stack.append(frame)
        sequences_before = len(self.sequence_names)
        try:
            compiled = super().node(node, path, negated)
        finally:
            self.stack.pop()
        frame.sql = compiled.sql
        if isinstance(node, Sequence) and len(self.sequence_names) > sequences_before:
            frame.sequence = self.sequence_names[sequences_before]
        self._values(frame)
        return compiled

    def aggregate(self, kind: str, function: exp.Expression, event_type: str | None, bound: Any,
                  conditions: list[exp.Expression]) -> exp.Column:
        found = super().aggregate(kind, function, event_type, bound, conditions)
        if self.stack:
            self.stack[-1].aggregates.append(self.aggregates[(function, event_type, bound, tuple(conditions))])
        return found

    def _user_test(self, user_id: str) -> exp.Expression:
        return exp.EQ(this=column(user_id), expression=exp.Literal.string(self.user))

    def _scan(self, bound: Any, event_types: list[str] | None, extra: Any = ()) -> exp.Select:
        return super()._scan(bound, event_types, [*extra, self._user_test(self.schema.events.user_id)])

    def _profile(self) -> exp.Select:
        return super()._profile().where(self._user_test(self.schema.profiles.user_id), copy=False)

    # ---- the values of each condition ------------------------------------------------------

    def _values(self, frame: _Frame) -> None:
        node, zero = frame.node, exp.Literal.number(0)
        if isinstance(node, _COUNTED) and frame.aggregates:
            value = _stat(frame.aggregates[0])
            counts = isinstance(node, (Frequency, Recency)) or (isinstance(node, Monetary)
                                                                 and node.metric in ("sum", "count"))
            frame.values["value"] = exp.Coalesce(this=value, expressions=[zero]) if counts else value
        if isinstance(node, Recency) and frame.aggregates:
            counted = frame.aggregates[0]
            last = super().aggregate("recency_last", exp.Max(this=column(self.schema.events.occurred_at)),
                                     counted.event_type, None, counted.conditions)
            frame.values["last_at"] = last
        if isinstance(node, Trait):
            typed = self.schema.profiles.traits.get(node.trait)
            if typed is not None:
                frame.values["value"] = column(typed.column, PROFILE)

    # ---- queries ---------------------------------------------------------------------------

    def values_query(self) -> exp.Select:
        events_seen = exp.Not(this=exp.Is(this=column("user_id", EVENT_STATS), expression=exp.Null()))
        profiled = exp.Not(this=exp.Is(this=column("user_id", PROFILE), expression=exp.Null()))
        in_universe = exp.Paren(this=exp.or_(events_seen, profiled))
        columns: list[exp.Expression] = [exp.alias_(in_universe, "in_universe")]
        for frame in self.frames:
            held = exp.and_(in_universe.copy(), exp.Coalesce(this=exp.Paren(this=frame.sql.copy()),
                                                             expressions=[exp.false()]))
            columns.append(exp.alias_(held, f"held_{frame.index}"))
            columns += [exp.alias_(value.copy(), f"{key}_{frame.index}") for key, value in frame.values.items()]
        user = exp.select(exp.alias_(exp.Literal.string(self.user), "user_id", quoted=True)).subquery(_USER)
        select = exp.select(*columns).from_(user, copy=False)
        for name in [EVENT_STATS, PROFILE, *self.sequence_names]:
            same_user = exp.EQ(this=column("user_id", name), expression=column("user_id", _USER))
            select = select.join(relation(name), on=same_user, join_type="left", copy=False)
        return select

    def statement(self, events_relation: exp.Expression, event_id: str | None) -> tuple[exp.Select, dict[str, str]]:
        """One statement: the user's events read once (``explain_user_events``, materialized: every scan of
        the compiled tree reads it), the values row FULL JOINed with the event rows on the first of them, so
        the values come once (a row whose ``in_universe`` is not NULL) whatever the number of events."""
        events = self.schema.events
        needed = [events.tenant_id, events.user_id, events.event_type, events.occurred_at, events.event_date,
                  event_id, *self._used_properties()]  # not the raw properties JSON, the widest column
        slice_ = exp.select(*(column(name) for name in dict.fromkeys(needed) if name is not None))
        slice_ = slice_.from_(events_relation.copy()).where(exp.and_(
            exp.EQ(this=column(events.tenant_id), expression=self.tenant.copy()), self._user_test(events.user_id),
            exp.LTE(this=column(events.occurred_at), expression=timestamp_literal(self.as_of))))
        ctes = [(USER_EVENTS, slice_), (EVENT_STATS, self._event_stats(universe=True)), (PROFILE, self._profile()),
                *self.sequences, ("explain_values", self.values_query())]
        rows, properties = self.events_query(event_id)
        select = exp.select(exp.Star()).from_(relation("explain_values"))
        if rows is not None:
            rows = rows.select(exp.alias_(exp.Window(this=exp.RowNumber()), "e_row"), copy=False)
            ctes += [*((cte.alias, cte.this) for cte in rows.args.pop("with_").expressions), ("explain_kept", rows)]
            first = exp.EQ(this=exp.column("e_row", table="explain_kept"), expression=exp.Literal.number(1))
            select = select.join(relation("explain_kept"), on=first, join_type="full")
        select.set("with_", exp.With(expressions=[
            exp.CTE(this=cte, alias=exp.TableAlias(this=exp.to_identifier(name)), materialized=name == USER_EVENTS)
            for name, cte in ctes]))
        return select, properties

    def events_query(self, event_id: str | None) -> tuple[exp.Select | None, dict[str, str]]:
        """U's events that some condition counts or some sequence step scans, flagged per condition
        (``f_<i>``, ranked ``r_<i>``) and per sequence step (``s_<i>_<step>``); and the alias of each
        property column used."""
        events = self.schema.events
        counted: list[tuple[_Frame, exp.Expression]] = []
        steps: list[tuple[_Frame, list[exp.Expression]]] = []
        for frame in self.frames:
            if isinstance(frame.node, _COUNTED) and frame.aggregates:
                tests = self._aggregate_tests(frame.aggregates[0])
                counted.append((frame, exp.and_(*tests) if tests else exp.true()))
            elif frame.sequence is not None:
                steps.append((frame, self._step_tests(frame.sequence)))
        if not counted and not steps:
            return None, {}
        properties = self._used_properties()
        columns: list[exp.Expression] = [
            exp.alias_(column(event_id), "e_id", quoted=True) if event_id else exp.alias_(exp.Null(), "e_id"),
            renamed(events.event_type, "e_type"), renamed(events.occurred_at, "e_at")]
        columns += [renamed(typed_column, alias) for typed_column, alias in properties.items()]
        flags: list[exp.Expression] = []
        for frame, test in counted:
            columns.append(exp.alias_(_flag(test), f"f_{frame.index}"))
            flags.append(test)
        for frame, tests in steps:
            for step, test in enumerate(tests, start=1):
                columns.append(exp.alias_(_flag(test), f"s_{frame.index}_{step}"))
                flags.append(test)
        scan = self._scan(None, None, [exp.or_(*(f.copy() for f in flags))]).select(*columns, copy=False)
        ranks = [exp.alias_(_rank(f"f_{frame.index}", ascending=isinstance(frame.node, FirstSeen)), f"r_{frame.index}")
                 for frame, _ in counted]
        ranked = exp.select(exp.Star(), *ranks).from_(relation("explain_events"))
        keep = [exp.and_(exp.EQ(this=exp.column(f"f_{frame.index}"), expression=exp.Literal.number(1)),
                         exp.LTE(this=exp.column(f"r_{frame.index}"), expression=exp.Literal.number(_limit(frame))))
                for frame, _ in counted]
        keep += [exp.EQ(this=exp.column(f"s_{frame.index}_{step}"), expression=exp.Literal.number(1))
                 for frame, tests in steps for step in range(1, len(tests) + 1)]
        select = exp.select(exp.Star()).from_(relation("explain_ranked")).where(exp.or_(*keep))
        select.set("with_", exp.With(expressions=[
            exp.CTE(this=cte, alias=exp.TableAlias(this=exp.to_identifier(name)))
            for name, cte in (("explain_events", scan), ("explain_ranked", ranked))]))
        return select, properties

    def _step_tests(self, name: str) -> list[exp.Expression]:
        """Per step, what puts an event in the sequence's step scan with that step's flag set."""
        scan = dict(self.sequences)[f"{name}_events"]
        where = scan.args["where"].this
        tests = []
        for flag in scan.expressions[2:]:  # user_id, occurred_at, then one CASE per step
            match = flag.this.args["ifs"][0].this
            tests.append(exp.and_(where.copy(), match.copy()))
        return tests

    def _used_properties(self) -> dict[str, str]:
        """Typed column -> alias of every property a condition filters on or aggregates."""
        used: dict[str, str] = {}
        for name in self._property_names():
            typed = self.schema.events.properties.get(name)
            if typed is not None and typed.column not in used:
                used[typed.column] = f"p_{len(used)}"
        return used

    def _property_names(self, frame: _Frame | None = None) -> list[str]:
        frames = self.frames if frame is None else [frame]
        names: list[str] = []
        for item in frames:
            node = item.node
            if isinstance(node, Monetary):
                names.append(node.property)
            for where in [getattr(node, "where", [])] + [step.where for step in getattr(node, "steps", [])]:
                names += [f.property for f in where]
        return list(dict.fromkeys(names))


def _stat(aggregate: _Aggregate) -> exp.Column:
    return exp.column(aggregate.alias, table=EVENT_STATS)


def _flag(test: exp.Expression) -> exp.Expression:
    return exp.Case(ifs=[exp.If(this=test.copy(), true=exp.Literal.number(1))], default=exp.Literal.number(0))


def _rank(flag: str, ascending: bool) -> exp.Window:
    """How many flagged rows come at or before this one (latest first, or earliest first)."""
    order = [exp.Ordered(this=exp.column(name), desc=not ascending) for name in ("e_at", "e_id")]
    return exp.Window(this=exp.Sum(this=exp.column(flag)), order=exp.Order(expressions=order),
                      spec=exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="PRECEDING", end="CURRENT ROW"))


def _limit(frame: _Frame) -> int:
    return 1 if isinstance(frame.node, FirstSeen) else EVENTS_PER_CONDITION


# ---- answers ------------------------------------------------------------------------------------


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat() + "Z"
    if isinstance(value, date):
        return value.isoformat()
    return value


@dataclass
class ExplainedNode:
    """One node for one user: whether it held, and why."""

    path: str
    node: Any  # the model node (Group or a condition)
    held: bool
    values: dict[str, Any] = field(default_factory=dict)  # decisive values (raw Python values)
    events: list[dict[str, Any]] = field(default_factory=list)  # events that counted / a sequence's chain
    children: list[ExplainedNode] = field(default_factory=list)  # a group's; a reference's definition
    window: dict[str, Any] | None = None  # the time range the condition counted

    @property
    def decided_by(self) -> list[int]:
        """The children that decided a group's result (all of them when each had to agree)."""
        if not isinstance(self.node, Group):
            return []
        if self.node.logic == "NOT":
            return [0]
        wanted = self.node.logic == "OR"  # OR held: its true children; AND failed: its false ones
        if self.held != wanted:
            return list(range(len(self.children)))
        return [i for i, child in enumerate(self.children) if child.held == wanted]

    def to_json(self) -> dict[str, Any]:
        node = self.node
        if isinstance(node, Group):
            return {"path": self.path, "logic": node.logic, "held": self.held, "decided_by": self.decided_by,
                    "conditions": [child.to_json() for child in self.children]}
        out: dict[str, Any] = {"path": self.path, "type": node.type, "held": self.held,
                               "condition": node.model_dump(mode="json", exclude_defaults=True)}
        out.update({key: _json(value) for key, value in self.values.items()})
        if self.window is not None:
            out["window"] = {key: _json(value) for key, value in self.window.items()}
        if isinstance(node, SegmentRef):
            out["definition"] = self.children[0].to_json() if self.children else None
        elif isinstance(node, Sequence):
            out["steps"] = [_event_json(event) for event in self.events]
        elif not isinstance(node, Trait):
            out["events"] = [_event_json(event) for event in self.events]
        return out


def _event_json(event: Mapping[str, Any]) -> dict[str, Any]:
    return {key: ({k: _json(v) for k, v in value.items()} if key == "properties" else _json(value))
            for key, value in event.items()}


@dataclass
class Explanation:
    user_id: str
    as_of: datetime
    in_universe: bool
    root: ExplainedNode

    @property
    def member(self) -> bool:
        return self.root.held

    def nodes(self) -> list[ExplainedNode]:
        """Every node, pre-order (references' definitions included)."""
        out, pending = [], [self.root]
        while pending:
            node = pending.pop()
            out.append(node)
            pending.extend(reversed(node.children))
        return out

    def to_json(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "as_of": _json(self.as_of), "in_universe": self.in_universe,
                "member": self.member, "explanation": self.root.to_json()}


@dataclass
class ExplainQueries:
    """The statement of one explanation (``query``, over the schema's relations) and how to read its rows."""

    query: exp.Select
    user_id: str
    as_of: datetime
    _compiler: _ExplainCompiler
    _properties: dict[str, str]

    @property
    def value_columns(self) -> list[str]:
        """The columns of the values row (the other columns are the events')."""
        return ["in_universe", *(f"held_{frame.index}" for frame in self._compiler.frames),
                *(f"{key}_{frame.index}" for frame in self._compiler.frames for key in frame.values)]

    def assemble(self, values: Mapping[str, Any], events: list[Mapping[str, Any]]) -> Explanation:
        """The explanation from the values row and the event rows (those whose ``e_at`` is not NULL), as
        mappings by column name (``value_columns`` and the rest; a runner can split them column-wise)."""
        in_universe = bool(values["in_universe"])
        explained: dict[int, ExplainedNode] = {}
        for frame in reversed(self._compiler.frames):  # children before parents
            node = ExplainedNode(frame.path, frame.node, bool(values[f"held_{frame.index}"]),
                                 {key: values[f"{key}_{frame.index}"] for key in frame.values},
                                 children=[explained[child.index] for child in frame.children],
                                 window=self._window(frame.node))
            if isinstance(frame.node, _COUNTED) and frame.aggregates:
                node.events = self._counted(frame, events)
            elif frame.sequence is not None:
                node.events = self._chain(frame, events)
            explained[frame.index] = node
        return Explanation(self.user_id, self.as_of, in_universe, explained[0])

    def _event(self, row: Mapping[str, Any], frame: _Frame) -> dict[str, Any]:
        schema = self._compiler.schema.events.properties
        properties = {}
        for name in self._compiler._property_names(frame):
            typed = schema.get(name)
            if typed is not None:
                properties[name] = row[self._properties[typed.column]]
        return {"event_id": row["e_id"], "event_type": row["e_type"], "occurred_at": row["e_at"],
                "properties": properties}

    def _counted(self, frame: _Frame, rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        flag, rank = f"f_{frame.index}", f"r_{frame.index}"
        kept = sorted((row for row in rows if row[flag] == 1 and row[rank] <= _limit(frame)), key=lambda r: r[rank])
        return [self._event(row, frame) for row in kept]

    def _chain(self, frame: _Frame, rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        node: Sequence = frame.node
        per_step = [[row for row in rows if row[f"s_{frame.index}_{step}"] == 1]
                    for step in range(1, len(node.steps) + 1)]
        times = find_chain([sorted({row["e_at"] for row in step}) for step in per_step],
                           timedelta(days=node.within_days))
        if times is None:
            return []
        chain = []
        for step, at in enumerate(times):
            row = min((r for r in per_step[step] if r["e_at"] == at), key=lambda r: (r["e_id"] is None, r["e_id"]))
            chain.append({"step": step + 1, **self._event(row, frame)})
        return chain

    def _window(self, node: Any) -> dict[str, Any] | None:
        """The time range a condition counts events in, as the compiler bounds it."""
        as_of = self.as_of
        if isinstance(node, (Recency, FirstSeen)):
            return {"threshold_at": _days_before(as_of, node.window_days), "end": as_of}
        if not isinstance(node, (Frequency, Monetary, Sequence)):
            return None
        if node.window_days is not None:
            return {"start": _days_before(as_of, node.window_days), "start_inclusive": False, "end": as_of}
        end = as_of if node.until is None else min(node.until, as_of)
        return {"start": node.since, "start_inclusive": True, "end": end}


def find_chain(step_times: list[list[datetime]], within: timedelta) -> list[datetime] | None:
    """Times t1 < t2 < ... < tk, ti from step i's sorted times, tk - t1 <= within: the chain that
    ends first and, of those, starts last (intermediate steps as early as possible); None if none.
    From each start the greedy earliest-next chain ends earliest, and its end only grows with the
    start, so starts are tried in order until the greedy chain fails."""
    best: list[datetime] | None = None
    for start in step_times[0]:
        chain, current = [start], start
        for times in step_times[1:]:
            position = bisect_right(times, current)
            if position == len(times):
                return best
            current = times[position]
            chain.append(current)
        if best is not None and chain[-1] > best[-1]:
            return best
        if chain[-1] - start <= within:
            best = chain
    return best


def compile_explain(
    definition: Definition,
    schema: Any,
    *,
    tenant_id: int | str,
    as_of: datetime,
    user_id: str,
    resolve_segment: Any = None,
    event_id: str | None = "event_id",
) -> ExplainQueries:
    """The statement explaining ``user_id``'s membership (see the module doc). ``event_id`` names the
    events column holding event ids (None: the answer has none). Raises DefinitionError like
    ``compile_segment``."""
    if not isinstance(as_of, datetime):
        raise TypeError("as_of must be a datetime")
    if not isinstance(user_id, str):
        raise TypeError("user_id must be a str")
    events_relation = schema.events.relation
    user_schema = replace(schema, events=replace(schema.events, relation=relation(USER_EVENTS)))
    compiler = _ExplainCompiler(user_schema, _tenant_literal(tenant_id), to_utc_naive(as_of), resolve_segment,
                                user=user_id)
    definition = parse_definition(definition)
    compiler.node(definition.root, "definition", negated=False)
    if compiler.errors:
        raise DefinitionError(compiler.errors)
    query, properties = compiler.statement(events_relation, event_id)
    query.meta[EVENT_DATES] = (None, compiler.as_of.date())  # the universe test reads all of the user's history
    return ExplainQueries(query, user_id, compiler.as_of, compiler, properties)


__all__ = ["compile_explain", "ExplainQueries", "Explanation", "ExplainedNode", "find_chain", "EVENTS_PER_CONDITION"]
