"""What every query backend must do, on a real lake written through ``EventLake``.

Expected values are worked out in Python from the rows the test writes (brute force), never
from a backend's answer.
"""
from __future__ import annotations

import json
import random
from datetime import date, datetime, timedelta

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from sqlglot import exp

from backends import relations
from backends.base import SourceMissing
from backends.registry import Backends
from backends.relations import EVENTS_TABLE, PROFILES_TABLE, bind, placeholder

pytest_plugins = ["tests.backend_fixtures"]

T = 3
DAY0 = datetime(2025, 5, 1)


def _events(rows: list[dict]) -> pa.Table:
    return pa.table({
        "event_id": [r["event_id"] for r in rows], "tenant_id": pa.array([T] * len(rows), pa.int64()),
        "user_id": [r["user_id"] for r in rows], "event_type": [r["event_type"] for r in rows],
        "occurred_at": pa.array([r["occurred_at"] for r in rows], pa.timestamp("us")),
        "received_at": pa.array([r["occurred_at"] + timedelta(seconds=1) for r in rows], pa.timestamp("us")),
        "properties": [json.dumps(r["properties"]) for r in rows],
    })


def _random_rows(n: int, seed: int, days: int = 5, prefix: str = "e") -> list[dict]:
    rng = random.Random(seed)
    return [{"event_id": f"{prefix}{seed}-{i}", "user_id": f"u{rng.randrange(60):02d}",
             "event_type": rng.choice(["view", "purchase"]),
             "occurred_at": DAY0 + timedelta(seconds=rng.randrange(days * 86400)),
             "properties": {"amount": rng.randrange(1, 100)}} for i in range(n)]


def _users_where(query_filter: exp.Expression | None = None) -> exp.Select:
    select = exp.select(exp.column("user_id")).from_(placeholder(EVENTS_TABLE)).distinct()
    return select.where(query_filter) if query_filter is not None else select


def _bound(world, query: exp.Select, event_dates=None) -> exp.Select:
    return bind(query, world.backend.relations(world.tenant_lake(T), event_dates))


def _column(world, name: str) -> str:
    return world.lake.snapshot(T).properties[name][0]


def test_count_sample_and_members_agree_with_brute_force(backend_world):
    rows = _random_rows(400, 1) + _random_rows(300, 2, prefix="f")
    world = backend_world
    world.lake.append_events(T, _events(rows[:400]))
    world.lake.append_events(T, _events(rows[400:]))
    amount = _column(world, "amount")
    condition = exp.and_(exp.column("event_type").eq(exp.Literal.string("purchase")),
                         exp.GT(this=exp.column(amount), expression=exp.Literal.number(60)))
    expected = sorted({r["user_id"] for r in rows if r["event_type"] == "purchase" and r["properties"]["amount"] > 60})
    assert 5 < len(expected) < 60
    query = _bound(world, _users_where(condition))
    assert world.backend.count_and_sample(query, 5) == (len(expected), expected[:5])
    assert world.backend.count_and_sample(query, 0) == (len(expected), [])
    members = world.backend.members_arrow(query)
    assert members.schema == pa.schema([pa.field("user_id", pa.string())])
    assert members.column("user_id").to_pylist() == expected  # sorted and unique
    none = _bound(world, _users_where(exp.column("event_type").eq(exp.Literal.string("nothing"))))
    assert world.backend.count_and_sample(none, 5) == (0, [])
    assert world.backend.members_arrow(none).num_rows == 0


def test_an_empty_lake_has_typed_empty_relations(backend_world):
    world = backend_world
    assert world.backend.count_and_sample(_bound(world, _users_where()), 3) == (0, [])
    profiles = bind(exp.select(exp.column("user_id")).from_(placeholder(PROFILES_TABLE)),
                    world.backend.relations(world.tenant_lake(T)))
    assert world.backend.fetch_arrow(profiles).num_rows == 0


def test_stray_and_uncommitted_files_in_a_partition_dir_are_never_read(backend_world):
    world = backend_world
    rows = _random_rows(50, 3, days=2)
    world.lake.append_events(T, _events(rows))
    entry = world.lake.snapshot(T).entries[0]
    directory = entry.key.rsplit("/", 1)[0]
    ghost = _events([{"event_id": "g1", "user_id": "ghost", "event_type": "view", "occurred_at": DAY0,
                      "properties": {"amount": 1}}]).drop(["tenant_id"])
    scratch = world.lake.store.new_scratch_path(".parquet")
    pq.write_table(ghost, scratch)
    world.lake.store.put_file(f"{directory}/stray.parquet", scratch)  # a file nobody committed
    world.lake.store.put_file(f"{directory}/{entry.key.rsplit('/', 1)[1].replace('.parquet', '-x.parquet')}",
                              scratch, move=True)  # named like the lake's files, never in a manifest
    expected = sorted({r["user_id"] for r in rows})
    full = world.backend.members_arrow(_bound(world, _users_where()))
    pruned = world.backend.members_arrow(_bound(world, _users_where(), (entry.day, entry.day)))
    assert full.column("user_id").to_pylist() == expected
    assert "ghost" not in pruned.column("user_id").to_pylist()
    assert pruned.num_rows == len({r["user_id"] for r in rows if r["occurred_at"].date() == entry.day})


