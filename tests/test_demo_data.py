"""The demo dataset: deterministic, sized as asked, and shaped like a shop's traffic."""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from cli import demo
from tests.ingest_fixtures import lake_rows

pytest_plugins = ["tests.api_fixtures"]

USERS, EVENTS, SEED = 500, 40_000, 11
END = datetime(2026, 3, 14)


@pytest.fixture(scope="module")
def events() -> pl.DataFrame:
    return pl.from_arrow(pa.concat_tables(demo.event_batches(USERS, EVENTS, SEED, batch_rows=7_000, end=END)))


def test_same_arguments_give_identical_rows_whatever_the_batch_size(events):
    again = pa.concat_tables(demo.event_batches(USERS, EVENTS, SEED, batch_rows=40_000, end=END))
    assert pl.from_arrow(again).equals(events)
    sizes = [t.num_rows for t in demo.event_batches(USERS, EVENTS, SEED, batch_rows=7_000, end=END)]
    assert sizes == [7_000] * 5 + [5_000]
    assert demo.profile_table(USERS, SEED, END).equals(demo.profile_table(USERS, SEED, END))
    other = pl.from_arrow(pa.concat_tables(demo.event_batches(USERS, EVENTS, SEED + 1, end=END)))
    assert not other.equals(events)
    later = pl.from_arrow(pa.concat_tables(demo.event_batches(USERS, EVENTS, SEED, end=END + timedelta(days=30))))
    assert later["event_id"].equals(events["event_id"])
    assert later["occurred_at"].min() >= END + timedelta(days=30 - demo.SPAN_DAYS)


def test_the_data_ends_today_unless_told(events):
    today = datetime.now(timezone.utc).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    default = pl.from_arrow(pa.concat_tables(demo.event_batches(USERS, 5_000, SEED)))
    assert today - timedelta(days=2) < default["occurred_at"].max() <= today + timedelta(days=1)
    assert demo.end_time() in (today, today + timedelta(days=1))  # (the test may cross midnight)


def test_sizes_ids_and_time_span(events):
    assert events.height == EVENTS
    assert events["event_id"].n_unique() == EVENTS
    users = set(events["user_id"].unique())
    assert users <= {f"user-{i}" for i in range(USERS)}
    end = END
    assert events["occurred_at"].min() >= end - timedelta(days=demo.SPAN_DAYS)
    assert events["occurred_at"].max() <= end + timedelta(days=1)  # a late session may cross midnight
    assert (events["received_at"] >= events["occurred_at"]).all()
    assert set(events["event_type"].unique()) == set(demo.EVENT_TYPES)


def test_orders_carry_totals_and_follow_a_cart(events):
    orders = events.filter(pl.col("event_type") == "order_placed")
    assert orders.height > 0.01 * EVENTS
    for text in orders["properties"].to_list():
        props = orjson.loads(text)
        assert isinstance(props["total"], float) and props["total"] > 0
        assert isinstance(props["items"], int) and props["items"] >= 1
        assert props["currency"] in {"USD", "GBP", "EUR", "CAD", "AUD", "INR", "BRL", "JPY", "MXN"}
    carts = events.filter(pl.col("event_type") == "added_to_cart").select("user_id", cart_at="occurred_at")
    preceded = (orders.join(carts, on="user_id").filter(pl.col("cart_at") <= pl.col("occurred_at"))
                ["event_id"].n_unique())
    assert preceded >= 0.95 * orders.height
    funnel = Counter(events["event_type"].to_list())
    assert funnel["page_viewed"] > funnel["product_viewed"] > funnel["added_to_cart"] > funnel["order_placed"]


