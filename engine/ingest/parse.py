"""Parsing and validating ingest request bodies: bytes in, column lists out.

This is the per-event hot path of ``POST /api/events/`` (target: >= 100k events/s
on two cores, on the event loop's thread). A valid batch is decoded by msgspec
against a typed model (ids, lengths and unknown fields checked in C, about half the
time of orjson plus a Python loop); anything it rejects, and single items, go through
the reference validator, a loop over the orjson-parsed items that names every bad
field. Both give the same columns for every body the reference accepts
(``tests/test_ingest_parse_fast.py``); ``benchmarks/bench_ingest.py`` measures it.

Contract (the router documents the same in OpenAPI):

* Body: one item object, or ``{"batch": [item, ...]}`` with 1..10,000 items and at
  most 4 MiB. Track items: ``user_id`` (string, required), ``event_type`` (string,
  required), ``event_id`` (string, optional client message id: the dedup key),
  ``occurred_at`` (ISO 8601 string with ``Z`` or an offset; optional, defaults to the
  receive time), ``properties`` (object, optional). Identify items: ``user_id``,
  ``traits`` (object, required), ``occurred_at`` (optional: when the traits were
  true; the latest wins per trait).
* A timestamp without a zone is rejected (``invalid_timestamp``): guessing UTC would
  silently shift events sent in local time. So is one whose instant is outside years
  1-9999 once in UTC (``compiler.timestamps``: the lake could not store it).
* All-or-nothing: any invalid item rejects the whole batch; every bad field is named
  (``batch[3].user_id``), up to ``MAX_REPORTED_ERRORS`` of them. Nothing is written.
* An item is at most 32 KiB as compact JSON (413 ``event_too_large``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Annotated

import msgspec
import orjson

from compiler.timestamps import MAX_US, MIN_US, InstantOutOfRange, epoch_us
from engine.errors import InvalidInput, TooLarge

MAX_BATCH_BYTES = 4 * 1024 * 1024
MAX_BATCH_ITEMS = 10_000
MAX_EVENT_BYTES = 32 * 1024
MAX_ID_CHARS = 256
MAX_REPORTED_ERRORS = 100

TRACK_FIELDS = frozenset({"event_id", "user_id", "event_type", "occurred_at", "properties"})
IDENTIFY_FIELDS = frozenset({"user_id", "traits", "occurred_at"})

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)
_fromiso = datetime.fromisoformat
_dumps = orjson.dumps


class IngestError(InvalidInput):
    """A rejected request body. ``fields``: field path -> messages (the error envelope)."""

    def __init__(self, code: str, detail: str, fields: dict[str, list[str]] | None = None):
        super().__init__(detail, code=code, fields=fields or {})


class IngestTooLarge(IngestError, TooLarge):
    """A body, batch or event over its size limit."""


@dataclass
class EventColumns:
    """Validated track events of one request, column-wise. ``event_ids`` holds None
    where the client sent no id (the committer assigns one)."""

    event_ids: list[str | None] = field(default_factory=list)
    user_ids: list[str] = field(default_factory=list)
    event_types: list[str] = field(default_factory=list)
    occurred_at: list[int] = field(default_factory=list)  # microseconds since the epoch, UTC
    properties: list[bytes] = field(default_factory=list)  # JSON object text

    def __len__(self) -> int:
        return len(self.user_ids)


@dataclass
class ProfileColumns:
    user_ids: list[str] = field(default_factory=list)
    traits: list[bytes] = field(default_factory=list)
    updated_at: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.user_ids)


class _Errors:
    """Collects (path, code, message) for an all-or-nothing rejection."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, str]] = []

    def add(self, path: str, code: str, message: str) -> None:
        self.items.append((path, code, message))

    def raise_if_any(self, total_items: int) -> None:
        if not self.items:
            return
        too_large = [e for e in self.items if e[1] == "event_too_large"]
        error, (path, code, message) = (IngestTooLarge, too_large[0]) if too_large else (IngestError, self.items[0])
        fields: dict[str, list[str]] = {}
        for p, _, m in self.items[:MAX_REPORTED_ERRORS]:
            fields.setdefault(p, []).append(m)
        bad_items = len({p.split(".", 1)[0] for p, _, _ in self.items})
        detail = f"{path}: {message}"
        if len(self.items) > 1:
            shown = min(len(self.items), MAX_REPORTED_ERRORS)
            detail += (f" ({len(self.items)} errors in {bad_items} of {total_items} items; "
                       f"{shown} listed; nothing was accepted)")
        raise error(code, detail, fields)


