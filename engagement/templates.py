"""Email templates: subject, HTML and text bodies with Jinja2 merge fields, rendered sandboxed.

Templates run in a Jinja2 sandbox (engagement/sandbox.py): template authors are tenants, and a
template must never reach Python internals, nor make one render cost more than the sandbox's
limits (time, steps, sizes). The HTML body autoescapes merge values; subject and text do not
(they are not HTML). At save time each part is compiled and rendered once without data, so a
template that is too expensive whatever the data is refused then (``template_too_expensive``).

Merge fields: a template sees the recipient's profile traits as top-level names (and as
``profile``), the send's ``dataVariables`` as top-level names (and as ``data``), plus the
built-ins below. At save time every top-level name the template reads is checked against the
tenant's known traits, the declared ``dataVariables`` and the built-ins; names outside those
are saved anyway (a trait may appear later) and reported as ``unknownMergeFields``. A missing
value renders empty at send time (``ChainableUndefined``), so one sparse profile never stops a
broadcast.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from jinja2 import ChainableUndefined, Template, TemplateSyntaxError, meta

from common.time import api_time, db_time, utc_now
from engine.errors import Conflict
from engagement.common import NotFound, SendsError, dumps, loads
from engagement.sandbox import BoundedEnvironment, RenderLimit, bounded_join, render_limits
from storage.metadata import MetadataStore

PURPOSES = ("marketing", "transactional")
BUILTIN_FIELDS = frozenset({"profile", "data", "email", "user_id", "unsubscribe_url", "brand", "event"})
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
PARTS = ("subject", "html", "text")

SCHEMA = """
CREATE TABLE IF NOT EXISTS templates (
    id INTEGER PRIMARY KEY,
    tenant_id INTEGER NOT NULL,
    name TEXT NOT NULL,
    subject TEXT NOT NULL,
    html TEXT NOT NULL DEFAULT '',
    text TEXT NOT NULL DEFAULT '',
    purpose TEXT NOT NULL CHECK (purpose IN ('marketing', 'transactional')),
    topic TEXT NOT NULL DEFAULT 'marketing',
    data_variables TEXT NOT NULL DEFAULT '[]',
    brand_kit_id INTEGER,
    from_name TEXT,
    from_email TEXT,
    reply_to TEXT,
    version INTEGER NOT NULL DEFAULT 1,
    unknown_merge_fields TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    archived_at TEXT
);
CREATE INDEX IF NOT EXISTS templates_tenant ON templates (tenant_id, id);
"""

_html_env = BoundedEnvironment(autoescape=True, undefined=ChainableUndefined)
_text_env = BoundedEnvironment(autoescape=False, undefined=ChainableUndefined)


def _env(part: str) -> BoundedEnvironment:
    return _html_env if part == "html" else _text_env


@contextmanager
def _syntax_errors(field: str) -> Iterator[None]:
    """Source Jinja2 cannot parse or compile -> SendsError (``template_syntax_error``) naming the field."""
    try:
        yield
    except TemplateSyntaxError as err:  # also the compiler's TemplateAssertionError
        raise SendsError(field, f"template syntax error on line {err.lineno}: {err.message}",
                         "template_syntax_error") from None
    except RecursionError:
        raise SendsError(field, "template syntax error: nested too deeply", "template_syntax_error") from None
    except ValueError as err:  # a number literal beyond Python's digit limit
        raise SendsError(field, f"template syntax error: {err}", "template_syntax_error") from None


def parse_part(part: str, source: str, field: str | None = None) -> set[str]:
    """Top-level names ``source`` reads; SendsError (``template_syntax_error``) if it does not parse."""
    with _syntax_errors(field or part):
        return meta.find_undeclared_variables(_env(part).parse(source))  # runs the code generator too


def compile_part(part: str, source: str) -> Template:
    """SendsError (``template_syntax_error``) for source that parses but does not compile."""
    with _syntax_errors(part):
        return _env(part).from_string(source)


def check_cost(part: str, source: str) -> None:
    """Compile ``source`` and render it once without data: what exceeds a limit whatever the data
    (``{{ 10**(4*10**6) }}``) is refused at save, as SendsError ``template_too_expensive``."""
    template = compile_part(part, source)
    try:
        with render_limits():
            _run(template, dict(template.globals), part)
    except RenderLimit as err:
        raise SendsError(part, err.reason, "template_too_expensive") from None
    except Exception:  # an error that depends on the data is for preview and send time
        pass


@dataclass(frozen=True)
class Content:
    """What is rendered for one send: a frozen copy of a template (or a broadcast's snapshot)."""

    subject: str
    html: str
    text: str
    purpose: str
    topic: str
    from_name: str | None = None
    from_email: str | None = None
    reply_to: str | None = None
    brand: str = "null"  # the brand kit as JSON text (frozen, and keeps Content hashable)

    def to_json(self) -> dict[str, Any]:
        return {"subject": self.subject, "html": self.html, "text": self.text, "purpose": self.purpose,
                "topic": self.topic, "fromName": self.from_name, "fromEmail": self.from_email,
                "replyTo": self.reply_to, "brand": loads(self.brand)}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Content":
        return cls(doc["subject"], doc["html"], doc["text"], doc["purpose"], doc["topic"],
                   doc.get("fromName"), doc.get("fromEmail"), doc.get("replyTo"), dumps(doc.get("brand")))


class CompiledContent:
    """A Content's three parts compiled once; ``render`` per recipient."""

    def __init__(self, content: Content):
        self.content = content
        self.brand = loads(content.brand)
        self.uses_unsubscribe_url = any("unsubscribe_url" in parse_part(part, getattr(content, part))
                                        for part in PARTS)
        self._subject = compile_part("subject", content.subject)
        self._html = compile_part("html", content.html) if content.html else None
        self._text = compile_part("text", content.text) if content.text else None

    def render(self, context: dict[str, Any]) -> tuple[str, str, str]:
        """(subject, html, text); subject on one line. Raises on a template runtime error, and
        RenderLimit (naming the part) for a render over the sandbox's limits.

        What ``Template.render`` does, with the globals merged into the variables once for the
        three parts instead of once per part (a broadcast renders millions of parts), and the
        three parts under one budget."""
        variables = {**_text_env.globals, **context}
        with render_limits():
            subject = " ".join(_run(self._subject, variables, "subject").split())
            html = _run(self._html, variables, "html") if self._html else ""
            text = _run(self._text, variables, "text") if self._text else ""
        return subject, html, text


def _run(template: Template, variables: dict[str, Any], part: str) -> str:
    try:
        return bounded_join(template.root_render_func(template.new_context(variables, shared=True)))
    except RenderLimit as err:
        raise RenderLimit(err.reason, part) from None


def merge_context(traits: dict[str, Any], data: dict[str, Any], **builtins: Any) -> dict[str, Any]:
    """Traits and data as top-level names (data wins over a trait of the same name), then built-ins."""
    context = {**traits, **data}
    context.update(profile=traits, data=data, **builtins)
    return context


def template_json(row) -> dict[str, Any]:
    return {
        "id": row["id"], "name": row["name"], "subject": row["subject"], "html": row["html"],
        "text": row["text"], "purpose": row["purpose"], "topic": row["topic"],
        "dataVariables": loads(row["data_variables"], []), "brandKitId": row["brand_kit_id"],
        "fromName": row["from_name"], "fromEmail": row["from_email"], "replyTo": row["reply_to"],
        "version": row["version"], "unknownMergeFields": loads(row["unknown_merge_fields"], []),
        "archived": row["archived_at"] is not None, "archivedAt": api_time(row["archived_at"]),
        "createdAt": api_time(row["created_at"]), "updatedAt": api_time(row["updated_at"]),
    }


_COLUMNS = {"name": "name", "subject": "subject", "html": "html", "text": "text", "purpose": "purpose",
            "topic": "topic", "dataVariables": "data_variables", "brandKitId": "brand_kit_id",
            "fromName": "from_name", "fromEmail": "from_email", "replyTo": "reply_to"}


class TemplateStore:
    """Templates of every tenant. ``known_traits(tenant_id)`` names the traits profiles have
    (for the merge-field check); it is the lake's profile catalog in the running system."""

    def __init__(self, meta: MetadataStore, known_traits):
        self.meta = meta
        self._known_traits = known_traits
        meta.ensure_schema("sends.templates", SCHEMA)

    # -- reads ------------------------------------------------------------------------
    def row(self, tenant_id: int, template_id: int):
        row = self.meta.query_one("SELECT * FROM templates WHERE id = ? AND tenant_id = ?", (template_id, tenant_id))
        if row is None:
            raise NotFound("template", template_id)
        return row

    def get(self, tenant_id: int, template_id: int) -> dict[str, Any]:
        return template_json(self.row(tenant_id, template_id))

    def list(self, tenant_id: int, *, archived: bool | None, purpose: str | None,
             limit: int, offset: int) -> tuple[int, list[dict[str, Any]]]:
        where, params = ["tenant_id = ?"], [tenant_id]
        if archived is not None:
            where.append("archived_at IS NOT NULL" if archived else "archived_at IS NULL")
        if purpose is not None:
            where.append("purpose = ?")
            params.append(purpose)
        clause = " AND ".join(where)
        count, rows = self.meta.page(f"templates WHERE {clause}", params, "id", limit, offset)
        return count, [template_json(r) for r in rows]

    def content(self, tenant_id: int, template_id: int, *, field: str = "templateId",
                allow_archived: bool = False) -> tuple[Content, dict[str, Any]]:
        """The template as sendable Content plus its row;
        SendsError for a missing/archived template
        named by a send request (``field``)."""
        try:
            row = self.row(tenant_id, template_id)
        except NotFound:
            raise SendsError(field, f"no template {template_id}", "template_not_found") from None
        if row["archived_at"] is not None and not allow_archived:
            raise SendsError(field, f"template {template_id} is archived", "template_archived")
        content = Content(row["subject"], row["html"], row["text"], row["purpose"], row["topic"],
                          row["from_name"], row["from_email"], row["reply_to"])
        return content, template_json(row)

    # -- validation -------------------------------------------------------------------
    def _check(self, tenant_id: int, doc: dict[str, Any]) -> list[str]:
        """Validate a complete template document; returns the unknown merge fields (sorted)."""
        if doc["purpose"] not in PURPOSES:
            raise SendsError("purpose", f"must be one of {', '.join(PURPOSES)}", "invalid_purpose")
        if not doc["subject"].strip():
            raise SendsError("subject", "must not be empty", "required")
        if not (doc["html"].strip() or doc["text"].strip()):
            raise SendsError("html", "a template needs an html or a text body", "required")
        declared = doc["dataVariables"]
        for i, name in enumerate(declared):
            if not isinstance(name, str) or not IDENTIFIER.match(name):
                raise SendsError(f"dataVariables[{i}]", "must be an identifier (letters, digits, _)",
                                 "invalid_data_variable")
        if len(set(declared)) != len(declared):
            raise SendsError("dataVariables", "names must be unique", "duplicate_data_variable")
        used: set[str] = set()
        for part in PARTS:
            used |= parse_part(part, doc[part])
            if doc[part]:
                check_cost(part, doc[part])
        allowed = set(self._known_traits(tenant_id)) | set(declared) | BUILTIN_FIELDS
        return sorted(used - allowed)

    # -- writes -----------------------------------------------------------------------
    def create(self, tenant_id: int, doc: dict[str, Any]) -> dict[str, Any]:
        doc = {"html": "", "text": "", "purpose": "marketing", "topic": "marketing", "dataVariables": [],
               "brandKitId": None, "fromName": None, "fromEmail": None, "replyTo": None, **doc}
        unknown = self._check(tenant_id, doc)
        now = db_time(utc_now())
        cur = self.meta.execute(
            "INSERT INTO templates (tenant_id, name, subject, html, text, purpose, topic, data_variables, "
            "brand_kit_id, from_name, from_email, reply_to, unknown_merge_fields, created_at, updated_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (tenant_id, doc["name"], doc["subject"], doc["html"], doc["text"], doc["purpose"], doc["topic"],
             dumps(doc["dataVariables"]), doc["brandKitId"], doc["fromName"], doc["fromEmail"],
             doc["replyTo"], dumps(unknown), now, now))
        return self.get(tenant_id, cur.lastrowid)

    def update(self, tenant_id: int, template_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        row = self.row(tenant_id, template_id)
        if row["archived_at"] is not None:
            raise Conflict("unarchive the template before editing it", code="template_archived", field="archived")
        current = template_json(row)
        doc = {**current, **changes}
        unknown = self._check(tenant_id, doc)  # may read the lake: done before taking the write lock
        content_changed = any(doc[k] != current[k] for k in _COLUMNS if k != "name")
        assignments = ", ".join(f"{col} = ?" for col in _COLUMNS.values())
        values = [dumps(doc[k]) if k == "dataVariables" else doc[k] for k in _COLUMNS]
        updated = self.meta.execute(
            f"UPDATE templates SET {assignments}, unknown_merge_fields = ?, updated_at = ?, version = version + ? "
            f"WHERE id = ? AND tenant_id = ? AND updated_at = ? AND archived_at IS NULL",
            (*values, dumps(unknown), db_time(utc_now()), int(content_changed), template_id, tenant_id,
             row["updated_at"])).rowcount
        if not updated:
            raise Conflict("the template changed meanwhile; read it again and retry",
                           code="conflict", field="template")
        return self.get(tenant_id, template_id)

    def duplicate(self, tenant_id: int, template_id: int, name: str | None) -> dict[str, Any]:
        source = self.get(tenant_id, template_id)
        doc = {k: source[k] for k in _COLUMNS}
        doc["name"] = name or f"{source['name']} (copy)"
        return self.create(tenant_id, doc)

    def set_archived(self, tenant_id: int, template_id: int, archived: bool) -> dict[str, Any]:
        self.row(tenant_id, template_id)
        self.meta.execute(
            "UPDATE templates SET archived_at = ?, updated_at = ? WHERE id = ? AND tenant_id = ?",
            (db_time(utc_now()) if archived else None, db_time(utc_now()), template_id, tenant_id))
        return self.get(tenant_id, template_id)
