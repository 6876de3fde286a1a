"""Compiled SQL vs the best hand-written DuckDB SQL, per segment shape (compiler tuning aid).

    python -m benchmarks.compiler_ratios --size 10m --runs 5 [--cases seq3_7d,seq2_1d] [--show-sql CASE]

Both run in one DuckDB connection over the same views of the benchmark lake (``events``,
``profiles``: the snapshot's Parquet files, hive partitioning, metadata cache), each
wrapped in ``SELECT count(*)``; member sets are checked to agree first. Runs alternate
between the two; the table shows median wall and CPU seconds (CPU of all DuckDB threads:
on a loaded machine it is the steadier figure) and compiled/hand for both.

The suite's segments use their ``benchmarks.suite`` SQL; the extra sequence shapes carry
the fastest exact DuckDB SQL we know for them (ASOF joins when the within_days span
binds, plain aggregates when the window is already shorter than within_days).
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
from sqlglot import exp

from benchmarks.datasets import SIZES, ensure_dataset
from benchmarks.engines.duckdb_hand import create_lake_views
from benchmarks.suite import BY_NAME, SqlContext, _events_upto, resolve_segment
from compiler import EventsRelation, LakeSchema, ProfilesRelation, TypedColumn, compile_segment, to_sql


@dataclass(frozen=True)
class Case:
    name: str
    definition: dict
    hand: Callable[[SqlContext], str]


def _steps(*event_types: str) -> list[dict]:
    return [{"event_type": t} for t in event_types]


def _asof_2(q: SqlContext, first: str, second: str, days: int) -> str:
    """Each second-step event takes the latest earlier first-step event."""
    return f"""
WITH s AS (SELECT user_id, event_type, occurred_at FROM {q.events}
           WHERE {_events_upto(q)} AND event_type IN ('{first}', '{second}'))
SELECT DISTINCT b.user_id
FROM (SELECT user_id, occurred_at FROM s WHERE event_type = '{second}') b
ASOF JOIN (SELECT user_id, occurred_at FROM s WHERE event_type = '{first}') a
  ON b.user_id = a.user_id AND b.occurred_at > a.occurred_at
WHERE b.occurred_at <= a.occurred_at + INTERVAL '{days} days'"""


def _ordered_2(q: SqlContext, first: str, second: str, days: int) -> str:
    """Window shorter than the span: a first-step event before some second-step event."""
    return f"""
SELECT user_id FROM {q.events}
WHERE {_events_upto(q, days)} AND event_type IN ('{first}', '{second}')
GROUP BY user_id
HAVING min(occurred_at) FILTER (WHERE event_type = '{first}') < max(occurred_at) FILTER (WHERE event_type = '{second}')"""


def _ordered_3(q: SqlContext, first: str, second: str, third: str, days: int) -> str:
    """Window shorter than the span: a second-step event between the first first-step and the last third-step event."""
    return f"""
WITH s AS (SELECT user_id, event_type, occurred_at FROM {q.events}
           WHERE {_events_upto(q, days)} AND event_type IN ('{first}', '{second}', '{third}')),
ends AS (SELECT user_id, min(occurred_at) FILTER (WHERE event_type = '{first}') AS first_at,
                max(occurred_at) FILTER (WHERE event_type = '{third}') AS last_at
         FROM s GROUP BY user_id)
SELECT DISTINCT s.user_id FROM s JOIN ends ON s.user_id = ends.user_id
WHERE s.event_type = '{second}' AND s.occurred_at > ends.first_at AND s.occurred_at < ends.last_at"""


def _pro_buyers(q: SqlContext) -> str:
    return f"""
SELECT o.user_id
FROM (SELECT user_id FROM {q.events} WHERE {_events_upto(q, 90)} AND event_type = 'order_placed'
      GROUP BY user_id HAVING count(*) >= 2) o
