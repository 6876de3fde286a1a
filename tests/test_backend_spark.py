"""The Spark backend's own rules: its settings and session conf, and what its scans and writes
guarantee on PySpark local mode over real lake files (the shared contract runs in
tests/test_backend_contract.py with the ``backend`` parameter)."""
from __future__ import annotations

import csv
import io
import itertools
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlglot import exp

from backends import relations as rel
from backends.base import BackendError, SourceMissing, UnsupportedInput
from backends.spark.backend import SCRATCH_PREFIX, SparkBackend
from backends.spark.session import REQUIRED_CONF, SparkConfError, read_defaults_file, session_conf
from engine.settings import Settings, SettingsError
from storage.lake import EventLake
from storage.objectstore import open_store
from tests.spark_fixtures import spark, spark_settings  # noqa: F401  (spark: the session-wide session)

REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["tests.api_fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")


# -- settings ------------------------------------------------------------------------------
def test_spark_conf_comes_from_any_segops_spark_conf_variable_and_the_environment_beats_dotenv(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SEGOPS_SPARK_CONF_MEM=spark.executor.memory=2g\n"
                                   "SEGOPS_SPARK_CONF_CORES=spark.executor.cores=3\n")
    monkeypatch.setenv("SEGOPS_SPARK_CONF_MEM", "spark.executor.memory=8g")
    monkeypatch.setenv("SEGOPS_SPARK_CONF_java_opts", "spark.executor.extraJavaOptions=-Da=b -Dc=d")
    monkeypatch.setenv("SEGOPS_SPARK_CONF_EMPTY", "")  # empty means unset, as for every setting
    settings = Settings.from_env()
    assert settings.spark_conf == {"spark.executor.memory": "8g", "spark.executor.cores": "3",
                                   "spark.executor.extraJavaOptions": "-Da=b -Dc=d"}
    assert (settings.query_backend, settings.preview_backend, settings.spark_master) == ("duckdb", "duckdb",
                                                                                        "local[*]")


@pytest.mark.parametrize("variable, value, message", [
    ("SEGOPS_SPARK_CONF_MEM", "spark.executor.memory", "SEGOPS_SPARK_CONF_MEM must be key=value"),
    ("SEGOPS_SPARK_CONF_X", "=8g", "SEGOPS_SPARK_CONF_X must be key=value"),
    ("SEGOPS_SPARK_MASTER", "spark:/host", "SEGOPS_SPARK_MASTER: not a Spark master URL"),
    ("SEGOPS_QUERY_BACKEND", "presto", "SEGOPS_QUERY_BACKEND: Input should be 'duckdb' or 'spark'"),
    ("SEGOPS_SPARK_DEFAULTS_FILE", "/no/such/spark-defaults.conf", "SEGOPS_SPARK_DEFAULTS_FILE: Path does not"),
])
def test_a_bad_spark_setting_is_refused_naming_its_variable(tmp_path, monkeypatch, variable, value, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=message) as err:
        Settings.from_env()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("master", ["local", "local[2]", "local[*]", "local[4,2]", "spark://h:7077", "yarn",
                                    "k8s://https://api.example:6443"])
def test_spark_masters_of_every_kind_are_accepted(tmp_path, master):
    assert Settings(_env_file=None, data_dir=tmp_path, spark_master=master).spark_master == master


