"""Timing the suite on every engine: one worker process per engine, runs interleaved.

Each engine lives in its own spawned process (``EngineWorker``) that sets the engine up
once (connect, load) and then answers "run segment S once" with the wall time of
``engine.count`` and the member count. The parent times every segment as: one warm-up
run per engine, then ``runs`` rounds in which each engine runs once, the engine order
rotating each round. On a machine shared with other work, load spikes then hit all
engines alike instead of whichever one happened to be running.

Peak memory is the resident-set high-water mark (``VmHWM``) of the engine's
``memory_pid`` (its worker, or PostgreSQL's backend), reset before each segment through
``/proc/<pid>/clear_refs`` so each figure belongs to one segment. Without that reset
(non-Linux) the figure is the process's peak so far.
"""
from __future__ import annotations

import multiprocessing
import os
import resource
import statistics
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.datasets import Dataset

DEFAULT_RUNS = 5
# A cell (engine x segment) whose warm-up run is slow gets fewer timed runs, so one slow
# engine cannot stretch a 100m run into hours; the table shows the number of runs.
DEFAULT_CELL_BUDGET_S = 300.0


# -- memory ----------------------------------------------------------------------------------
def timed(fn, runs: int) -> tuple[float, float, object]:
    """(median wall s, median cpu s, last result) after one warm-up."""
    fn()
    walls, cpus = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), result


