"""``runtime.sends``: the engagement layer's stores and services, wired once per process.

Tunables are settings (engine.settings): ``send_lease_seconds``, ``send_chunk``, ``default_from``.
"""
from __future__ import annotations

import threading
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from engine.errors import Unprocessable
from engagement.assets import AssetStore
from engagement.brand import BrandKitStore
from engagement.broadcasts import Broadcasts
from engagement.dispatch import Dispatcher, Links
from engagement.emails import Emails
from engagement.tracking import Engagement
from engagement.idempotency import IdempotencyStore
from engagement.journeys.service import Journeys
from engagement.outbound import Outbound, mail_domain
from engagement.profiles import ProfileDirectory
from engagement.recipients import Recipients, Signer
from engagement.sandbox import RenderLimit
from engagement.templates import CompiledContent, Content, TemplateStore, merge_context
from engagement.transport import Transport, transport_from_settings
from storage.objectstore import open_store

if TYPE_CHECKING:
    from engine.runtime import Runtime


class Sends:
    def __init__(self, runtime: "Runtime"):
        self.runtime = runtime
        settings = runtime.settings
        meta = runtime.meta
        self.base_url = settings.base_url
        self.domain = mail_domain(self.base_url)
        self.lease = timedelta(seconds=settings.send_lease_seconds)
        self.chunk = settings.send_chunk
        self.default_from = settings.default_from or f"no-reply@{self.domain}"
        self.profiles = ProfileDirectory(runtime)
        self.templates = TemplateStore(meta, self.profiles.known_traits)
        self.assets = AssetStore(meta, open_store(settings), self.base_url)
        self.brand_kits = BrandKitStore(meta, self.assets.url_of)
        self.recipients = Recipients(meta)
        self.outbound = Outbound(meta, self.domain, runtime.jobs, self.chunk)
        self.idempotency = IdempotencyStore(meta)
        self.signer = Signer(settings.secret_key)
        self.links = Links(self.signer, self.base_url)
        self.emails = Emails(self)
        self.engagement = Engagement(runtime, self)
        self.wakeup = threading.Event()

    def wake(self) -> None:
        """New work exists (queued sends, due runs): the worker of this process looks now."""
        self.wakeup.set()

    def preview_template(self, tenant_id: int, template_id: int, user_id: str | None, traits: dict[str, Any],
                         data_variables: dict[str, Any]) -> dict[str, Any]:
        """The template rendered for a profile (``user_id``) and/or given ``traits``; nothing is sent.
        A render over the sandbox's limits, or one that fails, is Unprocessable (the template saved fine)."""
        self.templates.row(tenant_id, template_id)  # NotFound for a missing or another tenant's id
        content, template = self.templates.content(tenant_id, template_id, allow_archived=True)
        traits = dict(traits)
        if user_id is not None:
            traits = {**(self.profiles.one(tenant_id, user_id) or {}), **traits}
        kit = self.brand_kits.for_template(tenant_id, template["brandKitId"])
        compiled = CompiledContent(Content(content.subject, content.html, content.text, content.purpose, content.topic))
        context = merge_context(traits, data_variables, email=traits.get("email"), user_id=user_id,
                                unsubscribe_url=f"{self.base_url}/api/recipients/unsubscribe/preview/", brand=kit)
        try:
            subject, html, text = compiled.render(context)
        except RenderLimit as err:
            raise Unprocessable(err.reason, code="template_too_expensive", field=err.part) from None
        except Exception as err:  # noqa: BLE001 - any render failure is the template's, answered to its author
            raise Unprocessable(f"template error: {type(err).__name__}: {err}", code="template_render_error") from None
        return {"subject": subject, "html": html, "text": text, "unknownMergeFields": template["unknownMergeFields"]}

    @cached_property
    def journeys(self) -> Journeys:
        return Journeys(self.runtime, self)

    @cached_property
    def broadcasts(self) -> Broadcasts:
        return Broadcasts(self.runtime, self)

    @cached_property
    def transport(self) -> Transport:
        transport = transport_from_settings(self.runtime.settings)
        self.runtime.on_stop(transport.close)
        return transport

    @cached_property
    def dispatcher(self) -> Dispatcher:
        dispatcher = Dispatcher(self.outbound, self.recipients, self.profiles, self.transport, self.links,
                                lease=self.lease, chunk=self.chunk, default_from=self.default_from)
        self.runtime.on_stop(dispatcher.close)
        return dispatcher
