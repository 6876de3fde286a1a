"""What every benchmarked engine implements.

An engine answers "how many users are in this suite segment?" (``count``, the timed call)
and "which ones?" (``members``, for the correctness test). ``setup`` runs once before any
timing (connect, load data) and returns figures worth reporting, e.g. PostgreSQL's load
time. ``memory_pid`` is the process whose peak resident memory the harness reports for
this engine: the engine's own worker process, or the server backend doing the work.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import ClassVar

from benchmarks.datasets import Dataset
from benchmarks.suite import SuiteSegment


class EngineUnavailable(RuntimeError):
    """The engine cannot run on this machine; the message says how to fix that."""


class Engine(ABC):
    name: ClassVar[str]
    label: ClassVar[str]
    max_events: ClassVar[int | None] = None  # larger datasets skip this engine

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this engine cannot run here (None when it can)."""
        return None

    def setup(self) -> dict[str, float]:
        return {}

    @abstractmethod
    def count(self, segment: SuiteSegment) -> int: ...

    @abstractmethod
    def members(self, segment: SuiteSegment) -> list[str]: ...

    def memory_pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        """Release connections and servers (idempotent)."""


class HandSqlEngine(Engine):
    """An engine answering each segment with its hand-written SQL over a DB-API style ``self.con``
    and ``self.context`` (a suite.SqlContext) set up by the subclass."""

    def sql(self, segment: SuiteSegment) -> str:
        return segment.hand_sql(self.context)

    def count(self, segment: SuiteSegment) -> int:
        return self.con.execute(f"SELECT count(*) FROM ({self.sql(segment)}) AS members").fetchone()[0]

    def members(self, segment: SuiteSegment) -> list[str]:
        return [row[0] for row in self.con.execute(self.sql(segment)).fetchall()]

