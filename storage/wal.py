"""Write-ahead log: where an acknowledged write lives until it is in the lake.

Layout under ``<data>/wal/``::

    LOCK                     flock'd by the owning process (one writer per log)
    CHECKPOINT               {"through": N}: segments <= N are in the lake (atomic replace)
    <seq:020d>.wal           segments; the highest one is the active segment

A segment is the magic ``SEGWAL1\\n`` followed by records framed as
``<u32 length><u32 crc32(payload)><payload>`` (little endian). ``append`` writes a
whole group of records with one ``write`` and makes them durable with one
``fsync`` (group commit: the caller batches concurrent requests). A crash can leave
a torn record at the end of a segment: reading stops at the first frame whose
length runs past the end of the file or whose CRC does not match, and discards
the rest — such a record was never acknowledged, because acknowledgement follows
the fsync.

The log is payload-agnostic: the ingest engine decides what a record means.
A restart never appends to an old segment; it opens a new one, so every old
segment is sealed and can be replayed as is.
"""
from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson

from storage.objectstore import fsync_path

log = logging.getLogger(__name__)

MAGIC = b"SEGWAL1\n"
_FRAME = struct.Struct("<II")
MAX_RECORD_BYTES = 1 << 30


class WalLockedError(RuntimeError):
    """Another process owns this write-ahead log."""


def in_use(directory: str | Path) -> bool:
    """Whether another process owns the log in ``directory`` now (takes its lock and lets go),
    so a second server can say so before it starts rather than fail while starting."""
    try:
        fd = os.open(Path(directory) / "LOCK", os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class WriteAheadLog:
    """Segmented, CRC-framed, fsync'd append log with an atomic checkpoint.

    Thread safety: ``append``, ``seal`` and ``checkpoint`` may be called from different
    threads (one committer, one flusher); they serialize on an internal lock.
    """

    def __init__(self, directory: str | Path, *, segment_bytes: int = 64 << 20):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._lock_fd = os.open(self.dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise WalLockedError(f"{self.dir} is in use by another segops process") from None
        self._checkpoint = self._read_checkpoint()
        self._drop_checkpointed()
        existing = self._segment_seqs()
        self._next_seq = max([self._checkpoint, *existing]) + 1
        self._sealed: list[int] = existing  # replayable segments from earlier runs
        self._active_fd: int | None = None
        self._active_seq = 0
        self._active_size = 0
        self._pending_bytes = sum(self._path(s).stat().st_size for s in existing)
        # seq -> when its first record was written (an earlier run's segment: its last write)
        self._started_at = {s: self.segment_mtime(s) for s in existing}

    # -- paths ----------------------------------------------------------------------
    def _path(self, seq: int) -> Path:
        return self.dir / f"{seq:020d}.wal"

    def _segment_seqs(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob("*.wal") if p.stem.isdigit())

    def _read_checkpoint(self) -> int:
        path = self.dir / "CHECKPOINT"
        return int(orjson.loads(path.read_bytes())["through"]) if path.exists() else 0

    def _drop_checkpointed(self) -> None:
        for seq in self._segment_seqs():
            if seq <= self._checkpoint:
                self._path(seq).unlink(missing_ok=True)

    # -- writing --------------------------------------------------------------------
    @property
    def pending_bytes(self) -> int:
        """Bytes in segments not yet checkpointed (backpressure signal)."""
        return self._pending_bytes

    def pending_since(self) -> float | None:
        """When (seconds since the epoch) the oldest record not yet checkpointed was written, or
        None if every record is: how far flushing lags behind."""
        with self._lock:
            return min(self._started_at.values(), default=None)

    def append(self, payloads: Sequence[bytes]) -> None:
        """Durably append ``payloads`` as one group: one write, one fsync. When this
        returns, every record survives a crash of the process or the machine."""
        if not payloads:
            return
        parts = []
        for payload in payloads:
            if len(payload) > MAX_RECORD_BYTES:
                raise ValueError(f"WAL record of {len(payload)} bytes exceeds {MAX_RECORD_BYTES}")
            parts.append(_FRAME.pack(len(payload), zlib.crc32(payload)))
            parts.append(payload)
        data = b"".join(parts)
        with self._lock:
            if self._active_fd is None:
                self._open_segment()
            try:
                written = 0
                view = memoryview(data)
                while written < len(data):
                    written += os.write(self._active_fd, view[written:])
                os.fsync(self._active_fd)
            except OSError:
                # A partial record may now end this segment; seal it so later records
                # start in a new segment instead of behind a torn frame.
                self._seal_active()
                raise
            self._active_size += len(data)
            self._pending_bytes += len(data)
            if self._active_size >= self.segment_bytes:
                self._seal_active()

    def _open_segment(self) -> None:
        seq = self._next_seq
        self._next_seq += 1
        fd = os.open(self._path(seq), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        os.write(fd, MAGIC)
        os.fsync(fd)
        fsync_path(self.dir)  # the new file's directory entry must survive a crash too
        self._active_fd, self._active_seq, self._active_size = fd, seq, len(MAGIC)
        self._pending_bytes += len(MAGIC)
        self._started_at[seq] = time.time()

    def _seal_active(self) -> None:
        if self._active_fd is not None:
            os.close(self._active_fd)
            self._sealed.append(self._active_seq)
            self._active_fd = None

    def segment_bytes_of(self, seq: int) -> int:
        return self._path(seq).stat().st_size

    def segment_mtime(self, seq: int) -> float:
        """Last write to a segment (seconds since the epoch): no record in it is newer."""
        return self._path(seq).stat().st_mtime

    def seal(self) -> list[int]:
        """Close the active segment (if any) and return every sealed, not yet
        checkpointed segment in order. New appends go to a fresh segment."""
        with self._lock:
            self._seal_active()
            return list(self._sealed)

    def checkpoint(self, through: int) -> None:
        """Record that segments <= ``through`` are safely elsewhere, then delete them.
        The checkpoint file is replaced atomically, so a crash leaves either the old or
        the new checkpoint; segments are deleted only after it is durable."""
        with self._lock:
            tmp = self.dir / "CHECKPOINT.tmp"
            with open(tmp, "wb") as fh:
                fh.write(orjson.dumps({"through": through}))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.dir / "CHECKPOINT")
            fsync_path(self.dir)
            self._checkpoint = through
            done = [s for s in self._sealed if s <= through]
            self._sealed = [s for s in self._sealed if s > through]
            for seq in done:
                self._started_at.pop(seq, None)
        for seq in done:
            path = self._path(seq)
            try:
                size = path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            with self._lock:
                self._pending_bytes -= size

    # -- reading --------------------------------------------------------------------
    def records(self, seq: int) -> Iterator[bytes]:
        """Payloads of a sealed segment in order, stopping at a torn or corrupt tail."""
        path = self._path(seq)
        data = path.read_bytes()
        if data[:len(MAGIC)] != MAGIC:
            if data:
                log.warning("WAL segment %s has no valid header; ignoring it", path)
            return
        pos, end = len(MAGIC), len(data)
        while pos < end:
            if pos + _FRAME.size > end:
                break
            length, crc = _FRAME.unpack_from(data, pos)
            start = pos + _FRAME.size
            if start + length > end or zlib.crc32(data[start:start + length]) != crc:
                break
            yield data[start:start + length]
            pos = start + length
        if pos < end:
            log.warning("WAL segment %s: discarded %d bytes of torn tail at offset %d", path, end - pos, pos)

    def close(self) -> None:
        """Close the active segment and release the lock (segments stay for replay)."""
        with self._lock:
            self._seal_active()
            if self._lock_fd is not None:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
                self._lock_fd = None
