"""``?wait=SECONDS`` on the routes that start background work (compute, export): answer once the
work has finished (200) or when the wait is over (202), so a script needs no polling loop.

The wait polls SQLite (a worker of another process may do the work) from the event loop with
``asyncio.sleep``, so a waiting request holds no thread of the pool that runs the sync routes.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from fastapi import Query, Response
from starlette.concurrency import run_in_threadpool

MAX_WAIT_SECONDS = 60
FINISHED = ("done", "failed")  # states of compute jobs and exports that change no more
WAIT_RESPONSES = {
    200: {"description": "With `wait`: the work finished (`status` done or failed) within the wait"},
    202: {"description": "Queued; with `wait`, still queued or running when the wait was over"},
}


def wait_seconds(wait: float = Query(0, ge=0, le=MAX_WAIT_SECONDS, allow_inf_nan=False,
                                     description=f"Seconds (at most {MAX_WAIT_SECONDS}) to wait for the work "
                                                 "to finish before answering")) -> float:
    return wait


async def finished_or_current(read: Callable[[], dict], seconds: float, response: Response) -> dict:
    """``read()`` (the job or export, from a thread) once it has finished, with status 200, or
    as it is after ``seconds``, leaving the route's 202."""
    deadline = time.monotonic() + seconds
    pause = 0.02
    while True:
        current = await run_in_threadpool(read)
        left = deadline - time.monotonic()
        if current["status"] in FINISHED:
            response.status_code = 200
            return current
        if left <= 0:
            return current
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 1.5, 0.25)