JOIN {q.profiles} p ON p.user_id = o.user_id
WHERE p.tenant_id = {q.tenant} AND p.{q.t('plan')} = 'pro'"""


def _suite(name: str, label: str | None = None) -> Case:
    segment = BY_NAME[name]
    return Case(label or name, segment.definition, segment.hand_sql)


CASES = [
    _suite("high_value_churners", "seed"),
    Case("seq2_1d", {"type": "sequence", "within_days": 1, "steps": _steps("product_viewed", "order_placed")},
         lambda q: _asof_2(q, "product_viewed", "order_placed", 1)),
    Case("seq2_click_order_1d", {"type": "sequence", "within_days": 1, "steps": _steps("email_clicked", "order_placed")},
         lambda q: _asof_2(q, "email_clicked", "order_placed", 1)),
    Case("seq2_30d_in_30d", {"type": "sequence", "within_days": 30, "window_days": 30,
                             "steps": _steps("product_viewed", "order_placed")},
         lambda q: _ordered_2(q, "product_viewed", "order_placed", 30)),
    _suite("view_cart_order_7d", "seq3_7d"),
    Case("seq3_7d_in_7d", {"type": "sequence", "within_days": 7, "window_days": 7,
                           "steps": _steps("product_viewed", "added_to_cart", "order_placed")},
         lambda q: _ordered_3(q, "product_viewed", "added_to_cart", "order_placed", 7)),
    _suite("frequent_viewers_30d", "frequency_30d"),
    _suite("high_average_order", "monetary_avg"),
    _suite("new_users_30d", "first_seen"),
    Case("trait_frequency", {"logic": "AND", "conditions": [
        {"type": "trait", "trait": "plan", "operator": "eq", "value": "pro"},
        {"type": "frequency", "event_type": "order_placed", "operator": "gte", "value": 2, "window_days": 90}]},
         _pro_buyers),
    _suite("unengaged_or_lapsed_free", "nested_or_not"),
    # The rest of the benchmark suite, so every suite segment has its compiled/hand ratio here.
    _suite("big_spenders_90d"),
    _suite("recent_openers_7d"),
    _suite("pro_in_core_markets"),
    _suite("recent_buyers_not_big_spenders"),
    _suite("repeat_eur_buyers_60d"),
    _suite("occasional_clickers_14d"),
]


def _timed(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    con.execute(sql).fetchone()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="10m", choices=sorted(SIZES))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--data", type=Path, default=Path("data"), help="datasets live in <data>/bench/<size>")
    parser.add_argument("--cases", help="comma-separated subset of: " + ", ".join(c.name for c in CASES))
    parser.add_argument("--show-sql", metavar="CASE", help="print the compiled and hand SQL of CASE and exit")
    args = parser.parse_args(argv)

    dataset = ensure_dataset(args.size, root=args.data)
    con = duckdb.connect(":memory:")
    con.execute("SET parquet_metadata_cache = true")
    con.execute("SET enable_progress_bar = false")
    create_lake_views(con, dataset)
    schema = LakeSchema(
        EventsRelation(exp.to_table("events"), properties={
            name: TypedColumn(column, kind) for name, (column, kind) in dataset.snapshot.properties.items()}),
        ProfilesRelation(exp.to_table("profiles"), traits={
            name: TypedColumn(column, kind) for name, (column, kind) in dataset.profiles.traits.items()}))
    context = SqlContext(dataset, "duckdb")
    wanted = set(args.cases.split(",")) if args.cases else None
    cases = [c for c in CASES if wanted is None or c.name in wanted]

    def compiled(case: Case) -> str:
        query = compile_segment(case.definition, schema, tenant_id=dataset.tenant_id, as_of=dataset.as_of,
                                resolve_segment=resolve_segment)
        return to_sql(query, "duckdb")

    if args.show_sql:
        case = next(c for c in CASES if c.name == args.show_sql)
        print(f"-- compiled\n{compiled(case)}\n-- hand\n{case.hand(context)}")
        return 0

    print(f"{dataset.events:,} events, {dataset.users:,} users; {args.runs} runs each, alternating")
    print(f"{'case':<18}{'members':>9}{'comp s':>9}{'hand s':>9}{'ratio':>7}{'comp cpu':>10}{'hand cpu':>10}{'ratio':>7}")
    for case in cases:
        sqls = {"compiled": compiled(case), "hand": case.hand(context)}
        members = {way: set(con.execute(sql).fetchall()) for way, sql in sqls.items()}  # also the warm-up
        if members["compiled"] != members["hand"]:
            raise SystemExit(f"{case.name}: compiled {len(members['compiled'])} members, hand {len(members['hand'])}")
        counted = {way: f"SELECT count(*) FROM ({sql}) AS members" for way, sql in sqls.items()}
        walls: dict[str, list[float]] = {"compiled": [], "hand": []}
        cpus: dict[str, list[float]] = {"compiled": [], "hand": []}
        for run in range(args.runs):
            for way in (("compiled", "hand") if run % 2 == 0 else ("hand", "compiled")):
                wall, cpu = _timed(con, counted[way])
                walls[way].append(wall)
                cpus[way].append(cpu)
        wall = {way: statistics.median(values) for way, values in walls.items()}
        cpu = {way: statistics.median(values) for way, values in cpus.items()}
        print(f"{case.name:<18}{len(members['hand']):>9,}{wall['compiled']:>9.3f}{wall['hand']:>9.3f}"
              f"{wall['compiled'] / wall['hand']:>7.2f}{cpu['compiled']:>10.3f}{cpu['hand']:>10.3f}"
              f"{cpu['compiled'] / cpu['hand']:>7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
