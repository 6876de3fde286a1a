"""The segment definition language: structure, limits and exact semantics.

A definition is a JSON object. ``parse_definition`` validates its structure and
returns a ``Definition``; ``compile_segment`` (compiler.compile) then checks it
against the lake schema and turns it into SQL. This docstring is the reference
for what a definition means; the API docs link it and the independent reference
evaluator implements the same text.

Evaluation time
    Everything is evaluated relative to ``as_of`` (UTC; a naive datetime means
    UTC). Events with ``occurred_at > as_of`` never count, for any condition.
    Timestamps in a definition (``since``, ``until``) are ISO 8601; a timezone
    offset is converted to UTC, no offset means UTC, and a date alone
    (``2026-01-31``) means 00:00:00 UTC of that day. Timestamps keep microseconds.
    A timestamp (and ``as_of``) whose UTC instant is outside years 1..9999 is
    ``invalid_timestamp`` (``compiler.timestamps``). A window reaching back past
    year 1 (``as_of - N days``) simply covers all history up to ``as_of``.

Universe
    Every user of the tenant with at least one event at or before ``as_of``, or
    a profile row (profiles hold the latest trait values and are not time-bound).
    Negation (``NOT``, ``not_in``, ``frequency lt 1``, ``recency gt``, ...) is
    relative to this universe.

Windows (frequency, monetary, sequence)
    At most one of:
    - ``window_days: N`` (1..36500): ``as_of - N days < occurred_at <= as_of``.
    - ``since`` and/or ``until``: ``since <= occurred_at <= min(until, as_of)``;
      both ends inclusive; a missing ``since`` means no lower bound, a missing
      ``until`` means ``as_of``. ``since`` after ``until`` is an error
      (``invalid_window``); a window lying after ``as_of`` is simply empty.
    - nothing: all history up to ``as_of``.

Groups
    ``{"logic": "AND"|"OR", "conditions": [...]}`` nest to any depth up to the
    limit; ``{"logic": "NOT", "conditions": [one]}`` is the universe minus the
    users matching its one condition. Empty groups are rejected. A top-level
    definition is a group or a bare single condition.

Conditions (``type``)
    frequency  ``event_type``, ``operator`` (eq, neq, gt, gte, lt, lte, between),
               ``value`` (integer >= 0; ``[lo, hi]`` inclusive with lo <= hi for
               between), optional window and ``where``. Compares the number of
               matching events, 0 for users without any (``lt 1`` matches users of
               the universe with none).
    monetary   ``event_type``, ``property`` (a number property; any property for
               ``count``), ``metric`` (sum, avg, min, max, count), ``operator``,
               ``value`` (number), optional window and ``where``. Over matching
               events: ``count`` = events whose property is not null; ``sum``
               ignores nulls; both are 0 for users without matching events (or
               with only nulls). ``avg``/``min``/``max`` of nothing are null and
               the condition is false.
    recency    ``event_type`` (optional: any event type), ``operator`` (gt, gte,
               lt, lte), ``window_days`` N, optional ``where``. T = as_of - N days.
               gt: no matching event with T <= occurred_at <= as_of (users who
               never performed it match); gte: none with T < occurred_at <= as_of;
               lt: at least one with T < occurred_at <= as_of; lte: at least one
               with T <= occurred_at <= as_of.
    first_seen ``operator``, ``window_days`` N. F = the user's first event of any
               type at or before as_of, T = as_of - N days. gt: F < T; gte: F <= T;
               lt: F > T; lte: F >= T. Users without events do not match.
    trait      ``trait``, ``operator``, ``value``: a filter (below) on the user's
               profile; users without a profile row have every trait missing.
    sequence   ``steps`` (2..5 of ``{"event_type", "where"?}``), ``within_days``
               W (1..36500), optional window. Matches when events e1..ek exist,
               ei matching step i and inside the window, with
               e1.occurred_at < e2.occurred_at < ... < ek.occurred_at (strictly)
               and ek.occurred_at - e1.occurred_at <= W days. One event may match
               several steps, but a chain needs strictly increasing times.
    segment    ``segment_id``, ``operator`` (in, not_in): membership of another
               segment's current definition at the same as_of (inlined when
               compiling). Cycles are ``segment_cycle``; an unknown id is
               ``segment_not_found``.

Filters (``where`` items ``{"property", "operator", "value"}``; traits the same with ``trait``)
    Operators: eq, neq, gt, gte, lt, lte, between (``[lo, hi]`` inclusive,
    lo <= hi in the column's order: instants for a timestamp column, so
    ``["2026-03-14T23:00:00+02:00", "2026-03-14T22:00:00Z"]`` is valid;
    checked when compiling), in, not_in (1..1000 values, all numbers or all strings), contains,
    starts_with (case-sensitive substring / prefix, taken literally: ``%`` and
    ``_`` are not wildcards), is_set, is_not_set (no ``value``). A missing
    (null) property or trait fails every operator except is_not_set, so ``neq``
    and ``not_in`` on a missing value are false. Number values compare
    numerically with number columns, strings with string columns (byte-wise
    order for gt/lt); a mismatch is ``invalid_value_type``. Booleans allow only
    eq, neq, is_set, is_not_set. Timestamp columns take ISO 8601 strings and the
    comparison operators (not contains/starts_with). All ``where`` filters must hold.

Limits (each an error with its path, never a crash)
    Group nesting depth <= 8 (the top-level group is depth 1); leaf conditions
    <= 100 per definition, and <= 1000 after inlining segment references, which
    nest at most 8 deep; ``where`` lists <= 100 filters; ``in`` lists <= 1000
    values; strings <= 1000 characters, without NUL; property/trait names 1..128
    printable characters; numbers finite, integers within 64 bits;
    window_days/within_days 1..36500. Unknown keys are errors.

Errors
    ``DefinitionError.errors`` is a list of ``FieldError(path, message, code)``,
    e.g. ``definition.conditions[1].operator: expected one of gt, gte, lt, lte``
    (``invalid_operator``). Codes: missing_field, unknown_field,
    invalid_value_type, invalid_value, invalid_operator, invalid_condition_type,
    invalid_name, invalid_timestamp, invalid_window, invalid_not, invalid_steps,
    empty_group, too_deep, too_many_conditions, too_many_values, value_too_long,
    out_of_range; when compiling against a schema also unknown_property,
    unknown_trait, segment_cycle, segment_not_found (errors inside a referenced
    segment are reported at the reference's ``segment_id`` with its own code).
"""
from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    RootModel,
    StringConstraints,
    Tag,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from .errors import DefinitionError, FieldError
