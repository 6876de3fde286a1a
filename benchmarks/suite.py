"""The fixed benchmark suite: segment definitions and their hand-written SQL equivalents.

Each ``SuiteSegment`` holds the definition segops compiles and the SQL an expert would
write by hand for the same question (one pass over the events, typed property columns,
a date predicate on the ``event_date`` partition column so whole days are skipped). The
same SQL text runs on DuckDB (over the lake's Parquet files) and PostgreSQL (over the
loaded tables) unless a segment carries a PostgreSQL-specific version. The Polars and
pandas equivalents live in ``benchmarks/engines/polars_lazy.py`` and ``pandas_frames.py``.

All segments are evaluated for tenant ``TENANT_ID`` at the dataset's ``as_of`` and follow
the semantics in ``compiler.model`` (windows ``as_of - N days < occurred_at <= as_of``,
recency boundaries, the universe for negations).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from benchmarks.datasets import Dataset


@dataclass(frozen=True)
class SqlContext:
    """What a hand-written SQL text needs: relation names, literals, physical columns."""

    dataset: Dataset
    dialect: str  # "duckdb" | "postgres"
    events: str = "events"
    profiles: str = "profiles"

    @property
    def tenant(self) -> str:
        return str(self.dataset.tenant_id)

    @property
    def as_of(self) -> str:
        return _timestamp(self.dataset.as_of)

    @property
    def as_of_date(self) -> str:
        return f"DATE '{self.dataset.as_of.date().isoformat()}'"

    def ago(self, days: int) -> str:
        """Timestamp literal ``as_of - days``."""
        return _timestamp(self.dataset.days_before(days))

    def day_ago(self, days: int) -> str:
        """Date literal of ``as_of - days``: the first partition a window needs."""
        return f"DATE '{self.dataset.days_before(days).date().isoformat()}'"

    def p(self, name: str) -> str:
        """Quoted typed column of event property ``name``."""
        return f'"{self.dataset.property_column(name)}"'

    def t(self, name: str) -> str:
        """Quoted typed column of trait ``name``."""
        return f'"{self.dataset.trait_column(name)}"'


def _timestamp(moment: datetime) -> str:
    return f"TIMESTAMP '{moment.isoformat(sep=' ')}'"


@dataclass(frozen=True)
class SuiteSegment:
    name: str
    segment_id: int
    covers: str  # the condition types it exercises
    definition: dict
    sql: Callable[[SqlContext], str]
    sql_postgres: Callable[[SqlContext], str] | None = None

    def hand_sql(self, ctx: SqlContext) -> str:
        if ctx.dialect == "postgres" and self.sql_postgres is not None:
            return self.sql_postgres(ctx)
        return self.sql(ctx)


# -- definitions and hand-written SQL --------------------------------------------------------
def _events_upto(q: SqlContext, days: int | None = None, *, inclusive_start: bool = False) -> str:
    """WHERE clause of a tenant's events up to as_of, optionally within the last ``days``."""
    clauses = [f"tenant_id = {q.tenant}", f"occurred_at <= {q.as_of}"]
    if days is None:
        clauses.append(f"event_date <= {q.as_of_date}")
    else:
        clauses.append(f"occurred_at {'>=' if inclusive_start else '>'} {q.ago(days)}")
        clauses.append(f"event_date BETWEEN {q.day_ago(days)} AND {q.as_of_date}")
    return " AND ".join(clauses)


SEED = {
    "logic": "AND",
    "conditions": [
        {"type": "monetary", "event_type": "order_placed", "property": "total", "metric": "sum",
         "operator": "gte", "value": 500},
        {"type": "recency", "event_type": "page_viewed", "operator": "gt", "window_days": 30},
    ],
}


def _seed_sql(q: SqlContext) -> str:
    return f"""
SELECT user_id FROM {q.events}
WHERE {_events_upto(q)} AND event_type IN ('order_placed', 'page_viewed')
GROUP BY user_id
HAVING coalesce(sum({q.p('total')}) FILTER (WHERE event_type = 'order_placed'), 0) >= 500
   AND count(*) FILTER (WHERE event_type = 'page_viewed' AND occurred_at >= {q.ago(30)}) = 0"""


def _frequency_sql(q: SqlContext) -> str:
    return f"""
SELECT user_id FROM {q.events}
WHERE {_events_upto(q, 30)} AND event_type = 'product_viewed'
GROUP BY user_id HAVING count(*) >= 5"""


def _sum_sql(q: SqlContext) -> str:
    return f"""
SELECT user_id FROM {q.events}
WHERE {_events_upto(q, 90)} AND event_type = 'order_placed'
GROUP BY user_id HAVING sum({q.p('total')}) >= 1000"""


def _avg_sql(q: SqlContext) -> str:
    return f"""
SELECT user_id FROM {q.events}
WHERE {_events_upto(q)} AND event_type = 'order_placed'
GROUP BY user_id HAVING avg({q.p('total')}) >= 150"""


