"""The running system: one object that owns the stores and background workers.

The API builds one Runtime per process and reaches every service through it.
Services are created lazily so a CLI command pays only for what it uses.
Feature modules add their service here as a cached_property; who consumes whose events
(accepted events, new computations) and which workers run is wired here too, explicitly:
no module registers itself when imported.
"""
from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

from engine.ingest.feed import EventFeed
from engine.settings import Settings
from storage.metadata import MetadataStore

if TYPE_CHECKING:
    import pyarrow as pa

    from engine.membership.computations import ComputationResult


class Runtime:
    def __init__(self, settings: Settings):
        self.settings = settings
        settings.ensure_data_dir()
        self.meta = MetadataStore(settings.metadata_path)
        self._stoppers: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.workers: list[threading.Thread] = []  # background threads readiness expects alive
        # Durable event batches (the events route, engagement tracking) -> their consumers.
        self.event_feed = EventFeed()
        # Called by the compute worker after each successful swap; a failing one is logged and
        # does not stop the others (nor undo the computation).
        self.compute_listeners: list[Callable[[ComputationResult], None]] = []
        self._wire()

    def _wire(self) -> None:
        """Every consumer of accepted events and of new computations, in one place (no I/O: the
        services they use are created on first call)."""
        self.event_feed.subscribe_accepted(self._start_event_journeys)
        self.compute_listeners += [self._materialize_membership, self._start_segment_journeys]

    def _start_event_journeys(self, tenant_id: int, events: pa.Table) -> int:
        """Event triggers start runs; active runs remember the events they watch."""
        return self.sends.journeys_runner.on_events(tenant_id, events)

    def _materialize_membership(self, result: ComputationResult) -> None:
        """Swap the new members into the index, only where the index is in use."""
        index = self.__dict__.get("membership")
        if index is not None:
            index.materialize(result.tenant_id, result.segment_id, result.computation_id, result.members_key)

    def _start_segment_journeys(self, result: ComputationResult) -> None:
        """Recipients who entered a segment enter the journeys it triggers."""
        if len(result.entered):
            self.sends.journeys_runner.on_segment_entered(result.tenant_id, result.segment_id, result.computation_id,
                                                          result.entered_user_ids)

    @cached_property
    def accounts(self):
        """Tenants, users, API keys, JWTs (engine.accounts)."""
        from engine.accounts import Accounts

        return Accounts(self.meta, secret_loader=lambda: self.settings.secret_key)

    @cached_property
    def readiness(self):
        """GET /readyz's probe (engine.health), shared by concurrent callers."""
        from engine.health import ReadinessProbe

        return ReadinessProbe(self.settings, lambda: self.lake.store, self.workers)

    @cached_property
    def metrics(self):
        """Prometheus metrics of this runtime, in its own registry (engine.metrics)."""
        from engine.metrics import Metrics

        return Metrics(self.meta, self.workers, ingest=lambda: self.__dict__.get("ingest"),
                       membership=lambda: self.__dict__.get("membership"))

    @cached_property
    def rate_limiter(self):
        """Request limits per tenant, login and client address, shared by the processes on this data dir
        (engine.ratelimit)."""
        from engine.ratelimit import RateLimiter

        return RateLimiter(self.settings.data_dir / "ratelimit.sqlite")

    @cached_property
    def lake(self):
        """The event lake (storage.lake.EventLake): local dir or s3:// from settings."""
        from storage.lake import EventLake

        return EventLake.from_settings(self.settings)

    @cached_property
    def ingest(self):
        """Event ingest: WAL group commit, dedup window, flusher (engine.ingest.service). Opening it
        replays what an earlier run left in the WAL."""
        from engine.ingest.service import IngestService

        service = IngestService.open(self.settings, self.lake, self.dead_letters)
        self.on_stop(service.close)
        return service

    @cached_property
    def dead_letters(self):
        """Records the ingest flusher could not write to the lake (storage.dead_letters); readable
        without opening ingest, so without owning the WAL."""
        from storage.dead_letters import DeadLetters

        return DeadLetters(self.settings.dead_letter_dir)

    @cached_property
    def backends(self):
        """The query backends that run previews, computations, exports and lake reads (backends/)."""
        from backends.registry import Backends

        backends = Backends(self.settings, self.lake, interactive=self.settings.preview_backend,
                            batch=self.settings.query_backend)
        self.on_stop(backends.close)
        return backends

    @cached_property
    def segments(self):
        """Segment definitions and their versions (engine.segments.store)."""
        from engine.segments.store import SegmentStore

        return SegmentStore(self.meta)

    @cached_property
    def queries(self):
        """Segment definitions compiled and run on the query backends: preview, members, evaluate
        (engine.segments.query)."""
        from engine.segments.query import SegmentQueries

        return SegmentQueries(self.segments, self.backends)

    @cached_property
    def explainer(self):
        """Why a user is in or out of a segment, and the impact of an edit (engine.segments.explain)."""
        from engine.segments.explain import Explainer

        return Explainer(self.queries, self.segments, self.computations, self.backends, self.meta,
                         secret=lambda: self.settings.secret_key, journeys=lambda: self.sends.journeys,
                         broadcast_tables=lambda: self.sends.broadcasts)

    @cached_property
    def jobs(self):
        """The one leased job queue of compute, exports (engine.jobs); creating it migrates an older data dir."""
        from engine.jobs import JobQueue

        return JobQueue(self.meta)

    @cached_property
    def computations(self):
        """Computations and their members/changes files (engine.membership.computations)."""
        from engine.membership.computations import ComputationStore

        return ComputationStore(self.meta, self.lake, self.backends)

    @cached_property
    def compute(self):
        """Membership computation jobs and their scheduler (engine.membership.compute)."""
        from engine.membership.compute import ComputeService

        return ComputeService(self.jobs, self.segments, self.queries, self.computations, self.backends, self.lake,
                              listeners=self.compute_listeners,
                              observe=lambda outcome, seconds: self.metrics.job_finished(outcome, seconds))

    @cached_property
    def membership(self):
        """The online membership index, loaded from SQLite + the lake, evaluating never-computed
        segments on demand (engine.membership.index)."""
        from engine.membership.index import MembershipIndex, segment_evaluator

        index = MembershipIndex(self.meta, self.computations,
                                segment_evaluator(self.segments.definition, self.queries.evaluate_for_users))
        index.load()
        self.on_stop(index.close)
        return index

    @cached_property
    def profiles(self):
        """Profile search and reads with current segments (engine.profiles)."""
        from engine.profiles import ProfileReads

        return ProfileReads(self.backends, memberships=lambda t, users: self.membership.memberships(t, users))

    @cached_property
    def exports(self):
        """Segment member exports (engine.exports)."""
        from engine.exports import Exports

        return Exports(self.meta, self.jobs, self.computations, self.lake, self.backends)

    @cached_property
    def sends(self):
        """Templates, brand kits, assets, recipients, emails, journeys, broadcasts (engagement). Ingest and
        the membership index are reached lazily: sends opens no WAL and loads no index until it needs them."""
        from engagement.service import Sends

        sends = Sends(self.settings, self.meta, self.lake, self.backends, self.segments, self.jobs,
                      feed=self.event_feed, submit=lambda *args: self.ingest.submit_events(*args),
                      memberships=lambda tenant_id, user_ids: self.membership.memberships(tenant_id, user_ids),
                      current_members=self.computations.current_members, compile_definition=self.queries.compile,
                      member_table=self.queries.member_table)
        self.on_stop(sends.close)
        return sends

    def on_stop(self, fn: Callable[[], None]) -> None:
        self._stoppers.append(fn)

    def add_worker(self, thread: threading.Thread) -> None:
        """A background thread that must stay alive while the runtime runs (readiness checks it)."""
        self.workers.append(thread)

    def start_workers(self) -> None:
        """Start the background workers, in this order (``stop`` stops them in reverse). Each start
        function skips what a read-only process must not run, hands its threads to ``add_worker``
        and its stop to ``on_stop``."""
        from engine.maintenance import LakeMaintenance
        from engagement.worker import SendWorker

        if not self.settings.read_only:  # opening ingest replays the WAL; the flusher runs from then on
            self.ingest.start_flusher()
            for thread in self.ingest.threads:
                self.add_worker(thread)
        if not self.settings.read_only:
            self.backends  # noqa: B018 - created first so that they close after the job workers stop
            self.start_worker(self.compute.worker)
            self.start_worker(self.exports.worker)
        self.membership  # noqa: B018 - load the index before the first request instead of during it
        if not self.settings.read_only:  # sends (and its close) exist before the worker, so it stops first
            self.start_worker(SendWorker(self.sends))
            self.start_worker(LakeMaintenance(self.lake))

    def start_worker(self, worker) -> None:
        """A worker with ``start() -> Thread`` and ``stop()``: readiness watches its thread, ``stop`` stops it."""
        self.add_worker(worker.start())
        self.on_stop(worker.stop)

    def stop(self) -> None:
        for fn in reversed(self._stoppers):
            fn()
        self._stoppers.clear()


def tune_gc_for_serving() -> None:
    """Keep the cyclic garbage collector from stalling requests.

    An ingest request parses thousands of short-lived dicts; refcounting frees them, but
    with the default thresholds they trigger collections whose full passes traverse
    every object the process loaded at start (about 130k): 90-120 ms with the GIL held,
    every second or so under load, which was the whole HTTP ingest p99
    (``benchmarks/bench_ingest.py``: p99 152 ms before). Start-up objects move to the
    permanent generation and young collections run every 50k net allocations instead
    of 700, so cycles are still collected, just in small pauses."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
