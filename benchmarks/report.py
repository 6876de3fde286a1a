"""Presenting a benchmark run: the rich console table, ``RESULTS.md`` and the ratio chart.

``RESULTS.md`` keeps one section per dataset size (``<!-- size:10m -->`` ... markers), so a
``small`` run replaces only the small section and never the committed 10m figures. The
chart of the 10m run is ``results.png``; other sizes get ``results-<size>.png``.

Ratios are ``engine median / segops median``: above 1 means segops is faster. Targets
(checked from 10m up): segops within 1.2x of hand-written DuckDB, faster than Polars,
at least 10x faster than PostgreSQL.
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks.datasets import Dataset
from benchmarks.harness import Cell, SuiteResult
from benchmarks.suite import BY_NAME

BASELINE = "segops"
TARGET_SIZES = {"10m", "100m"}
# engine -> (minimum ratio engine/segops, how the target reads)
TARGETS = {
    "duckdb_hand": (1 / 1.2, "segops <= 1.2x hand-written DuckDB"),
    "polars": (1.0, "segops faster than Polars"),
    "postgres": (10.0, "segops >= 10x faster than PostgreSQL"),
}
LABELS = {"segops": "segops", "duckdb_hand": "DuckDB (hand SQL)", "polars": "Polars (lazy)",
          "postgres": "PostgreSQL 15", "pandas": "pandas"}
PACKAGES = ["duckdb", "sqlglot", "polars", "pyarrow", "pandas", "psycopg", "matplotlib"]


@dataclass
class ModuleRun:
    """Figures from one other ``bench_*.py`` module (or why it has none)."""

    module: str
    rows: list[dict]
    seconds: float
    error: str | None = None


# -- machine ---------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    """CPU model, cores, RAM, OS and versions, read from the running machine."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        ram = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass
    versions = []
    for package in PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    info = {"cpu": cpu, "cores": str(os.cpu_count()), "ram": ram, "os": platform.platform(),
            "python": sys.version.split()[0], "packages": ", ".join(versions)}
    from benchmarks.engines.pg_server import PG_BIN

    try:
        info["postgresql"] = subprocess.run([str(PG_BIN / "postgres"), "--version"], capture_output=True,
                                            text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        info["postgresql"] = "not installed"
    return info


# -- cell formatting -------------------------------------------------------------------------
def ratio(result: SuiteResult, segment: str, engine: str) -> float | None:
    base, other = result.cell(segment, BASELINE), result.cell(segment, engine)
    if not base or not other or base.error or other.error or not base.median or other.median is None:
        return None
    return other.median / base.median


def misses(result: SuiteResult, size: str) -> list[str]:
    """Segments where segops misses a target (only for sizes the targets are set for)."""
    if size not in TARGET_SIZES:
        return []
    found = []
    for segment in result.segments:
        for engine, (minimum, text) in TARGETS.items():
            value = ratio(result, segment, engine)
            if value is not None and value < minimum:
                found.append(f"{segment}: {text} (ratio {value:.2f})")
    return found


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _timing(cell: Cell | None) -> str:
    if cell is None:
        return "-"
    if cell.error:
        return "ERROR"
    if not cell.seconds:
        return "-"
    runs = "" if len(cell.seconds) >= 5 else f", n={len(cell.seconds)}"
    return f"{_seconds(cell.median)} ({_seconds(cell.low)}-{_seconds(cell.high)}{runs})"


def _ratio_text(result: SuiteResult, segment: str, engine: str, size: str) -> str:
    value = ratio(result, segment, engine)
    if engine == BASELINE or value is None:
        return ""
    text = f"x{value:.2f}"
    target = TARGETS.get(engine)
    if size in TARGET_SIZES and target and value < target[0]:
        text += " MISS"
    return text


def _count(result: SuiteResult, segment: str) -> str:
    counts = {c.count for e in result.engines if (c := result.cell(segment, e)) and c.count is not None}
    return f"{counts.pop():,}" if len(counts) == 1 else "DISAGREE" if counts else "-"


# -- console -------------------------------------------------------------------------------
def print_suite(console: Console, result: SuiteResult, size: str) -> None:
    table = Table(title=f"Segment suite, {size} (median of {result.runs} runs, min-max; xN = engine / segops)")
    table.add_column("segment")
    table.add_column("members", justify="right")
    for engine in result.engines:
        table.add_column(LABELS.get(engine, engine), justify="right")
    for segment in result.segments:
        row = [segment, _count(result, segment)]
        for engine in result.engines:
            text = _timing(result.cell(segment, engine))
            extra = _ratio_text(result, segment, engine, size)
            if extra:
                style = "red" if "MISS" in extra else "green"
                text += f"\n[{style}]{extra}[/{style}]"
            row.append(text)
        table.add_row(*row)
    console.print(table)
    for engine, figures in result.setup.items():
        if figures:
            console.print(f"{LABELS.get(engine, engine)} setup: " +
                          ", ".join(f"{k} {v:.1f}" for k, v in figures.items()))
    for engine, reason in result.unavailable.items():
        console.print(f"{LABELS.get(engine, engine)} did not run: {reason}", style="yellow", markup=False)


def print_modules(console: Console, modules: list[ModuleRun]) -> None:
    if not modules:
        return
    table = Table(title="Other benchmarks")
    for column in ("benchmark", "metric", "value", "min-max", "target", "met"):
        table.add_column(column)
    for run in modules:
        for row in _module_rows(run):
            table.add_row(*row)
    console.print(table)


def _module_rows(run: ModuleRun) -> list[list[str]]:
    if run.error:
        return [[run.module, "ERROR", run.error.strip().splitlines()[-1], "", "", ""]]
    if not run.rows:
        return [[run.module, "ran", _seconds(run.seconds), "", "", ""]]
    rows = []
    for row in run.rows:
        unit = row.get("unit", "")
        low_high = f"{_number(row['min'])}-{_number(row['max'])} {unit}" if "min" in row and "max" in row else ""
        met = {True: "yes", False: "MISS", None: ""}[row.get("meets_target")]
        rows.append([row["benchmark"], row["metric"], f"{_number(row['value'])} {unit}", low_high,
                     str(row.get("target", "")), met])
    return rows


def _number(value) -> str:
    if not isinstance(value, (int, float)):
        return str(value)
    if abs(value) >= 1000 or isinstance(value, int):
        return f"{value:,.0f}"
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.1f}"


