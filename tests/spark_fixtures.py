"""The test session's one SparkSession (local[2]), built by the backend's own ``build_session``.

Import the ``spark`` fixture into a test module (``from tests.spark_fixtures import spark``).
``build_session`` keeps one session per process, so every module gets the same JVM (about 5-10 s
to start once); it is stopped when the interpreter exits, not per module.
"""
from __future__ import annotations

import pytest

from engine.settings import Settings

TEST_CONF = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
}


def spark_settings(data_dir, **overrides) -> Settings:
    """Settings of a test's Spark backend: local[2], no .env file of the developer's."""
    return Settings(_env_file=None, data_dir=data_dir, spark_master="local[2]", **overrides)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    pytest.importorskip("pyspark.sql")
    from backends.spark.session import build_session

    return build_session(spark_settings(tmp_path_factory.mktemp("spark")), **TEST_CONF)
