"""``runtime.sends``: the engagement layer's stores and services, wired once per process.

engine/runtime.py builds it from what engagement needs of the engine (the lake, the query backends,
the event feed, and callables for segment queries, members, memberships and ingest); nothing here
reaches into the runtime. Tunables are settings (engine.settings): ``send_lease_seconds``,
``send_chunk``, ``default_from``.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from engine.errors import Unprocessable
from engagement.assets import AssetStore
from engagement.brand import BrandKitStore
from engagement.broadcasts import Broadcasts
from engagement.dispatch import Dispatcher, Links
from engagement.emails import Emails, snapshot_template
from engagement.tracking import Engagement
from engagement.idempotency import IdempotencyStore
from engagement.journeys.runner import JourneyRunner
from engagement.journeys.store import JourneyStore
from engagement.outbound import Outbound, mail_domain
from engagement.profiles import ProfileDirectory
from engagement.recipients import Recipients, Signer
from engagement.sandbox import RenderLimit
from engagement.templates import CompiledContent, Content, TemplateStore, merge_context
from engagement.transport import Transport, transport_from_settings
from storage.objectstore import open_store

if TYPE_CHECKING:
    import pyarrow as pa

    from backends.registry import Backends
    from engine.ingest.feed import EventFeed
    from engine.segments.store import SegmentStore
    from engine.jobs import JobQueue
    from engine.settings import Settings
    from storage.lake import EventLake
    from storage.metadata import MetadataStore


class Sends:
    def __init__(self, settings: Settings, meta: MetadataStore, lake: EventLake, backends: Backends,
                 segments: SegmentStore, jobs: JobQueue, *, feed: EventFeed, submit: Callable[..., Any],
                 memberships: Callable[[int, list[str]], list], current_members: Callable[[int, int], pa.Array | None],
                 compile_definition: Callable[[int, Any], Any], member_table: Callable[[Any], pa.Table]):
        """``submit``: ingest's ``submit_events`` (opens the WAL on first call, so pass it lazily);
        ``memberships``: the membership index's; ``current_members(tenant_id, segment_id)``: the members of
        its current computation;
        ``compile_definition(tenant_id, definition)`` -> a ``CompiledSegment`` and ``member_table(compiled)``:
        segment queries."""
        self.settings = settings
        self.meta = meta
        self.segments = segments
        self.memberships = memberships
        self.current_members = current_members
        self.compile_definition = compile_definition
        self.member_table = member_table
        self.base_url = settings.base_url
        self.domain = mail_domain(self.base_url)
        self.lease = timedelta(seconds=settings.send_lease_seconds)
        self.chunk = settings.send_chunk
        self.default_from = settings.default_from or f"no-reply@{self.domain}"
        self.profiles = ProfileDirectory(lake, backends)
        self.templates = TemplateStore(meta, self.profiles.known_traits)
        self.assets = AssetStore(meta, open_store(settings), self.base_url)
        self.brand_kits = BrandKitStore(meta, self.assets.url_of)
        self.recipients = Recipients(meta)
        self.outbound = Outbound(meta, self.domain, jobs, self.chunk)
        self.idempotency = IdempotencyStore(meta)
        self.signer = Signer(settings.secret_key)
        self.links = Links(self.signer, self.base_url)
        self.emails = Emails(self.outbound, self.profiles, self.snapshot, lambda ids: self.dispatcher.deliver(ids))
        self.engagement = Engagement(meta, self.signer, self.recipients, self.outbound, submit=submit, feed=feed,
                                     read_only=settings.read_only)
        self.wakeup = threading.Event()

    def wake(self) -> None:
        """New work exists (queued sends, due runs): the worker of this process looks now."""
        self.wakeup.set()

    def snapshot(self, tenant_id: int, template_id: int, field: str = "templateId") -> tuple:
        """A template frozen as send content: (content_id, content, template JSON)."""
        return snapshot_template(self.templates, self.brand_kits, self.outbound, tenant_id, template_id, field)

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
    def journeys(self) -> JourneyStore:
        return JourneyStore(self.meta, self.segments, self.outbound, self.wake)

    @cached_property
    def journeys_runner(self) -> JourneyRunner:
        return JourneyRunner(self.meta, self.journeys, self.outbound, self.profiles, self.snapshot,
                             self.memberships, self.wake)

    @cached_property
    def broadcasts(self) -> Broadcasts:
        return Broadcasts(self.meta, self.segments, self.outbound, self.profiles, domain=self.domain,
                          snapshot=self.snapshot, wake=self.wake, current_members=self.current_members,
                          compile_definition=self.compile_definition, member_table=self.member_table)

    @cached_property
    def transport(self) -> Transport:
        return transport_from_settings(self.settings)

    @cached_property
    def dispatcher(self) -> Dispatcher:
        return Dispatcher(self.outbound, self.recipients, self.profiles, self.transport, self.links,
                          lease=self.lease, chunk=self.chunk, default_from=self.default_from)

    def close(self) -> None:
        """Release the dispatcher, then the transport (whichever were created); the runtime calls it
        on stop, after the send worker stopped."""
        for name in ("dispatcher", "transport"):
            if name in self.__dict__:
                self.__dict__[name].close()