def test_activity_is_skewed_across_users(events):
    per_user = events.group_by("user_id").len().sort("len", descending=True)["len"].to_list()
    top_decile = sum(per_user[: max(1, USERS // 10)])
    assert top_decile > 0.4 * EVENTS  # uniform activity would give about 10 %


def test_profiles_have_the_documented_traits():
    profiles = demo.profile_table(USERS, SEED)
    assert profiles.num_rows == USERS
    traits = [orjson.loads(t) for t in profiles.column("traits").to_pylist()]
    assert all(set(t) == {"email", "first_name", "country", "timezone", "plan", "signup_date"} for t in traits)
    plans = Counter(t["plan"] for t in traits)
    assert set(plans) == {"free", "pro", "enterprise"} and plans["free"] > plans["pro"] > plans["enterprise"]
    assert len({t["email"] for t in traits}) == USERS


def test_generate_writes_through_the_lake_and_cli_skips_if_present(runtime, data_dir, tenant_a, monkeypatch):
    result = demo.generate(runtime, tenant_a.tenant_id, 50, 3_000, 5, batch_rows=1_000)
    assert result.events == 3_000
    rows = lake_rows(runtime, tenant_a.tenant_id)
    expected = pa.concat_tables(demo.event_batches(50, 3_000, 5, end=result.end))
    assert sorted(r["event_id"] for r in rows) == sorted(expected.column("event_id").to_pylist())
    assert runtime.lake.profiles_snapshot(tenant_a.tenant_id).rows == 50

    from cli.app import add_command_groups, app

    monkeypatch.setenv("SEGOPS_DATA_DIR", str(data_dir))
    add_command_groups()
    args = ["--data", str(data_dir), "demo-data", "--users", "50", "--events", "3000", "--seed", "5",
            "--tenant", str(tenant_a.tenant_id), "--if-missing"]
    skipped = CliRunner().invoke(app, args)
    assert skipped.exit_code == 0 and "skipping" in skipped.output
    assert len(lake_rows(runtime, tenant_a.tenant_id)) == 3_000


def _demo_data(data_dir, *args: str):
    from cli.app import add_command_groups, app

    add_command_groups()
    return CliRunner().invoke(app, ["--data", str(data_dir), "demo-data", "--users", "60", "--events", "4000",
                                    "--seed", "3", *args], env={"SEGOPS_DATA_DIR": str(data_dir)})


def test_demo_data_twice_writes_every_event_once(runtime, data_dir, tenant_a):
    """Every writer to the lake deduplicates: a second run (without --if-missing) adds nothing."""
    tenant = str(tenant_a.tenant_id)
    first = _demo_data(data_dir, "--tenant", tenant, "--batch-rows", "1500")
    assert first.exit_code == 0, first.output
    again = _demo_data(data_dir, "--tenant", tenant, "--batch-rows", "1500")
    assert again.exit_code == 0, again.output
    assert "wrote 0 events, 4,000 already there" in again.output
    ids = [row["event_id"] for row in lake_rows(runtime, tenant_a.tenant_id)]
    assert len(ids) == len(set(ids)) == 4_000


def test_same_seed_and_end_give_the_same_lake_rows(runtime, data_dir, tenant_a, tenant_b):
    for tenant in (tenant_a, tenant_b):
        r = _demo_data(data_dir, "--tenant", str(tenant.tenant_id), "--end", "2026-02-01")
        assert r.exit_code == 0, r.output
        assert "ending 2026-02-01" in r.output

    def rows(tenant):
        return [{k: v for k, v in row.items() if k != "tenant_id"} for row in lake_rows(runtime, tenant.tenant_id)]

    a = rows(tenant_a)
    assert len(a) == 4_000 and a == rows(tenant_b)
    assert max(row["occurred_at"] for row in a) <= datetime(2026, 2, 2)
    assert min(row["occurred_at"] for row in a) >= datetime(2026, 2, 1) - timedelta(days=demo.SPAN_DAYS)
    bad = _demo_data(data_dir, "--tenant", str(tenant_a.tenant_id), "--end", "yesterday")
    assert bad.exit_code == 2 and "--end" in bad.output
