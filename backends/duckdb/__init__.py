"""The embedded DuckDB backend (the default): ``DuckDBBackend``."""
from backends.duckdb.backend import DuckDBBackend, DuckDBScans

__all__ = ["DuckDBBackend", "DuckDBScans"]
