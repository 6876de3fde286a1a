"""engine.jobs on a real SQLite file: enqueue coalescing, subject serialization, leases and their
takeover, compare-and-set settles, retries, concurrent claimers (real threads), one-job claims."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from engine.jobs import JobQueue, JobWorker
from engine.segments.store import db_time, utc_now
from storage.metadata import MetadataStore

LEASE = timedelta(seconds=60)


@pytest.fixture
def queue(tmp_path):
    meta = MetadataStore(tmp_path / "meta.sqlite")
    yield JobQueue(meta)
    meta.close()


def _lapse(queue: JobQueue, job_id: int) -> None:
    """What time does to a dead worker's lease."""
    queue.meta.execute("UPDATE jobs SET lease_until = ? WHERE id = ?",
                       (db_time(utc_now() - timedelta(seconds=1)), job_id))


def test_enqueue_claim_complete(queue):
    job_id = queue.enqueue("compute", 7, {"segment_id": 3}, subject="segment:3", trigger="cli")
    [lease] = queue.claim("compute", LEASE)
    assert (lease.job_id, lease.kind, lease.tenant_id, lease.payload, lease.attempt) == (
        job_id, "compute", 7, {"segment_id": 3}, 1)
    assert queue.claim("compute", LEASE) == []
    assert queue.complete(lease)
    row = queue.get(7, job_id)
    assert (row["status"], row["trigger"], row["lease_owner"], row["finished_at"] is not None) == (
        "done", "cli", None, True)
    assert queue.get(8, job_id) is None and queue.get(7, job_id, kind="export") is None


def test_coalesce_returns_the_queued_job_of_the_subject(queue):
    first = queue.enqueue("compute", 1, subject="segment:1", coalesce=True)
    assert queue.enqueue("compute", 1, subject="segment:1", coalesce=True) == first
    other = queue.enqueue("compute", 1, subject="segment:2", coalesce=True)
    assert other != first
    [lease] = [x for x in queue.claim("compute", LEASE, limit=5) if x.job_id == first]
    # running, not queued: a new request queues a new job (it computes the newer state)
    second = queue.enqueue("compute", 1, subject="segment:1", coalesce=True)
    assert second not in (first, other)
    assert queue.enqueue("compute", 1, subject="segment:1", coalesce=True) == second
    assert queue.complete(lease)


def test_only_if_idle_queues_nothing_while_the_subject_is_queued_or_running(queue):
    first = queue.enqueue("compute", 1, subject="segment:1", only_if_idle=True)
    assert first is not None
    assert queue.enqueue("compute", 1, subject="segment:1", only_if_idle=True) is None
    [lease] = queue.claim("compute", LEASE)
    assert queue.enqueue("compute", 1, subject="segment:1", only_if_idle=True) is None
    assert queue.complete(lease)
    assert queue.enqueue("compute", 1, subject="segment:1", only_if_idle=True) not in (None, first)


def test_one_running_job_per_subject(queue):
    a1 = queue.enqueue("compute", 1, subject="segment:1")
    a2 = queue.enqueue("compute", 1, subject="segment:1")
    b = queue.enqueue("compute", 1, subject="segment:2")
    free = queue.enqueue("compute", 1)
    assert [x.job_id for x in queue.claim("compute", LEASE, limit=10)] == [a1, b, free]
    assert queue.claim("compute", LEASE) == []  # a2 waits for a1
    assert queue.claim_id(a1, LEASE) is None  # a live lease holds it
    assert queue.claim_id(a2, LEASE) is None
    assert queue.get(1, a2)["status"] == "queued"


def test_a_lapsed_lease_is_taken_over_and_the_old_holder_is_refused(queue):
    job_id = queue.enqueue("export", 1, {"export_id": 9})
    [old] = queue.claim("export", LEASE)
    assert queue.claim("export", LEASE) == []
    _lapse(queue, job_id)
    [new] = queue.claim("export", LEASE)
    assert (new.job_id, new.attempt) == (job_id, 2) and new.owner != old.owner
    assert not queue.renew(old) and not queue.complete(old) and not queue.fail(old, "late")
    assert queue.renew(new) and queue.complete(new)
    assert queue.get(1, job_id)["status"] == "done"


def test_a_lapsed_lease_frees_its_subject_for_the_next_job(queue):
    first = queue.enqueue("compute", 1, subject="segment:1")
    second = queue.enqueue("compute", 1, subject="segment:1")
    queue.claim("compute", LEASE)
    _lapse(queue, first)
    # the lapsed job comes first (oldest); its subject is taken again, so second still waits
    assert [x.job_id for x in queue.claim("compute", LEASE, limit=5)] == [first]
    assert queue.get(1, second)["status"] == "queued"


