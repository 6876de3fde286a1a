"""What recipients do with an email: one-click unsubscribe, opens, clicks.

None of these requests carries a login; each carries a signed token (engagement/recipients.py)
minted when the email was rendered. Opens and clicks are counted on the EmailSend and recorded
as ``email_opened`` / ``email_clicked`` events through the ingest service's write-ahead log, so
they land in the lake like any tracked event (and can trigger journeys).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from common.time import now_us
from engine.ingest.parse import EventColumns
from engagement.common import NotFound

if TYPE_CHECKING:
    from engine.ingest.feed import EventFeed
    from engagement.outbound import Outbound
    from engagement.recipients import Recipients, Signer

log = logging.getLogger(__name__)


class Engagement:
    def __init__(self, meta, signer: Signer, recipients: Recipients, outbound: Outbound, *,
                 submit: Callable[..., Any], feed: EventFeed, read_only: bool):
        """``submit(tenant_id, columns, received)``: ingest's write-ahead submit (a future of its
        outcome); ``feed``: where accepted events go on to their consumers (journeys)."""
        self.meta = meta
        self.signer = signer
        self.recipients = recipients
        self.outbound = outbound
        self.submit = submit
        self.feed = feed
        self.read_only = read_only

    def unsubscribe_target(self, token: str) -> tuple[int, str, str, int]:
        """(tenant_id, address, topic, send_id) a valid unsubscribe token names; NotFound otherwise."""
        payload = self.signer.verify(token)
        if payload is None or len(payload) != 4:
            raise NotFound("unsubscribe link", "")
        tenant_id, address, topic, send_id = payload
        return int(tenant_id), str(address), str(topic), int(send_id)

    def unsubscribe(self, token: str, source: str) -> dict[str, Any]:
        """Takes effect at once: the next claim of any queued send to this address skips it."""
        tenant_id, address, topic, _ = self.unsubscribe_target(token)
        self.recipients.set_subscription(tenant_id, address, topic, "unsubscribed", source)
        return {"email": address, "topic": topic, "status": "unsubscribed"}

    def _send_row(self, tenant_id: int, send_id: int):
        return self.meta.query_one("SELECT * FROM email_sends WHERE id = ? AND tenant_id = ?", (send_id, tenant_id))

    def opened(self, token: str) -> None:
        """Count an open; an invalid token is ignored (the pixel is served regardless)."""
        payload = self.signer.verify(token)
        if payload is None or len(payload) != 2:
            return
        tenant_id, send_id = int(payload[0]), int(payload[1])
        row = self._send_row(tenant_id, send_id)
        if row is not None:
            self.outbound.record_engagement(send_id, "open")
            self._record_event(tenant_id, row, "email_opened", {})

    def clicked(self, token: str) -> str:
        """The link's target after counting the click; NotFound for a token we did not sign."""
        payload = self.signer.verify(token)
        if payload is None or len(payload) != 3 or not str(payload[2]).startswith(("https://", "http://")):
            raise NotFound("link", "")
        tenant_id, send_id, url = int(payload[0]), int(payload[1]), str(payload[2])
        row = self._send_row(tenant_id, send_id)
        if row is not None:
            self.outbound.record_engagement(send_id, "click")
            self._record_event(tenant_id, row, "email_clicked", {"url": url})
        return url

    def _record_event(self, tenant_id: int, row, event_type: str, extra: dict[str, Any]) -> None:
        """Best effort: an engagement event never fails the recipient's request."""
        if not row["user_id"] or self.read_only:
            return
        properties = {"message_id": row["message_id"], "send_id": row["id"], "template_id": row["template_id"],
                      "source": row["source"], "source_id": row["source_id"], **extra}
        received = now_us()
        columns = EventColumns(event_ids=[None], user_ids=[row["user_id"]], event_types=[event_type],
                               occurred_at=[received], properties=[orjson.dumps(properties)])
        try:
            outcome = self.submit(tenant_id, columns, received).result(timeout=30)
            if outcome.accepted:
                self.feed.accepted(tenant_id, outcome.events)
        except Exception:
            log.exception("could not record %s for send %s", event_type, row["id"])
