"""The online membership index: which of a tenant's segments a user is in, answered from memory.

Offline -> online is one explicit step (feast-style): a computation writes
``members.parquet`` to the lake (engine.membership.compute), and ``MembershipIndex.materialize`` loads it
into the index. The runtime materializes each new computation right after its swap; a
process that did not compute (another API process, a read-only replica) notices new
computations and deleted segments through SQLite (below) and loads them itself. Restart
rebuilds everything from SQLite + the lake (``load``).

Layout, per tenant (a ``_View``), chosen over one frozenset of user ids per segment after
benchmarking both (benchmarks/bench_membership.py, 1M users x 20 segments: about 3x less memory
and 3x faster lookups, and a lookup costs the same whatever the number of segments):

* ``rows``: user_id -> row number, an append-only dict shared by successive views,
* ``words``: one uint64 numpy array per 64 segment slots; bit ``slot % 64`` of
  ``words[slot // 64][row]`` says whether the user is in the segment holding that slot,
* ``visible``: the slots of live segments, so a deleted segment disappears at once.

A lookup is one dict get, one array read per 64 slots and a cached mask -> segment ids decode.
Views are immutable: ``materialize`` builds the new arrays (copy-on-write of the one word that
changes) and then swaps the tenant's view reference, so a reader sees either the old or the new
member set of a segment, never a mix. Rows of users who left every segment stay until the next
full ``load`` (which compacts).

Coherence with SQLite: every lookup asks SQLite's ``PRAGMA data_version`` (a few microseconds)
on a read-only connection of the index; when another connection committed anything and a
trigger-maintained counter says the segments table changed, the catalog of live segments is
re-read. Deleted segments are then hidden immediately, segments never computed are reported as
``pending`` (evaluated on demand by ``memberships``), and a newer current computation is
materialized by a background catch-up thread (the previous one keeps serving meanwhile).
"""
from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from compiler import DefinitionError
from engine.segments.store import ensure_schema

if TYPE_CHECKING:
    from compiler import Definition
    from engine.membership.computations import ComputationStore
    from storage.metadata import MetadataStore

log = logging.getLogger("segops.membership")

MAX_BULK_USERS = 1000  # user ids per bulk lookup

# A counter bumped by every change to the segments table that can change what the index serves,
# so the index re-reads its catalog only then (and not after every unrelated write to SQLite).
SCHEMA = """
CREATE TABLE IF NOT EXISTS membership_catalog_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO membership_catalog_version (id, version) VALUES (1, 0);
CREATE TRIGGER IF NOT EXISTS membership_catalog_on_insert AFTER INSERT ON segments
BEGIN UPDATE membership_catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS membership_catalog_on_update
AFTER UPDATE OF tenant_id, definition, current_computation_id, deleted_at ON segments
BEGIN UPDATE membership_catalog_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS membership_catalog_on_delete AFTER DELETE ON segments
BEGIN UPDATE membership_catalog_version SET version = version + 1; END;
"""
_DECODE_CACHE_LIMIT = 1 << 16
_EMPTY_STRINGS = pa.nulls(0, pa.string())  # empty; pa.array([]) would import pandas at import (test_serving_imports)

# (tenant_id, segment_id, user_ids) -> the user ids the segment's current definition matches now.
Evaluator = Callable[[int, int, list[str]], set[str]]


@dataclass(frozen=True, slots=True)
class Membership:
    user_id: str
    segment_ids: list[int]
    cached: bool  # False when at least one segment was evaluated on demand for this answer

    def to_json(self) -> dict:
        return {"user_id": self.user_id, "segment_ids": self.segment_ids, "cached": self.cached}


@dataclass(frozen=True, slots=True)
class _Live:
    """One live segment with a definition, as SQLite describes it."""

    segment_id: int
    computation_id: int | None  # the current computation, None if never computed


