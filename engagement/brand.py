"""Brand kits: logo, colors and sender defaults applied to outgoing email.

A template may name a brand kit; otherwise the tenant's default kit (at most one per tenant)
applies. Templates see the kit as ``brand`` (``brand.colors.primary``, ``brand.logoUrl``...),
and its sender fills From/Reply-To when the template sets none.
"""
from __future__ import annotations

import re
from typing import Any

from common.time import api_time, db_time, utc_now
from engagement.common import NotFound, SendsError, dumps, loads
from storage.metadata import MetadataStore

COLOR = re.compile(r"^#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
COLOR_NAMES = ("primary", "secondary", "accent", "background", "text")

SCHEMA = """
CREATE TABLE IF NOT EXISTS brand_kits (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    is_default INTEGER NOT NULL DEFAULT 0,
    logo_asset_id INTEGER,
    logo_url TEXT,
    colors TEXT NOT NULL DEFAULT '{}',
    fonts TEXT NOT NULL DEFAULT '{}',
    sender TEXT NOT NULL DEFAULT '{}',
    footer_html TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS brand_kits_tenant ON brand_kits (tenant_id, id);
CREATE UNIQUE INDEX IF NOT EXISTS brand_kits_one_default ON brand_kits (tenant_id) WHERE is_default = 1;
"""

_COLUMNS = {"name": "name", "isDefault": "is_default", "logoAssetId": "logo_asset_id", "logoUrl": "logo_url",
            "colors": "colors", "fonts": "fonts", "sender": "sender", "footerHtml": "footer_html"}
_JSON_FIELDS = ("colors", "fonts", "sender")


def brand_json(row) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "isDefault": bool(row["is_default"]),
            "logoAssetId": row["logo_asset_id"], "logoUrl": row["logo_url"],
            "colors": loads(row["colors"], {}), "fonts": loads(row["fonts"], {}),
            "sender": loads(row["sender"], {}), "footerHtml": row["footer_html"],
            "createdAt": api_time(row["created_at"]), "updatedAt": api_time(row["updated_at"])}


class BrandKitStore:
    """``asset_url(tenant_id, asset_id)`` resolves a logo asset to its public URL (SendsError if not ready)."""

    def __init__(self, meta: MetadataStore, asset_url):
        self.meta = meta
        self._asset_url = asset_url
        meta.ensure_schema("sends.brand_kits", SCHEMA)

    def row(self, tenant_id: int, kit_id: int):
        row = self.meta.query_one("SELECT * FROM brand_kits WHERE id = ? AND tenant_id = ?", (kit_id, tenant_id))
        if row is None:
            raise NotFound("brand kit", kit_id)
        return row

    def get(self, tenant_id: int, kit_id: int) -> dict[str, Any]:
        return brand_json(self.row(tenant_id, kit_id))

    def list(self, tenant_id: int, limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        count, rows = self.meta.page("brand_kits WHERE tenant_id = ?", (tenant_id,), "id", limit, offset)
        return count, [brand_json(r) for r in rows]

    def for_template(self, tenant_id: int, kit_id: int | None) -> dict[str, Any] | None:
        """The kit a template uses: its own, else the tenant's default, else None."""
        if kit_id is not None:
            row = self.meta.query_one("SELECT * FROM brand_kits WHERE id = ? AND tenant_id = ?", (kit_id, tenant_id))
        else:
            row = self.meta.query_one("SELECT * FROM brand_kits WHERE tenant_id = ? AND is_default = 1", (tenant_id,))
        return brand_json(row) if row is not None else None

    def check_exists(self, tenant_id: int, kit_id: int | None, field: str = "brandKitId") -> None:
        if kit_id is not None and self.meta.query_one(
                "SELECT 1 FROM brand_kits WHERE id = ? AND tenant_id = ?", (kit_id, tenant_id)) is None:
            raise SendsError(field, f"no brand kit {kit_id}", "brand_kit_not_found")

    def _validate(self, tenant_id: int, doc: dict[str, Any]) -> dict[str, Any]:
        for name, value in (doc.get("colors") or {}).items():
            if name not in COLOR_NAMES:
                raise SendsError(f"colors.{name}", f"unknown color; use {', '.join(COLOR_NAMES)}", "invalid_color")
            if not isinstance(value, str) or not COLOR.match(value):
                raise SendsError(f"colors.{name}", "must be a hex color like #1a2b3c", "invalid_color")
        if doc.get("logoAssetId") is not None:
            doc["logoUrl"] = self._asset_url(tenant_id, doc["logoAssetId"])
        return doc

    def create(self, tenant_id: int, doc: dict[str, Any]) -> dict[str, Any]:
        doc = self._validate(tenant_id, {"isDefault": False, "logoAssetId": None, "logoUrl": None, "colors": {},
                                         "fonts": {}, "sender": {}, "footerHtml": "", **doc})
        now = db_time(utc_now())
        with self.meta.transaction() as conn:
            if doc["isDefault"]:
                conn.execute("UPDATE brand_kits SET is_default = 0 WHERE tenant_id = ?", (tenant_id,))
            cur = conn.execute(
                "INSERT INTO brand_kits (tenant_id, name, is_default, logo_asset_id, logo_url, colors, fonts, "
                "sender, footer_html, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (tenant_id, doc["name"], int(doc["isDefault"]), doc["logoAssetId"], doc["logoUrl"],
                 dumps(doc["colors"]), dumps(doc["fonts"]), dumps(doc["sender"]), doc["footerHtml"], now, now))
        return self.get(tenant_id, cur.lastrowid)

    def update(self, tenant_id: int, kit_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        current = self.get(tenant_id, kit_id)
        doc = self._validate(tenant_id, {**current, **changes})
        values = [dumps(doc[k]) if k in _JSON_FIELDS else (int(doc[k]) if k == "isDefault" else doc[k])
                  for k in _COLUMNS]
        with self.meta.transaction() as conn:
            if doc["isDefault"]:
                conn.execute("UPDATE brand_kits SET is_default = 0 WHERE tenant_id = ? AND id != ?",
                             (tenant_id, kit_id))
            conn.execute(
                f"UPDATE brand_kits SET {', '.join(f'{c} = ?' for c in _COLUMNS.values())}, updated_at = ? "
                f"WHERE id = ? AND tenant_id = ?", (*values, db_time(utc_now()), kit_id, tenant_id))
        return self.get(tenant_id, kit_id)

    def delete(self, tenant_id: int, kit_id: int) -> None:
        self.row(tenant_id, kit_id)
        with self.meta.transaction() as conn:
            conn.execute("UPDATE templates SET brand_kit_id = NULL WHERE tenant_id = ? AND brand_kit_id = ?",
                         (tenant_id, kit_id))
            conn.execute("DELETE FROM brand_kits WHERE id = ? AND tenant_id = ?", (kit_id, tenant_id))
