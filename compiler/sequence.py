"""Ordered-steps conditions: greedy chains by per-user MIN/MAX joins, windows only where needed.

A chain needs events e1..ek, ei matching step i, at strictly increasing
times, with ek - e1 <= W. Sorting every user's events (window functions)
answers that for everyone but is the expensive part, so most users are
decided by aggregates and hash joins first:

Forward greedy (the earliest end)
    first_1 = earliest step-1 time; first_i = earliest step-i time after first_(i-1).
    Any chain has ei >= first_i (induction), so without first_k there is no
    chain at all, and first_k is the earliest time any chain can end.

Backward greedy (the latest start of a chain ending at first_k)
    latest_(k-1) = latest step-(k-1) time before first_k; latest_i = latest
    step-i time before latest_(i+1). (latest_1, ..., first_k) is a chain, and
    no chain ending at first_k starts later.

So a user with ``first_k - latest_1 <= W`` matches. A user with a longer
earliest chain is undecided; as any chain starting at or before latest_1
ends at or after first_k, it is too long, and only the user's events after
latest_1 can form a match. Only those rows go through the exact window
pipeline: over one row per (user, distinct occurred_at),

    chain_start(step 2 row) = latest step-1 time strictly before it
    chain_start(step i row) = latest chain_start of step-(i-1) rows strictly before it

each a running MAX over ``ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING``
(rows have distinct times, so "preceding" means "strictly earlier"); a later
chain start only makes ``last - first <= W`` easier. A row of step k matches
when ``occurred_at <= chain_start + W days``.

When the window itself spans at most W days, every chain is short enough and
the forward greedy alone decides (``span_limited=False``): a chain exists when
first_(k-1) comes before the user's last step-k event, which for two steps is
one MIN/MAX aggregate.

Inequalities between joined relations stay in WHERE (inner joins: the same
result), which every target engine accepts.

The joins of aggregated CTEs need a planner that estimates them sensibly.
PostgreSQL 15 has no statistics for CTE columns: it estimates a row or two per
step and nests loops over the CTE scans, quadratic in the events. Its
rendering replaces each sequence by ``windowed_sequence``: the window pipeline
over all of the user's events, one sort and k-1 window passes, no joins. The
final CTE of a sequence that joins CTEs carries what that needs in
``meta[SEQUENCE]``.
"""
from __future__ import annotations

from sqlglot import exp

from .predicates import column, relation, renamed

Ctes = list[tuple[str, exp.Select]]
STEP_FLAG = "step_{}"
CHAIN_START = "chain_start_{}"  # window layers
START, END = "chain_start", "chain_end"  # the earliest chain
FIRST_AT, LATEST_AT, LAST_AT = "first_at", "latest_at", "last_at"
SEQUENCE = "sequence"  # meta key of a sequence's final CTE: (steps, within_days), when it joins CTEs


def _flag(step: int, table: str | None = None) -> exp.Expression:
    return exp.EQ(this=exp.column(STEP_FLAG.format(step), table=table), expression=exp.Literal.number(1))


def _plus_days(moment: exp.Expression, days: int) -> exp.Expression:
    return exp.Add(this=moment, expression=exp.Interval(this=exp.Literal.string(str(days)), unit=exp.Var(this="DAY")))


def _user(table: str) -> exp.Expression:
    """``table.user_id AS user_id``: some engines name a qualified column after its table."""
    return exp.alias_(column("user_id", table), "user_id", quoted=True)


def _join(select: exp.Select, name: str, alias: str, other: str) -> exp.Select:
    """``select JOIN name AS alias`` on the same user as ``other``."""
    same_user = exp.EQ(this=column("user_id", other), expression=column("user_id", alias))
    return select.join(relation(name, alias), on=same_user)


def _greedy_step(events: str, step: int, previous: str, previous_at: str, forward: bool) -> exp.Select:
    """Per user: the earliest step-``step`` time after ``previous``'s (forward), else the latest before it."""
    at, reached = column("occurred_at", "e"), exp.column(previous_at, table="p")
    aggregate, alias = (exp.Min, FIRST_AT) if forward else (exp.Max, LATEST_AT)
    select = exp.select(_user("e"), exp.alias_(aggregate(this=at), alias)).from_(relation(events, "e"))
    return (_join(select, previous, "p", "e")
            .where(_flag(step, "e"), (exp.GT if forward else exp.LT)(this=at.copy(), expression=reached))
            .group_by(column("user_id", "e")))


