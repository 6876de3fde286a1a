"""Per-tenant request rate limits: an in-memory token bucket per key.

A bucket holds up to ``limit`` tokens and refills at ``limit / window`` tokens per second, so a
tenant may burst its whole per-minute allowance and then proceeds at the steady rate. One hit is a
dict lookup and a few float operations under an uncontended lock: cheap enough for the membership
hot path. Limits are per process (each API process enforces the plan's limit on its own traffic). A bucket
idle for a whole window is full again, i.e. the same as no bucket, so idle buckets are dropped
when there are many (login attempts are limited per email, and emails are attacker-chosen).
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass


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


class RateLimiter:
    def __init__(self, window_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 max_buckets: int = 100_000):
        self.window = window_seconds
        self.max_buckets = max_buckets
        self._clock = clock
        self._buckets: dict[Hashable, list[float]] = {}  # key -> [tokens, last refill time]
        self._lock = threading.Lock()

    def hit(self, key: Hashable, limit: int) -> Decision:
        """Take one token from ``key``'s bucket of ``limit`` per window."""
        rate = limit / self.window
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= self.max_buckets:
                    self._drop_idle(now)
                bucket = self._buckets[key] = [float(limit), now]
            tokens = min(float(limit), bucket[0] + (now - bucket[1]) * rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            bucket[0], bucket[1] = tokens, now
        retry_after = 0 if allowed else max(1, math.ceil((1.0 - tokens) / rate))
        return Decision(allowed, limit, int(tokens), math.ceil((limit - tokens) / rate), retry_after)

    def _drop_idle(self, now: float) -> None:
        idle = [key for key, (_, last) in self._buckets.items() if now - last >= self.window]
        for key in idle:
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)

    def reset(self, key: Hashable | None = None) -> None:
        with self._lock:
            if key is None:
                self._buckets.clear()
            else:
                self._buckets.pop(key, None)
