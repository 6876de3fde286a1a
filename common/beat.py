"""A side thread that repeats one action while a block of blocking work runs (lease and pin renewals)."""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def beating(action: Callable[[], bool | None], every: float, name: str,
            finally_: Callable[[], None] | None = None) -> Iterator[None]:
    """Run ``action`` every ``every`` seconds in a thread named ``name`` until the block ends or
    ``action`` returns False; ``finally_`` runs in that thread when it ends (e.g. closing its own
    SQLite connection)."""
    stop = threading.Event()

    def beat() -> None:
        try:
            while not stop.wait(every):
                if action() is False:
                    return
        finally:
            if finally_ is not None:
                finally_()

    thread = threading.Thread(target=beat, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