def _items(body: bytes) -> tuple[list, str]:
    """The list of items and the path prefix ('batch' or '' for a single item)."""
    if len(body) > MAX_BATCH_BYTES:
        raise IngestTooLarge("batch_too_large", f"body: request body exceeds {MAX_BATCH_BYTES} bytes",
                          {"body": [f"at most {MAX_BATCH_BYTES} bytes"]})
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise IngestError("malformed_json", f"body: malformed JSON ({exc})",
                          {"body": ["malformed JSON"]}) from None
    if type(doc) is not dict:
        raise IngestError("invalid_type", "body: must be a JSON object (an item or {\"batch\": [...]})",
                          {"body": ["must be a JSON object"]})
    if "batch" not in doc:
        return [doc], ""
    extra = sorted(k for k in doc if k != "batch")
    if extra:
        raise IngestError("unknown_field", f"{extra[0]}: unknown field next to batch",
                          {k: ["unknown field"] for k in extra})
    items = doc["batch"]
    if type(items) is not list:
        raise IngestError("invalid_type", "batch: must be an array", {"batch": ["must be an array"]})
    if not items:
        raise IngestError("empty_batch", "batch: must hold at least one item",
                          {"batch": ["must hold at least one item"]})
    if len(items) > MAX_BATCH_ITEMS:
        raise IngestTooLarge("batch_too_many_events",
                          f"batch: {len(items)} items; at most {MAX_BATCH_ITEMS} per request",
                          {"batch": [f"at most {MAX_BATCH_ITEMS} items"]})
    return items, "batch"


def _check_id(value, path: str, name: str, errors: _Errors) -> None:
    """Error for a bad required id-like string (called only off the fast path)."""
    if value is None:
        errors.add(path, "missing_field", f"{name} is required")
    elif type(value) is not str:
        errors.add(path, "invalid_type", f"{name} must be a string")
    elif not value:
        errors.add(path, "invalid_value", f"{name} must not be empty")
    else:
        errors.add(path, "invalid_value", f"{name} must be at most {MAX_ID_CHARS} characters")


def _timestamp(value, path: str, errors: _Errors) -> int | None:
    if type(value) is not str:
        errors.add(path, "invalid_type", "must be an ISO 8601 string such as 2026-04-25T14:32:00Z")
        return None
    try:
        moment = _fromiso(value)
    except ValueError:
        errors.add(path, "invalid_timestamp", "not an ISO 8601 timestamp (e.g. 2026-04-25T14:32:00Z)")
        return None
    if moment.tzinfo is None:
        errors.add(path, "invalid_timestamp", "timestamp needs a zone: Z or an offset such as +02:00")
        return None
    try:
        return epoch_us(moment)
    except InstantOutOfRange as err:
        errors.add(path, "invalid_timestamp", str(err))
        return None


def _size_ok(item: dict, known_bytes: int, strings: tuple) -> bool:
    """Is the item at most MAX_EVENT_BYTES as compact JSON? A cheap upper bound first
    (6 bytes per character covers \\u escapes); serialize only near the limit."""
    bound = known_bytes + 160 + 6 * sum(len(s) for s in strings if type(s) is str)
    return bound <= MAX_EVENT_BYTES or len(_dumps(item)) <= MAX_EVENT_BYTES


# Below this many bytes of properties JSON a track item with valid fields (each at most
# MAX_ID_CHARS characters, a timestamp of at most 64) cannot exceed MAX_EVENT_BYTES.
_SURELY_SMALL = MAX_EVENT_BYTES - 160 - 6 * (3 * MAX_ID_CHARS + 64)


_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_CHARS)]


class _TrackItem(msgspec.Struct, forbid_unknown_fields=True):
    user_id: _Id
    event_type: _Id
    event_id: _Id | None = None
    occurred_at: str | None = None
    properties: dict | None = None


class _TrackBatch(msgspec.Struct, forbid_unknown_fields=True):
    batch: Annotated[list[_TrackItem], msgspec.Meta(min_length=1, max_length=MAX_BATCH_ITEMS)]


_decode_track_batch = msgspec.json.Decoder(_TrackBatch).decode


def parse_track(body: bytes, received_us: int) -> EventColumns:
    """Validate a track body; raises IngestError naming every bad field."""
    if len(body) <= MAX_BATCH_BYTES and body[:12].lstrip().startswith(b'{"batch"'):
        try:
            return _parse_track_batch(body, received_us)
        except Exception:  # anything unusual: the reference validator decides and explains
            pass
    return parse_track_checked(body, received_us)


