"""The process's one SparkSession, built from the settings on first use (a JVM start takes seconds).

Conf, later wins: ``REQUIRED_CONF`` (what the lake's files and the compiler's SQL assume; no later
layer may change it), the S3 conf derived from the lake settings, ``SEGOPS_SPARK_DEFAULTS_FILE``,
``SEGOPS_SPARK_CONF_*``, then the caller's ``overrides`` (tests: UI off, loopback driver). The
settings object is duck-typed (``engine.settings.Settings``): backends never import engine.
"""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from backends.base import BackendError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

REQUIRED_CONF = {
    "spark.sql.session.timeZone": "UTC",  # lake timestamps are naive UTC
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",  # what DuckDB and pyarrow read back exactly
    "spark.sql.parquet.compression.codec": "zstd",  # as the DuckDB writer
}
APP_NAME = "segops"
INSTALL_HINT = "the spark query backend needs pyspark: pip install 'segops[spark]'"
_DEFAULTS_LINE = re.compile(r"(\S+?)\s*(?:[=:]\s*|\s+)(.*)")  # java.util.Properties' separators: =, : or blanks

log = logging.getLogger(__name__)
_session: SparkSession | None = None
_lock = threading.Lock()


class SparkConfError(BackendError):
    """The Spark conf cannot be used as given; the message names the key and where it was set."""


def session_conf(settings, **overrides: str) -> dict[str, str]:
    """The conf ``build_session`` starts a session with (``spark.master`` and ``spark.app.name`` included)."""
    layers: list[tuple[str, Mapping[str, str]]] = [
        ("the lake settings (SEGOPS_LAKE_URL, SEGOPS_S3_*)", s3_conf(settings)),
        ("SEGOPS_SPARK_DEFAULTS_FILE", read_defaults_file(settings.spark_defaults_file)
         if settings.spark_defaults_file else {}),
        ("SEGOPS_SPARK_CONF_*", settings.spark_conf),
        ("build_session", overrides),
    ]
    conf = {"spark.master": settings.spark_master, "spark.app.name": APP_NAME, **REQUIRED_CONF}
    for where, layer in layers:
        for key, value in layer.items():
            if key in REQUIRED_CONF and str(value) != REQUIRED_CONF[key]:
                raise SparkConfError(f"{key} is fixed to {REQUIRED_CONF[key]} by segops (the lake and its queries "
                                     f"depend on it); remove it from {where}")
            conf[key] = str(value)
    return conf


def s3_conf(settings) -> dict[str, str]:
    """s3a conf for a lake on S3 (``SEGOPS_LAKE_URL=s3://…``); keys only when set, else s3a's
    own credential chain (instance profile, environment, ~/.aws) applies on every executor."""
    if not settings.lake_root.startswith("s3://"):
        return {}
    conf = {"spark.hadoop.fs.s3a.path.style.access": "true",  # as the S3 store addresses buckets
            "spark.hadoop.fs.s3a.endpoint.region": settings.s3_region}
    if settings.s3_endpoint_url:
        endpoint = urlparse(settings.s3_endpoint_url)
        conf["spark.hadoop.fs.s3a.endpoint"] = settings.s3_endpoint_url
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(endpoint.scheme == "https").lower()
    secret = settings.s3_secret_access_key
    if settings.s3_access_key_id and secret:
        conf["spark.hadoop.fs.s3a.access.key"] = settings.s3_access_key_id
        conf["spark.hadoop.fs.s3a.secret.key"] = getattr(secret, "get_secret_value", lambda: secret)()
    return conf


def read_defaults_file(path: str | Path) -> dict[str, str]:
    """A ``spark-defaults.conf``: ``key value`` (or ``key=value``) per line, ``#`` or ``!`` comments."""
    conf = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        match = _DEFAULTS_LINE.fullmatch(line)
        if match is None:
            raise SparkConfError(f"{path}:{number}: expected `key value`")
        conf[match[1]] = match[2].strip()
    return conf


def build_session(settings, **overrides: str) -> SparkSession:
    """The process's SparkSession: built by the first call, returned by every later one. A running
    JVM cannot take another master or static conf, so a later call's differing conf is logged, not applied."""
    global _session
    conf = session_conf(settings, **overrides)
    with _lock:
        if _session is not None and _session.sparkContext._jsc is not None:  # not stopped
            running = dict(_session.sparkContext.getConf().getAll())
            differ = sorted(key for key, value in conf.items() if running.get(key) != value)
            if differ:
                log.warning("the Spark session runs with other values of %s than asked for", ", ".join(differ))
            return _session
        try:
            from pyspark.sql import SparkSession
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("pyspark"):
                raise
            raise BackendError(INSTALL_HINT) from None
        builder = SparkSession.builder
        for key, value in conf.items():
            builder = builder.config(key, value)
        _session = builder.getOrCreate()
        _session.sparkContext.setLogLevel("ERROR")
        return _session


def stop_session() -> None:
    """Stop the process's session (if any), so the next ``build_session`` starts one with its own
    master and conf (a benchmark comparing ``local[1]`` with ``local[2]``)."""
    global _session
    with _lock:
        if _session is not None:
            _session.stop()
            _session = None
