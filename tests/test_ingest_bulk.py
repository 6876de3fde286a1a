"""`segops ingest FILE`: NDJSON/CSV/Parquet into the lake, validated all-or-nothing, deduplicated."""
from __future__ import annotations

from datetime import datetime

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from engine.ingest.bulk import BulkIngestError, ingest_file
from tests.ingest_fixtures import event_ids, lake_rows, post

pytest_plugins = ["tests.api_fixtures"]

ROWS = [
    {"event_id": "b-1", "user_id": "u1", "event_type": "order_placed", "occurred_at": "2026-03-01T10:00:00+01:00",
     "properties": {"total": 12.5, "currency": "EUR"}},
    {"event_id": "b-2", "user_id": "u2", "event_type": "page_viewed", "occurred_at": "2026-03-02T08:30:00Z",
     "properties": {"path": "/"}},
    {"event_id": "b-1", "user_id": "u1", "event_type": "order_placed", "occurred_at": "2026-03-01T09:00:00Z",
     "properties": {"total": 12.5, "currency": "EUR"}},  # a repeat inside the file
    {"user_id": "u3", "event_type": "signup", "occurred_at": "2026-03-03 12:00:00"},  # no id; naive = UTC
]


def _ndjson(path, rows):
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def _expected_lake(rows: list[dict]) -> dict:
    by_type = {r["event_type"]: r for r in rows}
    assert by_type["order_placed"]["event_id"] == "b-1"
    assert by_type["order_placed"]["occurred_at"] == datetime(2026, 3, 1, 9, 0)  # +01:00 -> UTC
    assert orjson.loads(by_type["order_placed"]["properties"]) == {"total": 12.5, "currency": "EUR"}
    assert by_type["signup"]["occurred_at"] == datetime(2026, 3, 3, 12, 0)
    assert by_type["signup"]["properties"] == "{}"
    assert by_type["signup"]["event_id"] not in ("", None)
    return by_type


def test_ndjson_load_dedups_within_file_and_on_rerun(runtime, tenant_a, tmp_path):
    path = _ndjson(tmp_path / "events.ndjson", ROWS)
    first = ingest_file(runtime.lake, tenant_a.tenant_id, path)
    assert (first.rows, first.written, first.duplicates) == (4, 3, 1)
    rows = lake_rows(runtime, tenant_a.tenant_id)
    assert len(rows) == 3
    _expected_lake(rows)
    received = {r["received_at"] for r in rows}
    assert len(received) == 1 and (datetime.utcnow() - received.pop()).total_seconds() < 120

    again = ingest_file(runtime.lake, tenant_a.tenant_id, path)
    assert (again.written, again.duplicates) == (1, 3)  # only the id-less row is new again
    assert len(lake_rows(runtime, tenant_a.tenant_id)) == 4


def test_csv_and_parquet_files_load_the_same_way(runtime, tenant_a, tenant_b, tmp_path):
    csv = tmp_path / "events.csv"
    lines = ["event_id,user_id,event_type,occurred_at,properties,ignored_column"]
    for r in ROWS:
        props = orjson.dumps(r["properties"]).decode().replace('"', '""') if "properties" in r else ""
        lines.append(f'{r.get("event_id", "")},{r["user_id"]},{r["event_type"]},{r["occurred_at"]},"{props}",x')
    csv.write_text("\n".join(lines) + "\n")
    result = ingest_file(runtime.lake, tenant_a.tenant_id, csv)
    assert (result.written, result.duplicates) == (3, 1)
    _expected_lake(lake_rows(runtime, tenant_a.tenant_id))

    parquet = tmp_path / "events.parquet"
    pq.write_table(pa.table({
        "event_id": [r.get("event_id") for r in ROWS],
        "user_id": [r["user_id"] for r in ROWS],
        "event_type": [r["event_type"] for r in ROWS],
        "occurred_at": pa.array([datetime(2026, 3, 1, 9), datetime(2026, 3, 2, 8, 30), datetime(2026, 3, 1, 9),
                                 datetime(2026, 3, 3, 12)], pa.timestamp("us")),
        "properties": [orjson.dumps(r["properties"]).decode() if "properties" in r else None for r in ROWS],
    }), parquet)
    result = ingest_file(runtime.lake, tenant_b.tenant_id, parquet)
    assert (result.written, result.duplicates) == (3, 1)
    _expected_lake(lake_rows(runtime, tenant_b.tenant_id))