from .timestamps import InstantOutOfRange, to_utc_naive

MAX_DEPTH = 8
MAX_CONDITIONS = 100
MAX_FILTERS = 100
MAX_LIST_VALUES = 1000
MAX_STRING = 1000
MAX_NAME = 128
MAX_WINDOW_DAYS = 36500
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

ComparisonOperator = Literal["eq", "neq", "gt", "gte", "lt", "lte", "between"]
RecencyOperator = Literal["gt", "gte", "lt", "lte"]
FilterOperator = Literal[
    "eq", "neq", "gt", "gte", "lt", "lte", "between",
    "in", "not_in", "contains", "starts_with", "is_set", "is_not_set",
]


def _fail(code: str, message: str, at: str = "") -> PydanticCustomError:
    """A validation error with our stable code; ``at`` is a sub-path below the failing model."""
    return PydanticCustomError(code, "{message}", {"message": message, "at": at})


def parse_timestamp(value: Any) -> datetime:
    """ISO 8601 string -> naive UTC datetime (a bare date is midnight UTC), within the range
    of ``compiler.timestamps``."""
    if not isinstance(value, str):
        raise _fail("invalid_value_type", "expected an ISO 8601 timestamp string")
    try:
        if len(value) > 64:
            raise ValueError
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _fail("invalid_timestamp", "expected an ISO 8601 timestamp such as 2026-01-31T00:00:00Z") from None
    try:
        return to_utc_naive(moment)
    except InstantOutOfRange as err:
        raise _fail("invalid_timestamp", str(err)) from None


def _check_text(text: str, at: str = "") -> str:
    """Strings become SQL literals: no NUL characters (engines reject them) and valid UTF-8 (no lone surrogates)."""
    if "\x00" in text:
        raise _fail("invalid_value", "must not contain NUL characters", at)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail("invalid_value", "must be valid unicode text", at) from None
    return text


def _check_name(name: str) -> str:
    if not 1 <= len(name) <= MAX_NAME or not name.isprintable():
        raise _fail("invalid_name", f"expected 1 to {MAX_NAME} printable characters")
    return name


