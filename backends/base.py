"""The interface every query backend implements, and what it returns.

A backend runs sqlglot trees that ``relations.bind`` has bound to *its* relations: it renders
each with ``compiler.to_sql(tree, dialect, pretty=False)`` and reads the result into Arrow or
writes it to the object store. A written object appears under its key only complete; after a
failure nothing is left there.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from datetime import date
from functools import cached_property
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple, Protocol

import pyarrow as pa
from sqlglot import exp

from compiler import LakeSchema
from storage.snapshots import EventsSnapshot, ProfilesSnapshot

ExportFormat = Literal["parquet", "csv", "jsonl"]


@dataclass(frozen=True)
class TenantLake:
    """What one tenant's queries run over: the display schema and the snapshots behind it."""

    schema: LakeSchema
    key: tuple[int, int, int]  # (tenant_id, events snapshot seq, profiles snapshot seq)
    events: EventsSnapshot
    profiles: ProfilesSnapshot


class Relations:
    """One snapshot's relations in one backend: ``events`` (the events catalog: base columns,
    ``p_*``, ``tenant_id`` BIGINT, ``event_date`` DATE) and ``profiles`` (one row per user: base
    columns, ``t_*``, ``tenant_id``). Each is built on first use, so a query that reads only
    profiles creates no events view (profile reads run beside a flusher adding a file a second)."""

    def __init__(self, events: Callable[[], exp.Expression], profiles: Callable[[], exp.Expression]):
        self._build = {"events": events, "profiles": profiles}

    @cached_property
    def events(self) -> exp.Expression:
        return self._build["events"]()

    @cached_property
    def profiles(self) -> exp.Expression:
        return self._build["profiles"]()


class Written(NamedTuple):
    key: str
    rows: int
    bytes: int


class BackendError(RuntimeError):
    """A backend could not run a query."""


class UnsupportedInput(BackendError):
    """The backend cannot read this input; the message names the file, column or feature."""


class SourceMissing(BackendError):
    """An object a relation names is gone (retention removed it): callers answer SnapshotExpired."""


class QueryBackend(Protocol):
    name: ClassVar[str]      # "duckdb" | "spark"
    dialect: ClassVar[str]   # the sqlglot dialect handed to compiler.to_sql
    scans: Scans             # its leaf reader (what ``relations`` builds from)

    def relations(self, lake: TenantLake, event_dates: tuple[date | None, date] | None = None) -> Relations:
        """The snapshot's relations; with ``event_dates`` (first day or None, last day) events
        may be limited to those days' files (a compiled query's ``meta[EVENT_DATES]``)."""

    def members(self, key: str) -> exp.Expression:
        """A computation's members file (``user_id``, ``computed_at``) as a relation."""

    def count_and_sample(self, query: exp.Select, limit: int) -> tuple[int, list[str]]:
        """(rows of ``query``, its ``limit`` smallest ``user_id``s ascending)."""

    def members_arrow(self, query: exp.Select) -> pa.Table:
        """``query``'s ``user_id`` column as a table of one string column, ascending."""

    def fetch_arrow(self, query: exp.Select) -> pa.Table:
        """A small result (an aggregate, a page, profile rows) as Arrow."""

    def write_parquet(self, query: exp.Select, key: str, *, order_by: Sequence[str] = ()) -> Written:
        """``write_file(query, key, "parquet", order_by=order_by)``."""

    def write_file(self, query: exp.Select, key: str, fmt: ExportFormat, *, order_by: Sequence[str] = (),
                   progress: Callable[[float], None] | None = None) -> Written:
        """The rows of ``query`` (ordered by the output columns ``order_by``) as one object
        under ``key``; ``progress`` receives percentages while it runs."""

    def close(self) -> None: ...


class Scans(Protocol):
    """A backend's leaf reader over exactly the committed objects it is given (never a glob).

    The leaf yields exactly ``columns`` with those types (NULL where a file lacks one) plus the
    ``partitions`` columns typed as given, taken from the hive path under ``root`` (a key
    prefix); with ``row_position`` also ``relations.ROW_POSITION``, the 0-based row in its file.
    Extra columns may follow (readers select theirs by name)."""

    supports_row_position: bool

    def scan(self, keys: Sequence[str], columns: dict[str, exp.DataType], *,
             partitions: dict[str, exp.DataType], root: str, row_position: bool = False) -> exp.Expression: ...


class ViewCache:
    """Named views a backend created, the newest ``kept`` per group (a tenant's table): a query
    compiled against a slightly older snapshot (another thread committed meanwhile) still finds
    its view. ``create(name, body)`` and ``drop(name)`` run the backend's statements."""

    def __init__(self, kept: int, create: Callable[[str, exp.Expression], None], drop: Callable[[str], None]):
        self.kept, self._create, self._drop = kept, create, drop
        self._names: dict[Hashable, list[str]] = {}
        self._lock = threading.Lock()

    def view(self, group: Hashable, name: str, body: Callable[[], exp.Expression]) -> exp.Table:
        """The view ``name`` (created from ``body()`` unless it exists) as a table reference."""
        if name not in self._names.get(group, ()):
            self._create(name, body())
            with self._lock:
                names = self._names.setdefault(group, [])
                if name not in names:
                    names.append(name)
                stale, names[:] = names[:-self.kept], names[-self.kept:]
            for old in stale:
                self._drop(old)
        return exp.Table(this=exp.to_identifier(name, quoted=True))

    def clear(self) -> None:
        with self._lock:
            self._names.clear()


class ProgressPoller:
    """``progress`` (a ``write_file`` caller's) fed from a side thread while the block runs: every
    0.1 s ``poll()`` (a percentage, negative while unknown) is passed on when it has risen, and 100
    once the block succeeded. Each backend supplies its ``poll`` (DuckDB: the cursor's
    ``query_progress``; Spark: its status tracker's finished tasks)."""

    def __init__(self, poll: Callable[[], float], progress: Callable[[float], None] | None):
        self._poll, self._progress = poll, progress
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True) if progress else None

    def __enter__(self) -> ProgressPoller:
        if self._thread:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread:
            self._stop.set()
            self._thread.join()
            if exc[0] is None:
                self._progress(100.0)

    def _run(self) -> None:
        reported = -1.0
        while not self._stop.wait(0.1):
            value = self._poll()
            if value > reported:
                reported = value
                self._progress(value)
