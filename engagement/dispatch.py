"""Rendering and handing off claimed sends: the only code that gives bytes to a transport.

One chunk at a time: claim a ``send`` job (engine.jobs; its lease is renewed from a side thread
while the chunk runs) and take up to ``chunk`` of its sends (durable ``handing_off`` intent,
engagement/outbound.py), look up the recipients' profiles and subscription state in a few batched
queries, render, hand each message to the transport, settle the whole chunk with the job in one
transaction. A crash anywhere in between leaves a job whose lease lapses with ``handing_off`` rows,
which its next holder settles by asking the transport (``was_delivered``), so nothing is handed
off twice and, with the outbox, nothing is lost.
"""
from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from html import unescape

from common.time import utc_now
from engine.jobs import Lease, worker_identity
from engagement import mime
from engagement.common import SendsError, loads
from engagement.outbound import KIND, MAX_ATTEMPTS, Outbound, Outcome, lease_of, recovered
from engagement.profiles import ProfileDirectory
from engagement.recipients import Recipients, Signer, valid_address
from engagement.templates import CompiledContent, merge_context
from engagement.transport import Outgoing, PermanentError, TransientError, Transport

log = logging.getLogger(__name__)

_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"']+)\2""", re.IGNORECASE)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
HAND_OFF_SLICE = 50  # messages per send_many call


class Links:
    """The signed recipient-facing URLs that go into an email."""

    def __init__(self, signer: Signer, base_url: str):
        self.signer = signer
        self.base = base_url.rstrip("/")
        self._unsubscribe_prefix = f"{self.base}/api/recipients/unsubscribe/"

    def unsubscribe(self, tenant_id: int, address: str, topic: str, send_id: int) -> str:
        return f"{self._unsubscribe_prefix}{self.signer.sign([tenant_id, address, topic, send_id])}/"

    def open_pixel(self, tenant_id: int, send_id: int) -> str:
        return f"{self.base}/api/recipients/open/{self.signer.sign([tenant_id, send_id])}.gif"

    def click(self, tenant_id: int, send_id: int, url: str) -> str:
        return f"{self.base}/api/recipients/click/{self.signer.sign([tenant_id, send_id, url])}/"

    def track_html(self, html: str, tenant_id: int, send_id: int) -> str:
        """Links -> signed click redirects (unsubscribe links stay direct), plus an open pixel."""
        def rewrite(match: re.Match) -> str:
            url = unescape(match.group(3))
            if url.startswith(self._unsubscribe_prefix):
                return match.group(0)
            return f"{match.group(1)}{match.group(2)}{self.click(tenant_id, send_id, url)}{match.group(2)}"

        html = _HREF.sub(rewrite, html)
        pixel = f'<img src="{self.open_pixel(tenant_id, send_id)}" width="1" height="1" alt="" style="display:none">'
        return _before_body_end(html, pixel)


