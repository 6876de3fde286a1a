"""``make bench`` = ``python -m benchmarks --size small|10m|100m``.

Builds (once) the dataset, times the segment suite on every engine side by side, runs the
other ``benchmarks/bench_*.py`` modules, prints the tables and updates
``benchmarks/RESULTS.md`` and the ratio chart. Exits 1 if any engine failed or engines
disagree on a member count; 0 otherwise (missed speed targets are marked, not fatal).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from datetime import datetime, timezone
from importlib import import_module
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks import report
from benchmarks.datasets import SIZES, Dataset, ensure_dataset
from benchmarks.engines import ENGINES, engine_class
from benchmarks.harness import DEFAULT_CELL_BUDGET_S, DEFAULT_RUNS, peak_rss_mb, reset_peak_rss, run_suite
from benchmarks.suite import BY_NAME, SUITE, SqlContext

HERE = Path(__file__).resolve().parent
REQUIRED_ROW_KEYS = ("benchmark", "metric", "value", "unit")


def _names(text: str | None, known, what: str) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=list(SIZES), default="small")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="timed runs per cell (after one warm-up)")
    parser.add_argument("--engines", help=f"comma-separated subset of {', '.join(ENGINES)}")
    parser.add_argument("--segments", help="comma-separated subset of the suite")
    parser.add_argument("--modules", help="comma-separated subset of the bench_*.py modules (default: all)")
    parser.add_argument("--no-modules", action="store_true", help="only the segment suite")
    parser.add_argument("--data", type=Path, default=Path("data"), help="datasets go to <data>/bench/<size>")
    parser.add_argument("--cell-budget", type=float, default=DEFAULT_CELL_BUDGET_S,
                        help="seconds one engine may spend on one segment's timed runs (fewer runs if slow)")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md", help="markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md and charts alone")
    parser.add_argument("--json", type=Path, help="also dump the raw timings here")
    parser.add_argument("--show-sql", metavar="SEGMENT",
                        help="print segops' compiled SQL and the hand-written SQL of SEGMENT, then exit")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def default_engines(dataset: Dataset) -> list[str]:
    return [name for name in ENGINES
            if (limit := engine_class(name).max_events) is None or dataset.events <= limit]


def run_modules(size: str, dataset: Dataset, runs: int, wanted: list[str] | None,
                console: Console) -> list[report.ModuleRun]:
    """Run every present ``bench_*.py`` module: ``run(size, dataset=, runs=)`` or ``main([...])``."""
    results = []
    for path in sorted(HERE.glob("bench_*.py")):
        name = path.stem
        if wanted is not None and name not in wanted:
            continue
        console.print(f"running {name}")
        started = time.perf_counter()
        reset_peak_rss(os.getpid())
        try:
            module = import_module(f"benchmarks.{name}")
            if hasattr(module, "run"):
                rows = list(module.run(size, dataset=dataset, runs=runs))
                for index, row in enumerate(rows):
                    missing = [key for key in REQUIRED_ROW_KEYS if key not in row]
                    if missing:
                        raise ValueError(f"row {index} lacks {missing}: {row}")
            elif hasattr(module, "main"):
                code = module.main(["--size", size])
                if code:
                    raise RuntimeError(f"{name}.main exited with {code}")
                rows = []
            else:
                raise AttributeError(f"{name} has neither run(size, dataset=, runs=) nor main(argv)")
            peak = peak_rss_mb(os.getpid())
            if peak:  # servers a module starts report their own peak
                rows.append({"benchmark": name.removeprefix("bench_"), "metric": "peak memory, benchmark process",
                             "value": round(peak), "unit": "MiB"})
            results.append(report.ModuleRun(name, rows, time.perf_counter() - started))
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt):
                raise
            console.print(f"[red]{name} failed:[/red]\n{escape(traceback.format_exc())}")
            results.append(report.ModuleRun(name, [], time.perf_counter() - started, traceback.format_exc()))
    return results


def show_sql(dataset: Dataset, segment_name: str) -> None:
    """segops' compiled SQL (display form) and the hand-written SQL, unwrapped on stdout."""
    from benchmarks.engines.segops import SegopsEngine

    segment = BY_NAME[segment_name]
    engine = SegopsEngine(dataset)
    engine.setup()
    try:
        print(f"-- segops ({segment_name}), display form:\n{engine.compiled(segment).display_sql()}")
    finally:
        engine.close()
    for dialect in ("duckdb", "postgres"):
        print(f"-- hand-written, {dialect}:{segment.hand_sql(SqlContext(dataset, dialect))}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 160)  # logs keep the table readable
    started = datetime.now(timezone.utc)
    load_start = os.getloadavg()
    dataset = ensure_dataset(args.size, root=args.data)
    if args.show_sql:
        show_sql(dataset, _names(args.show_sql, BY_NAME, "segment")[0])
        return 0
    engines = _names(args.engines, ENGINES, "engines") or default_engines(dataset)
    if "segops" not in engines:
        engines.insert(0, "segops")  # every ratio is relative to it
    segments = _names(args.segments, BY_NAME, "segments") or [s.name for s in SUITE]
    console.print(f"dataset {dataset.name}: {dataset.events:,} events, {dataset.users:,} users, "
                  f"as_of {dataset.as_of.isoformat()}Z ({dataset.data_dir})")

    suite_started = time.perf_counter()
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("setting up engines", total=len(segments))

        def step(segment: str) -> None:
            progress.update(task, completed=segments.index(segment), description=f"segment {segment}")

        result = run_suite(dataset, engines, segments, runs=args.runs, cell_budget_s=args.cell_budget,
                           log=lambda message, style: progress.console.print(message, style=style or None,
                                                                            markup=False),
                           step=step)
    suite_seconds = time.perf_counter() - suite_started
    report.print_suite(console, result, args.size)
    console.print(f"segment suite: {suite_seconds:.0f} s wall (engine setup included)")
    failures = result.failures()

    modules: list[report.ModuleRun] = []
    if not args.no_modules:
        modules = run_modules(args.size, dataset, args.runs, _names(args.modules, _module_names(), "modules"),
                              console)
        report.print_modules(console, modules)
        failures += [f"{run.module} failed: {run.error.strip().splitlines()[-1]}" for run in modules if run.error]

    for miss in report.misses(result, args.size):
        console.print(f"[red]target missed[/red]: {escape(miss)}")
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "suite": result.to_json(),
                                         "modules": [vars(m) for m in modules]}, indent=2, default=str))
    if not args.no_write:
        chart = report.chart_path(args.results.parent, args.size)
        drawn = report.write_chart(result, args.size, chart)
        section = report.markdown_section(
            result, modules, dataset, args.size, command="python -m benchmarks " + " ".join(argv),
            machine_info=report.machine(), load=(load_start, os.getloadavg()),
            chart=chart if drawn else None, failures=failures, started=started, suite_seconds=suite_seconds)
        report.update_results(args.results, args.size, section)
        console.print(f"wrote {args.results}" + (f" and {chart}" if drawn else ""))
    if failures:
        console.rule("[bold red]BENCHMARK FAILURE")
        for failure in failures:
            console.print(f"[bold red]FAILURE[/bold red] {escape(failure)}")
        console.rule("[bold red]BENCHMARK FAILURE")
        return 1
    return 0


def _module_names() -> list[str]:
    return [path.stem for path in sorted(HERE.glob("bench_*.py"))]


if __name__ == "__main__":
    sys.exit(main())