class _View:
    """An immutable snapshot of one tenant's index (see the module docstring)."""

    __slots__ = ("rows", "size", "universe", "words", "slot_of", "computation_of", "visible",
                 "pending", "_slot_segment", "_decoded")

    def __init__(self, rows: dict[str, int], size: int, universe: pa.Array, words: tuple[np.ndarray, ...],
                 slot_of: dict[int, int], computation_of: dict[int, int], visible: int,
                 pending: tuple[int, ...]):
        self.rows = rows                       # shared and append-only: check row < size
        self.size = size
        self.universe = universe               # row -> user_id
        self.words = words
        self.slot_of = slot_of                 # materialized segment -> slot
        self.computation_of = computation_of   # materialized segment -> computation id
        self.visible = visible                 # bit mask of the slots of live segments
        self.pending = pending                 # live segments with nothing materialized
        slot_segment = [0] * (64 * len(words))
        for segment_id, slot in slot_of.items():
            slot_segment[slot] = segment_id
        self._slot_segment = slot_segment
        self._decoded: dict[int, tuple[int, ...]] = {}

    @classmethod
    def empty(cls) -> _View:
        return cls({}, 0, _EMPTY_STRINGS, (), {}, {}, 0, ())

    def replace(self, **changes) -> _View:
        fields = {name: getattr(self, name) for name in
                  ("rows", "size", "universe", "words", "slot_of", "computation_of", "visible", "pending")}
        fields.update(changes)
        return _View(**fields)

    def segment_ids(self, user_id: str) -> tuple[int, ...]:
        """Sorted ids of the materialized live segments holding ``user_id``."""
        row = self.rows.get(user_id)
        if row is None or row >= self.size:
            return ()
        mask = 0
        for shift, word in enumerate(self.words):
            mask |= int(word[row]) << (64 * shift)
        mask &= self.visible
        if not mask:
            return ()
        found = self._decoded.get(mask)
        if found is None:
            found = tuple(sorted(self._slot_segment[slot] for slot in range(mask.bit_length()) if mask >> slot & 1))
            if len(self._decoded) >= _DECODE_CACHE_LIMIT:
                self._decoded.clear()
            self._decoded[mask] = found
        return found


