"""Where finished messages go: the outbox directory (default) or an SMTP server.

The hand-off contract every transport keeps (see engagement/dispatch.py for the protocol):
  * ``send(msg)`` returns normally only when the message was accepted (or, for an idempotent
    transport, had already been accepted before under the same Message-ID);
  * it raises ``TransientError`` only when the message certainly did not go out and may be
    retried, ``PermanentError`` when it certainly did not go out and never will;
  * anything else (e.g. the SMTP connection dropped after DATA) means "may or may not have gone
    out": the send is marked ``unknown`` for an operator, never retried blindly.
  * ``was_delivered(message_id)``: True/False if the transport can tell, None if it cannot.
    After a crash between hand-off and bookkeeping, a True/False answer settles the send
    exactly; None (SMTP) leaves it ``unknown``.
"""
from __future__ import annotations

import os
import re
import smtplib
import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse


class TransientError(Exception):
    """Certainly not sent; retry later."""


class PermanentError(Exception):
    """Certainly not sent; retrying will not help (e.g. the server refused the recipient)."""


@dataclass(frozen=True)
class Outgoing:
    message_id: str      # without angle brackets
    envelope_from: str
    envelope_to: str
    data: bytes


class Transport(ABC):
    name: str = "transport"

    @abstractmethod
    def send(self, msg: Outgoing) -> None: ...

    def send_many(self, msgs: list[Outgoing]) -> list[BaseException | None]:
        """Hand off several messages; per message None (accepted) or the exception ``send`` raised."""
        out: list[BaseException | None] = []
        for msg in msgs:
            try:
                self.send(msg)
                out.append(None)
            except Exception as err:
                out.append(err)
        return out

    @abstractmethod
    def was_delivered(self, message_id: str) -> bool | None: ...

    def close(self) -> None:
        """Release connections (called when the runtime stops)."""


_UNSAFE = re.compile(r"[^A-Za-z0-9._@-]")


def outbox_filename(message_id: str) -> str:
    """A message's file in the outbox (Message-IDs we mint, ``<hex>@<domain>``, are kept as they are)."""
    return f"{_UNSAFE.sub('_', message_id.lstrip('.'))}.eml"


class OutboxTransport(Transport):
    """One ``.eml`` file per message, named by its Message-ID and created atomically: the bytes are
    written to a temporary file and hard-linked into place (``link`` fails if the name exists), so
    a file under its final name is always complete and a second hand-off of the same Message-ID
    is a no-op. That makes this transport exactly-once across crashes.

    ``send_many`` writes with a few threads: creating files is latency-bound (the filesystem
    journal), the GIL is released meanwhile, so overlapping them multiplies throughput."""

    name = "outbox"
    THREADS = 8

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.tmp = self.dir / ".tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._dir = str(self.dir)
        self._tmp = str(self.tmp)
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def path_of(self, message_id: str) -> Path:
        return self.dir / outbox_filename(message_id)

    def send_many(self, msgs: list[Outgoing]) -> list[BaseException | None]:
        if len(msgs) < 2:
            return super().send_many(msgs)
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.THREADS, thread_name_prefix="segops-outbox")
        return list(self._pool.map(self._try_send, msgs))

    def _try_send(self, msg: Outgoing) -> BaseException | None:
        try:
            self.send(msg)
        except Exception as err:
            return err
        return None

    def send(self, msg: Outgoing) -> None:
        name = outbox_filename(msg.message_id)
        final = os.path.join(self._dir, name)
        tmp = os.path.join(self._tmp, f"{name}.{os.getpid()}.{threading.get_ident()}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(msg.data)
            try:
                os.link(tmp, final)
            except FileExistsError:
                pass  # handed off before (by us, before a crash, or by a racing worker)
        except OSError as err:
            raise TransientError(f"outbox write failed: {err}") from err
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def was_delivered(self, message_id: str) -> bool:
        return self.path_of(message_id).exists()

    def close(self) -> None:
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None


class SmtpTransport(Transport):
    """smtplib over one kept-open connection per thread (reconnected on demand)."""

    name = "smtp"

    def __init__(self, url: str, timeout: float = 30.0):
        parsed = urlparse(url)
        if parsed.scheme not in ("smtp", "smtps"):
            raise ValueError(f"SMTP URL must be smtp://host:port or smtps://host:port, got {url!r}")
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or (465 if parsed.scheme == "smtps" else 25)
        self.ssl = parsed.scheme == "smtps"
        self.username = parsed.username
        self.password = parsed.password
        self.timeout = timeout
        self._local = threading.local()
        self._all: list[smtplib.SMTP] = []
        self._lock = threading.Lock()

    def _connection(self) -> smtplib.SMTP:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            try:
                if conn.noop()[0] == 250:
                    return conn
            except smtplib.SMTPException:
                pass
            except OSError:
                pass
            self._drop(conn)
        try:
            cls = smtplib.SMTP_SSL if self.ssl else smtplib.SMTP
            conn = cls(self.host, self.port, timeout=self.timeout)
            if self.username:
                conn.login(self.username, self.password or "")
        except (OSError, smtplib.SMTPException) as err:
            raise TransientError(f"cannot connect to SMTP {self.host}:{self.port}: {err}") from err
        self._local.conn = conn
        with self._lock:
            self._all.append(conn)
        return conn

    def _drop(self, conn: smtplib.SMTP) -> None:
        self._local.conn = None
        with self._lock:
            if conn in self._all:
                self._all.remove(conn)
        try:
            conn.close()
        except OSError:
            pass

    def send(self, msg: Outgoing) -> None:
        conn = self._connection()
        try:
            refused = conn.sendmail(msg.envelope_from, [msg.envelope_to], msg.data)
        except smtplib.SMTPRecipientsRefused as err:
            code, reply = next(iter(err.recipients.values()))
            raise (TransientError if 400 <= code < 500 else PermanentError)(f"{code} {reply!r}") from err
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as err:
            # Refused with a reply code: the server did not take the message.
            raise (TransientError if 400 <= err.smtp_code < 500 else PermanentError)(
                f"{err.smtp_code} {err.smtp_error!r}") from err
        except (smtplib.SMTPServerDisconnected, OSError):
            self._drop(conn)
            raise  # outcome unknown: the server may have queued it before dropping us
        if refused:
            code, reply = refused[msg.envelope_to]
            raise PermanentError(f"{code} {reply!r}")

    def was_delivered(self, message_id: str) -> None:
        return None  # SMTP cannot be asked whether it accepted a message earlier

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.quit()
            except (OSError, smtplib.SMTPException):
                pass


def transport_from_settings(settings) -> Transport:
    if settings.smtp_url:
        return SmtpTransport(settings.smtp_url)
    return OutboxTransport(settings.outbox_dir)
