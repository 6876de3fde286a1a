"""Event lake: append throughput and scan overhead of the snapshot versus one Parquet file.

    python -m benchmarks.bench_lake_scan --events 10000000      # targets below

* append: ``EventLake.append_events`` of 1M synthetic events (30 days, 5 JSON properties,
  one nested) into a tenant that already has its catalog; events/s of the median run.
  Target: >= 500k events/s end to end, i.e. well under 2 s per 1M.
* scan: ``sum(p_total)`` over N events read through ``snapshot()`` +
  ``read_parquet(files, hive_partitioning=true, union_by_name=true)`` versus the same rows
  in ONE hand-made Parquet file; after appends of 1M rows (30 small files each) and again
  after ``compact``. Target: ratio <= 1.5.
* lookup: one user's event count, same three layouts (compaction sorts by user_id).

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


def _timed(fn, runs: int) -> tuple[float, float, object]:
    """(median wall s, median cpu s, last result) after one warm-up."""
    fn()
    walls, cpus = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), result


def measure(events: int, runs: int, root: Path) -> list[dict]:
    gen = duckdb.connect()
    rows: list[dict] = []

    def row(metric, value, unit, **extra):
        rows.append({"benchmark": "lake_scan", "metric": metric, "value": round(value, 4), "unit": unit, **extra})
        print(f"{metric:<44} {value:>14,.3f} {unit}", flush=True)

    # -- append throughput -------------------------------------------------------------
    batch = synthetic_events(gen, 0, CHUNK)
    append_lake = EventLake(LocalObjectStore(root / "append"))
    append_lake.append_events(TENANT, batch.slice(0, 1000))  # catalog exists: steady state
    walls, cpus = [], []
    for _ in range(max(3, runs // 2)):
        w, c = time.perf_counter(), time.process_time()
        append_lake.append_events(TENANT, batch)
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    row("append 1M: wall (median)", statistics.median(walls), "s")
    row("append 1M: cpu (median)", statistics.median(cpus), "cpu s")
    row("append throughput", CHUNK / statistics.median(walls), "events/s", target=">= 500000")
    shutil.rmtree(root / "append")

    # -- scan: snapshot vs one file ----------------------------------------------------
    lake = EventLake(LocalObjectStore(root / "scan"), grace_seconds=0)
    for start in range(0, events, CHUNK):
        lake.append_events(TENANT, synthetic_events(gen, start, min(CHUNK, events - start)))
    del batch
    snap = lake.snapshot(TENANT)
    con = duck.connect(lake)
    single = root / "single.parquet"
    con.execute(f"COPY (SELECT * EXCLUDE (tenant_id, event_date) FROM read_parquet($f, hive_partitioning=true, "
                f"union_by_name=true)) TO {duck.sql_literal(str(single))} (FORMAT parquet, COMPRESSION zstd)",
                {"f": list(snap.files)})
    user = con.execute("SELECT user_id FROM read_parquet(?) LIMIT 1", [str(single)]).fetchone()[0]

    def scan(paths, select: str, by_user: bool = False):
        """A query over the files ``paths()`` returns (called inside the timing)."""
        where = " WHERE user_id = $u" if by_user else ""

        def run():
            params = {"f": paths(), **({"u": user} if by_user else {})}
            return con.execute(f"SELECT {select} FROM read_parquet($f, hive_partitioning=true, "
                               f"union_by_name=true){where}", params).fetchone()[0]
        return run

    def through_snapshot():
        return list(lake.snapshot(TENANT).files)

    def one_file():
        return [str(single)]

    base_wall, _, base_sum = _timed(scan(one_file, "sum(p_total)"), runs)
    row(f"sum(p_total) one file ({events:,} events)", base_wall, "s")
    look_wall, _, look_n = _timed(scan(one_file, "count(*)", by_user=True), runs)
    row("user lookup one file", look_wall, "s")
    for stage in ("appended", "compacted"):
        if stage == "compacted":
            w = time.perf_counter()
            result = lake.compact(TENANT)
            row(f"compact {result.files_before} -> {result.files_after} files", time.perf_counter() - w, "s")
        files = len(lake.snapshot(TENANT).files)
        wall, _, total = _timed(scan(through_snapshot, "sum(p_total)"), runs)
        assert abs(total - base_sum) < 1e-6 * abs(base_sum), (total, base_sum)
        row(f"sum(p_total) snapshot, {stage} ({files} files)", wall, "s")
        row(f"ratio snapshot/one file, {stage}", wall / base_wall, "x", target="<= 1.5")
        lwall, _, n = _timed(scan(through_snapshot, "count(*)", by_user=True), runs)
        assert n == look_n
        row(f"user lookup snapshot, {stage}", lwall, "s")
    return rows


def run(size: str, *, dataset=None, runs: int = 5) -> list[dict]:
    """Entry point of ``python -m benchmarks`` (synthetic data; the shared dataset is unused)."""
    from benchmarks.datasets import SIZES

    with tempfile.TemporaryDirectory(prefix="bench-lake-") as tmp:
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