class MembershipIndex:
    """Per-tenant membership in memory; see the module docstring. Thread-safe: readers take no
    lock beyond the SQLite check; builders of member sets run one at a time."""

    def __init__(self, meta: MetadataStore, computations: ComputationStore, evaluate: Evaluator | None = None):
        self._meta = meta
        self._computations = computations
        self._evaluate = evaluate
        ensure_schema(meta)
        meta.ensure_schema("membership", SCHEMA)
        self._views: dict[int, _View] = {}
        self._catalog: dict[int, dict[int, _Live]] = {}
        self._write_lock = threading.Lock()        # swaps of views and catalog (short)
        self._version_lock = threading.Lock()      # the catalog connection; orders refreshes
        self._materialize_lock = threading.Lock()  # builders of new member sets (long)
        self._conn = sqlite3.connect(f"{meta.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30,
                                     check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout=30000")
        self._seen_version: int | None = None          # PRAGMA data_version
        self._seen_catalog_version: int | None = None  # membership_catalog_version
        self._catch_up_running = False

    # -- reads --------------------------------------------------------------------------
    def lookup(self, tenant_id: int, user_id: str) -> tuple[tuple[int, ...], bool]:
        """(segment ids from memory, complete). ``complete`` is False when the tenant has live
        segments with nothing materialized (never computed, or computed by another process a
        moment ago): then call ``memberships`` (blocking) for the full answer."""
        self.refresh()
        view = self._views.get(tenant_id)
        if view is None:
            return (), True
        return view.segment_ids(user_id), not view.pending

    def lookup_many(self, tenant_id: int, user_ids: Iterable[str]) -> tuple[list[tuple[int, ...]], bool]:
        """``lookup`` for several users against one snapshot: (segment ids per user, complete)."""
        self.refresh()
        view = self._views.get(tenant_id) or _View.empty()
        return [view.segment_ids(user_id) for user_id in user_ids], not view.pending

    def memberships(self, tenant_id: int, user_ids: Sequence[str]) -> list[Membership]:
        """Full answers for ``user_ids``: materializes current computations not loaded yet and
        evaluates never-computed segments on demand (``cached: false``). Blocking (DuckDB)."""
        self.refresh()
        view = self._views.get(tenant_id) or _View.empty()
        if view.pending:
            self._catch_up_tenant(tenant_id)
            view = self._views.get(tenant_id) or _View.empty()
        on_demand: dict[str, list[int]] = {}
        if view.pending and self._evaluate is not None and user_ids:
            unique = sorted(set(user_ids))
            for segment_id in view.pending:
                for user_id in self._evaluate(tenant_id, segment_id, unique):
                    on_demand.setdefault(user_id, []).append(segment_id)
        out = []
        for user_id in user_ids:
            ids = view.segment_ids(user_id)
            extra = on_demand.get(user_id)
            if extra:
                ids = tuple(sorted((*ids, *extra)))
            out.append(Membership(user_id, list(ids), not view.pending))
        return out

    def stats(self) -> tuple[int, list[int]]:
        """(user rows held, computation ids materialized) over every tenant, for /metrics."""
        views = list(self._views.values())
        return sum(view.size for view in views), [c for view in views for c in view.computation_of.values()]

    def computation_of(self, tenant_id: int, segment_id: int) -> int | None:
        """The computation id materialized for the segment (None if none)."""
        view = self._views.get(tenant_id)
        return None if view is None else view.computation_of.get(segment_id)

    # -- SQLite coherence -------------------------------------------------------------------
    def refresh(self, force: bool = False, catch_up: bool = True) -> None:
        """Re-read the live-segment catalog if the segments table changed since the last look
        (and, with ``catch_up``, load newer computations in the background). Costs one
        ``PRAGMA data_version`` when nothing was written to SQLite at all."""
        stale = False
        with self._version_lock:  # also orders catalog updates
            version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            if version == self._seen_version and not force:
                return
            self._seen_version = version
            catalog_version = self._conn.execute("SELECT version FROM membership_catalog_version").fetchone()[0]
            if catalog_version == self._seen_catalog_version and not force:
                return
            self._seen_catalog_version = catalog_version
            rows = self._conn.execute(
                "SELECT tenant_id, id, current_computation_id FROM segments"
                " WHERE deleted_at IS NULL AND definition IS NOT NULL").fetchall()
            catalog: dict[int, dict[int, _Live]] = {}
            for tenant_id, segment_id, computation_id in rows:
                catalog.setdefault(tenant_id, {})[segment_id] = _Live(segment_id, computation_id)
            with self._write_lock:
                previous, self._catalog = self._catalog, catalog
                for tenant_id in set(previous) | set(catalog):
                    live = catalog.get(tenant_id, {})
                    if live != previous.get(tenant_id) or tenant_id not in self._views:
                        self._views[tenant_id] = self._derive(self._views.get(tenant_id) or _View.empty(), live)
                    stale = stale or self._stale(tenant_id, self._views[tenant_id])
        if stale and catch_up:
            self._start_catch_up()

    def _derive(self, view: _View, live: dict[int, _Live]) -> _View:
        """``view`` with ``visible``/``pending`` recomputed for the live segments ``live``;
        slots of segments no longer live are freed."""
        slot_of = {s: slot for s, slot in view.slot_of.items() if s in live}
        computation_of = {s: c for s, c in view.computation_of.items() if s in live}
        visible = 0
        for slot in slot_of.values():
            visible |= 1 << slot
        pending = tuple(sorted(s for s in live if s not in slot_of))
        return view.replace(slot_of=slot_of, computation_of=computation_of, visible=visible, pending=pending)

    def _stale(self, tenant_id: int, view: _View) -> bool:
        live = self._catalog.get(tenant_id, {})
        return any(entry.computation_id is not None and view.computation_of.get(s) != entry.computation_id
                   for s, entry in live.items())

    def _start_catch_up(self) -> None:
        with self._write_lock:
            if self._catch_up_running:
                return
            self._catch_up_running = True
        threading.Thread(target=self._catch_up_all, name="segops-membership-catch-up", daemon=True).start()

    def _catch_up_all(self) -> None:
        try:
            for tenant_id in list(self._catalog):
                self._catch_up_tenant(tenant_id)
        except Exception:  # noqa: BLE001 - the next refresh that finds stale segments retries
            log.exception("membership catch-up failed")
        finally:
            with self._write_lock:
                self._catch_up_running = False
            self._meta.close()

    def _catch_up_tenant(self, tenant_id: int) -> None:
        """Materialize every current computation of the tenant that is not loaded yet."""
        view = self._views.get(tenant_id) or _View.empty()
        for segment_id, entry in list(self._catalog.get(tenant_id, {}).items()):
            if entry.computation_id is not None and view.computation_of.get(segment_id) != entry.computation_id:
                self.materialize_computation(tenant_id, segment_id, entry.computation_id)

    # -- writes -----------------------------------------------------------------------------
    def load(self) -> None:
        """(Re)build every tenant from SQLite and the lake: at start-up; also compacts rows."""
        self.refresh(force=True, catch_up=False)
        for tenant_id, live in list(self._catalog.items()):
            self._build_tenant(tenant_id, {s: e.computation_id for s, e in live.items() if e.computation_id})
        self.refresh(force=True)  # whatever changed meanwhile
        pa.default_memory_pool().release_unused()  # the encoding's scratch memory, back to the OS

    def _build_tenant(self, tenant_id: int, computations: dict[int, int]) -> None:
        """A whole new view of the tenant from these (segment -> computation) in one pass: one
        dictionary encoding of all member lists together, instead of one hash of the tenant's
        users per segment as ``materialize`` needs."""
        keys = {}
        for segment_id, computation_id in computations.items():
            members_key = self._computations.kept_members_key(computation_id)
            if members_key is not None:
                keys[segment_id] = (computation_id, members_key)
        lists = {segment_id: self._read_members(key) for segment_id, (_, key) in keys.items()}
        nonempty = [members for members in lists.values() if len(members)]
        rows_of: list[np.ndarray] = []
        universe = _EMPTY_STRINGS
        if nonempty:  # encoding the chunks together gives them one dictionary: the tenant's users
            encoded = pc.dictionary_encode(pa.chunked_array(nonempty))
            universe = encoded.chunk(0).dictionary
            rows_of = [chunk.indices.to_numpy() for chunk in encoded.chunks]
        size = len(universe)
        words = [np.zeros(size, dtype=np.uint64) for _ in range((len(lists) + 63) // 64)]
        slot_of, chunks = {}, iter(rows_of)
        for slot, (segment_id, members) in enumerate(lists.items()):
            if len(members):
                words[slot // 64][next(chunks)] |= np.uint64(1 << (slot % 64))
            slot_of[segment_id] = slot
        view = _View(dict(zip(universe.to_pylist(), range(size))), size, universe, tuple(words), slot_of,
                     {s: keys[s][0] for s in lists}, 0, ())
        with self._materialize_lock, self._write_lock:
            self._views[tenant_id] = self._derive(view, self._catalog.get(tenant_id, {}))

    def materialize_computation(self, tenant_id: int, segment_id: int, computation_id: int) -> bool:
        """``materialize`` a done computation, looked up by id."""
        members_key = self._computations.kept_members_key(computation_id, tenant_id, segment_id)
        if members_key is None:
            return False
        return self.materialize(tenant_id, segment_id, computation_id, members_key)

    def materialize(self, tenant_id: int, segment_id: int, computation_id: int, members_key: str) -> bool:
        """Load one computation's members into the index and swap them in atomically.
        Computation ids only move forward: a computation older than (or the same as) the one
        loaded is ignored (returns False). Visibility follows SQLite: a segment deleted
        meanwhile stays hidden."""
        self.refresh()
        with self._materialize_lock:  # one builder at a time; readers and refresh never wait for it
            base = self._views.get(tenant_id) or _View.empty()
            loaded = base.computation_of.get(segment_id)
            if loaded is not None and loaded >= computation_id:
                return False
            view, member_rows = self._with_users(base, self._read_members(members_key))
            slot = view.slot_of.get(segment_id)
            if slot is None:
                taken = set(view.slot_of.values())
                slot = next(s for s in range(64 * len(view.words) + 1) if s not in taken)
            words = list(view.words)
            while len(words) <= slot // 64:
                words.append(np.zeros(view.size, dtype=np.uint64))
            bit = np.uint64(1 << (slot % 64))
            word = words[slot // 64] & ~bit  # a new array: readers of the old view are unaffected
            word[member_rows] |= bit
            words[slot // 64] = word
            view = view.replace(words=tuple(words), slot_of={**view.slot_of, segment_id: slot},
                                computation_of={**view.computation_of, segment_id: computation_id})
            with self._write_lock:  # refresh may have hidden segments since `base`: derive again
                self._views[tenant_id] = self._derive(view, self._catalog.get(tenant_id, {}))
        return True

    def _read_members(self, members_key: str) -> pa.Array:
        return self._computations.read_members(members_key)

    @staticmethod
    def _with_users(view: _View, users: pa.Array) -> tuple[_View, np.ndarray]:
        """(view grown by the users it lacks, row numbers of ``users``). ``users`` are unique."""
        if len(users) == 0:
            return view, np.zeros(0, dtype=np.int64)
        found = pc.index_in(users, value_set=view.universe)
        missing = found.is_null()
        new_users = users.filter(missing)
        rows = found.fill_null(-1).to_numpy().astype(np.int64)
        if len(new_users):
            size = view.size + len(new_users)
            rows[missing.to_numpy(zero_copy_only=False)] = np.arange(view.size, size, dtype=np.int64)
            view.rows.update(zip(new_users.to_pylist(), range(view.size, size)))
            universe = pa.concat_arrays([view.universe, new_users])
            words = tuple(np.concatenate([w, np.zeros(len(new_users), dtype=np.uint64)]) for w in view.words)
            view = view.replace(size=size, universe=universe, words=words)
        return view, rows

    def close(self) -> None:
        with self._version_lock:
            self._conn.close()


# -- wiring -------------------------------------------------------------------------------
def segment_evaluator(definition: Callable[[int, int], tuple[int, Definition] | None],
                      evaluate_for_users: Callable[[int, Definition, list[str]], set[str]]) -> Evaluator:
    """The index's on-demand evaluation of never-computed segments: ``definition(tenant, segment)``
    (SegmentStore.definition) run by ``evaluate_for_users`` (SegmentQueries); a segment that is
    gone or cannot be evaluated matches no one."""

    def evaluate(tenant_id: int, segment_id: int, user_ids: list[str]) -> set[str]:
        try:
            found = definition(tenant_id, segment_id)
            if found is None:  # deleted or emptied since the catalog read
                return set()
            return evaluate_for_users(tenant_id, found[1], user_ids)
        except DefinitionError as err:  # e.g. a trait it uses no longer exists: it matches no one
            log.warning("segment %s cannot be evaluated: %s", segment_id, err)
            return set()

    return evaluate


__all__ = ["MAX_BULK_USERS", "Membership", "MembershipIndex", "segment_evaluator", "Evaluator"]
