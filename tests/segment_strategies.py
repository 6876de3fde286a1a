"""Random worlds and definitions for the segment-compiler tests (hypothesis strategies on top).

Values come from small pools so that conditions actually match some users, and
timestamps cluster on the boundaries the semantics care about (exactly N days
before ``as_of``, one microsecond either side, events after ``as_of``).
Definitions are type-consistent: string operators get strings, number
operators numbers. A ``Catalog`` names the properties, traits and value pools,
so the hostile tests reuse everything with nasty names and values.
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from tests.reference_eval import parse_instant

TENANT = 1
OTHER_TENANT = 2
WINDOW_DAYS = [1, 3, 7, 30]
WITHIN_DAYS = [1, 2, 7]
AS_OFS = [
    datetime(2026, 3, 15, 12, 30, 0),
    datetime(2026, 3, 15, 0, 0, 0),  # midnight: day boundaries coincide with date boundaries
    datetime(2026, 3, 14, 23, 59, 59, 999999),
]
# Numbers are integers or multiples of 1/4: sums are exact in binary floating point on every engine.
SPECIAL_NUMBERS = [0.0, 1.0, 2.0, 10.0, 100.0, 500.0]
COMPARE_OPERATORS = ["eq", "neq", "gt", "gte", "lt", "lte", "between"]
FILTER_OPERATORS = {
    "number": COMPARE_OPERATORS + ["in", "not_in", "is_set", "is_not_set"],
    "string": COMPARE_OPERATORS + ["in", "not_in", "contains", "starts_with", "is_set", "is_not_set"],
    "boolean": ["eq", "neq", "is_set", "is_not_set"],
    "timestamp": COMPARE_OPERATORS + ["in", "not_in", "is_set", "is_not_set"],
}

_DAY = timedelta(days=1)
_US = timedelta(microseconds=1)


@dataclass(frozen=True)
class Catalog:
    """Names and value pools a world and its definitions draw from."""

    event_types: tuple[str, ...] = ("order_placed", "page_viewed", "signup", "cart_add")
    # name -> kind; tests store each in a column named differently from the property
    properties: dict[str, str] = field(default_factory=lambda: {
        "total": "number", "qty": "number", "plan": "string", "coupon": "string",
        "is_gift": "boolean", "paid_at": "timestamp",
    })
    traits: dict[str, str] = field(default_factory=lambda: {
        "age": "number", "ltv": "number", "country": "string", "email": "string",
        "vip": "boolean", "signed_up_at": "timestamp",
    })
    strings: tuple[str, ...] = ("", "a", "ab", "abc", "b", "B", "Ab", "a%", "a_c", "abc%", "_b", "%", "x y", "é",
                                "O'Neil", "a\\b")
    # values for contains / starts_with: LIKE wildcards and escapes must be taken literally
    fragments: tuple[str, ...] = ("a", "b", "%", "_", "c%", "a_", "_b", "ab", "é", "'", "", "\\", "a\\")
    user_ids: tuple[str, ...] = tuple(f"u{i:02d}" for i in range(30))

    def names_of(self, kinds: dict[str, str], *wanted: str) -> list[str]:
        return sorted(name for name, kind in kinds.items() if kind in wanted)


DEFAULT_CATALOG = Catalog()


@dataclass
class World:
    """Raw inputs: what a test writes to Parquet and what the reference evaluator reads."""

    as_of: datetime
    events: list[dict]
    profiles: list[dict]
    catalog: Catalog = DEFAULT_CATALOG
    tenant_id: int = TENANT


@dataclass
class Scenario:
    """One world and several definitions to check in it (cheaper than one world per definition)."""

    world: World
    definitions: list[dict]
    segments: dict[int, dict]


def iso(at: datetime) -> str:
    return at.isoformat(timespec="microseconds") + "Z"


# -- worlds ---------------------------------------------------------------------------------
# Everything is generated from ONE hypothesis integer per scenario with random.Random.
# Drawing fields through hypothesis was slow (~70 ms per world) and skewed: half the
# scenarios had a single definition or user, nested dicts repeated the same shapes, and
# rare operator/value pairs (starts_with "_") never met data where they matter. Shrinking
# a seed means nothing, so the tests shrink a failure themselves (compiler_fixtures.minimize).
_BOUNDARY_DAYS = sorted(set(WINDOW_DAYS) | set(WITHIN_DAYS))


def _random_offset(rng: random.Random) -> timedelta:
    """Half the events sit on a boundary: exactly N days before as_of, 1 us either side, at/after as_of."""
    roll = rng.random()
    if roll < 0.35:
        return rng.choice(_BOUNDARY_DAYS) * _DAY
    if roll < 0.45:
        return rng.choice(_BOUNDARY_DAYS) * _DAY + rng.choice([_US, -_US])
    if roll < 0.5:
        return rng.choice([timedelta(0), -_US, -timedelta(hours=3)])
    return timedelta(seconds=rng.randint(-2 * 86400, 40 * 86400))


def _random_value(rng: random.Random, kind: str, catalog: Catalog, as_of: datetime) -> Any:
    if rng.random() < 0.25:
        return None
    if kind == "number":
        return rng.choice([rng.randint(-8, 48) / 4, rng.choice(SPECIAL_NUMBERS)])
    if kind == "string":
        return rng.choice(catalog.strings)
    if kind == "timestamp":
        return as_of - _random_offset(rng)
    return rng.random() < 0.5


def _random_bag(rng: random.Random, kinds: dict[str, str], catalog: Catalog, as_of: datetime) -> dict[str, Any]:
    """Each name missing, null or a value of its kind."""
    return {name: _random_value(rng, kind, catalog, as_of) for name, kind in kinds.items() if rng.random() < 0.6}


def random_world(rng: random.Random, catalog: Catalog = DEFAULT_CATALOG, max_events: int = 120) -> World:
    as_of = rng.choice(AS_OFS)
    # mostly a dozen users or fewer, so users have several events each
    users = catalog.user_ids[: rng.randint(1, 12 if rng.random() < 0.7 else len(catalog.user_ids))]
    events = [{
        "tenant_id": TENANT if rng.random() < 0.75 else OTHER_TENANT,
        "user_id": rng.choice(users),
        "event_type": rng.choice(catalog.event_types[:2] * 2 + catalog.event_types),
        "occurred_at": as_of - _random_offset(rng),
        "properties": _random_bag(rng, catalog.properties, catalog, as_of),
    } for _ in range(rng.randint(0, max_events))]
    profiles = {}
    for _ in range(rng.randint(0, len(users))):
        key = (TENANT if rng.random() < 0.75 else OTHER_TENANT, rng.choice(users))
        profiles[key] = {"tenant_id": key[0], "user_id": key[1],
                         "traits": _random_bag(rng, catalog.traits, catalog, as_of)}
    return World(as_of=as_of, events=events, profiles=list(profiles.values()), catalog=catalog)


# -- definitions ----------------------------------------------------------------------------
def _number(rng: random.Random) -> float | int:
    return rng.choice([rng.randint(-8, 48) / 4, rng.choice(SPECIAL_NUMBERS), rng.randint(-2, 600)])


def _iso_styles(rng: random.Random, at: datetime) -> str:
    """The same instant as Z, +02:00 offset or naive text; sometimes just its date."""
    style = rng.choice(["z", "z", "offset", "naive", "date"])
    if style == "offset":
        return (at + timedelta(hours=2)).isoformat(timespec="microseconds") + "+02:00"
    if style == "naive":
        return at.isoformat()
    if style == "date":
        return at.date().isoformat()
    return iso(at)


def _sorted_pair(kind: str, low: Any, high: Any) -> list:
    return sorted([low, high], key=parse_instant if kind == "timestamp" else None)


class DefinitionMaker:
    """Random, type-consistent definitions for one world.

    Half the conditions are anchored on a random event (or profile) of the world:
    its event type, a window edge exactly at its timestamp, filters built from its
    actual values (a prefix of its string for starts_with, ...). Independent random
    values rarely hit an edge case exactly; anchored ones do all the time.
    """

    def __init__(self, rng: random.Random, world: World, segment_ids: tuple[int, ...] = ()):
        self.rng, self.world, self.catalog, self.as_of = rng, world, world.catalog, world.as_of
        self.segment_ids = segment_ids

    def definition(self, depth: int = 4) -> dict:
        """Top level: mostly single conditions (a bug cannot hide behind an enclosing AND), some trees,
        some near-identical twins."""
        roll = self.rng.random()
        if roll < 0.6:
            return self.condition()
        return self.twins() if roll < 0.7 else self.group(depth)

    def twins(self) -> dict:
        """A condition next to a one-detail variant of itself (value, operator, window, filter, case of a
        string), so a compiler sharing work between similar conditions must keep them apart."""
        rng = self.rng
        first = self.condition()
        second = copy.deepcopy(first)
        tweakable = [k for k in ("value", "operator", "window_days", "since", "until", "where", "event_type",
                                 "within_days") if k in second]
        if tweakable:
            key = rng.choice(tweakable)
            second[key] = self._tweak(second, key)
        inner = {"logic": "NOT", "conditions": [second]} if rng.random() < 0.3 else second
        return {"logic": rng.choice(["AND", "OR"]), "conditions": [first, inner]}

    def _tweak(self, condition: dict, key: str) -> Any:
        rng, value = self.rng, condition[key]
        if key == "where":
            return value[:-1] if len(value) > 1 else [self._filter(self.catalog.properties, "property", None)]
        if key == "event_type":
            return value.upper() if value != value.upper() else value.lower()
        if key in ("since", "until"):
            return iso(parse_instant(value) + rng.choice([_US, -_US, _DAY]))
        if key in ("window_days", "within_days"):
            return value + 1
        if key == "operator":
            options = {"gt": "gte", "gte": "gt", "lt": "lte", "lte": "lt", "eq": "neq", "neq": "eq", "in": "not_in",
                       "not_in": "in", "is_set": "is_not_set", "is_not_set": "is_set", "contains": "starts_with",
                       "starts_with": "contains"}
            return options.get(value, value)
        if isinstance(value, bool):
            return not value
        if isinstance(value, (int, float)):
            counts = condition.get("type") == "frequency" or condition.get("metric") == "count"
            return value + 1 if counts else value + 0.25
        if isinstance(value, str) and self.catalog.traits.get(condition.get("trait")) == "string":
            return value.swapcase()
        return value

    def group(self, depth: int) -> dict:
        """A group; nested groups count towards ``depth`` (the root group is depth 1)."""
        rng = self.rng
        logic = rng.choice(["AND", "OR", "NOT"])
        children = [self.group(depth - 1) if depth > 1 and rng.random() < 0.3 else self.condition()
                    for _ in range(1 if logic == "NOT" else rng.randint(1, 3))]
        return {"logic": logic, "conditions": children}

    # -- values ---------------------------------------------------------------------------
    def _instant(self, anchor: dict | None = None) -> str:
        rng = self.rng
        if anchor is not None and rng.random() < 0.7:
            at = anchor["occurred_at"]
        elif rng.random() < 0.5:
            at = self.as_of - rng.choice(_BOUNDARY_DAYS) * _DAY
        else:
            at = self.as_of - _random_offset(rng)
        return _iso_styles(rng, at)

    def _value(self, kind: str) -> Any:
        rng = self.rng
        if kind == "number":
            return _number(rng)
        if kind == "string":
            return rng.choice(self.catalog.strings)
        if kind == "timestamp":
            return self._instant()
        return rng.random() < 0.5

    def _filter(self, kinds: dict[str, str], name_key: str, bag: dict | None) -> dict:
        rng = self.rng
        known = sorted(n for n, v in (bag or {}).items() if v is not None)
        anchored = bool(known) and rng.random() < 0.7
        name = rng.choice(known if anchored else sorted(kinds))
        kind = kinds[name]
        operator = rng.choice(FILTER_OPERATORS[kind])
        item = {name_key: name, "operator": operator}
        if operator in ("is_set", "is_not_set"):
            return item
        if anchored:
            actual = bag[name]
            pick = (lambda: _iso_styles(rng, actual)) if kind == "timestamp" else (lambda: actual)
        else:
            pick = lambda: self._value(kind)  # noqa: E731
        if operator == "between":
            item["value"] = _sorted_pair(kind, pick(), self._value(kind) if rng.random() < 0.7 else pick())
        elif operator in ("in", "not_in"):
            item["value"] = list(dict.fromkeys([pick()] + [self._value(kind) for _ in range(rng.randint(0, 2))]))
        elif operator in ("contains", "starts_with"):
            if anchored and rng.random() < 0.7:
                start = 0 if operator == "starts_with" else rng.randint(0, len(actual))
                item["value"] = actual[start:rng.randint(start, len(actual))]
            else:
                item["value"] = rng.choice(self.catalog.fragments)
        else:
            item["value"] = pick()
        return item

    def _where(self, anchor: dict | None, most: int = 2) -> dict:
        if self.rng.random() < 0.5:
            return {}
        bag = anchor["properties"] if anchor else None
        return {"where": [self._filter(self.catalog.properties, "property", bag)
                          for _ in range(self.rng.randint(1, most))]}

    def _window(self, anchor: dict | None) -> dict:
        """No window, window_days, or an absolute since/until (either side may be open)."""
        rng = self.rng
        kind = rng.choice(["none", "none", "days", "days", "absolute"])
        if kind == "none":
            return {}
        if kind == "days":
            return {"window_days": self._days(anchor)}
        since, until = _sorted_pair("timestamp", self._instant(anchor), self._instant())
        window = {}
        if rng.random() < 0.5:
            window["since"] = since
        if rng.random() < 0.5 or not window:
            window["until"] = until
        return window

    def _days(self, anchor: dict | None, choices: list[int] = WINDOW_DAYS) -> int:
        """A day count; with an anchor exactly N days before as_of, often that N."""
        if anchor is not None:
            age = self.as_of - anchor["occurred_at"]
            if age in [d * _DAY for d in choices] and self.rng.random() < 0.7:
                return age.days
        return self.rng.choice(choices)

    def _comparison(self, value) -> dict:
        operator = self.rng.choice(COMPARE_OPERATORS)
        if operator == "between":
            return {"operator": operator, "value": sorted([value(), value()])}
        return {"operator": operator, "value": value()}

    # -- conditions -------------------------------------------------------------------------
    def condition(self) -> dict:
        rng, catalog = self.rng, self.catalog
        kinds = ["frequency", "monetary", "recency", "first_seen", "trait", "sequence"]
        kind = rng.choice(kinds + ["segment"] if self.segment_ids else kinds)
        anchor = rng.choice(self.world.events) if self.world.events and rng.random() < 0.5 else None
        event_type = anchor["event_type"] if anchor else rng.choice(catalog.event_types)
        if kind == "frequency":
            return {"type": kind, "event_type": event_type, **self._comparison(lambda: rng.randint(0, 4)),
                    **self._window(anchor), **self._where(anchor)}
        if kind == "monetary":
            metric = rng.choice(["sum", "avg", "min", "max", "count"])
            if metric == "count":
                value, names = (lambda: rng.randint(0, 4)), sorted(catalog.properties)
            else:
                names = catalog.names_of(catalog.properties, "number")
                bag = anchor["properties"] if anchor else {}
                anchored = [bag[n] for n in names if bag.get(n) is not None]
                value = (lambda: rng.choice(anchored)) if anchored and rng.random() < 0.6 else (lambda: _number(rng))
            return {"type": kind, "event_type": event_type, "property": rng.choice(names), "metric": metric,
                    **self._comparison(value), **self._window(anchor), **self._where(anchor)}
        if kind == "recency":
            condition = {"type": kind, "operator": rng.choice(["gt", "gte", "lt", "lte"]),
                         "window_days": self._days(anchor), **self._where(anchor)}
            if rng.random() < 0.75:
                condition["event_type"] = event_type
            return condition
        if kind == "first_seen":
            return {"type": kind, "operator": rng.choice(["gt", "gte", "lt", "lte"]), "window_days": self._days(anchor)}
        if kind == "trait":
            profile = rng.choice(self.world.profiles) if self.world.profiles and rng.random() < 0.5 else None
            return {"type": kind, **self._filter(catalog.traits, "trait", profile["traits"] if profile else None)}
        if kind == "sequence":
            steps = []
            for i in range(rng.randint(2, 5) if rng.random() < 0.25 else rng.randint(2, 3)):
                step = {"event_type": event_type if i == 0 else rng.choice(catalog.event_types)}
                steps.append({**step, **self._where(anchor if i == 0 else None, most=1)})
            return {"type": kind, "steps": steps, "within_days": self._days(anchor, WITHIN_DAYS),
                    **self._window(anchor)}
        return {"type": "segment", "segment_id": rng.choice(self.segment_ids), "operator": rng.choice(["in", "not_in"])}


def definitions(as_of: datetime, depth: int = 4, segment_ids: tuple[int, ...] = (),
                catalog: Catalog = DEFAULT_CATALOG) -> st.SearchStrategy[dict]:
    """Definitions not tied to any data (for render/parse tests)."""
    empty = World(as_of=as_of, events=[], profiles=[], catalog=catalog)
    return st.integers(0, 2**64 - 1).map(
        lambda seed: DefinitionMaker(random.Random(seed), empty, segment_ids).definition(depth))


def random_scenario(rng: random.Random, catalog: Catalog = DEFAULT_CATALOG, max_events: int = 120,
                    max_definitions: int = 16) -> Scenario:
    world = random_world(rng, catalog, max_events)
    segments: dict[int, dict] = {}
    for segment_id in range(101, 101 + rng.randint(0, 2)):  # each refers only to earlier ones: no cycles
        segments[segment_id] = DefinitionMaker(rng, world, tuple(segments)).definition(depth=2)
    maker = DefinitionMaker(rng, world, tuple(segments))
    return Scenario(world=world, definitions=[maker.definition() for _ in range(rng.randint(1, max_definitions))],
                    segments=segments)


def scenarios(catalog: Catalog = DEFAULT_CATALOG, max_events: int = 120,
              max_definitions: int = 16) -> st.SearchStrategy[Scenario]:
    return st.integers(0, 2**64 - 1).map(
        lambda seed: random_scenario(random.Random(seed), catalog, max_events, max_definitions))