def test_invalid_rows_reject_the_whole_file(runtime, tenant_a, tmp_path):
    rows = [dict(r) for r in ROWS]
    rows[1]["occurred_at"] = "the day after"
    rows[3] = {"event_type": "signup"}
    rows.append({"user_id": "u9", "event_type": "x", "properties": [1, 2]})
    with pytest.raises(BulkIngestError) as err:
        ingest_file(runtime.lake, tenant_a.tenant_id, _ndjson(tmp_path / "bad.ndjson", rows))
    assert err.value.problems == ["row 2: occurred_at: not an ISO 8601 timestamp", "row 4: user_id: required",
                                  "row 5: properties: must be a JSON object"]
    assert event_ids(runtime, tenant_a.tenant_id) == []

    csv = tmp_path / "no_type.csv"
    csv.write_text("user_id,occurred_at\nu1,2026-01-01T00:00:00Z\n")
    with pytest.raises(BulkIngestError, match="event_type"):
        ingest_file(runtime.lake, tenant_a.tenant_id, csv)
    broken = tmp_path / "broken.ndjson"
    broken.write_text('{"user_id": "u1", "event_type": "x"}\n{"user_id": \n')
    with pytest.raises(BulkIngestError, match="cannot read"):
        ingest_file(runtime.lake, tenant_a.tenant_id, broken)


def test_ids_accepted_by_the_api_are_not_loaded_twice(client, runtime, tenant_a, tmp_path):
    flushed = {"batch": [{"event_id": "api-1", "user_id": "u", "event_type": "x"}]}
    assert post(client, tenant_a.headers, flushed).json()["accepted"] == 1
    runtime.ingest.flush_now()
    pending = {"batch": [{"event_id": "both-1", "user_id": "u", "event_type": "x"}]}
    assert post(client, tenant_a.headers, pending).json()["accepted"] == 1  # in the WAL only

    path = _ndjson(tmp_path / "overlap.ndjson", [
        {"event_id": "api-1", "user_id": "u", "event_type": "x"},
        {"event_id": "both-1", "user_id": "u", "event_type": "x"},
        {"event_id": "file-1", "user_id": "u", "event_type": "x"},
    ])
    result = ingest_file(runtime.lake, tenant_a.tenant_id, path)
    assert (result.written, result.duplicates) == (2, 1)  # api-1 was already in the lake
    runtime.ingest.flush_now()  # the server sees the file's commit and drops its own copy of both-1
    assert sorted(event_ids(runtime, tenant_a.tenant_id)) == ["api-1", "both-1", "file-1"]
    retry = post(client, tenant_a.headers, {"batch": [{"event_id": "file-1", "user_id": "u", "event_type": "x"}]})
    assert retry.json()["duplicates"] == 1  # the server's dedup window now knows the file's ids


def test_cli_ingest_reports_and_fails_cleanly(runtime, data_dir, tenant_a, tmp_path, monkeypatch):
    from cli.app import add_command_groups, app

    monkeypatch.setenv("SEGOPS_DATA_DIR", str(data_dir))
    add_command_groups()
    runner = CliRunner()
    path = _ndjson(tmp_path / "events.jsonl", ROWS)
    ok = runner.invoke(app, ["--data", str(data_dir), "ingest", str(path), "--tenant", str(tenant_a.tenant_id)])
    assert ok.exit_code == 0, ok.output
    assert "3 written, 1 duplicate" in ok.output
    assert len(event_ids(runtime, tenant_a.tenant_id)) == 3

    bad = _ndjson(tmp_path / "bad.ndjson", [{"user_id": "u"}])
    failed = runner.invoke(app, ["--data", str(data_dir), "ingest", str(bad), "--tenant", str(tenant_a.tenant_id)])
    assert failed.exit_code == 2 and "row 1: event_type: required" in failed.output
    unknown = runner.invoke(app, ["--data", str(data_dir), "ingest", str(path), "--tenant", "999"])
    assert unknown.exit_code == 2 and "no tenant 999" in unknown.output