def reset_peak_rss(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux); False if not possible."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb(pid: int) -> float | None:
    """The process's resident-set high-water mark in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    if pid == os.getpid():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return None


# -- results ---------------------------------------------------------------------------------
@dataclass
class Cell:
    """One engine on one segment."""

    engine: str
    segment: str
    seconds: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)  # warm-up included
    peak_rss_mb: float | None = None
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    @property
    def low(self) -> float | None:
        return min(self.seconds) if self.seconds else None

    @property
    def high(self) -> float | None:
        return max(self.seconds) if self.seconds else None

    @property
    def count(self) -> int | None:
        """The member count, or None if runs disagreed with each other or none succeeded."""
        return self.counts[0] if self.counts and len(set(self.counts)) == 1 else None


@dataclass
class SuiteResult:
    engines: list[str]  # in column order
    segments: list[str]
    runs: int
    cells: dict[tuple[str, str], Cell]  # (segment, engine) -> cell
    setup: dict[str, dict[str, float]]  # engine -> figures from its setup (load times)
    unavailable: dict[str, str]  # engine -> why it cannot run here (not installed): skipped
    setup_errors: dict[str, str] = field(default_factory=dict)  # engine -> traceback: a failure

    def cell(self, segment: str, engine: str) -> Cell | None:
        return self.cells.get((segment, engine))

    def failures(self) -> list[str]:
        """Every error and every member-count disagreement, as messages."""
        problems = [f"{engine} setup failed: {error.strip().splitlines()[-1]}"
                    for engine, error in self.setup_errors.items()]
        for segment in self.segments:
            counts: dict[str, int] = {}
            for engine in self.engines:
                cell = self.cell(segment, engine)
                if cell is None:
                    continue
                if cell.error:
                    problems.append(f"{segment}: {engine} failed: {cell.error.strip().splitlines()[-1]}")
                elif cell.count is None:
                    problems.append(f"{segment}: {engine} returned different counts across runs: {cell.counts}")
                else:
                    counts[engine] = cell.count
            if len(set(counts.values())) > 1:
                listed = ", ".join(f"{engine}={count}" for engine, count in counts.items())
                problems.append(f"{segment}: engines disagree on the member count: {listed}")
        return problems

    def to_json(self) -> dict:
        return {"engines": self.engines, "segments": self.segments, "runs": self.runs,
                "cells": [asdict(c) for c in self.cells.values()], "setup": self.setup,
                "unavailable": self.unavailable, "setup_errors": self.setup_errors}


# -- the worker process ----------------------------------------------------------------------
def _serve(conn, engine_name: str, dataset: Dataset) -> None:
    """Worker main: set the engine up, then answer commands until told to stop."""
    from benchmarks.engines import engine_class
    from benchmarks.suite import BY_NAME

    engine = engine_class(engine_name)(dataset)
    try:
        try:
            conn.send(("ready", engine.setup()))
        except BaseException:
            conn.send(("error", traceback.format_exc()))
            return
        while True:
            command, argument = conn.recv()
            if command == "stop":
                return
            try:
                if command == "run":
                    started = time.perf_counter()
                    count = engine.count(BY_NAME[argument])
                    conn.send(("ok", (time.perf_counter() - started, count)))
                elif command == "members":
                    conn.send(("ok", engine.members(BY_NAME[argument])))
                elif command == "reset_peak":
                    conn.send(("ok", reset_peak_rss(engine.memory_pid())))
                elif command == "peak":
                    conn.send(("ok", peak_rss_mb(engine.memory_pid())))
                else:
                    conn.send(("error", f"unknown command {command!r}"))
            except Exception:
                conn.send(("error", traceback.format_exc()))
    finally:
        engine.close()


class WorkerError(RuntimeError):
    pass


class EngineWorker:
    """Parent-side handle of one engine's worker process."""

    def __init__(self, engine_name: str, dataset: Dataset):
        self.engine_name = engine_name
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        # The dataset is passed without its cached lake objects (rebuilt in the child).
        plain = Dataset(dataset.name, dataset.data_dir, dataset.tenant_id, dataset.events, dataset.users,
                        dataset.seed, dataset.as_of)
        self._process = context.Process(target=_serve, args=(child, engine_name, plain),
                                        name=f"bench-{engine_name}", daemon=True)
        self._process.start()
        child.close()

    def _answer(self):
        try:
            status, value = self._conn.recv()
        except EOFError:
            raise WorkerError(f"{self.engine_name} worker exited (code {self._process.exitcode})") from None
        if status == "error":
            raise WorkerError(value)
        return value

    def ready(self) -> dict[str, float]:
        return self._answer()

    def call(self, command: str, argument=None):
        self._conn.send((command, argument))
        return self._answer()

    def stop(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send(("stop", None))
            except OSError:
                pass
            self._process.join(timeout=120)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()
        self._conn.close()


# -- the suite run ---------------------------------------------------------------------------
def _ignore(*message: str) -> None:
    pass


def run_suite(dataset: Dataset, engines: Sequence[str], segments: Sequence[str], *,
              runs: int = DEFAULT_RUNS, cell_budget_s: float = DEFAULT_CELL_BUDGET_S,
              log: Callable[[str, str], None] = _ignore, step: Callable[[str], None] = _ignore) -> SuiteResult:
    """Time ``segments`` on ``engines`` (names from benchmarks.engines.ENGINES).

    ``log(message, style)`` receives progress messages (plain text, a rich style name);
    ``step(segment)`` is called as each segment starts."""
    from benchmarks.engines import engine_class

    unavailable: dict[str, str] = {}
    setup_errors: dict[str, str] = {}
    workers: dict[str, EngineWorker] = {}
    setup: dict[str, dict[str, float]] = {}
    cells: dict[tuple[str, str], Cell] = {}
    try:
        for name in engines:  # one at a time, so a load time is not inflated by another's
            reason = engine_class(name).unavailable()
            if reason:
                unavailable[name] = reason
                log(f"{name}: skipped: {reason}", "yellow")
                continue
            log(f"setting up {name}", "")
            worker = EngineWorker(name, dataset)
            try:
                setup[name] = worker.ready()
            except WorkerError as error:
                worker.stop()
                setup_errors[name] = str(error)
                log(f"{name}: setup failed:\n{error}", "red")
                continue
            workers[name] = worker
        active = list(workers)
        for segment in segments:
            step(segment)
            for name in active:
                cells[(segment, name)] = Cell(name, segment)
            _time_segment(segment, workers, cells, runs, cell_budget_s)
    finally:
        for worker in workers.values():
            worker.stop()
    return SuiteResult(list(workers), list(segments), runs, cells, setup, unavailable, setup_errors)


def _time_segment(segment: str, workers: dict[str, EngineWorker], cells: dict[tuple[str, str], Cell],
                  runs: int, cell_budget_s: float) -> None:
    planned: dict[str, int] = {}
    for name, worker in workers.items():
        cell = cells[(segment, name)]
        try:
            worker.call("reset_peak")
            warm_s, count = worker.call("run", segment)
            cell.counts.append(count)
            planned[name] = max(1, min(runs, int(cell_budget_s // max(warm_s, 1e-9))))
        except WorkerError as error:
            cell.error = str(error)
    names = list(planned)
    for round_ in range(runs):
        shift = round_ % len(names) if names else 0
        for name in names[shift:] + names[:shift]:
            cell = cells[(segment, name)]
            if cell.error or len(cell.seconds) >= planned[name]:
                continue
            try:
                seconds, count = workers[name].call("run", segment)
                cell.seconds.append(seconds)
                cell.counts.append(count)
            except WorkerError as error:
                cell.error = str(error)
    for name in names:
        try:
            cells[(segment, name)].peak_rss_mb = workers[name].call("peak")
        except WorkerError as error:
            cells[(segment, name)].error = cells[(segment, name)].error or str(error)


def collect_members(dataset: Dataset, engine: str, segments: Sequence[str]) -> dict[str, list[str]]:
    """Every segment's member list from one engine (for correctness checks)."""
    worker = EngineWorker(engine, dataset)
    try:
        worker.ready()
        return {segment: worker.call("members", segment) for segment in segments}
    finally:
        worker.stop()
