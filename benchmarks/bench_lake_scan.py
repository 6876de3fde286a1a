"""Event lake: append throughput and scan overhead of the snapshot versus one Parquet file.

    python -m benchmarks.bench_lake_scan --events 10000000      # targets below

* append: ``EventLake.append_events`` of 1M synthetic events (30 days, 5 JSON properties,
  one nested) into a tenant that already has its catalog; events/s of the median run.
  Target: >= 500k events/s end to end, i.e. well under 2 s per 1M.
* scan: ``sum(p_total)`` over N events read the way segops reads them (the snapshot's
  relation in the DuckDB backend, ``backends.duckdb``) versus the same rows in ONE
  hand-made Parquet file, in the same DuckDB database; after appends of 1M rows (30 small
  files each) and again after ``compact``. Target: ratio <= 1.5 (from 10M events).
  At ``--size 100m`` (``python -m benchmarks``) the scan runs on the 100M-event benchmark
  dataset instead (its one-file copy is made once, next to the dataset).
* lookup: one user's event count, same layouts (compaction sorts by user_id).

Timings are medians of ``--runs`` after one warm-up. CPU seconds are the process's
(all DuckDB threads), so they stay meaningful on a busy machine.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import duckdb

from benchmarks.harness import timed
from compiler import to_sql
from engine.runtime import Runtime
from engine.settings import Settings
from storage import duck
from storage.lake import EventLake
from storage.objectstore import LocalObjectStore

TENANT = 1
CHUNK = 1_000_000
DAYS = 30


def synthetic_events(con: duckdb.DuckDBPyConnection, start: int, n: int):
    """n events with ids start..start+n (deterministic), as an Arrow table."""
    return con.execute(f"""
        SELECT 'e' || i AS event_id, {TENANT}::BIGINT AS tenant_id, 'u' || (hash(i) % 200000) AS user_id,
               ['view', 'purchase', 'signup', 'click'][1 + (i % 4)::INT] AS event_type,
               TIMESTAMP '2024-01-01' + to_microseconds((hash(i * 7) % ({DAYS} * 86400000000))::BIGINT) AS occurred_at,
               TIMESTAMP '2024-01-01' + to_microseconds((hash(i * 7) % ({DAYS} * 86400000000))::BIGINT) AS received_at,
               json_object('total', (hash(i * 3) % 10000) / 100.0, 'plan', ['free', 'pro', 'team'][1 + (i % 3)::INT],
                           'beta', i % 2 = 0, 'count', i % 50, 'nested', json_object('a', 1))::VARCHAR AS properties
        FROM range({start}, {start + n}) r(i)""").to_arrow_table()


class _Rows(list):
    def add(self, metric, value, unit, **extra):
        self.append({"benchmark": "lake_scan", "metric": metric, "value": round(value, 4), "unit": unit, **extra})
        print(f"{metric:<48} {value:>14,.3f} {unit}", flush=True)


def measure_append(gen: duckdb.DuckDBPyConnection, runs: int, root: Path, rows: _Rows) -> None:
    batch = synthetic_events(gen, 0, CHUNK)
    append_lake = EventLake(LocalObjectStore(root / "append"))
    append_lake.append_events(TENANT, batch.slice(0, 1000))  # catalog exists: steady state
    walls, cpus = [], []
    for _ in range(max(3, runs // 2)):
        w, c = time.perf_counter(), time.process_time()
        append_lake.append_events(TENANT, batch)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    rows.add("append 1M: wall (median)", statistics.median(walls), "s")
    rows.add("append 1M: cpu (median)", statistics.median(cpus), "cpu s")
    rows.add("append throughput", CHUNK / statistics.median(walls), "events/s", target=">= 500000")
    shutil.rmtree(root / "append")


class _Scans:
    """``sum(p_total)`` and one user's count, through segops' relation and over one file,
    on the runtime's segment query database."""

    def __init__(self, runtime: Runtime, tenant_id: int, single: Path, runs: int, events: int):
        self.runtime, self.tenant_id, self.single, self.runs = runtime, tenant_id, single, runs
        self.events = events
        self.con = runtime.backends.get("duckdb").cursor()
        self.user = self.con.execute("SELECT user_id FROM read_parquet(?) LIMIT 1", [str(single)]).fetchone()[0]

    def segops_relation(self) -> str:
        """What a segment query over all history reads (a view of the current snapshot)."""
        lake = self.runtime.backends.tenant_lake(self.tenant_id)
        return to_sql(self.runtime.backends.get("duckdb").relations(lake).events, "duckdb", pretty=False)

    def timed(self, relation, select: str, by_user: bool = False):
        where = " WHERE user_id = $u" if by_user else ""
        params = {"u": self.user} if by_user else {}
        return timed(lambda: self.con.execute(f"SELECT {select} FROM {relation()}{where}", params).fetchone()[0],
                      self.runs)

    def one_file(self) -> str:
        return f"read_parquet({duck.sql_literal(str(self.single))})"