class Dispatcher:
    def __init__(self, outbound: Outbound, recipients: Recipients, profiles: ProfileDirectory,
                 transport: Transport, links: Links, *, lease: timedelta, chunk: int = 500,
                 default_from: str):
        self.outbound = outbound
        self.jobs = outbound.jobs
        self.recipients = recipients
        self.profiles = profiles
        self.transport = transport
        self.links = links
        self.lease = lease
        self.chunk = chunk
        self.default_from = default_from
        self.owner = worker_identity()
        self._compiled: dict[int, CompiledContent] = {}
        # One thread hands slices to the transport in order while the caller renders the next.
        self._lane = ThreadPoolExecutor(1, thread_name_prefix="segops-hand-off")

    def close(self) -> None:
        self._lane.shutdown()

    # -- entry points ------------------------------------------------------------------
    def run_once(self) -> int:
        """Run one chunk of the oldest due send job; returns how many sends it took or settled (0: none due)."""
        while leases := self.jobs.claim(KIND, self.lease, owner=self.owner):
            if done := self._run(leases[0]):
                return done
        return 0  # (the jobs claimed had nothing left to take: done)

    def deliver(self, send_ids: Sequence[int]) -> None:
        """Hand off these sends now if they are still queued (the API's inline path): run their jobs
        here unless a worker took them first."""
        for job_id in self.outbound.queued_jobs(send_ids):
            while (lease := self.jobs.claim_id(job_id, self.lease, self.owner)) is not None and self._run(lease):
                pass

    def recover(self) -> int:
        """Settle the hand-offs of send jobs whose holder died (lease lapsed); returns how many were settled."""
        settled = 0
        for job_id in self.jobs.lapsed(KIND):
            if self.outbound.handing_off(job_id) and (lease := self.jobs.claim_id(job_id, self.lease, self.owner)):
                settled += self._run(lease, recovery_only=True)
        return settled

    def hand_off(self, items: list[tuple]) -> list[BaseException | None]:
        """Record the recipients and subjects of these rendered messages (row, subject, address,
        Outgoing) of one job, then give them to the transport; per message None or the transport's
        error. Nothing is handed off once the job's lease is lost (``LeaseLost``)."""
        intents = [(row["id"], address, subject) for row, subject, address, _ in items]
        if not self.outbound.record_intent(lease_of(items[0][0]), intents):
            return [LeaseLost()] * len(items)
        return self.transport.send_many([item[3] for item in items])

    def _run(self, lease: Lease, *, recovery_only: bool = False) -> int:
        """One round of a claimed send job under its lease: if a dead holder left hand-offs, settle
        them by asking the transport (recovery); otherwise take and hand off up to ``chunk`` of its
        sends. Returns how many sends were settled or taken."""
        with self.jobs.keep_alive(lease, self.lease, self.lease.total_seconds() / 3):
            stale = self.outbound.handing_off(lease.job_id)
            if stale or recovery_only:
                outcomes = []
                for row in stale:
                    delivered = self.transport.was_delivered(row["message_id"])
                    outcomes.append(recovered(row, delivered))
                    log.warning("recovered hand-off of send %s (%s): %s", row["id"], row["message_id"],
                                {True: "sent", False: "re-queued", None: "unknown"}[delivered])
                return self.outbound.settle(lease, outcomes)
            rows = self.outbound.take(lease, self.chunk)
            if rows:
                self._process(lease, rows)
            else:
                self.outbound.settle(lease, [])  # nothing left to take: the job is done
            return len(rows)

    # -- processing --------------------------------------------------------------------
    def _content(self, content_id: int) -> CompiledContent:
        compiled = self._compiled.get(content_id)
        if compiled is None:
            if len(self._compiled) > 256:
                self._compiled.clear()
            compiled = self._compiled[content_id] = CompiledContent(self.outbound.content(content_id))
        return compiled

    def _process(self, lease: Lease, rows: list) -> None:
        """Render the chunk while a lane thread hands rendered slices to the transport, then
        settle every row with the job in one transaction."""
        outcomes: list[Outcome] = []
        hand_off = _HandOff(self._lane, self.hand_off)
        date = utc_now()
        by_tenant: dict[int, list] = defaultdict(list)
        for row in rows:
            by_tenant[row["tenant_id"]].append(row)
        for tenant_id, tenant_rows in by_tenant.items():
            traits = self.profiles.traits(tenant_id, [r["user_id"] for r in tenant_rows if r["user_id"]])
            plans = []
            for row in tenant_rows:
                profile = traits.get(row["user_id"], {}) if row["user_id"] else {}
                address = row["to_address"] or valid_address(profile.get("email"))
                try:
                    compiled = self._content(row["content_id"])
                except SendsError as err:  # content that does not compile fails its sends, not the worker
                    outcomes.append(Outcome(row["id"], "failed", f"template error: {err}", to_address=address))
                    continue
                topic = compiled.content.topic if compiled.content.purpose == "marketing" else None
                plans.append((row, compiled, profile, address, topic))
            blocked = self.recipients.blocked(tenant_id, [(a, t) for _, _, _, a, t in plans if a])
            for row, compiled, profile, address, topic in plans:
                if address is None:
                    outcomes.append(Outcome(row["id"], "failed", "the recipient has no valid email address"))
                elif (address, topic) in blocked:
                    outcomes.append(Outcome(row["id"], blocked[(address, topic)], to_address=address))
                else:
                    built = self._render(tenant_id, row, compiled, profile, address, date)
                    if isinstance(built, Outcome):
                        outcomes.append(built)
                    else:
                        hand_off.add(built)
        for (row, subject, address, _), error in hand_off.results():
            if isinstance(error, LeaseLost):
                log.warning("send job %s lost its lease mid-chunk; its next holder settles the chunk", lease.job_id)
                return
            outcomes.append(self._outcome(row, subject, address, error))
        self.outbound.settle(lease, outcomes)

    def _render(self, tenant_id: int, row, compiled: CompiledContent, profile: dict, address: str, date):
        """(row, subject, address, Outgoing) ready to hand off, or the Outcome of a template error."""
        content = compiled.content
        send_id = row["id"]
        marketing = content.purpose == "marketing"
        unsubscribe = self.links.unsubscribe(tenant_id, address, content.topic, send_id)
        context = merge_context(profile, loads(row["data"], {}), email=address, user_id=row["user_id"],
                                unsubscribe_url=unsubscribe, brand=compiled.brand)
        try:
            subject, html, text = compiled.render(context)
        except Exception as err:  # a tenant's template failed at runtime (sandbox refusal, bad filter...)
            return Outcome(send_id, "failed", f"template error: {type(err).__name__}: {err}", to_address=address)
        if marketing and not compiled.uses_unsubscribe_url:
            if html:
                html = self._with_footer(html, unsubscribe)
            if text:
                text = f"{text}\n\nUnsubscribe: {unsubscribe}\n"
        if html:
            html = self.links.track_html(html, tenant_id, send_id)
        headers = {}
        if marketing:
            headers["List-Unsubscribe"] = f"<{unsubscribe}>"
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        if content.reply_to:
            headers["Reply-To"] = content.reply_to
        sender_email = content.from_email or self.default_from
        data = mime.build_message(message_id=row["message_id"], sender=mime.address(content.from_name, sender_email),
                                  to=address, subject=subject, text=text, html=html, date=date, extra_headers=headers)
        return row, subject, address, Outgoing(row["message_id"], sender_email, address, data)

    @staticmethod
    def _outcome(row, subject: str, address: str, error: BaseException | None) -> Outcome:
        send_id = row["id"]
        if error is None:
            return Outcome(send_id, "sent", None, subject, address)
        if isinstance(error, TransientError):
            if row["attempts"] >= MAX_ATTEMPTS:
                return Outcome(send_id, "failed", f"gave up after {row['attempts']} attempts: {error}", subject, address)
            return Outcome(send_id, "queued", str(error), to_address=address,
                           retry_after=min(600, 2 ** row["attempts"]))
        if isinstance(error, PermanentError):
            return Outcome(send_id, "failed", str(error), subject, address)
        log.error("hand-off of send %s ended without a clear answer: %r", send_id, error)
        return Outcome(send_id, "unknown", f"hand-off outcome unknown ({type(error).__name__}: {error}); not retried "
                                           f"to avoid a duplicate", subject, address)

    @staticmethod
    def _with_footer(html: str, unsubscribe: str) -> str:
        footer = (f'<p style="font-size:12px;color:#888">You receive this because you subscribed. '
                  f'<a href="{unsubscribe}">Unsubscribe</a></p>')
        return _before_body_end(html, footer)


