"""EventLake on a local directory and on a real S3 (moto) server: the same tests on both."""
from __future__ import annotations

import json
import random
import threading
import time
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import duck
from tests.backend_fixtures import lake_view
from storage.lake import APPEND_ROW_GROUP_SIZE, EventLake
from storage.objectstore import LocalObjectStore

pytest_plugins = ["tests.storage_fixtures"]

T = 7
START = datetime(2024, 3, 1)


def make_events(n: int, *, tenant: int = T, days: int = 3, seed: int = 0, prefix: str = "e") -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        occurred = START + timedelta(seconds=rng.randrange(days * 86400), microseconds=rng.randrange(10**6))
        props = {"amount": rng.randrange(1, 500) / 4, "plan": rng.choice(["free", "pro", "team"]),
                 "vip": rng.random() < 0.3, "items": [1, 2], "note": None}
        if i % 5 == 0:
            props = {"amount": rng.randrange(1, 100)}
        rows.append({"event_id": f"{prefix}{seed}-{i}", "tenant_id": tenant, "user_id": f"u{rng.randrange(40)}",
                     "event_type": rng.choice(["view", "purchase"]), "occurred_at": occurred,
                     "received_at": occurred + timedelta(seconds=5), "properties": json.dumps(props)})
    return rows


def to_table(rows: list[dict]) -> pa.Table:
    return pa.table({
        "event_id": [r["event_id"] for r in rows], "tenant_id": pa.array([r["tenant_id"] for r in rows], pa.int64()),
        "user_id": [r["user_id"] for r in rows], "event_type": [r["event_type"] for r in rows],
        "occurred_at": pa.array([r["occurred_at"] for r in rows], pa.timestamp("us")),
        "received_at": pa.array([r["received_at"] for r in rows], pa.timestamp("us")),
        "properties": [r["properties"] for r in rows],
    })


def query(lake: EventLake, sql: str, tenant: int = T, snapshot=None) -> list[tuple]:
    """Run ``sql`` over ``events`` = the snapshot's files, read as a consumer would."""
    snapshot = snapshot or lake.snapshot(tenant)
    con = duck.connect(lake.store)
    if not snapshot.files:  # read_parquet([]) is an error; the helper gives an empty relation
        lake_view(con, lake.store, snapshot)
        return con.execute(sql).fetchall()
    return con.execute(
        "WITH events AS (SELECT * FROM read_parquet($files, hive_partitioning=true, union_by_name=true)) " + sql,
        {"files": list(snapshot.files)}).fetchall()


def totals(lake: EventLake, snapshot=None) -> tuple:
    return query(lake, "SELECT count(*), count(DISTINCT event_id), sum(p_amount), count(p_plan) FROM events",
                 snapshot=snapshot)[0]


def expected_totals(rows: list[dict]) -> tuple:
    props = [json.loads(r["properties"]) for r in rows]
    return (len(rows), len({r["event_id"] for r in rows}), sum(p["amount"] for p in props),
            sum(1 for p in props if "plan" in p))


def test_append_then_query_returns_exactly_the_events(lake):
    rows = make_events(300, seed=1)
    keys = lake.append_events(T, to_table(rows))
    assert len(keys) == 3 and all(k.startswith(f"events/tenant_id={T}/event_date=2024-03-0") for k in keys)
    snap = lake.snapshot(T)
    assert snap.rows == 300 and len(snap.files) == 3 and snap.seq == 1
    got = query(lake, "SELECT event_id, tenant_id, user_id, event_type, occurred_at, received_at, properties, "
                      "event_date, p_amount, p_plan, p_vip FROM events ORDER BY event_id")
    want = []
    for r in sorted(rows, key=lambda r: r["event_id"]):
        p = json.loads(r["properties"])
        want.append((r["event_id"], T, r["user_id"], r["event_type"], r["occurred_at"], r["received_at"],
                     r["properties"], r["occurred_at"].date(), float(p["amount"]), p.get("plan"), p.get("vip")))
    assert got == want
    assert snap.properties == {"amount": ("p_amount", "number"), "plan": ("p_plan", "string"),
                               "vip": ("p_vip", "boolean")}  # null and arrays stay JSON-only
    for entry in snap.entries:
        day_rows = [r for r in rows if r["occurred_at"].date() == entry.day]
        assert entry.rows == len(day_rows)
        assert entry.min_occurred_at == min(r["occurred_at"] for r in day_rows)
        assert entry.max_received_at == max(r["received_at"] for r in day_rows)


