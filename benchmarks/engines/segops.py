"""segops as users get it: compile the definition and run it through ``engine.segments.query``.

The timed call includes reading the tenant's snapshot, compiling to SQL and executing
``run_preview`` (count only) on the runtime's shared DuckDB database.
"""
from __future__ import annotations

from benchmarks.engines.base import Engine
from benchmarks.suite import SuiteSegment, resolve_segment
from compiler import to_sql
from engine.runtime import Runtime
from engine.settings import Settings


class SegopsEngine(Engine):
    name = "segops"
    label = "segops"

    def setup(self) -> dict[str, float]:
        settings = Settings(data_dir=self.dataset.data_dir, run_workers=False, read_only=True)
        self.runtime = Runtime(settings)
        return {}

    def compiled(self, segment: SuiteSegment):
        return self.runtime.queries.compile(self.dataset.tenant_id, segment.definition,
                                            as_of=self.dataset.as_of, resolve=resolve_segment)

    def sql(self, segment: SuiteSegment) -> str:
        """The executable SQL (over the DuckDB backend's relations) for the compiler-perf notes."""
        return to_sql(self.compiled(segment).executable(self.runtime.backends.get("duckdb")), "duckdb")

    def count(self, segment: SuiteSegment) -> int:
        return self.runtime.queries.run_preview(self.compiled(segment), limit=0).matched_users

    def members(self, segment: SuiteSegment) -> list[str]:
        return self.runtime.queries.member_table(self.compiled(segment)).column("user_id").to_pylist()

    def close(self) -> None:
        runtime = getattr(self, "runtime", None)
        if runtime is not None:
            runtime.stop()
