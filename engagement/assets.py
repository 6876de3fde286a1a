"""Image assets: an upload session, the bytes PUT straight to storage, then finalize.

The bytes never pass through a JSON request. On S3 the client PUTs to a presigned URL; on
the embedded (local directory) store it PUTs to ``/api/assets/uploads/<token>/``, where the
random token is the capability (stored hashed, valid ``UPLOAD_TTL``), like a presigned URL.
Finalize checks what arrived: the object exists, its size is the declared size, and its
first bytes are the declared image type (a sniffed magic number, so a mislabelled upload is
caught on both backends). Ready assets are served publicly under an unguessable token, so
email clients can load them.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from common.time import api_time, db_time, parse_db_time, utc_now
from engine.errors import Conflict, TooLarge, Unprocessable, UnsupportedMedia
from engagement.common import NotFound, SendsError
from storage.metadata import MetadataStore
from storage.objectstore import ObjectStore

CONTENT_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
MAX_BYTES = 10 << 20
UPLOAD_TTL = timedelta(minutes=15)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size INTEGER,
    alt_text TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('pending', 'ready')),
    object_key TEXT,
    external_url TEXT,
    upload_token_hash TEXT UNIQUE,
    upload_expires_at TEXT,
    public_token TEXT UNIQUE,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    finalized_at TEXT
);
CREATE INDEX IF NOT EXISTS assets_tenant ON assets (tenant_id, id);
"""