Text = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STRING), AfterValidator(_check_text)]
Name = Annotated[str, AfterValidator(_check_name)]
Days = Annotated[int, Field(ge=1, le=MAX_WINDOW_DAYS)]
Timestamp = Annotated[
    datetime,
    BeforeValidator(parse_timestamp),
    PlainSerializer(lambda moment: moment.isoformat() + "Z", when_used="json"),
    WithJsonSchema({"type": "string", "description": "ISO 8601 timestamp (UTC if no offset) or date"}),
]
_SCALAR_SCHEMA = {"anyOf": [{"type": "number"}, {"type": "string", "maxLength": MAX_STRING}, {"type": "boolean"}]}
Value = Annotated[
    Any,
    WithJsonSchema({"anyOf": [
        _SCALAR_SCHEMA,
        {"type": "array", "items": _SCALAR_SCHEMA, "minItems": 1, "maxItems": MAX_LIST_VALUES},
        {"type": "null"},
    ]}),
]


def scalar_kind(value: Any) -> str | None:
    """'boolean', 'number' or 'string' for a valid JSON scalar, else None."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "number" if INT64_MIN <= value <= INT64_MAX else None
    if isinstance(value, float):
        return "number" if math.isfinite(value) else None
    if isinstance(value, str):
        return "string" if len(value) <= MAX_STRING else None
    return None


_KIND_NAMES = {
    ("number",): "a number",
    ("string",): "a string",
    ("number", "string"): "a number or a string",
    ("number", "string", "boolean"): "a number, a string or a boolean",
}


def _check_scalar(value: Any, at: str, allowed: tuple[str, ...]) -> str:
    kind = scalar_kind(value)
    if isinstance(value, str) and kind is None:
        raise _fail("value_too_long", f"at most {MAX_STRING} characters", at)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and kind is None:
        raise _fail("invalid_value", "expected a finite number within 64-bit range", at)
    if kind not in allowed:
        raise _fail("invalid_value_type", "expected " + _KIND_NAMES[allowed], at)
    if kind == "string":
        _check_text(value, at)
    return kind


def _check_pair(value: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(value, list) or len(value) != 2:
        raise _fail("invalid_value_type", "between expects a list [lo, hi]", "value")
    kinds = {_check_scalar(item, f"value[{i}]", allowed) for i, item in enumerate(value)}
    if len(kinds) > 1:
        raise _fail("invalid_value_type", "lo and hi must have the same type", "value")
    # Strings are ordered by the column they meet (byte-wise text or parsed instants), which
    # only compiling knows: filter_predicate checks their order.
    if kinds == {"number"} and value[0] > value[1]:
        raise _fail("invalid_value", "lo must not be greater than hi", "value")


def _check_count(operator: str, value: Any) -> None:
    """Event counts compare with non-negative integers."""
    if operator == "between":
        _check_pair(value, ("number",))
        items = value
    else:
        _check_scalar(value, "value", ("number",))
        items = [value]
    for item in items:
        if not isinstance(item, int) or item < 0:
            raise _fail("invalid_value_type", "expected an integer >= 0", "value")


def _check_number(operator: str, value: Any) -> None:
    if operator == "between":
        _check_pair(value, ("number",))
    else:
        _check_scalar(value, "value", ("number",))


def check_filter_value(operator: str, value: Any) -> None:
    """Shape of a filter's value for its operator; column types are checked when compiling."""
    if value is None and operator not in ("is_set", "is_not_set"):
        raise _fail("missing_field", f"{operator} needs a value", "value")
    if operator in ("is_set", "is_not_set"):
        if value is not None:
            raise _fail("invalid_value", f"{operator} takes no value", "value")
    elif operator in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise _fail("invalid_value_type", f"{operator} expects a non-empty list", "value")
        if len(value) > MAX_LIST_VALUES:
            raise _fail("too_many_values", f"at most {MAX_LIST_VALUES} values", "value")
        kinds = {_check_scalar(item, f"value[{i}]", ("number", "string")) for i, item in enumerate(value)}
        if len(kinds) > 1:
            raise _fail("invalid_value_type", "values must be all numbers or all strings", "value")
    elif operator == "between":
        _check_pair(value, ("number", "string"))
    elif operator in ("contains", "starts_with"):
        _check_scalar(value, "value", ("string",))
    elif operator in ("eq", "neq"):
        _check_scalar(value, "value", ("number", "string", "boolean"))
    else:
        _check_scalar(value, "value", ("number", "string"))


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Filter(_Node):
    """One ``where`` item: a test on an event property."""

    property: Name
    operator: FilterOperator
    value: Value = None

    @model_validator(mode="after")
    def _value_fits_operator(self) -> Filter:
        check_filter_value(self.operator, self.value)
        return self


Where = Annotated[list[Filter], Field(max_length=MAX_FILTERS)]


