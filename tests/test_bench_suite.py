"""The benchmark cannot rot: on a tiny demo dataset every engine returns exactly the members
the independent reference evaluator (tests/reference_eval.py) computes, for every suite
segment; the harness and the report do what the benchmark relies on.

Speed is never asserted here (benchmarks/ measures it); only agreement and bookkeeping.
"""
from __future__ import annotations

from datetime import datetime

import duckdb
import orjson
import pytest

from benchmarks import report
from benchmarks.datasets import Dataset, ensure_dataset
from benchmarks.engines import engine_class
from benchmarks.engines.duckdb_hand import create_lake_views
from benchmarks.harness import Cell, SuiteResult, collect_members, run_suite
from benchmarks.suite import BY_ID, SUITE, resolve_segment
from tests.reference_eval import ReferenceEvaluator

IN_PROCESS_ENGINES = ["segops", "duckdb_hand", "polars", "pandas"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Dataset:
    return ensure_dataset("tiny", events=30_000, users=600, directory=tmp_path_factory.mktemp("bench") / "tiny",
                          quiet=True)


@pytest.fixture(scope="module")
def expected(dataset) -> dict[str, set[str]]:
    """Reference members of every suite segment, from the raw JSON properties and traits."""
    with duckdb.connect() as con:
        create_lake_views(con, dataset)
        events = [{"tenant_id": tenant, "user_id": user, "event_type": kind, "occurred_at": at,
                   "properties": orjson.loads(props)}
                  for tenant, user, kind, at, props in con.execute(
                      "SELECT tenant_id, user_id, event_type, occurred_at, properties FROM events").fetchall()]
        profiles = [{"tenant_id": tenant, "user_id": user, "traits": orjson.loads(traits)}
                    for tenant, user, traits in con.execute(
                        "SELECT tenant_id, user_id, traits FROM profiles").fetchall()]
    oracle = ReferenceEvaluator(events, profiles, tenant_id=dataset.tenant_id, as_of=dataset.as_of,
                                segments={sid: segment.definition for sid, segment in BY_ID.items()})
    return {segment.name: oracle.members(segment.definition) for segment in SUITE}


def test_suite_covers_every_condition_type_and_is_not_vacuous(dataset, expected):
    types = set()

    def walk(node):
        if "logic" in node:
            types.add(node["logic"])
            for child in node["conditions"]:
                walk(child)
        else:
            types.add(node["type"])

    for segment in SUITE:
        walk(segment.definition)
    assert {"frequency", "monetary", "recency", "first_seen", "trait", "sequence", "segment",
            "AND", "OR", "NOT"} <= types
    assert len(SUITE) >= 11
    universe = len(expected["unengaged_or_lapsed_free"] | expected["pro_in_core_markets"])
    for name, members in expected.items():
        assert members, f"{name} matches nobody on the test dataset: agreement would prove nothing"
    assert any(len(members) < universe for members in expected.values())
    assert resolve_segment(3) == BY_ID[3].definition
    with pytest.raises(KeyError):
        resolve_segment(999)


def test_dataset_is_cached_and_deterministic(dataset, tmp_path):
    again = ensure_dataset("tiny", events=30_000, users=600, directory=dataset.data_dir, quiet=True)
    assert again == dataset
    assert dataset.snapshot.rows == 30_000 and dataset.profiles.rows == 600
    assert dataset.as_of == datetime(2026, 11, 15)  # benchmarks.datasets.END: fixed, not "now"
    assert max(entry.max_occurred_at for entry in dataset.snapshot.entries) <= dataset.as_of


@pytest.mark.parametrize("engine_name", IN_PROCESS_ENGINES)
def test_engine_members_match_the_reference(engine_name, dataset, expected):
    engine = engine_class(engine_name)(dataset)
    engine.setup()
    try:
        for segment in SUITE:
            members = engine.members(segment)
            assert len(members) == len(set(members)), f"{engine_name} repeats members of {segment.name}"
            assert set(members) == expected[segment.name], f"{engine_name} is wrong on {segment.name}"
            assert engine.count(segment) == len(expected[segment.name])
    finally:
        engine.close()


def test_postgres_members_match_the_reference(dataset, expected):
    reason = engine_class("postgres").unavailable()
    if reason:
        pytest.skip(reason)
    members = collect_members(dataset, "postgres", [segment.name for segment in SUITE])
    for segment in SUITE:
        assert set(members[segment.name]) == expected[segment.name], f"postgres is wrong on {segment.name}"
        assert len(members[segment.name]) == len(expected[segment.name])


def test_harness_times_engines_in_worker_processes(dataset, expected):
    segments = ["high_value_churners", "view_cart_order_7d"]
    result = run_suite(dataset, ["segops", "duckdb_hand"], segments, runs=2)
    assert result.failures() == [] and result.unavailable == {}
    for segment in segments:
        for engine in ("segops", "duckdb_hand"):
            cell = result.cell(segment, engine)
            assert cell.error is None
            assert len(cell.seconds) == 2 and all(s > 0 for s in cell.seconds)
            assert cell.counts == [len(expected[segment])] * 3  # warm-up + 2 timed runs
            assert cell.peak_rss_mb > 10  # a Python process with DuckDB loaded
        assert report.ratio(result, segment, "duckdb_hand") > 0


def _result(counts: dict[str, list[int]], seconds: dict[str, float], error: str | None = None) -> SuiteResult:
    cells = {("s", engine): Cell(engine, "s", [seconds[engine]] * 5, values) for engine, values in counts.items()}
    if error:
        cells[("s", "polars")].error = error
    return SuiteResult(list(counts), ["s"], 5, cells, {}, {})


def test_disagreements_and_errors_are_failures():
    agreed = _result({"segops": [3] * 6, "duckdb_hand": [3] * 6}, {"segops": 1.0, "duckdb_hand": 1.0})
    assert agreed.failures() == []
    disagree = _result({"segops": [3] * 6, "duckdb_hand": [4] * 6}, {"segops": 1.0, "duckdb_hand": 1.0})
    assert disagree.failures() == ["s: engines disagree on the member count: segops=3, duckdb_hand=4"]
    flaky = _result({"segops": [3, 3, 3, 2, 3, 3]}, {"segops": 1.0})
    assert "different counts across runs" in flaky.failures()[0]
    broken = _result({"segops": [3] * 6, "polars": [3] * 6}, {"segops": 1.0, "polars": 1.0},
                     error="Traceback ...\nValueError: boom")
    assert broken.failures() == ["s: polars failed: ValueError: boom"]
    not_loaded = SuiteResult([], ["s"], 5, {}, {}, {}, {"postgres": "Traceback ...\nRuntimeError: COPY failed"})
    assert not_loaded.failures() == ["postgres setup failed: RuntimeError: COPY failed"]


def test_targets_and_misses_are_marked():
    # duckdb_hand 1.0 s vs segops 1.5 s: segops is 1.5x the hand SQL (target <= 1.2x): a miss.
    result = _result({"segops": [1] * 6, "duckdb_hand": [1] * 6, "polars": [1] * 6, "postgres": [1] * 6},
                     {"segops": 1.5, "duckdb_hand": 1.0, "polars": 3.0, "postgres": 30.0})
    assert report.misses(result, "10m") == ["s: segops <= 1.2x hand-written DuckDB (ratio 0.67)"]
    assert report.misses(result, "small") == []  # targets are defined from 10m up


def test_results_file_keeps_other_sizes(tmp_path):
    path = tmp_path / "RESULTS.md"
    report.update_results(path, "small", "## small\nfirst small run\n")
    report.update_results(path, "10m", "## 10m\nthe 10m run\n")
    report.update_results(path, "small", "## small\nsecond small run\n")
    text = path.read_text()
    assert "the 10m run" in text and "second small run" in text and "first small run" not in text
    assert text.index("## 10m") < text.index("## small")  # the headline size first


def test_results_section_shows_machine_misses_and_failures(dataset):
    result = _result({"segops": [1] * 6, "duckdb_hand": [2] * 6}, {"segops": 1.5, "duckdb_hand": 1.0})
    failures = result.failures()
    section = report.markdown_section(
        result, [report.ModuleRun("bench_x", [{"benchmark": "x", "metric": "p99", "value": 2.5, "unit": "ms",
                                                "target": "<= 1 ms", "meets_target": False}], 1.0)],
        dataset, "10m", command="python -m benchmarks --size 10m", machine_info=report.machine(),
        load=((1.0, 1.0, 1.0), (2.0, 2.0, 2.0)), chart=None, failures=failures,
        started=datetime(2026, 11, 24, 12, 0), suite_seconds=42.0)
    assert "python -m benchmarks --size 10m" in section
    assert "cores" in section and "duckdb 1.5.5" in section
    assert "**x0.67 MISS**" in section  # segops 1.5 s vs hand 1.0 s misses the 1.2x target
    assert "| x | p99 | 2.5 ms |  | <= 1 ms | MISS |" in section
    assert "### FAILURES" in section and "engines disagree" in section