def _recency_sql(q: SqlContext) -> str:
    return f"""
SELECT DISTINCT user_id FROM {q.events}
WHERE {_events_upto(q, 7)} AND event_type = 'email_opened'"""


def _first_seen_sql(q: SqlContext) -> str:
    return f"""
SELECT user_id FROM {q.events}
WHERE {_events_upto(q)}
GROUP BY user_id HAVING min(occurred_at) > {q.ago(30)}"""


def _traits_sql(q: SqlContext) -> str:
    return f"""
SELECT user_id FROM {q.profiles}
WHERE tenant_id = {q.tenant} AND {q.t('country')} IN ('US', 'CA', 'GB') AND {q.t('plan')} = 'pro'"""


def _sequence_sql(q: SqlContext) -> str:
    """ASOF joins: each cart takes the latest earlier view; each order the latest earlier cart
    (whose chain start is the latest possible, since chain starts only grow with time)."""
    return f"""
WITH steps AS (
  SELECT user_id, event_type, occurred_at FROM {q.events}
  WHERE {_events_upto(q)} AND event_type IN ('product_viewed', 'added_to_cart', 'order_placed')
), views AS (SELECT user_id, occurred_at FROM steps WHERE event_type = 'product_viewed'),
carts AS (
  SELECT c.user_id, c.occurred_at, v.occurred_at AS chain_start
  FROM (SELECT user_id, occurred_at FROM steps WHERE event_type = 'added_to_cart') c
  ASOF JOIN views v ON c.user_id = v.user_id AND c.occurred_at > v.occurred_at
)
SELECT DISTINCT o.user_id
FROM (SELECT user_id, occurred_at FROM steps WHERE event_type = 'order_placed') o
ASOF JOIN carts c ON o.user_id = c.user_id AND o.occurred_at > c.occurred_at
WHERE o.occurred_at <= c.chain_start + INTERVAL '7 days'"""


def _sequence_sql_postgres(q: SqlContext) -> str:
    """No ASOF JOIN in PostgreSQL: running maxima over each user's time-ordered rows.

    Per (user, time) row: the latest view strictly before it, then for order rows the
    latest such chain start among strictly earlier cart rows."""
    return f"""
WITH steps AS (
  SELECT user_id, occurred_at,
         bool_or(event_type = 'product_viewed') AS viewed,
         bool_or(event_type = 'added_to_cart') AS carted,
         bool_or(event_type = 'order_placed') AS ordered
  FROM {q.events}
  WHERE {_events_upto(q)} AND event_type IN ('product_viewed', 'added_to_cart', 'order_placed')
  GROUP BY user_id, occurred_at
), carts AS (
  SELECT user_id, occurred_at, carted, ordered,
         max(CASE WHEN viewed THEN occurred_at END) OVER (
           PARTITION BY user_id ORDER BY occurred_at ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
         ) AS view_before
  FROM steps
), orders AS (
  SELECT user_id, occurred_at, ordered,
         max(CASE WHEN carted THEN view_before END) OVER (
           PARTITION BY user_id ORDER BY occurred_at ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
         ) AS chain_start
  FROM carts WHERE carted OR ordered
)
SELECT DISTINCT user_id FROM orders
WHERE ordered AND occurred_at <= chain_start + INTERVAL '7 days'"""


def _nested_sql(q: SqlContext) -> str:
    """The universe (anyone with events up to as_of, or a profile) minus email openers of the
    last 30 days, plus free-plan users without an order in the last 60 days."""
    return f"""
WITH activity AS (
  SELECT user_id,
         count(*) FILTER (WHERE event_type = 'email_opened' AND occurred_at > {q.ago(30)}) AS opened,
         count(*) FILTER (WHERE event_type = 'order_placed' AND occurred_at >= {q.ago(60)}) AS ordered
  FROM {q.events} WHERE {_events_upto(q)}
  GROUP BY user_id
), profile AS (
  SELECT user_id, {q.t('plan')} AS plan FROM {q.profiles} WHERE tenant_id = {q.tenant}
)
SELECT coalesce(a.user_id, p.user_id) AS user_id
FROM activity a FULL OUTER JOIN profile p ON a.user_id = p.user_id
WHERE coalesce(a.opened, 0) = 0 OR (p.plan = 'free' AND coalesce(a.ordered, 0) = 0)"""


def _reference_sql(q: SqlContext) -> str:
    """Recent buyers (>= 1 order in 30 days) who are not big spenders (sum of 90 days >= 1000)."""
    return f"""
SELECT user_id FROM {q.events}
WHERE {_events_upto(q, 90)} AND event_type = 'order_placed'
GROUP BY user_id
HAVING count(*) FILTER (WHERE occurred_at > {q.ago(30)}) >= 1
   AND coalesce(sum({q.p('total')}), 0) < 1000"""


def _where_sql(q: SqlContext) -> str:
    return f"""
SELECT user_id FROM {q.events}
WHERE {_events_upto(q, 60)} AND event_type = 'order_placed' AND {q.p('currency')} = 'EUR'
GROUP BY user_id HAVING count(*) >= 2"""


