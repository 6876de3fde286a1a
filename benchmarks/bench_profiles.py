"""Identify flushes: the profiles delta beside rewriting the whole profiles table per flush.

    python -m benchmarks.bench_profiles --profiles 1000000

* flush: a tenant with N demo profiles, then ``--flushes`` flushes of 1,000 identifies each
  (a new plan for existing users, 1 in 10 a new user), alternating between two lakes that
  receive the same calls: segops (each flush rewrites the delta; the base once the delta
  outgrows 1/8 of it) and every flush rewriting the whole table (the design before:
  ``profile_delta_fraction`` so large that any change goes to the base). Median flush time
  of each, and the ratio.
* read: the price of the delta. A trait count (a plan most users keep, so most matching
  rows are base rows to check against the delta) and a one-user lookup over the profiles
  with the largest delta a flush leaves (1/8 of N rows), beside the same profiles in one
  file; and the trait count with replaced base rows excluded by user id instead of by
  position (the delta's first design). Medians of ``--runs`` after one warm-up.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from sqlglot import exp

from backends import relations
from backends.duckdb import DuckDBBackend
from benchmarks.harness import timed
from compiler import to_sql
from cli.demo import profile_table
from storage import duck
from storage.lake import PROFILE_DELTA_FRACTION, EventLake
from storage.objectstore import LocalObjectStore

TENANT = 1
BATCH = 1_000
SIZES = {"small": 200_000, "10m": 1_000_000, "100m": 2_000_000}
console = Console()


def _identifies(base: pa.Table, start: int, rows: int) -> pa.Table:
    """``rows`` identifies of existing users (every 10th a new user), one hour after the latest."""
    users = base.num_rows
    ids = [f"new-{start + i}" if i % 10 == 9 else base.column("user_id")[(start + i) * 7919 % users].as_py()
           for i in range(rows)]
    at = pc.max(base.column("updated_at")).as_py() + timedelta(hours=1 + start // rows)
    return pa.table({"user_id": ids, "traits": ['{"plan":"bench-upgrade","seats":%d}' % (i % 50) for i in range(rows)],
                     "updated_at": pa.array([at] * rows, pa.timestamp("us"))})


def bench_flush(profiles: int, flushes: int, root: Path) -> list[dict]:
    base = profile_table(profiles, 7)
    lakes = {"delta": EventLake(LocalObjectStore(root / "delta")),
             "whole table": EventLake(LocalObjectStore(root / "whole"), profile_delta_fraction=10**18,
                                      profile_delta_min_rows=0)}
    for lake in lakes.values():
        lake.upsert_profiles(TENANT, base)
    times: dict[str, list[float]] = {name: [] for name in lakes}
    for flush in range(flushes):
        batch = _identifies(base, flush * BATCH, BATCH)
        for name, lake in lakes.items():
            started = time.perf_counter()
            lake.upsert_profiles(TENANT, batch)
            times[name].append(time.perf_counter() - started)
    counts = {name: lake.profiles_snapshot(TENANT).rows for name, lake in lakes.items()}
    if len(set(counts.values())) != 1:
        raise RuntimeError(f"the two lakes disagree on the number of profiles: {counts}")
    delta, whole = (statistics.median(times[name]) * 1000 for name in ("delta", "whole table"))
    return [{"benchmark": "profiles", "metric": "identify flush of 1,000 (delta)", "value": round(delta, 1),
             "unit": "ms", "notes": f"{profiles:,} profiles, median of {flushes} flushes"},
            {"benchmark": "profiles", "metric": "flush: whole table / delta", "value": round(whole / delta, 1),
             "unit": "x", "notes": f"rewriting the whole table: {whole:,.0f} ms per flush"}]


def bench_read(profiles: int, runs: int, root: Path) -> list[dict]:
    base = profile_table(profiles, 7)
    changed = _identifies(base, 0, profiles // PROFILE_DELTA_FRACTION)
    with_delta = EventLake(LocalObjectStore(root / "read-delta"))
    one_file = EventLake(LocalObjectStore(root / "read-one"), profile_delta_fraction=10**18, profile_delta_min_rows=0)
    for lake in (with_delta, one_file):
        lake.upsert_profiles(TENANT, base)
        lake.upsert_profiles(TENANT, changed)
    snapshots = {"delta": with_delta.profiles_snapshot(TENANT), "one file": one_file.profiles_snapshot(TENANT)}
    if snapshots["delta"].delta is None or snapshots["one file"].delta is not None:
        raise RuntimeError("the read benchmark's lakes do not have the intended layouts")
    plan = snapshots["delta"].traits["plan"][0]
    user = changed.column("user_id")[0].as_py()
    timings: dict[str, dict[str, float]] = {}
    counts = {}
    lakes = {"delta": with_delta, "one file": one_file}
    for name, snapshot in snapshots.items():
        store = lakes[name].store  # snapshots name their files by key, relative to their own lake
        backend = DuckDBBackend(store, store)  # builds the relation the engine reads
        con = duck.connect(store)
        relation = relations.profiles(backend.scans, snapshot)
        con.execute(f"CREATE VIEW profiles AS {to_sql(exp.select(exp.Star()).from_(relation), 'duckdb')}")
        upgraded = con.execute(f"SELECT count(*) FROM profiles WHERE {plan} = 'bench-upgrade'").fetchone()[0]
        if upgraded != changed.num_rows:
            raise RuntimeError(f"{name}: {upgraded} upgraded profiles, expected {changed.num_rows}")
        # A plan most base rows keep: every base row it matches must be checked against the delta.
        count_s, _, (counts[name],) = timed(lambda: con.execute(
            f"SELECT count(*) FROM profiles WHERE {plan} = 'free'").fetchone(), runs)
        lookup_s, _, _ = timed(lambda: con.execute(
            "SELECT traits FROM profiles WHERE user_id = ?", [user]).fetchone(), runs)
        timings[name] = {"trait count": count_s * 1000, "user lookup": lookup_s * 1000}
        con.close()
        backend.close()
    # The delta design's first version excluded replaced base rows by user id, not by
    # position: both written out over the same two files, the same way.
    base, delta = (duck.sql_literal(path) for path in (snapshots["delta"].file, snapshots["delta"].delta))
    exclusions = {
        "by user id": f"read_parquet([{base}]) o ANTI JOIN read_parquet([{delta}]) d ON o.user_id = d.user_id",
        "by position": (f"read_parquet([{base}], file_row_number=true) o ANTI JOIN read_parquet([{delta}]) d "
                        f"ON o.file_row_number = d.{duck.BASE_ROW_COLUMN}")}
    excluded = {}
    con = duck.connect(with_delta.store)
    for name, kept in exclusions.items():
        excluded[name], _, (counts[name],) = timed(lambda: con.execute(
            f"SELECT count(*) FROM (SELECT o.{plan} FROM {kept} UNION ALL SELECT {plan} FROM read_parquet([{delta}])) "
            f"WHERE {plan} = 'free'").fetchone(), runs)
    con.close()
    if len(set(counts.values())) != 1 or not counts["delta"]:
        raise RuntimeError(f"free-plan counts differ or are empty: {counts}")
    rows = [{"benchmark": "profiles", "metric": "trait count: by user id / by position",
             "value": round(excluded["by user id"] / excluded["by position"], 2), "unit": "x",
             "notes": f"replaced base rows excluded by user id {excluded['by user id'] * 1000:.1f} ms, "
                      f"by position {excluded['by position'] * 1000:.1f} ms"}]
    for query in ("trait count", "user lookup"):
        delta, one = timings["delta"][query], timings["one file"][query]
        rows += [{"benchmark": "profiles", "metric": f"{query}, delta of {changed.num_rows:,}",
                  "value": round(delta, 1), "unit": "ms", "notes": f"{profiles:,} profiles, median of {runs}"},
                 {"benchmark": "profiles", "metric": f"{query}: delta / one file", "value": round(delta / one, 2),
                  "unit": "x", "notes": f"one file: {one:.1f} ms"}]
    return rows


def run(size: str = "small", *, dataset=None, runs: int = 5) -> list[dict]:
    """Rows for ``python -m benchmarks`` (the shared dataset is not used)."""
    profiles = SIZES.get(size, SIZES["small"])
    with tempfile.TemporaryDirectory(prefix="bench-profiles-") as tmp:
        return bench_flush(profiles, 10, Path(tmp)) + bench_read(profiles, max(runs, 5), Path(tmp))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_profiles", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", type=int, default=1_000_000)
    parser.add_argument("--flushes", type=int, default=10)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-profiles-") as tmp:
        rows = bench_flush(args.profiles, args.flushes, Path(tmp)) + bench_read(args.profiles, args.runs, Path(tmp))
    for row in rows:
        console.print(f"{row['metric']:<40} {row['value']:>10,} {row['unit']:<3} {row['notes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
