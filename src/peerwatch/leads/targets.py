"""Targets: observations grouped into stable identities, placed, scored and explained (issue 4).

A target is "one peer as far as the evidence shows": the observations of one listening endpoint
(address and port) and of the endpoints linked to it by the identity rules of `identity.py`. Every
link is recorded with the sentence that justifies it, and an investigator can split a wrong one.

Target ids are stable: a refresh only adds observations to existing targets or creates new ones;
a split leaves the original id to the part the investigator keeps. Claims and the workflow refer to
targets by id (docs/leads.md).
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from peerwatch.domain.hashes import Digest, HashKind, HashParseError
from peerwatch.enrich.placement import Enricher, Placement
from peerwatch.errors import InputError
from peerwatch.evidence.record import CLAIM_METHODS
from peerwatch.leads.identity import IdentityConfig, Linker, LinkState, Seen, iso, peer_key
from peerwatch.leads.score import (
    MIB,
    ScoreComponent,
    ScoreConfig,
    ScoreFacts,
    components,
    score_sql,
)
from peerwatch.leads.workflow import LeadState
from peerwatch.storage.database import writer
from peerwatch.storage.schema import (
    evidence_records,
    lead_states,
    sensors,
    target_contents,
    target_cursors,
    target_items,
    target_links,
    target_meta,
    target_observations,
    targets,
)
from peerwatch.watchlist.store import Match, WatchlistStore

__all__ = [
    "RefreshStats",
    "TargetConfig",
    "TargetExplanation",
    "TargetLink",
    "TargetObservation",
    "TargetPlacement",
    "TargetStore",
    "TargetSummary",
    "target_filter",
    "target_label",
]


def target_label(target_id: int) -> str:
    """The label investigators quote: "T-000042" (stable: it is derived from the id)."""
    return f"T-{target_id:06d}"


@dataclass(frozen=True, slots=True)
class TargetSummary:
    id: int
    label: str  # "T-000042", stable
    jurisdiction: str | None
    jurisdiction_name: str | None
    unit: str | None
    score: int  # score.py; the components are in `TargetStore.explain`
    first_ms: int
    last_ms: int
    ips: tuple[str, ...]
    flags: frozenset[str]
    networks: tuple[str, ...]
    content_keys: tuple[str, ...]
    # The unit holding the lead (claim or transfer), when it is not only `unit`: it may read the
    # target too, wherever the target is routed (docs/operations.md, deconfliction).
    holder_unit: str | None = None


@dataclass(frozen=True, slots=True)
class TargetObservation:
    sensor_id: str
    seq: int
    observed_ms: int
    network: str
    method: str
    outcome: str | None
    content_key: str
    ip: str
    port: int | None
    client: str | None
    completion_ppm: int | None
    placement: Placement


@dataclass(frozen=True, slots=True)
class TargetLink:
    """Why a set of observations belongs to a target: "linked because ..."."""

    id: int  # what `peerwatch target split ID --link LINK_ID` takes
    target_id: int
    kind: str  # "origin", "endpoint", "user-hash", "port-change", "address-change", "split"
    reason: str  # the sentence
    ip: str  # the address the link brought into the target
    port: int | None
    created_ms: int  # observation time of the first observation that made the link
    sensor_id: str  # that observation
    seq: int
    observations: int  # how many observations of the target hang on this link


@dataclass(frozen=True, slots=True)
class TargetPlacement:
    """Where the target was placed, from which address, with which databases, and when."""

    ip: str | None  # the address of the latest positive observation (None: nothing positive yet)
    observed_ms: int | None  # when that address was seen
    placed_ms: int | None  # when the placement was computed (wall clock of the refresh)
    country: str | None
    jurisdiction: str | None
    jurisdiction_name: str | None
    jurisdiction_method: str | None
    unit: str | None
    confidence: str  # location confidence: "high", "medium", "low" or "none"
    flags: frozenset[str]  # flags of every address of the target
    sources: tuple[str, ...]  # GeoIP / flag list / jurisdiction map names and builds
    caveats: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TargetExplanation:
    summary: TargetSummary
    components: tuple[ScoreComponent, ...]  # sum of points == summary.score
    links: tuple[TargetLink, ...]
    placement: TargetPlacement
    as_of_ms: int  # the time recency was measured against


@dataclass(frozen=True, slots=True)
class RefreshStats:
    records: int  # evidence records assigned by this refresh
    new_targets: int
    touched_targets: int
    links: int  # links made (new endpoints joined to a target)


@dataclass(frozen=True, slots=True)
class TargetConfig:
    identity: IdentityConfig = field(default_factory=IdentityConfig)  # identity.py rules
    score: ScoreConfig = field(default_factory=ScoreConfig)  # score.py weights and severities
    chunk: int = 20_000  # evidence records assigned per transaction


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def possession_kind(method: str, outcome: str | None) -> str:
    """ "possession", "claim" or "negative". A peer list (CLAIM_METHODS) is only ever a claim,
    whatever outcome a record carries (docs/evidence.md)."""
    if outcome == "possession":
        return "claim" if method in CLAIM_METHODS else "possession"
    if outcome == "claim":
        return "claim"
    return "negative"


def _sql_possession(c: Any) -> ColumnElement[bool]:
    return and_(c.outcome == "possession", c.method.notin_(sorted(CLAIM_METHODS)))


def _sql_positive(c: Any) -> ColumnElement[bool]:
    positive: ColumnElement[bool] = c.outcome.in_(["possession", "claim"])
    return positive


def location_confidence(place: Placement | None) -> str:
    """ "none" without a jurisdiction; "low" behind Tor, a VPN or a hosting provider (the address
    is not the user's); "medium" behind CGNAT or a mobile network, or when the jurisdiction is
    uncertain; else "high". Flags lower this, never the score."""
    if place is None or place.jurisdiction is None:
        return "none"
    if place.flags & {"tor", "vpn", "hosting"}:
        return "low"
    if place.flags & {"cgnat", "mobile"} or place.jurisdiction_confidence == "uncertain":
        return "medium"
    return "high"


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split()) if text else ()


def _batched(items: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


@dataclass(slots=True)
class _Parsed:
    sensor_id: str
    seq: int
    observed_ms: int
    network: str
    method: str
    content_key: str
    ip: str
    port: int | None
    client: str | None
    completion_ppm: int | None
    outcome: str | None
    peer_key: str | None = None  # identity.peer_key: the eD2k user hash


def _unspecified(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_unspecified
    except ValueError:
        return False


@dataclass(slots=True)
class _Item:
    network: str
    first_ms: int
    last_ms: int
    possessions: int = 0
    claims: int = 0
    negatives: int = 0
    best_ppm: int | None = None
    positive_first_ms: int | None = None
    positive_last_ms: int | None = None
    new: bool = True

    def add(self, kind: str, at_ms: int, ppm: int | None) -> None:
        self.first_ms = min(self.first_ms, at_ms)
        self.last_ms = max(self.last_ms, at_ms)
        if kind == "negative":
            self.negatives += 1
            return
        if kind == "possession":
            self.possessions += 1
            if ppm is not None and (self.best_ppm is None or ppm > self.best_ppm):
                self.best_ppm = ppm
        else:
            self.claims += 1
        if self.positive_first_ms is None or at_ms < self.positive_first_ms:
            self.positive_first_ms = at_ms
        if self.positive_last_ms is None or at_ms > self.positive_last_ms:
            self.positive_last_ms = at_ms


_ITEM_FIELDS = (
    "network",
    "first_ms",
    "last_ms",
    "possessions",
    "claims",
    "negatives",
    "best_ppm",
    "positive_first_ms",
    "positive_last_ms",
)

_BATCH_IDS = 500  # ids per IN (...) query

# What `ranked` reads, in the order it unpacks them.
_SUMMARY_COLUMNS = (
    "id",
    "jurisdiction",
    "jurisdiction_name",
    "unit",
    "first_ms",
    "last_ms",
    "ips",
    "flags",
    "networks",
    "content_keys",
)
_NO_FLAGS: frozenset[str] = frozenset()


#: The `state` filter of `TargetStore.ranked`: a lead state of `leads/workflow.py`, or "open"
#: (every state but closed).
OPEN_STATE = "open"
LEAD_STATES = tuple(s.value for s in LeadState)


def target_filter(
    *,
    jurisdiction: str | None = None,
    unit: str | None = None,
    units: Collection[str] | None = None,
    state: str | None = None,
) -> list[ColumnElement[bool]]:
    """The WHERE clauses of a target listing over `targets LEFT JOIN lead_states`: the one
    definition the ranked list, its count and the map share, so that the map's number for a
    jurisdiction is the length of the list its link opens.

    A target without a `lead_states` row was never touched: its lead is "new" (workflow.py).
    `units` is the reader's scope: the targets routed to one of them and the leads one of them
    holds (after a claim or a transfer; docs/operations.md, deconfliction)."""
    t, ls = targets.c, lead_states.c
    where: list[ColumnElement[bool]] = [t.observations > 0]
    if jurisdiction is not None:
        where.append(t.jurisdiction == jurisdiction)
    if unit is not None:
        where.append(t.unit == unit)
    if units is not None:
        where.append(or_(t.unit.in_(sorted(units)), ls.unit.in_(sorted(units))))
    if state == OPEN_STATE:
        where.append(or_(ls.state.is_(None), ls.state != LeadState.CLOSED.value))
    elif state == LeadState.NEW.value:
        where.append(or_(ls.state.is_(None), ls.state == LeadState.NEW.value))
    elif state is not None:
        if state not in LEAD_STATES:
            choices = ", ".join((OPEN_STATE, *LEAD_STATES))
            raise InputError(f"unknown lead state {state!r}: one of {choices}", field="state")
        where.append(ls.state == state)
    return where


class TargetStore:
    """Targets in the database (tables of migration 0003), built from the evidence log."""

    def __init__(
        self,
        engine: Engine,
        enricher: Enricher,
        watchlist: WatchlistStore,
        config: TargetConfig | None = None,
        clock_ms: Callable[[], int] = _now_ms,
    ) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self._enricher = enricher
        self._watchlist = watchlist
        self.config = config or TargetConfig()
        self._clock_ms = clock_ms
        # The enricher caches by canonical address; this skips re-canonicalising known strings.
        self._placed: dict[str, Placement] = {}

    def _place(self, ip: str) -> Placement:
        hit = self._placed.get(ip)
        if hit is None:
            hit = self._placed[ip] = self._enricher.place(ip)
        return hit

    # ----------------------------------------------------------------------------------- refresh

    def pending(self) -> int:
        """Evidence records not yet assigned to a target."""
        e, c = evidence_records.c, target_cursors.c
        query = (
            select(func.count())
            .select_from(evidence_records.outerjoin(target_cursors, c.sensor_id == e.sensor_id))
            .where(e.seq > func.coalesce(c.last_seq, 0))
        )
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def refresh(self, progress: Callable[[int, int], None] | None = None) -> RefreshStats:
        """Assign evidence records not yet assigned (idempotent, incremental); `progress(done,
        total)` is called after each chunk. Each chunk is one transaction: a failure leaves the
        targets as they were after the last whole chunk, and the next refresh goes on from there."""
        total = self.pending()
        done = records = links = 0
        new_targets: set[int] = set()
        touched: set[int] = set()
        with self._writer.begin() as conn:
            self._lock(conn)
            self._sync_watchlist(conn)
        while True:
            with self._writer.begin() as conn:
                self._lock(conn)
                rows = self._next_chunk(conn)
                if not rows:
                    break
                made, touch, n_links = self._assign(conn, rows)
            records += len(rows)
            links += n_links
            new_targets |= made
            touched |= touch
            done += len(rows)
            if progress is not None:
                progress(done, max(total, done))
        return RefreshStats(records, len(new_targets), len(touched), links)

    @staticmethod
    def _lock(conn: Connection) -> None:
        """One refresh or split at a time. SQLite: the writer's BEGIN IMMEDIATE already is that
        lock; PostgreSQL: a transaction-scoped advisory lock."""
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242000003)")

    def _next_chunk(self, conn: Connection) -> list[_Parsed]:
        cursors = {r.sensor_id: int(r.last_seq) for r in conn.execute(select(target_cursors))}
        e = evidence_records.c
        out: list[_Parsed] = []
        for (sensor_id,) in conn.execute(select(sensors.c.id).order_by(sensors.c.id)):
            room = self.config.chunk - len(out)
            if room <= 0:
                break
            query = (
                select(e.sensor_id, e.seq, e.record, e.observed_ms, e.network, e.method)
                .add_columns(e.content_key, e.ip, e.port)
                .where(and_(e.sensor_id == sensor_id, e.seq > cursors.get(sensor_id, 0)))
                .order_by(e.seq)
                .limit(room)
            )
            for row in conn.execute(query):
                out.append(self._parse(row))
        return out

    @staticmethod
    def _parse(row: Sequence[Any]) -> _Parsed:
        # The signed bytes are the truth for the fields the query columns do not copy; the chain
        # itself is checked by `peerwatch evidence verify`, not here.
        sensor_id, seq, data, observed_ms, network, method, content_key, ip, port = row
        obj = json.loads(data if isinstance(data, bytes | str) else bytes(data))
        client = obj.get("client")
        ppm = obj.get("completion_ppm")
        outcome = obj.get("outcome")
        return _Parsed(
            sensor_id,
            int(seq),
            int(observed_ms),
            network,
            method,
            content_key,
            ip,
            None if port is None else int(port),
            client if isinstance(client, str) else None,
            ppm if isinstance(ppm, int) and not isinstance(ppm, bool) else None,
            outcome if isinstance(outcome, str) else None,
            peer_key(network, obj.get("peer_id")),
        )

    def _assign(self, conn: Connection, rows: list[_Parsed]) -> tuple[set[int], set[int], int]:
        rows.sort(key=lambda r: (r.observed_ms, r.sensor_id, r.seq))
        cfg = self.config.identity
        horizon = max(cfg.window_ms, cfg.relink_gap_ms)
        since = rows[0].observed_ms - horizon
        lk = target_links.c
        loaded = [
            self._link_state(r)
            for r in conn.execute(select(target_links).where(lk.last_ms >= since))
        ]
        linker = Linker(cfg)
        linker.load(loaded)
        next_target = int(conn.execute(select(func.max(targets.c.id))).scalar() or 0) + 1
        next_link = int(conn.execute(select(func.max(lk.id))).scalar() or 0) + 1
        made: set[int] = set()
        changed: dict[int, LinkState] = {}
        items: dict[tuple[int, str], _Item] = {}
        obs_rows: list[tuple[Any, ...]] = []
        cursors: dict[str, int] = {}
        for o in rows:
            if _unspecified(o.ip):
                # A low-id source in an eD2k server's list has no address we could reach or
                # place (recorded as 0.0.0.0): a claim about nobody in particular, no target.
                cursors[o.sensor_id] = max(cursors.get(o.sensor_id, 0), o.seq)
                continue
            asn = self._place(o.ip).asn
            decision = linker.decide(
                Seen(
                    o.sensor_id,
                    o.seq,
                    o.observed_ms,
                    o.network,
                    o.ip,
                    o.port,
                    o.client,
                    asn,
                    o.peer_key,
                )
            )
            link = decision.existing
            if link is None:
                target_id = decision.target_id
                if target_id is None:
                    target_id = next_target
                    next_target += 1
                    made.add(target_id)
                link = LinkState(
                    id=next_link,
                    target_id=target_id,
                    kind=decision.kind,
                    reason=decision.reason,
                    network=o.network,
                    ip=o.ip,
                    port=o.port,
                    client=o.client,
                    asn=asn,
                    first_ms=o.observed_ms,
                    last_ms=o.observed_ms,
                    sensor_id=o.sensor_id,
                    seq=o.seq,
                    new=True,
                    peer_key=o.peer_key,
                )
                next_link += 1
                linker.add(link)
            else:
                if link.client is None and o.client is not None:
                    linker.note_client(link, o.client)
                if link.peer_key is None and o.peer_key is not None:
                    linker.note_peer_key(link, o.peer_key)
            kind = possession_kind(o.method, o.outcome)
            link.first_ms = min(link.first_ms, o.observed_ms)
            link.last_ms = max(link.last_ms, o.observed_ms)
            link.observations += 1
            if kind != "negative" and (
                link.positive_last_ms is None or o.observed_ms > link.positive_last_ms
            ):
                link.positive_last_ms = o.observed_ms
            link.dirty = True
            changed[link.id] = link
            key = (link.target_id, o.content_key)
            item = items.get(key)
            if item is None:
                item = items[key] = _Item(o.network, o.observed_ms, o.observed_ms)
            item.add(kind, o.observed_ms, o.completion_ppm)
            obs_rows.append(
                (
                    o.sensor_id,
                    o.seq,
                    link.target_id,
                    link.id,
                    o.observed_ms,
                    o.network,
                    o.method,
                    o.outcome,
                    o.content_key,
                    o.ip,
                    o.port,
                    o.client,
                    o.completion_ppm,
                )
            )
            cursors[o.sensor_id] = max(cursors.get(o.sensor_id, 0), o.seq)
        now = self._clock_ms()
        n_links = sum(1 for x in changed.values() if x.new)
        if made:
            conn.execute(insert(targets), [self.blank_target(t, now, None) for t in sorted(made)])
        self._write_links(conn, list(changed.values()))
        insert_observation_rows(conn, obs_rows)
        self._merge_items(conn, items)
        self._ensure_contents(conn, {o.content_key for o in rows})
        touched = {t for t, _ in items}
        self._recompute(conn, sorted(touched), now)
        self._advance(conn, cursors)
        return made, touched, n_links

    @staticmethod
    def _link_state(r: Row[Any]) -> LinkState:
        return LinkState(
            id=int(r.id),
            target_id=int(r.target_id),
            kind=r.kind,
            reason=r.reason,
            network=r.network,
            ip=r.ip,
            port=None if r.port is None else int(r.port),
            client=r.client,
            asn=None if r.asn is None else int(r.asn),
            first_ms=int(r.first_ms),
            last_ms=int(r.last_ms),
            sensor_id=r.sensor_id,
            seq=int(r.seq),
            observations=int(r.observations),
            positive_last_ms=None if r.positive_last_ms is None else int(r.positive_last_ms),
            peer_key=r.peer_key,
        )

    @staticmethod
    def blank_target(target_id: int, now: int, split_from: int | None) -> dict[str, Any]:
        """A `targets` row with no facts yet; `_recompute` fills it in the same transaction."""
        return {
            "id": target_id,
            "created_ms": now,
            "split_from": split_from,
            "first_ms": 0,
            "last_ms": 0,
            "observations": 0,
            "positive_first_ms": None,
            "positive_last_ms": None,
            "possessed_items": 0,
            "max_severity": 0,
            "possessed_bytes": 0,
            "possessed_mib_bits": 0,
            "seeded_items": 0,
            "claimed_items": 0,
            "positive_networks": 0,
            "networks": "",
            "ips": "",
            "content_keys": "",
            "flags": "",
            "location_confidence": "none",
            "place_sources": "[]",
        }

    @staticmethod
    def _write_links(conn: Connection, links: list[LinkState]) -> None:
        new = [x for x in links if x.new]
        old = [x for x in links if not x.new]
        if new:
            conn.execute(
                insert(target_links),
                [
                    {
                        "id": x.id,
                        "target_id": x.target_id,
                        "kind": x.kind,
                        "reason": x.reason,
                        "network": x.network,
                        "ip": x.ip,
                        "port": x.port,
                        "client": x.client,
                        "asn": x.asn,
                        "first_ms": x.first_ms,
                        "last_ms": x.last_ms,
                        "positive_last_ms": x.positive_last_ms,
                        "sensor_id": x.sensor_id,
                        "seq": x.seq,
                        "observations": x.observations,
                        "peer_key": x.peer_key,
                    }
                    for x in new
                ],
            )
        if old:
            conn.execute(
                update(target_links)
                .where(target_links.c.id == bindparam("b_id"))
                .values(
                    client=bindparam("b_client"),
                    peer_key=bindparam("b_key"),
                    first_ms=bindparam("b_first"),
                    last_ms=bindparam("b_last"),
                    positive_last_ms=bindparam("b_pos"),
                    observations=bindparam("b_n"),
                ),
                [
                    {
                        "b_id": x.id,
                        "b_client": x.client,
                        "b_key": x.peer_key,
                        "b_first": x.first_ms,
                        "b_last": x.last_ms,
                        "b_pos": x.positive_last_ms,
                        "b_n": x.observations,
                    }
                    for x in old
                ],
            )
        for x in links:
            x.new = x.dirty = False

    def _merge_items(self, conn: Connection, items: dict[tuple[int, str], _Item]) -> None:
        i = target_items.c
        by_target: dict[int, list[str]] = {}
        for t, k in items:
            by_target.setdefault(t, []).append(k)
        for batch in _batched(sorted(by_target), _BATCH_IDS):
            for r in conn.execute(select(target_items).where(i.target_id.in_(batch))):
                delta = items.get((int(r.target_id), r.content_key))
                if delta is None:
                    continue
                delta.new = False
                delta.first_ms = min(delta.first_ms, int(r.first_ms))
                delta.last_ms = max(delta.last_ms, int(r.last_ms))
                delta.possessions += int(r.possessions)
                delta.claims += int(r.claims)
                delta.negatives += int(r.negatives)
                if r.best_ppm is not None and (
                    delta.best_ppm is None or int(r.best_ppm) > delta.best_ppm
                ):
                    delta.best_ppm = int(r.best_ppm)
                for name, pick in (("positive_first_ms", min), ("positive_last_ms", max)):
                    old = getattr(r, name)
                    mine = getattr(delta, name)
                    if old is not None:
                        setattr(delta, name, int(old) if mine is None else pick(mine, int(old)))
        rows = [
            {"target_id": t, "content_key": k, **{f: getattr(v, f) for f in _ITEM_FIELDS}}
            for (t, k), v in items.items()
        ]
        new = [r for r, v in zip(rows, items.values(), strict=True) if v.new]
        old = [r for r, v in zip(rows, items.values(), strict=True) if not v.new]
        if new:
            conn.execute(insert(target_items), new)
        if old:
            conn.execute(
                update(target_items)
                .where(
                    and_(
                        i.target_id == bindparam("b_target"),
                        i.content_key == bindparam("b_key"),
                    )
                )
                .values({f: bindparam(f"b_{f}") for f in _ITEM_FIELDS}),
                [
                    {
                        "b_target": r["target_id"],
                        "b_key": r["content_key"],
                        **{f"b_{f}": r[f] for f in _ITEM_FIELDS},
                    }
                    for r in old
                ],
            )

    def _advance(self, conn: Connection, cursors: dict[str, int]) -> None:
        c = target_cursors.c
        known = {
            r.sensor_id
            for r in conn.execute(select(c.sensor_id).where(c.sensor_id.in_(list(cursors))))
        }
        for sensor_id, seq in sorted(cursors.items()):
            if sensor_id in known:
                conn.execute(
                    update(target_cursors)
                    .where(and_(c.sensor_id == sensor_id, c.last_seq < seq))
                    .values(last_seq=seq)
                )
            else:
                conn.execute(insert(target_cursors).values(sensor_id=sensor_id, last_seq=seq))

    # --------------------------------------------------------------------------------- contents

    def _watchlist_state(self) -> str:
        return json.dumps(sorted((x.name, x.version) for x in self._watchlist.lists()))

    def _sync_watchlist(self, conn: Connection) -> None:
        """When the active lists changed since the contents were matched, match every content key
        again and recompute every target's score facts."""
        state = self._watchlist_state()
        m = target_meta.c
        stored = conn.execute(select(m.value).where(m.name == "watchlist")).scalar()
        if stored == state:
            return
        if stored is None:
            conn.execute(insert(target_meta).values(name="watchlist", value=state))
        else:
            conn.execute(update(target_meta).where(m.name == "watchlist").values(value=state))
        keys = [str(k) for k in conn.execute(select(target_contents.c.content_key)).scalars()]
        if not keys:
            return
        conn.execute(delete(target_contents))
        self._ensure_contents(conn, set(keys))
        ids = [int(t) for t in conn.execute(select(targets.c.id).order_by(targets.c.id)).scalars()]
        self._recompute(conn, ids, self._clock_ms())

    def _ensure_contents(self, conn: Connection, keys: set[str]) -> None:
        c = target_contents.c
        known: set[str] = set()
        ordered = sorted(keys)
        for batch in _batched(ordered, _BATCH_IDS):
            known.update(
                conn.execute(select(c.content_key).where(c.content_key.in_(batch))).scalars()
            )
        missing = [k for k in ordered if k not in known]
        if not missing:
            return
        digests = {k: _digest(k) for k in missing}
        # One call (one connection) for every new key; matches come back keyed by their query.
        found: dict[Digest, list[Match]] = {}
        for m in self._watchlist.match([d for d in digests.values() if d is not None]):
            found.setdefault(m.query, []).append(m)
        rows = []
        for k in missing:
            d = digests[k]
            rows.append(self._content_facts(k, [] if d is None else found.get(d, [])))
        conn.execute(insert(target_contents), rows)

    def _content_facts(self, content_key: str, matches: list[Match]) -> dict[str, Any]:
        sev = self.config.score.severity_of
        best = max(matches, key=lambda m: (sev(m.category), m.category or ""), default=None)
        sizes = [m.size for m in matches if m.size is not None]
        return {
            "content_key": content_key,
            "watched": bool(matches),
            "category": None if best is None else best.category,
            "severity": 0 if best is None else sev(best.category),
            "size": max(sizes) if sizes else None,
            "lists": " ".join(sorted({m.list_name for m in matches})),
        }

    # ------------------------------------------------------------------------------- aggregates

    def _recompute(self, conn: Connection, ids: Sequence[int], now: int) -> None:
        """Summaries of `ids` from their links and items: the score facts, the addresses, the
        flags, and the placement of the latest positive address."""
        i, c, lk = target_items.c, target_contents.c, target_links.c
        updates: list[dict[str, Any]] = []
        for batch in _batched(list(ids), _BATCH_IDS):
            item_rows: dict[int, list[Row[Any]]] = {t: [] for t in batch}
            query = (
                select(target_items, c.watched, c.severity, c.size)
                .join_from(target_items, target_contents, c.content_key == i.content_key)
                .where(i.target_id.in_(batch))
            )
            for r in conn.execute(query):
                item_rows[int(r.target_id)].append(r)
            link_rows: dict[int, list[Row[Any]]] = {t: [] for t in batch}
            query2 = (
                select(lk.target_id, lk.ip, lk.first_ms, lk.last_ms, lk.positive_last_ms)
                .add_columns(lk.observations, lk.id)
                .where(lk.target_id.in_(batch))
                .order_by(lk.first_ms, lk.id)
            )
            for r in conn.execute(query2):
                link_rows[int(r.target_id)].append(r)
            for t in batch:
                updates.append(self._summary_values(t, item_rows[t], link_rows[t], now))
        if updates:
            cols = [k for k in updates[0] if k != "id"]
            conn.execute(
                update(targets)
                .where(targets.c.id == bindparam("b_id"))
                .values({k: bindparam(f"b_{k}") for k in cols}),
                [{f"b_{k}": v for k, v in u.items()} for u in updates],
            )

    def _summary_values(
        self, target_id: int, items: list[Row[Any]], links: list[Row[Any]], now: int
    ) -> dict[str, Any]:
        watched = [r for r in items if r.watched]
        held = [r for r in watched if r.possessions > 0]
        held_bytes = sum((r.best_ppm or 0) * (r.size or 0) // 1_000_000 for r in held)
        positive = [r for r in watched if r.positive_last_ms is not None]
        ips = list(dict.fromkeys(r.ip for r in links))
        flags: set[str] = set()
        for ip in ips:
            flags |= self._place(ip).flags
        place_link = max(
            links,
            key=lambda r: (
                r.positive_last_ms is not None,
                r.positive_last_ms or r.last_ms,
                r.id,
            ),
            default=None,
        )
        place = None if place_link is None else self._place(place_link.ip)
        return {
            "id": target_id,
            "first_ms": min((int(r.first_ms) for r in links), default=0),
            "last_ms": max((int(r.last_ms) for r in links), default=0),
            "observations": sum(int(r.observations) for r in links),
            "positive_first_ms": min((int(r.positive_first_ms) for r in positive), default=None),
            "positive_last_ms": max((int(r.positive_last_ms) for r in positive), default=None),
            "possessed_items": len(held),
            "max_severity": max((int(r.severity) for r in held), default=0),
            "possessed_bytes": held_bytes,
            "possessed_mib_bits": (held_bytes // MIB).bit_length(),
            "seeded_items": sum(1 for r in held if r.best_ppm == 1_000_000),
            "claimed_items": sum(1 for r in watched if r.possessions == 0 and r.claims > 0),
            "positive_networks": len({r.network for r in positive}),
            "networks": " ".join(sorted({r.network for r in items})),
            "ips": " ".join(ips),
            "content_keys": " ".join(sorted(r.content_key for r in items)),
            "flags": " ".join(sorted(flags)),
            "place_ip": None if place is None else place.ip,
            "place_observed_ms": None
            if place_link is None
            else int(place_link.positive_last_ms or place_link.last_ms),
            "placed_ms": None if place is None else now,
            "country": None if place is None else place.country,
            "jurisdiction": None if place is None else place.jurisdiction,
            "jurisdiction_name": None if place is None else place.jurisdiction_name,
            "jurisdiction_method": None if place is None else place.jurisdiction_method,
            "jurisdiction_confidence": None if place is None else place.jurisdiction_confidence,
            "unit": None if place is None else place.unit,
            "location_confidence": location_confidence(place),
            "place_sources": json.dumps([] if place is None else list(place.sources)),
        }

    # ---------------------------------------------------------------------------------- reading

    def ranked(
        self,
        *,
        jurisdiction: str | None = None,
        unit: str | None = None,
        units: Collection[str] | None = None,
        as_of_ms: int | None = None,
        state: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[TargetSummary]:
        """Targets by score, highest first; ties by latest observation, then by id (lowest
        first), so the same data and `as_of_ms` always give the same order. Recency is measured
        against `as_of_ms` (default: now).

        `state` narrows to one lead state, "open" (not closed) or None (any; `target_filter`).
        `limit`/`offset` page through that order in the database (LIMIT/OFFSET): with the same
        data and `as_of_ms`, consecutive pages neither repeat nor skip a target (the order is total
        because it ends on the primary key). `count_ranked` counts the same rows."""
        if (limit is not None and limit < 0) or offset < 0:
            raise InputError("limit and offset cannot be negative", field="limit")
        as_of = self._clock_ms() if as_of_ms is None else as_of_ms
        t, ls = targets.c, lead_states.c
        points = score_sql(t, as_of, self.config.score).label("score")
        query = (
            select(*[t[name] for name in _SUMMARY_COLUMNS], points, ls.unit)
            .select_from(targets.outerjoin(lead_states, ls.target_id == t.id))
            .where(*target_filter(jurisdiction=jurisdiction, unit=unit, units=units, state=state))
            .order_by(points.desc(), t.last_ms.desc(), t.id)
        )
        if limit is not None:
            query = query.limit(limit)
        if offset:
            query = query.offset(offset)
        with self._engine.connect() as conn:
            # The database scores and sorts; this loop, once per target, only builds the summaries.
            return [
                TargetSummary(
                    id=tid,
                    label=f"T-{tid:06d}",
                    jurisdiction=jur,
                    jurisdiction_name=jur_name,
                    unit=unit_code,
                    score=int(value),
                    first_ms=first_ms,
                    last_ms=last_ms,
                    ips=tuple(ips.split()),
                    flags=frozenset(flags.split()) if flags else _NO_FLAGS,
                    networks=tuple(networks.split()),
                    content_keys=tuple(keys.split()),
                    holder_unit=holder,
                )
                for (
                    tid,
                    jur,
                    jur_name,
                    unit_code,
                    first_ms,
                    last_ms,
                    ips,
                    flags,
                    networks,
                    keys,
                    value,
                    holder,
                ) in conn.execute(query)
            ]

    def count_ranked(
        self,
        *,
        jurisdiction: str | None = None,
        unit: str | None = None,
        units: Collection[str] | None = None,
        state: str | None = None,
    ) -> int:
        """How many targets `ranked` lists with the same filters (one COUNT in the database)."""
        t, ls = targets.c, lead_states.c
        query = (
            select(func.count())
            .select_from(targets.outerjoin(lead_states, ls.target_id == t.id))
            .where(*target_filter(jurisdiction=jurisdiction, unit=unit, units=units, state=state))
        )
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def get(self, target_id: int, *, as_of_ms: int | None = None) -> TargetSummary:
        """The target `target_id`; InputError naming it when there is none."""
        summary = self._summary(self._row(target_id), self._as_of(as_of_ms))
        with self._engine.connect() as conn:
            holder = conn.execute(
                select(lead_states.c.unit).where(lead_states.c.target_id == target_id)
            ).scalar()
        return replace(summary, holder_unit=holder)

    def _as_of(self, as_of_ms: int | None) -> int:
        return self._clock_ms() if as_of_ms is None else as_of_ms

    def _row(self, target_id: int) -> Row[Any]:
        with self._engine.connect() as conn:
            row = conn.execute(select(targets).where(targets.c.id == target_id)).first()
        if row is None or int(row.observations) == 0:
            raise InputError(f"no target {target_label(target_id)} (id {target_id})", field="id")
        return row

    def facts(self, row: Row[Any]) -> ScoreFacts:
        return ScoreFacts(
            possessed_items=int(row.possessed_items),
            max_severity=int(row.max_severity),
            possessed_bytes=int(row.possessed_bytes),
            seeded_items=int(row.seeded_items),
            claimed_items=int(row.claimed_items),
            networks=int(row.positive_networks),
            first_ms=None if row.positive_first_ms is None else int(row.positive_first_ms),
            last_ms=None if row.positive_last_ms is None else int(row.positive_last_ms),
        )

    def _summary(self, row: Row[Any], as_of: int) -> TargetSummary:
        parts = components(self.facts(row), as_of, self.config.score)
        return TargetSummary(
            id=int(row.id),
            label=target_label(int(row.id)),
            jurisdiction=row.jurisdiction,
            jurisdiction_name=row.jurisdiction_name,
            unit=row.unit,
            score=sum(p.points for p in parts),
            first_ms=int(row.first_ms),
            last_ms=int(row.last_ms),
            ips=_words(row.ips),
            flags=frozenset(_words(row.flags)),
            networks=_words(row.networks),
            content_keys=_words(row.content_keys),
        )

    def observations(
        self, target_id: int, *, since_ms: int | None = None
    ) -> list[TargetObservation]:
        """The target's observations in time order (placed with the current enrichment)."""
        self._row(target_id)
        o = target_observations.c
        query = select(target_observations).where(o.target_id == target_id)
        if since_ms is not None:
            query = query.where(o.observed_ms >= since_ms)
        query = query.order_by(o.observed_ms, o.sensor_id, o.seq)
        with self._engine.connect() as conn:
            rows = list(conn.execute(query))
        return [
            TargetObservation(
                sensor_id=r.sensor_id,
                seq=int(r.seq),
                observed_ms=int(r.observed_ms),
                network=r.network,
                method=r.method,
                outcome=r.outcome,
                content_key=r.content_key,
                ip=r.ip,
                port=None if r.port is None else int(r.port),
                client=r.client,
                completion_ppm=None if r.completion_ppm is None else int(r.completion_ppm),
                placement=self._enricher.place(r.ip),
            )
            for r in rows
        ]

    def links(self, target_id: int) -> list[TargetLink]:
        """The target's identity links, oldest first."""
        lk = target_links.c
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(target_links).where(lk.target_id == target_id).order_by(lk.first_ms, lk.id)
            )
            return [_target_link(r) for r in rows]

    def explain(self, target_id: int, *, as_of_ms: int | None = None) -> TargetExplanation:
        """The score with each component, the links with their reasons, and the placement."""
        row = self._row(target_id)
        return self._explanation(row, tuple(self.links(target_id)), self._as_of(as_of_ms))

    def explain_many(
        self, target_ids: Sequence[int], *, as_of_ms: int | None = None
    ) -> list[TargetExplanation]:
        """`explain` for many targets at once (a few queries per 500), in the order given;
        InputError naming the first unknown id."""
        as_of = self._as_of(as_of_ms)
        t, lk = targets.c, target_links.c
        rows: dict[int, Row[Any]] = {}
        links: dict[int, list[TargetLink]] = {}
        with self._engine.connect() as conn:
            for batch in _batched(list(target_ids), _BATCH_IDS):
                for r in conn.execute(select(targets).where(t.id.in_(batch))):
                    rows[int(r.id)] = r
                query = (
                    select(target_links).where(lk.target_id.in_(batch)).order_by(lk.first_ms, lk.id)
                )
                for r in conn.execute(query):
                    links.setdefault(int(r.target_id), []).append(_target_link(r))
        out = []
        for tid in target_ids:
            row = rows.get(tid)
            if row is None or int(row.observations) == 0:
                raise InputError(f"no target {target_label(tid)} (id {tid})", field="id")
            out.append(self._explanation(row, tuple(links.get(tid, ())), as_of))
        return out

    def _explanation(
        self, row: Row[Any], links: tuple[TargetLink, ...], as_of: int
    ) -> TargetExplanation:
        place = None if row.place_ip is None else self._place(row.place_ip)
        # The port seen at the placing address: with CGNAT it is what names the subscriber.
        port = next((x.port for x in reversed(links) if x.ip == row.place_ip), None)
        placement = TargetPlacement(
            ip=row.place_ip,
            observed_ms=row.place_observed_ms,
            placed_ms=row.placed_ms,
            country=row.country,
            jurisdiction=row.jurisdiction,
            jurisdiction_name=row.jurisdiction_name,
            jurisdiction_method=row.jurisdiction_method,
            unit=row.unit,
            confidence=row.location_confidence,
            flags=frozenset(_words(row.flags)),
            sources=tuple(json.loads(row.place_sources)),
            caveats=() if place is None else place.caveats(source_port=port),
        )
        return TargetExplanation(
            summary=self._summary(row, as_of),
            components=components(self.facts(row), as_of, self.config.score),
            links=links,
            placement=placement,
            as_of_ms=as_of,
        )

    # ------------------------------------------------------------------------------------ split

    def split(
        self,
        target_id: int,
        *,
        ip: str | None = None,
        link_id: int | None = None,
        actor: str | None = None,
    ) -> int:
        """Move the links of `ip` (every endpoint at that address) or the link `link_id`, with
        their observations, to a new target; the original keeps its id and the rest. Returns the
        new target's id. One transaction: on any error nothing changes."""
        if (ip is None) == (link_id is None):
            raise InputError("give exactly one of --ip and --link")
        lk = target_links.c
        with self._writer.begin() as conn:
            self._lock(conn)
            exists = conn.execute(
                select(targets.c.id).where(
                    and_(targets.c.id == target_id, targets.c.observations > 0)
                )
            ).first()
            if exists is None:
                raise InputError(
                    f"no target {target_label(target_id)} (id {target_id})", field="id"
                )
            rows = list(
                conn.execute(select(target_links).where(lk.target_id == target_id).order_by(lk.id))
            )
            if ip is not None:
                moving = [r for r in rows if r.ip == ip]
                what = f"address {ip}"
            else:
                moving = [r for r in rows if int(r.id) == link_id]
                what = f"link {link_id}"
            if not moving:
                raise InputError(
                    f"target {target_label(target_id)} has no {what} "
                    f"(its addresses: {', '.join(sorted({r.ip for r in rows}))}; "
                    f"its links: {', '.join(str(r.id) for r in rows)})",
                    field="ip" if ip is not None else "link",
                )
            if len(moving) == len(rows):
                raise InputError(
                    f"{what} is all of target {target_label(target_id)}: nothing would remain",
                    field="ip" if ip is not None else "link",
                )
            new_id = int(conn.execute(select(func.max(targets.c.id))).scalar() or 0) + 1
            now = self._clock_ms()
            conn.execute(insert(targets).values(self.blank_target(new_id, now, target_id)))
            by = f" by {actor}" if actor else ""
            for r in moving:
                conn.execute(
                    update(target_links)
                    .where(lk.id == r.id)
                    .values(
                        target_id=new_id,
                        kind="split",
                        reason=f"split from {target_label(target_id)}{by} ({iso(now)}), "
                        f"{what}; it had been {r.reason}",
                    )
                )
            moved_ids = [int(r.id) for r in moving]
            o = target_observations.c
            conn.execute(
                update(target_observations)
                .where(and_(o.target_id == target_id, o.link_id.in_(moved_ids)))
                .values(target_id=new_id)
            )
            self.rebuild_items(conn, [target_id, new_id])
            self._recompute(conn, [target_id, new_id], now)
        return new_id

    @staticmethod
    def rebuild_items(conn: Connection, ids: Iterable[int] | None = None) -> None:
        """Per target and content facts again from the assigned observations (after a split, or
        to build the aggregates of a generated data set)."""
        o = target_observations.c
        possession = _sql_possession(o)
        positive = _sql_positive(o)
        query = select(
            o.target_id,
            o.content_key,
            func.min(o.network),
            func.min(o.observed_ms),
            func.max(o.observed_ms),
            func.sum(case((possession, 1), else_=0)),
            func.sum(case((and_(positive, ~possession), 1), else_=0)),
            func.sum(case((positive, 0), else_=1)),
            func.max(case((possession, o.completion_ppm))),
            func.min(case((positive, o.observed_ms))),
            func.max(case((positive, o.observed_ms))),
        ).group_by(o.target_id, o.content_key)
        wanted = None if ids is None else sorted(set(ids))
        if wanted is not None:
            conn.execute(delete(target_items).where(target_items.c.target_id.in_(wanted)))
            query = query.where(o.target_id.in_(wanted))
        else:
            conn.execute(delete(target_items))
        conn.execute(
            insert(target_items).from_select(["target_id", "content_key", *_ITEM_FIELDS], query)
        )

    def rebuild_targets(self, conn: Connection, ids: Collection[int]) -> None:
        """Recompute links, items and summaries of `ids` from their assigned observations, inside
        the caller's transaction: for whoever deletes rows of `target_observations` (retention).
        A link left without observations goes (its address is forgotten with them); a target left
        without any is no longer listed (`ranked`, `get`)."""
        wanted = sorted(set(ids))
        if not wanted:
            return
        o, lk = target_observations.c, target_links.c
        for batch in _batched(wanted, _BATCH_IDS):
            stats = {
                int(r[0]): r
                for r in conn.execute(
                    select(
                        o.link_id,
                        func.min(o.observed_ms),
                        func.max(o.observed_ms),
                        func.count(),
                        func.max(case((_sql_positive(o), o.observed_ms))),
                    )
                    .where(o.target_id.in_(batch))
                    .group_by(o.link_id)
                )
            }
            existing = conn.execute(select(lk.id).where(lk.target_id.in_(batch))).scalars()
            gone = [int(x) for x in existing if int(x) not in stats]
            for chunk in _batched(gone, _BATCH_IDS):
                conn.execute(delete(target_links).where(lk.id.in_(chunk)))
            if stats:
                conn.execute(
                    update(target_links)
                    .where(lk.id == bindparam("b_id"))
                    .values(
                        first_ms=bindparam("b_first"),
                        last_ms=bindparam("b_last"),
                        observations=bindparam("b_n"),
                        positive_last_ms=bindparam("b_pos"),
                    ),
                    [
                        {"b_id": k, "b_first": r[1], "b_last": r[2], "b_n": r[3], "b_pos": r[4]}
                        for k, r in stats.items()
                    ],
                )
        self.rebuild_items(conn, wanted)
        self._recompute(conn, wanted, self._clock_ms())

    def rebuild_summaries(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Recompute every target's summary (score facts, addresses, flags, placement) from its
        links and items, in chunks; returns the number of targets."""
        with self._engine.connect() as conn:
            ids = [
                int(t) for t in conn.execute(select(targets.c.id).order_by(targets.c.id)).scalars()
            ]
        with self._writer.begin() as conn:
            self._lock(conn)
            keys = conn.execute(select(target_items.c.content_key).distinct()).scalars()
            self._ensure_contents(conn, {str(k) for k in keys})
        done = 0
        for batch in _batched(ids, self.config.chunk):
            with self._writer.begin() as conn:
                self._lock(conn)
                self._recompute(conn, batch, self._clock_ms())
            done += len(batch)
            if progress is not None:
                progress(done, len(ids))
        return len(ids)


#: Columns of `target_observations`, in the order `insert_observation_rows` takes them.
OBSERVATION_COLUMNS = (
    "sensor_id",
    "seq",
    "target_id",
    "link_id",
    "observed_ms",
    "network",
    "method",
    "outcome",
    "content_key",
    "ip",
    "port",
    "client",
    "completion_ppm",
)


def insert_observation_rows(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert `target_observations` rows (values in OBSERVATION_COLUMNS order) straight through
    the driver, as the evidence log does (SQLAlchemy's per-parameter work cost more than the
    database here): COPY on PostgreSQL, executemany on SQLite."""
    if not rows:
        return
    columns = ", ".join(OBSERVATION_COLUMNS)
    if conn.dialect.name == "postgresql":
        driver = conn.connection.driver_connection
        assert driver is not None  # an open transaction always has its DBAPI connection
        with (
            driver.cursor() as cur,
            cur.copy(f"COPY target_observations ({columns}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join(["?"] * len(OBSERVATION_COLUMNS))  # sqlite3's paramstyle
    conn.exec_driver_sql(
        f"INSERT INTO target_observations ({columns}) VALUES ({marks})",  # noqa: S608  # constants
        rows,
    )


def _target_link(r: Row[Any]) -> TargetLink:
    return TargetLink(
        id=int(r.id),
        target_id=int(r.target_id),
        kind=r.kind,
        reason=r.reason,
        ip=r.ip,
        port=None if r.port is None else int(r.port),
        created_ms=int(r.first_ms),
        sensor_id=r.sensor_id,
        seq=int(r.seq),
        observations=int(r.observations),
    )


def _digest(content_key: str) -> Digest | None:
    """ "btih:<hex>" -> the digest the watchlist is matched with; None for an unknown form."""
    prefix, _, hexa = content_key.partition(":")
    try:
        return Digest(HashKind(prefix), bytes.fromhex(hexa))
    except (ValueError, HashParseError):
        return None