def _any_chain(name: str, events: str, steps: int) -> Ctes:
    """Users with any chain: the forward greedy reaches step k-1 before their last step-k event."""
    def time_of(step: int) -> exp.Expression:
        return exp.Case(ifs=[exp.If(this=_flag(step), true=column("occurred_at"))])

    ends = f"{name}_ends"
    ctes = [(ends, exp.select(column("user_id"), exp.alias_(exp.Min(this=time_of(1)), FIRST_AT),
                              exp.alias_(exp.Max(this=time_of(steps)), LAST_AT))
             .from_(relation(events)).group_by(column("user_id")))]
    if steps == 2:  # one aggregate decides
        found = exp.select(column("user_id")).from_(relation(ends)).where(
            exp.LT(this=exp.column(FIRST_AT), expression=exp.column(LAST_AT)))
        return [*ctes, (name, found)]
    reached = ends
    for step in range(2, steps):
        reached, previous = f"{name}_first_{step}", reached
        ctes.append((reached, _greedy_step(events, step, previous, FIRST_AT, forward=True)))
    found = (_join(exp.select(_user("r")).from_(relation(reached, "r")), ends, "l", "r")
             .where(exp.LT(this=exp.column(FIRST_AT, table="r"), expression=exp.column(LAST_AT, table="l"))))
    return [*ctes, (name, found)]


def _earliest_chain(name: str, events: str, steps: int) -> Ctes:
    """CTEs ending in ``<name>_earliest_chain``: user_id, chain_start, chain_end (see the module doc)."""
    first = f"{name}_first_1"
    ctes = [(first, exp.select(column("user_id"), exp.alias_(exp.Min(this=column("occurred_at")), FIRST_AT))
             .from_(relation(events)).where(_flag(1)).group_by(column("user_id")))]
    for step in range(2, steps + 1):
        first, previous = f"{name}_first_{step}", first
        ctes.append((first, _greedy_step(events, step, previous, FIRST_AT, forward=True)))
    latest, latest_at = first, FIRST_AT
    for step in range(steps - 1, 0, -1):
        latest, previous = f"{name}_latest_{step}", latest
        ctes.append((latest, _greedy_step(events, step, previous, latest_at, forward=False)))
        latest_at = LATEST_AT
    chain = exp.select(_user("f"), exp.alias_(exp.column(LATEST_AT, table="l"), START),
                       exp.alias_(exp.column(FIRST_AT, table="f"), END)).from_(relation(first, "f"))
    return [*ctes, (f"{name}_earliest_chain", _join(chain, latest, "l", "f"))]


def _per_time(events: str, steps: int) -> exp.Select:
    """One row per (user, distinct occurred_at) of ``events`` (as ``e``) with the step flags any of its events has."""
    flags = [exp.alias_(exp.Max(this=exp.column(STEP_FLAG.format(i), table="e")), STEP_FLAG.format(i))
             for i in range(1, steps + 1)]
    select = exp.select(_user("e"), exp.alias_(column("occurred_at", "e"), "occurred_at", quoted=True), *flags)
    return select.from_(relation(events, "e")).group_by(column("user_id", "e"), column("occurred_at", "e"))


def _undecided_rows(events: str, earliest: str, steps: int, within_days: int) -> exp.Select:
    """Rows after the earliest chain's start of users whose earliest chain is too long, one per distinct time."""
    too_long = exp.GT(this=exp.column(END, table="c"), expression=_plus_days(exp.column(START, table="c"), within_days))
    return (_join(_per_time(events, steps), earliest, "c", "e")
            .where(too_long, exp.GT(this=column("occurred_at", "e"), expression=exp.column(START, table="c"))))


def _latest_before(value: exp.Expression) -> exp.Window:
    """MAX(value) over this user's strictly earlier rows."""
    return exp.Window(
        this=exp.Max(this=value),
        partition_by=[column("user_id")],
        order=exp.Order(expressions=[exp.Ordered(this=column("occurred_at"))]),
        spec=exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="PRECEDING",
                            end=exp.Literal.number(1), end_side="PRECEDING"),
    )


