"""Helpers for the background threads of a serving process."""
from __future__ import annotations

import os
import threading


def lower_thread_priority(niceness: int = 10) -> None:
    """Lower the calling thread's CPU priority (Linux: per-thread nice; a no-op elsewhere),
    so background work on a 2-core machine yields to request handling."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass
