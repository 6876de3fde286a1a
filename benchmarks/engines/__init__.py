"""The engines the suite runs on, by name (``--engines`` takes these names)."""
from __future__ import annotations

from importlib import import_module

from benchmarks.engines.base import Engine, EngineUnavailable

ENGINES = {
    "segops": "benchmarks.engines.segops:SegopsEngine",
    "duckdb_hand": "benchmarks.engines.duckdb_hand:DuckDBHandEngine",
    "polars": "benchmarks.engines.polars_lazy:PolarsEngine",
    "postgres": "benchmarks.engines.postgres:PostgresEngine",
    "pandas": "benchmarks.engines.pandas_frames:PandasEngine",
}


def engine_class(name: str) -> type[Engine]:
    """Imported lazily: a run without PostgreSQL never imports psycopg, and so on."""
    module, attr = ENGINES[name].split(":")
    return getattr(import_module(module), attr)


__all__ = ["ENGINES", "Engine", "EngineUnavailable", "engine_class"]
