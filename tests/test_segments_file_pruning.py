"""Which files a segment query reads (backends.duckdb): only the days its windows reach,
with ``union_by_name`` only when those files differ in columns, and always the right rows.

The lake here has files of two schemas (a property that appears only in recent events)
and both appended and compacted files (compacted ones carry the hive columns too).
Expected members are worked out by hand from the rows below.

    user   order_placed (days before as_of: total)   page_viewed (days before: coupon)
    ann    90: 100, 2: 50                               1: "SPRING"
    ben    60: 700                                      3: none
    cy     -                                           4: "SPRING", 20: none
    dot    40: 30                                       -
"""
from __future__ import annotations

from sqlglot import exp

from engine.segments import query as segment_query
from tests.segments_fixtures import AS_OF, DAY, append_events

pytest_plugins = ["tests.api_fixtures", "tests.segments_fixtures"]

OLD = [  # before the coupon property existed
    ("ann", "order_placed", 90 * DAY, {"total": 100}),
    ("ben", "order_placed", 60 * DAY, {"total": 700}),
    ("dot", "order_placed", 40 * DAY, {"total": 30}),
    ("cy", "page_viewed", 20 * DAY, {}),
]
RECENT = [
    ("ann", "order_placed", 2 * DAY, {"total": 50}),
    ("ann", "page_viewed", 1 * DAY, {"coupon": "SPRING"}),
    ("ben", "page_viewed", 3 * DAY, {}),
    ("cy", "page_viewed", 4 * DAY, {"coupon": "SPRING"}),
]
SPRING_VIEWS_7D = {"type": "frequency", "event_type": "page_viewed", "operator": "gte", "value": 1,
                   "window_days": 7, "where": [{"property": "coupon", "operator": "eq", "value": "SPRING"}]}
SPENT_200 = {"type": "monetary", "event_type": "order_placed", "property": "total", "metric": "sum",
             "operator": "gte", "value": 200}
VIEWED_30D = {"type": "frequency", "event_type": "page_viewed", "operator": "gte", "value": 1, "window_days": 30}


def _lake(runtime, tenant_id: int) -> None:
    append_events(runtime, tenant_id, OLD)
    runtime.lake.compact(tenant_id)  # the old days: sorted files with physical hive columns
    append_events(runtime, tenant_id, RECENT)


def _members(runtime, tenant_id: int, definition) -> set[str]:
    compiled = runtime.queries.compile(tenant_id, definition, as_of=AS_OF)
    return set(runtime.queries.member_table(compiled).column("user_id").to_pylist())


def test_windowed_and_full_history_segments_over_mixed_files(runtime, tenant_a):
    tenant = tenant_a.tenant_id
    _lake(runtime, tenant)
    assert _members(runtime, tenant, SPRING_VIEWS_7D) == {"ann", "cy"}
    assert _members(runtime, tenant, SPENT_200) == {"ben"}  # all history, both schemas
    assert _members(runtime, tenant, VIEWED_30D) == {"ann", "ben", "cy"}  # spans old and new files
    both = {"logic": "AND", "conditions": [SPRING_VIEWS_7D, {"logic": "NOT", "conditions": [SPENT_200]}]}
    assert _members(runtime, tenant, both) == {"ann", "cy"}
    assert runtime.queries.preview(tenant, SPENT_200, as_of=AS_OF).matched_users == 1


def test_a_windowed_query_names_only_the_files_of_its_days(runtime, tenant_a):
    tenant = tenant_a.tenant_id
    _lake(runtime, tenant)
    compiled = runtime.queries.compile(tenant, SPRING_VIEWS_7D, as_of=AS_OF)
    first, last = compiled.query.meta[segment_query.EVENT_DATES]
    assert (first, last) == ((AS_OF - 7 * DAY).date(), AS_OF.date())
    relation = runtime.backends.interactive.relations(compiled.lake, (first, last)).events
    read = relation.find(exp.ReadParquet)
    named = [literal.this for literal in read.expressions[0].expressions]
    recent_days = {(AS_OF - before).date().isoformat() for _, _, before, _ in RECENT}
    assert len(named) == len(recent_days) and all(f"event_date={day}" in " ".join(named) for day in recent_days)
    # The recent files share one schema, so DuckDB is not asked to reconcile them by name.
    assert "union_by_name = FALSE" in relation.sql(dialect="duckdb").replace("false", "FALSE")


def test_a_window_without_files_reads_nothing(runtime, tenant_a):
    tenant = tenant_a.tenant_id
    _lake(runtime, tenant)
    as_of = AS_OF - 8 * DAY  # its 7 days hold no event: the recent ones come later, the old ones earlier
    compiled = runtime.queries.compile(tenant, VIEWED_30D | {"window_days": 7}, as_of=as_of)
    assert runtime.queries.member_table(compiled).num_rows == 0
    compiled = runtime.queries.compile(tenant, VIEWED_30D, as_of=as_of)
    assert set(runtime.queries.member_table(compiled).column("user_id").to_pylist()) == {"cy"}  # day 20


def test_a_window_over_days_older_than_a_property_reads_it_as_null(runtime, tenant_a):
    """Design 13, 1.1: the pruned days' files all lack ``coupon`` (the catalog gained it later),
    so the scan must still have the column, NULL (it used to be a binder error)."""
    tenant = tenant_a.tenant_id
    _lake(runtime, tenant)
    as_of = AS_OF - 15 * DAY  # 7 days back reach only cy's view of day 20, before coupons existed
    compiled = runtime.queries.compile(tenant, SPRING_VIEWS_7D, as_of=as_of)
    assert runtime.queries.member_table(compiled).num_rows == 0
    no_coupon = {"type": "frequency", "event_type": "page_viewed", "operator": "gte", "value": 1, "window_days": 7,
                 "where": [{"property": "coupon", "operator": "is_not_set"}]}
    assert runtime.queries.preview(tenant, no_coupon, as_of=as_of).sample_user_ids == ["cy"]
