"""Compute of every suite segment through the real pipeline (engine.membership.compute: compile, run,
materialize members.parquet, entered/exited changes, swap), as `POST .../compute/` does.

    python -m benchmarks.bench_compute --size small

The dataset's lake is hard-linked into a scratch data dir (Parquet files and manifests are
never modified in place, so links are safe), so the cached dataset is never written.
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
from benchmarks.suite import SUITE


def run(size: str = "small", *, dataset=None, runs: int = 5, root: Path = Path("data")) -> list[dict]:
    from compiler import parse_definition
    from engine.runtime import Runtime
    from engine.segments.store import Author, SegmentStore
    from engine.settings import Settings

    dataset = dataset or ensure_dataset(size, root=root)
    with tempfile.TemporaryDirectory(prefix="segops-bench-compute-") as scratch:
        shutil.copytree(dataset.data_dir / "lake", Path(scratch) / "lake", copy_function=os.link)
        runtime = Runtime(Settings(data_dir=Path(scratch), run_workers=False))
        try:
            tenant_id = runtime.accounts.create_tenant("bench", plan="enterprise")
            if tenant_id != dataset.tenant_id:
                raise RuntimeError(f"expected tenant id {dataset.tenant_id}, got {tenant_id}")
            store = SegmentStore(runtime.meta)
            author = Author(user_id=None, api_key_id=None)
            for segment in sorted(SUITE, key=lambda s: s.segment_id):  # ids must match the suite's references
                created = store.create(tenant_id, name=segment.name, segment_type="rule", description=segment.covers,
                                       definition=parse_definition(segment.definition), author=author)
                if created["id"] != segment.segment_id:
                    raise RuntimeError(f"{segment.name}: expected id {segment.segment_id}, got {created['id']}")
            seconds = []
            for _ in range(runs):
                for segment in SUITE:
                    runtime.compute.enqueue(tenant_id, segment.segment_id, "cli")
                started = time.perf_counter()
                jobs = runtime.compute.run_pending()
                seconds.append(time.perf_counter() - started)
                failed = [j for j in (runtime.compute.get_job(tenant_id, job) for job in jobs) if j["status"] != "done"]
                if failed:
                    raise RuntimeError(f"compute failed: {failed[0]}")
            # The materialized members must equal a direct evaluation at the same as_of.
            for segment in SUITE:
                job = runtime.compute.list_jobs(tenant_id, segment.segment_id, 1, 0)[1][0]
                as_of = datetime.fromisoformat(job["as_of"].replace("Z", "+00:00"))
                expected = runtime.queries.preview(tenant_id, segment.definition, limit=0,
                                                   as_of=as_of).matched_users
                if job["member_count"] != expected:
                    raise RuntimeError(f"{segment.name}: computed {job['member_count']} members, preview says {expected}")
        finally:
            runtime.stop()
    median = statistics.median(seconds)
    return [
        {"benchmark": "compute", "metric": f"all {len(SUITE)} suite segments (materialized)", "value": round(median, 3),
         "unit": "s", "runs": runs, "min": round(min(seconds), 3), "max": round(max(seconds), 3)},
        {"benchmark": "compute", "metric": "per segment (mean)", "value": round(1000 * median / len(SUITE), 1),
         "unit": "ms"},
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=sorted(SIZES))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--root", type=Path, default=Path("data"))
    args = parser.parse_args(argv)
    for row in run(args.size, runs=args.runs, root=args.root):
        print(f"{row['benchmark']:8} {row['metric']:40} {row['value']:>10} {row['unit']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
