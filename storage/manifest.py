"""Versioned JSON manifests: the commit point of the lake.

A manifest log is a prefix holding ``<seq:020d>.json`` documents; the highest
sequence number is the current state. Committing writes ``seq + 1`` with a
create-if-absent put (local: ``os.link``; S3: ``If-None-Match: *``), so a commit
is one atomic object creation and a second writer racing for the same sequence
fails loudly instead of overwriting. Readers list the prefix, read the highest
document and from then on see exactly the files it lists.

Old documents are pruned, keeping the newest ``keep``; a reader that listed an
older one and lost the race to read it simply retries.
"""
from __future__ import annotations

import threading

import orjson

from storage.objectstore import ObjectExistsError, ObjectStore


class ConcurrentCommitError(RuntimeError):
    """Another writer committed the same sequence number: only one process may write a lake."""


class ManifestLog:
    def __init__(self, store: ObjectStore, prefix: str, keep: int = 20):
        self.store = store
        self.prefix = prefix.rstrip("/") + "/"
        self.keep = keep
        self._cache: tuple[int, dict] | None = None
        self._lock = threading.Lock()

    def _seqs(self) -> list[int]:
        seqs = []
        for key in self.store.list(self.prefix):
            name = key[len(self.prefix):]
            if "/" not in name and name.endswith(".json") and name[:-5].isdigit():
                seqs.append(int(name[:-5]))
        return sorted(seqs)

    def _key(self, seq: int) -> str:
        return f"{self.prefix}{seq:020d}.json"

    def latest(self) -> tuple[int, dict | None]:
        """(seq, document) of the current manifest; (0, None) when nothing was committed.

        Once a document is known, the next one can only be ``seq + 1`` (commits are
        create-if-absent of the next number), so checking that key, one stat or HEAD,
        replaces listing the prefix on every snapshot (a LIST per query on S3)."""
        cached = self._cache
        if cached is not None:
            seq = cached[0]
            while self.store.exists(self._key(seq + 1)):
                seq += 1
            if seq == cached[0]:
                return cached
            found = self._read(seq)
            if found is not None:
                return found
        for _ in range(5):
            seqs = self._seqs()
            if not seqs:
                return 0, None
            found = self._read(seqs[-1])
            if found is not None:
                return found
        raise RuntimeError(f"manifest log {self.prefix} keeps changing under the reader")

    def _read(self, seq: int) -> tuple[int, dict] | None:
        """Read and cache document ``seq``; None if it was pruned meanwhile."""
        try:
            doc = orjson.loads(self.store.get_bytes(self._key(seq)))
        except FileNotFoundError:
            return None
        with self._lock:
            if self._cache is None or self._cache[0] < seq:
                self._cache = (seq, doc)
            return self._cache

    def commit(self, seq: int, doc: dict) -> None:
        """Publish ``doc`` as sequence ``seq`` (must be latest + 1)."""
        try:
            self.store.put_bytes(self._key(seq), orjson.dumps(doc), if_absent=True)
        except ObjectExistsError:
            raise ConcurrentCommitError(f"{self._key(seq)} already exists: is another process writing this lake?") from None
        with self._lock:
            self._cache = (seq, doc)

    def prune(self) -> int:
        """Delete all but the newest ``keep`` documents. Returns how many were deleted."""
        seqs = self._seqs()
        old = seqs[:-self.keep] if len(seqs) > self.keep else []
        for seq in old:
            self.store.delete(self._key(seq))
        return len(old)
