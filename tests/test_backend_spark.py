"""The Spark backend's own rules: its settings and session conf, and what its scans and writes
guarantee on PySpark local mode over real lake files (the shared contract runs in
tests/test_backend_contract.py with the ``backend`` parameter)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from backends.base import BackendError
from backends.spark.session import REQUIRED_CONF, SparkConfError, read_defaults_file, session_conf
from engine.settings import Settings, SettingsError
from tests.spark_fixtures import spark_settings

REPO = Path(__file__).resolve().parents[1]


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
