"""Explain one user's membership, and an edit's impact against a preview of the same draft.

    python -m benchmarks.bench_explain --size 10m      # targets: explain p50 <= 50 ms, impact <= 1.5x preview

* explain  ``Explainer.explain_segment`` for one user (its two queries over the snapshot,
           restricted to that user), of the seed segment and of the 3-step sequence, over
           members, non-members and an unknown user of the dataset; p50 and p90 of all calls.
* impact   ``Explainer.impact`` of a draft of the seed (sum >= 400 instead of 500) against
           the segment's computation, and ``SegmentQueries.preview`` of the same draft at
           the same as_of (count + 10 ids): medians and their ratio. Impact also reads the
           current members file and sets members apart; the draft's members are the one query.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.datasets import SIZES, ensure_dataset
from benchmarks.suite import BY_NAME, store_suite

TARGET_EXPLAIN_MS = 50.0
TARGET_IMPACT_RATIO = 1.5
USERS = 12


def _row(metric: str, value: float, unit: str, target: float | None = None, **extra) -> dict:
    row = {"benchmark": "explain", "metric": metric, "value": round(value, 4), "unit": unit, **extra}
    if target is not None:
        row["target"] = f"<= {target:g} {unit}"
        row["meets_target"] = value <= target
    return row


def _times(fn, runs: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def run(size: str = "small", *, dataset=None, runs: int = 5, root: Path = Path("data")) -> list[dict]:
    from engine.runtime import Runtime
    from engine.settings import Settings

    dataset = dataset or ensure_dataset(size, root=root)
    with tempfile.TemporaryDirectory(prefix="segops-bench-explain-") as scratch:
        shutil.copytree(dataset.data_dir / "lake", Path(scratch) / "lake", copy_function=os.link)
        runtime = Runtime(Settings(data_dir=Path(scratch), run_workers=False))
        try:
            tenant_id = store_suite(runtime, dataset)
            seed, sequence = BY_NAME["high_value_churners"], BY_NAME["view_cart_order_7d"]
            as_of = dataset.as_of
            members = runtime.queries.preview(tenant_id, seed.definition, limit=USERS // 2, as_of=as_of)
            everyone = runtime.queries.preview(tenant_id, {"type": "first_seen", "operator": "gt",
                                                                  "window_days": 1}, limit=USERS, as_of=as_of)
            users = list(dict.fromkeys(members.sample_user_ids + everyone.sample_user_ids))[:USERS] + ["nobody"]
            for user in members.sample_user_ids:  # the explanation agrees with membership
                if not runtime.explainer.explain_segment(tenant_id, seed.segment_id, user, as_of=as_of)["member"]:
                    raise RuntimeError(f"explain says {user} is not in {seed.name}; the preview says it is")
            explain_seconds: dict[str, list[float]] = {}
            for segment in (seed, sequence):
                explain_seconds[segment.name] = [t for user in users for t in _times(
                    lambda: runtime.explainer.explain_segment(tenant_id, segment.segment_id, user, as_of=as_of),
                    max(1, runs // 2))]

            runtime.compute.enqueue(tenant_id, seed.segment_id, "cli")
            runtime.compute.run_pending()
            job = runtime.compute.list_jobs(tenant_id, seed.segment_id, 1, 0)[1][0]
            if job["status"] != "done":
                raise RuntimeError(f"compute failed: {job}")
            draft = {**seed.definition, "conditions": [{**seed.definition["conditions"][0], "value": 400},
                                                       *seed.definition["conditions"][1:]]}
            answer = runtime.explainer.impact(tenant_id, seed.segment_id, draft)
            computed_at = answer["as_of"]
            preview = runtime.queries.preview(tenant_id, draft, limit=10, as_of=computed_at)
            if answer["enter"]["count"] + answer["stay"]["count"] != preview.matched_users:
                raise RuntimeError(f"impact {answer} disagrees with the preview ({preview.matched_users})")
            impact_seconds = _times(lambda: runtime.explainer.impact(tenant_id, seed.segment_id, draft), runs)
            preview_seconds = _times(lambda: runtime.queries.preview(tenant_id, draft, limit=10,
                                                                     as_of=computed_at), runs)
        finally:
            runtime.stop()
    rows = []
    for name, seconds in explain_seconds.items():
        ms = sorted(1000 * s for s in seconds)
        rows.append(_row(f"explain p50, one user ({name})", statistics.median(ms), "ms", TARGET_EXPLAIN_MS,
                         runs=len(ms), min=round(ms[0], 2), max=round(ms[-1], 2),
                         notes=f"p90 {ms[int(0.9 * (len(ms) - 1))]:.1f} ms over {len(users)} users"))
    impact_median, preview_median = statistics.median(impact_seconds), statistics.median(preview_seconds)
    rows += [
        _row("impact of a seed edit (vs its computation)", impact_median, "s", runs=runs,
             min=round(min(impact_seconds), 4), max=round(max(impact_seconds), 4),
             notes=f"enter {answer['enter']['count']:,}, stay {answer['stay']['count']:,}, "
                   f"leave {answer['leave']['count']:,}"),
        _row("preview of the same draft", preview_median, "s", runs=runs,
             min=round(min(preview_seconds), 4), max=round(max(preview_seconds), 4)),
        _row("impact / preview", impact_median / preview_median, "x", TARGET_IMPACT_RATIO),
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_explain", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="10m", choices=sorted(SIZES))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--root", type=Path, default=Path("data"), help="datasets live in <root>/bench/<size>")
    args = parser.parse_args(argv)
    for row in run(args.size, runs=args.runs, root=args.root):
        verdict = "meets" if row.get("meets_target") else "MISSES"
        target = f"  (target {row['target']}: {verdict})" if "target" in row else ""
        print(f"{row['metric']:<48} {row['value']:>10,} {row['unit']:<3} {row.get('notes', '')}{target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
