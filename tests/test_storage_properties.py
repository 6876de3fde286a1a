"""Typed property columns: DuckDB extraction against an independent Python reference."""
from __future__ import annotations

import json
import math

import duckdb
import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.properties import MAX_TYPED_COLUMNS, Catalog, discover, typed_select

KEYS = ["plan", "Plan", "total", "a b/c", "ünï", "x" * 70, "", "n"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
)
values = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(st.sampled_from(KEYS), scalars, max_size=2))
objects = st.dictionaries(st.sampled_from(KEYS), values, max_size=5)


def _kind(value):
    """The reference rule: JSON scalar -> kind; null/object/array -> none."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _reference(rows: list[dict], decided: dict) -> tuple[dict, list[dict]]:
    """decided: name -> kind, or None for JSON-only. The first non-null value decides."""
    decided = dict(decided)
    for row in rows:
        for key, value in row.items():
            if key not in decided and value is not None:
                decided[key] = _kind(value)
    kinds = {k: v for k, v in decided.items() if v is not None}
    typed = []
    for row in rows:
        out = {}
        for key, kind in kinds.items():
            value = row.get(key)
            if _kind(value) != kind:
                out[key] = None
            elif kind == "number":
                out[key] = float(value)
            else:
                out[key] = value
        typed.append(out)
    return decided, typed


def _extract(rows: list[dict], catalog: Catalog) -> tuple[Catalog, list[dict]]:
    con = duckdb.connect()
    batch = pa.table({"props": [json.dumps(r, ensure_ascii=False) for r in rows],
                      "rn": pa.array(np.arange(len(rows), dtype=np.int64))})
    con.register("batch", batch)
    catalog = discover(con, "batch", "props", "rn", catalog, "p_")
    sql, params = typed_select(catalog, "SELECT * FROM batch", "props", ["rn"])
    result = con.execute(f"{sql} ORDER BY rn", params).to_arrow_table().to_pylist()
    by_name = {name: col for name, (col, _) in catalog.columns.items()}
    return catalog, [{name: r[col] for name, col in by_name.items()} for r in result]


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or math.isclose(a, b, rel_tol=1e-15)
    return a == b


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=st.lists(objects, min_size=1, max_size=8), second=st.lists(objects, min_size=1, max_size=8))
def test_typed_columns_match_reference_across_batches(first, second):
    def decisions(catalog):
        return {**{name: kind for name, (_, kind) in catalog.columns.items()}, **dict.fromkeys(catalog.json_only)}

    catalog, typed = _extract(first, Catalog.empty())
    decided, expected = _reference(first, {})
    assert decisions(catalog) == decided
    assert all(_same(typed[i][k], expected[i][k]) for i in range(len(first)) for k in expected[0]), (typed, expected)

    # A second batch keeps every earlier decision (first kind wins) and adds new names only.
    catalog2, typed2 = _extract(second, catalog)
    decided2, expected2 = _reference(second, decided)
    assert decisions(catalog2) == decided2
    assert all(catalog2.columns[name] == catalog.columns[name] for name in catalog.columns)
    assert all(_same(typed2[i][k], expected2[i][k]) for i in range(len(second)) for k in expected2[0]), (typed2, expected2)


def test_conflicting_kinds_keep_the_first_and_null_the_rest():
    rows = [{"v": None}, {"v": "12"}, {"v": 12}, {"v": True}, {"v": {"nested": 1}}, {"v": "x"}]
    catalog, typed = _extract(rows, Catalog.empty())
    assert catalog.columns == {"v": ("p_v", "string")}  # the first non-null value is a string
    assert [r["v"] for r in typed] == [None, "12", None, None, None, "x"]

    catalog, typed = _extract([{"v": 1.5}, {"v": "1.5"}, {"v": False}], Catalog({"v": ("p_v", "number")}))
    assert [r["v"] for r in typed] == [1.5, None, None]


def test_objects_and_arrays_first_make_a_property_json_only():
    catalog, _ = _extract([{"items": [1], "meta": None}, {"items": 3, "meta": None}], Catalog.empty())
    assert catalog.columns == {} and catalog.json_only == {"items"}  # "meta" undecided: only nulls
    catalog, typed = _extract([{"items": 4, "meta": {"a": 1}}, {"meta": "s"}], catalog)
    assert catalog.columns == {} and catalog.json_only == {"items", "meta"}
    restored = Catalog.from_json(catalog.to_json(), sorted(catalog.json_only))
    assert restored == catalog


def test_column_names_are_safe_unique_and_stable():
    catalog = Catalog.empty().extended({"Plan": "string", "plan": "number", "a b/c": "boolean", "x" * 80: "number"}, "p_")
    columns = {name: col for name, (col, _) in catalog.columns.items()}
    assert columns["Plan"] == "p_plan" and columns["plan"] == "p_plan__2"  # sorted: "Plan" < "plan"
    assert columns["a b/c"] == "p_a_b_c"
    assert columns["x" * 80] == "p_" + "x" * 48
    assert len({c.lower() for c in columns.values()}) == len(columns)
    again = catalog.extended({"PLAN": "string", "plan": "boolean"}, "p_")
    assert again.columns["plan"] == catalog.columns["plan"]  # known names keep column and kind
    assert again.columns["PLAN"][0] == "p_plan__3"
    restored = Catalog.from_json(json.loads(json.dumps(again.to_json())), sorted(again.json_only))
    assert restored == again


def test_typed_column_cap():
    catalog = Catalog.empty().extended({f"k{i:04d}": "number" for i in range(MAX_TYPED_COLUMNS + 10)}, "p_")
    assert len(catalog.columns) == MAX_TYPED_COLUMNS
    assert catalog.extended({"late": "string"}, "p_") == catalog
