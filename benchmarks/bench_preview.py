"""Preview latency of the seed example ("High-Value Churners") on the demo dataset.

    python -m benchmarks.bench_preview --size 10m      # target: median <= 0.3 s

Three ways, each answering the same question (matched count + the 10 smallest user ids):
  * engine  ``SegmentQueries.preview`` (engine.segments.query): snapshot, compile, bind, one DuckDB query;
  * http    ``POST /api/segments/preview/`` through the real ASGI app in-process (auth,
            validation, threadpool, JSON);
  * hand    the hand-written SQL of ``benchmarks.suite`` over the same Parquet files, wrapped
            in the same count + sample aggregate.
One warm-up run each, then ``--runs`` interleaved rounds; the median and the fastest run are
printed with the ratio to the hand-written query. Results are checked to agree.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.datasets import SIZES, ensure_dataset
from benchmarks.suite import SUITE, SqlContext

TARGET_SECONDS = 0.3
SAMPLE = 10


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: all DuckDB threads included). On a shared
    machine the CPU figure divided by the cores shows what an idle machine's wall time would be."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="10m", choices=sorted(SIZES))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--root", type=Path, default=Path("data"), help="datasets live in <root>/bench/<size>")
    args = parser.parse_args(argv)

    from fastapi.testclient import TestClient

    from api.app import create_app
    from engine.runtime import Runtime
    from engine.settings import Settings
    from sqlglot import exp

    from backends import relations
    from compiler import to_sql
    from storage.duck import connect

    dataset = ensure_dataset(args.size, root=args.root)
    seed = next(segment for segment in SUITE if segment.name == "high_value_churners")
    print(f"dataset {dataset.name}: {dataset.snapshot.rows:,} events in {len(dataset.snapshot.files)} files, "
          f"as_of {dataset.as_of.isoformat()}Z")

    with tempfile.TemporaryDirectory(prefix="segops-bench-") as scratch:
        settings = Settings(data_dir=Path(scratch), lake_url=str(dataset.data_dir / "lake"), read_only=True,
                            run_workers=False)
        runtime = Runtime(settings)
        tenant_id = runtime.accounts.create_tenant("bench", plan="enterprise")
        if tenant_id != dataset.tenant_id:
            raise SystemExit(f"expected the bench tenant to get id {dataset.tenant_id}, got {tenant_id}")
        _, key = runtime.accounts.create_api_key(tenant_id, "bench", ["segments:read"])
        body = {"definition": seed.definition, "limit": SAMPLE, "as_of": dataset.as_of.isoformat() + "Z"}

        hand_con = connect(settings)
        hand_con.execute("SET parquet_metadata_cache = true")  # same footing as the engine
        events = relations.events(runtime.backends.get("duckdb").scans, dataset.snapshot, dataset.snapshot.entries)
        hand_con.execute(f"CREATE VIEW events AS {to_sql(exp.select(exp.Star()).from_(events), 'duckdb')}")
        hand_sql = (f"SELECT count(*), arg_min(user_id, user_id, {SAMPLE}) FROM ("
                    f"{seed.hand_sql(SqlContext(dataset, 'duckdb'))}) AS hand")

        def engine():
            result = runtime.queries.preview(tenant_id, seed.definition, limit=SAMPLE, as_of=dataset.as_of)
            return result.matched_users, result.sample_user_ids

        with TestClient(create_app(settings, runtime=runtime)) as client:
            headers = {"Authorization": f"ApiKey {key}"}

            def http():
                response = client.post("/api/segments/preview/", json=body, headers=headers)
                response.raise_for_status()
                data = response.json()
                return data["matched_users"], data["sample_user_ids"]

            def hand():
                count, sample = hand_con.execute(hand_sql).fetchone()
                return count, list(sample or [])

            ways = {"engine": engine, "http": http, "hand": hand}
            results = {name: fn() for name, fn in ways.items()}  # warm-up (and correctness check)
            if len({repr(r) for r in results.values()}) != 1:
                raise SystemExit(f"results differ: {results}")
            times: dict[str, list[float]] = {name: [] for name in ways}
            cpu: dict[str, list[float]] = {name: [] for name in ways}
            for round_ in range(args.runs):
                order = list(ways)[round_ % 3:] + list(ways)[:round_ % 3]
                for name in order:
                    wall, used = _timed(ways[name])
                    times[name].append(wall)
                    cpu[name].append(used)
        hand_con.close()
        runtime.stop()

    matched, sample = results["engine"]
    print(f"matched_users {matched:,}; sample {sample[:3]}...")
    hand_median = statistics.median(times["hand"])
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'way':<8}{'median s':>10}{'min s':>10}{'x hand':>9}{'cpu s':>9}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<8}{median:>10.3f}{min(values):>10.3f}{median / hand_median:>9.2f}"
              f"{statistics.median(cpu[name]):>9.3f}")
    verdict = "meets" if statistics.median(times["http"]) <= TARGET_SECONDS else "MISSES"
    print(f"http median {statistics.median(times['http']):.3f} s {verdict} the {TARGET_SECONDS} s target "
          f"({args.runs} runs, {dataset.events:,} events)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