def _window_pipeline(name: str, rows: str, steps: int, within_days: int) -> Ctes:
    """Running maxima of chain starts over ``rows`` (one per user and time, with step flags),
    ending in ``<name>_late``: the users with a chain.

    ``chain_start_<i>`` of a row is the latest start of a chain of steps 1..i-1 strictly before it
    (a new name per layer: no alias shadows the column it is computed from).
    """
    ctes, previous = [], rows
    for step in range(2, steps + 1):
        if step == 2:
            source, start = _flag(1), column("occurred_at")
        else:
            source, start = _flag(step - 1), exp.column(CHAIN_START.format(step - 1))
        latest = _latest_before(exp.Case(ifs=[exp.If(this=source, true=start)]))
        carried = [exp.column(STEP_FLAG.format(i)) for i in range(step, steps + 1)]
        layer = exp.select(column("user_id"), column("occurred_at"), *carried,
                           exp.alias_(latest, CHAIN_START.format(step))).from_(relation(previous))
        if step > 2:  # rows that are neither a source nor a later step no longer matter
            layer = layer.where(exp.or_(*(_flag(i) for i in range(step - 1, steps + 1))))
        previous = f"{name}_step_{step}"
        ctes.append((previous, layer))
    deadline = _plus_days(exp.column(CHAIN_START.format(steps)), within_days)
    final = (exp.select(column("user_id")).distinct().from_(relation(previous))
             .where(_flag(steps), exp.LTE(this=column("occurred_at"), expression=deadline)))
    return [*ctes, (f"{name}_late", final)]


def sequence_ctes(
    name: str,
    scan: exp.Select,
    step_matches: list[exp.Expression],
    within_days: int,
    span_limited: bool,
    user_id: str,
    occurred_at: str,
) -> Ctes:
    """CTEs ending in ``name``: the distinct user_ids with a chain.

    ``scan`` is the filtered event scan (tenant, window, step event types);
    ``step_matches`` the per-step predicates on an event row; ``span_limited``
    is False when the window already keeps every chain within ``within_days``.
    Later CTEs call the columns "user_id" and "occurred_at" whatever the schema
    names them.
    """
    steps = len(step_matches)
    events = _events(name)
    flags = [exp.alias_(exp.Case(ifs=[exp.If(this=match, true=exp.Literal.number(1))], default=exp.Literal.number(0)),
                        STEP_FLAG.format(i)) for i, match in enumerate(step_matches, start=1)]
    keys = [renamed(user_id, "user_id"), renamed(occurred_at, "occurred_at")]
    ctes = [(events, scan.select(*keys, *flags, append=False))]
    if not span_limited:
        ctes += _any_chain(name, events, steps)
        if steps > 2:
            ctes[-1][1].meta[SEQUENCE] = (steps, within_days)
        return ctes

    ctes += _earliest_chain(name, events, steps)
    earliest = ctes[-1][0]
    ctes.append((f"{name}_rest", _undecided_rows(events, earliest, steps, within_days)))
    ctes += _window_pipeline(name, f"{name}_rest", steps, within_days)
    short = (exp.select(column("user_id")).from_(relation(earliest))
             .where(exp.LTE(this=exp.column(END), expression=_plus_days(exp.column(START), within_days))))
    late = exp.select(column("user_id")).from_(relation(ctes[-1][0]))
    found = exp.union(short, late, distinct=False)  # disjoint: late users' earliest chain is too long
    found.meta[SEQUENCE] = (steps, within_days)
    return [*ctes, (name, found)]


def _events(name: str) -> str:
    return f"{name}_events"


def windowed_sequence(name: str, steps: int, within_days: int) -> Ctes:
    """CTEs ending in ``name`` that find the same users from ``<name>_events`` with window functions only
    (no joins; see the module doc)."""
    rows = f"{name}_times"
    ctes = [(rows, _per_time(_events(name), steps)), *_window_pipeline(f"{name}_all", rows, steps, within_days)]
    return [*ctes, (name, exp.select(column("user_id")).from_(relation(ctes[-1][0])))]
