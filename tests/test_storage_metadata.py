"""MetadataStore.page: the count of every matching row and one page of them, in order, params bound."""
from __future__ import annotations

from storage.metadata import MetadataStore


def _store(tmp_path) -> MetadataStore:
    meta = MetadataStore(tmp_path / "meta.sqlite")
    meta.ensure_schema("t", "CREATE TABLE things (id INTEGER PRIMARY KEY, tenant_id INTEGER, name TEXT);")
    for i in range(1, 8):
        meta.execute("INSERT INTO things (id, tenant_id, name) VALUES (?, ?, ?)", (i, 1 if i % 2 else 2, f"n{i}"))
    return meta


def test_page_counts_all_and_returns_one_page(tmp_path):
    meta = _store(tmp_path)
    count, rows = meta.page("things WHERE tenant_id = ?", (1,), "id", 2, 1)
    assert count == 4  # ids 1, 3, 5, 7
    assert [(r["id"], r["name"]) for r in rows] == [(3, "n3"), (5, "n5")]
    count, rows = meta.page("things WHERE tenant_id = ?", [1], "id DESC", 10, 0, columns="id")
    assert count == 4 and [tuple(r) for r in rows] == [(7,), (5,), (3,), (1,)]
    assert meta.page("things WHERE tenant_id = ?", (1,), "id", 10, 4) == (4, [])
    assert meta.page("things WHERE tenant_id = ?", (3,), "id", 10, 0) == (0, [])


def test_page_binds_values(tmp_path):
    meta = _store(tmp_path)
    hostile = "1 OR 1=1"
    assert meta.page("things WHERE name = ?", (hostile,), "id", 10, 0) == (0, [])
