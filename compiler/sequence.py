"""Ordered-steps conditions as window functions, O(n log n) per user.

A chain needs steps 1..k at strictly increasing times with last - first <= W.
For each event that can play step i, the best chain to extend is the one
with the LATEST start among chains of steps 1..i-1 that finished strictly
before it: a later start only makes the final ``last - first <= W`` easier.
So, over one row per (user, distinct occurred_at):

    chain_start(step 2 row) = latest step-1 time strictly before it
    chain_start(step i row) = latest chain_start of step-(i-1) rows strictly before it

each a running MAX over ``ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING``
(rows have distinct times, so "preceding" means "strictly earlier"). A user
matches when some step-k row has ``occurred_at <= chain_start + W days``.
"""
from __future__ import annotations

from sqlglot import exp

from .predicates import column, renamed

STEP_FLAG = "step_{}"
CHAIN_START = "chain_start"


def _flag(step: int) -> exp.Expression:
    return exp.EQ(this=exp.column(STEP_FLAG.format(step)), expression=exp.Literal.number(1))


def _latest_before(value: exp.Expression) -> exp.Window:
    """MAX(value) over this user's strictly earlier rows."""
    return exp.Window(
        this=exp.Max(this=value),
        partition_by=[column("user_id")],
        order=exp.Order(expressions=[exp.Ordered(this=column("occurred_at"))]),
        spec=exp.WindowSpec(kind="ROWS", start="UNBOUNDED", start_side="PRECEDING",
                            end=exp.Literal.number(1), end_side="PRECEDING"),
    )


def sequence_ctes(
    name: str,
    scan: exp.Select,
    step_matches: list[exp.Expression],
    within_days: int,
    user_id: str,
    occurred_at: str,
) -> list[tuple[str, exp.Select]]:
    """CTEs ending in ``name``: the distinct user_ids with a chain.

    ``scan`` is the filtered event scan (tenant, window, step event types);
    ``step_matches`` the per-step predicates on an event row. Later CTEs
    call the columns "user_id" and "occurred_at" whatever the schema names them.
    """
    steps = len(step_matches)
    flags = [
        exp.alias_(exp.Max(this=exp.Case(ifs=[exp.If(this=match, true=exp.Literal.number(1))],
                                          default=exp.Literal.number(0))), STEP_FLAG.format(i))
        for i, match in enumerate(step_matches, start=1)
    ]
    events_name = f"{name}_events"
    keys = [renamed(user_id, "user_id"), renamed(occurred_at, "occurred_at")]
    ctes = [(events_name, scan.select(*keys, *flags, append=False).group_by(column(user_id), column(occurred_at)))]
    previous = events_name
    for step in range(2, steps + 1):
        if step == 2:
            source, start = _flag(1), column("occurred_at")
        else:
            source, start = _flag(step - 1), exp.column(CHAIN_START)
        latest = _latest_before(exp.Case(ifs=[exp.If(this=source, true=start)]))
        carried = [exp.column(STEP_FLAG.format(i)) for i in range(step, steps + 1)]
        layer = exp.select(column("user_id"), column("occurred_at"), *carried,
                           exp.alias_(latest, CHAIN_START)).from_(previous)
        if step > 2:  # rows that are neither a source nor a later step no longer matter
            layer = layer.where(exp.or_(*(_flag(i) for i in range(step - 1, steps + 1))))
        previous = f"{name}_step_{step}"
        ctes.append((previous, layer))
    deadline = exp.Add(this=exp.column(CHAIN_START),
                       expression=exp.Interval(this=exp.Literal.string(str(within_days)), unit=exp.Var(this="DAY")))
    final = (exp.select(column("user_id")).distinct().from_(previous)
             .where(_flag(steps))
             .where(exp.LTE(this=column("occurred_at"), expression=deadline)))
    ctes.append((name, final))
    return ctes