def compare(scans: _Scans, stage: str, files: int, base: tuple, rows: _Rows) -> None:
    (base_wall, base_sum), (_, look_n) = base
    wall, _, total = scans.timed(scans.segops_relation, "sum(p_total)")
    assert abs(total - base_sum) < 1e-6 * abs(base_sum), (total, base_sum)
    rows.add(f"sum(p_total) segops, {stage} ({files} files)", wall, "s")
    ratio = wall / base_wall
    # The target is for 10M+ events: at 1M the one-file scan takes ~3 ms, below DuckDB's
    # fixed cost per file, so the ratio then measures file counts rather than the lake.
    rows.add(f"ratio segops/one file, {stage}", ratio, "x",
             **({"target": "<= 1.5", "meets_target": ratio <= 1.5} if scans.events >= 10_000_000 else {}))
    lwall, _, n = scans.timed(scans.segops_relation, "count(*)", by_user=True)
    assert n == look_n
    rows.add(f"user lookup segops, {stage}", lwall, "s")


def baseline(scans: _Scans, events: int, rows: _Rows) -> tuple:
    wall, _, total = scans.timed(scans.one_file, "sum(p_total)")
    rows.add(f"sum(p_total) one file ({events:,} events)", wall, "s")
    lwall, _, n = scans.timed(scans.one_file, "count(*)", by_user=True)
    rows.add("user lookup one file", lwall, "s")
    return (wall, total), (lwall, n)


def _copy_to_one_file(con: duckdb.DuckDBPyConnection, files, single: Path) -> None:
    partial = single.with_suffix(".partial")
    con.execute(f"COPY (SELECT * EXCLUDE (tenant_id, event_date) FROM read_parquet($f, hive_partitioning=true, "
                f"union_by_name=true)) TO {duck.sql_literal(str(partial))} (FORMAT parquet, COMPRESSION zstd)",
                {"f": list(files)})
    partial.rename(single)


def measure(events: int, runs: int, root: Path) -> list[dict]:
    """Append throughput, then the scan of ``events`` synthetic events: appended, compacted."""
    gen = duckdb.connect()
    rows = _Rows()
    measure_append(gen, runs, root, rows)
    data_dir = root / "data"
    lake = EventLake(LocalObjectStore(data_dir / "lake"), grace_seconds=0)
    for start in range(0, events, CHUNK):
        lake.append_events(TENANT, synthetic_events(gen, start, min(CHUNK, events - start)))
    single = root / "single.parquet"
    _copy_to_one_file(duck.connect(lake), lake.snapshot(TENANT).files, single)
    runtime = Runtime(Settings(data_dir=data_dir, run_workers=False))
    try:
        scans = _Scans(runtime, TENANT, single, runs, events)
        base = baseline(scans, events, rows)
        compare(scans, "appended", len(lake.snapshot(TENANT).files), base, rows)
        w = time.perf_counter()
        result = runtime.lake.compact(TENANT, settle_seconds=0)
        rows.add(f"compact {result.files_before} -> {result.files_after} files", time.perf_counter() - w, "s")
        compare(scans, "compacted", result.files_after, base, rows)
    finally:
        runtime.stop()
    return rows


def measure_dataset(dataset, runs: int) -> list[dict]:
    """The scan on a benchmark dataset (compacted by its generator) versus its one-file copy."""
    rows = _Rows()
    single = dataset.data_dir.parent / f"{dataset.name}-one-file.parquet"
    runtime = Runtime(Settings(data_dir=dataset.data_dir, run_workers=False, read_only=True))
    try:
        files = runtime.lake.snapshot(dataset.tenant_id).files
        if not single.exists():
            print(f"writing the one-file copy of {dataset.events:,} events to {single} (once)", flush=True)
            _copy_to_one_file(runtime.backends.get("duckdb").cursor(), files, single)
        scans = _Scans(runtime, dataset.tenant_id, single, runs, dataset.events)
        compare(scans, "benchmark dataset", len(files), baseline(scans, dataset.events, rows), rows)
    finally:
        runtime.stop()
    return rows


def run(size: str, *, dataset=None, runs: int = 5) -> list[dict]:
    """Entry point of ``python -m benchmarks``: synthetic events up to 10M; at 100m the
    append figure plus the scan of the 100M-event benchmark dataset."""
    from benchmarks.datasets import SIZES

    with tempfile.TemporaryDirectory(prefix="bench-lake-") as tmp:
        if size == "100m" and dataset is not None:
            rows = _Rows()
            measure_append(duckdb.connect(), runs, Path(tmp), rows)
            return rows + measure_dataset(dataset, runs)
        return measure(min(SIZES[size], 10_000_000), runs, Path(tmp))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, help="work directory (default: a temporary one, removed after)")
    args = parser.parse_args(argv)
    print(f"load average before: {os.getloadavg()}")
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        measure(args.events, args.runs, args.dir)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-lake-") as tmp:
            measure(args.events, args.runs, Path(tmp))
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
