"""Durability of acknowledged events across restarts, torn WAL tails and a crash between the
lake commit and the WAL checkpoint; the background flusher; concurrency of the committer."""
from __future__ import annotations

import os
import shutil
import threading
import time

from engine.ingest.parse import parse_track
from tests.ingest_fixtures import event_ids, post, serving

pytest_plugins = ["tests.api_fixtures"]


def _batch(start: int, count: int) -> dict:
    return {"batch": [{"event_id": f"e-{i}", "user_id": f"u-{i % 5}", "event_type": "clicked"}
                      for i in range(start, start + count)]}


def test_restart_replays_unflushed_events_once(client, runtime, data_dir, tenant_a):
    assert post(client, tenant_a.headers, _batch(0, 50)).json()["accepted"] == 50
    runtime.stop()  # no flusher ran: the events exist only in the WAL
    assert event_ids(runtime, tenant_a.tenant_id) == []

    with serving(data_dir) as (restarted, client2):
        restarted.ingest.flush_now()  # opening the service already replayed the WAL
        assert sorted(event_ids(restarted, tenant_a.tenant_id)) == sorted(f"e-{i}" for i in range(50))
        again = post(client2, tenant_a.headers, _batch(40, 20)).json()  # retries straddling the restart
        assert (again["accepted"], again["duplicates"]) == (10, 10)
        restarted.ingest.flush_now()
        assert len(event_ids(restarted, tenant_a.tenant_id)) == 60
    assert not list((data_dir / "wal").glob("*.wal"))  # everything checkpointed and deleted


def test_torn_wal_tail_is_discarded_on_replay(client, runtime, data_dir, tenant_a):
    post(client, tenant_a.headers, _batch(0, 10))
    post(client, tenant_a.headers, _batch(10, 10))
    runtime.stop()
    (segment,) = sorted((data_dir / "wal").glob("*.wal"))
    os.truncate(segment, segment.stat().st_size - 7)  # the second record was cut by a crash

    with serving(data_dir) as (restarted, _):
        restarted.ingest.flush_now()
        assert sorted(event_ids(restarted, tenant_a.tenant_id)) == sorted(f"e-{i}" for i in range(10))


def test_crash_between_lake_commit_and_checkpoint_does_not_duplicate(client, runtime, data_dir, tenant_a):
    post(client, tenant_a.headers, _batch(0, 30))
    post(client, tenant_a.headers, {"batch": [{"user_id": "anon", "event_type": "no_id"}]})
    wal_before = data_dir.parent / "wal-before-flush"
    runtime.ingest.wal.seal()  # close the active segment so its bytes are final
    shutil.copytree(data_dir / "wal", wal_before, ignore=shutil.ignore_patterns("LOCK"))
    runtime.ingest.flush_now()
    assert len(event_ids(runtime, tenant_a.tenant_id)) == 31
    runtime.stop()
    # The on-disk state of a crash right after the lake commit: the lake has the events and
    # the WAL still has them, with the old checkpoint.
    shutil.rmtree(data_dir / "wal")
    shutil.copytree(wal_before, data_dir / "wal")

    with serving(data_dir) as (restarted, client2):
        restarted.ingest.flush_now()
        ids = event_ids(restarted, tenant_a.tenant_id)
        assert len(ids) == len(set(ids)) == 31
        assert post(client2, tenant_a.headers, _batch(0, 30)).json()["duplicates"] == 30


def test_background_flusher_moves_events_to_the_lake_and_flushes_on_shutdown(data_dir, tenants):
    tenant = tenants.a
    with serving(data_dir, run_workers=True, flush_interval=0.2) as (rt, client):
        post(client, tenant.headers, _batch(0, 25))
        deadline = time.monotonic() + 20
        while len(event_ids(rt, tenant.tenant_id)) < 25 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(event_ids(rt, tenant.tenant_id)) == 25
        rt.ingest.flush_interval = 3600  # from now on only the shutdown flush can move events
        time.sleep(0.5)
        post(client, tenant.headers, _batch(25, 5))
    assert len(event_ids(rt, tenant.tenant_id)) == 30
    assert not list((data_dir / "wal").glob("*.wal"))


def test_backlogged_wal_answers_503_with_retry_after(data_dir, tenants):
    with serving(data_dir, wal_max_bytes=1) as (_, client):
        assert post(client, tenants.a.headers, _batch(0, 1)).status_code == 202  # WAL empty: accepted
        r = post(client, tenants.a.headers, _batch(1, 1))
        assert r.status_code == 503
        assert r.json()["code"] == "ingest_unavailable" and int(r.headers["Retry-After"]) > 0


def test_concurrent_requests_with_overlapping_ids_accept_each_id_once(runtime, tenant_a):
    service = runtime.ingest
    results, start = [], threading.Barrier(8)

    def worker(n: int) -> None:
        body = b'{"batch": [%s]}' % b",".join(
            b'{"event_id": "shared-%d", "user_id": "u", "event_type": "t"}' % i for i in range(n % 3, 200, 1))
        columns = parse_track(body, time.time_ns() // 1000)
        start.wait()
        results.append(service.submit_events(tenant_a.tenant_id, columns, time.time_ns() // 1000).result(30))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.accepted for r in results) == 200
    assert sum(r.accepted + r.duplicates for r in results) == sum(200 - n % 3 for n in range(8))
    service.flush_now()
    ids = event_ids(runtime, tenant_a.tenant_id)
    assert sorted(ids) == sorted(f"shared-{i}" for i in range(200))


def test_a_request_that_goes_away_does_not_stall_the_committer(runtime, tenant_a):
    service = runtime.ingest
    now = time.time_ns() // 1000
    abandoned = service.submit_events(tenant_a.tenant_id, parse_track(b'{"user_id": "u", "event_type": "t"}', now), now)
    assert not abandoned.cancel()  # already running: it will be resolved, not dropped
    nxt = service.submit_events(tenant_a.tenant_id, parse_track(b'{"user_id": "v", "event_type": "t"}', now), now)
    assert nxt.result(30).accepted == 1 and abandoned.result(30).accepted == 1
