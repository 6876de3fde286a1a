"""Why a user is in (or out of) a segment, and what saving an edit would change (issue 19).

Explain runs ``compiler.explain``'s statement for one user over the tenant's snapshot (the
same compiled predicates as membership, so the answer cannot disagree with it). Impact compares
a draft definition's members with the segment's current computation (its ``members.parquet``,
at its ``as_of``), or with a fresh evaluation of the current definition now when there is none,
and counts what would follow from the change: runs of active journeys entered by the segment or
exited through it, and the audiences of prepared broadcasts targeting it. Nothing is saved or sent.

Segment queries go through ``SegmentQueries`` (compile, validate, member_table); the explain
statement itself runs on the DuckDB backend (see ``Explainer._fetch``).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from backends.registry import Backends
from common.time import api_time, db_time, iso_utc, naive_utc, parse_db_time, utc_now
from compiler import DefinitionError, parse_definition
from compiler.explain import Explanation, compile_explain
from engine.errors import Conflict, InvalidInput, NotFound
from engine.ingest.parse import MAX_ID_CHARS
from engine.membership.computations import ComputationStore
from engine.segments.query import CompiledSegment, SegmentQueries, normalize_as_of
from engine.segments.store import SegmentNotFound, SegmentStore, canonical_json
from storage.metadata import MetadataStore

DEFAULT_SAMPLE = 10
MAX_SAMPLE = 1000


class InvalidUserId(InvalidInput):
    """A user id no event can carry (empty, longer than ingest accepts, not text)."""

    def __init__(self, message: str):
        super().__init__(message, code="invalid_user_id", field="user_id")


class NoDefinition(InvalidInput):
    """The segment is a draft without a definition."""

    def __init__(self, segment_id: int):
        super().__init__("the segment has no definition yet", code="segment_has_no_definition", field="definition")
        self.segment_id = segment_id


class ExplainConflict(InvalidInput):
    """Both ``as_of`` and ``computation`` given (a computation has its own as_of)."""

    def __init__(self, message: str):
        super().__init__(message, code="invalid_parameters", field="computation")


class InvalidImpact(InvalidInput):
    """An ``impact_id`` that is not this tenant's impact of this definition on this segment."""

    def __init__(self, message: str):
        super().__init__(message, code="invalid_impact", field="impact_id")


class ImpactOutdated(Conflict):
    """The impact was computed for an earlier version of the segment."""

    def __init__(self, message: str):
        super().__init__(message, code="impact_outdated", field="impact_id")


class JourneyDefinitions(Protocol):
    """What impact reads of the journeys service: a journey version's definition."""

    def definition(self, journey_id: int, version: int) -> dict[str, Any]: ...


def check_user_id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidUserId("a non-empty user id is required")
    if len(value) > MAX_ID_CHARS:
        raise InvalidUserId(f"at most {MAX_ID_CHARS} characters")
    if "\x00" in value or not _encodable(value):
        raise InvalidUserId("must be valid unicode text without NUL characters")
    return value


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class _Baseline:
    members: pa.Array  # sorted user ids
    as_of: datetime
    computation_id: int | None


def _minus(left: pa.Array, right: pa.Array) -> pa.Array:
    return left.filter(pc.invert(pc.is_in(left, value_set=right)))


def _group(users: pa.Array, sample: int) -> dict[str, Any]:
    return {"count": len(users), "sample": users.slice(0, sample).to_pylist()}


