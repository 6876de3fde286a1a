"""Definition -> one sqlglot SELECT of the matching, distinct ``user_id``s.

The query has the shape a DuckDB expert would write by hand::

    WITH event_stats AS (      -- ONE scan of the tenant's events, widest window needed
      SELECT user_id,
             COUNT(*) FILTER (WHERE event_type = 'a' AND occurred_at > ...) AS frequency_1,
             SUM("total") FILTER (WHERE event_type = 'b') AS monetary_2, ...
      FROM events
      WHERE tenant_id = <t> AND occurred_at <= <as_of> [AND occurred_at >= <lower>]
        AND event_date BETWEEN ... [AND event_type IN (...)] [AND (<rows counted by 1> OR ...)]
      GROUP BY user_id
    ), profile AS (SELECT user_id, <traits used> FROM profiles WHERE tenant_id = <t>),
    sequence_1_events ..., sequence_1,          -- per sequence (see compiler.sequence)
    SELECT <base>.user_id FROM <base> LEFT JOIN ... WHERE <the boolean tree>

The base relation is the narrowest one every matching user must appear in:
a sequence the whole tree requires, else ``event_stats`` when every match
needs a counted event (then the scan keeps only the rows some aggregate
counts), else ``profile`` when every match needs a trait, else the universe
(``event_stats`` over all history FULL OUTER JOIN ``profile``), which negations
like ``NOT`` or ``frequency lt 1`` need. The tenant literal is in every events/profiles scan.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Callable

from sqlglot import exp

from .errors import DefinitionError, FieldError
from .model import (
    Definition, FirstSeen, Frequency, Group, Monetary, Recency, SegmentRef, Sequence, Trait,
    parse_definition, to_utc_naive,
)
from .predicates import (
    InvalidFilter, column, compare, date_literal, filter_predicate, relation, renamed, timestamp_literal,
)
from .schema import LakeSchema
from .sequence import sequence_ctes

EVENT_STATS, PROFILE, UNIVERSE = "event_stats", "profile", "universe"
MAX_INLINED_CONDITIONS = 1000
MAX_SEGMENT_NESTING = 8

Resolver = Callable[[int], Any]


@dataclass(frozen=True, order=True)
class Bound:
    """Lower time bound of counted events: ``occurred_at > at`` if exclusive, else ``>=``.

    Ordering puts the widest bound first (earlier time; inclusive before exclusive).
    """

    at: datetime
    exclusive: bool

    def test(self, occurred_at: exp.Expression) -> exp.Expression:
        op = exp.GT if self.exclusive else exp.GTE
        return op(this=occurred_at, expression=timestamp_literal(self.at))


@dataclass
class _Aggregate:
    """One conditional aggregate of the event_stats scan."""

    alias: str
    function: exp.Expression
    event_type: str | None  # None: any event type
    bound: Bound | None  # None: all history
    conditions: list[exp.Expression]  # further filters: until, where


@dataclass
class _Compiled:
    sql: exp.Expression
    anchors: frozenset[str] = frozenset()  # relations every matching user must appear in


def _matches_zero(operator: str, value: Any) -> bool:
    if operator == "between":
        return value[0] <= 0 <= value[1]
    return {"eq": 0 == value, "neq": 0 != value, "gt": 0 > value, "gte": 0 >= value,
            "lt": 0 < value, "lte": 0 <= value}[operator]


def _coalesce(value: exp.Expression, default: exp.Expression) -> exp.Expression:
    return exp.Coalesce(this=value, expressions=[default])


def _without(condition: exp.Expression, implied: exp.Expression) -> exp.Expression | None:
    """Drop a conjunct the FROM relation already guarantees (None if nothing is left)."""
    conjuncts, pending = [], [condition]
    while pending:  # AND chains may be long: no recursion
        node = pending.pop().unnest()
        if isinstance(node, exp.And):
            pending.extend((node.right, node.left))
        else:
            conjuncts.append(node)
    kept = [c for c in conjuncts if c != implied]
    return exp.and_(*kept) if kept else None


def _days_before(as_of: datetime, days: int) -> datetime | None:
    """``as_of - days``, or None when that is before year 1: earlier than any event can be
    (``compiler.timestamps``), so the window has no lower bound. SQL never sees such a literal."""
    try:
        return as_of - timedelta(days=days)
    except OverflowError:
        return None


def _tenant_literal(tenant_id: int | str) -> exp.Literal:
    if isinstance(tenant_id, bool) or not isinstance(tenant_id, (int, str)):
        raise TypeError("tenant_id must be an int or a str")
    return exp.Literal.number(tenant_id) if isinstance(tenant_id, int) else exp.Literal.string(tenant_id)


EVENT_DATES = "event_dates"  # key of compile_segment's query.meta


@dataclass
class _Compiler:
    schema: LakeSchema
    tenant: exp.Literal
    as_of: datetime
    resolve_segment: Resolver | None
    errors: list[FieldError] = field(default_factory=list)
    aggregates: dict[tuple, _Aggregate] = field(default_factory=dict)
    traits: dict[str, None] = field(default_factory=dict)  # ordered set of profile columns
    sequences: list[tuple[str, exp.Select]] = field(default_factory=list)
    sequence_names: list[str] = field(default_factory=list)
    segment_stack: list[int] = field(default_factory=list)
    resolved: dict[int, Definition] = field(default_factory=dict)
    leaves: int = 0
    scan_days: list[date | None] = field(default_factory=list)  # first event_date of each events scan

    # ---- boolean tree -------------------------------------------------------------------

    def node(self, node: Any, path: str, negated: bool) -> _Compiled:
        if isinstance(node, Group):
            return self.group(node, path, negated)
        self.leaves += 1
        if self.leaves > MAX_INLINED_CONDITIONS:
            raise DefinitionError.single(
                path, f"at most {MAX_INLINED_CONDITIONS} conditions including referenced segments",
                "too_many_conditions")
        handler = {
            Frequency: self.frequency, Monetary: self.monetary, Recency: self.recency,
            FirstSeen: self.first_seen, Trait: self.trait, Sequence: self.sequence, SegmentRef: self.segment,
        }[type(node)]
        return handler(node, path, negated)

    def group(self, node: Group, path: str, negated: bool) -> _Compiled:
        children = [self.node(child, f"{path}.conditions[{i}]", negated or node.logic == "NOT")
                    for i, child in enumerate(node.conditions)]
        if node.logic == "NOT":
            return _Compiled(exp.Not(this=exp.Paren(this=children[0].sql)))
        if node.logic == "AND":
            return _Compiled(exp.and_(*(c.sql for c in children)), frozenset().union(*(c.anchors for c in children)))
        return _Compiled(exp.or_(*(c.sql for c in children)), frozenset.intersection(*(c.anchors for c in children)))

    def frequency(self, node: Frequency, path: str, negated: bool) -> _Compiled:
        bound, extra = self._window(node, path)
        count = self.aggregate("frequency", exp.Count(this=exp.Star()), node.event_type, bound, extra)
        sql = compare(node.operator, _coalesce(count, exp.Literal.number(0)), node.value)
        return _Compiled(sql, frozenset() if _matches_zero(node.operator, node.value) else frozenset({EVENT_STATS}))

    def monetary(self, node: Monetary, path: str, negated: bool) -> _Compiled:
        typed = self.schema.events.properties.get(node.property)
        if typed is None:
            return self._fail(f"{path}.property", "unknown property", "unknown_property")
        if node.metric != "count" and typed.kind != "number":
            return self._fail(f"{path}.property", f"{node.metric} needs a number property", "invalid_value_type")
        function = {"sum": exp.Sum, "avg": exp.Avg, "min": exp.Min, "max": exp.Max, "count": exp.Count}[node.metric]
        bound, extra = self._window(node, path)
        value = self.aggregate("monetary", function(this=column(typed.column)), node.event_type, bound, extra)
        if node.metric in ("sum", "count"):  # 0 without matching events
            sql = compare(node.operator, _coalesce(value, exp.Literal.number(0)), node.value)
            anchored = not _matches_zero(node.operator, node.value)
            return _Compiled(sql, frozenset({EVENT_STATS}) if anchored else frozenset())
        return _Compiled(self._definite(compare(node.operator, value, node.value), negated), frozenset({EVENT_STATS}))

    def recency(self, node: Recency, path: str, negated: bool) -> _Compiled:
        threshold = _days_before(self.as_of, node.window_days)
        # gt/gte: no event at-or-after / after T; lt/lte: some event after / at-or-after T.
        bound = None if threshold is None else Bound(threshold, exclusive=node.operator in ("gte", "lt"))
        where = self._where(node.where, path)
        recent = _coalesce(self.aggregate("recency", exp.Count(this=exp.Star()), node.event_type, bound, where),
                           exp.Literal.number(0))
        if node.operator in ("gt", "gte"):
            return _Compiled(exp.EQ(this=recent, expression=exp.Literal.number(0)))
        return _Compiled(exp.GT(this=recent, expression=exp.Literal.number(0)), frozenset({EVENT_STATS}))

    def first_seen(self, node: FirstSeen, path: str, negated: bool) -> _Compiled:
        first = self.aggregate("first_seen", exp.Min(this=column(self.schema.events.occurred_at)), None, None, [])
        operator = {"gt": "lt", "gte": "lte", "lt": "gt", "lte": "gte"}[node.operator]  # days since F vs N
        threshold = _days_before(self.as_of, node.window_days)
        if threshold is None:  # T is before every event: F < T and F <= T never hold, F > T always
            sql = exp.false() if operator in ("lt", "lte") else exp.Not(this=exp.Is(this=first, expression=exp.Null()))
        else:
            sql = compare(operator, first, threshold, timestamp_literal)
        return _Compiled(self._definite(sql, negated), frozenset({EVENT_STATS}))

    def trait(self, node: Trait, path: str, negated: bool) -> _Compiled:
        typed = self.schema.profiles.traits.get(node.trait)
        if typed is None:
            return self._fail(f"{path}.trait", "unknown trait", "unknown_trait")
        try:
            sql = filter_predicate(column(typed.column, PROFILE), typed, node.operator, node.value, path)
        except InvalidFilter as invalid:
            return self._fail(invalid.error.path, invalid.error.message, invalid.error.code)
        self.traits[typed.column] = None
        if node.operator == "is_not_set":
            return _Compiled(sql)
        return _Compiled(self._definite(sql, negated) if node.operator != "is_set" else sql, frozenset({PROFILE}))

    def sequence(self, node: Sequence, path: str, negated: bool) -> _Compiled:
        events = self.schema.events
        bound, extra = self._window(node, path)
        matches, has_where = [], False
        for i, step in enumerate(node.steps):
            filters = self._where(step.where, f"{path}.steps[{i}]")
            has_where = has_where or bool(filters)
            matches.append(exp.and_(self._is_event_type(step.event_type), *filters))
        step_types = list(dict.fromkeys(step.event_type for step in node.steps))
        scan = self._scan(bound, step_types, extra + ([exp.or_(*matches)] if has_where else []))
        name = f"sequence_{len(self.sequence_names) + 1}"
        self.sequence_names.append(name)
        span = self._window_span(node)
        span_limited = span is None or span > timedelta(days=node.within_days)
        self.sequences.extend(sequence_ctes(name, scan, matches, node.within_days, span_limited,
                                            events.user_id, events.occurred_at))
        return _Compiled(self._sequence_match(name), frozenset({name}))

    @staticmethod
    def _sequence_match(name: str) -> exp.Expression:
        return exp.Not(this=exp.Is(this=column("user_id", name), expression=exp.Null()))

    def segment(self, node: SegmentRef, path: str, negated: bool) -> _Compiled:
        at = f"{path}.segment_id"
        sid = node.segment_id
        if sid in self.segment_stack:
            loop = " -> ".join(str(s) for s in [*self.segment_stack[self.segment_stack.index(sid):], sid])
            return self._fail(at, f"segment {sid} refers back to itself ({loop})", "segment_cycle")
        if len(self.segment_stack) >= MAX_SEGMENT_NESTING:
            return self._fail(at, f"segment references nest at most {MAX_SEGMENT_NESTING} deep", "too_deep")
        definition = self._resolve(sid, at)
        if definition is None:
            return _Compiled(exp.false())
        before = len(self.errors)
        self.segment_stack.append(sid)
        inner = self.node(definition.root, "definition", negated or node.operator == "not_in")
        self.segment_stack.pop()
        self.errors[before:] = [FieldError(at, f"segment {sid}: {error}", error.code) for error in self.errors[before:]]
        if node.operator == "not_in":
            return _Compiled(exp.Not(this=exp.Paren(this=inner.sql)))
        return _Compiled(exp.Paren(this=inner.sql), inner.anchors)

    # ---- helpers --------------------------------------------------------------------------

    def _resolve(self, sid: int, at: str) -> Definition | None:
        if sid in self.resolved:
            return self.resolved[sid]
        try:
            if self.resolve_segment is None:
                raise KeyError(sid)
            found = self.resolve_segment(sid)
        except KeyError:
            self._fail(at, f"segment {sid} does not exist", "segment_not_found")
            return None
        try:
            definition = parse_definition(found)
        except DefinitionError as invalid:
            for error in invalid.errors:
                self._fail(at, f"segment {sid}: {error}", error.code)
            return None
        self.resolved[sid] = definition
        return definition

    def _fail(self, path: str, message: str, code: str) -> _Compiled:
        self.errors.append(FieldError(path, message, code))
        return _Compiled(exp.false())

    @staticmethod
    def _definite(sql: exp.Expression, negated: bool) -> exp.Expression:
        """NULL (no data) must read as FALSE once a NOT is above; without one, WHERE already does that."""
        return _coalesce(sql, exp.false()) if negated else sql

    def _is_event_type(self, event_type: str) -> exp.Expression:
        return exp.EQ(this=column(self.schema.events.event_type), expression=exp.Literal.string(event_type))

    def _window(self, node: Frequency | Monetary | Sequence, path: str) -> tuple[Bound | None, list[exp.Expression]]:
        """Lower bound plus the other filters (until, where) of a windowed condition."""
        occurred_at = column(self.schema.events.occurred_at)
        extra = []
        if node.window_days is not None:
            threshold = _days_before(self.as_of, node.window_days)
            bound = None if threshold is None else Bound(threshold, exclusive=True)
        else:
            bound = Bound(node.since, exclusive=False) if node.since is not None else None
            if node.until is not None and node.until < self.as_of:
                extra.append(exp.LTE(this=occurred_at, expression=timestamp_literal(node.until)))
        if not isinstance(node, Sequence):
            extra.extend(self._where(node.where, path))
        return bound, extra

    def _window_span(self, node: Sequence) -> timedelta | None:
        """Largest possible time between two events of the window (None: unbounded)."""
        if node.window_days is not None:
            return timedelta(days=node.window_days)
        if node.since is None:
            return None
        return max(min(node.until or self.as_of, self.as_of) - node.since, timedelta(0))

    def _where(self, filters: list, path: str) -> list[exp.Expression]:
        predicates = []
        for i, item in enumerate(filters):
            typed = self.schema.events.properties.get(item.property)
            if typed is None:
                self._fail(f"{path}.where[{i}].property", "unknown property", "unknown_property")
                continue
            try:
                predicates.append(filter_predicate(column(typed.column), typed, item.operator, item.value,
                                                   f"{path}.where[{i}]"))
            except InvalidFilter as invalid:
                self._fail(invalid.error.path, invalid.error.message, invalid.error.code)
        return predicates

    def aggregate(self, kind: str, function: exp.Expression, event_type: str | None, bound: Bound | None,
                  conditions: list[exp.Expression]) -> exp.Column:
        """Register a conditional aggregate of the event scan (shared when identical); return its column."""
        key = (function, event_type, bound, tuple(conditions))
        if key not in self.aggregates:
            alias = kind if kind == "first_seen" else f"{kind}_{len(self.aggregates) + 1}"
            self.aggregates[key] = _Aggregate(alias, function, event_type, bound, conditions)
        return exp.column(self.aggregates[key].alias, table=EVENT_STATS)

    # ---- query assembly -----------------------------------------------------------------

    def _scan(self, bound: Bound | None, event_types: list[str] | None,
              extra: list[exp.Expression] = ()) -> exp.Select:
        """FROM events WHERE tenant, time range (plus event_date for partition pruning), event types, extra."""
        events = self.schema.events
        self.scan_days.append(None if bound is None else bound.at.date())
        occurred_at = column(events.occurred_at)
        conditions = [exp.EQ(this=column(events.tenant_id), expression=self.tenant.copy()),
                      exp.LTE(this=occurred_at, expression=timestamp_literal(self.as_of))]
        if bound is not None:
            conditions.append(bound.test(occurred_at.copy()))
        if events.event_date is not None:
            upper = date_literal(self.as_of)
            conditions.append(exp.LTE(this=column(events.event_date), expression=upper) if bound is None else
                              exp.Between(this=column(events.event_date), low=date_literal(bound.at), high=upper))
        if event_types is not None:
            conditions.append(self._is_event_type(event_types[0]) if len(event_types) == 1 else
                              exp.In(this=column(events.event_type),
                                     expressions=[exp.Literal.string(t) for t in event_types]))
        conditions.extend(extra)
        # Builders get copy=False throughout: every node here is fresh, and copying the growing
        # tree at each chained call was two thirds of compile time.
        return exp.select().from_(events.relation.copy(), copy=False).where(exp.and_(*conditions, copy=False), copy=False)

    def _event_stats(self, universe: bool) -> exp.Select:
        """The one events scan. Unless it must list the universe, it keeps only rows some aggregate
        counts: filters every aggregate shares move into WHERE (dropped from the FILTERs), and the OR of
        what is left of each aggregate's filter is added when that is more than an event type test."""
        aggregates = list(self.aggregates.values())
        events = self.schema.events
        bound: Bound | None = None
        event_types: list[str] | None = None
        if not universe and aggregates and all(a.bound is not None for a in aggregates):
            bound = min(a.bound for a in aggregates)
        if not universe and aggregates and all(a.event_type is not None for a in aggregates):
            event_types = list(dict.fromkeys(a.event_type for a in aggregates))
        applied = []  # tests the scan makes anyway
        if bound is not None:
            applied.append(bound.test(column(events.occurred_at)))
        if event_types is not None and len(event_types) == 1:
            applied.append(self._is_event_type(event_types[0]))
        tests = [self._aggregate_tests(a) for a in aggregates]
        shared = [] if universe or not tests else [
            t for t in tests[0] if t not in applied and all(t in other for other in tests[1:])]
        residuals = [[t for t in own if t not in applied and t not in shared] for own in tests]
        restrict = list(shared)
        if not universe and all(residuals) and any(not self._is_type_test(t) for own in residuals for t in own):
            restrict.append(exp.or_(*(exp.and_(*(t.copy() for t in own), copy=False) for own in residuals), copy=False))
        columns: list[exp.Expression] = [renamed(events.user_id, "user_id")]
        for aggregate, own in zip(aggregates, residuals):
            function = aggregate.function.copy()
            if own:
                function = exp.Filter(this=function, expression=exp.Where(this=exp.and_(*(t.copy() for t in own),
                                                                                        copy=False)))
            columns.append(exp.alias_(function, aggregate.alias))
        return (self._scan(bound, event_types, restrict).select(*columns, copy=False)
                .group_by(column(events.user_id), copy=False))

    def _aggregate_tests(self, aggregate: _Aggregate) -> list[exp.Expression]:
        """The conjuncts a row must pass to count in ``aggregate``."""
        tests = [] if aggregate.event_type is None else [self._is_event_type(aggregate.event_type)]
        if aggregate.bound is not None:
            tests.append(aggregate.bound.test(column(self.schema.events.occurred_at)))
        return tests + [c.copy() for c in aggregate.conditions]

    def _is_type_test(self, test: exp.Expression) -> bool:
        return isinstance(test, exp.EQ) and test.this == column(self.schema.events.event_type)

    def _profile(self) -> exp.Select:
        profiles = self.schema.profiles
        return (exp.select(renamed(profiles.user_id, "user_id"), *(column(c) for c in self.traits))
                .from_(profiles.relation.copy(), copy=False)
                .where(exp.EQ(this=column(profiles.tenant_id), expression=self.tenant.copy()), copy=False))

    def query(self, root: _Compiled) -> exp.Select:
        sequences = [name for name in self.sequence_names if name in root.anchors]
        if sequences:
            base = sequences[0]
        elif EVENT_STATS in root.anchors:
            base = EVENT_STATS
        elif PROFILE in root.anchors:
            base = PROFILE
        else:
            base = UNIVERSE
        ctes: list[tuple[str, exp.Select]] = []
        if self.aggregates or base in (EVENT_STATS, UNIVERSE):
            ctes.append((EVENT_STATS, self._event_stats(universe=base == UNIVERSE)))
        if self.traits or base in (PROFILE, UNIVERSE):
            ctes.append((PROFILE, self._profile()))
        ctes.extend(self.sequences)
        if base == UNIVERSE:  # both relations hold each user at most once
            user: exp.Expression = _coalesce(column("user_id", EVENT_STATS), column("user_id", PROFILE))
            same_user = exp.EQ(this=column("user_id", PROFILE), expression=column("user_id", EVENT_STATS))
            select = (exp.select(exp.alias_(user, "user_id", quoted=True)).from_(relation(EVENT_STATS), copy=False)
                      .join(relation(PROFILE), on=same_user, join_type="full", copy=False))
            joined = {EVENT_STATS, PROFILE}
        else:
            user, joined = column("user_id", base), {base}
            select = exp.select(user).from_(relation(base), copy=False)
        referenced = [EVENT_STATS] * bool(self.aggregates) + [PROFILE] * bool(self.traits) + self.sequence_names
        for name in referenced:
            if name not in joined:
                on = exp.EQ(this=column("user_id", name), expression=user.copy())
                select = select.join(relation(name), on=on, join_type="left", copy=False)
        condition = _without(root.sql, self._sequence_match(base)) if base in self.sequence_names else root.sql
        if condition is not None:
            select = select.where(condition, copy=False)
        select.set("with_", exp.With(expressions=[
            exp.CTE(this=cte, alias=exp.TableAlias(this=exp.to_identifier(name))) for name, cte in ctes]))
        return select


