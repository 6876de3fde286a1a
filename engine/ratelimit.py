"""Request rate limits shared by every API process on one data dir: token buckets kept in SQLite,
spent through small local leases.

A limit is a token bucket per key (a tenant, a login email, a client address): up to ``limit``
tokens, refilled at ``limit / window`` per second, so a caller may burst its whole allowance and
then proceeds at the steady rate.

Why it looks like this:
  * The buckets live in ``<data_dir>/ratelimit.sqlite``, so every process on the data dir draws
    from the same bucket: two servers answer a free tenant's 60 requests between them, not 60 each.
    WAL mode with ``synchronous=OFF``: a counter lost in a power cut only means a full bucket.
  * The hot path (membership lookups) must not pay a SQLite write per request. A process takes
    tokens from the shared bucket in slices of 2 % of the limit (at least one) in one short write
    transaction, a lease, and spends them locally: a dict lookup and a few float operations under
    an uncontended lock. When the shared bucket is empty, the process notes when the next token is
    due and refuses locally until then. So a flood over the limit costs one shared write per
    process per refill interval, not one per request, and admitted requests cost at most about 50
    shared writes per key and window, whatever the limit.
  * The trade-off is in the slice size. Leased tokens belong to the process that leased them: they
    are never spent twice, so the limit is never exceeded, but a process's unspent lease (at most a
    slice minus one) cannot serve a request that lands on another process. A tenant may thus be
    refused early by up to 2 % of its limit per process holding a lease: within 10 % with five
    processes, and exact below a limit of 100, where slices are single tokens. Bigger slices would
    mean fewer shared writes but a coarser limit; smaller ones the reverse. A lease unspent for a
    whole window is dropped: the shared bucket has refilled by then anyway.
  * Alternatives: a memory-mapped counter file under ``fcntl`` locks costs a few microseconds per
    operation against tens for a SQLite write transaction, but leases make that difference
    irrelevant, and SQLite gives arbitrary keys (login emails and client addresses are
    attacker-chosen), an atomic read-modify-write and cleanup, with no hash table to size.

The ``X-RateLimit-*`` figures are this process's view: the shared bucket as of its last lease plus
the refill since, plus its unspent lease. If the store cannot be written (a read-only data dir),
requests are allowed and a warning is logged: a limiter must not take the API down.
"""
from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

from storage.metadata import MetadataStore

log = logging.getLogger(__name__)

SLICES_PER_LIMIT = 50  # a lease takes limit // 50 tokens (2 % of the limit), at least one
SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (key TEXT PRIMARY KEY, tokens REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS buckets_updated ON buckets (updated);
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int     # whole requests left right now
    reset: int         # seconds until the bucket is full again
    retry_after: int   # seconds until the next request is allowed (0 when allowed)

    def headers(self) -> dict[str, str]:
        headers = {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(self.remaining),
                   "X-RateLimit-Reset": str(self.reset)}
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


@dataclass(slots=True)
class _Lease:
    """This process's share of one key's bucket."""
    limit: int
    tokens: int = 0         # leased, not yet spent
    shared: float = 0.0     # tokens left in the shared bucket at the last lease
    at: float = -math.inf   # time of the last lease
    retry_at: float = 0.0   # the shared bucket is empty until then
    used: float = 0.0       # time of the last hit


class RateLimiter:
    def __init__(self, path: str | Path, window_seconds: float = 60.0, clock: Callable[[], float] = time.time,
                 max_buckets: int = 100_000):
        """``clock`` must be the same in every process sharing ``path`` (wall time by default)."""
        self.window = window_seconds
        self.max_buckets = max_buckets
        self._clock = clock
        # Requests wait at most 100 ms for another process's write; then this one is allowed (logged).
        self._store = MetadataStore(path, synchronous="OFF", busy_timeout=0.1)
        self._leases: dict[Hashable, _Lease] = {}
        self._lock = threading.Lock()
        self._cleaned = -math.inf

    def hit(self, key: Hashable, limit: int) -> Decision:
        """Take one token from ``key``'s bucket of ``limit`` per window."""
        now = self._clock()
        with self._lock:
            lease = self._leases.get(key)
            if lease is None or lease.limit != limit:
                if lease is None and len(self._leases) >= self.max_buckets:
                    self._drop_idle(now)
                lease = self._leases[key] = _Lease(limit)
            elif now - lease.at >= self.window:
                lease.tokens = 0
            if lease.tokens >= 1 or now < lease.retry_at:
                return self._spend(lease, now)
        # The shared write happens outside the lock: a lease taken for one key (or a store busy for its
        # 100 ms) never holds up requests for the others. Two threads leasing for one key at once both
        # draw from the shared bucket, which counts each grant once.
        granted, shared = self._take(key, limit, now)
        with self._lock:
            lease.tokens += granted
            lease.shared, lease.at = shared, now
            lease.retry_at = 0.0 if granted else now + (1.0 - shared) * self.window / limit
            return self._spend(lease, now)

    def _spend(self, lease: _Lease, now: float) -> Decision:
        allowed = lease.tokens >= 1
        if allowed:
            lease.tokens -= 1
        lease.used = now
        return self._decision(lease, now, allowed)

    def blocked(self, key: Hashable) -> Decision | None:
        """The refusal ``hit(key, ...)`` would give if this process already knows the bucket is
        empty, else None; spends nothing and never touches the shared store."""
        lease = self._leases.get(key)
        if lease is None or lease.tokens >= 1:
            return None
        now = self._clock()
        if now >= lease.retry_at:
            return None
        with self._lock:
            return self._decision(lease, now, False)

    def _decision(self, lease: _Lease, now: float, allowed: bool) -> Decision:
        rate = lease.limit / self.window
        available = min(float(lease.limit), lease.shared + max(0.0, now - lease.at) * rate + lease.tokens)
        retry_after = 0 if allowed else max(1, math.ceil(lease.retry_at - now))
        return Decision(allowed, lease.limit, int(available), math.ceil((lease.limit - available) / rate), retry_after)

    def _take(self, key: Hashable, limit: int, now: float) -> tuple[int, float]:
        """Lease a slice of tokens from the shared bucket (one write transaction): (granted, left)."""
        rate = limit / self.window
        want = max(1, limit // SLICES_PER_LIMIT)
        try:
            self._store.ensure_schema("ratelimit", SCHEMA)
            with self._store.transaction() as conn:
                row = conn.execute("SELECT tokens, updated FROM buckets WHERE key = ?", (repr(key),)).fetchone()
                tokens = float(limit) if row is None else min(float(limit), row[0] + max(0.0, now - row[1]) * rate)
                granted = min(want, int(tokens))
                conn.execute("INSERT OR REPLACE INTO buckets (key, tokens, updated) VALUES (?, ?, ?)",
                             (repr(key), tokens - granted, now))
                if now - self._cleaned >= self.window:  # a bucket idle for a window is full: no row
                    conn.execute("DELETE FROM buckets WHERE updated <= ?", (now - self.window,))
                    self._cleaned = now
        except sqlite3.Error as exc:  # also "database is locked" after the busy timeout
            log.warning("rate limits not enforced: %s: %s", self._store.path, exc)
            tokens, granted = float(limit), 1
        return granted, tokens - granted

    def _drop_idle(self, now: float) -> None:
        """Forget leases idle for a whole window (their tokens have expired; the shared bucket is full)."""
        for key in [key for key, lease in self._leases.items() if now - lease.used >= self.window]:
            del self._leases[key]

    def __len__(self) -> int:
        return len(self._leases)