# -- RESULTS.md ----------------------------------------------------------------------------
def chart_path(directory: Path, size: str) -> Path:
    return directory / ("results.png" if size == "10m" else f"results-{size}.png")


def write_chart(result: SuiteResult, size: str, path: Path) -> bool:
    """Horizontal bars of engine/segops ratios per segment (log scale); False if nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    others = [e for e in result.engines if e != BASELINE]
    series = {e: [ratio(result, s, e) for s in result.segments] for e in others}
    series = {e: values for e, values in series.items() if any(v is not None for v in values)}
    if not series:
        return False
    height = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(10, 0.55 * len(result.segments) + 1.8))
    for i, (engine, values) in enumerate(series.items()):
        positions = [y + i * height for y in range(len(result.segments))]
        ax.barh(positions, [v or 0 for v in values], height=height, label=LABELS.get(engine, engine))
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator([0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks([y + height * (len(series) - 1) / 2 for y in range(len(result.segments))])
    ax.set_yticklabels(result.segments)
    ax.invert_yaxis()
    ax.set_xlabel("median time relative to segops (log scale; > 1 = segops faster)")
    ax.set_title(f"segops benchmark suite, {size} events dataset")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def markdown_section(result: SuiteResult, modules: list[ModuleRun], dataset: Dataset, size: str, *,
                     command: str, machine_info: dict[str, str], load: tuple[tuple[float, ...], tuple[float, ...]],
                     chart: Path | None, failures: list[str], started: datetime, suite_seconds: float) -> str:
    snap = dataset.snapshot
    size_mb = sum(e.bytes for e in snap.entries) / 1e6
    lines = [
        f"## {size}: {dataset.events:,} events, {dataset.users:,} users",
        "",
        f"Run {started.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC with `{command}`.",
        "",
        f"- Machine: {machine_info['cpu']}, {machine_info['cores']} cores, {machine_info['ram']} RAM, "
        f"{machine_info['os']}",
        f"- Python {machine_info['python']}; {machine_info['packages']}; {machine_info['postgresql']}",
        f"- Load average (1/5/15 min) at start {_load(load[0])}, at end {_load(load[1])}"
        " (other work on the machine makes timings noisy; runs are interleaved across engines).",
        f"- Dataset: tenant {dataset.tenant_id}, {snap.rows:,} events in {len(snap.files)} Parquet files "
        f"({size_mb:,.0f} MB), {dataset.profiles.rows:,} profiles, seed {dataset.seed}, "
        f"as_of {dataset.as_of.isoformat()}Z.",
        f"- Wall time: segment suite {suite_seconds:.0f} s (engine setup and PostgreSQL load included)" +
        "".join(f", {run.module} {run.seconds:.0f} s" for run in modules) + ".",
        "",
        f"### Segment suite (median of {result.runs} runs after one warm-up, min-max; xN = engine / segops)",
        "",
    ]
    header = ["segment", "members"] + [LABELS.get(e, e) for e in result.engines]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for segment in result.segments:
        row = [f"`{segment}`", _count(result, segment)]
        for engine in result.engines:
            text = _timing(result.cell(segment, engine))
            extra = _ratio_text(result, segment, engine, size)
            row.append(f"{text} **{extra}**" if "MISS" in extra else f"{text} {extra}".strip())
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append("Segments: " + "; ".join(f"`{name}` {BY_NAME[name].covers}" for name in result.segments
                                       if name in BY_NAME) + ".")
    lines.append("")
    if size in TARGET_SIZES:
        missed = misses(result, size)
        lines.append("Targets: " + "; ".join(text for _, text in TARGETS.values()) + ". " +
                     (f"**{len(missed)} missed** (marked MISS)." if missed else "All met."))
    else:
        lines.append(f"Targets are checked from 10m up ({', '.join(sorted(TARGET_SIZES))}); "
                     f"at {size} fixed costs dominate.")
    lines.append("")
    lines += ["### Peak resident memory per segment (MiB)", ""]
    lines.append("Worker process high-water mark (for PostgreSQL: the backend serving the query; "
                 "parallel workers not included).")
    lines.append("")
    header = ["segment"] + [LABELS.get(e, e) for e in result.engines]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for segment in result.segments:
        row = [f"`{segment}`"]
        for engine in result.engines:
            cell = result.cell(segment, engine)
            row.append(f"{cell.peak_rss_mb:,.0f}" if cell and cell.peak_rss_mb is not None else "-")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for engine, figures in result.setup.items():
        if figures:
            lines.append(f"{LABELS.get(engine, engine)} load (not in query times): " +
                         ", ".join(f"{k} {v:.1f}" for k, v in figures.items()) + ".")
    for engine, reason in result.unavailable.items():
        lines.append(f"{LABELS.get(engine, engine)} did not run: {reason}.")
    lines.append("")
    if modules:
        lines += ["### Other benchmarks", "", "| benchmark | metric | value | min-max | target | met |",
                  "|---|---|---|---|---|---|"]
        for run in modules:
            for row in _module_rows(run):
                lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if failures:
        lines += ["### FAILURES", ""] + [f"- {failure}" for failure in failures] + [""]
    if chart is not None:
        lines += [f"![engine / segops ratios, {size}]({chart.name})", ""]
    return "\n".join(lines)


def _load(values: tuple[float, ...]) -> str:
    return "/".join(f"{v:.1f}" for v in values)


SIZE_ORDER = ["10m", "100m", "small"]
_HEADER = """# segops benchmark results

Produced by `make bench SIZE=<size>` (`python -m benchmarks --size <size>`); each section is
the latest run of that size on the machine it names. How to read and reproduce: `benchmarks/README.md`.
"""


def update_results(path: Path, size: str, section: str) -> None:
    """Replace (or add) the section of ``size`` in RESULTS.md, keeping the others."""
    sections: dict[str, str] = {}
    if path.exists():
        for match in re.finditer(r"<!-- size:(\S+) -->\n(.*?)<!-- /size:\1 -->", path.read_text(), re.S):
            sections[match.group(1)] = match.group(2)
    sections[size] = section.rstrip() + "\n"
    order = [s for s in SIZE_ORDER if s in sections] + sorted(s for s in sections if s not in SIZE_ORDER)
    body = "\n".join(f"<!-- size:{s} -->\n{sections[s]}<!-- /size:{s} -->\n" for s in order)
    path.write_text(_HEADER + "\n" + body)