def compile_segment(
    definition: Definition,
    schema: LakeSchema,
    *,
    tenant_id: int | str,
    as_of: datetime,
    resolve_segment: Resolver | None = None,
) -> exp.Select:
    """Compile a parsed definition to a SELECT of distinct ``user_id`` (see compiler.model for semantics).

    Raises DefinitionError (with JSON paths) for names missing from the schema,
    value/column type mismatches, and segment references that are missing or cyclic.
    ``resolve_segment(id)`` returns a Definition (or a definition dict) and raises KeyError if unknown.

    ``query.meta[EVENT_DATES]`` is ``(first, last)``: the event_date range every events scan
    stays within (``first`` None: some scan reads all history; no key: no events scan). A
    runner that knows which files hold which days can hand the query only those files.
    """
    if not isinstance(as_of, datetime):
        raise TypeError("as_of must be a datetime")
    compiler = _Compiler(schema, _tenant_literal(tenant_id), to_utc_naive(as_of), resolve_segment)
    definition = parse_definition(definition)
    root = compiler.node(definition.root, "definition", negated=False)
    if compiler.errors:
        raise DefinitionError(compiler.errors)
    query = compiler.query(root)
    if compiler.scan_days:
        first = None if None in compiler.scan_days else min(compiler.scan_days)
        query.meta[EVENT_DATES] = (first, compiler.as_of.date())
    return query
