"""A data dir written by the code of before the one job queue (the base commit ee69ba9, run in a
subprocess from ``git archive``) opens with today's code: the queue state moves into ``jobs`` with
the computations' ids, done results stay readable, queued and interrupted work runs, new ids follow
the old ones, and the database was copied aside first."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.runtime import Runtime
from engine.settings import Settings
from storage.metadata import MetadataStore

REPO = Path(__file__).resolve().parents[1]
BASE = "ee69ba9"

# Run under the base commit's code: computations done, queued, running (its worker died) and failed;
# exports done, queued and running (interrupted by a crash); emails sent, queued, and handing_off (a dead
# worker's: one it handed to the outbox, one it did not).
BUILD = """
import json, sys
from datetime import timedelta
from engine import compute
from engine.runtime import Runtime
from engine.segments import db_time, utc_now
from engine.settings import Settings
from tests.membership_fixtures import add_events, create_segment, frequency

runtime = Runtime(Settings(data_dir=sys.argv[1], run_workers=False))
tenant = runtime.accounts.create_tenant("Old", plan="enterprise")
add_events(runtime, tenant, [("u1", "buy", {}), ("u2", "buy", {}), ("u3", "view", {})])
buyers, viewers, lapsed, broken = (create_segment(runtime, tenant, frequency(kind), name=kind)
                                   for kind in ("buy", "view", "buy", "buy"))
done = [compute.enqueue(runtime, tenant, buyers, "cli") for _ in range(1)]
compute.run_pending_jobs(runtime)
done.append(compute.enqueue(runtime, tenant, viewers, "cli"))
compute.run_pending_jobs(runtime)
exported = runtime.exports.create(tenant, buyers, "csv", trigger="cli")["export_id"]
runtime.exports.run_pending()
queued = compute.enqueue(runtime, tenant, buyers, "api")
running = compute.enqueue(runtime, tenant, lapsed, "schedule")
runtime.meta.execute("UPDATE segment_computations SET status = 'running', attempts = 1, started_at = ?,"
                     " lease_until = ? WHERE id = ?",
                     (db_time(utc_now()), db_time(utc_now() - timedelta(seconds=5)), running))
failed = compute.enqueue(runtime, tenant, broken, "api")
runtime.meta.execute("UPDATE segment_computations SET status = 'failed', error = 'boom' WHERE id = ?", (failed,))
export_queued = runtime.exports.create(tenant, viewers, "jsonl")["export_id"]
export_running = runtime.exports.create(tenant, buyers, "parquet")["export_id"]
runtime.meta.execute("UPDATE segment_exports SET status = 'running' WHERE id = ?", (export_running,))
from engine.sends.emails import snapshot_template
from engine.sends.outbound import NewSend
sends = runtime.sends
template = sends.templates.create(tenant, {"name": "Hi", "subject": "Hi", "text": "Hi", "purpose": "transactional"})
content_id = snapshot_template(sends, tenant, template["id"])[0]
def queue(n):
    return sends.outbound.enqueue([NewSend(tenant, "api", f"{n}-{i}", content_id, to_address=f"{n}{i}@example.com",
                                           template_id=template["id"]) for i in range(2)])
sent = queue("sent")
sends.dispatcher.run_once()
handing = queue("handing")
rows = sends.outbound.claim("dead-worker", timedelta(seconds=-1), 10)
dead = sends.dispatcher
dead.owner = "dead-worker"
dead.hand_off([dead._render(tenant, rows[0], dead._content(content_id), {}, rows[0]["to_address"], utc_now())])
mailed = queue("queued")
runtime.meta.close()
print(json.dumps(dict(tenant=tenant, buyers=buyers, viewers=viewers, lapsed=lapsed, done=done, queued=queued,
                      running=running, failed=failed, exported=exported, export_queued=export_queued,
                      export_running=export_running, sent=sent, handing=[r["id"] for r in rows], mailed=mailed)))
