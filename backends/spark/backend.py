"""The Spark backend: the same compiled trees, rendered for Spark SQL, over the snapshot's files.

A scan reads exactly the committed objects it is given (``spark.read.parquet(*uris)``: a list of
files, never a directory or a glob, so uncommitted and garbage files stay invisible) with the
catalog's schema, so a column a file lacks reads NULL. Each scan is a temp view owned by the
snapshot view built over it and dropped with it.

Writes go to a scratch prefix as one part file (``repartition(1)``) that is then moved onto its
key, so an object appears under its key only complete. Nothing here is a Python UDF: executors
run Spark's own code only and need no segops installed; only the driver does.
"""
from __future__ import annotations

import hashlib
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import date
from typing import TYPE_CHECKING, ClassVar

import pyarrow as pa
from sqlglot import exp

from backends import relations as rel
from backends.base import (ExportFormat, ProgressPoller, Relations, SourceMissing, UnsupportedInput, ViewCache,
                           Written)
from backends.spark.session import build_session
from compiler import to_sql
from storage.lake import SPARK_SCRATCH_PREFIX

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from storage.objectstore import ObjectStore

SCRATCH_PREFIX = SPARK_SCRATCH_PREFIX  # EventLake.collect_garbage deletes what a crashed write left here
_USER_ID_ONLY = pa.schema([pa.field("user_id", pa.string())])
# Spark's messages are the only place naming the file and column of a failed read.
_TYPE_MISMATCH = re.compile(r"reading file (\S+?)\. Data type mismatches when reading Parquet column \[?([^\]\s]+)\]?"
                            r"\. Expected Spark type (\w+), actual Parquet type (\w+)")
_MISSING = re.compile(r"\[(PATH_NOT_FOUND|FAILED_READ_FILE\.FILE_NOT_EXIST)\]")
_SCHEME = re.compile(r"^(file:/*|s3a://)")


