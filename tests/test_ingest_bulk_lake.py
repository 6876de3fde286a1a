"""Bulk ingest straight from DuckDB into the lake: commits of ``chunk_rows`` in day order,
a concurrent writer's ids, ``EventLake.append_relation`` against ``append_events``, file
formats and limits; on a local lake and a real S3 (moto) server."""
from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.ingest.bulk import BulkIngestError, _chunks, ingest_file
from storage import duck
from storage.lake import EventLake
from storage.objectstore import LocalObjectStore

pytest_plugins = ["tests.storage_fixtures"]

T = 5
DAY0 = datetime(2026, 3, 1)
KEYS = {"plan": ["free", "pro"], "total": [1.5, 20, -3], "vip": [True, False], "tags": [["a"]], "note": [None, "x"]}


def _events(n: int, days: int, seed: int, repeats: int = 0) -> list[dict]:
    """Events in random time order over ``days`` days; the last ``repeats`` rows repeat
    earlier ids with other content (the first occurrence must win)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        at = DAY0 + timedelta(seconds=rng.randrange(days * 86400))
        props = {k: rng.choice(v) for k, v in KEYS.items() if rng.random() < 0.6}
        row = {"event_id": f"e{i}", "user_id": f"u{rng.randrange(9)}", "event_type": rng.choice(["view", "buy"]),
               "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%S") + rng.choice(["Z", "+00:00", ""]),
               "properties": props}
        if i % 7 == 3:
            del row["event_id"]  # gets a UUIDv7
        rows.append(row)
    for j in range(repeats):
        rows.append({**rows[j * 2], "user_id": "repeat", "event_id": rows[j * 2].get("event_id", f"e{j * 2}")})
    return rows


def _ndjson(path, rows):
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def _expected(rows: list[dict]) -> dict[str, tuple]:
    """First occurrence of each id -> (user, type, occurred naive UTC, properties); rows
    without an id are returned under their position."""
    out = {}
    for i, r in enumerate(rows):
        key = r.get("event_id", f"#{i}")
        if key not in out:
            at = datetime.fromisoformat(r["occurred_at"].replace("Z", "+00:00"))
            at = at.astimezone(timezone.utc).replace(tzinfo=None) if at.tzinfo else at
            out[key] = (r["user_id"], r["event_type"], at, r["properties"])
    return out


def _lake_rows(lake: EventLake, tenant: int = T) -> list[dict]:
    snapshot = lake.snapshot(tenant)
    con = duck.connect(lake.store)
    try:
        cur = con.execute("SELECT * EXCLUDE (tenant_id) FROM read_parquet(?, hive_partitioning=true, "
                          "union_by_name=true)", [list(snapshot.files)])
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row)) for row in cur.fetchall()]
    finally:
        con.close()


def _same_as_expected(lake: EventLake, rows: list[dict]) -> None:
    expected = _expected(rows)
    stored = _lake_rows(lake)
    by_id = {r["event_id"]: r for r in stored}
    assert len(by_id) == len(stored) == len(expected)
    with_id = {k: v for k, v in expected.items() if not k.startswith("#")}
    for key, (user, kind, at, props) in with_id.items():
        got = by_id[key]
        assert (got["user_id"], got["event_type"], got["occurred_at"]) == (user, kind, at)
        assert orjson.loads(got["properties"]) == props
        # typed columns follow the first kind seen: plan string, total number, vip boolean
        assert got["p_plan"] == props.get("plan") and got["p_vip"] == props.get("vip")
        assert got["p_total"] == (float(props["total"]) if "total" in props else None)
        assert got["p_note"] == props.get("note")
    assert "p_tags" not in stored[0]  # arrays first: JSON-only
    anonymous = sorted((v[0], v[2]) for k, v in expected.items() if k.startswith("#"))
    assert sorted((r["user_id"], r["occurred_at"]) for r in stored if r["event_id"] not in with_id) == anonymous


def test_big_files_commit_in_chunks_in_day_order(lake, tmp_path):
    rows = _events(57, days=6, seed=1, repeats=4)
    seen: list[tuple[int, int, frozenset]] = []
    result = ingest_file(lake, T, _ndjson(tmp_path / "big.ndjson", rows), chunk_rows=10,
                         progress=lambda done, total: seen.append(
                             (done, total, frozenset(e.key for e in lake.snapshot(T).entries))))
    assert (result.rows, result.duplicates, result.written) == (61, 4, 57)
    assert [(done, total) for done, total, _ in seen] == [(0, 57), (10, 57), (20, 57), (30, 57), (40, 57),
                                                          (50, 57), (57, 57)]
    entries = {e.key: e for e in lake.snapshot(T).entries}
    commits = [[entries[k] for k in after - before] for (_, _, before), (_, _, after) in zip(seen, seen[1:])]
    assert [sum(e.rows for e in files) for files in commits] == [10, 10, 10, 10, 10, 7]
    for files, later in zip(commits, commits[1:]):
        assert len({e.day for e in files}) == len(files)  # one file per day per commit
        assert max(e.day for e in files) <= min(e.day for e in later)  # runs of days, in order
    _same_as_expected(lake, rows)
    received = {r["received_at"] for r in _lake_rows(lake)}
    assert len(received) == 1 and abs(datetime.utcnow() - received.pop()) < timedelta(minutes=2)

    again = ingest_file(lake, T, tmp_path / "big.ndjson", chunk_rows=10)
    anonymous = sum(1 for r in rows if "event_id" not in r)
    assert (again.written, again.duplicates) == (anonymous, 61 - anonymous)  # known ids: from the lake


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(days=st.lists(st.integers(0, 5), min_size=1, max_size=60), data=st.data(), chunk_rows=st.integers(1, 25))
def test_chunk_conditions_cut_day_ordered_rows_into_equal_commits(days, data, chunk_rows):
    """Reference: rows sorted by (day, file position), cut every ``chunk_rows`` rows."""
    deleted = data.draw(st.sets(st.integers(0, len(days) - 1), max_size=len(days) - 1))
    con = duckdb.connect()
    con.execute("CREATE TEMP TABLE staged AS SELECT TIMESTAMP '2026-01-01' + to_days(d) + to_hours(h) AS occurred_at "
                "FROM (SELECT unnest($d) AS d, unnest($h) AS h)",
                {"d": days, "h": [i % 24 for i in range(len(days))]})
    if deleted:
        con.execute("DELETE FROM staged WHERE rowid IN (SELECT unnest($r))", {"r": sorted(deleted)})
    kept = sorted((d, i) for i, d in enumerate(days) if i not in deleted)
    expected = [[i for _, i in kept[start:start + chunk_rows]] for start in range(0, len(kept), chunk_rows)]
    chunks = _chunks(con, chunk_rows)
    got = [[r[0] for r in con.execute(f"SELECT rowid FROM staged WHERE {where} ORDER BY occurred_at::DATE, rowid")
            .fetchall()] for where, _ in chunks]
    assert got == expected
    assert [rows for _, rows in chunks] == [len(c) for c in expected]


def test_ids_another_writer_commits_meanwhile_win(tmp_path):
    lake = EventLake(LocalObjectStore(tmp_path / "lake"))
    rows = [{"event_id": f"f{i}", "user_id": "file", "event_type": "x",
             "occurred_at": (DAY0 + timedelta(days=i // 10, minutes=i)).isoformat() + "Z"} for i in range(30)]
    now = datetime.utcnow()
    theirs = pa.table({"event_id": [f"f{i}" for i in range(25, 30)] + ["g1"],
                       "tenant_id": pa.array([T] * 6, pa.int64()), "user_id": ["server"] * 6, "event_type": ["x"] * 6,
                       "occurred_at": pa.array([DAY0] * 6, pa.timestamp("us")),
                       "received_at": pa.array([now] * 6, pa.timestamp("us")), "properties": ["{}"] * 6})

    def meanwhile(done: int, total: int) -> None:
        if done == 10:  # after our first commit: the server commits ids of our last day
            lake.append_events(T, theirs)

    result = ingest_file(lake, T, _ndjson(tmp_path / "f.ndjson", rows), chunk_rows=10, progress=meanwhile)
    assert (result.written, result.duplicates) == (25, 5)
    stored = _lake_rows(lake)
    assert len(stored) == len({r["event_id"] for r in stored}) == 31
    assert {r["event_id"] for r in stored if r["user_id"] == "server"} == {f"f{i}" for i in range(25, 30)} | {"g1"}


def test_append_relation_writes_what_append_events_writes(tmp_path):
    lake = EventLake(LocalObjectStore(tmp_path / "lake"))
    rng = random.Random(3)
    n = 200
    props = [orjson.dumps({k: rng.choice(v) for k, v in KEYS.items() if rng.random() < 0.5}).decode()
             for _ in range(n)]
    table = pa.table({
        "event_id": [f"r{i}" for i in range(n)], "user_id": [f"u{i % 7}" for i in range(n)],
        "event_type": ["view"] * n,
        "occurred_at": pa.array([DAY0 + timedelta(hours=rng.randrange(96)) for _ in range(n)], pa.timestamp("us")),
        "received_at": pa.array([DAY0 + timedelta(days=5)] * n, pa.timestamp("us")), "properties": props})
    lake.append_events(1, table.append_column("tenant_id", pa.array([1] * n, pa.int64())))

    con = duck.connect(lake.store)
    con.register("source", table.append_column("rn", pa.array(range(n), pa.int64())))
    con.execute("CREATE TEMP TABLE rel AS SELECT *, 0 AS tenant_id FROM source")  # extra columns are ignored
    keys = lake.append_relation(2, con, "rel", "rn")
    assert len(keys) == 4 and all("/tenant_id=2/" in k for k in keys)  # one file per day

    def content(tenant):
        rows = _lake_rows(lake, tenant)
        return sorted(tuple(sorted(r.items())) for r in rows)

    assert content(1) == content(2)
    assert lake.snapshot(1).properties == lake.snapshot(2).properties
    assert lake.append_relation(2, con, "(SELECT * FROM rel WHERE false)", "rn") == []

    con.execute("CREATE TEMP TABLE wrong AS SELECT * REPLACE (CAST(occurred_at AS VARCHAR) AS occurred_at) FROM rel")
    before = lake.snapshot(2).seq
    with pytest.raises(ValueError, match="occurred_at"):
        lake.append_relation(2, con, "wrong", "rn")
    with pytest.raises(ValueError, match="nope"):
        lake.append_relation(2, con, "rel", "nope")
    assert lake.snapshot(2).seq == before
    con.close()


def test_parquet_types_and_limits(tmp_path):
    lake = EventLake(LocalObjectStore(tmp_path / "lake"))
    long_ok, too_long = "é" * 256, "é" * 257  # characters, not bytes
    struct_file = tmp_path / "structs.parquet"
    pq.write_table(pa.table({
        "event_id": pa.array([1, 2, 3], pa.int64()),  # numbers become text
        "user_id": [long_ok, "u2", "u3"], "event_type": ["buy", "buy", "view"],
        "occurred_at": pa.array([datetime(2026, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-2))),
                                 datetime(2026, 3, 2, 1, tzinfo=timezone.utc), None], pa.timestamp("ms", tz="UTC")),
        "properties": pa.array([{"plan": "pro", "total": 3.5}, {"plan": None, "total": 7.0}, None],
                               pa.struct([("plan", pa.string()), ("total", pa.float64())])),
    }), struct_file)
    result = ingest_file(lake, T, struct_file)
    assert result.written == 3
    stored = {r["event_id"]: r for r in _lake_rows(lake)}
    assert stored["1"]["occurred_at"] == datetime(2026, 3, 2, 1, 30) and stored["1"]["user_id"] == long_ok
    assert (stored["1"]["p_plan"], stored["1"]["p_total"], stored["2"]["p_total"]) == ("pro", 3.5, 7.0)
    assert stored["3"]["properties"] == "{}"
    assert abs(stored["3"]["occurred_at"] - datetime.utcnow()) < timedelta(minutes=2)  # missing: load time

    dated = tmp_path / "dated.parquet"
    pq.write_table(pa.table({"user_id": ["a", too_long], "event_type": ["x", "y"],
                             "occurred_at": pa.array([date(2026, 1, 2), date(2026, 1, 3)], pa.date32()),
                             "properties": ['{"a": 1}', "[1]"]}), dated)
    with pytest.raises(BulkIngestError) as err:
        ingest_file(lake, T, dated)
    assert err.value.problems == ["row 2: user_id: longer than 256 characters"]
    pq.write_table(pa.table({"user_id": ["a", "b"], "event_type": ["x", "y"],
                             "occurred_at": pa.array([date(2026, 1, 2), date(2026, 1, 3)], pa.date32()),
                             "properties": ['{"a": 1}', "[1]"]}), dated)
    with pytest.raises(BulkIngestError) as err:
        ingest_file(lake, T, dated)
    assert err.value.problems == ["row 2: properties: must be a JSON object"]
    assert lake.snapshot(T).seq == 1  # nothing of the rejected files