"""


@pytest.fixture(scope="module")
def base_code(tmp_path_factory) -> Path:
    if subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{BASE}^{{commit}}"]).returncode != 0:
        pytest.skip(f"the base commit {BASE} is not in this clone's history")
    root = tmp_path_factory.mktemp("base-jobs")
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BASE], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=pa.BufferReader(archive), mode="r|") as tar:
        tar.extractall(root, filter="data")
    return root


@pytest.mark.slow  # a fresh interpreter of the base code builds the data dir
def test_a_base_commit_data_dir_migrates_and_works(base_code, tmp_path):
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(base_code)}
    built = subprocess.run([sys.executable, "-c", BUILD, str(data)], cwd=base_code, env=env, capture_output=True,
                           text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    old = json.loads(built.stdout.strip().splitlines()[-1])
    tenant = old["tenant"]

    runtime = Runtime(Settings(data_dir=data, run_workers=False))
    try:
        jobs = runtime.jobs
        assert (data / "meta.sqlite.pre-jobs").is_file()
        kinds = dict(runtime.meta.query("SELECT id, kind FROM jobs WHERE kind = 'compute'"))
        assert set(kinds) == {*old["done"], old["queued"], old["running"], old["failed"]}  # ids kept

        def job(job_id):
            return runtime.compute.get_job(tenant, job_id)

        assert [job(i)["status"] for i in old["done"]] == ["done", "done"]
        assert (job(old["failed"])["status"], job(old["failed"])["error"]) == ("failed", "boom")
        assert job(old["queued"])["status"] == "queued"
        changes = runtime.computations.read_changes(tenant, old["done"][0])
        assert changes.column("user_id").to_pylist() == ["u1", "u2"]
        done_export = runtime.exports.get(tenant, old["exported"])
        assert (done_export["status"], done_export["row_count"]) == ("done", 2)
        assert runtime.lake.store.get_bytes(runtime.exports.file(tenant, old["exported"]).key).startswith(b"user_id")

        # queued work runs; the dead worker's computation is taken over once its lease lapsed
        assert sorted(runtime.compute.run_pending()) == sorted([old["queued"], old["running"]])
        assert (job(old["running"])["status"], job(old["running"])["member_count"]) == ("done", 2)
        assert jobs.get(tenant, old["running"])["attempts"] == 2
        assert job(old["queued"])["entered_count"] == 0  # relative to the old computation, read back
        assert sorted(runtime.exports.run_pending()) == sorted([old["export_queued"], old["export_running"]])
        running_export = runtime.exports.file(tenant, old["export_running"])
        members = pq.read_table(pa.BufferReader(runtime.lake.store.get_bytes(running_export.key)))
        assert members.column("user_id").to_pylist() == ["u1", "u2"]

        # new ids follow the old ones, whichever table they came from
        new = runtime.compute.enqueue(tenant, old["viewers"], "api")
        assert new > max(kinds) and new > max(r[0] for r in runtime.meta.query("SELECT job_id FROM segment_exports"))
        assert runtime.compute.run_pending() == [new]

        # open sends became send jobs: the dead worker's hand-offs are recovered (the one in the outbox is
        # not sent again), the queued ones go out, the sent ones stay as they were
        def status(ids):
            return [runtime.meta.query_one("SELECT status FROM email_sends WHERE id = ?", (i,))[0] for i in ids]

        assert status(old["sent"]) == ["sent", "sent"]
        assert status(old["handing"]) == ["handing_off", "handing_off"] and status(old["mailed"]) == ["queued"] * 2
        assert runtime.meta.query_one("SELECT count(*) FROM email_sends WHERE job_id IS NULL AND status IN"
                                      " ('queued', 'handing_off')")[0] == 0
        assert runtime.sends.dispatcher.recover() == 2
        while runtime.sends.dispatcher.run_once():
            pass
        assert status(old["sent"] + old["handing"] + old["mailed"]) == ["sent"] * 6
        outboxed = sorted(path.name for path in (data / "outbox").glob("*.eml"))
        assert len(outboxed) == 6
        attempts = [runtime.meta.query_one("SELECT attempts FROM email_sends WHERE id = ?", (i,))[0]
                    for i in old["handing"]]
        assert attempts == [1, 2]  # the one in the outbox was recovered as sent, not handed off again
        assert not runtime.meta.migrate("jobs", 1, []) and not runtime.meta.migrate("jobs", 2, [])  # once
    finally:
        runtime.stop()
        runtime.meta.close()


def test_migrate_is_one_transaction_after_a_backup_and_runs_once(tmp_path):
    meta = MetadataStore(tmp_path / "meta.sqlite")
    meta.execute("CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT)")
    meta.execute("INSERT INTO things (name) VALUES ('kept')")

    def broken(conn):
        conn.execute("INSERT INTO things (name) VALUES ('half')")
        raise RuntimeError("step 2 failed")

    with pytest.raises(RuntimeError):
        meta.migrate("things", 1, ["ALTER TABLE things ADD COLUMN extra TEXT", broken])
    assert [r[0] for r in meta.query("SELECT name FROM things")] == ["kept"]  # nothing of it stayed
    assert "extra" not in {r[1] for r in meta.query("PRAGMA table_info(things)")}
    assert meta.migrate("things", 1, ["ALTER TABLE things ADD COLUMN extra TEXT",
                                      "UPDATE things SET extra = 'x'"])
    assert not meta.migrate("things", 1, ["UPDATE things SET extra = 'again'"])
    assert tuple(meta.query_one("SELECT name, extra FROM things")) == ("kept", "x")
    backup = MetadataStore(tmp_path / "meta.sqlite.pre-things")
    assert [r[0] for r in backup.query("SELECT name FROM things")] == ["kept"]  # as it was before
    assert "extra" not in {r[1] for r in backup.query("PRAGMA table_info(things)")}
    backup.close()
    meta.close()
