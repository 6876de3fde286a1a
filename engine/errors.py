"""What the engine raises when a request cannot be served: a ``DomainError`` of one kind (a class).

The kind says why (bad input, missing, conflicting, ...); the HTTP status of each kind is decided in
one place only, ``api/errors.py``. ``field`` names the offending input (the message is then shown as
``"<field>: <message>"`` and listed under the field); ``fields`` lists several at once; ``retry_after``
is how many seconds a retry should wait.
"""
from __future__ import annotations


class DomainError(Exception):
    def __init__(self, message: str, *, code: str, field: str | None = None,
                 fields: dict[str, list[str]] | None = None, retry_after: int | None = None):
        self.message = message
        self.code = code
        self.field = field
        self.fields = fields if fields is not None else ({field: [message]} if field is not None else {})
        self.retry_after = retry_after
        self.detail = f"{field}: {message}" if field is not None else message
        super().__init__(self.detail)


class InvalidInput(DomainError):
    """The request is malformed or names something unusable."""


class TooLarge(InvalidInput):
    """The request (or a part of it) exceeds a size limit."""


class UnsupportedMedia(InvalidInput):
    """The content type is not the one accepted or declared."""


class Unprocessable(DomainError):
    """Well-formed, but cannot be processed as it stands (e.g. a profile without an address)."""


class NotAuthenticated(DomainError):
    """A credential is missing or was rejected."""


class Forbidden(DomainError):
    """The credential may not do this."""


class NotFound(DomainError):
    """A missing id, or another tenant's id (indistinguishable on purpose)."""

    def __init__(self, kind: str, ident: object = None, *, code: str = "not_found", message: str | None = None):
        super().__init__(message or f"No {kind}{'' if ident is None else f' {ident}'}.", code=code)
        self.kind = kind
        self.ident = ident


class Conflict(DomainError):
    """Conflicts with the current state of the resource."""


class Gone(DomainError):
    """Existed, but is no longer kept."""


class RateLimited(DomainError):
    """A limit is spent: ``limit`` per window, ``remaining`` now, ``reset`` seconds until it is full again."""

    def __init__(self, message: str, *, limit: int, remaining: int, reset: int, retry_after: int,
                 code: str = "rate_limited"):
        super().__init__(message, code=code, retry_after=retry_after)
        self.limit = limit
        self.remaining = remaining
        self.reset = reset


class Unavailable(DomainError):
    """Cannot serve this now; retry (after ``retry_after`` seconds when given)."""


__all__ = ["DomainError", "InvalidInput", "TooLarge", "UnsupportedMedia", "Unprocessable", "NotAuthenticated",
           "Forbidden", "NotFound", "Conflict", "Gone", "RateLimited", "Unavailable"]
