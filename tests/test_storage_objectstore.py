"""ObjectStore behaviour, the same tests on a local directory and on a real S3 (moto) server."""
from __future__ import annotations

import urllib.request

import pytest

from storage import duck
from storage.manifest import ConcurrentCommitError, ManifestLog
from storage.objectstore import LocalObjectStore, ObjectExistsError, S3ObjectStore, open_store

pytest_plugins = ["tests.storage_fixtures"]


def test_put_get_list_delete(object_store, tmp_path):
    object_store.put_bytes("a/one.bin", b"1")
    source = tmp_path / "src.bin"
    source.write_bytes(b"two" * 1000)
    object_store.put_file("a/b/two.bin", source)
    assert source.exists()  # copied, not moved
    assert object_store.get_bytes("a/one.bin") == b"1"
    with object_store.open("a/b/two.bin") as stream:
        assert stream.read() == b"two" * 1000
    assert object_store.size("a/b/two.bin") == 3000
    assert object_store.exists("a/one.bin") and not object_store.exists("a/none.bin")
    assert object_store.list("a/") == ["a/b/two.bin", "a/one.bin"]
    assert object_store.list("a/b") == ["a/b/two.bin"]
    assert [i.key for i in object_store.list_info("a/")] == ["a/b/two.bin", "a/one.bin"]
    object_store.delete("a/one.bin")
    object_store.delete("a/one.bin")  # missing is fine
    assert object_store.list("a/") == ["a/b/two.bin"]
    with pytest.raises(FileNotFoundError):
        object_store.get_bytes("a/one.bin")


def test_put_replaces_and_if_absent_refuses(object_store):
    object_store.put_bytes("k", b"old")
    object_store.put_bytes("k", b"new")
    assert object_store.get_bytes("k") == b"new"
    with pytest.raises(ObjectExistsError):
        object_store.put_bytes("k", b"other", if_absent=True)
    assert object_store.get_bytes("k") == b"new"
    object_store.put_bytes("fresh", b"x", if_absent=True)
    assert object_store.get_bytes("fresh") == b"x"


def test_move_from_scratch_leaves_nothing_listed(object_store):
    scratch = object_store.new_scratch_path(".parquet")
    scratch.write_bytes(b"payload")
    object_store.put_file("events/x.parquet", scratch, move=True)
    assert not scratch.exists()
    assert object_store.list() == ["events/x.parquet"]


def test_move_replaces_the_destination_and_removes_the_source(object_store, tmp_path):
    object_store.put_bytes("out/part.parquet", b"new")
    object_store.put_bytes("final/members.parquet", b"old")
    object_store.move("out/part.parquet", "final/members.parquet")
    assert object_store.get_bytes("final/members.parquet") == b"new"
    assert not object_store.exists("out/part.parquet")
    object_store.move("final/members.parquet", "elsewhere/deep/members.parquet")  # parents are created
    assert object_store.list("") == ["elsewhere/deep/members.parquet"]
    with pytest.raises(FileNotFoundError):
        object_store.move("out/part.parquet", "final/members.parquet")
    assert not object_store.exists("final/members.parquet")


def test_uri_names_the_object(object_store):
    object_store.put_bytes("a/b.bin", b"x")
    uri = object_store.uri("a/b.bin")
    if isinstance(object_store, LocalObjectStore):
        assert uri == f"file://{(object_store.root / 'a' / 'b.bin').absolute()}"
        assert urllib.request.urlopen(uri).read() == b"x"
    else:
        assert uri == f"s3://{object_store.bucket}/{object_store.prefix}/a/b.bin"


def test_duckdb_reads_and_writes_through_store_paths(object_store):
    con = duck.connect(object_store)
    size = duck.copy_to_store(con, "SELECT range AS n FROM range(?)", object_store, "data/n.parquet", params=[10])
    assert size == object_store.size("data/n.parquet") > 0
    assert object_store.list() == ["data/n.parquet"]  # no scratch file left behind or listed
    path = object_store.duckdb_path("data/n.parquet")
    assert path.startswith("s3://") == isinstance(object_store, S3ObjectStore)
    assert con.execute("SELECT sum(n) FROM read_parquet(?)", [path]).fetchone()[0] == 45


def test_presigned_urls(object_store):
    object_store.put_bytes("files/report.csv", b"a,b\n1,2\n")
    get_url = object_store.presigned_get("files/report.csv", expires=60)
    put_url = object_store.presigned_put("uploads/logo.png", "image/png", expires=60)
    if isinstance(object_store, LocalObjectStore):
        assert get_url is None and put_url is None
        return
    with urllib.request.urlopen(get_url) as response:
        assert response.read() == b"a,b\n1,2\n"
    request = urllib.request.Request(put_url, data=b"\x89PNG", method="PUT", headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 200
    assert object_store.get_bytes("uploads/logo.png") == b"\x89PNG"


def test_local_keys_cannot_escape_root(tmp_path):
    store = LocalObjectStore(tmp_path / "lake")
    for key in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(ValueError):
            store.put_bytes(key, b"x")


def test_open_store_from_settings(tmp_path, s3_server):
    from engine.settings import Settings

    local = open_store(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalObjectStore) and local.root == (tmp_path / "lake").resolve()
    s3 = open_store(Settings(data_dir=tmp_path, **s3_server.settings_overrides("pfx")))
    assert isinstance(s3, S3ObjectStore) and (s3.bucket, s3.prefix) == (s3_server.bucket, "pfx")
    s3.put_bytes("k", b"v")
    assert s3.duckdb_path("k") == f"s3://{s3_server.bucket}/pfx/k"
    con = duck.connect(Settings(data_dir=tmp_path, **s3_server.settings_overrides("pfx")), read_only=True)
    assert (tmp_path / "duckdb_extensions").is_dir()
    with pytest.raises(Exception):
        con.execute("SET threads = 1")  # configuration locked on read-only connections


def test_manifest_log_highest_wins_and_refuses_a_racing_commit(object_store):
    log = ManifestLog(object_store, "m/", keep=3)
    assert log.latest() == (0, None)
    for seq in range(1, 6):
        log.commit(seq, {"n": seq})
    object_store.put_bytes("m/notes.json", b"not a manifest")
    assert ManifestLog(object_store, "m/").latest() == (5, {"n": 5})
    with pytest.raises(ConcurrentCommitError):
        ManifestLog(object_store, "m/").commit(5, {"n": "other"})
    assert log.prune() == 2
    assert ManifestLog(object_store, "m/").latest() == (5, {"n": 5})