class _Windowed(_Node):
    window_days: Days | None = None
    since: Timestamp | None = None
    until: Timestamp | None = None

    @model_validator(mode="after")
    def _one_window(self) -> _Windowed:
        if self.window_days is not None and (self.since is not None or self.until is not None):
            raise _fail("invalid_window", "use either window_days or since/until", "window_days")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise _fail("invalid_window", "since must not be after until", "until")
        return self


class Frequency(_Windowed):
    type: Literal["frequency"]
    event_type: Text
    operator: ComparisonOperator
    value: Value
    where: Where = []

    @model_validator(mode="after")
    def _value_fits_operator(self) -> Frequency:
        _check_count(self.operator, self.value)
        return self


class Monetary(_Windowed):
    type: Literal["monetary"]
    event_type: Text
    property: Name
    metric: Literal["sum", "avg", "min", "max", "count"]
    operator: ComparisonOperator
    value: Value
    where: Where = []

    @model_validator(mode="after")
    def _value_fits_operator(self) -> Monetary:
        _check_number(self.operator, self.value)
        return self


class Recency(_Node):
    type: Literal["recency"]
    event_type: Text | None = None
    operator: RecencyOperator
    window_days: Days
    where: Where = []


class FirstSeen(_Node):
    type: Literal["first_seen"]
    operator: RecencyOperator
    window_days: Days


class Trait(_Node):
    type: Literal["trait"]
    trait: Name
    operator: FilterOperator
    value: Value = None

    @model_validator(mode="after")
    def _value_fits_operator(self) -> Trait:
        check_filter_value(self.operator, self.value)
        return self


class Step(_Node):
    event_type: Text
    where: Where = []


class Sequence(_Windowed):
    type: Literal["sequence"]
    steps: Annotated[list[Step], Field(min_length=2, max_length=5)]
    within_days: Days


class SegmentRef(_Node):
    type: Literal["segment"]
    segment_id: Annotated[int, Field(ge=1, le=INT64_MAX)]
    operator: Literal["in", "not_in"]


CONDITION_TYPES = {
    "frequency": Frequency, "monetary": Monetary, "recency": Recency, "first_seen": FirstSeen,
    "trait": Trait, "sequence": Sequence, "segment": SegmentRef,
}


def _node_tag(value: Any) -> str | None:
    """Groups are told apart by ``logic``, conditions by ``type``."""
    if isinstance(value, dict):
        if "logic" in value:
            return "group"
        tag = value.get("type")
        return tag if isinstance(tag, str) else None
    if isinstance(value, Group):
        return "group"
    return getattr(value, "type", None)


Node = Annotated[
    Union[
        Annotated["Group", Tag("group")],
        Annotated[Frequency, Tag("frequency")],
        Annotated[Monetary, Tag("monetary")],
        Annotated[Recency, Tag("recency")],
        Annotated[FirstSeen, Tag("first_seen")],
        Annotated[Trait, Tag("trait")],
        Annotated[Sequence, Tag("sequence")],
        Annotated[SegmentRef, Tag("segment")],
    ],
    Discriminator(_node_tag),
]
Condition = Union[Frequency, Monetary, Recency, FirstSeen, Trait, Sequence, SegmentRef]


class Group(_Node):
    logic: Literal["AND", "OR", "NOT"]
    conditions: Annotated[list[Node], Field(min_length=1)]

    @model_validator(mode="after")
    def _not_takes_one(self) -> Group:
        if self.logic == "NOT" and len(self.conditions) != 1:
            raise _fail("invalid_not", "NOT takes exactly one condition", "conditions")
        return self