def test_segops_settings_lists_the_spark_conf_family_with_credentials_masked(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "SEGOPS_SPARK_CONF_S3": "spark.hadoop.fs.s3a.secret.key=hunter2",
           "SEGOPS_SPARK_CONF_MEM": "spark.executor.memory=8g"}
    out = subprocess.run([str(Path(sys.executable).with_name("segops")), "settings"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=True).stdout
    assert "SEGOPS_SPARK_CONF_*=spark.executor.memory=8g; spark.hadoop.fs.s3a.secret.key=****\n" in out
    assert "SEGOPS_QUERY_BACKEND=duckdb  # default\n" in out and "hunter2" not in out


# -- session conf ----------------------------------------------------------------------------
def test_conf_precedence_required_then_s3_then_defaults_file_then_variables_then_the_caller(tmp_path):
    defaults = tmp_path / "spark-defaults.conf"
    defaults.write_text("# comment\n! also a comment\n\nspark.executor.memory   4g\n"
                        "spark.hadoop.fs.s3a.endpoint=http://from-the-file:9000\nspark.executor.cores: 2\n"
                        "spark.sql.shuffle.partitions 50\n")
    settings = spark_settings(
        tmp_path, lake_url="s3://bucket/lake", s3_endpoint_url="http://127.0.0.1:9000", s3_access_key_id="AK",
        s3_secret_access_key="SK", spark_defaults_file=defaults,
        spark_conf={"spark.executor.memory": "8g", "spark.sql.shuffle.partitions": "20"})
    conf = session_conf(settings, **{"spark.sql.shuffle.partitions": "2"})
    assert {key: conf[key] for key in REQUIRED_CONF} == REQUIRED_CONF
    assert conf["spark.master"] == "local[2]"
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://from-the-file:9000"  # the file beats the lake settings
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert (conf["spark.hadoop.fs.s3a.access.key"], conf["spark.hadoop.fs.s3a.secret.key"]) == ("AK", "SK")
    assert conf["spark.executor.cores"] == "2"  # from the file only
    assert conf["spark.executor.memory"] == "8g"  # the variables beat the file
    assert conf["spark.sql.shuffle.partitions"] == "2"  # the caller beats the variables


def test_s3_conf_only_for_a_lake_on_s3_and_keys_only_when_set(tmp_path, monkeypatch):
    for variable in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(variable, raising=False)
    assert not any("s3a" in key for key in session_conf(spark_settings(tmp_path)))
    conf = session_conf(spark_settings(tmp_path, lake_url="s3://bucket/lake",
                                       s3_endpoint_url="https://minio.example:9000"))
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"
    assert not any(key.endswith((".access.key", ".secret.key")) for key in conf)  # s3a's own provider chain


@pytest.mark.parametrize("where", ["variables", "file", "caller"])
@pytest.mark.parametrize("key, value", [("spark.sql.session.timeZone", "Europe/Paris"),
                                        ("spark.sql.parquet.outputTimestampType", "INT96"),
                                        ("spark.sql.parquet.compression.codec", "snappy")])
def test_an_override_of_the_required_conf_is_refused_by_name(tmp_path, where, key, value):
    defaults = tmp_path / "spark-defaults.conf"
    defaults.write_text(f"{key} {value}\n" if where == "file" else "")
    settings = spark_settings(tmp_path, spark_defaults_file=defaults,
                              spark_conf={key: value} if where == "variables" else {})
    with pytest.raises(SparkConfError, match=rf"^{key} is fixed to {REQUIRED_CONF[key]} by segops"):
        session_conf(settings, **({key: value} if where == "caller" else {}))
    assert session_conf(spark_settings(tmp_path, spark_conf={key: REQUIRED_CONF[key]}))[key] == REQUIRED_CONF[key]


def test_a_defaults_file_line_without_a_value_is_refused_with_its_line_number(tmp_path):
    defaults = tmp_path / "spark-defaults.conf"
    defaults.write_text("spark.executor.memory 4g\nspark.executor.cores\n")
    with pytest.raises(SparkConfError, match=r"spark-defaults.conf:2: expected `key value`"):
        read_defaults_file(defaults)


def test_without_pyspark_the_backend_says_which_extra_to_install(tmp_path):
    script = ("import sys; sys.modules['pyspark'] = None\n"
              "from backends.spark.session import build_session\n"
              "from engine.settings import Settings\n"
              f"build_session(Settings(_env_file=None, data_dir={str(tmp_path)!r}))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"{BackendError.__module__}.BackendError: the spark query backend needs pyspark: "
        "pip install 'segops[spark]'")


# -- on Spark: scans and writes over a real lake ------------------------------------------------
DAY0 = datetime(2026, 1, 1)


def _events(lake: EventLake, rows, tenant_id: int = 1) -> None:
    """Commit (user, event_type, day offset, properties) rows."""
    lake.append_events(tenant_id, pa.table({
        "event_id": [uuid.uuid4().hex for _ in rows],
        "tenant_id": pa.array([tenant_id] * len(rows), pa.int64()),
        "user_id": [row[0] for row in rows], "event_type": [row[1] for row in rows],
        "occurred_at": pa.array([DAY0 + timedelta(days=row[2]) for row in rows], pa.timestamp("us")),
        "received_at": pa.array([DAY0 + timedelta(days=40)] * len(rows), pa.timestamp("us")),
        "properties": [orjson.dumps(row[3]).decode() for row in rows]}))


@dataclass
class SparkWorld:
    lake: EventLake
    backend: SparkBackend
    tenant: rel.TenantLake

    @property
    def relations(self):
        return self.backend.relations(self.tenant)

    def rows(self, relation, *columns: str) -> list[tuple]:
        table = self.backend.fetch_arrow(exp.select(*columns).from_(relation)).to_pylist()
        return sorted(tuple(row[c] for c in columns) for row in table)


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("spark-world")
    lake = EventLake(open_store(spark_settings(root)))
    _events(lake, [("a", "x", 0, {}), ("b", "x", 1, {})])  # before p_total existed: these files lack it
    _events(lake, [("c", "x", 0, {"total": 5}), ("a", "y", 2, {"total": 7.5})])
    day = f"events/tenant_id=1/event_date={DAY0.date()}"
    uncommitted = root / "uncommitted.parquet"  # a complete file no manifest lists (a writer that died)
    pq.write_table(pa.table({"user_id": ["ghost"], "event_type": ["x"]}), uncommitted)
    lake.store.put_file(f"{day}/uncommitted.parquet", uncommitted)
    lake.store.put_bytes(f"{day}/stray.parquet", b"not parquet at all")  # garbage a glob would choke on
    lake.upsert_profiles(1, [{"user_id": u, "traits": {"plan": f"p{u}"}, "updated_at": DAY0} for u in "abcdefgh"])
    lake.upsert_profiles(1, [{"user_id": u, "traits": {"plan": f"q{u}"}, "updated_at": DAY0 + timedelta(days=1)}
                             for u in "bz"])  # a delta: b replaced, z new
    assert lake.profiles_snapshot(1).delta_key is not None
    backend = SparkBackend(lake.store, spark_settings(root), session=spark)
    yield SparkWorld(lake, backend, rel.describe(lake.snapshot(1), lake.profiles_snapshot(1)))
    backend.close()


@pytest.mark.slow
def test_only_committed_files_are_read_and_a_column_a_file_lacks_is_null(world):
    assert world.rows(world.relations.events, "user_id", "event_type", "p_total", "event_date") == [
        ("a", "x", None, DAY0.date()), ("a", "y", 7.5, date(2026, 1, 3)), ("b", "x", None, date(2026, 1, 2)),
        ("c", "x", 5.0, DAY0.date())]


@pytest.mark.slow
def test_the_profiles_delta_replaces_base_rows_by_row_index_as_by_user_id(world):
    expected = [*((u, f"p{u}") for u in "acdefgh"), ("b", "qb"), ("z", "qz")]
    assert world.backend.scans.supports_row_position
    assert world.rows(world.relations.profiles, "user_id", "t_plan") == sorted(expected)
    by_user_id = rel.profiles(world.backend.scans, world.lake.profiles_snapshot(1), by_user_id=True)
    assert world.rows(by_user_id, "user_id", "t_plan") == sorted(expected)


@pytest.mark.slow
def test_count_sample_and_members_come_sorted(world):
    members = exp.select("user_id").from_(world.relations.profiles)
    assert world.backend.count_and_sample(members, 3) == (9, ["a", "b", "c"])
    assert world.backend.count_and_sample(members, 0) == (9, [])
    table = world.backend.members_arrow(members)
    assert table.schema == pa.schema([("user_id", pa.string())])
    assert table.column("user_id").to_pylist() == sorted("abcdefghz")


@pytest.mark.slow
def test_a_physical_type_other_than_the_catalog_s_is_refused_naming_file_and_column(world, tmp_path):
    key = "events/tenant_id=1/event_date=2026-03-01/int-total.parquet"
    pq.write_table(pa.table({"user_id": ["i"], "p_total": pa.array([3], pa.int64())}), tmp_path / "f.parquet")
    world.lake.store.put_file(key, tmp_path / "f.parquet")
    scan = world.backend.scans.scan([key], {"user_id": rel.data_type("VARCHAR"), "p_total": rel.data_type("DOUBLE")},
                                    partitions={"tenant_id": rel.data_type("BIGINT")}, root=rel.EVENTS_ROOT)
    with pytest.raises(UnsupportedInput, match=rf"^events file {key}: column p_total is INT64, catalog says DOUBLE$"):
        world.backend.fetch_arrow(exp.select("p_total").from_(scan))


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_a_write_is_one_complete_object_and_leaves_no_scratch(world, tmp_path, fmt):
    profiles = world.relations.profiles
    query = exp.select("user_id", "t_plan").from_(profiles)
    key = f"exports/t1/members.{fmt}"
    written = world.backend.write_file(query, key, fmt, order_by=["user_id"])
    assert (written.key, written.rows, written.bytes) == (key, 9, world.lake.store.size(key))
    (tmp_path / "out").write_bytes(world.lake.store.get_bytes(key))
    if fmt == "parquet":
        got = pq.read_table(tmp_path / "out").to_pylist()
    elif fmt == "csv":
        got = list(csv.DictReader(io.StringIO((tmp_path / "out").read_text())))
    else:
        got = [orjson.loads(line) for line in (tmp_path / "out").read_text().splitlines()]
    assert [row["user_id"] for row in got] == sorted("abcdefghz")
    assert got[1] == {"user_id": "b", "t_plan": "qb"}
    assert world.lake.store.list(SCRATCH_PREFIX) == []


@pytest.mark.slow
def test_a_failing_write_leaves_nothing_under_its_key_or_in_scratch(world):
    # ANSI mode: a cast of a non-number fails inside the write's task
    failing = exp.select(exp.cast(exp.column("user_id"), "INT").as_("n")).from_(world.relations.profiles)
    with pytest.raises(Exception, match="CAST_INVALID_INPUT"):
        world.backend.write_parquet(failing, "computations/t1/broken/members.parquet")
    assert not world.lake.store.exists("computations/t1/broken/members.parquet")
    assert world.lake.store.list(SCRATCH_PREFIX) == []


@pytest.mark.slow
def test_a_file_gone_since_the_snapshot_is_source_missing(world, tmp_path):
    key = "events/tenant_id=1/event_date=2026-03-02/gone.parquet"
    pq.write_table(pa.table({"user_id": ["g"]}), tmp_path / "g.parquet")
    world.lake.store.put_file(key, tmp_path / "g.parquet")
    columns = {"user_id": rel.data_type("VARCHAR")}
    scan = world.backend.scans.scan([key], columns, partitions={}, root="")
    world.lake.store.delete(key)
    with pytest.raises(SourceMissing):
        world.backend.fetch_arrow(exp.select("user_id").from_(scan))
    with pytest.raises(SourceMissing):  # gone before the scan is made
        world.backend.scans.scan([key], columns, partitions={}, root="")


def test_the_settings_choose_the_batch_and_interactive_backends_without_starting_spark(tmp_path):
    from engine.runtime import Runtime

    runtime = Runtime(spark_settings(tmp_path / "d", run_workers=False, query_backend="spark"))
    try:
        assert (runtime.backends.batch.name, runtime.backends.interactive.name) == ("spark", "duckdb")
        assert runtime.backends.batch._session is None  # the JVM starts with the first Spark query
    finally:
        runtime.stop()


@pytest.mark.slow
def test_segops_compute_and_export_on_spark_give_duckdb_s_members_and_files(spark, runtime, tenants, data_dir,
                                                                               tmp_path):
    import typer
    from typer.testing import CliRunner

    from cli import segments as cli_segments
    from tests.membership_fixtures import add_events, create_segment, frequency

    a = tenants.a.tenant_id
    add_events(runtime, a, [(f"c{i}", "buy", {}) for i in range(5)] + [("x", "view", {}), ("c1", "buy", {})])
    segment = create_segment(runtime, a, frequency("buy"))
    app = typer.Typer()
    cli_segments.register(app)
    env = {"SEGOPS_DATA_DIR": str(data_dir), "SEGOPS_SPARK_MASTER": "local[2]"}
    members, jobs = {}, spark.sparkContext.statusTracker().getJobIdsForGroup(None)
    for backend in ("spark", "duckdb"):
        done = CliRunner().invoke(app, ["compute", str(segment), "--tenant", str(a), "--backend", backend], env=env)
        assert done.exit_code == 0, done.output
        assert "5 members" in done.output
        row = runtime.meta.query_one("SELECT members_key FROM segment_computations ORDER BY id DESC LIMIT 1")
        members[backend] = runtime.computations.read_members(row["members_key"]).to_pylist()
        if backend == "spark":  # the computation ran Spark jobs
            assert len(spark.sparkContext.statusTracker().getJobIdsForGroup(None)) > len(jobs)
    assert members["spark"] == members["duckdb"] == [f"c{i}" for i in range(5)]
    bad = CliRunner().invoke(app, ["compute", str(segment), "--tenant", str(a), "--backend", "presto"], env=env)
    assert bad.exit_code == 2 and "--backend must be one of duckdb, spark" in bad.output

    exported = {}  # exports run on SEGOPS_QUERY_BACKEND
    for backend, fmt in itertools.product(("spark", "duckdb"), ("parquet", "csv", "jsonl")):
        out = tmp_path / f"{backend}.{fmt}"
        done = CliRunner().invoke(app, ["export", str(segment), "--tenant", str(a), "--format", fmt, "-o", str(out)],
                                  env={**env, "SEGOPS_QUERY_BACKEND": backend})
        assert done.exit_code == 0, done.output
        exported[backend, fmt] = pq.read_table(out).to_pylist() if fmt == "parquet" else out.read_text()
        if backend == "spark":  # written by Spark
            assert len(spark.sparkContext.statusTracker().getJobIdsForGroup(None)) > len(jobs)
            jobs = spark.sparkContext.statusTracker().getJobIdsForGroup(None)
    assert exported["spark", "csv"].splitlines()[0].startswith("user_id,")
    for fmt in ("parquet", "csv", "jsonl"):
        assert exported["spark", fmt] == exported["duckdb", fmt], fmt


def test_spark_reads_s3_through_s3a_and_local_paths_unescaped(tmp_path):
    from backends.spark.backend import SparkScans, spark_uri
    from storage.objectstore import LocalObjectStore, S3ObjectStore

    assert spark_uri("s3://bucket/lake/events/a.parquet") == "s3a://bucket/lake/events/a.parquet"
    local = LocalObjectStore(tmp_path / "my lake")
    key = "events/tenant_id=1/event_date=2026-01-01/a.parquet"
    assert spark_uri(local.uri(key)) == f"file://{tmp_path}/my lake/{key}"  # Hadoop takes %3D and %20 literally
    s3 = S3ObjectStore("bucket", "lake", endpoint_url="http://127.0.0.1:9", access_key_id="a", secret_access_key="b")
    for store, spark_path in ((local, f"file:{tmp_path}/my lake/{key}"), (s3, f"s3a://bucket/lake/{key}")):
        scans = SparkScans(store, spark=lambda: None, reading=lambda: None, kept=1)
        assert scans.key_of(spark_path) == key  # how an error names the file
