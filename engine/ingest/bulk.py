"""Bulk load of an events file (NDJSON, CSV or Parquet) straight into the lake.

The file already exists durably, so this path skips the write-ahead log: DuckDB
reads the whole file into one table with the values the lake stores, validates it
(all-or-nothing, like the API), deletes duplicate event ids (within the file, and
against ids the lake received in the dedup window), and ``EventLake.append_relation``
writes the rows from that same database in commits of ``chunk_rows`` rows, in day
order: one pass from the file to the lake's Parquet files, no per-row Python.

Columns: ``user_id`` and ``event_type`` (required), ``event_id``, ``occurred_at``,
``properties`` (a JSON object; in CSV its JSON text) optional; other columns are
ignored. Files differ from the API in two lenient ways, because exports look like
this: a timestamp without a zone is read as UTC, and non-string ids (numbers) are
converted to text. Timestamps follow the API's range rule (``compiler.timestamps``:
written with a year 1-9999, and within years 1-9999 once in UTC), checked here in SQL
over the whole file. ``received_at`` is the load time. Rows without ``event_id`` get a
UUIDv7 and are never duplicates. ``ingest_tables`` loads Arrow tables that already hold the
lake's values (the demo generator's) through the same deduplication and commits.

A running server learns about ids loaded here at its next flush of that tenant; the
lake never holds an id twice either way (both writers exclude ids of files the
other committed), but until then the API may answer "accepted" for such an id.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from common.time import naive_utc_now
from compiler.timestamps import MAX_UTC, MIN_UTC, OUT_OF_RANGE
from engine.errors import InvalidInput
from engine.ingest.service import LakeWatch, commit_retrying
from engine.ingest.parse import MAX_ID_CHARS
from storage import duck

if TYPE_CHECKING:
    from storage.lake import EventLake

FORMATS = ("ndjson", "csv", "parquet")
_SUFFIXES = {".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson", ".csv": "csv",
             ".parquet": "parquet", ".pq": "parquet"}
_NDJSON_COLUMNS = ("{'event_id': 'VARCHAR', 'user_id': 'VARCHAR', 'event_type': 'VARCHAR', "
                   "'occurred_at': 'VARCHAR', 'properties': 'JSON'}")
MAX_REPORTED_ROWS = 20
# Rows per lake commit. Each commit writes one file per day it touches, so larger commits
# write fewer, larger files: 2M demo events (183 days) load a few percent faster in one
# commit of 4M than in two of 1M (``benchmarks/bench_ingest.py``, "vs commits of 1M rows").
# A crash loses at most the commit in flight (a rerun skips the ids already loaded).
CHUNK_ROWS = 4_000_000
# TIMESTAMPTZ -> naive UTC by the instant's epoch: no time zone arithmetic (as fast as a copy).
_UTC = "make_timestamp(epoch_us({}))"


class BulkIngestError(InvalidInput):
    """The file was rejected; nothing was written. ``problems``: 'row N: field: message'."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message, code="invalid_file")
        self.problems = problems or []