def test_fail_and_fail_with_retry_at(queue):
    job_id = queue.enqueue("export", 1)
    [lease] = queue.claim("export", LEASE)
    later = utc_now() + timedelta(hours=1)
    assert queue.fail(lease, "transient", retry_at=later)
    row = queue.get(1, job_id)
    assert (row["status"], row["error"], row["not_before"], row["lease_owner"]) == (
        "queued", "transient", db_time(later), None)
    assert queue.claim("export", LEASE) == []  # not due yet
    queue.meta.execute("UPDATE jobs SET not_before = ? WHERE id = ?", (db_time(utc_now()), job_id))
    [again] = queue.claim("export", LEASE)
    assert again.attempt == 2 and queue.get(1, job_id)["error"] is None
    assert queue.fail(again, "x" * 5000)
    row = queue.get(1, job_id)
    assert (row["status"], len(row["error"])) == ("failed", 2000)
    assert not queue.complete(again)  # settled already


def test_not_before_delays_a_job(queue):
    queue.enqueue("export", 1, not_before=utc_now() + timedelta(minutes=5))
    assert queue.claim("export", LEASE) == []
    assert queue.claim("compute", LEASE) == []  # kinds are separate queues


def test_settling_in_the_callers_transaction_rolls_back_with_it(queue):
    job_id = queue.enqueue("compute", 1)
    [lease] = queue.claim("compute", LEASE)
    with pytest.raises(RuntimeError):
        with queue.meta.transaction() as conn:
            assert queue.complete(lease, conn=conn)
            raise RuntimeError("the results did not commit")
    assert queue.get(1, job_id)["status"] == "running"
    assert queue.complete(lease)


def test_enqueue_then_runs_in_the_same_transaction_for_new_jobs_only(queue):
    queue.meta.execute("CREATE TABLE results (id INTEGER PRIMARY KEY)")
    made = []

    def record(conn, job_id):
        conn.execute("INSERT INTO results (id) VALUES (?)", (job_id,))
        made.append(job_id)

    first = queue.enqueue("compute", 1, subject="s", coalesce=True, then=record)
    assert queue.enqueue("compute", 1, subject="s", coalesce=True, then=record) == first
    assert made == [first] and [r[0] for r in queue.meta.query("SELECT id FROM results")] == [first]


def test_two_threads_never_claim_one_job(tmp_path):
    path = tmp_path / "meta.sqlite"
    queue = JobQueue(MetadataStore(path))
    ids = {queue.enqueue("export", 1) for _ in range(200)}
    claimed: list[list[int]] = [[], [], [], []]
    start = threading.Barrier(len(claimed))

    def claimer(mine: list[int]) -> None:
        other = JobQueue(MetadataStore(path))  # its own connections, as another process would have
        start.wait()
        while leases := other.claim("export", LEASE, limit=3):
            mine.extend(lease.job_id for lease in leases)
            assert all(other.complete(lease) for lease in leases)
        other.meta.close()

    threads = [threading.Thread(target=claimer, args=(mine,)) for mine in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [job_id for mine in claimed for job_id in mine]
    assert sorted(everything) == sorted(ids)  # each job exactly once
    assert queue.meta.query_one("SELECT count(*) FROM jobs WHERE status = 'done'")[0] == len(ids)


def test_claim_id_runs_one_job_out_of_order(queue):
    first = queue.enqueue("export", 1)
    second = queue.enqueue("export", 1)
    lease = queue.claim_id(second, LEASE)
    assert lease is not None and lease.job_id == second
    assert queue.claim_id(second, LEASE) is None  # held
    assert [x.job_id for x in queue.claim("export", LEASE, limit=5)] == [first]
    assert queue.complete(lease)
    assert queue.claim_id(second, LEASE) is None  # done
    assert queue.claim_id(999, LEASE) is None


def test_keep_alive_renews_the_lease_while_the_work_runs(queue):
    job_id = queue.enqueue("export", 1)
    [lease] = queue.claim("export", timedelta(milliseconds=300))
    with queue.keep_alive(lease, timedelta(milliseconds=300), every=0.05):
        threading.Event().wait(0.6)  # twice the lease: without renewal it would have lapsed
        assert queue.claim("export", LEASE) == []
    assert queue.complete(lease) and queue.get(1, job_id)["attempts"] == 1


def test_worker_completes_fails_and_wait_sees_it(queue):
    seen = []

    def handler(lease):
        seen.append(lease.payload["n"])
        if lease.payload["n"] == 2:
            raise ValueError("bad input")

    worker = JobWorker(queue, "export", handler, poll=0.05)
    ok, bad = queue.enqueue("export", 1, {"n": 1}), queue.enqueue("export", 1, {"n": 2})
    worker.start()
    try:
        assert queue.wait(ok, 10)["status"] == "done"
        failed = queue.wait(bad, 10)
        assert (failed["status"], failed["error"]) == ("failed", "ValueError: bad input")
        assert worker.alive and seen == [1, 2]
    finally:
        worker.stop()
    assert not worker.alive
    still = queue.enqueue("export", 1)
    assert queue.wait(still, 0.1)["status"] == "queued"  # nobody runs it: the wait ends


def test_list_is_newest_first_and_paged(queue):
    ids = [queue.enqueue("compute", 1, subject="segment:1") for _ in range(5)]
    queue.enqueue("compute", 1, subject="segment:2")
    queue.enqueue("compute", 2, subject="segment:1")
    count, rows = queue.list(1, "compute", "segment:1", limit=2, offset=1)
    assert count == 5 and [r["id"] for r in rows] == ids[::-1][1:3]