def test_append_row_group_limit_follows_the_largest_day_but_never_shrinks_a_big_day(lake):
    """The row group limit of an append is sized to its largest day (faster partitioned
    writes) but capped at APPEND_ROW_GROUP_SIZE: a day above the cap still gets full-size
    row groups, smaller days one each (the input is one Arrow chunk, so one thread)."""
    assert [EventLake._append_row_group_size(n) for n in (1, 2048, 2049, 15_455, 10**6)] == [
        2048, 2048, 4096, 16_384, APPEND_ROW_GROUP_SIZE]
    sizes = {START: APPEND_ROW_GROUP_SIZE + 7_000, START + timedelta(days=1): 3_000, START + timedelta(days=2): 1}
    occurred = [day + timedelta(seconds=i % 86_400) for day, n in sizes.items() for i in range(n)]
    n = len(occurred)
    table = pa.table({
        "event_id": [f"rg-{i}" for i in range(n)], "tenant_id": pa.array([T] * n, pa.int64()),
        "user_id": [f"u{i % 97}" for i in range(n)], "event_type": ["view"] * n,
        "occurred_at": pa.array(occurred, pa.timestamp("us")), "received_at": pa.array(occurred, pa.timestamp("us")),
        "properties": [f'{{"amount": {i % 13}}}' for i in range(n)]})
    lake.append_events(T, table)
    con = duck.connect(lake.store)
    groups = {}
    for entry in lake.snapshot(T).entries:
        groups[entry.day] = [rows for _, rows in con.execute(
            "SELECT DISTINCT row_group_id, row_group_num_rows FROM parquet_metadata(?) ORDER BY row_group_id",
            [entry.path]).fetchall()]
    assert groups == {START.date(): [APPEND_ROW_GROUP_SIZE, 7_000],
                      (START + timedelta(days=1)).date(): [3_000], (START + timedelta(days=2)).date(): [1]}
    assert query(lake, "SELECT count(DISTINCT event_id), sum(p_amount) FROM events") == [
        (n, float(sum(i % 13 for i in range(n))))]


def test_type_conflict_across_batches(lake):
    base = make_events(4, seed=2)
    for i, r in enumerate(base):
        r["properties"] = json.dumps({"level": [3, "gold", True, 2.5][i]})
    lake.append_events(T, to_table(base[:1]))
    lake.append_events(T, to_table(base[1:]))
    assert lake.snapshot(T).properties == {"level": ("p_level", "number")}
    got = dict(query(lake, "SELECT event_id, p_level FROM events"))
    assert got == {base[0]["event_id"]: 3.0, base[1]["event_id"]: None, base[2]["event_id"]: None,
                   base[3]["event_id"]: 2.5}
    assert query(lake, "SELECT count(*) FROM events WHERE properties->>'$.level' = 'gold'") == [(1,)]


def test_new_properties_read_null_in_older_files(lake):
    first = make_events(20, seed=3)
    second = make_events(20, seed=4)
    for r in second:
        r["properties"] = json.dumps({"coupon": "SPRING"})
    lake.append_events(T, to_table(first))
    lake.append_events(T, to_table(second))
    assert query(lake, "SELECT count(p_coupon), count(*) FILTER (WHERE p_coupon IS NULL) FROM events") == [(20, 20)]


def test_empty_snapshot_and_tenants(lake):
    assert lake.snapshot(T).files == ()
    assert query(lake, "SELECT count(*) FROM events") == [(0,)]
    assert lake.all_tenants() == []
    lake.append_events(T, to_table(make_events(5, seed=5)))
    lake.append_events(9, to_table(make_events(5, tenant=9, seed=6)))
    assert lake.all_tenants() == [T, 9]
    assert lake.append_events(T, to_table([])) == []


def test_rejects_rows_of_another_tenant_and_bad_json(lake):
    with pytest.raises(ValueError):
        lake.append_events(T, to_table(make_events(3, tenant=8)))
    rows = make_events(3, seed=7)
    rows[1]["properties"] = "{not json"
    with pytest.raises(ValueError):
        lake.append_events(T, to_table(rows))
    assert lake.snapshot(T).files == ()


