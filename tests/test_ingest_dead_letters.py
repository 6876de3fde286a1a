"""A record the flusher cannot write never holds back the others (issue 12, item 1): WAL records
written by an earlier run before validation existed (instants outside years 1-9999, a profile
of such a time, a record that no longer decodes) are moved to the dead letters, every other
event of every tenant reaches the lake, the WAL is checkpointed, a restart replays cleanly, and
the dead letters are visible through the API (tenant-scoped) and the CLI."""
from __future__ import annotations

import os
from datetime import date

import orjson
import pyarrow as pa
import typer
from typer.testing import CliRunner

from cli import data as cli_data

from engine.ingest import service as ingest
from engine.ingest.service import EVENT_SCHEMA, PROFILE_SCHEMA, encode_record, now_us
from tests.ingest_fixtures import event_ids, post, serving

pytest_plugins = ["tests.api_fixtures"]

_DAY_US = 86_400 * 10**6
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# The payloads as the WAL of an unvalidated run held them: 0001-01-01T00:00:00+14:00 and
# 9999-12-31T23:59:59-14:00, in microseconds since the epoch.
BEFORE_YEAR_1 = (date(1, 1, 1).toordinal() - _EPOCH_ORDINAL) * _DAY_US - 14 * 3600 * 10**6
AFTER_9999 = ((date(9999, 12, 31).toordinal() - _EPOCH_ORDINAL) * _DAY_US
              + (23 * 3600 + 59 * 60 + 59 + 14 * 3600) * 10**6)


def _batch(prefix: str, count: int) -> dict:
    return {"batch": [{"event_id": f"{prefix}-{i}", "user_id": f"u-{i % 3}", "event_type": "clicked"}
                      for i in range(count)]}


def _events_record(tenant_id: int, ids: list[str], occurred: list[int]) -> bytes:
    received = now_us()
    table = pa.Table.from_arrays([
        pa.array(ids), pa.array([tenant_id] * len(ids), pa.int64()), pa.array(["poison"] * len(ids)),
        pa.array(["clicked"] * len(ids)), pa.array(occurred, pa.int64()).view(pa.timestamp("us")),
        pa.array([received] * len(ids), pa.int64()).view(pa.timestamp("us")), pa.array(["{}"] * len(ids)),
    ], schema=EVENT_SCHEMA)
    return encode_record(ingest._EVENTS, table)


def _profile_record(tenant_id: int, user_ids: list[str], updated: list[int]) -> bytes:
    table = pa.Table.from_arrays([pa.array(user_ids), pa.array(['{"plan": "pro"}'] * len(user_ids)),
                                  pa.array(updated, pa.int64()).view(pa.timestamp("us"))], schema=PROFILE_SCHEMA)
    table = table.append_column("tenant_id", pa.array([tenant_id] * len(user_ids), pa.int64()))
    return encode_record(ingest._PROFILES, table)


def _poison(runtime, a: int, b: int) -> list[str]:
    """Write poisoned records straight into the WAL, as a run without validation did after its 202s;
    returns the good ids among them. 300 events of A with 3 bad ones spread out, a profile batch of
    B with one bad time, and a record that does not decode."""
    ids = [f"mixed-{i}" for i in range(300)]
    occurred = [now_us()] * 300
    for i, bad in ((0, BEFORE_YEAR_1), (150, AFTER_9999), (299, BEFORE_YEAR_1)):
        occurred[i] = bad
    runtime.ingest.wal.append([_events_record(a, ids, occurred),
                               _profile_record(b, ["p-ok", "p-bad"], [now_us(), AFTER_9999]),
                               b"PROFILES-not-arrow"])
    return [event_id for i, event_id in enumerate(ids) if i not in (0, 150, 299)]


def _wal_is_checkpointed(data_dir) -> bool:
    return not list((data_dir / "wal").glob("*.wal")) and (data_dir / "wal" / "CHECKPOINT").exists()


