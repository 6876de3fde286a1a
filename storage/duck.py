"""DuckDB connections that can read the lake wherever it lives.

``connect(store_or_settings)`` returns an in-memory DuckDB connection. For an S3
store it loads httpfs from the ``duckdb-extension-httpfs`` wheel (extensions
cannot be downloaded here; the extension directory is kept inside the data dir)
and creates an S3 secret scoped to the store's bucket.

Queries read the lake through ``backends`` (``backends.relations``); what is left here is
the lake writer's side: connections, ``copy_to_store`` and ``read_parquet`` (the DuckDB
backend's leaf reader builds on it too).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path


import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from storage.objectstore import LocalObjectStore, ObjectStore, S3ObjectStore, open_store

_install_lock = threading.Lock()
_installed_dirs: set[str] = set()

# Base columns of every events file, plus the two hive partition columns.
EVENTS_BASE_SQL_TYPES = {
    "event_id": "VARCHAR", "tenant_id": "BIGINT", "user_id": "VARCHAR", "event_type": "VARCHAR",
    "occurred_at": "TIMESTAMP", "received_at": "TIMESTAMP", "properties": "VARCHAR", "event_date": "DATE",
}
PROFILES_BASE_SQL_TYPES = {
    "tenant_id": "BIGINT", "user_id": "VARCHAR", "updated_at": "TIMESTAMP", "traits": "VARCHAR",
    "trait_times": "VARCHAR",
}
KIND_SQL_TYPES = {"number": "DOUBLE", "string": "VARCHAR", "boolean": "BOOLEAN"}
BASE_ROW_COLUMN = "__base_row"  # in a profiles delta file: the position in the base of the row it replaces


# 0001-01-01 00:00:00 and 9999-12-31 23:59:59.999999 as microseconds since 1970 (Python's datetime range).
# Integers, not pa.scalar(datetime...) built at import: that made pyarrow import pandas while the
# server starts (later, pyarrow imports it lazily at the first request anyway), and with it HTTP
# ingest's paced p99 went from 35 ms to 90-150 ms (bench_ingest --rate 120000, found by bisection;
# why the moment of that import matters is not understood: see tests/test_serving_imports.py).
_MIN_US, _MAX_US = -62_135_596_800_000_000, 253_402_300_799_999_999  # = compiler.timestamps.MIN_US/MAX_US (storage imports no compiler)


def check_timestamp_range(column: pa.ChunkedArray | pa.Array, name: str) -> None:
    """ValueError if a timestamp[us] column holds an instant outside years 1-9999: Parquet and
    DuckDB would take it, but no reader could turn its date back into a Python value (a write
    of such a row used to fail late, in the middle of an append)."""
    low, high = pc.min_max(column.cast(pa.int64())).values()
    if low.is_valid and (low.as_py() < _MIN_US or high.as_py() > _MAX_US):
        raise ValueError(f"{name}: outside years 1 to 9999")


def _default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def connect(target: "ObjectStore | object", *, read_only: bool = False,
            threads: int | None = None, memory_limit: str | None = None,
            extension_directory: str | Path | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection able to read ``target``'s objects.

    ``target`` is an ObjectStore, an EventLake (its store) or a Settings (the lake store
    it describes). The httpfs extension lives in ``<data_dir>/duckdb_extensions`` and spill
    files in ``<data_dir>/duckdb_tmp`` (data_dir: the Settings', else the local lake's parent
    or the S3 store's scratch parent). ``threads`` defaults to the CPU count (at most 8);
    ``memory_limit`` to DuckDB's (80% of RAM).

    ``read_only=True`` is for query-serving connections: after setup the configuration
    is locked, so SQL cannot change secrets, settings or load other extensions.
    (DuckDB's own read_only flag applies to database files; ours is in-memory.)
    """
    store, data_dir = _resolve(target)
    if data_dir is None:
        # Next to a local lake (<data>/lake -> <data>); for S3 next to its scratch dir.
        data_dir = store.root.parent if isinstance(store, LocalObjectStore) else store.scratch_dir().parent
    if extension_directory is None:
        extension_directory = Path(data_dir) / "duckdb_extensions"
    config = {
        "threads": threads or _default_threads(),
        "extension_directory": str(Path(extension_directory).resolve()),
        # Spill files of big sorts/joins stay in the data dir, not the working directory.
        "temp_directory": str((Path(data_dir) / "duckdb_tmp").resolve()),
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    if memory_limit:
        config["memory_limit"] = memory_limit
    con = duckdb.connect(":memory:", config=config)
    if isinstance(store, S3ObjectStore):
        _configure_s3(con, store, config["extension_directory"])
    if read_only:
        con.execute("SET lock_configuration = true")
    return con


def _resolve(target) -> tuple[ObjectStore, Path | None]:
    if isinstance(target, ObjectStore):
        return target, None
    store = getattr(target, "store", None)
    if isinstance(store, ObjectStore):  # EventLake
        return store, None
    if hasattr(target, "lake_root") and hasattr(target, "data_dir"):  # Settings
        return open_store(target), Path(target.data_dir)
    raise TypeError(f"cannot build a DuckDB connection for {type(target).__name__}")


def _configure_s3(con: duckdb.DuckDBPyConnection, store: S3ObjectStore, extension_dir: str) -> None:
    with _install_lock:
        if extension_dir not in _installed_dirs:
            from duckdb_extensions import import_extension

            Path(extension_dir).mkdir(parents=True, exist_ok=True)
            import_extension("httpfs", con=con)  # INSTALL from the wheel into extension_dir
            _installed_dirs.add(extension_dir)
    con.execute("LOAD httpfs")
    endpoint, use_ssl = store.duckdb_endpoint()
    params = {"key_id": store.access_key_id or "", "secret": store.secret_access_key or "",
              "region": store.region}
    # CREATE SECRET takes no bound parameters; values are quoted literals.
    parts = [
        "TYPE s3",
        f"KEY_ID {sql_literal(params['key_id'])}",
        f"SECRET {sql_literal(params['secret'])}",
        f"REGION {sql_literal(params['region'])}",
        f"SCOPE {sql_literal(f's3://{store.bucket}')}",
        "URL_STYLE 'path'",
        f"USE_SSL {'true' if use_ssl else 'false'}",
    ]
    if endpoint:
        parts.append(f"ENDPOINT {sql_literal(endpoint)}")
    con.execute(f"CREATE OR REPLACE SECRET segops_lake ({', '.join(parts)})")


def copy_to_store(con: duckdb.DuckDBPyConnection, query: str, store: ObjectStore, key: str, *,
                  params: dict | list | None = None, options: str = "FORMAT parquet, COMPRESSION zstd") -> int:
    """Write the rows of ``query`` to ``key`` atomically (COPY to a scratch file, then
    ``store.put_file(move=True)``); returns the file's size in bytes. ``options`` is the
    COPY option list (ours, never user input). For Parquet artifacts: membership
    snapshots, exports, compacted lake files."""
    suffix = ".parquet" if "parquet" in options.lower() else ".csv" if "csv" in options.lower() else ""
    tmp = store.new_scratch_path(suffix)
    try:
        con.execute(f"COPY ({query}) TO {sql_literal(str(tmp))} ({options})", params)
        size = tmp.stat().st_size
        store.put_file(key, tmp, move=True)
    finally:
        tmp.unlink(missing_ok=True)
    return size


def sql_literal(value: str) -> str:
    """A DuckDB string literal (for the few statements that take no bound parameters)."""
    return "'" + str(value).replace("'", "''") + "'"


def read_parquet(paths: Sequence[str], partitions: Mapping[str, exp.DataType] | None = None, *,
                 union_by_name: bool = False, row_numbers: bool = False) -> exp.Table:
    """``read_parquet([paths], hive_partitioning=..., union_by_name=..., hive_types={...})`` as a
    sqlglot node (and ``file_row_number=true`` with ``row_numbers``); ``partitions``: the hive
    columns and their types, none by default."""
    def option(name: str, value: exp.Expression) -> exp.Expression:
        return exp.EQ(this=exp.column(name), expression=value)

    options = [option("hive_partitioning", exp.true() if partitions else exp.false()),
               option("union_by_name", exp.true() if union_by_name else exp.false())]
    if partitions:
        options.append(option("hive_types", exp.Struct(expressions=[
            exp.PropertyEQ(this=exp.Literal.string(col), expression=exp.Literal.string(data.sql("duckdb")))
            for col, data in partitions.items()])))
    if row_numbers:
        options.append(option("file_row_number", exp.true()))
    return exp.Table(this=exp.ReadParquet(expressions=[
        exp.Array(expressions=[exp.Literal.string(path) for path in paths]), *options]))