def _before_body_end(html: str, snippet: str) -> str:
    """``snippet`` inserted before the last ``</body>`` (appended when there is none)."""
    ends = list(_BODY_END.finditer(html))
    if ends:
        at = ends[-1].start()
        return f"{html[:at]}{snippet}{html[at:]}"
    return html + snippet


class LeaseLost(Exception):
    """A slice not handed off: its job's lease was lost (its next holder owns those sends now)."""


class _HandOff:
    """A chunk's rendered messages, handed off (``Dispatcher.hand_off``) slice by slice on the lane
    thread (in order) as soon as each slice is full, so rendering and writing overlap."""

    def __init__(self, lane: ThreadPoolExecutor, hand_off: Callable[[list[tuple]], list[BaseException | None]]):
        self.lane = lane
        self.hand_off = hand_off
        self.items: list[tuple] = []  # (row, subject, address, Outgoing)
        self.slices: list[tuple[list[tuple], Future]] = []
        self.submitted = 0

    def add(self, item: tuple) -> None:
        self.items.append(item)
        if len(self.items) - self.submitted >= HAND_OFF_SLICE:
            self._submit()

    def _submit(self) -> None:
        batch = self.items[self.submitted:]
        self.submitted = len(self.items)
        self.slices.append((batch, self.lane.submit(self.hand_off, batch)))

    def results(self) -> Iterator[tuple[tuple, BaseException | None]]:
        """(item, transport answer) in order (the job's lease is renewed meanwhile: ``keep_alive``)."""
        if self.submitted < len(self.items):
            self._submit()
        for batch, future in self.slices:
            yield from zip(batch, future.result())