def _dead_letters(client, headers, **params):
    response = client.get("/api/events/dead-letters/", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_poisoned_records_are_quarantined_and_every_other_event_is_flushed(client, runtime, data_dir,
                                                                           tenant_a, tenant_b):
    a, b = tenant_a.tenant_id, tenant_b.tenant_id
    assert post(client, tenant_a.headers, _batch("a", 20)).status_code == 202
    good = _poison(runtime, a, b)
    assert post(client, tenant_b.headers, _batch("b", 10)).status_code == 202

    runtime.ingest.flush_now()
    assert sorted(event_ids(runtime, a)) == sorted([f"a-{i}" for i in range(20)] + good)
    assert sorted(event_ids(runtime, b)) == [f"b-{i}" for i in range(10)]
    assert runtime.lake.profiles_snapshot(b).rows == 1  # p-ok
    assert _wal_is_checkpointed(data_dir)

    mine = _dead_letters(client, tenant_a.headers)
    assert mine["count"] == 3
    assert sorted(d["record"]["event_id"] for d in mine["results"]) == ["mixed-0", "mixed-150", "mixed-299"]
    assert {d["kind"] for d in mine["results"]} == {"event"} and {d["tenant_id"] for d in mine["results"]} == {a}
    assert all("occurred_at" in d["reason"] for d in mine["results"])
    assert {d["record"]["occurred_at_us"] for d in mine["results"]} == {BEFORE_YEAR_1, AFTER_9999}
    first = _dead_letters(client, tenant_a.headers, limit=2)
    second = _dead_letters(client, tenant_a.headers, limit=2, offset=2)
    assert first["next"] and len(first["results"]) == 2 and len(second["results"]) == 1
    assert {d["id"] for d in first["results"] + second["results"]} == {d["id"] for d in mine["results"]}

    theirs = _dead_letters(client, tenant_b.headers)  # the tenant comes from the credential only
    assert theirs["count"] == 1
    (profile,) = theirs["results"]
    assert profile["kind"] == "profile" and profile["record"]["user_id"] == "p-bad"
    assert "updated_at" in profile["reason"]
    assert client.get("/api/events/dead-letters/", headers=tenant_a.key_headers("segments:read")).status_code == 403

    # The record that does not decode belongs to no tenant: only the operator's CLI shows it.
    app = typer.Typer()
    cli_data.register(app)
    runner = CliRunner()
    env = {"SEGOPS_DATA_DIR": str(data_dir)}
    every = runner.invoke(app, ["dead-letters"], env=env)
    assert every.exit_code == 0, every.output
    lines = [orjson.loads(line) for line in every.stdout.splitlines() if line.startswith("{")]
    assert sorted(d["kind"] for d in lines) == ["event", "event", "event", "profile", "wal_record"]
    (undecodable,) = [d for d in lines if d["kind"] == "wal_record"]
    assert undecodable["tenant_id"] is None and undecodable["record"]["payload_base64"]
    only_a = runner.invoke(app, ["dead-letters", "--tenant", str(a)], env=env)
    assert sum(line.startswith("{") for line in only_a.stdout.splitlines()) == 3
    assert "3 dead letter(s) for tenant" in only_a.output


def test_restart_replays_a_poisoned_wal_and_serves(client, runtime, data_dir, tenant_a, tenant_b):
    a, b = tenant_a.tenant_id, tenant_b.tenant_id
    post(client, tenant_a.headers, _batch("a", 5))
    good = _poison(runtime, a, b)
    post(client, tenant_b.headers, _batch("b", 5))
    runtime.stop()  # nothing flushed: all of it is in the WAL for the next start

    with serving(data_dir) as (restarted, client2):  # opening ingest replays the WAL
        assert post(client2, tenant_b.headers, _batch("b2", 2)).status_code == 202
        restarted.ingest.flush_now()
        assert sorted(event_ids(restarted, a)) == sorted([f"a-{i}" for i in range(5)] + good)
        assert sorted(event_ids(restarted, b)) == sorted([f"b-{i}" for i in range(5)] + ["b2-0", "b2-1"])
        assert _dead_letters(client2, tenant_a.headers)["count"] == 3
        assert _wal_is_checkpointed(data_dir)


def _obstruct(runtime, tenant_id: int):
    """A file where the tenant's event partitions go: every lake write for it fails with an OSError."""
    path = runtime.settings.data_dir / "lake" / "events" / f"tenant_id={tenant_id}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("not a directory")
    return path


def test_a_store_failure_during_replay_does_not_stop_startup(client, runtime, data_dir, tenant_a):
    a = tenant_a.tenant_id
    post(client, tenant_a.headers, _batch("a", 5))
    runtime.stop()
    blocker = _obstruct(runtime, a)

    with serving(data_dir) as (restarted, client2):
        restarted.ingest  # noqa: B018 - opening ingest replays the WAL, which cannot be written now
        refused = post(client2, tenant_a.headers, _batch("later", 1))
        assert refused.status_code == 503 and refused.headers["Retry-After"]
        blocker.unlink()
        restarted.ingest.flush_now()
        assert sorted(event_ids(restarted, a)) == [f"a-{i}" for i in range(5)]
        assert post(client2, tenant_a.headers, _batch("later", 1)).status_code == 202
        assert restarted.dead_letters.list(None)[0] == 0  # a store failure is never the rows' fault


def test_a_flush_retried_after_a_store_failure_writes_each_event_once(client, runtime, data_dir,
                                                                      tenant_a, tenant_b):
    a, b = tenant_a.tenant_id, tenant_b.tenant_id
    post(client, tenant_a.headers, _batch("a", 10))
    post(client, tenant_b.headers, _batch("b", 10))
    blocker = _obstruct(runtime, b)
    try:
        runtime.ingest.flush_now()
    except OSError:
        pass
    else:
        raise AssertionError("the flush should fail while tenant B's partitions cannot be written")
    assert list((data_dir / "wal").glob("*.wal"))  # nothing checkpointed
    os.unlink(blocker)
    runtime.ingest.flush_now()
    ids_a = event_ids(runtime, a)
    assert len(ids_a) == len(set(ids_a)) == 10  # A was written by the failed flush, and only then
    assert sorted(event_ids(runtime, b)) == sorted(f"b-{i}" for i in range(10))
    assert _wal_is_checkpointed(data_dir)


def test_a_dead_letters_reason_names_no_server_path():
    from engine.ingest.service import _reason

    reason = _reason(OSError("IO Error: cannot write '/srv/segops/data/lake/events/x.parquet' or s3://bucket/p/y"))
    assert reason.startswith("OSError: IO Error: cannot write") and "/srv" not in reason and "bucket" not in reason
    assert _reason(ValueError("year 0 is out of range (1/9999)")) == "ValueError: year 0 is out of range (1/9999)"
