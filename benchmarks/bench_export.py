"""Parquet export of a 1M-member computed segment, against a plain DuckDB COPY of the same file.

    python -m benchmarks.bench_export                 # target: median <= 0.5 s
    python -m benchmarks.bench_export --users 100000

The audience is bench_membership's (built once, cached); its first segment holds every user.
``export`` is ``Exports.run`` end to end: claim in SQLite, ``COPY ... TO`` the store's scratch
directory, atomic rename under the export's key, bookkeeping. ``plain`` is
``COPY (SELECT * FROM read_parquet(members)) TO ... (FORMAT parquet)`` on its own connection
(same settings): the floor for writing the same rows. One warm-up each, then ``--runs`` interleaved rounds.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from benchmarks.bench_membership import ensure_audience

TARGET_SECONDS = 0.5


def run(size: str = "small", dataset=None, runs: int | None = None, *, users: int | None = None,
        root: Path = Path("data")) -> list[dict]:
    """Figures as rows for ``python -m benchmarks``: a 1M-member audience (100k at ``--size small``)."""
    users = users or (100_000 if size == "small" else 1_000_000)
    from engine.runtime import Runtime
    from engine.settings import Settings
    from storage.duck import connect

    runs = runs or 5
    audience = ensure_audience(root, users, 20)
    runtime = Runtime(Settings(data_dir=audience.data_dir, run_workers=False))
    segment = audience.segments[0]["id"]
    members_key = runtime.meta.query_one(
        "SELECT c.members_key FROM segments s JOIN segment_computations c ON c.id = s.current_computation_id"
        " WHERE s.id = ?", (segment,))[0]
    members_path = runtime.lake.store.duckdb_path(members_key)
    plain_con = connect(runtime.settings)
    plain_con.execute("SET parquet_metadata_cache = true")  # as engine.segments.query's connection
    plain_target = runtime.lake.store.new_scratch_path(".parquet")  # the same file system as the export

    def export() -> int:
        created = runtime.exports.create(audience.tenant_id, segment, "parquet", trigger="cli")
        done = runtime.exports.run(created["export_id"])
        if done["status"] != "done":
            raise SystemExit(f"export failed: {done['error']}")
        runtime.lake.store.delete(runtime.exports.file(audience.tenant_id, done["export_id"]).key)
        return done["row_count"]

    def plain() -> int:
        rows = plain_con.execute(f"COPY (SELECT * FROM read_parquet('{members_path}')) TO '{plain_target}' "
                                 "(FORMAT parquet)").fetchone()[0]
        plain_target.unlink()
        return rows

    ways = {"export": export, "plain": plain}
    counts = {name: fn() for name, fn in ways.items()}  # warm-up
    if set(counts.values()) != {audience.users}:
        raise SystemExit(f"row counts {counts}, expected {audience.users}")
    times: dict[str, list[float]] = {name: [] for name in ways}
    for round_ in range(runs):
        for name in (list(ways) if round_ % 2 == 0 else list(reversed(ways))):
            started = time.perf_counter()
            ways[name]()
            times[name].append(time.perf_counter() - started)
    plain_con.close()
    runtime.stop()

    export_median, plain_median = statistics.median(times["export"]), statistics.median(times["plain"])
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {audience.users:,} members, {runs} runs")
    print(f"{'way':<8}{'median s':>10}{'min s':>10}{'x plain':>9}")
    for name, values in times.items():
        print(f"{name:<8}{statistics.median(values):>10.3f}{min(values):>10.3f}"
              f"{statistics.median(values) / plain_median:>9.2f}")
    verdict = "meets" if export_median <= TARGET_SECONDS else "MISSES"
    print(f"export median {export_median:.3f} s {verdict} the {TARGET_SECONDS} s target "
          f"({export_median / TARGET_SECONDS:.2f}x of it; {export_median / plain_median:.2f}x plain COPY)")
    return [
        {"benchmark": "export", "metric": f"Parquet export, {audience.users:,} members", "value": round(export_median, 4),
         "unit": "s", "min": round(min(times["export"]), 4), "max": round(max(times["export"]), 4),
         "target": f"<= {TARGET_SECONDS} s", "meets_target": export_median <= TARGET_SECONDS},
        {"benchmark": "export", "metric": "plain DuckDB COPY of the same file", "value": round(plain_median, 4),
         "unit": "s", "min": round(min(times["plain"]), 4), "max": round(max(times["plain"]), 4)},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", help="accepted for `python -m benchmarks`; the audience is --users")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--root", type=Path, default=Path("data"), help="the audience lives in <root>/bench/")
    args = parser.parse_args(argv)
    run(args.size, runs=args.runs, users=args.users, root=args.root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
