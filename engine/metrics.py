"""Prometheus metrics of one process, served by the API at ``GET /metrics``.

Two kinds, so that nothing is counted on a hot path that can be read at scrape time instead:

* state read when scraped (``_StateCollector``): write-ahead log bytes and flush lag, the membership
  index's size and the age of what it serves, the send and compute queues (from the metadata DB, so
  they cover every process sharing the data directory);
* events counted as they happen: requests by route template and status (``observe_request``, called
  by the API's middleware), ingest outcomes, compute job durations and failures, rate-limit rejections.

Each Runtime has its own ``CollectorRegistry`` (not prometheus_client's global one), so several
runtimes in one process (tests) never share or collide. Labels never carry tenant ids or user input:
routes are templates, methods and codes come from fixed sets.
"""
from __future__ import annotations

import logging
import time
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from common.time import parse_db_time

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from storage.metadata import MetadataStore

log = logging.getLogger("segops.metrics")

REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOB_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class Metrics:
    """The runtime's registry and the counters the engine and the API increment. ``ingest`` and
    ``membership`` return the service if this process opened it, else None (a scrape opens nothing)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, meta: MetadataStore, workers: list[threading.Thread], *,
                 ingest: Callable[[], Any | None], membership: Callable[[], Any | None]):
        self.registry = registry = CollectorRegistry()
        self.requests = Counter("segops_requests", "Requests answered, by method, route template and status.",
                                ["method", "route", "status"], registry=registry)
        self.request_seconds = Histogram(
            "segops_request_duration_seconds", "Time to answer a request, by method, route template and status.",
            ["method", "route", "status"], buckets=REQUEST_BUCKETS, registry=registry)
        self.rate_limited = Counter("segops_rate_limited", "Requests refused by a rate limit, by route template.",
                                    ["route"], registry=registry)
        self.ingest_events = Counter(
            "segops_ingest_events", "Events (track) and profile updates (identify) durably accepted or dropped "
            "as duplicates of an event id already seen.", ["kind", "outcome"], registry=registry)
        self.ingest_rejected = Counter(
            "segops_ingest_rejected_requests", "Ingest requests rejected whole (nothing written), by error code.",
            ["kind", "code"], registry=registry)
        self.compute_seconds = Histogram(
            "segops_compute_job_duration_seconds", "Segment computation jobs run by this process, by outcome.",
            ["outcome"], buckets=JOB_BUCKETS, registry=registry)
        self.compute_failures = Counter("segops_compute_job_failures", "Segment computation jobs that failed.",
                                        registry=registry)
        registry.register(_StateCollector(meta, workers, ingest, membership))
        self._request_children: dict[tuple[str, str, int], tuple] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float, rate_limited: bool) -> None:
        """One answered request: a dict lookup and two or three increments (the label children are
        cached, since resolving labels costs more than counting)."""
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            labels = (method, route, str(status))
            children = self._request_children[key] = (
                self.requests.labels(*labels), self.request_seconds.labels(*labels),
                self.rate_limited.labels(route) if rate_limited else None)
        children[0].inc()
        children[1].observe(seconds)
        if children[2] is not None:
            children[2].inc()

    def ingested(self, kind: str, accepted: int, duplicates: int = 0) -> None:
        self.ingest_events.labels(kind, "accepted").inc(accepted)
        if duplicates:
            self.ingest_events.labels(kind, "duplicate").inc(duplicates)

    def job_finished(self, outcome: str, seconds: float) -> None:
        """A compute job ran to ``outcome`` (done, failed, or lost: another worker took it over)."""
        self.compute_seconds.labels(outcome).observe(seconds)
        if outcome == "failed":
            self.compute_failures.inc()

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format."""
        return generate_latest(self.registry)


class _StateCollector(Collector):
    """Reads the process's state at scrape time. A service the process never opened is not opened
    for a scrape (its gauges are left out), and a part that fails is logged and left out."""

    def __init__(self, meta: MetadataStore, workers: list[threading.Thread], ingest: Callable[[], Any | None],
                 membership: Callable[[], Any | None]):
        self.meta, self.workers, self.ingest, self.membership = meta, workers, ingest, membership

    def describe(self) -> list:
        return []  # the families depend on what the process has opened; nothing to check at register time

    def collect(self) -> Iterator[Metric]:
        for part in (self._wal, self._membership, self._queues, self._workers):
            try:
                yield from part()
            except Exception:  # noqa: BLE001 - a scrape reports what it can
                log.exception("metrics: %s failed", part.__name__)

    def _wal(self) -> Iterator[Metric]:
        ingest = self.ingest()
        if ingest is None:
            return
        yield GaugeMetricFamily("segops_wal_pending_bytes", "Write-ahead log bytes not yet flushed to the lake.",
                                value=ingest.wal.pending_bytes)
        since = ingest.wal.pending_since()
        yield GaugeMetricFamily("segops_wal_flush_lag_seconds", "Age of the oldest write-ahead log record not yet "
                                "flushed to the lake (0 when everything is flushed).",
                                value=0.0 if since is None else max(0.0, time.time() - since))

    def _membership(self) -> Iterator[Metric]:
        index = self.membership()
        if index is None:
            return
        users, computations = index.stats()
        yield GaugeMetricFamily("segops_membership_index_users", "User rows held by the in-memory membership index.",
                                value=users)
        yield GaugeMetricFamily("segops_membership_index_segments", "Segments materialized in the membership index.",
                                value=len(computations))
        if computations:
            row = self.meta.query_one(
                "SELECT MIN(as_of) FROM segment_computations WHERE id IN (SELECT value FROM json_each(?))",
                (orjson.dumps(computations).decode(),))
            if row is not None and row[0] is not None:
                oldest = parse_db_time(row[0]).timestamp()
                yield GaugeMetricFamily(
                    "segops_membership_index_age_seconds", "Age of the oldest computation the membership index "
                    "serves (as_of to now).", value=max(0.0, time.time() - oldest))

    def _queues(self) -> Iterator[Metric]:
        meta = self.meta
        tables = {row[0] for row in meta.query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('email_sends', 'segment_computations')")}
        if "email_sends" in tables:
            # counted through the partial indexes of engagement/outbound.py: the cost is the queue's
            # length, not the table's (which keeps every send ever made)
            family = GaugeMetricFamily("segops_send_queue_depth", "Emails waiting to be handed to the transport "
                                       "(queued) or being handed off, across every process.", labels=["status"])
            for status, index in (("queued", "email_sends_queue"), ("handing_off", "email_sends_handing")):
                family.add_metric([status], meta.query_one(
                    f"SELECT count(*) FROM email_sends INDEXED BY {index} WHERE status = '{status}'")[0])
            yield family
        if "segment_computations" in tables:
            counts = dict(meta.query("SELECT status, count(*) FROM segment_computations"
                                     " WHERE status IN ('queued', 'running') GROUP BY status"))
            family = GaugeMetricFamily("segops_compute_queue_depth", "Segment computation jobs queued or running, "
                                       "across every process.", labels=["status"])
            for status in ("queued", "running"):
                family.add_metric([status], counts.get(status, 0))
            yield family

    def _workers(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("segops_worker_alive", "1 per background worker thread alive, 0 if it died.",
                                   labels=["worker"])
        for thread in self.workers:
            family.add_metric([thread.name], 1 if thread.is_alive() else 0)
        yield family