class Explainer:
    """Explanations and impact previews (``runtime.explainer``). ``secret`` gives the key impact ids
    are signed with; ``journeys`` the journeys service and ``broadcast_tables`` declares the broadcast
    tables (both called only when an impact reads them: creating them is not free)."""

    def __init__(self, queries: SegmentQueries, segments: SegmentStore, computations: ComputationStore,
                 backends: Backends, meta: MetadataStore, *,
                 secret: Callable[[], str], journeys: Callable[[], JourneyDefinitions],
                 broadcast_tables: Callable[[], object]):
        self.queries, self.segments, self.computations = queries, segments, computations
        self.backends, self.meta = backends, meta
        self._secret, self._journeys, self._broadcast_tables = secret, journeys, broadcast_tables

    def _fetch(self, compiled: CompiledSegment) -> pa.Table:
        """The answer of a small statement over the snapshot. On DuckDB whatever the interactive
        backend: the explain statement is DuckDB SQL today (a MATERIALIZED CTE, a FULL JOIN on
        ROW_NUMBER())."""
        backend = self.backends.get("duckdb")
        return backend.fetch_arrow(compiled.executable(backend))

    # -- explain ----------------------------------------------------------------------------
    def explain_definition(self, tenant_id: int, definition: Any, user_id: str, *,
                           as_of: datetime | str | None = None) -> Explanation:
        """Explain ``user_id``'s membership of ``definition`` at ``as_of`` (default now); references
        resolve to the tenant's current definitions. Raises DefinitionError, InvalidUserId."""
        user_id = check_user_id(user_id)
        definition = parse_definition(definition)
        moment = normalize_as_of(as_of)
        lake = self.backends.tenant_lake(tenant_id)
        queries = compile_explain(definition, lake.schema, tenant_id=tenant_id, as_of=moment, user_id=user_id,
                                  resolve_segment=self.segments.resolver(tenant_id))
        table = self._fetch(CompiledSegment(queries.query, lake, moment))
        values = table.select(queries.value_columns).filter(pc.is_valid(table["in_universe"])).to_pylist()[0]
        events = table.drop_columns(queries.value_columns)
        if "e_at" in events.column_names:
            return queries.assemble(values, events.filter(pc.is_valid(events["e_at"])).to_pylist())
        return queries.assemble(values, [])

    def explain_segment(self, tenant_id: int, segment_id: int, user_id: str, *,
                        as_of: datetime | str | None = None, version: int | None = None,
                        computation: int | None = None) -> dict[str, Any]:
        """Explain a stored segment: its current definition (or ``version``), at ``as_of`` (default
        now), or the answer computation ``computation`` gave (its version and as_of; references resolve to
        the current definitions of the segments they name, as for any explanation). Raises
        SegmentNotFound, NotFound, NoDefinition, ExplainConflict, DefinitionError, InvalidUserId."""
        user_id = check_user_id(user_id)
        segment = self.segments.get(tenant_id, segment_id)
        if segment is None:
            raise SegmentNotFound(segment_id)
        if computation is not None:
            if as_of is not None:
                raise ExplainConflict("give either as_of or computation: a computation has its own as_of")
            done = self.computations.done_version(tenant_id, segment_id, computation)
            if done is None:
                raise NotFound("computation", computation)
            version, as_of = done
        if version is not None:
            stored = self.segments.version(tenant_id, segment_id, version)
            if stored is None:
                raise NotFound("version", version)
            definition = stored["definition"]
        else:
            version, definition = segment["version"], segment["definition"]
        if definition is None:
            raise NoDefinition(segment_id)
        explained = self.explain_definition(tenant_id, definition, user_id, as_of=as_of)
        return {"segment_id": segment_id, "version": version, "computation_id": computation, **explained.to_json()}

    # -- impact -----------------------------------------------------------------------------
    def _baseline(self, tenant_id: int, segment: dict[str, Any]) -> _Baseline:
        """The segment's current computation, or its current definition evaluated now."""
        current = self.computations.current(tenant_id, segment["id"])
        if current is not None:
            computation_id, as_of, users = current
            return _Baseline(users, naive_utc(as_of), computation_id)
        as_of = normalize_as_of(None)
        if segment["definition"] is None:
            return _Baseline(pa.array([], pa.string()), as_of, None)
        compiled = self.queries.compile(tenant_id, segment["definition"], as_of=as_of)
        return _Baseline(self.queries.member_table(compiled).column("user_id").combine_chunks(), as_of, None)

    def impact(self, tenant_id: int, segment_id: int, draft: Any, *, sample: int = DEFAULT_SAMPLE) -> dict[str, Any]:
        """Who would enter, stay and leave if ``draft`` replaced the segment's definition, at the
        current computation's as_of, and what would follow (see the module doc). Raises
        SegmentNotFound, DefinitionError."""
        if not 0 <= sample <= MAX_SAMPLE:
            raise ValueError(f"sample must be within 0..{MAX_SAMPLE}")
        segment = self.segments.get(tenant_id, segment_id)
        if segment is None:
            raise SegmentNotFound(segment_id)
        definition = self.queries.validate(tenant_id, draft, segment_id=segment_id)
        baseline = self._baseline(tenant_id, segment)
        compiled = self.queries.compile(tenant_id, definition, as_of=baseline.as_of)
        drafted = self.queries.member_table(compiled).column("user_id").combine_chunks()
        enter, leave = _minus(drafted, baseline.members), _minus(baseline.members, drafted)
        stay = _minus(drafted, enter)
        journeys = self._journeys_moved(tenant_id, segment_id, enter)
        broadcasts = self._broadcasts(tenant_id, segment_id, drafted)
        summary = {"segment_id": segment_id, "base_version": segment["version"],
                   "computation_id": baseline.computation_id, "as_of": iso_utc(baseline.as_of),
                   "definition_sha256": _digest(canonical_json(definition)),
                   "enter": len(enter), "stay": len(stay), "leave": len(leave),
                   "runs_started": sum(j.get("runs_started", 0) for j in journeys),
                   "runs_exited": sum(j.get("runs_exited", 0) for j in journeys), "broadcasts": len(broadcasts)}
        return {
            "impact_id": self._impact_token(tenant_id, summary),
            "segment_id": segment_id, "version": segment["version"], "computation_id": baseline.computation_id,
            "as_of": summary["as_of"], "enter": _group(enter, sample), "stay": _group(stay, sample),
            "leave": _group(leave, sample), "journeys": journeys, "broadcasts": broadcasts, "syncs": [],
        }

    # -- impact ids: a signed summary, so computing an impact stores nothing -----------------
    def _signature(self, tenant_id: int, payload: bytes) -> str:
        key = self._secret().encode()
        return _b64(hmac.new(key, b"segops-impact:%d:" % tenant_id + payload, hashlib.sha256).digest())

    def _impact_token(self, tenant_id: int, summary: dict[str, Any]) -> str:
        payload = orjson.dumps(summary, option=orjson.OPT_SORT_KEYS)
        return f"{_TOKEN_PREFIX}{_b64(payload)}.{self._signature(tenant_id, payload)}"

    def read_impact(self, tenant_id: int, segment_id: int, impact_id: str, definition: Any,
                    current_version: int) -> dict[str, Any]:
        """What a version records of the impact the author saw before saving ``definition``: the
        impact's summary and id. Raises InvalidImpact unless ``impact_id`` is this tenant's impact of
        exactly this definition on this segment, ImpactOutdated unless at its current version."""
        body, _, signature = impact_id.removeprefix(_TOKEN_PREFIX).partition(".")
        try:
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError:
            raise InvalidImpact("not an impact id") from None
        if not impact_id.startswith(_TOKEN_PREFIX) or not hmac.compare_digest(
                signature.encode(), self._signature(tenant_id, payload).encode()):
            raise InvalidImpact("not an impact id of this tenant")
        summary = orjson.loads(payload)
        if summary["segment_id"] != segment_id:
            raise InvalidImpact(f"the impact is of segment {summary['segment_id']}")
        if summary["definition_sha256"] != _digest(canonical_json(parse_definition(definition))):
            raise InvalidImpact("the impact was computed for another definition")
        if summary["base_version"] != current_version:
            raise ImpactOutdated(f"the segment changed since (version {summary['base_version']} -> "
                                 f"{current_version}); compute the impact again")
        return {"impact_id": impact_id, **{k: v for k, v in summary.items() if k != "definition_sha256"}}

    # -- what would follow ------------------------------------------------------------------
    def _journeys_moved(self, tenant_id: int, segment_id: int, enter: pa.Array) -> list[dict[str, Any]]:
        """Active journeys the change would move: entered by the segment (runs its re-entry rule lets
        start for the entering users) or exited through it (active runs of entering users)."""
        journeys = self._journeys()  # (declares the journey tables)
        out = []
        for row in self.meta.query("SELECT id, name, version, trigger_type, trigger_segment_id FROM journeys"
                                   " WHERE tenant_id = ? AND status = 'active' ORDER BY id", (tenant_id,)):
            definition = journeys.definition(row["id"], row["version"])
            exit_condition = definition.get("exitCondition") or {}
            entry = row["trigger_type"] == "segment" and row["trigger_segment_id"] == segment_id
            exits = exit_condition.get("type") == "segment" and exit_condition.get("segmentId") == segment_id
            if not (entry or exits):
                continue
            found: dict[str, Any] = {"id": row["id"], "name": row["name"]}
            if entry:
                found["trigger"] = "segment_entry"
                found["runs_started"] = self._runs_started(row["id"], definition["reentry"], enter)
            if exits:
                found["exit_condition"] = "segment"
                found["runs_exited"] = self._count_users("SELECT DISTINCT user_id FROM journey_runs"
                                                         " WHERE journey_id = ? AND status = 'active'",
                                                         (row["id"],), enter)
            out.append(found)
        return out

    def _runs_started(self, journey_id: int, reentry: dict[str, Any], enter: pa.Array) -> int:
        """Entering users whose re-entry rule admits a new run (``Journeys.start_runs``' rule)."""
        if reentry["mode"] == "always":
            return len(enter)
        since = "" if reentry["mode"] == "once" else db_time(utc_now() - timedelta(days=reentry["days"]))
        blocked = self._count_users("SELECT user_id FROM journey_runs WHERE journey_id = ? GROUP BY user_id"
                                    " HAVING max(started_at) > ?", (journey_id, since), enter)
        return len(enter) - blocked

    def _count_users(self, sql: str, params: tuple, among: pa.Array) -> int:
        """How many of ``among`` the query's user ids (first column) hold."""
        users = pa.array([row[0] for row in self.meta.query(sql, params)], pa.string())
        return int(pc.sum(pc.is_in(among, value_set=users)).as_py() or 0)

    def _broadcasts(self, tenant_id: int, segment_id: int, drafted: pa.Array) -> list[dict[str, Any]]:
        """Prepared (unexpired) broadcasts targeting the segment. Their audience was frozen when they
        were prepared and is what redeeming sends; preparing again after the edit is computed would send
        to the draft's members: the adds and removes say how that audience differs."""
        self._broadcast_tables()
        out = []
        for row in self.meta.query("SELECT id, name, audience, audience_size, expires_at FROM broadcasts"
                                   " WHERE tenant_id = ? AND status = 'prepared' ORDER BY id", (tenant_id,)):
            targets = orjson.loads(row["audience"]).get("segmentId") == segment_id
            if not targets or parse_db_time(row["expires_at"]) <= utc_now():
                continue
            frozen = pa.array([r[0] for r in self.meta.query(
                "SELECT user_id FROM broadcast_recipients WHERE broadcast_id = ?", (row["id"],))], pa.string())
            out.append({"id": row["id"], "name": row["name"], "status": "prepared",
                        "expires_at": api_time(row["expires_at"]), "audience_size": row["audience_size"],
                        "draft_audience_size": len(drafted),
                        "adds": len(_minus(drafted, frozen)), "removes": len(_minus(frozen, drafted))})
        return out


_TOKEN_PREFIX = "imp_"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


__all__ = ["Explainer", "JourneyDefinitions", "check_user_id", "InvalidUserId", "InvalidImpact", "ImpactOutdated",
           "NoDefinition", "ExplainConflict", "DefinitionError", "DEFAULT_SAMPLE", "MAX_SAMPLE"]
