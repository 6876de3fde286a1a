"""Bulk load of an events file (NDJSON, CSV or Parquet) straight into the lake.

The file already exists durably, so this path skips the write-ahead log: DuckDB
reads and validates the whole file (all-or-nothing, like the API), drops
duplicate event ids (within the file, and against ids the lake received in the
dedup window), and the rows go to ``EventLake.append_events`` in large chunks.
No per-row Python.

Columns: ``user_id`` and ``event_type`` (required), ``event_id``, ``occurred_at``,
``properties`` (a JSON object; in CSV its JSON text) optional; other columns are
ignored. Files differ from the API in two lenient ways, because exports look like
this: a timestamp without a zone is read as UTC, and non-string ids (numbers) are
converted to text. ``received_at`` is the load time. Rows without ``event_id`` get a
UUIDv7 and are never duplicates.

A running server learns about ids loaded here at its next flush of that tenant; the
lake never holds an id twice either way (both writers exclude ids of files the
other committed), but until then the API may answer "accepted" for such an id.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from engine.ingest import LakeWatch, append_retrying
from engine.ingest_parse import MAX_ID_CHARS
from storage import duck

if TYPE_CHECKING:
    from storage.lake import EventLake

FORMATS = ("ndjson", "csv", "parquet")
_SUFFIXES = {".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson", ".csv": "csv",
             ".parquet": "parquet", ".pq": "parquet"}
_NDJSON_COLUMNS = ("{'event_id': 'VARCHAR', 'user_id': 'VARCHAR', 'event_type': 'VARCHAR', "
                   "'occurred_at': 'VARCHAR', 'properties': 'JSON'}")
MAX_REPORTED_ROWS = 20


class BulkIngestError(ValueError):
    """The file was rejected; nothing was written. ``problems``: 'row N: field: message'."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []


@dataclass(frozen=True)
class BulkResult:
    rows: int          # rows in the file
    duplicates: int    # dropped: repeated in the file or already in the lake
    written: int
    seconds: float
    lake_seconds: float = 0.0  # of ``seconds``, spent in EventLake.append_events

    @property
    def events_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def detect_format(path: Path, fmt: str | None = None) -> str:
    if fmt:
        if fmt not in FORMATS:
            raise BulkIngestError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        return fmt
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise BulkIngestError(f"cannot tell the format of {path.name}; pass --format ({', '.join(FORMATS)})")
    return found


def _source(con, path: Path, fmt: str) -> str:
    """A SELECT of the normalized source columns (raw occurred_at/properties kept for checks)."""
    literal = duck.sql_literal(str(path))
    if fmt == "ndjson":
        return (f"SELECT event_id, user_id, event_type, occurred_at AS occurred_raw, "
                f"TRY_CAST(occurred_at AS TIMESTAMPTZ) AS occurred_tz, properties::VARCHAR AS properties "
                f"FROM read_json({literal}, format='newline_delimited', columns={_NDJSON_COLUMNS}, "
                f"maximum_object_size=33554432)")
    reader = (f"read_csv({literal}, header=true, all_varchar=true)" if fmt == "csv"
              else f"read_parquet({literal})")
    types = {row[0]: row[1].upper() for row in con.execute(f"DESCRIBE SELECT * FROM {reader}").fetchall()}
    missing = [c for c in ("user_id", "event_type") if c not in types]
    if missing:
        raise BulkIngestError(f"{path.name}: missing required column(s) {', '.join(missing)}",
                              [f"{c}: column is missing" for c in missing])

    def text(name: str) -> str:
        return f'CAST("{name}" AS VARCHAR)' if name in types else "CAST(NULL AS VARCHAR)"

    occurred = types.get("occurred_at")
    if occurred is None:
        occurred_raw, occurred_tz = "CAST(NULL AS VARCHAR)", "CAST(NULL AS TIMESTAMPTZ)"
    elif occurred in ("VARCHAR", "JSON"):
        occurred_raw, occurred_tz = '"occurred_at"', 'TRY_CAST("occurred_at" AS TIMESTAMPTZ)'
    else:  # TIMESTAMP (naive = UTC), TIMESTAMP_NS, TIMESTAMP WITH TIME ZONE, DATE
        occurred_raw, occurred_tz = 'CAST("occurred_at" AS VARCHAR)', 'CAST("occurred_at" AS TIMESTAMPTZ)'
    props = types.get("properties")
    if props is None:
        properties = "CAST(NULL AS VARCHAR)"
    elif props.startswith(("STRUCT", "MAP")):
        properties = 'CAST(to_json("properties") AS VARCHAR)'
    else:
        properties = "NULLIF(CAST(\"properties\" AS VARCHAR), '')"
    return (f"SELECT {text('event_id')} AS event_id, {text('user_id')} AS user_id, "
            f"{text('event_type')} AS event_type, {occurred_raw} AS occurred_raw, {occurred_tz} AS occurred_tz, "
            f"{properties} AS properties FROM {reader}")


# A row is bad if this holds (vectorized); _PROBLEM then names the first failing check.
# A valid JSON text whose first character is '{' is an object.
_IS_OBJECT = "(json_valid(properties) AND left(ltrim(properties), 1) = '{')"
_BAD = f"""(
    user_id IS NULL OR user_id = '' OR length(user_id) > {MAX_ID_CHARS}
    OR event_type IS NULL OR event_type = '' OR length(event_type) > {MAX_ID_CHARS}
    OR event_id = '' OR length(event_id) > {MAX_ID_CHARS}
    OR (occurred_raw IS NOT NULL AND occurred_tz IS NULL)
    OR (properties IS NOT NULL AND NOT {_IS_OBJECT}))"""
