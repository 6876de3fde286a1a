"""Runtime configuration: one object, read from SEGOPS_* environment variables.

The embedded default needs nothing set: a local Parquet lake and a SQLite
metadata database under ``data/``.
"""
from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("data")
    # "file" (default: <data_dir>/lake) or "s3://bucket/prefix"
    lake_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_region: str = "us-east-1"
    public_base_url: str = "http://127.0.0.1:8000"
    # Background work inside `segops serve` (flusher, scheduler, journey worker).
    run_workers: bool = True
    # Read-only processes serve lookups from the lake without owning it.
    read_only: bool = False
    smtp_url: str | None = None  # smtp://host:port ; None -> .eml files in <data_dir>/outbox
    extra: dict = field(default_factory=dict)

    @property
    def lake_root(self) -> str:
        return self.lake_url or str((self.data_dir / "lake").resolve())

    @property
    def metadata_path(self) -> Path:
        return self.data_dir / "meta.sqlite"

    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "wal"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def secret_key(self) -> str:
        """Signing secret for JWTs and unsubscribe links, created once per data dir."""
        path = self.data_dir / "secret.key"
        env = os.environ.get("SEGOPS_SECRET_KEY")
        if env:
            return env
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_urlsafe(48))
            os.replace(tmp, path)
        return path.read_text().strip()

    @classmethod
    def from_env(cls, data_dir: str | Path | None = None, **overrides) -> "Settings":
        env = os.environ
        values = dict(
            data_dir=Path(data_dir or env.get("SEGOPS_DATA_DIR", "data")),
            lake_url=env.get("SEGOPS_LAKE_URL"),
            s3_endpoint_url=env.get("SEGOPS_S3_ENDPOINT_URL"),
            s3_access_key_id=env.get("SEGOPS_S3_ACCESS_KEY_ID") or env.get("AWS_ACCESS_KEY_ID"),
            s3_secret_access_key=env.get("SEGOPS_S3_SECRET_ACCESS_KEY") or env.get("AWS_SECRET_ACCESS_KEY"),
            s3_region=env.get("SEGOPS_S3_REGION", "us-east-1"),
            public_base_url=env.get("SEGOPS_PUBLIC_BASE_URL", "http://127.0.0.1:8000"),
            read_only=env.get("SEGOPS_READ_ONLY", "") in ("1", "true"),
            smtp_url=env.get("SEGOPS_SMTP_URL"),
        )
        values.update(overrides)
        return cls(**values)
