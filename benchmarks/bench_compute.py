"""Compute of every suite segment through the real pipeline (engine.membership.compute: compile, run,
materialize members.parquet, entered/exited changes, swap), as `POST .../compute/` does, on DuckDB
and on Spark local[N] side by side.

    python -m benchmarks.bench_compute --size small [--backend duckdb|spark] [--spark-cores 1,2]

The dataset's lake is hard-linked into a scratch data dir (Parquet files and manifests are
never modified in place, so links are safe), so the cached dataset is never written.

Per engine: the time of all 12 segments (DuckDB: median of ``runs``; Spark: ``spark_runs`` timed
passes after one untimed segment that warms the JVM), and the per-core throughput
``T = events read / (seconds x cores)``, where "events read" sums over the segments the rows of the
event files each one's query reads (its days, ``EVENT_DATES``; none for a profiles-only segment).
Spark runs in this process, one session per core count (``local[N]``), stopped before the next.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

from benchmarks.datasets import SIZES, ensure_dataset
from benchmarks.suite import SUITE, store_suite

# A projection's target (design 13, "Benchmark for section 3"): 100 segments over 10^10 events in 15 minutes,
# x 1.5 for skew, shuffle and scheduling.
TARGET_SEGMENTS, TARGET_EVENTS, TARGET_SECONDS, SKEW = 100, 10**10, 900, 1.5
BENCH_SPARK_CONF = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
                    "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}


def _spark_installed() -> bool:
    try:
        import pyspark  # noqa: F401
    except ModuleNotFoundError:
        return False
    return True


def run(size: str = "small", *, dataset=None, runs: int = 5, root: Path = Path("data"),
        backends: tuple[str, ...] | None = None, spark_cores: tuple[int, ...] = (1, 2),
        spark_runs: int = 1) -> list[dict]:
    """Rows for ``python -m benchmarks``; ``backends`` default: DuckDB, and Spark when pyspark is installed."""
    from engine.runtime import Runtime
    from engine.settings import Settings

    backends = backends or (("duckdb", "spark") if _spark_installed() else ("duckdb",))
    dataset = dataset or ensure_dataset(size, root=root)
    timings: dict[str, tuple[list[float], int]] = {}  # engine label -> (seconds per pass, cores)
    with tempfile.TemporaryDirectory(prefix="segops-bench-compute-") as scratch:
        shutil.copytree(dataset.data_dir / "lake", Path(scratch) / "lake", copy_function=os.link)
        runtime = Runtime(Settings(data_dir=Path(scratch), run_workers=False))
        try:
            tenant_id = store_suite(runtime, dataset)
            events_read = _events_read(runtime, tenant_id)
            if "duckdb" in backends:
                from storage.duck import _default_threads

                timings["DuckDB"] = (_compute_suite(runtime, tenant_id, runs), _default_threads())
        finally:
            runtime.stop()
        if "spark" in backends:
            from backends.spark.session import build_session, stop_session

            for cores in spark_cores:
                settings = Settings(data_dir=Path(scratch), run_workers=False, query_backend="spark",
                                    spark_master=f"local[{cores}]")
                stop_session()  # a running JVM keeps its master: local[N] needs a session of its own
                build_session(settings, **BENCH_SPARK_CONF)
                runtime = Runtime(settings)
                try:
                    _compute_suite(runtime, tenant_id, 1, segments=SUITE[:1])  # JVM warm-up, untimed
                    timings[f"Spark local[{cores}]"] = (_compute_suite(runtime, tenant_id, spark_runs), cores)
                finally:
                    runtime.stop()
            stop_session()
    return _rows(timings, events_read, runs)


def _compute_suite(runtime, tenant_id: int, runs: int, segments=SUITE) -> list[float]:
    """Seconds of each of ``runs`` passes computing ``segments`` (queued together, run in this
    process on the runtime's batch backend); the members must equal a DuckDB preview."""
    seconds = []
    for _ in range(runs):
        for segment in segments:
            runtime.compute.enqueue(tenant_id, segment.segment_id, "cli")
        started = time.perf_counter()
        jobs = runtime.compute.run_pending()
        seconds.append(time.perf_counter() - started)
        failed = [j for j in (runtime.compute.get_job(tenant_id, job) for job in jobs) if j["status"] != "done"]
        if failed:
            raise RuntimeError(f"compute failed: {failed[0]}")
    # The materialized members must equal a direct evaluation at the same as_of.
    for segment in segments:
        job = runtime.compute.list_jobs(tenant_id, segment.segment_id, 1, 0)[1][0]
        as_of = datetime.fromisoformat(job["as_of"].replace("Z", "+00:00"))
        expected = runtime.queries.preview(tenant_id, segment.definition, limit=0, as_of=as_of).matched_users
        if job["member_count"] != expected:
            raise RuntimeError(f"{segment.name}: computed {job['member_count']} members, preview says {expected}")
    return seconds


def _events_read(runtime, tenant_id: int) -> int:
    """Rows of the event files the suite's queries read, summed over the segments (a segment
    reading no events adds none; a reference's events count in the referring query's tree)."""
    from sqlglot import exp

    from backends import relations
    from compiler import EVENT_DATES

    total = 0
    for segment in SUITE:
        compiled = runtime.queries.compile(tenant_id, segment.definition)
        if any(table.db == relations.PLACEHOLDER_DB and table.name == relations.EVENTS_TABLE
               for table in compiled.query.find_all(exp.Table)):
            entries = relations.event_entries(compiled.lake.events, compiled.query.meta.get(EVENT_DATES))
            total += sum(entry.rows for entry in entries)
    return total


def _rows(timings: dict[str, tuple[list[float], int]], events_read: int, runs: int) -> list[dict]:
    rows = [{"benchmark": "compute", "metric": f"events read by the {len(SUITE)} segments", "value": events_read,
             "unit": "events", "notes": "the rows of the event files each segment's query reads, summed"}]
    duckdb = statistics.median(timings["DuckDB"][0]) if "DuckDB" in timings else None
    for engine, (seconds, cores) in timings.items():
        median = statistics.median(seconds)
        throughput = events_read / (median * cores)
        if engine == "DuckDB":  # the names earlier RESULTS.md sections used, so before/after compare
            rows += [{"benchmark": "compute", "metric": f"all {len(SUITE)} suite segments (materialized)",
                      "value": round(median, 3), "unit": "s", "runs": runs, "min": round(min(seconds), 3),
                      "max": round(max(seconds), 3)},
                     {"benchmark": "compute", "metric": "per segment (mean)",
                      "value": round(1000 * median / len(SUITE), 1), "unit": "ms"}]
        else:
            rows.append({"benchmark": "compute", "metric": f"all {len(SUITE)} suite segments, {engine}",
                         "value": round(median, 3), "unit": "s", "runs": len(seconds),
                         "min": round(min(seconds), 3), "max": round(max(seconds), 3),
                         "notes": "after one untimed segment (JVM warm-up)"})
            if duckdb:
                rows.append({"benchmark": "compute", "metric": f"{engine} / DuckDB", "value": round(median / duckdb, 2),
                             "unit": "x"})
        rows.append({"benchmark": "compute", "metric": f"T per core, {engine} ({cores} core{'s' * (cores > 1)})",
                     "value": round(throughput), "unit": "events/s/core"})
        if engine != "DuckDB":
            needed = TARGET_SEGMENTS * TARGET_EVENTS / (TARGET_SECONDS * throughput) * SKEW
            rows.append({"benchmark": "compute", "metric": f"cores for 100 segments x 10^10 events in 15 min, "
                                                           f"from {engine}", "value": round(needed), "unit": "cores",
                         "notes": "100 x E / (900 s x T) x 1.5, E = 10^10 (every segment reads the whole history)"})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=sorted(SIZES))
    parser.add_argument("--runs", type=int, default=5, help="timed DuckDB passes (median)")
    parser.add_argument("--spark-runs", type=int, default=1, help="timed Spark passes per core count")
    parser.add_argument("--root", "--data", dest="root", type=Path, default=Path("data"),
                        help="datasets are under <root>/bench/<size>")
    parser.add_argument("--backend", choices=("duckdb", "spark"), action="append",
                        help="engine(s) to time (repeatable; default: duckdb and, when installed, spark)")
    parser.add_argument("--spark-cores", default="1,2", help="comma-separated N of Spark local[N] (default 1,2)")
    args = parser.parse_args(argv)
    cores = tuple(int(n) for n in args.spark_cores.split(",") if n.strip())
    if not cores or min(cores) < 1:
        parser.error("--spark-cores takes positive integers, e.g. 1,2")
    rows = run(args.size, runs=args.runs, root=args.root, backends=tuple(args.backend or ()) or None,
               spark_cores=cores, spark_runs=args.spark_runs)
    for row in rows:
        print(f"{row['benchmark']:8} {row['metric']:60} {row['value']:>12} {row['unit']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