_PROBLEM = f"""
    CASE
      WHEN user_id IS NULL OR user_id = '' THEN 'user_id: required'
      WHEN length(user_id) > {MAX_ID_CHARS} THEN 'user_id: longer than {MAX_ID_CHARS} characters'
      WHEN event_type IS NULL OR event_type = '' THEN 'event_type: required'
      WHEN length(event_type) > {MAX_ID_CHARS} THEN 'event_type: longer than {MAX_ID_CHARS} characters'
      WHEN event_id = '' OR length(event_id) > {MAX_ID_CHARS}
        THEN 'event_id: must be 1 to {MAX_ID_CHARS} characters'
      WHEN occurred_raw IS NOT NULL AND occurred_tz IS NULL THEN 'occurred_at: not an ISO 8601 timestamp'
      ELSE 'properties: must be a JSON object'
    END"""


def ingest_file(lake: "EventLake", tenant_id: int, path: str | Path, fmt: str | None = None, *,
                chunk_rows: int = 1_000_000, window_days: int = 8,
                progress: Callable[[int, int], None] | None = None) -> BulkResult:
    """Load ``path`` into ``tenant_id``'s events. ``progress(done, total)`` is called once
    the file is validated (done=0) and after each chunk written. Raises BulkIngestError
    (nothing written) if any row is invalid."""
    started = time.perf_counter()
    path = Path(path)
    if not path.is_file():
        raise BulkIngestError(f"{path}: no such file")
    fmt = detect_format(path, fmt)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    since = now - timedelta(days=window_days)
    watch = LakeWatch(lake)
    watch.baseline(tenant_id)
    con = duck.connect(lake.store)
    try:
        con.execute("SET TimeZone = 'UTC'")
        scratch = lake.store.scratch_dir() / "duckdb-tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        con.execute(f"SET temp_directory = {duck.sql_literal(str(scratch))}")
        try:  # file order is kept (insertion order), so rowid + 1 is the row number
            con.execute(f"CREATE TEMP TABLE staged AS {_source(con, path, fmt)}")
        except Exception as exc:  # unreadable file: DuckDB names the line or column
            if isinstance(exc, BulkIngestError):
                raise
            raise BulkIngestError(f"{path.name}: cannot read as {fmt}: {exc}") from None
        bad = con.execute(f"SELECT count(*) FROM staged WHERE {_BAD}").fetchone()[0]
        if bad:
            rows = con.execute(f"SELECT rowid + 1, {_PROBLEM} FROM staged WHERE {_BAD} "
                               f"ORDER BY rowid LIMIT {MAX_REPORTED_ROWS}").fetchall()
            problems = [f"row {n}: {p}" for n, p in rows]
            raise BulkIngestError(f"{path.name}: {bad} invalid row(s); nothing was written", problems)
        total = con.execute("SELECT count(*) FROM staged").fetchone()[0]
        recent = [e.path for e in lake.snapshot(tenant_id).entries if e.max_received_at >= since]
        params = {"tenant": int(tenant_id), "now": now}
        known = "SELECT CAST(NULL AS VARCHAR) AS event_id WHERE false"
        if recent:
            known, params["paths"] = "SELECT DISTINCT event_id FROM read_parquet($paths)", recent
        # First occurrence of each id in the file, minus ids the lake received in the window;
        # sorted by time when it spans several commits, so each commit touches few days.
        order = "ORDER BY occurred_at" if total > chunk_rows else ""
        con.execute(f"""
            CREATE TEMP TABLE final AS
            SELECT coalesce(s.event_id, uuidv7()::VARCHAR) AS event_id, CAST($tenant AS BIGINT) AS tenant_id,
                   s.user_id, s.event_type,
                   coalesce(timezone('UTC', s.occurred_tz), CAST($now AS TIMESTAMP)) AS occurred_at,
                   CAST($now AS TIMESTAMP) AS received_at, coalesce(s.properties, '{{}}') AS properties
            FROM staged s ANTI JOIN ({known}) k ON s.event_id = k.event_id
            WHERE s.event_id IS NULL
               OR s.rowid IN (SELECT min(rowid) FROM staged WHERE event_id IS NOT NULL GROUP BY event_id)
            {order}""", params)
        con.execute("DROP TABLE staged")
        unique = con.execute("SELECT count(*) FROM final").fetchone()[0]
        if progress:
            progress(0, unique)
        written = done = 0
        lake_seconds = 0.0
        reader = con.execute("SELECT * FROM final").to_arrow_reader(chunk_rows)
        for batch in reader:
            table = pa.Table.from_batches([batch])
            done += table.num_rows
            ids = watch.new_ids(tenant_id, since)  # a concurrent writer's ids win
            if ids is not None:
                table = table.filter(pc.invert(pc.is_in(table.column("event_id"), value_set=ids)))
            if table.num_rows:
                appending = time.perf_counter()
                watch.own(tenant_id, append_retrying(lake, tenant_id, table))
                lake_seconds += time.perf_counter() - appending
                written += table.num_rows
            if progress:
                progress(done, unique)
    finally:
        con.close()
        watch.close()
    return BulkResult(total, total - written, written, time.perf_counter() - started, lake_seconds)
