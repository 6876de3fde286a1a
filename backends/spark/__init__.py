"""The Spark backend (``SEGOPS_QUERY_BACKEND=spark``): ``SparkBackend`` over a session from
``build_session``. Importing it loads no pyspark; the first query starts the JVM."""
from backends.spark.backend import SparkBackend, SparkScans
from backends.spark.session import build_session

__all__ = ["SparkBackend", "SparkScans", "build_session"]
