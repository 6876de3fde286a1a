"""The journey/send worker: recovers dead hand-offs, advances due journey runs, hands off
queued sends. Runs as a thread inside ``segops serve`` (``Runtime.start_workers``) and alone as
``segops worker``; any number of them may run against one data directory (every claim is a
compare-and-set with a lease). Journeys' triggers (accepted events, segment entry) are wired by
``engine.runtime``.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engagement.service import Sends

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
PURGE_EVERY_SECONDS = 600.0


class SendWorker:
    def __init__(self, sends: Sends, poll: float = POLL_SECONDS):
        self.sends = sends
        self.poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_purge = 0.0

    def cycle(self) -> int:
        """One pass over every kind of due work; returns how much was done (0 = idle)."""
        sends = self.sends
        dispatcher = sends.dispatcher
        done = dispatcher.recover()
        done += sends.journeys_runner.advance_due(dispatcher.owner, sends.lease)
        done += dispatcher.run_once()
        if time.monotonic() - self._last_purge > PURGE_EVERY_SECONDS:
            sends.idempotency.purge_expired()
            self._last_purge = time.monotonic()
        return done

    def run(self) -> None:
        """Loop until ``stop``; busy while there is work, otherwise sleeps until woken or ``poll``."""
        while not self._stop.is_set():
            try:
                busy = self.cycle() > 0
            except Exception:
                log.exception("send worker cycle failed; retrying")
                busy = False
            if not busy:
                self.sends.wakeup.wait(self.poll)
                self.sends.wakeup.clear()

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name="segops-send-worker", daemon=True)
        self._thread.start()
        return self._thread

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def stop(self) -> None:
        self._stop.set()
        self.sends.wake()
        if self._thread is not None:
            self._thread.join(timeout=30)