class Definition(RootModel[Node]):
    """A structurally valid definition: ``root`` is a Group or a single condition."""

    model_config = ConfigDict(frozen=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (defaults omitted); parses back to an equal Definition."""
        return self.model_dump(mode="json", exclude_defaults=True)


Group.model_rebuild()
Definition.model_rebuild()


def definition_json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of the definition language; semantic rules live in this module's docstring."""
    schema = Definition.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Segment definition", **schema}


def parse_definition(obj: Any, path: str = "definition") -> Definition:
    """Validate a definition object; raise DefinitionError naming each offending JSON path."""
    if isinstance(obj, Definition):
        return obj
    _check_limits(obj, path)
    try:
        return Definition.model_validate(obj)
    except ValidationError as error:
        raise DefinitionError([_field_error(path, item) for item in error.errors()]) from None


def _check_limits(obj: Any, path: str) -> None:
    """Depth and size limits, checked on the raw input before deep validation can recurse."""
    leaves = 0
    stack = [(obj, path, 1)]
    while stack:
        node, node_path, depth = stack.pop()
        if not (isinstance(node, dict) and "logic" in node):
            leaves += 1
            if leaves > MAX_CONDITIONS:
                raise DefinitionError.single(
                    node_path, f"at most {MAX_CONDITIONS} conditions per definition", "too_many_conditions")
            continue
        if depth > MAX_DEPTH:
            raise DefinitionError.single(node_path, f"groups nest at most {MAX_DEPTH} deep", "too_deep")
        children = node.get("conditions")
        if isinstance(children, list):
            if len(children) > MAX_CONDITIONS:
                raise DefinitionError.single(
                    f"{node_path}.conditions[{MAX_CONDITIONS}]",
                    f"at most {MAX_CONDITIONS} conditions per definition", "too_many_conditions")
            for index in range(len(children) - 1, -1, -1):
                stack.append((children[index], f"{node_path}.conditions[{index}]", depth + 1))


_TYPE_MESSAGES = {
    "int_type": "expected an integer",
    "string_type": "expected a string",
    "list_type": "expected a list",
    "bool_type": "expected a boolean",
    "model_type": "expected an object",
    "model_attributes_type": "expected an object",
    "dict_type": "expected an object",
}
_LENGTH_MESSAGES = {
    "conditions": ("empty_group", "a group needs at least one condition"),
    "steps": ("invalid_steps", "expected 2 to 5 steps"),
    "where": ("too_many_conditions", f"at most {MAX_FILTERS} filters"),
}


def _json_path(base: str, loc: tuple[Any, ...]) -> str:
    """Pydantic's loc without the union tags it inserts after each condition position."""
    path = base
    for index, item in enumerate(loc):
        is_tag = index == 0 or (index >= 2 and isinstance(loc[index - 1], int) and loc[index - 2] == "conditions")
        if isinstance(item, int):
            path += f"[{item}]"
        elif not is_tag:
            path += f".{item}"
    return path


def _field_error(base: str, error: dict[str, Any]) -> FieldError:
    kind, loc, ctx = error["type"], tuple(error["loc"]), error.get("ctx") or {}
    path = _json_path(base, loc)
    field = next((item for item in reversed(loc) if isinstance(item, str)), "")
    if "message" in ctx and "at" in ctx:  # one of ours (see _fail)
        at = ctx["at"]
        return FieldError(f"{path}.{at}" if at else path, ctx["message"], kind)
    if kind == "missing":
        return FieldError(path, "field required", "missing_field")
    if kind == "extra_forbidden":
        return FieldError(path, "unknown field", "unknown_field")
    if kind == "literal_error":
        choices = ", ".join(re.findall(r"'([^']*)'", ctx.get("expected", "")))
        code = "invalid_operator" if field == "operator" else "invalid_value"
        return FieldError(path, f"expected one of {choices}", code)
    if kind == "union_tag_invalid":
        return FieldError(f"{path}.type", "expected one of " + ", ".join(CONDITION_TYPES), "invalid_condition_type")
    if kind == "union_tag_not_found":
        if isinstance(error.get("input"), dict):
            return FieldError(f"{path}.type", "a condition needs 'type' (a group needs 'logic')", "missing_field")
        return FieldError(path, "expected an object", "invalid_value_type")
    if kind in _TYPE_MESSAGES:
        return FieldError(path, _TYPE_MESSAGES[kind], "invalid_value_type")
    if kind in ("too_short", "too_long") and field in _LENGTH_MESSAGES:
        code, message = _LENGTH_MESSAGES[field]
        return FieldError(path, message, code)
    if kind == "string_too_short":
        return FieldError(path, "must not be empty", "invalid_value")
    if kind == "string_too_long":
        return FieldError(path, f"at most {ctx.get('max_length')} characters", "value_too_long")
    if kind in ("greater_than_equal", "less_than_equal"):
        if field == "segment_id":
            return FieldError(path, "expected a positive 64-bit integer", "out_of_range")
        return FieldError(path, f"expected an integer from 1 to {MAX_WINDOW_DAYS}", "out_of_range")
    return FieldError(path, error["msg"], "invalid_value")


__all__ = [
    "Definition", "Group", "Frequency", "Monetary", "Recency", "FirstSeen", "Trait", "Sequence",
    "SegmentRef", "Step", "Filter", "Condition", "parse_definition", "definition_json_schema",
    "parse_timestamp", "to_utc_naive",
]
