"""EmailSends requested through the API (``emails.send`` / ``emails.batchSend``), and the
template snapshot every kind of send goes through.

A request is validated whole (all-or-nothing for a batch), its rows are created ``queued``
in one transaction, and then handed off inline so the answer usually carries the final
status; whatever could not be settled inline (a transient SMTP failure) is retried by the
worker. Reading a send later gives its durable status and timestamps.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from engine.errors import Unprocessable
from engagement.common import SendsError, dumps
from engagement.outbound import NewSend
from engagement.recipients import normalize_address, valid_address
from engagement.templates import Content

if TYPE_CHECKING:
    from engagement.brand import BrandKitStore
    from engagement.outbound import Outbound
    from engagement.profiles import ProfileDirectory
    from engagement.templates import TemplateStore

MAX_BATCH = 100


def snapshot_template(templates: TemplateStore, brand_kits: BrandKitStore, outbound: Outbound, tenant_id: int,
                      template_id: int, field: str = "templateId") -> tuple[int, Content, dict[str, Any]]:
    """Freeze a template (with its brand kit and sender defaults) as send content.
    Returns (content_id, content, template JSON)."""
    content, template = templates.content(tenant_id, template_id, field=field)
    kit = brand_kits.for_template(tenant_id, template["brandKitId"])
    if kit is not None:
        sender = kit.get("sender") or {}
        content = Content(content.subject, content.html, content.text, content.purpose, content.topic,
                          content.from_name or sender.get("fromName"), content.from_email or sender.get("fromEmail"),
                          content.reply_to or sender.get("replyTo"), dumps(kit))
    return outbound.store_content(tenant_id, content, template_id), content, template


class Emails:
    def __init__(self, outbound: Outbound, profiles: ProfileDirectory, snapshot: Callable[..., tuple],
                 deliver: Callable[[Sequence[int]], None]):
        """``snapshot(tenant_id, template_id, field)``: ``Sends.snapshot``; ``deliver(send_ids)``: the
        dispatcher's inline hand-off."""
        self.outbound = outbound
        self.profiles = profiles
        self.snapshot = snapshot
        self.deliver = deliver

    def _prepare(self, tenant_id: int, item: dict[str, Any], path: str, contents: dict) -> NewSend:
        template_id = item["templateId"]
        if template_id not in contents:
            contents[template_id] = self.snapshot(tenant_id, template_id, f"{path}templateId")
        content_id, _, template = contents[template_id]
        declared = set(template["dataVariables"])
        data = item.get("dataVariables") or {}
        for name in data:
            if name not in declared:
                raise SendsError(f"{path}dataVariables.{name}", "not declared by the template "
                                 f"(declared: {', '.join(sorted(declared)) or 'none'})", "undeclared_data_variable")
        user_id = item.get("userId")
        to = item.get("to")
        if to is None and user_id is None:
            raise SendsError(f"{path}to", "give a recipient: to (an email address) or userId (a profile)",
                             "recipient_required")
        address = normalize_address(to, f"{path}to") if to is not None else None
        if address is None:
            profile = self.profiles.one(tenant_id, user_id)
            if profile is None:
                raise Unprocessable(f"no profile {user_id!r}", code="profile_not_found", field=f"{path}userId")
            address = valid_address(profile.get("email"))
            if address is None:
                raise Unprocessable(f"profile {user_id!r} has no valid email trait",
                                    code="no_email_address", field=f"{path}userId")
        return NewSend(tenant_id=tenant_id, source="api", source_key=uuid.uuid4().hex, content_id=content_id,
                       user_id=user_id, to_address=address, template_id=template_id, data=data)

    def send(self, tenant_id: int, items: list[dict[str, Any]], *, batch: bool) -> list[dict[str, Any]]:
        if batch and not 1 <= len(items) <= MAX_BATCH:
            raise SendsError("emails", f"send 1..{MAX_BATCH} emails per batch", "invalid_batch_size")
        contents: dict[int, tuple] = {}
        prepared = [self._prepare(tenant_id, item, f"emails[{i}]." if batch else "", contents)
                    for i, item in enumerate(items)]
        ids = self.outbound.enqueue(prepared)
        self.deliver(ids)
        return self.outbound.many(tenant_id, ids)