def test_mixed_file_schemas_read_missing_columns_as_null(backend_world):
    world = backend_world
    old = [{"event_id": f"o{i}", "user_id": f"old{i}", "event_type": "view", "occurred_at": DAY0 + timedelta(hours=i),
            "properties": {"amount": i}} for i in range(3)]
    new = [{"event_id": f"n{i}", "user_id": f"new{i}", "event_type": "view",
            "occurred_at": DAY0 + timedelta(days=3, hours=i), "properties": {"coupon": f"c{i}", "amount": 10 + i}}
           for i in range(2)]
    same_day = [{"event_id": "s0", "user_id": "same", "event_type": "view", "occurred_at": DAY0 + timedelta(hours=5),
                 "properties": {"coupon": "s"}}]
    for batch in (old, new, same_day):
        world.lake.append_events(T, _events(batch))
    coupon, amount = _column(world, "coupon"), _column(world, "amount")

    def read(event_dates=None) -> dict[str, tuple]:
        query = exp.select(*map(exp.column, ("user_id", coupon, amount, "tenant_id", "event_date"))).from_(
            placeholder(EVENTS_TABLE))
        table = world.backend.fetch_arrow(_bound(world, query, event_dates))
        return {r["user_id"]: (r[coupon], r[amount], r["tenant_id"], r["event_date"]) for r in table.to_pylist()}

    day0, day3 = DAY0.date(), (DAY0 + timedelta(days=3)).date()
    everything = {**{f"old{i}": (None, float(i), T, day0) for i in range(3)},
                  **{f"new{i}": (f"c{i}", 10.0 + i, T, day3) for i in range(2)}, "same": ("s", None, T, day0)}
    assert read() == everything
    # Design 13, 1.1: the pruned day's files mixed, and a day whose only file lacks a later column.
    assert read((day0, day0)) == {k: v for k, v in everything.items() if v[3] == day0}
    world.lake.append_events(T, _events([{"event_id": "z", "user_id": "late", "event_type": "view",
                                          "occurred_at": DAY0 + timedelta(days=4), "properties": {"plan": "pro"}}]))
    day4 = (DAY0 + timedelta(days=4)).date()
    assert read((day4, day4)) == {"late": (None, None, T, day4)}
    assert read((date(2020, 1, 1), date(2020, 1, 2))) == {}  # no file at all: the empty relation


