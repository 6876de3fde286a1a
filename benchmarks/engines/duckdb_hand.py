"""Hand-written DuckDB SQL (``SuiteSegment.sql``) over exactly the files of the lake snapshot.

Views ``events`` / ``profiles`` read the committed Parquet files with hive partitioning
(``event_date`` filters skip whole days) and the Parquet metadata cache on, as an expert
querying the lake directly would set it up.
"""
from __future__ import annotations

import duckdb

from benchmarks.engines.base import HandSqlEngine
from benchmarks.suite import SqlContext

def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def create_lake_views(con: duckdb.DuckDBPyConnection, dataset) -> None:
    """Views ``events`` and ``profiles`` over exactly the files of the dataset's snapshots."""
    files = ", ".join(_literal(path) for path in dataset.snapshot.files)
    con.execute(f"CREATE OR REPLACE VIEW events AS SELECT * FROM read_parquet([{files}], hive_partitioning = true, "
                "union_by_name = true, hive_types = {'tenant_id': BIGINT, 'event_date': DATE})")
    con.execute(f"CREATE OR REPLACE VIEW profiles AS SELECT * FROM read_parquet({_literal(dataset.profiles.file)}, "
                "hive_partitioning = true, hive_types = {'tenant_id': BIGINT})")


class DuckDBHandEngine(HandSqlEngine):
    name = "duckdb_hand"
    label = "DuckDB (hand SQL)"

    def setup(self) -> dict[str, float]:
        self.con = duckdb.connect(":memory:")
        self.con.execute("SET parquet_metadata_cache = true")
        self.con.execute("SET enable_progress_bar = false")
        create_lake_views(self.con, self.dataset)
        self.context = SqlContext(self.dataset, "duckdb")
        return {}

    def close(self) -> None:
        con = getattr(self, "con", None)
        if con is not None:
            con.close()
            self.con = None