def _parse_track_batch(body: bytes, received_us: int) -> EventColumns:
    """The fast path: raises on anything the reference validator might treat differently."""
    items = _decode_track_batch(body).batch
    fromiso, epoch, us, dumps = _fromiso, _EPOCH, _US, _dumps
    occurred = []
    for item in items:
        raw = item.occurred_at
        if raw is None:
            occurred.append(received_us)
            continue
        moment = fromiso(raw)
        if moment.tzinfo is None or len(raw) > 64:
            raise ValueError("left to the reference validator")
        occurred.append((moment - epoch) // us)
    if min(occurred) < MIN_US or max(occurred) > MAX_US:  # the lake's range, checked for the batch at once
        raise ValueError("left to the reference validator")
    props = [b"{}" if item.properties is None else dumps(item.properties) for item in items]
    if max(map(len, props)) > _SURELY_SMALL:  # near the size limit: measured exactly there
        raise ValueError("left to the reference validator")
    return EventColumns([item.event_id for item in items], [item.user_id for item in items],
                        [item.event_type for item in items], occurred, props)


def parse_track_checked(body: bytes, received_us: int) -> EventColumns:
    """The reference validator of a track body: raises IngestError naming every bad field.

    The loop is written for speed (a few microseconds per event): exact type checks,
    locals only, and the slow error reporting kept out of the valid path."""
    items, prefix = _items(body)
    out = EventColumns()
    ids, users, types, occurred, props = out.event_ids, out.user_ids, out.event_types, out.occurred_at, out.properties
    errors = _Errors()
    allowed, max_id, fromiso, to_us, dumps = TRACK_FIELDS, MAX_ID_CHARS, _fromiso, epoch_us, _dumps
    for index, item in enumerate(items):
        if type(item) is not dict:
            errors.add(f"{prefix}[{index}]" if prefix else "body", "invalid_type", "must be an object")
            continue
        ok = True
        base = ""
        if not allowed.issuperset(item):
            ok, base = False, f"{prefix}[{index}]." if prefix else ""
            for key in sorted(k for k in item if k not in allowed):
                errors.add(base + key, "unknown_field", "unknown field")
        user_id = item.get("user_id")
        if type(user_id) is not str or not 0 < len(user_id) <= max_id:
            ok, base = False, f"{prefix}[{index}]." if prefix else ""
            _check_id(user_id, base + "user_id", "user_id", errors)
        event_type = item.get("event_type")
        if type(event_type) is not str or not 0 < len(event_type) <= max_id:
            ok, base = False, f"{prefix}[{index}]." if prefix else ""
            _check_id(event_type, base + "event_type", "event_type", errors)
        event_id = item.get("event_id")
        if event_id is not None and (type(event_id) is not str or not 0 < len(event_id) <= max_id):
            ok, base = False, f"{prefix}[{index}]." if prefix else ""
            _check_id(event_id, base + "event_id", "event_id", errors)
        raw_ts = item.get("occurred_at")
        ts = received_us
        if raw_ts is not None:
            try:
                moment = fromiso(raw_ts)
                if moment.tzinfo is None:
                    raise TypeError
                ts = to_us(moment)
            except (TypeError, ValueError):  # InstantOutOfRange is a ValueError
                ok = False
                _timestamp(raw_ts, (f"{prefix}[{index}]." if prefix else "") + "occurred_at", errors)
        properties = item.get("properties")
        if type(properties) is dict:
            text = dumps(properties)
        elif properties is None:
            text = b"{}"
        else:
            ok = False
            errors.add((f"{prefix}[{index}]." if prefix else "") + "properties", "invalid_type", "must be an object")
            text = b"{}"
        if (len(text) > _SURELY_SMALL or not ok or (type(raw_ts) is str and len(raw_ts) > 64)) and not _size_ok(
                item, len(text), (user_id, event_type, event_id, raw_ts)):
            errors.add(f"{prefix}[{index}]" if prefix else "body", "event_too_large",
                       f"event is larger than {MAX_EVENT_BYTES} bytes as JSON")
        ids.append(event_id)
        users.append(user_id)
        types.append(event_type)
        occurred.append(ts)
        props.append(text)
    errors.raise_if_any(len(items))
    return out


def parse_identify(body: bytes, received_us: int) -> ProfileColumns:
    """Validate an identify body (profile traits); raises IngestError naming every bad field."""
    items, prefix = _items(body)
    out = ProfileColumns()
    errors = _Errors()
    for index, item in enumerate(items):
        if type(item) is not dict:
            errors.add(f"{prefix}[{index}]" if prefix else "body", "invalid_type", "must be an object")
            continue
        base = f"{prefix}[{index}]." if prefix else ""
        for key in sorted(k for k in item if k not in IDENTIFY_FIELDS):
            errors.add(base + key, "unknown_field", "unknown field")
        user_id = item.get("user_id")
        if type(user_id) is not str or not 0 < len(user_id) <= MAX_ID_CHARS:
            _check_id(user_id, base + "user_id", "user_id", errors)
        traits = item.get("traits")
        text = b"{}"
        if traits is None:
            errors.add(base + "traits", "missing_field", "traits is required")
        elif type(traits) is not dict:
            errors.add(base + "traits", "invalid_type", "must be an object")
        else:
            text = _dumps(traits)
        ts = item.get("occurred_at")
        ts = received_us if ts is None else _timestamp(ts, base + "occurred_at", errors)
        if not _size_ok(item, len(text), (user_id, item.get("occurred_at"))):
            errors.add(f"{prefix}[{index}]" if prefix else "body", "event_too_large",
                       f"item is larger than {MAX_EVENT_BYTES} bytes as JSON")
        out.user_ids.append(user_id)
        out.traits.append(text)
        out.updated_at.append(ts)
    errors.raise_if_any(len(items))
    return out