@pytest.mark.parametrize("by_user_id", [None, True], ids=["backend's form", "by user_id"])
def test_profiles_delta_replaces_changed_users_and_adds_new_ones(backend_world, by_user_id):
    world = backend_world
    lake = world.lake
    t0 = datetime(2025, 1, 1)
    lake.upsert_profiles(T, [{"user_id": f"u{i}", "traits": {"plan": "free"}, "updated_at": t0} for i in range(20)])
    lake.upsert_profiles(T, [{"user_id": u, "traits": {"plan": "pro", "age": 40}, "updated_at": t0 + timedelta(hours=1)}
                             for u in ("u3", "u7", "new1")])
    lake.upsert_profiles(T, [{"user_id": "new2", "traits": {"city": "Oslo"}, "updated_at": t0 + timedelta(hours=2)}])
    snapshot = lake.profiles_snapshot(T)
    assert snapshot.delta_key is not None and snapshot.base_key is not None  # the layout under test
    plan, age, city = (snapshot.traits[name][0] for name in ("plan", "age", "city"))
    relation = relations.profiles(world.backend.scans, snapshot, by_user_id=by_user_id)
    table = world.backend.fetch_arrow(exp.select(*map(exp.column, ("user_id", plan, age, city, "tenant_id"))).from_(
        relations.aliased(relation, "p")))
    got = sorted((r["user_id"], r[plan], r[age], r[city], r["tenant_id"]) for r in table.to_pylist())
    expected = sorted([(f"u{i}", "free", None, None, T) for i in range(20) if i not in (3, 7)]
                      + [("u3", "pro", 40.0, None, T), ("u7", "pro", 40.0, None, T), ("new1", "pro", 40.0, None, T),
                         ("new2", None, None, "Oslo", T)])
    assert got == expected


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_write_file_is_complete_or_absent(backend_world, fmt):
    world = backend_world
    rows = _random_rows(120, 4)
    world.lake.append_events(T, _events(rows))
    store = world.lake.store
    expected = sorted({r["user_id"] for r in rows})
    members = exp.select(exp.column("user_id"), exp.alias_(relations.iso_text(exp.column("occurred_at")), "at")).from_(
        placeholder(EVENTS_TABLE)).where(exp.column("event_id").eq(exp.Literal.string(rows[0]["event_id"])))
    query = _bound(world, _users_where())
    written = world.backend.write_file(query, f"out/members.{fmt}", fmt, order_by=("user_id",))
    assert (written.key, written.rows, written.bytes) == (f"out/members.{fmt}", len(expected), store.size(written.key))
    data = store.get_bytes(written.key)
    if fmt == "parquet":
        got = pq.read_table(pa.BufferReader(data)).column("user_id").to_pylist()
    elif fmt == "csv":
        got = pacsv.read_csv(pa.BufferReader(data)).column("user_id").to_pylist()
    else:
        got = [json.loads(line)["user_id"] for line in data.decode().splitlines()]
    assert got == expected
    # ISO 8601 with Z in every dialect.
    at = world.backend.fetch_arrow(_bound(world, members)).column("at").to_pylist()
    assert at == [rows[0]["occurred_at"].strftime("%Y-%m-%dT%H:%M:%SZ")]

    failing = _bound(world, exp.select(exp.alias_(exp.cast(exp.column("event_id"), "INT"), "user_id")).from_(
        placeholder(EVENTS_TABLE)))
    with pytest.raises(Exception):  # noqa: B017 - whatever the engine raises for a bad cast
        world.backend.write_file(failing, f"out/failed.{fmt}", fmt)
    assert not store.exists(f"out/failed.{fmt}")
    assert store.list("out/") == [f"out/members.{fmt}"]
    assert not [p for p in store.scratch_dir().iterdir() if p.is_file()]  # no partial file left behind


def test_members_file_as_a_relation(backend_world):
    world = backend_world
    store = world.lake.store
    at = datetime(2025, 2, 3, 4, 5, 6)
    table = pa.table({"user_id": ["a", "b", "c"], "computed_at": pa.array([at] * 3, pa.timestamp("us"))})
    path = store.new_scratch_path(".parquet")
    pq.write_table(table, path)
    key = "segments/tenant_id=3/segment_id=1/computation=1/members.parquet"
    store.put_file(key, path, move=True)
    user_id = exp.column("user_id", table="m")
    query = (exp.select(user_id, exp.alias_(relations.iso_text(exp.column("computed_at", table="m")), "at"))
             .from_(relations.aliased(world.backend.members(key), "m"))
             .where(exp.GT(this=user_id.copy(), expression=exp.Literal.string("a"))).order_by(user_id.copy()))
    assert world.backend.fetch_arrow(query).to_pylist() == [{"user_id": "b", "at": "2025-02-03T04:05:06Z"},
                                                            {"user_id": "c", "at": "2025-02-03T04:05:06Z"}]
    store.delete(key)
    with pytest.raises(SourceMissing):
        world.backend.fetch_arrow(query)


def test_registry_names_its_backends(backend_world, backend_name):
    backends = backend_world.backends
    assert backends.get(backend_name) is backends.interactive is backends.batch is backend_world.backend
    assert backend_world.backend.name == backend_name
    with pytest.raises(ValueError, match="unknown query backend 'nope'"):
        backends.get("nope")
    with pytest.raises(ValueError, match="unknown query backend"):
        Backends(backend_world.settings, backend_world.lake, batch="nope")


def test_write_file_reports_rising_progress_ending_at_100(backend_world):
    world = backend_world
    world.lake.append_events(T, _events(_random_rows(200, 5)))
    seen: list[float] = []
    world.backend.write_file(_bound(world, _users_where()), "out/progress.csv", "csv", progress=seen.append)
    assert seen and seen[-1] == 100.0
    assert seen == sorted(seen) and all(0 <= value <= 100 for value in seen)
    failing = _bound(world, exp.select(exp.alias_(exp.cast(exp.column("event_id"), "INT"), "user_id")).from_(
        placeholder(EVENTS_TABLE)))
    seen.clear()
    with pytest.raises(Exception):  # noqa: B017 - whatever the engine raises for a bad cast
        world.backend.write_file(failing, "out/failed.csv", "csv", progress=seen.append)
    assert 100.0 not in seen  # 100 means written