class SparkBackend:
    """The process's Spark backend (``runtime.backends.get("spark")``); the session is built on
    first use (``build_session``) unless one is given (tests share theirs)."""

    name: ClassVar[str] = "spark"
    dialect: ClassVar[str] = "spark"
    VIEWS_KEPT = 4  # snapshot views per tenant and table, as DuckDBBackend
    MEMBERS_KEPT = 16  # members files' scans kept registered (they belong to no snapshot view)

    def __init__(self, store: ObjectStore, settings, *, session: SparkSession | None = None):
        self._store, self._settings, self._session = store, settings, session
        self._lock = threading.Lock()
        self._views = ViewCache(self.VIEWS_KEPT, self._create_view, self._drop_view)
        self._view_names: set[str] = set()
        # Temp views live in the session, which other backends of this process may share (tests): a
        # per-backend prefix keeps two lakes' lake_t1_events_s2 apart.
        self._prefix = f"lake_{uuid.uuid4().hex[:8]}"
        self.scans = SparkScans(store, lambda: self.spark, self._reading, self.MEMBERS_KEPT, self._prefix)

    @property
    def spark(self) -> SparkSession:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = build_session(self._settings)
        return self._session

    # -- relations -----------------------------------------------------------------------
    def relations(self, lake: rel.TenantLake, event_dates: tuple[date | None, date] | None = None) -> Relations:
        """Views of the snapshot; for events within ``event_dates`` a view of just those days'
        files (a group of its own, so a run of day ranges does not push out the whole snapshot's)."""
        tenant_id, events_seq, profiles_seq = lake.key

        def view(group: str, name: str, body: Callable[[], exp.Expression]) -> exp.Expression:
            name = f"{self._prefix}_t{tenant_id}_{name}"
            return self._views.view((tenant_id, group), name, lambda: self.scans.owned_by(name, body))

        def events() -> exp.Expression:
            entries = rel.event_entries(lake.events, event_dates)
            name, group = f"events_s{events_seq}", rel.EVENTS_TABLE
            if len(entries) != len(lake.events.entries):
                name, group = f"{name}_{event_dates[0]:%Y%m%d}_{event_dates[1]:%Y%m%d}", "events_days"
            return view(group, name, lambda: rel.events(self.scans, lake.events, entries))

        return Relations(events=events, profiles=lambda: view(
            rel.PROFILES_TABLE, f"profiles_s{profiles_seq}", lambda: rel.profiles(self.scans, lake.profiles)))

    def members(self, key: str) -> exp.Expression:
        return rel.members(self.scans, key)

    def _create_view(self, name: str, body: exp.Expression) -> None:
        self._sql(exp.select(exp.Star()).from_(body), prefix=f"CREATE OR REPLACE TEMPORARY VIEW `{name}` AS ")
        with self._lock:
            self._view_names.add(name)

    def _drop_view(self, name: str) -> None:
        self.spark.catalog.dropTempView(name)
        with self._lock:
            self._view_names.discard(name)
        self.scans.drop_owned(name)

    # -- running -------------------------------------------------------------------------
    def count_and_sample(self, query: exp.Select, limit: int) -> tuple[int, list[str]]:
        """``count(*)``, then ``ORDER BY user_id LIMIT n`` (a top-n per task; Spark's ``min_by``
        takes no count)."""
        members = query.subquery("members")
        user_id = exp.column("user_id", table="members", quoted=True)
        with self._reading():
            count = self._sql(exp.select(exp.Count(this=exp.Star())).from_(members)).collect()[0][0]
            if not limit:
                return count, []
            sample = self._sql(exp.select(user_id).from_(members.copy()).order_by(user_id.copy()).limit(limit))
            return count, [row[0] for row in sample.collect()]

    def members_arrow(self, query: exp.Select) -> pa.Table:
        user_id = exp.column("user_id", table="members", quoted=True)
        ordered = exp.select(user_id).from_(query.subquery("members")).order_by(user_id.copy())
        return self.fetch_arrow(ordered).cast(_USER_ID_ONLY)

    def fetch_arrow(self, query: exp.Select) -> pa.Table:
        with self._reading():
            return self._sql(query).toArrow()

    def write_parquet(self, query: exp.Select, key: str, *, order_by: Sequence[str] = ()) -> Written:
        return self.write_file(query, key, "parquet", order_by=order_by)

    def write_file(self, query: exp.Select, key: str, fmt: ExportFormat, *, order_by: Sequence[str] = (),
                   progress: Callable[[float], None] | None = None) -> Written:
        """One part file written under a scratch prefix, then moved onto ``key``; the prefix is
        deleted whatever happens, so a failed write leaves nothing under ``key`` or beside it."""
        from pyspark.sql import Observation
        from pyspark.sql import functions as F

        prefix = f"{SCRATCH_PREFIX}{uuid.uuid4().hex}/"
        rows = Observation("written")
        frame = self._sql(query).repartition(1)
        if order_by:
            frame = frame.sortWithinPartitions(*order_by)
        writer = frame.observe(rows, F.count(F.lit(1)).alias("rows")).write.mode("errorifexists")
        target = spark_uri(self._store.uri(f"{prefix}out"))
        context, tag = self.spark.sparkContext, f"segops-write-{uuid.uuid4().hex}"
        context.addJobTag(tag)  # on this thread's jobs (PySpark pins a Python thread to a JVM thread)
        try:
            with self._reading(), ProgressPoller(_task_progress(context, tag), progress):
                if fmt == "parquet":
                    writer.parquet(target)
                elif fmt == "csv":
                    writer.option("header", True).csv(target)
                else:
                    writer.option("ignoreNullFields", False).json(target)
                parts = [k for k in self._store.list(f"{prefix}out/") if k.rsplit("/", 1)[-1].startswith("part-")]
                if len(parts) != 1:
                    raise RuntimeError(f"Spark wrote {len(parts)} part files for {key}, expected one")
                self._store.move(parts[0], key)
        finally:
            context.removeJobTag(tag)
            for leftover in self._store.list(prefix):  # _SUCCESS, checksums, a failed write's parts
                self._store.delete(leftover)
        return Written(key, rows.get["rows"], self._store.size(key))

    def _sql(self, query: exp.Expression, *, prefix: str = "") -> DataFrame:
        with self._reading():
            return self.spark.sql(prefix + to_sql(query, self.dialect, pretty=False))

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Spark's read failures as the seam's errors: a file gone -> SourceMissing, a file whose
        column type differs from the catalog -> UnsupportedInput naming both."""
        try:
            yield
        except (UnsupportedInput, SourceMissing):
            raise
        except Exception as err:  # py4j and pyspark errors share no narrower base class
            text = str(err)
            mismatch = _TYPE_MISMATCH.search(text)
            if mismatch:
                path, column, expected, physical = mismatch.groups()
                key = self.scans.key_of(path)
                raise UnsupportedInput(f"{key.split('/', 1)[0]} file {key}: column {column} is {physical}, "
                                       f"catalog says {expected.upper()}") from None
            if _MISSING.search(text):
                raise SourceMissing(text.splitlines()[0]) from err
            raise

    def close(self) -> None:
        """Drops this backend's views; the session stays (one per process, other users may share it)."""
        with self._lock:
            names, self._view_names = [*self._view_names, *self.scans.names()], set()
        if self._session is not None and self._session.sparkContext._jsc is not None:
            for name in names:
                self._session.catalog.dropTempView(name)
        self._views.clear()
        self.scans.clear()