def test_timezone_aware_input_is_stored_as_naive_utc(lake):
    rows = make_events(2, seed=8)
    table = to_table(rows)
    aware = pa.array([datetime(2024, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-2)))] * 2,
                     pa.timestamp("us", "UTC"))
    table = table.set_column(table.schema.get_field_index("occurred_at"), "occurred_at", aware)
    lake.append_events(T, table)
    assert query(lake, "SELECT DISTINCT occurred_at, event_date FROM events") == [
        (datetime(2024, 3, 2, 1, 30), datetime(2024, 3, 2).date())]


def test_stray_and_partial_files_never_change_a_query(lake):
    rows = make_events(200, seed=9)
    lake.append_events(T, to_table(rows))
    before = totals(lake)
    entry = lake.snapshot(T).entries[0]
    part = f"events/tenant_id={T}/event_date={entry.day.isoformat()}"
    data = lake.store.get_bytes(entry.key)
    lake.store.put_bytes(f"{part}/in-progress.parquet", data[: len(data) // 2])  # truncated Parquet
    lake.store.put_bytes(f"{part}/garbage.parquet", b"definitely not parquet")
    lake.store.put_bytes(f"{part}/complete-but-uncommitted.parquet", data)  # a whole duplicate file
    lake.store.put_bytes(f"events/_manifests/tenant_id={T}/junk.json", b"{")
    assert totals(lake) == before == expected_totals(rows)


def test_restart_sees_the_same_snapshot(lake):
    lake.append_events(T, to_table(make_events(50, seed=10)))
    lake.upsert_profiles(T, [{"user_id": "u1", "traits": {"plan": "pro"}, "updated_at": START}])
    reopened = EventLake(lake.store)
    assert reopened.snapshot(T) == lake.snapshot(T)
    assert reopened.profiles_snapshot(T) == lake.profiles_snapshot(T)
    reopened.append_events(T, to_table(make_events(10, seed=11)))
    assert lake.snapshot(T).rows == 60  # the first object sees the newer commit too


def test_read_only_lake_refuses_writes(lake):
    lake.append_events(T, to_table(make_events(5, seed=12)))
    reader = EventLake(lake.store, read_only=True)
    assert reader.snapshot(T).rows == 5
    with pytest.raises(PermissionError):
        reader.append_events(T, to_table(make_events(5, seed=13)))


def test_compaction_keeps_totals_reduces_files_and_sorts(lake):
    rows = []
    for seed in range(4):
        batch = make_events(100, seed=20 + seed)
        rows += batch
        lake.append_events(T, to_table(batch))
    before = lake.snapshot(T)
    assert len(before.files) == 12
    result = lake.compact(T)
    after = lake.snapshot(T)
    assert (result.files_before, result.files_after) == (12, 3) and len(result.days_compacted) == 3
    assert all(e.is_sorted for e in after.entries)
    assert totals(lake) == expected_totals(rows)
    assert totals(lake, snapshot=before) == expected_totals(rows)  # old files readable in the grace period
    for entry in after.entries:
        con = duck.connect(lake.store)
        order = con.execute("SELECT user_id, occurred_at FROM read_parquet(?)", [entry.path]).fetchall()
        assert order == sorted(order)
    assert lake.compact(T).days_compacted == ()  # nothing left to do


def test_compaction_of_a_day_still_receiving_events_leaves_its_sorted_files_alone(object_store):
    """The maintenance worker runs every few minutes while today's partition keeps
    growing: each run merges only the newly appended files, the whole day is merged once
    it has settled (or holds max_sorted_per_day sorted files)."""
    now = [(START + timedelta(hours=12)).replace(tzinfo=timezone.utc).timestamp()]
    lake = EventLake(object_store, clock=lambda: now[0])
    rows = make_events(60, days=1, seed=70) + make_events(10, days=1, seed=71, prefix="late")
    for row in rows:  # all received "just now" by the lake's clock
        row["received_at"] = START + timedelta(hours=12)
    keys_of = lambda: {e.key: e.is_sorted for e in lake.snapshot(T).entries}  # noqa: E731

    lake.append_events(T, to_table(rows[:20]))
    lake.append_events(T, to_table(rows[20:40]))
    assert lake.compact(T, settle_seconds=600).days_compacted == (START.date(),)
    (first_sorted,) = keys_of()
    lake.append_events(T, to_table(rows[40:60]))
    lake.compact(T, settle_seconds=600)
    after_second = keys_of()
    assert first_sorted in after_second and len(after_second) == 2 and all(after_second.values())
    assert lake.compact(T, settle_seconds=600).days_compacted == ()  # nothing new: no rewrite
    assert lake.compact(T, settle_seconds=600, max_sorted_per_day=2).files_after == 1  # bound reached

    lake.append_events(T, to_table(rows[60:]))
    lake.compact(T, settle_seconds=600)
    assert len(keys_of()) == 2
    now[0] += 3600  # no new events for an hour: the day has settled
    assert lake.compact(T, settle_seconds=600).files_after == 1
    assert totals(lake) == expected_totals(rows)


def test_garbage_collection_after_grace(object_store):
    now = [time.time()]
    lake = EventLake(object_store, grace_seconds=60, clock=lambda: now[0])
    rows = make_events(100, seed=30)
    lake.append_events(T, to_table(rows[:50]))
    lake.append_events(T, to_table(rows[50:]))
    old = lake.snapshot(T)
    lake.compact(T)
    orphan = f"events/tenant_id={T}/event_date=2024-03-01/orphan.parquet"
    object_store.put_bytes(orphan, b"left by a crashed writer")
    assert lake.collect_garbage(T) == 0  # within the grace period nothing goes
    assert all(object_store.exists(e.key) for e in old.entries)
    now[0] += 3600  # the orphan's mtime is real time, so it is now old by the lake's clock too
    deleted = lake.collect_garbage()
    assert deleted == len(old.entries) + 1
    assert not any(object_store.exists(e.key) for e in old.entries) and not object_store.exists(orphan)
    assert totals(lake) == expected_totals(rows)


def test_pinned_snapshot_files_survive_garbage_collection_until_the_pin_lapses(object_store):
    now = [time.time()]
    lake = EventLake(object_store, grace_seconds=60, clock=lambda: now[0], profile_delta_min_rows=0,
                     profile_delta_fraction=10**9)  # every identify rewrites the base
    rows = make_events(100, seed=31)
    lake.append_events(T, to_table(rows[:50]))
    lake.append_events(T, to_table(rows[50:]))
    lake.upsert_profiles(T, [{"user_id": "a", "traits": {"plan": "free"}, "updated_at": START}])
    old, old_profiles = lake.snapshot(T), lake.profiles_snapshot(T)
    lake.pin("compute-1", now[0] + 600, events=old, profiles=old_profiles)
    lake.compact(T)  # retires the old events files
    lake.upsert_profiles(T, [{"user_id": "a", "traits": {"plan": "pro"}, "updated_at": START + timedelta(1)}])
    retired = [e.key for e in old.entries] + [old_profiles.base_key]
    assert lake.profiles_snapshot(T).base_key != retired[-1]  # the layout under test: all of them retired
    now[0] += 300  # past the grace period, within the pin
    assert lake.collect_garbage() == 0
    lake.append_events(T, to_table(make_events(5, seed=32, prefix="x")))  # a commit deletes expired files too
    assert all(object_store.exists(key) for key in retired)
    assert totals(lake, snapshot=old) == expected_totals(rows)  # the pinned snapshot still reads whole
    now[0] += 400  # the pin lapsed (its holder died or stopped renewing)
    assert lake.collect_garbage() == len(retired)
    assert not any(object_store.exists(key) for key in retired)
    assert object_store.list("_pins/") == []  # a lapsed pin goes too


def test_pinned_renews_while_the_block_runs_and_unpins_after(object_store):
    now = [time.time()]
    lake = EventLake(object_store, grace_seconds=60, clock=lambda: now[0])
    lake.append_events(T, to_table(make_events(20, seed=33)))
    with lake.pinned("job-7", lake.snapshot(T), hold=0.5):
        first = json.loads(object_store.get_bytes(f"_pins/tenant_id={T}/job-7.json"))
        now[0] += 100
        time.sleep(0.3)  # a renewal beat (every hold / 5)
        renewed = json.loads(object_store.get_bytes(f"_pins/tenant_id={T}/job-7.json"))
        assert renewed["until"] >= first["until"] + 100
        assert set(renewed["keys"]) == {e.key for e in lake.snapshot(T).entries}
    assert object_store.list("_pins/") == []


def test_garbage_collection_removes_spark_scratch_older_than_a_day(object_store):
    now = [time.time()]
    lake = EventLake(object_store, clock=lambda: now[0])
    object_store.put_bytes("_scratch/spark/abc/out/part-0.parquet", b"a crashed Spark write")
    lake.collect_garbage()
    assert object_store.exists("_scratch/spark/abc/out/part-0.parquet")  # a write may still be running
    now[0] += 86_400 + 60
    lake.collect_garbage()
    assert object_store.list("_scratch/") == []


def test_concurrent_compaction_and_queries_never_see_partial_state(lake):
    rows = []
    for seed in range(6):
        batch = make_events(150, seed=40 + seed)
        rows += batch
        lake.append_events(T, to_table(batch))
    want = expected_totals(rows)
    seen, errors, done = [], [], threading.Event()

    def reader():
        try:
            while not done.is_set() or len(seen) < 6:
                seen.append(totals(lake))
        except Exception as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        assert lake.compact(T).files_after == 3
    finally:
        done.set()
        for t in threads:
            t.join(60)
    assert errors == []
    assert seen and all(s == want for s in seen), {s for s in seen if s != want}


def test_event_ids_since(lake):
    rows = make_events(120, seed=50)
    lake.append_events(T, to_table(rows))
    since = START + timedelta(days=1, hours=12)
    assert lake.event_ids_since(T, since) == {r["event_id"] for r in rows if r["received_at"] >= since}
    assert lake.event_ids_since(T, since.replace(tzinfo=timezone.utc)) == lake.event_ids_since(T, since)
    assert lake.event_ids_since(T, START + timedelta(days=30)) == set()


def test_profiles_latest_value_per_trait_wins(lake):
    t0 = datetime(2024, 1, 1)
    lake.upsert_profiles(T, [
        {"user_id": "u1", "traits": {"plan": "free", "age": 30, "vip": False}, "updated_at": t0},
        {"user_id": "u2", "traits": {"plan": "pro"}, "updated_at": t0},
    ])
    lake.upsert_profiles(T, pa.table({
        "user_id": ["u1", "u1", "u2", "u3"],
        "traits": [json.dumps({"plan": "team"}), json.dumps({"age": 29, "vip": True}),
                   json.dumps({"plan": "stale", "city": "Oslo"}), "{}"],
        "updated_at": pa.array([t0 + timedelta(days=2), t0 - timedelta(days=1), t0 - timedelta(days=5), t0],
                               pa.timestamp("us")),
    }))
    # Same time as the stored value: the newer write wins.
    lake.upsert_profiles(T, [{"user_id": "u2", "traits": {"city": "Bergen", "age": "n/a"},
                              "updated_at": t0 - timedelta(days=5)}])
    snap = lake.profiles_snapshot(T)
    assert snap.rows == 3
    assert snap.traits == {"age": ("t_age", "number"), "plan": ("t_plan", "string"), "vip": ("t_vip", "boolean"),
                           "city": ("t_city", "string")}
    con = duck.connect(lake.store)
    lake_view(con, lake.store, snap)
    got = {r[0]: r[1:] for r in con.execute(
        "SELECT user_id, tenant_id, updated_at, traits, t_plan, t_age, t_vip, t_city FROM profiles").fetchall()}
    assert got["u1"] == (T, t0 + timedelta(days=2),
                         json.dumps({"age": 30, "plan": "team", "vip": False}, separators=(",", ":")),
                         "team", 30.0, False, None)
    assert json.loads(got["u2"][2]) == {"plan": "pro", "city": "Bergen", "age": "n/a"}
    assert got["u2"][3:] == ("pro", None, None, "Bergen")  # "n/a" is not a number: NULL, kept in JSON
    assert got["u3"] == (T, t0, "{}", None, None, None, None)
    assert lake.all_tenants() == [T]


def test_identify_flushes_rewrite_the_delta_until_it_outgrows_its_share_of_the_base(tmp_path):
    lake = EventLake(LocalObjectStore(tmp_path / "lake"), profile_delta_min_rows=2, profile_delta_fraction=4)
    t0 = datetime(2024, 1, 1)
    lake.upsert_profiles(T, [{"user_id": f"u{i}", "traits": {"plan": "free"}, "updated_at": t0} for i in range(12)])
    base = lake.profiles_snapshot(T)
    assert base.delta is None and base.rows == 12

    def flush(users, plan, hours):
        lake.upsert_profiles(T, [{"user_id": u, "traits": {"plan": plan}, "updated_at": t0 + timedelta(hours=hours)}
                                 for u in users])
        snap = lake.profiles_snapshot(T)
        con = duck.connect(lake.store)
        lake_view(con, lake.store, snap)
        return snap, dict(con.execute("SELECT user_id, t_plan FROM profiles").fetchall())

    snap, plans = flush(["u1", "new"], "pro", 1)  # 2 changed rows: not over max(2, 12 // 4)
    assert snap.file == base.file and snap.delta is not None and snap.rows == 13
    assert plans == {**{f"u{i}": "free" for i in range(12)}, "u1": "pro", "new": "pro"}
    snap, plans = flush(["u1", "u2"], "team", 2)  # the delta now holds u1, u2 and new: 3
    assert snap.file == base.file and snap.rows == 13
    assert duck.connect(lake.store).execute("SELECT count(*) FROM read_parquet(?)", [snap.delta]).fetchone() == (3,)
    assert plans == {**{f"u{i}": "free" for i in range(12)}, "u1": "team", "u2": "team", "new": "pro"}
    snap, plans = flush(["u3", "u4"], "pro", 3)  # 5 changed rows > 3: the base is rewritten with them
    assert snap.file != base.file and snap.delta is None and snap.rows == 13
    assert plans == {**{f"u{i}": "free" for i in range(12)}, "u1": "team", "u2": "team", "u3": "pro", "u4": "pro",
                     "new": "pro"}


identify = st.fixed_dictionaries({
    "user_id": st.sampled_from(["u0", "u1", "u2", "u3"]),
    "traits": st.dictionaries(st.sampled_from(["plan", "age", "vip"]),
                              st.one_of(st.none(), st.integers(-5, 5), st.sampled_from(["a", "b"]), st.booleans()),
                              max_size=3),
    "updated_at": st.sampled_from([START, START + timedelta(hours=1), START + timedelta(hours=2)]),
})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(st.lists(identify, min_size=1, max_size=4), min_size=1, max_size=5),
       delta_min_rows=st.sampled_from([0, 1, 2, 10**6]))
def test_profiles_merge_matches_reference(tmp_path_factory, calls, delta_min_rows):
    """Whether a flush rewrites the delta or the base (``delta_min_rows``: 0 always the
    base, 10**6 always the delta, 1-2 a mix), readers get the reference's latest traits."""
    lake = EventLake(LocalObjectStore(tmp_path_factory.mktemp("profiles") / "lake"),
                     profile_delta_min_rows=delta_min_rows, profile_delta_fraction=1)
    latest: dict[tuple[str, str], tuple] = {}  # (user, trait) -> ((time, call, row), value)
    seen: dict[str, datetime] = {}
    for c, call in enumerate(calls):
        lake.upsert_profiles(T, call)
        for r, row in enumerate(call):
            seen[row["user_id"]] = max(seen.get(row["user_id"], row["updated_at"]), row["updated_at"])
            for trait, value in row["traits"].items():
                order = (row["updated_at"], c, r)
                if (row["user_id"], trait) not in latest or latest[(row["user_id"], trait)][0] < order:
                    latest[(row["user_id"], trait)] = (order, value)
    con = duck.connect(lake.store)
    snap = lake.profiles_snapshot(T)
    lake_view(con, lake.store, snap)
    got = {u: (ts, json.loads(traits))
           for u, ts, traits in con.execute("SELECT user_id, updated_at, traits FROM profiles").fetchall()}
    want = {u: (ts, {t: v for (uu, t), (_, v) in latest.items() if uu == u}) for u, ts in seen.items()}
    assert got == want
    assert snap.rows == len(want)
    plans = dict(con.execute(f"SELECT user_id, {snap.traits['plan'][0]} FROM profiles").fetchall()
                 if "plan" in snap.traits else [])
    assert all(plans[u] == (t["plan"] if isinstance(t.get("plan"), str) else None)
               for u, (_, t) in want.items() if snap.traits.get("plan", ("", ""))[1] == "string")