def sniff_image(head: bytes) -> str | None:
    """The image type the first bytes announce, or None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AssetStore:
    def __init__(self, meta: MetadataStore, store: ObjectStore, public_base_url: str):
        self.meta = meta
        self.store = store
        self.base_url = public_base_url.rstrip("/")
        meta.ensure_schema("sends.assets", SCHEMA)

    def _json(self, row) -> dict[str, Any]:
        return {"id": row["id"], "name": row["name"], "filename": row["filename"],
                "contentType": row["content_type"], "size": row["size"], "altText": row["alt_text"],
                "status": row["status"], "url": self._public_url(row),
                "createdAt": api_time(row["created_at"]), "updatedAt": api_time(row["updated_at"]),
                "finalizedAt": api_time(row["finalized_at"])}

    def _public_url(self, row) -> str | None:
        if row["external_url"]:
            return row["external_url"]
        if row["status"] != "ready":
            return None
        return f"{self.base_url}/api/assets/files/{row['public_token']}/{quote(row['filename'])}"

    def row(self, tenant_id: int, asset_id: int):
        row = self.meta.query_one("SELECT * FROM assets WHERE id = ? AND tenant_id = ?", (asset_id, tenant_id))
        if row is None:
            raise NotFound("asset", asset_id)
        return row

    def get(self, tenant_id: int, asset_id: int) -> dict[str, Any]:
        return self._json(self.row(tenant_id, asset_id))

    def list(self, tenant_id: int, status: str | None, limit: int, offset: int) -> tuple[int, list[dict]]:
        where, params = "tenant_id = ?", [tenant_id]
        if status:
            where += " AND status = ?"
            params.append(status)
        count, rows = self.meta.page(f"assets WHERE {where}", params, "id", limit, offset)
        return count, [self._json(r) for r in rows]

    def url_of(self, tenant_id: int, asset_id: int, field: str = "logoAssetId") -> str:
        """Public URL of a ready asset (for brand kits); SendsError (invalid input) when missing or not finalized."""
        try:
            row = self.row(tenant_id, asset_id)
        except NotFound:
            raise SendsError(field, f"no asset {asset_id}", "asset_not_found") from None
        url = self._public_url(row)
        if url is None:
            raise SendsError(field, f"asset {asset_id} is not finalized", "asset_not_ready")
        return url

    # -- upload session ---------------------------------------------------------------
    def start_upload(self, tenant_id: int, *, filename: str, content_type: str, size: int,
                     name: str | None = None, alt_text: str = "") -> dict[str, Any]:
        if content_type not in CONTENT_TYPES:
            raise SendsError("contentType", f"must be one of {', '.join(CONTENT_TYPES)}", "unsupported_content_type")
        if not 0 < size <= MAX_BYTES:
            raise SendsError("size", f"must be between 1 and {MAX_BYTES} bytes", "invalid_size")
        safe = _SAFE_NAME.sub("_", filename).strip("._") or "image"
        key = f"assets/tenant_id={tenant_id}/{uuid.uuid4().hex}/{safe}"
        token = secrets.token_urlsafe(32)
        now = utc_now()
        expires = now + UPLOAD_TTL
        cur = self.meta.execute(
            "INSERT INTO assets (tenant_id, name, filename, content_type, size, alt_text, status, object_key, "
            "upload_token_hash, upload_expires_at, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (tenant_id, name or filename, safe, content_type, size, alt_text, "pending", key, _token_hash(token),
             db_time(expires), db_time(now), db_time(now)))
        url = self.store.presigned_put(key, content_type, int(UPLOAD_TTL.total_seconds()))
        if url is None:
            url = f"{self.base_url}/api/assets/uploads/{token}/"
        return {"asset": self.get(tenant_id, cur.lastrowid),
                "upload": {"url": url, "method": "PUT", "headers": {"Content-Type": content_type},
                           "expiresAt": api_time(db_time(expires))}}

    def receive_upload(self, token: str, content_type: str | None, body: bytes) -> None:
        """The local store's stand-in for a presigned PUT: the token is the credential."""
        row = self.meta.query_one("SELECT * FROM assets WHERE upload_token_hash = ?", (_token_hash(token),))
        if row is None or row["status"] != "pending" or parse_db_time(row["upload_expires_at"]) < utc_now():
            raise NotFound("upload", "session")
        if (content_type or "").split(";")[0].strip().lower() != row["content_type"]:
            raise UnsupportedMedia(f"must be {row['content_type']} as declared",
                                   code="content_type_mismatch", field="Content-Type")
        if len(body) > MAX_BYTES:
            raise TooLarge(f"larger than {MAX_BYTES} bytes", code="payload_too_large", field="body")
        self.store.put_bytes(row["object_key"], body)

    def finalize(self, tenant_id: int, asset_id: int) -> dict[str, Any]:
        row = self.row(tenant_id, asset_id)
        if row["status"] == "ready":
            return self._json(row)
        key = row["object_key"]
        if not self.store.exists(key):
            raise Conflict("no bytes were uploaded for this asset", code="upload_missing", field="upload")
        actual = self.store.size(key)
        if actual != row["size"]:
            raise Unprocessable(f"declared {row['size']} bytes, uploaded {actual}",
                                code="size_mismatch", field="size")
        with self.store.open(key) as stream:
            sniffed = sniff_image(stream.read(16))
        if sniffed != row["content_type"]:
            raise Unprocessable(f"declared {row['content_type']}, uploaded bytes are "
                                f"{sniffed or 'not a supported image'}", code="content_type_mismatch",
                                field="contentType")
        now = db_time(utc_now())
        self.meta.execute(
            "UPDATE assets SET status = 'ready', public_token = ?, upload_token_hash = NULL, finalized_at = ?, "
            "updated_at = ? WHERE id = ? AND status = 'pending'", (secrets.token_urlsafe(24), now, now, asset_id))
        return self.get(tenant_id, asset_id)

    # -- plain records ----------------------------------------------------------------
    def create_external(self, tenant_id: int, *, url: str, name: str, content_type: str,
                        alt_text: str = "") -> dict[str, Any]:
        """An asset hosted elsewhere (already public): no upload, ready at once."""
        if not url.startswith(("https://", "http://")):
            raise SendsError("url", "must be an http(s) URL", "invalid_url")
        if content_type not in CONTENT_TYPES:
            raise SendsError("contentType", f"must be one of {', '.join(CONTENT_TYPES)}", "unsupported_content_type")
        now = db_time(utc_now())
        cur = self.meta.execute(
            "INSERT INTO assets (tenant_id, name, filename, content_type, alt_text, status, external_url, "
            "created_at, updated_at, finalized_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (tenant_id, name, name, content_type, alt_text, "ready", url, now, now, now))
        return self.get(tenant_id, cur.lastrowid)

    def update(self, tenant_id: int, asset_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        self.row(tenant_id, asset_id)
        columns = {"name": "name", "altText": "alt_text"}
        sets = [(columns[k], v) for k, v in changes.items() if k in columns and v is not None]
        if sets:
            self.meta.execute(
                f"UPDATE assets SET {', '.join(f'{c} = ?' for c, _ in sets)}, updated_at = ? "
                f"WHERE id = ? AND tenant_id = ?", (*(v for _, v in sets), db_time(utc_now()), asset_id, tenant_id))
        return self.get(tenant_id, asset_id)

    def delete(self, tenant_id: int, asset_id: int) -> None:
        row = self.row(tenant_id, asset_id)
        self.meta.execute("DELETE FROM assets WHERE id = ? AND tenant_id = ?", (asset_id, tenant_id))
        if row["object_key"]:
            self.store.delete(row["object_key"])

    def public_file(self, public_token: str) -> tuple[str, str]:
        """(object key, content type) of a ready asset by its public token."""
        row = self.meta.query_one("SELECT * FROM assets WHERE public_token = ? AND status = 'ready'", (public_token,))
        if row is None or not row["object_key"]:
            raise NotFound("asset", "file")
        return row["object_key"], row["content_type"]