class SparkScans:
    """``spark.read.schema(catalog).parquet(*uris)`` of exactly the given objects, registered as
    temp views. A scan made while a snapshot view is built belongs to it (``owned_by``) and is
    dropped with it; the others (members files) are the newest ``kept``."""

    supports_row_position = True  # Parquet's _metadata.row_index

    def __init__(self, store: ObjectStore, spark: Callable[[], SparkSession],
                 reading: Callable[[], AbstractContextManager], kept: int, prefix: str = "lake"):
        self._store, self._spark, self._reading, self._kept, self._prefix = store, spark, reading, kept, prefix
        self._root = spark_uri(store.uri("x"))[:-1]  # the URI of key "" (a prefix, not an object)
        self._owner = threading.local()
        self._lock = threading.Lock()
        self._owned: dict[str, list[str]] = {}
        self._loose: OrderedDict[str, None] = OrderedDict()

    def scan(self, keys: Sequence[str], columns: dict[str, exp.DataType], *,
             partitions: dict[str, exp.DataType], root: str, row_position: bool = False) -> exp.Expression:
        uris = [spark_uri(self._store.uri(key)) for key in keys]
        schema = ", ".join(to_sql(exp.ColumnDef(this=exp.to_identifier(name, quoted=True), kind=data), "spark", False)
                           for name, data in {**columns, **partitions}.items())
        owner = getattr(self._owner, "name", None)
        digest = hashlib.sha256(repr((owner, keys, schema, row_position)).encode()).hexdigest()[:16]
        name = f"{owner or self._prefix + '_scan'}_{digest}"
        reader = self._spark().read.schema(schema)
        if partitions:  # hive columns from the path under root, typed by the schema
            reader = reader.option("basePath", self._root + root)
        with self._reading():
            frame = reader.parquet(*uris)
        if row_position:
            frame = frame.select("*", frame["_metadata.row_index"].alias(rel.ROW_POSITION))
        frame.createOrReplaceTempView(name)
        self._register(owner, name)
        return exp.Table(this=exp.to_identifier(name, quoted=True))

    def _register(self, owner: str | None, name: str) -> None:
        with self._lock:
            if owner is not None:
                self._owned.setdefault(owner, []).append(name)
                return
            self._loose[name] = None
            self._loose.move_to_end(name)
            stale = list(self._loose)[:-self._kept]
            for old in stale:
                del self._loose[old]
        for old in stale:
            self._spark().catalog.dropTempView(old)

    def owned_by(self, owner: str, build: Callable[[], exp.Expression]) -> exp.Expression:
        """``build()``, with the scans it makes belonging to the view ``owner``."""
        self._owner.name = owner
        try:
            return build()
        finally:
            self._owner.name = None

    def drop_owned(self, owner: str) -> None:
        with self._lock:
            names = self._owned.pop(owner, [])
        for name in names:
            self._spark().catalog.dropTempView(name)

    def names(self) -> list[str]:
        with self._lock:
            return [name for names in self._owned.values() for name in names] + list(self._loose)

    def clear(self) -> None:
        with self._lock:
            self._owned.clear()
            self._loose.clear()

    def key_of(self, path: str) -> str:
        """The object key of a file as Spark names it (``file:/…``, ``file:///…``, ``s3a://…``)."""
        path, root = _SCHEME.sub("", path), _SCHEME.sub("", self._root)
        return path[len(root):] if path.startswith(root) else path


def _task_progress(context, tag: str) -> Callable[[], float]:
    """A poll of the share of finished tasks in the stages of the jobs tagged ``tag`` so far (stages of
    jobs not started yet are not counted: at most 99 while it runs, 100 comes at the end). PySpark's
    tracker lacks the JVM's ``getJobIdsForTag`` (Spark 3.5+), hence the JVM one."""
    tracker, by_tag = context.statusTracker(), context._jsc.sc().statusTracker()

    def poll() -> float:
        done = total = 0
        for job_id in by_tag.getJobIdsForTag(tag):
            job = tracker.getJobInfo(job_id)
            for stage_id in job.stageIds if job else ():
                stage = tracker.getStageInfo(stage_id)
                if stage is not None:
                    done, total = done + stage.numCompletedTasks, total + stage.numTasks
        return min(99.0, 100.0 * done / total) if total else -1.0

    return poll


def spark_uri(uri: str) -> str:
    """What Spark's Hadoop file systems read for an object URI (``ObjectStore.uri``): S3 through s3a."""
    return "s3a://" + uri[len("s3://"):] if uri.startswith("s3://") else uri
