"""The benchmark datasets: demo-generator events and profiles in a real segops lake, built once.

``ensure_dataset("10m")`` returns the cached dataset in ``data/bench/10m/`` (a segops data
dir: the lake is ``<data_dir>/lake``), generating it first (``cli.demo.generate``) if it
is missing or was built with other parameters. Generation is deterministic (fixed seed and
a fixed end of the data, ``END``), so every machine measures the same rows, and ``as_of`` is
that end, so segment results do not depend on when the benchmark runs.
"""
from __future__ import annotations

import fcntl
import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from storage.lake import EventLake, EventsSnapshot, ProfilesSnapshot
from storage.objectstore import LocalObjectStore

TENANT_ID = 1
SEED = 20261122
# The end of every dataset's data and the suite's as_of: the demo generator's former fixed end
# for SEED (it now ends today unless told), so figures stay comparable with earlier runs.
END = datetime(2026, 11, 15)
SIZES = {"small": 1_000_000, "10m": 10_000_000, "100m": 100_000_000}
EVENTS_PER_USER = 50
BATCH_ROWS = 1_000_000
MANIFEST = "dataset.json"
FORMAT_VERSION = 2  # bump when the way a dataset is built changes


@dataclass(frozen=True)
class Dataset:
    """A generated, committed lake plus what the benchmark needs to query it deterministically."""

    name: str
    data_dir: Path
    tenant_id: int
    events: int
    users: int
    seed: int
    as_of: datetime  # naive UTC

    @cached_property
    def lake(self) -> EventLake:
        return EventLake(LocalObjectStore(self.data_dir / "lake"), read_only=True)

    @cached_property
    def snapshot(self) -> EventsSnapshot:
        return self.lake.snapshot(self.tenant_id)

    @cached_property
    def profiles(self) -> ProfilesSnapshot:
        """The profiles, in one file: the peer engines read ``.file`` alone (a dataset
        writes its profiles with one upsert, so there is no delta)."""
        profiles = self.lake.profiles_snapshot(self.tenant_id)
        if profiles.delta is not None:
            raise RuntimeError(f"{self.data_dir}: profiles have a delta file; rebuild the dataset")
        return profiles

    def property_column(self, name: str) -> str:
        """Physical typed column of an event property (e.g. ``total`` -> ``p_total``)."""
        return self.snapshot.properties[name][0]

    def trait_column(self, name: str) -> str:
        return self.profiles.traits[name][0]

    def days_before(self, days: int) -> datetime:
        return self.as_of - timedelta(days=days)


def dataset_dir(root: Path, name: str) -> Path:
    return Path(root) / "bench" / name


def ensure_dataset(name: str, *, root: Path = Path("data"), events: int | None = None,
                   users: int | None = None, seed: int = SEED, batch_rows: int = BATCH_ROWS,
                   directory: Path | None = None, quiet: bool = False) -> Dataset:
    """The dataset ``name`` (a SIZES key, or any name with explicit ``events``), built if needed.

    ``directory`` overrides ``<root>/bench/<name>`` (tests build tiny datasets in tmp dirs).
    """
    events = events if events is not None else SIZES[name]
    users = users if users is not None else max(1, events // EVENTS_PER_USER)
    data_dir = Path(directory) if directory is not None else dataset_dir(root, name)
    params = {"format": FORMAT_VERSION, "events": events, "users": users, "seed": seed,
              "tenant_id": TENANT_ID}
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(data_dir.parent / f".{data_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent benchmark processes build a dataset once
        manifest = data_dir / MANIFEST
        if manifest.exists():
            stored = json.loads(manifest.read_text())
            if {k: stored.get(k) for k in params} == params:
                return _dataset(name, data_dir, stored)
        if data_dir.exists():
            shutil.rmtree(data_dir)
        data_dir.mkdir(parents=True)
        as_of = _generate(data_dir, events=events, users=users, seed=seed, batch_rows=batch_rows, quiet=quiet)
        stored = {**params, "as_of": as_of.isoformat()}
        manifest.write_text(json.dumps(stored, indent=2) + "\n")  # written last: marks a complete build
    return _dataset(name, data_dir, stored)


def _dataset(name: str, data_dir: Path, stored: dict) -> Dataset:
    return Dataset(name, data_dir, stored["tenant_id"], stored["events"], stored["users"], stored["seed"],
                   datetime.fromisoformat(stored["as_of"]))


def _generate(data_dir: Path, *, events: int, users: int, seed: int, batch_rows: int, quiet: bool) -> datetime:
    """Write the demo generator's profiles and events (ending at ``END``) through the lake,
    compact each day to one file. Returns ``END``, the suite's ``as_of``."""
    from cli.demo import generate

    lake = EventLake(LocalObjectStore(data_dir / "lake"), grace_seconds=0)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, disable=quiet, transient=True) as progress:
        task = progress.add_task(f"generating {events:,} events for {users:,} users", total=events)
        generate(lake, TENANT_ID, users, events, seed, end=END, batch_rows=batch_rows,
                 progress=lambda rows: progress.advance(task, rows))
        progress.update(task, description="compacting")
        lake.compact(TENANT_ID)
        lake.collect_garbage(TENANT_ID)
    return END