def _between_sql(q: SqlContext) -> str:
    return f"""
SELECT user_id FROM {q.events}
WHERE {_events_upto(q, 14)} AND event_type = 'email_clicked'
GROUP BY user_id HAVING count(*) BETWEEN 2 AND 5"""


SUITE: list[SuiteSegment] = [
    SuiteSegment("high_value_churners", 1, "monetary sum (all history) + recency gt", SEED, _seed_sql),
    SuiteSegment(
        "frequent_viewers_30d", 2, "frequency in a window",
        {"type": "frequency", "event_type": "product_viewed", "operator": "gte", "value": 5, "window_days": 30},
        _frequency_sql),
    SuiteSegment(
        "big_spenders_90d", 3, "monetary sum in a window",
        {"type": "monetary", "event_type": "order_placed", "property": "total", "metric": "sum",
         "operator": "gte", "value": 1000, "window_days": 90},
        _sum_sql),
    SuiteSegment(
        "high_average_order", 4, "monetary avg (all history)",
        {"type": "monetary", "event_type": "order_placed", "property": "total", "metric": "avg",
         "operator": "gte", "value": 150},
        _avg_sql),
    SuiteSegment(
        "recent_openers_7d", 5, "recency lt",
        {"type": "recency", "event_type": "email_opened", "operator": "lt", "window_days": 7},
        _recency_sql),
    SuiteSegment(
        "new_users_30d", 6, "first_seen",
        {"type": "first_seen", "operator": "lt", "window_days": 30},
        _first_seen_sql),
    SuiteSegment(
        "pro_in_core_markets", 7, "traits (country in + plan eq)",
        {"logic": "AND", "conditions": [
            {"type": "trait", "trait": "country", "operator": "in", "value": ["US", "CA", "GB"]},
            {"type": "trait", "trait": "plan", "operator": "eq", "value": "pro"},
        ]},
        _traits_sql),
    SuiteSegment(
        "view_cart_order_7d", 8, "3-step sequence within 7 days",
        {"type": "sequence", "within_days": 7, "steps": [
            {"event_type": "product_viewed"}, {"event_type": "added_to_cart"}, {"event_type": "order_placed"},
        ]},
        _sequence_sql, _sequence_sql_postgres),
    SuiteSegment(
        "unengaged_or_lapsed_free", 9, "nested OR / NOT over the universe",
        {"logic": "OR", "conditions": [
            {"logic": "NOT", "conditions": [
                {"type": "frequency", "event_type": "email_opened", "operator": "gte", "value": 1,
                 "window_days": 30},
            ]},
            {"logic": "AND", "conditions": [
                {"type": "trait", "trait": "plan", "operator": "eq", "value": "free"},
                {"type": "recency", "event_type": "order_placed", "operator": "gt", "window_days": 60},
            ]},
        ]},
        _nested_sql),
    SuiteSegment(
        "recent_buyers_not_big_spenders", 10, "segment reference (not_in) + frequency",
        {"logic": "AND", "conditions": [
            {"type": "frequency", "event_type": "order_placed", "operator": "gte", "value": 1, "window_days": 30},
            {"type": "segment", "segment_id": 3, "operator": "not_in"},
        ]},
        _reference_sql),
    SuiteSegment(
        "repeat_eur_buyers_60d", 11, "frequency with a where filter",
        {"type": "frequency", "event_type": "order_placed", "operator": "gte", "value": 2, "window_days": 60,
         "where": [{"property": "currency", "operator": "eq", "value": "EUR"}]},
        _where_sql),
    SuiteSegment(
        "occasional_clickers_14d", 12, "frequency between",
        {"type": "frequency", "event_type": "email_clicked", "operator": "between", "value": [2, 5],
         "window_days": 14},
        _between_sql),
]

BY_NAME = {segment.name: segment for segment in SUITE}
BY_ID = {segment.segment_id: segment for segment in SUITE}


def resolve_segment(segment_id: int) -> dict:
    """Segment references inside the suite (raises KeyError like the compiler expects)."""
    return BY_ID[segment_id].definition


def store_suite(runtime, dataset) -> int:
    """Create the dataset's tenant and the suite's segments in ``runtime`` (the ids the suite's
    references expect); returns the tenant id."""
    from compiler import parse_definition
    from engine.segments.store import Author

    tenant_id = runtime.accounts.create_tenant("bench", plan="enterprise")
    if tenant_id != dataset.tenant_id:
        raise RuntimeError(f"expected tenant id {dataset.tenant_id}, got {tenant_id}")
    for segment in sorted(SUITE, key=lambda s: s.segment_id):
        created = runtime.segments.create(tenant_id, name=segment.name, segment_type="rule",
                                          description=segment.covers, definition=parse_definition(segment.definition),
                                          author=Author(user_id=None, api_key_id=None))
        if created["id"] != segment.segment_id:
            raise RuntimeError(f"{segment.name}: expected id {segment.segment_id}, got {created['id']}")
    return tenant_id
