"""Where the lake's bytes live: a local directory (default) or an S3 bucket.

Everything above this module addresses objects by *key* (``events/tenant_id=1/...``),
never by filesystem path, so the same lake code runs on a laptop and on S3.

Writes are atomic on both backends: the local store writes to ``<root>/_tmp/``
(outside every lake prefix, and never ending in ``.parquet``) and renames into
place; an S3 PUT is atomic by itself. A reader therefore never sees a half
written object under its final key. Local writes are also durable before they
return (file fsync'd before the rename, directories after), since a manifest
committed next may list them and the write-ahead log is then checkpointed away.

DuckDB reads objects directly: ``duckdb_path(key)`` gives an absolute local
path or ``s3://bucket/key`` (connect with ``storage.duck.connect`` so httpfs and
the S3 secret are configured).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO
from urllib.parse import urlparse


class ObjectExistsError(FileExistsError):
    """``put_*(..., if_absent=True)`` found the key already present."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime  # UTC, aware


class ObjectStore(ABC):
    """Key/value blob storage with atomic puts. Keys use ``/`` separators, no leading slash."""

    #: True when objects are not on the local filesystem (DuckDB needs httpfs).
    is_remote: bool = False

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        """Store ``data`` under ``key`` atomically. ``if_absent`` raises ObjectExistsError
        instead of replacing an existing object (used for manifest commits)."""

    @abstractmethod
    def put_file(self, key: str, path: str | Path, *, move: bool = False, if_absent: bool = False) -> None:
        """Store a local file under ``key`` atomically. ``move`` lets the local store rename
        instead of copying (the file must then be on the same filesystem, e.g. from
        ``scratch_dir()``); the source is gone afterwards in both backends when ``move``."""

    def put_files(self, items: list[tuple[str, Path]]) -> None:
        """``put_file(key, path, move=True)`` for each (key, path): a batch of new objects."""
        for key, path in items:
            self.put_file(key, path, move=True)

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Whole object; FileNotFoundError when missing."""

    @abstractmethod
    def open(self, key: str) -> IO[bytes]:
        """A binary stream for reading a (possibly large) object; the caller closes it."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix``, sorted. Temporary objects are never listed."""

    @abstractmethod
    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        """Like ``list`` with size and modification time (used for garbage collection)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def duckdb_path(self, key: str) -> str:
        """What DuckDB's read_parquet/COPY accept for this key."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """The object's URI for other readers: ``file://`` + its absolute path or ``s3://bucket/`` + its
        key, verbatim (not percent-encoded: Hadoop reads ``tenant_id%3D1`` literally; a hive path's ``=``
        is legal in a URI as it is). A Hadoop reader maps ``s3://`` to its ``s3a://``."""

    @abstractmethod
    def move(self, src: str, dst: str) -> None:
        """Put the object ``src`` under ``dst`` (replacing it) and remove ``src``: ``dst``
        appears whole or not at all. FileNotFoundError if ``src`` is missing."""

    @abstractmethod
    def presigned_get(self, key: str, expires: int = 3600) -> str | None:
        """Time-limited download URL (S3); None for the local store."""

    @abstractmethod
    def presigned_put(self, key: str, content_type: str = "application/octet-stream",
                      expires: int = 3600) -> str | None:
        """Time-limited upload URL (S3); None for the local store."""

    @abstractmethod
    def scratch_dir(self) -> Path:
        """A local directory for files about to be ``put_file(move=True)`` (same filesystem as
        the local store, so the final step is a rename)."""

    def new_scratch_path(self, suffix: str = "") -> Path:
        """A fresh path in ``scratch_dir()`` (nothing created). Never ends in ``.parquet``
        unless ``suffix`` says so — DuckDB COPY wants the suffix, the store does not care."""
        return self.scratch_dir() / f"{uuid.uuid4().hex}{suffix}"


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (its entries) by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private(path: Path, data: bytes, *, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` readable by its owner only (0600: keys, credentials, customer
    records), never visible half-written: a temporary file beside it, then an atomic rename; with
    ``durable`` the file and its directory entry are fsync'd first."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        fsync_path(path.parent)


def _make_dirs(directory: Path) -> list[Path]:
    """mkdir -p; returns the parents of the directories it created (their entries changed)."""
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
    return [path.parent for path in missing]


class LocalObjectStore(ObjectStore):
    """Objects are files under ``root``; temporaries live in ``root/_tmp``."""

    TMP = "_tmp"

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / self.TMP).mkdir(exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalObjectStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid object key {key!r}")
        return self.root / key

    def scratch_dir(self) -> Path:
        return self.root / self.TMP

    def _install(self, tmp: Path, key: str, if_absent: bool, sync: bool = True) -> list[Path]:
        """Rename (or link) the fsync'd ``tmp`` into place, then fsync the directories whose
        entries changed (or, ``sync`` False, return them): after a power loss an installed
        object is there, whole."""
        final = self._path(key)
        created = _make_dirs(final.parent)
        if if_absent:
            try:
                os.link(tmp, final)  # atomic create-if-absent
            except FileExistsError:
                raise ObjectExistsError(key) from None
            finally:
                tmp.unlink(missing_ok=True)
        else:
            os.replace(tmp, final)
        changed = [final.parent, *created]
        if sync:
            for directory in changed:
                fsync_path(directory)
        return changed

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        tmp = self.new_scratch_path(".partial")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        self._install(tmp, key, if_absent)

    def put_file(self, key: str, path: str | Path, *, move: bool = False, if_absent: bool = False) -> None:
        path = Path(path)
        if move and path.resolve().is_relative_to(self.scratch_dir()):
            tmp = path
        else:
            tmp = self.new_scratch_path(".partial")
            shutil.copyfile(path, tmp)
            if move:
                path.unlink()
        fsync_path(tmp)  # a manifest may list it once installed: its bytes must be on disk first
        self._install(tmp, key, if_absent)

    def put_files(self, items: list[tuple[str, Path]]) -> None:
        """Files of one write (e.g. a day per file) made durable together: their fsyncs
        overlap in threads and each changed directory is fsync'd once."""
        local = [(key, Path(path)) for key, path in items]
        if any(not path.resolve().is_relative_to(self.scratch_dir()) for _, path in local):
            return super().put_files(items)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(fsync_path, [path for _, path in local]))
            changed: dict[Path, None] = {}
            for key, path in local:
                changed.update(dict.fromkeys(self._install(path, key, False, sync=False)))
            list(pool.map(fsync_path, changed))

    def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def open(self, key: str) -> IO[bytes]:
        return open(self._path(key), "rb")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _walk(self, prefix: str):
        # Walk only the directory that can contain the prefix.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base if base else self.root
        if not start.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(start):
            if Path(dirpath) == self.root and self.TMP in dirnames:
                dirnames.remove(self.TMP)
            rel = os.path.relpath(dirpath, self.root)
            for name in filenames:
                key = name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"
                if key.startswith(prefix):
                    yield key, os.path.join(dirpath, name)

    def list(self, prefix: str = "") -> list[str]:
        return sorted(key for key, _ in self._walk(prefix))

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        out = []
        for key, full in self._walk(prefix):
            try:
                st = os.stat(full)
            except FileNotFoundError:
                continue
            out.append(ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc)))
        return sorted(out, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def duckdb_path(self, key: str) -> str:
        return str(self._path(key))

    def uri(self, key: str) -> str:
        return "file://" + str(self._path(key).absolute())

    def move(self, src: str, dst: str) -> None:
        """A rename, durable like ``put_file``."""
        source, final = self._path(src), self._path(dst)
        if not source.is_file():
            raise FileNotFoundError(src)
        created = _make_dirs(final.parent)
        os.replace(source, final)
        for directory in {final.parent, source.parent, *created}:
            fsync_path(directory)

    def presigned_get(self, key: str, expires: int = 3600) -> str | None:
        return None

    def presigned_put(self, key: str, content_type: str = "application/octet-stream",
                      expires: int = 3600) -> str | None:
        return None


class S3ObjectStore(ObjectStore):
    """Objects in ``s3://bucket/prefix/``. ``endpoint_url`` points at MinIO/moto/etc."""

    is_remote = True

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 access_key_id: str | None = None, secret_access_key: str | None = None,
                 region: str = "us-east-1", scratch: str | Path | None = None):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.region = region
        self._scratch = Path(scratch) if scratch else Path(tempfile.gettempdir()) / "segops-scratch"
        self._scratch.mkdir(parents=True, exist_ok=True)
        self.client = boto3.client(
            "s3", endpoint_url=endpoint_url, aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key, region_name=region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"},
                          max_pool_connections=32),
        )

    def __repr__(self) -> str:
        return f"S3ObjectStore(s3://{self.bucket}/{self.prefix})"

    def _full(self, key: str) -> str:
        if not key or key.startswith("/"):
            raise ValueError(f"invalid object key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _strip(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    def scratch_dir(self) -> Path:
        return self._scratch

    def _put(self, key: str, body, if_absent: bool) -> None:
        from botocore.exceptions import ClientError

        kwargs = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._full(key), Body=body, **kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise ObjectExistsError(key) from None
            raise

    def put_bytes(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        self._put(key, data, if_absent)

    def put_file(self, key: str, path: str | Path, *, move: bool = False, if_absent: bool = False) -> None:
        path = Path(path)
        if if_absent:
            with open(path, "rb") as fh:
                self._put(key, fh, True)
        else:
            # upload_file streams in parts for big files; a multipart upload becomes
            # visible only on completion, so it is atomic too.
            self.client.upload_file(str(path), self.bucket, self._full(key))
        if move:
            path.unlink()

    def get_bytes(self, key: str) -> bytes:
        return self.open(key).read()

    def open(self, key: str) -> IO[bytes]:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._full(key))["Body"]
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from None
            raise

    def _head(self, key: str):
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return None
            raise

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            for obj in page.get("Contents", ()):
                out.append(ObjectInfo(self._strip(obj["Key"]), obj["Size"], obj["LastModified"]))
        return sorted(out, key=lambda info: info.key)

    def list(self, prefix: str = "") -> list[str]:
        return [info.key for info in self.list_info(prefix)]

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise FileNotFoundError(key)
        return head["ContentLength"]

    def duckdb_path(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._full(key)}"

    def uri(self, key: str) -> str:
        return self.duckdb_path(key)

    def move(self, src: str, dst: str) -> None:
        """Server-side copy, then delete ``src``. boto3's managed copy switches to a multipart
        copy above its threshold (one CopyObject is limited to 5 GB); either completes whole."""
        if self._head(src) is None:
            raise FileNotFoundError(src)
        self.client.copy({"Bucket": self.bucket, "Key": self._full(src)}, self.bucket, self._full(dst))
        self.delete(src)

    def presigned_get(self, key: str, expires: int = 3600) -> str | None:
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._full(key)}, ExpiresIn=expires)

    def presigned_put(self, key: str, content_type: str = "application/octet-stream",
                      expires: int = 3600) -> str | None:
        return self.client.generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": self._full(key), "ContentType": content_type},
            ExpiresIn=expires)

    def duckdb_endpoint(self) -> tuple[str | None, bool]:
        """(``host:port`` or None for AWS, use_ssl) as DuckDB's S3 secret wants them."""
        if not self.endpoint_url:
            return None, True
        parsed = urlparse(self.endpoint_url)
        return parsed.netloc, parsed.scheme == "https"


def _reveal(secret) -> str | None:
    """A pydantic SecretStr (or a plain string from a duck-typed settings object) as text."""
    return secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret


def open_store(settings) -> ObjectStore:
    """The lake's store from ``engine.settings.Settings`` (duck-typed: storage never imports
    engine): ``lake_root`` is ``s3://bucket/prefix`` or a local path (default ``<data_dir>/lake``)."""
    url = settings.lake_root
    if url.startswith("s3://"):
        parsed = urlparse(url)
        return S3ObjectStore(
            parsed.netloc, parsed.path, endpoint_url=settings.s3_endpoint_url,
            access_key_id=settings.s3_access_key_id, secret_access_key=_reveal(settings.s3_secret_access_key),
            region=settings.s3_region, scratch=Path(settings.data_dir) / "scratch",
        )
    if url.startswith("file://"):
        url = url[len("file://"):]
    return LocalObjectStore(url)