@dataclass(frozen=True)
class BulkResult:
    rows: int          # rows in the file
    duplicates: int    # dropped: repeated in the file or already in the lake
    written: int
    seconds: float
    lake_seconds: float = 0.0  # of ``seconds``, spent in EventLake.append_relation

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
    """A SELECT of the normalized source columns: occurred_utc, occurred_at as naive UTC
    (NULL if missing or unreadable), occurred_raw its text where it is text (for the
    check), properties as JSON text and properties_bad (not NULL nor a JSON object)."""
    literal = duck.sql_literal(str(path))
    if fmt == "ndjson":
        # read_json has parsed properties and holds them minified: '{' starts an object.
        return (f"SELECT event_id, user_id, event_type, occurred_at AS occurred_raw, "
                f"{_UTC.format('TRY_CAST(occurred_at AS TIMESTAMPTZ)')} AS occurred_utc, "
                f"properties::VARCHAR AS properties, left(properties::VARCHAR, 1) <> '{{' AS properties_bad "
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
    occurred_raw, occurred_at = "CAST(NULL AS VARCHAR)", "CAST(NULL AS TIMESTAMP)"
    if occurred in ("VARCHAR", "JSON"):
        occurred_raw, occurred_at = '"occurred_at"', _UTC.format('TRY_CAST("occurred_at" AS TIMESTAMPTZ)')
    elif occurred is not None and occurred.startswith("TIMESTAMP WITH TIME ZONE"):
        occurred_at = _UTC.format('"occurred_at"')
    elif occurred is not None:  # TIMESTAMP (naive = UTC), TIMESTAMP_NS/_MS/_S, DATE
        occurred_at = 'CAST("occurred_at" AS TIMESTAMP)'
    props = types.get("properties")
    properties, properties_bad = "CAST(NULL AS VARCHAR)", "false"
    if props is not None and props.startswith(("STRUCT", "MAP")):  # an object by its type
        properties = 'CAST(to_json("properties") AS VARCHAR)'
    elif props is not None:
        properties = "NULLIF(CAST(\"properties\" AS VARCHAR), '')"
        properties_bad = f"{properties} IS NOT NULL AND TRY(json_type({properties})) IS DISTINCT FROM 'OBJECT'"
    return (f"SELECT {text('event_id')} AS event_id, {text('user_id')} AS user_id, "
            f"{text('event_type')} AS event_type, {occurred_raw} AS occurred_raw, {occurred_at} AS occurred_utc, "
            f"{properties} AS properties, {properties_bad} AS properties_bad FROM {reader}")


# A row is bad if this holds (vectorized; columns of ``staged``); _PROBLEM then names
# the first failing check. Lengths count characters; the byte count (no decoding) is
# checked first, since no text has more characters than bytes.
def _too_long(column: str) -> str:
    return f"(strlen({column}) > {MAX_ID_CHARS} AND length({column}) > {MAX_ID_CHARS})"


def _ts(moment: datetime) -> str:
    return f"TIMESTAMP '{moment.isoformat(sep=' ')}'"  # our constants: safe literals


# The range rule of compiler.timestamps. DuckDB reads years beyond 1-9999 (year 0 is 1 BC); a
# written year outside 1-9999 can only land in range through its offset, so the text's year
# is looked at only for instants within 5 days (DuckDB takes offsets up to 99:59) of the ends.
_OUT_OF_RANGE = f"""(
    occurred_utc NOT BETWEEN {_ts(MIN_UTC)} AND {_ts(MAX_UTC)}
    OR (occurred_raw IS NOT NULL
        AND (occurred_utc < {_ts(MIN_UTC + timedelta(days=5))} OR occurred_utc > {_ts(MAX_UTC - timedelta(days=5))})
        AND NOT regexp_matches(occurred_raw, '^\\s*(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{{2}}|[1-9][0-9]{{3}})-')))"""
_BAD = f"""(
    user_id IS NULL OR user_id = '' OR {_too_long('user_id')}
    OR event_type IS NULL OR event_type = '' OR {_too_long('event_type')}
    OR event_id = '' OR {_too_long('event_id')}
    OR occurred_bad OR occurred_out_of_range OR properties_bad)"""
_PROBLEM = f"""
    CASE
      WHEN user_id IS NULL OR user_id = '' THEN 'user_id: required'
      WHEN {_too_long('user_id')} THEN 'user_id: longer than {MAX_ID_CHARS} characters'
      WHEN event_type IS NULL OR event_type = '' THEN 'event_type: required'
      WHEN {_too_long('event_type')} THEN 'event_type: longer than {MAX_ID_CHARS} characters'
      WHEN event_id = '' OR {_too_long('event_id')}
        THEN 'event_id: must be 1 to {MAX_ID_CHARS} characters'
      WHEN occurred_bad THEN 'occurred_at: not an ISO 8601 timestamp'
      WHEN occurred_out_of_range THEN 'occurred_at: {OUT_OF_RANGE}'
      ELSE 'properties: must be a JSON object'
    END"""


def ingest_file(lake: "EventLake", tenant_id: int, path: str | Path, fmt: str | None = None, *,
                chunk_rows: int = CHUNK_ROWS, window_days: int = 8,
                progress: Callable[[int, int], None] | None = None) -> BulkResult:
    """Load ``path`` into ``tenant_id``'s events. ``progress(done, total)`` is called once
    the file is validated (done=0) and after each chunk written. Raises BulkIngestError
    (nothing written) if any row is invalid."""
    started = time.perf_counter()
    path = Path(path)
    if not path.is_file():
        raise BulkIngestError(f"{path}: no such file")
    fmt = detect_format(path, fmt)
    now = naive_utc_now()
    with _connection(lake) as con:
        total = _stage(con, path, fmt, now)
        received = f"CAST({duck.sql_literal(now.isoformat(sep=' '))} AS TIMESTAMP)"
        written, lake_seconds = _write_staged(con, lake, tenant_id, received, chunk_rows, window_days, progress)
    return BulkResult(total, total - written, written, time.perf_counter() - started, lake_seconds)


def ingest_tables(lake: "EventLake", tenant_id: int, tables: Iterable[pa.Table], *, chunk_rows: int = CHUNK_ROWS,
                  window_days: int = 8, progress: Callable[[int], None] | None = None) -> BulkResult:
    """Load tables that already hold the lake's values (event_id, user_id, event_type,
    occurred_at and received_at as naive UTC timestamps, properties as JSON object text;
    e.g. ``cli.demo``'s), one table at a time, deduplicated exactly as a file is.
    ``progress(rows)`` gets the rows of each table once it is written."""
    started = time.perf_counter()
    rows = written = 0
    lake_seconds = 0.0
    with _connection(lake) as con:
        for table in tables:
            con.register("incoming", table)
            con.execute("CREATE OR REPLACE TEMP TABLE staged AS SELECT event_id, user_id, event_type, occurred_at, "
                        "received_at, properties FROM incoming")
            con.unregister("incoming")
            done, seconds = _write_staged(con, lake, tenant_id, "received_at", chunk_rows, window_days, None)
            rows, written, lake_seconds = rows + table.num_rows, written + done, lake_seconds + seconds
            if progress:
                progress(table.num_rows)
    return BulkResult(rows, rows - written, written, time.perf_counter() - started, lake_seconds)


@contextmanager
def _connection(lake: "EventLake") -> Iterator:
    con = duck.connect(lake.store)  # a database of our own: its settings are ours to change
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")  # the command shows its own
        scratch = lake.store.scratch_dir() / "duckdb-tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        con.execute(f"SET temp_directory = {duck.sql_literal(str(scratch))}")
        yield con
    finally:
        con.close()


def _write_staged(con, lake: "EventLake", tenant_id: int, received: str, chunk_rows: int, window_days: int,
                  progress: Callable[[int, int], None] | None) -> tuple[int, float]:
    """Deduplicate the rows of ``staged`` (``received``: the SQL of their received_at) and
    append them to the lake in chunks; returns (rows written, seconds in the lake's appends).

    The dedup window reaches ``window_days`` back from the oldest row's received_at: for a
    file that is now, like the API's; rows that carry an older received_at (the demo's)
    are compared with what the lake received around then, so loading them twice writes
    them once."""
    oldest = con.execute(f"SELECT min({received}) FROM staged").fetchone()[0]
    if oldest is None:
        if progress:
            progress(0, 0)
        return 0, 0.0
    since = oldest - timedelta(days=window_days)
    watch = LakeWatch(lake)
    watch.baseline(tenant_id)
    try:
        unique = con.execute("SELECT count(*) FROM staged").fetchone()[0] - _drop_duplicates(
            con, lake, tenant_id, since)
        if progress:
            progress(0, unique)
        written = done = 0
        lake_seconds = 0.0
        for where, rows in _chunks(con, chunk_rows):
            ids = watch.new_ids(tenant_id, since)  # a concurrent writer's ids win
            if ids is not None:
                _drop_ids(con, ids)
            con.execute(f"CREATE OR REPLACE TEMP VIEW chunk AS SELECT event_id, user_id, event_type, occurred_at, "
                        f"{received} AS received_at, properties, rowid AS __rn FROM staged WHERE {where}")
            appending = time.perf_counter()
            keys = commit_retrying(lambda: lake.append_relation(tenant_id, con, "chunk", "__rn"))
            lake_seconds += time.perf_counter() - appending
            watch.own(tenant_id, keys)
            written += con.execute("SELECT count(*) FROM chunk").fetchone()[0]
            done += rows
            if progress:
                progress(done, unique)
    finally:
        watch.close()
    return written, lake_seconds


def _stage(con, path: Path, fmt: str, now: datetime) -> int:
    """Read the file into the temp table ``staged`` (file order, so rowid + 1 is the row
    number) with the values the lake stores, and validate it; returns its row count.
    Rows without event_id get a UUIDv7, so they are never duplicates."""
    try:
        con.execute(f"""
            CREATE TEMP TABLE staged AS
            SELECT coalesce(event_id, uuidv7()::VARCHAR) AS event_id, user_id, event_type,
                   coalesce(occurred_utc, CAST($now AS TIMESTAMP)) AS occurred_at,
                   occurred_raw IS NOT NULL AND occurred_utc IS NULL AS occurred_bad,
                   coalesce({_OUT_OF_RANGE}, false) AS occurred_out_of_range,
                   coalesce(properties, '{{}}') AS properties, coalesce(properties_bad, false) AS properties_bad
            FROM ({_source(con, path, fmt)})""", {"now": now})
    except Exception as exc:  # unreadable file: DuckDB names the line or column
        if isinstance(exc, BulkIngestError):
            raise
        raise BulkIngestError(f"{path.name}: cannot read as {fmt}: {exc}") from None
    total, bad = con.execute(f"SELECT count(*), count(*) FILTER (WHERE {_BAD}) FROM staged").fetchone()
    if bad:
        rows = con.execute(f"SELECT rowid + 1, {_PROBLEM} FROM staged WHERE {_BAD} "
                           f"ORDER BY rowid LIMIT {MAX_REPORTED_ROWS}").fetchall()
        problems = [f"row {n}: {p}" for n, p in rows]
        raise BulkIngestError(f"{path.name}: {bad} invalid row(s); nothing was written", problems)
    return total


def _drop_duplicates(con, lake: "EventLake", tenant_id: int, since: datetime) -> int:
    """Delete from ``staged`` every repeat of an id after its first row, and ids the lake
    received since ``since``; returns the number of rows deleted."""
    con.execute("CREATE TEMP TABLE repeated AS "
                "SELECT event_id, min(rowid) AS first FROM staged GROUP BY event_id HAVING count(*) > 1")
    dropped = 0
    if con.execute("SELECT count(*) FROM repeated").fetchone()[0]:
        dropped = con.execute("DELETE FROM staged s USING repeated r "
                              "WHERE s.event_id = r.event_id AND s.rowid > r.first").fetchone()[0]
    con.execute("DROP TABLE repeated")
    recent = [e.path for e in lake.snapshot(tenant_id).entries if e.max_received_at >= since]
    if recent:
        dropped += con.execute("DELETE FROM staged WHERE event_id IN (SELECT event_id FROM read_parquet($paths))",
                               {"paths": recent}).fetchone()[0]
    return dropped


def _drop_ids(con, ids: pa.Array) -> None:
    """Delete rows with these ids from ``staged`` (another writer committed them)."""
    con.register("foreign_ids", pa.table({"event_id": ids}))
    try:
        con.execute("DELETE FROM staged WHERE event_id IN (SELECT event_id FROM foreign_ids)")
    finally:
        con.unregister("foreign_ids")


def _chunks(con, chunk_rows: int) -> list[tuple[str, int]]:
    """Conditions on ``staged`` that cut it into commits of ``chunk_rows`` rows (the last
    may be smaller), with their row counts. Rows go in (day, file position) order, so a
    commit holds a run of days, and a cut inside a day splits it by file position. One
    condition, ``true``, if it all fits."""
    days = con.execute("SELECT CAST(occurred_at AS DATE) AS day, count(*) FROM staged "
                       "GROUP BY day ORDER BY day").fetchall()
    total = sum(rows for _, rows in days)
    if total <= chunk_rows:
        return [("true", total)] if total else []
    cuts: list[tuple[date, int]] = []  # each chunk ends with the row (day, rowid)
    before = 0
    for day, rows in days:
        first = chunk_rows - before % chunk_rows  # position in this day of the next cut
        inside = list(range(first, min(rows, total - before), chunk_rows))
        if inside:  # the rowids at these positions of the day
            rowids = dict(con.execute(
                f"SELECT n, rowid FROM (SELECT rowid, row_number() OVER (ORDER BY rowid) AS n FROM staged "
                f"WHERE {_on_day(day)}) WHERE n IN (SELECT unnest($n))", {"n": inside}).fetchall())
            cuts += [(day, rowids[n]) for n in inside]
        if first <= rows < total - before and (rows - first) % chunk_rows == 0:
            cuts.append((day + timedelta(days=1), -1))  # a cut right after the day's last row
        before += rows
    sizes = [min(chunk_rows, total - start) for start in range(0, total, chunk_rows)]
    return [(" AND ".join(([f"NOT {_up_to(low)}"] if low else []) + ([_up_to(high)] if high else [])), size)
            for low, high, size in zip([None, *cuts], [*cuts, None], sizes)]


def _up_to(cut: tuple[date, int]) -> str:
    """Rows up to (day, rowid) in (day, file position) order (our values: safe literals)."""
    day, rowid = cut
    return (f"(occurred_at < TIMESTAMP '{day.isoformat()}' OR ({_on_day(day)} AND rowid <= {int(rowid)}))")


def _on_day(day: date) -> str:
    return (f"occurred_at >= TIMESTAMP '{day.isoformat()}' "
            f"AND occurred_at < TIMESTAMP '{(day + timedelta(days=1)).isoformat()}'")
