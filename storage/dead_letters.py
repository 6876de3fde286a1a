"""Dead letters: records the flusher could not write to the lake, kept so they are not lost.

A record that fails to write (an instant no reader can convert, a WAL record that no
longer decodes, ...) must not hold back everything behind it: the flusher moves it here
and carries on (``engine.ingest.service``). Layout under ``<data>/dead-letter/``::

    tenant_id=<id>/<time_ns:020d>-<rand>-<n>.ndjson     n dead letters of one flush
    tenant_id=none/...                                    records whose tenant is unknown

Each line is one JSON object: ``id``, ``quarantined_at`` (ISO 8601 UTC), ``tenant_id``,
``kind`` (``event``, ``profile`` or ``wal_record``), ``reason``, ``wal_segment`` and
``record`` (the original record's fields; timestamps as microseconds since the epoch, as
the WAL held them, plus ISO 8601 where a datetime can show them). A file is written
whole and fsync'd before the WAL segments holding its records are checkpointed; its name
carries its line count, so counting a tenant's dead letters reads no file.
"""
from __future__ import annotations

import re
import time
import uuid
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import orjson

from storage.objectstore import fsync_path, write_private

_NAME = re.compile(r"^(\d{20})-([0-9a-f]{8})-(\d+)\.ndjson$")


class DeadLetters:
    """The dead-letter directory of one data dir. Writers: the process owning the WAL."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)

    def _tenant_dir(self, tenant_id: int | None) -> Path:
        return self.dir / f"tenant_id={'none' if tenant_id is None else int(tenant_id)}"

    def write(self, letters: list[dict]) -> None:
        """Durably store ``letters`` (dicts with at least ``tenant_id``, ``kind``, ``reason``,
        ``record``), one file per tenant; ``id`` and ``quarantined_at`` are added."""
        by_tenant: dict[int | None, list[dict]] = defaultdict(list)
        for letter in letters:
            by_tenant[letter.get("tenant_id")].append(letter)
        now = time.time_ns()
        at = datetime.fromtimestamp(now / 1e9, timezone.utc).isoformat().replace("+00:00", "Z")
        for tenant_id, items in by_tenant.items():
            directory = self._tenant_dir(tenant_id)
            for path in (self.dir, directory):  # customer data: owner only, like the data dir
                path.mkdir(mode=0o700, exist_ok=True)
            stem = f"{now:020d}-{uuid.uuid4().hex[:8]}-{len(items)}"
            lines = [orjson.dumps({"id": f"{stem}:{i}", "quarantined_at": at, **item})
                     for i, item in enumerate(items)]
            write_private(directory / f"{stem}.ndjson", b"\n".join(lines) + b"\n", durable=True)
            for path in (directory, self.dir, self.dir.parent):  # the entries of new directories too
                fsync_path(path)

    def _files(self, tenant_id: int | None) -> list[tuple[Path, int]]:
        """(file, line count), newest first; every tenant's when ``tenant_id`` is None."""
        dirs = [self._tenant_dir(tenant_id)] if tenant_id is not None else (
            sorted(self.dir.glob("tenant_id=*")) if self.dir.is_dir() else [])
        files = []
        for directory in dirs:
            if directory.is_dir():
                for path in directory.iterdir():
                    match = _NAME.match(path.name)
                    if match:
                        files.append((match.group(1), path, int(match.group(3))))
        return [(path, count) for _, path, count in sorted(files, key=lambda f: (f[0], f[1].name), reverse=True)]

    def list(self, tenant_id: int | None = None, limit: int = 50, offset: int = 0) -> tuple[int, list[dict]]:
        """(total, dead letters ``offset`` .. ``offset + limit``), newest flush first; a
        tenant's, or every tenant's (and the unknown ones) when ``tenant_id`` is None."""
        files = self._files(tenant_id)
        total = sum(count for _, count in files)
        out: list[dict] = []
        skip = offset
        for path, count in files:
            if len(out) >= limit:
                break
            if skip >= count:
                skip -= count
                continue
            lines = path.read_bytes().splitlines()
            out.extend(orjson.loads(line) for line in lines[skip:skip + limit - len(out)])
            skip = 0
        return total, out
