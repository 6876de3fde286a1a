"""What a reader gets from the lake: immutable descriptions of committed files.

Plain data (no I/O), shared by the lake writer and every reader; the engine turns
them into relations for its queries (storage never imports the compiler).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from storage.objectstore import ObjectStore


@dataclass(frozen=True)
class FileEntry:
    """One committed events file."""

    key: str
    path: str  # duckdb_path(key)
    day: date
    rows: int
    bytes: int
    min_occurred_at: datetime
    max_occurred_at: datetime
    min_received_at: datetime
    max_received_at: datetime
    is_sorted: bool = False  # rows ordered by (user_id, occurred_at): written by compaction


@dataclass(frozen=True)
class EventsSnapshot:
    """A consistent view of one tenant's committed events.

    ``files``: DuckDB paths for ``read_parquet(files, hive_partitioning=true,
    union_by_name=true)`` (or ``backends.relations.events``); empty when the tenant
    has no events. ``properties``: property name -> (physical column, kind), kind in
    {"number", "string", "boolean"}. ``entries`` carry per-file day, row count, bytes
    and occurred_at/received_at ranges for pruning.
    """

    tenant_id: int
    seq: int
    files: tuple[str, ...]
    properties: dict[str, tuple[str, str]]
    entries: tuple[FileEntry, ...] = ()

    @property
    def rows(self) -> int:
        return sum(e.rows for e in self.entries)

    def files_between(self, start: date | None = None, end: date | None = None) -> tuple[str, ...]:
        """Files whose day lies in [start, end] (inclusive): cheap pruning before DuckDB."""
        return tuple(e.path for e in self.entries_between(start, end))

    def entries_between(self, start: date | None = None, end: date | None = None) -> tuple[FileEntry, ...]:
        """The entries of the files whose day lies in [start, end] (inclusive)."""
        return tuple(e for e in self.entries if (start is None or e.day >= start) and (end is None or e.day <= end))


@dataclass(frozen=True)
class ProfilesSnapshot:
    """One tenant's profile table: ``file`` (DuckDB path, or None before the first upsert)
    and ``delta`` (read both with ``backends.relations.profiles``),
    one row per user with columns user_id, updated_at (latest identify), traits (JSON
    object of latest values), trait_times (JSON object trait -> epoch microseconds of its
    value) and t_<name> typed columns; tenant_id comes from the hive path.
    ``traits``: trait name -> (column, kind)."""

    tenant_id: int
    seq: int
    file: str | None
    traits: dict[str, tuple[str, str]] = field(default_factory=dict)
    rows: int = 0
    delta: str | None = None  # rows of users changed since ``file`` was written; they replace its rows
    base_key: str | None = None  # the object keys of ``file`` and ``delta`` (for readers other than DuckDB)
    delta_key: str | None = None


@dataclass(frozen=True)
class CompactionResult:
    tenant_id: int
    files_before: int
    files_after: int
    days_compacted: tuple[date, ...]


def entry_json(e: FileEntry) -> dict:
    return {"key": e.key, "day": e.day.isoformat(), "rows": e.rows, "bytes": e.bytes,
            "min_occurred_at": e.min_occurred_at.isoformat(), "max_occurred_at": e.max_occurred_at.isoformat(),
            "min_received_at": e.min_received_at.isoformat(), "max_received_at": e.max_received_at.isoformat(),
            "sorted": e.is_sorted}


def entry_from_json(d: dict, store: ObjectStore) -> FileEntry:
    return FileEntry(d["key"], store.duckdb_path(d["key"]), date.fromisoformat(d["day"]), d["rows"], d["bytes"],
                     datetime.fromisoformat(d["min_occurred_at"]), datetime.fromisoformat(d["max_occurred_at"]),
                     datetime.fromisoformat(d["min_received_at"]), datetime.fromisoformat(d["max_received_at"]),
                     d.get("sorted", False))
