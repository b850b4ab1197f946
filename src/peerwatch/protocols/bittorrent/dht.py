"""A sans-IO BitTorrent DHT node (BEP 5), with BEP 32 (IPv6), 42, 43 and 51 pieces.

The node does no I/O and reads no clock (house rule 1). Its driver:

- passes every received UDP payload to `receive(data, addr, now)`;
- calls `on_timer(now)` once `now` reaches `next_timer()`;
- after *every* call that takes `now` (including `get_peers`, `find_node`, `sample_infohashes`,
  `bootstrap`, `ping`), sends what `datagrams_to_send()` returns, in order.

Events come back from `receive` and `on_timer` only. A call that starts something (a lookup)
returns an id; if it finishes at once (no node to ask), its `LookupDone` is held and
`next_timer()` returns the current time so the driver collects it with `on_timer`.

Behaviour as a well-behaved node (BEP 5 "DHT Queries"): it answers ping, find_node, get_peers
(with a token bound to the asker's IP, the secret rotated every 5 minutes and the previous one
still accepted, so tokens live 5 to 10 minutes) and announce_peer (token checked), plus
sample_infohashes (BEP 51). It does not announce peers itself: a watcher never claims content.
With `read_only` (BEP 43) it sets ``ro`` on its queries and answers nothing.

Lookups are iterative (BEP 5 "Kademlia"): `alpha` queries in flight, always to the closest
unqueried candidates; a lookup ends when the `k` closest live candidates have all answered, when
no candidate is left to ask, or on its query/time cap. A query unanswered after `query_timeout`
is retried once with the timeout doubled (and the lookup moves on meanwhile); a node that never
answers is marked failed in the routing table and backed off exponentially.

Politeness: every datagram we send counts against a per-remote-IP budget and a global budget,
each a sliding window ("at most N packets in any `period` seconds", stricter than a token
bucket, whose burst could double the rate over one second). Real nodes ban IPs that exceed a few
packets per second. Queries over budget wait (in order, and `next_timer()` says when they may
go); replies over budget are dropped and counted, since a remote that outruns our budget is
asking too fast and will retry.

IPv6 (BEP 32): one node serves one address family (`DhtConfig.ipv6`), the family of its socket,
and keeps a routing table of that family only ("two distinct routing tables"): nodes of the other
family are neither learned nor queried. Its answers carry ``nodes`` (IPv4) or ``nodes6`` (IPv6)
as the query's ``want`` asks (its own family when ``want`` is absent); a dual-stack host pairs its
IPv4 and IPv6 nodes (`DhtNode.pair`) so that each can answer ``want`` for the other family from
the other's table. ``values`` only ever hold peers of the asker's family (6- or 18-byte compact
peers), and no reply is larger than `DhtConfig.max_reply_size` (BEP 32: 1024 octets), which a
long IPv6 ``values`` list would otherwise exceed.

Peers in a get_peers reply are claims, not evidence (DESIGN: "A DHT or tracker peer list is a
*claim*"): every `PeersFound` names the node that returned them, so a lying node's ghost peers
are attributable to it.

Lookup candidates move through the states in `CANDIDATE_TRANSITIONS`, the one table of this
machine's transitions; anything not in the table is ignored.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from peerwatch.protocols.bittorrent import krpc
from peerwatch.protocols.bittorrent.krpc import (
    AnnouncePeer,
    ErrorMessage,
    FindNode,
    GetPeers,
    KrpcError,
    NodeInfo,
    Peer,
    Ping,
    Query,
    Response,
    SampleInfohashes,
    UnknownQuery,
)
from peerwatch.protocols.bittorrent.node_id import is_bep42_valid
from peerwatch.protocols.bittorrent.routing_table import (
    InsertResult,
    RoutingTable,
    RoutingTableConfig,
)

# --- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DhtConfig:
    k: int = 8  # BEP 5: bucket size and how many closest nodes a lookup converges on
    alpha: int = 3  # Kademlia: queries in flight per lookup
    query_timeout: float = 2.0  # seconds before a query is retried
    max_attempts: int = 2  # sends per query (first + retries); each retry doubles the timeout
    backoff_base: float = 30.0  # seconds a node that never answered is skipped, doubled per repeat
    backoff_max: float = 1800.0  # cap on that skip
    per_ip_packets: int = 5  # most packets to one remote IP in any `per_ip_period` seconds
    per_ip_period: float = 1.0
    global_packets: int = 200  # most packets in total in any `global_period` seconds
    global_period: float = 1.0
    token_rotation: float = 300.0  # BEP 5: the token secret changes every five minutes
    peer_ttl: float = 30 * 60.0  # how long an announced peer is served
    max_infohashes: int = 5000  # most infohashes stored from announces
    max_peers_per_infohash: int = 200
    max_values_per_reply: int = 50  # peers in one get_peers reply, at most
    max_reply_size: int = 1024  # BEP 32: no UDP payload over 1024 octets (values are trimmed)
    max_samples: int = 20  # BEP 51 samples per reply
    sample_interval: int = 300  # BEP 51 'interval' we advertise (seconds)
    max_lookup_candidates: int = 64  # candidates kept per lookup (the closest)
    max_queries_per_lookup: int = 100
    lookup_timeout: float = 60.0  # a lookup ends after this many seconds whatever its state
    max_outstanding: int = 4096  # queries awaiting an answer or a send slot
    maintenance_interval: float = 60.0  # how often questionable nodes are pinged, buckets refreshed
    max_pings_per_maintenance: int = 8
    ipv6: bool = False  # the family of the socket this node serves (BEP 32 keeps tables apart)
    read_only: bool = False  # BEP 43: send 'ro', answer no query
    enforce_bep42: bool = (
        False  # BEP 42: keep nodes whose id does not match their IP out of the table
    )
    version: bytes | None = None  # BEP 5 'v' sent in our messages
    routing: RoutingTableConfig = field(default_factory=RoutingTableConfig)


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeersFound:
    """`from_node` claimed that `peers` have `info_hash` (a claim: the sensor proves it later)."""

    lookup: int
    info_hash: bytes
    peers: tuple[Peer, ...]
    from_node: NodeInfo


@dataclass(frozen=True, slots=True)
class LookupDone:
    """A lookup ended. `closest_with_tokens`: the closest nodes that answered, nearest first,
    with the token each gave (None for find_node and sample_infohashes lookups)."""

    lookup: int
    kind: str  # "get_peers", "find_node" or "sample_infohashes"
    info_hash: bytes  # the lookup's target (an infohash for get_peers)
    closest_with_tokens: tuple[tuple[NodeInfo, bytes | None], ...]
    queries_sent: int
    responses: int
    timed_out: bool  # ended by `lookup_timeout` or `max_queries_per_lookup`


@dataclass(frozen=True, slots=True)
class NodeAdded:
    node: NodeInfo


@dataclass(frozen=True, slots=True)
class NodeIgnored:
    """A node's message was refused, e.g. a new id at a known address (kept first, counted)."""

    node: NodeInfo
    reason: str


@dataclass(frozen=True, slots=True)
class SamplesReceived:
    """BEP 51: `from_node` stores (at least) these infohashes."""

    lookup: int
    samples: tuple[bytes, ...]
    num: int | None
    interval: int | None
    from_node: NodeInfo


@dataclass(frozen=True, slots=True)
class QueryReceived:
    method: str
    node_id: bytes | None
    addr: Peer
    read_only: bool


@dataclass(frozen=True, slots=True)
class AnnounceReceived:
    """`from_node` announced that `peer` has `info_hash`; `accepted` is False on a bad token."""

    info_hash: bytes
    peer: Peer
    from_node: NodeInfo
    accepted: bool


@dataclass(frozen=True, slots=True)
class ErrorReceived:
    code: int
    message: str
    addr: Peer
    lookup: int | None


@dataclass(frozen=True, slots=True)
class MalformedDatagram:
    """A datagram that was not valid KRPC: the peer's fault, recorded and otherwise dropped."""

    addr: Peer
    reason: str


DhtEvent = (
    PeersFound
    | LookupDone
    | NodeAdded
    | NodeIgnored
    | SamplesReceived
    | QueryReceived
    | AnnounceReceived
    | ErrorReceived
    | MalformedDatagram
)


@dataclass(slots=True)
class DhtStats:
    sent: int = 0
    received: int = 0
    queries_deferred: int = 0  # queries that waited for the send budget
    replies_dropped: int = 0  # replies over the send budget
    queries_refused: int = 0  # queries not sent: too many outstanding
    timeouts: int = 0  # query sends that went unanswered
    malformed: int = 0
    unexpected_responses: int = 0  # unknown transaction id, wrong address, or too late


# --- the lookup state table ---------------------------------------------------------------------


class CandidateState(Enum):
    FRESH = "fresh"  # known, not yet asked
    IN_FLIGHT = "in-flight"  # asked (or waiting for a send slot), counts toward alpha
    RETRYING = "retrying"  # first send timed out, retry sent; no longer counts toward alpha
    RESPONDED = "responded"
    FAILED = "failed"  # never answered, answered with an error, lied about its id, or backed off


class LookupInput(Enum):
    QUERY_SENT = "query-sent"
    TIMEOUT_RETRY = "timeout-retry"
    TIMEOUT_FINAL = "timeout-final"
    RESPONSE = "response"
    ERROR_REPLY = "error-reply"
    REJECTED = "rejected"  # the answer came with an id other than expected
    SKIPPED = "skipped"  # backed off or refused before sending


_S = CandidateState
_I = LookupInput
CANDIDATE_TRANSITIONS: dict[tuple[CandidateState, LookupInput], CandidateState] = {
    (_S.FRESH, _I.QUERY_SENT): _S.IN_FLIGHT,
    (_S.FRESH, _I.SKIPPED): _S.FAILED,
    (_S.IN_FLIGHT, _I.RESPONSE): _S.RESPONDED,
    (_S.IN_FLIGHT, _I.TIMEOUT_RETRY): _S.RETRYING,
    (_S.IN_FLIGHT, _I.TIMEOUT_FINAL): _S.FAILED,
    (_S.IN_FLIGHT, _I.ERROR_REPLY): _S.FAILED,
    (_S.IN_FLIGHT, _I.REJECTED): _S.FAILED,
    (_S.IN_FLIGHT, _I.SKIPPED): _S.FAILED,
    (_S.RETRYING, _I.RESPONSE): _S.RESPONDED,
    (_S.RETRYING, _I.TIMEOUT_RETRY): _S.RETRYING,
    (_S.RETRYING, _I.TIMEOUT_FINAL): _S.FAILED,
    (_S.RETRYING, _I.ERROR_REPLY): _S.FAILED,
    (_S.RETRYING, _I.REJECTED): _S.FAILED,
}

_ACTIVE = (CandidateState.IN_FLIGHT, CandidateState.RETRYING)

# A candidate's rank packs its distance and the order it was added in one int (cheap to compare,
# ties in distance broken by age as a stable sort would); a lookup adds far fewer than 2**32.
_RANK_BITS = 32
_RANK_MASK = (1 << _RANK_BITS) - 1


def _rank(c: _Candidate) -> int:
    return c.rank


@dataclass(slots=True, eq=False)
class _Candidate:
    addr: Peer
    node_id: bytes | None  # None for a bootstrap address until it answers
    dist: int
    rank: int  # (dist, order added) packed in one int: the lookup's sort key, ties by age
    state: CandidateState = CandidateState.FRESH
    token: bytes | None = None


@dataclass(slots=True, eq=False)
class _Lookup:
    id: int
    kind: str
    target: bytes
    deadline: float
    internal: bool  # a bucket refresh or bootstrap: no LookupDone event
    candidates: dict[Peer, _Candidate] = field(default_factory=dict)
    # The same candidates sorted by `rank`, kept sorted as they come and go: re-sorting every
    # candidate on every answer was a fifth of the time spent on a response (docs/benchmarks.md).
    order: list[_Candidate] = field(default_factory=list)
    seen: set[Peer] = field(default_factory=set)
    added: int = 0  # candidates ever added: the tie-breaking part of `rank`
    in_flight: int = 0  # candidates IN_FLIGHT, kept up to date by `DhtNode._step`
    active: int = 0  # candidates IN_FLIGHT or RETRYING, likewise
    queries: int = 0
    responses: int = 0
    done: bool = False
    template: tuple[bytes, bytes] | None = None  # the lookup's query, bar its transaction id


@dataclass(slots=True, eq=False)
class _Outstanding:
    tid: bytes
    addr: Peer
    data: bytes
    method: str
    lookup: int | None
    expected_id: bytes | None
    attempt: int = 1
    deadline: float = float("inf")
    sent: bool = False


class _Window:
    """At most `limit` packets in any `period` seconds: the expiry time of each recent send."""

    __slots__ = ("expiries", "limit", "period")

    def __init__(self, limit: int, period: float) -> None:
        self.limit = limit
        self.period = period
        self.expiries: deque[float] = deque()

    def ready_at(self) -> float:
        """Earliest time another packet may go (-inf if now)."""
        n = len(self.expiries)
        return self.expiries[n - self.limit] if n >= self.limit else float("-inf")

    def prune(self, now: float) -> None:
        d = self.expiries
        while d and d[0] <= now:
            d.popleft()

    def allowed(self, now: float) -> bool:
        self.prune(now)
        return len(self.expiries) < self.limit

    def record(self, now: float) -> None:
        self.expiries.append(now + self.period)


def _compact_or_none(addr: Peer) -> Peer | None:
    try:
        krpc.pack_peer(addr)
    except ValueError:
        return None
    return addr


# --- the node -----------------------------------------------------------------------------------


class DhtNode:
    """One DHT node. See the module docstring for the driver contract."""

    def __init__(
        self,
        node_id: bytes,
        now: float,
        *,
        config: DhtConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if len(node_id) != krpc.NODE_ID_LEN:
            raise ValueError("node_id must be 20 bytes")
        self.node_id = node_id
        self.config = cfg = config or DhtConfig()
        if cfg.per_ip_packets < 1 or cfg.global_packets < 1 or cfg.alpha < 1 or cfg.k < 1:
            raise ValueError("budgets, alpha and k must be at least 1")
        self._rng = rng or random.SystemRandom()
        self.routing = RoutingTable(node_id, now, cfg.routing)
        self.stats = DhtStats()
        self._now = now
        self._events: list[DhtEvent] = []
        self._outbox: list[tuple[bytes, Peer]] = []
        self._outstanding: dict[bytes, _Outstanding] = {}
        self._timeouts: list[tuple[float, int, bytes]] = []
        self._seq = 0
        self._next_tid = self._rng.getrandbits(16)
        self._deferred: deque[_Outstanding] = deque()
        self._deferred_per_ip: dict[str, int] = {}
        self._per_ip: dict[str, _Window] = {}
        self._global = _Window(cfg.global_packets, cfg.global_period)
        self._lookups: dict[int, _Lookup] = {}
        self._next_lookup = 1
        self._bootstrap: list[Peer] = []
        self._backoff: dict[Peer, tuple[float, int]] = {}  # addr -> (until, consecutive failures)
        self._pinging: set[Peer] = set()
        self._secret = self._rng.randbytes(16)
        self._prev_secret = self._secret
        self._next_rotation = now + cfg.token_rotation
        self._next_maintenance = now + cfg.maintenance_interval
        self._peers: dict[bytes, dict[Peer, float]] = {}  # info_hash -> peer -> expiry
        self._other_family: RoutingTable | None = None  # BEP 32: the paired node's table
        self._ping_template = krpc.query_template(
            Ping(t=b"", node_id=node_id, read_only=cfg.read_only, version=cfg.version)
        )

    def pair(self, other: DhtNode) -> None:
        """Pair the IPv4 and IPv6 nodes of one dual-stack host (BEP 32 "Dual-stack nodes"), so
        that each answers a ``want`` for the other family from the other's routing table. BEP 32
        recommends one node id for both; the tables themselves stay apart."""
        if other.config.ipv6 == self.config.ipv6:
            raise ValueError("a dual-stack pair is one IPv4 node and one IPv6 node")
        self._other_family = other.routing
        other._other_family = self.routing

    # --- driver interface ---------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Peer]]:
        """Datagrams to send now, in order; the list is handed over (the node keeps none)."""
        out, self._outbox = self._outbox, []
        return out

    def next_timer(self) -> float | None:
        """When `on_timer` must next be called (possibly already past)."""
        # Called after every datagram: a running minimum, no list built.
        due = min(self._next_rotation, self._next_maintenance)
        if self._events and self._now < due:
            due = self._now
        heap = self._timeouts
        while heap and not self._is_live_timeout(heap[0]):
            heapq.heappop(heap)  # answered meanwhile: no need to wake up for it
        if heap and heap[0][0] < due:
            due = heap[0][0]
        if self._deferred:
            g = self._global.ready_at()
            for ip in self._deferred_per_ip:
                w = self._per_ip.get(ip)
                due = min(due, max(g, w.ready_at() if w else g, self._now))
        for lk in self._lookups.values():
            if lk.deadline < due:
                due = lk.deadline
        return due

    def _is_live_timeout(self, item: tuple[float, int, bytes]) -> bool:
        out = self._outstanding.get(item[2])
        return out is not None and out.sent and out.deadline == item[0]

    def on_timer(self, now: float) -> list[DhtEvent]:
        self._now = now
        self._release_deferred(now)
        self._expire_queries(now)
        for lk in list(self._lookups.values()):
            if now >= lk.deadline:
                self._finish(lk, timed_out=True)
        if now >= self._next_rotation:
            # BEP 5: tokens from the previous secret stay valid, so a token lives 5-10 minutes.
            self._prev_secret, self._secret = self._secret, self._rng.randbytes(16)
            self._next_rotation = now + self.config.token_rotation
        if now >= self._next_maintenance:
            self._next_maintenance = now + self.config.maintenance_interval
            self._maintain(now)
        return self._take_events()

    def receive(self, data: bytes, addr: Peer, now: float) -> list[DhtEvent]:
        self._now = now
        self.stats.received += 1
        self._release_deferred(now)
        try:
            msg = krpc.decode(data)
        except KrpcError as exc:
            self.stats.malformed += 1
            self._events.append(MalformedDatagram(addr, str(exc)))
            if exc.is_query and exc.transaction_id is not None and not self.config.read_only:
                # BEP 5: 203 "Protocol Error, such as a malformed packet, invalid arguments"
                err = ErrorMessage(t=exc.transaction_id, code=203, message="Protocol Error")
                self._reply(err, addr, now)
            return self._take_events()
        if isinstance(msg, Response):
            self._on_response(msg, addr, now)
        elif isinstance(msg, ErrorMessage):
            self._on_error(msg, addr)
        else:
            self._on_query(msg, addr, now)
        return self._take_events()

    # --- starting things ----------------------------------------------------------------------

    def get_peers(self, info_hash: bytes, now: float) -> int:
        """Start an iterative get_peers lookup (BEP 5); returns its lookup id."""
        return self._start("get_peers", info_hash, now)

    def find_node(self, target: bytes, now: float) -> int:
        return self._start("find_node", target, now)

    def sample_infohashes(self, target: bytes, now: float) -> int:
        """Start an iterative BEP 51 lookup towards `target`, sampling each node on the way."""
        return self._start("sample_infohashes", target, now)

    def bootstrap(self, addrs: Iterable[Peer], now: float) -> int:
        """Remember `addrs` as entry points and look up our own id through them (BEP 5).
        Addresses of the other family are skipped (BEP 32: that is another DHT)."""
        for a in addrs:
            if a not in self._bootstrap and (":" in a[0]) is self.config.ipv6:
                self._bootstrap.append(a)
        return self._start("find_node", self.node_id, now, internal=True)

    def ping(self, addr: Peer, now: float) -> None:
        """Ping `addr`; if it answers it is added to the routing table."""
        self._now = now
        self._query("ping", addr, None, None, now)

    def stored_peers(self, info_hash: bytes, now: float) -> tuple[Peer, ...]:
        """Peers announced to this node for `info_hash` and not expired."""
        store = self._peers.get(info_hash, {})
        return tuple(p for p, exp in store.items() if exp > now)

    # --- outgoing -----------------------------------------------------------------------------

    def _take_events(self) -> list[DhtEvent]:
        out, self._events = self._events, []
        return out

    def _tid(self) -> bytes:
        for _ in range(0x10000):
            self._next_tid = (self._next_tid + 1) & 0xFFFF
            tid = self._next_tid.to_bytes(2, "big")
            if tid not in self._outstanding:
                return tid
        raise RuntimeError("no free transaction id")  # pragma: no cover - max_outstanding < 65536

    def _query(
        self, method: str, addr: Peer, lookup: _Lookup | None, expected: bytes | None, now: float
    ) -> bool:
        """Send (or queue) one query; False if refused (too many outstanding)."""
        cfg = self.config
        if len(self._outstanding) >= cfg.max_outstanding:
            self.stats.queries_refused += 1
            return False
        tid = self._tid()
        template: tuple[bytes, bytes] | None
        if lookup is None or method == "ping":
            template = self._ping_template
        else:
            template = lookup.template
            if template is None:
                template = lookup.template = krpc.query_template(self._lookup_query(lookup, tid))
        # Every query of a lookup (and every ping) is the same message bar its transaction id.
        data = b"%b1:t%d:%b%b" % (template[0], len(tid), tid, template[1])
        out = _Outstanding(tid, addr, data, method, None if lookup is None else lookup.id, expected)
        self._outstanding[tid] = out
        self._send_query(out, now)
        return True

    def _lookup_query(self, lookup: _Lookup, tid: bytes) -> Query:
        cfg = self.config
        method = lookup.kind
        ro, v = cfg.read_only, cfg.version
        want = (b"n6",) if cfg.ipv6 else ()  # BEP 32: ask for our own family
        msg: Query
        if method == "get_peers":
            msg = GetPeers(
                t=tid,
                node_id=self.node_id,
                info_hash=lookup.target,
                want=want,
                read_only=ro,
                version=v,
            )
        elif method == "find_node":
            msg = FindNode(
                t=tid,
                node_id=self.node_id,
                target=lookup.target,
                want=want,
                read_only=ro,
                version=v,
            )
        else:
            msg = SampleInfohashes(
                t=tid,
                node_id=self.node_id,
                target=lookup.target,
                want=want,
                read_only=ro,
                version=v,
            )
        return msg

    def _send_query(self, out: _Outstanding, now: float) -> None:
        ip = out.addr[0]
        if self._deferred_per_ip.get(ip) or not self._budget_ok(ip, now):
            self.stats.queries_deferred += 1
            self._deferred.append(out)
            self._deferred_per_ip[ip] = self._deferred_per_ip.get(ip, 0) + 1
            return
        self._transmit(out, now)

    def _transmit(self, out: _Outstanding, now: float) -> None:
        self._spend(out.addr[0], now)
        self._outbox.append((out.data, out.addr))
        out.sent = True
        out.deadline = now + self.config.query_timeout * 2 ** (out.attempt - 1)
        self._seq += 1
        heapq.heappush(self._timeouts, (out.deadline, self._seq, out.tid))

    def _reply(
        self, msg: Response | ErrorMessage, addr: Peer, now: float, data: bytes | None = None
    ) -> None:
        """Send a reply (`data`: `msg` already encoded) if the send budget allows it."""
        if not self._budget_ok(addr[0], now):
            self.stats.replies_dropped += 1
            return
        self._spend(addr[0], now)
        self._outbox.append((krpc.encode(msg) if data is None else data, addr))

    def _budget_ok(self, ip: str, now: float) -> bool:
        w = self._per_ip.get(ip)
        return self._global.allowed(now) and (w is None or w.allowed(now))

    def _spend(self, ip: str, now: float) -> None:
        self.stats.sent += 1
        self._global.record(now)
        w = self._per_ip.get(ip)
        if w is None:
            w = self._per_ip[ip] = _Window(self.config.per_ip_packets, self.config.per_ip_period)
        w.record(now)

    def _release_deferred(self, now: float) -> None:
        if not self._deferred:
            return
        keep: deque[_Outstanding] = deque()
        blocked: set[str] = set()  # an IP whose head query waits keeps the rest in order
        while self._deferred:
            out = self._deferred.popleft()
            ip = out.addr[0]
            if out.tid not in self._outstanding:  # abandoned meanwhile
                self._deferred_dec(ip)
                continue
            if ip in blocked or not self._budget_ok(ip, now):
                blocked.add(ip)
                keep.append(out)
                continue
            self._deferred_dec(ip)
            self._transmit(out, now)
        self._deferred = keep

    def _deferred_dec(self, ip: str) -> None:
        n = self._deferred_per_ip[ip] - 1
        if n:
            self._deferred_per_ip[ip] = n
        else:
            del self._deferred_per_ip[ip]

    def _retrying(self) -> set[Peer]:
        """Addresses that already missed a timeout and are being retried: not asked again by
        another lookup meanwhile (that would exceed `max_attempts` for one silent node)."""
        return {o.addr for o in self._outstanding.values() if o.attempt > 1}

    def _expire_queries(self, now: float) -> None:
        cfg = self.config
        touched: set[int] = set()
        while self._timeouts and self._timeouts[0][0] <= now:
            item = heapq.heappop(self._timeouts)
            if not self._is_live_timeout(item):
                continue  # answered, or re-sent with a later deadline
            out = self._outstanding[item[2]]
            tid = item[2]
            self.stats.timeouts += 1
            lk = self._lookups.get(out.lookup) if out.lookup is not None else None
            if out.attempt < cfg.max_attempts:
                out.attempt += 1
                out.sent = False
                self._send_query(out, now)
                if lk is not None:
                    self._step(lk, out.addr, LookupInput.TIMEOUT_RETRY)
            else:
                del self._outstanding[tid]
                self._pinging.discard(out.addr)
                self.routing.failed(out.addr, now)
                _, fails = self._backoff.get(out.addr, (0.0, 0))
                delay = min(cfg.backoff_base * 2**fails, cfg.backoff_max)
                self._backoff[out.addr] = (now + delay, fails + 1)
                if lk is not None:
                    self._step(lk, out.addr, LookupInput.TIMEOUT_FINAL)
            if lk is not None:
                touched.add(lk.id)
        for lid in touched:
            lk = self._lookups.get(lid)
            if lk is not None:
                self._advance(lk, now)

    # --- lookups ------------------------------------------------------------------------------

    def _start(self, kind: str, target: bytes, now: float, *, internal: bool = False) -> int:
        if len(target) != krpc.NODE_ID_LEN:
            raise ValueError("target must be 20 bytes")
        self._now = now
        cfg = self.config
        lk = _Lookup(self._next_lookup, kind, target, now + cfg.lookup_timeout, internal)
        self._next_lookup += 1
        self._lookups[lk.id] = lk
        t = int.from_bytes(target, "big")
        # Seeded in bulk, inline: starting a lookup with up to 64 candidates was a tenth of the
        # node's time (docs/benchmarks.md). `closest` gives distinct nodes nearest first, so
        # `order` is sorted as built; bootstrap addresses (distance 2**160) come after them.
        seen, candidates, order = lk.seen, lk.candidates, lk.order
        for i, n in enumerate(self.routing.closest(target, cfg.max_lookup_candidates, now)):
            a = (n.ip, n.port)
            seen.add(a)
            dist = int.from_bytes(n.node_id, "big") ^ t
            c = _Candidate(a, n.node_id, dist, (dist << _RANK_BITS) | i)
            candidates[a] = c
            order.append(c)
        lk.added = len(order)
        if len(candidates) < cfg.k:
            for a in self._bootstrap:
                self._add_candidate(lk, a, None, t)
        self._advance(lk, now)
        return lk.id

    def _add_candidate(self, lk: _Lookup, addr: Peer, node_id: bytes | None, t: int) -> None:
        if addr in lk.seen:
            return
        lk.seen.add(addr)
        dist = (1 << 160) if node_id is None else int.from_bytes(node_id, "big") ^ t
        c = _Candidate(addr, node_id, dist, (dist << _RANK_BITS) | lk.added)
        lk.added += 1
        lk.candidates[addr] = c
        bisect.insort(lk.order, c, key=_rank)

    def _step(self, lk: _Lookup, addr: Peer, inp: LookupInput) -> None:
        c = lk.candidates.get(addr)
        if c is None:
            return
        old = c.state
        new = CANDIDATE_TRANSITIONS.get((old, inp))
        if new is not None:
            c.state = new
            lk.in_flight += (new is _S.IN_FLIGHT) - (old is _S.IN_FLIGHT)
            lk.active += (new in _ACTIVE) - (old in _ACTIVE)

    def _advance(self, lk: _Lookup, now: float) -> None:
        cfg = self.config
        k = cfg.k
        failed, retrying_state, responded, fresh = _S.FAILED, _S.RETRYING, _S.RESPONDED, _S.FRESH
        while not lk.done:
            # The k closest live candidates, nearest first. A node that missed its first timeout
            # is retried, but no longer counts among the k closest: waiting for its second
            # timeout made every lookup with one departed node among the closest take 6 s
            # (docs/benchmarks.md), and the next closest node must be asked meanwhile. Its late
            # answer is still used.
            top: list[_Candidate] = []
            for c in lk.order:
                st = c.state
                if st is failed or st is retrying_state:
                    continue
                top.append(c)
                if len(top) == k:
                    break
            if top and all(c.state is responded for c in top):
                self._finish(lk, timed_out=False)
                return
            if lk.queries >= cfg.max_queries_per_lookup:
                if not lk.active:
                    self._finish(lk, timed_out=True)
                return
            changed = False
            retrying: set[Peer] | None = None  # once per pass, and only if someone is asked
            for c in top:
                if lk.in_flight >= cfg.alpha or lk.queries >= cfg.max_queries_per_lookup:
                    break
                if c.state is not fresh:
                    continue
                if retrying is None:
                    retrying = self._retrying()
                backoff = self._backoff.get(c.addr)
                if (backoff is not None and backoff[0] > now) or c.addr in retrying:
                    self._step(lk, c.addr, LookupInput.SKIPPED)
                    changed = True
                    break  # the top k changed: recompute
                if not self._query(lk.kind, c.addr, lk, c.node_id, now):
                    self._step(lk, c.addr, LookupInput.SKIPPED)
                    changed = True
                    break
                self._step(lk, c.addr, LookupInput.QUERY_SENT)
                lk.queries += 1
            if changed:
                continue
            if not lk.active and not any(c.state is fresh for c in top):
                self._finish(lk, timed_out=False)  # nobody left to ask
            return

    def _finish(self, lk: _Lookup, *, timed_out: bool) -> None:
        if lk.done:
            return
        lk.done = True
        del self._lookups[lk.id]
        if lk.internal:
            return
        answered = [c for c in lk.order if c.state is CandidateState.RESPONDED][: self.config.k]
        closest = tuple(
            (NodeInfo(c.node_id, c.addr[0], c.addr[1]), c.token)
            for c in answered
            if c.node_id is not None
        )
        self._events.append(
            LookupDone(lk.id, lk.kind, lk.target, closest, lk.queries, lk.responses, timed_out)
        )

    def _on_lookup_response(self, lk: _Lookup, msg: Response, addr: Peer, now: float) -> None:
        cfg = self.config
        c = lk.candidates.get(addr)
        t = int.from_bytes(lk.target, "big")
        if c is not None:
            if c.node_id is None:
                c.node_id = msg.node_id
                c.dist = int.from_bytes(msg.node_id, "big") ^ t
                lk.order.remove(c)  # re-ranked by its real distance, keeping its age
                c.rank = (c.dist << _RANK_BITS) | (c.rank & _RANK_MASK)
                bisect.insort(lk.order, c, key=_rank)
            c.token = msg.token
            self._step(lk, addr, LookupInput.RESPONSE)
        lk.responses += 1
        sender = NodeInfo(msg.node_id, addr[0], addr[1])
        if lk.kind == "get_peers" and msg.values:
            self._events.append(PeersFound(lk.id, lk.target, msg.values, sender))
        if lk.kind == "sample_infohashes" and msg.samples is not None:
            self._events.append(SamplesReceived(lk.id, msg.samples, msg.num, msg.interval, sender))
        id_at = self.routing.id_at
        for n in msg.nodes6 if cfg.ipv6 else msg.nodes:
            a = (n.ip, n.port)
            if n.port == 0 or n.node_id == self.node_id or a in lk.seen:
                continue
            known = id_at(a)
            if known is not None and known != n.node_id:
                continue  # the first id seen at an address is the only one believed there
            self._add_candidate(lk, a, n.node_id, t)
        if len(lk.candidates) > cfg.max_lookup_candidates:
            kept = lk.order[: cfg.max_lookup_candidates]
            for x in lk.order[cfg.max_lookup_candidates :]:
                if x.state is CandidateState.FRESH or x.state is CandidateState.FAILED:
                    del lk.candidates[x.addr]  # still in `seen`: never re-added
                else:
                    kept.append(x)
            lk.order = kept

    # --- incoming -----------------------------------------------------------------------------

    def _learn(self, node_id: bytes, addr: Peer, now: float, *, responded: bool) -> bool:
        """Update the routing table; False if the node must be ignored (id changed/conflict)."""
        if (":" in addr[0]) is not self.config.ipv6:
            return True  # BEP 32: the other family's DHT is another table (a paired node's)
        if self.config.enforce_bep42 and not is_bep42_valid(node_id, addr[0]):
            return True  # BEP 42: usable for lookups, kept out of the table
        result = self.routing.heard_from(node_id, addr, now, responded=responded)
        if result is InsertResult.ID_CHANGED:
            node = NodeInfo(node_id, addr[0], addr[1])
            self._events.append(NodeIgnored(node, "a different id was first seen at this address"))
            return False
        if result is InsertResult.ID_CONFLICT:
            node = NodeInfo(node_id, addr[0], addr[1])
            self._events.append(NodeIgnored(node, "this id is known at another address"))
            return False
        if result is InsertResult.ADDED:
            self._events.append(NodeAdded(NodeInfo(node_id, addr[0], addr[1])))
        elif (
            result is InsertResult.CACHED
            and not responded
            and addr not in self._pinging
            and self.routing.would_accept(node_id, now)
        ):
            # BEP 5: a node enters a bucket once it has answered us, so ask it.
            self._pinging.add(addr)
            self._query("ping", addr, None, node_id, now)
        return True

    def _on_response(self, msg: Response, addr: Peer, now: float) -> None:
        out = self._outstanding.get(msg.t)
        if out is None or out.addr != addr or not out.sent:
            self.stats.unexpected_responses += 1
            return
        del self._outstanding[msg.t]
        self._pinging.discard(addr)
        self._backoff.pop(addr, None)
        lk = self._lookups.get(out.lookup) if out.lookup is not None else None
        ok = True
        if out.expected_id is not None and msg.node_id != out.expected_id:
            node = NodeInfo(msg.node_id, addr[0], addr[1])
            self._events.append(NodeIgnored(node, "answered with an id other than advertised"))
            ok = False
        elif not self._learn(msg.node_id, addr, now, responded=True):
            ok = False
        if lk is None:
            return
        if ok:
            self._on_lookup_response(lk, msg, addr, now)
        else:
            self._step(lk, addr, LookupInput.REJECTED)
        self._advance(lk, now)

    def _on_error(self, msg: ErrorMessage, addr: Peer) -> None:
        out = self._outstanding.get(msg.t)
        if out is None or out.addr != addr or not out.sent:
            self.stats.unexpected_responses += 1
            return
        del self._outstanding[msg.t]
        self._pinging.discard(addr)
        self._events.append(ErrorReceived(msg.code, msg.message, addr, out.lookup))
        lk = self._lookups.get(out.lookup) if out.lookup is not None else None
        if lk is not None:
            self._step(lk, addr, LookupInput.ERROR_REPLY)
            self._advance(lk, self._now)

    def _on_query(self, msg: Query, addr: Peer, now: float) -> None:
        method = krpc.method_name(msg)
        self._events.append(QueryReceived(method, msg.node_id, addr, msg.read_only))
        if self.config.read_only:
            return  # BEP 43: read-only nodes do not answer queries
        if isinstance(msg, UnknownQuery):
            self._reply(ErrorMessage(t=msg.t, code=204, message="Method Unknown"), addr, now)
        elif isinstance(msg, Ping):
            self._reply(self._response(msg.t, addr), addr, now)
        elif isinstance(msg, FindNode):
            self._reply(self._response(msg.t, addr, nodes_for=(msg.target, msg.want)), addr, now)
        elif isinstance(msg, GetPeers):
            self._answer_get_peers(msg, addr, now)
        elif isinstance(msg, AnnouncePeer):
            self._answer_announce(msg, addr, now)
        else:
            self._answer_samples(msg, addr, now)
        # after the answer, so a ping to a newcomer never delays what it asked for
        if msg.node_id is not None and not msg.read_only:  # BEP 43: never route via 'ro' nodes
            self._learn(msg.node_id, addr, now, responded=False)

    def _response(
        self,
        t: bytes,
        addr: Peer,
        *,
        nodes_for: tuple[bytes, tuple[bytes, ...]] | None = None,
        values: tuple[Peer, ...] = (),
        token: bytes | None = None,
        samples: tuple[bytes, ...] | None = None,
        num: int | None = None,
    ) -> Response:
        cfg = self.config
        nodes: tuple[NodeInfo, ...] = ()
        nodes6: tuple[NodeInfo, ...] = ()
        if nodes_for is not None:
            target, want = nodes_for
            # BEP 32: 'want' names the families returned ("n4": nodes, "n6": nodes6, other
            # strings ignored); without it, the family the query came over, i.e. ours.
            v4 = b"n4" in want if want else not cfg.ipv6
            v6 = b"n6" in want if want else cfg.ipv6
            if v4:
                nodes = self._closest_of_family(False, target)
            if v6:
                nodes6 = self._closest_of_family(True, target)
        return Response(
            t=t,
            node_id=self.node_id,
            nodes=nodes,
            nodes6=nodes6,
            values=values,
            token=token,
            samples=samples,
            interval=None if samples is None else cfg.sample_interval,
            num=num,
            requester=_compact_or_none(addr),  # BEP 42: the asker's address as we see it
            version=cfg.version,
        )

    def _closest_of_family(self, ipv6: bool, target: bytes) -> tuple[NodeInfo, ...]:
        table = self.routing if ipv6 is self.config.ipv6 else self._other_family
        if table is None:
            return ()  # a single-stack node has nothing of the other family to give
        return tuple(table.closest(target, self.config.k, self._now))

    def _token(self, ip: str, secret: bytes) -> bytes:
        # BEP 5 suggests SHA1(IP + secret); a keyed BLAKE2b is the same idea as a proper MAC.
        # The textual IP is hashed, so a driver's odd address (a scoped IPv6) cannot break us.
        return hashlib.blake2b(ip.encode("utf-8", "replace"), key=secret, digest_size=8).digest()

    def _answer_get_peers(self, msg: GetPeers, addr: Peer, now: float) -> None:
        cfg = self.config
        token = self._token(addr[0], self._secret)
        # BEP 32: values of the asker's family only (6-octet over IPv4, 18-octet over IPv6).
        v6 = ":" in addr[0]
        peers = [p for p in self.stored_peers(msg.info_hash, now) if (":" in p[0]) is v6]
        if not peers:
            resp = self._response(msg.t, addr, nodes_for=(msg.info_hash, msg.want), token=token)
            self._reply(resp, addr, now)
            return
        values = tuple(self._rng.sample(peers, min(len(peers), cfg.max_values_per_reply)))
        # BEP 5: values instead of nodes; BEP 32: a query with 'want' gets its nodes as well.
        nodes_for = (msg.info_hash, msg.want) if msg.want else None
        resp = self._response(msg.t, addr, nodes_for=nodes_for, token=token, values=values)
        data = krpc.encode(resp)
        if len(data) > cfg.max_reply_size:
            # BEP 32's 1024-octet cap: drop sampled peers (still a random sample) until it fits;
            # each costs its string, "6:" + 6 or "18:" + 18 octets.
            per_value = 21 if v6 else 8
            drop = -(-(len(data) - cfg.max_reply_size) // per_value)
            resp = self._response(
                msg.t, addr, nodes_for=nodes_for, token=token, values=values[:-drop]
            )
            data = krpc.encode(resp)
        self._reply(resp, addr, now, data)

    def _answer_announce(self, msg: AnnouncePeer, addr: Peer, now: float) -> None:
        ok = msg.token in (
            self._token(addr[0], self._secret),
            self._token(addr[0], self._prev_secret),
        )
        port = addr[1] if msg.implied_port else msg.port  # BEP 5 implied_port
        peer = (addr[0], port)
        node = NodeInfo(msg.node_id, addr[0], addr[1])
        self._events.append(AnnounceReceived(msg.info_hash, peer, node, ok and port != 0))
        if not ok:
            self._reply(ErrorMessage(t=msg.t, code=203, message="Bad token"), addr, now)
            return
        if port == 0:
            self._reply(ErrorMessage(t=msg.t, code=203, message="Bad port"), addr, now)
            return
        self._store(msg.info_hash, peer, now)
        self._reply(self._response(msg.t, addr), addr, now)

    def _store(self, info_hash: bytes, peer: Peer, now: float) -> None:
        cfg = self.config
        store = self._peers.get(info_hash)
        if store is None:
            if len(self._peers) >= cfg.max_infohashes:
                self._prune_store(now)
                if len(self._peers) >= cfg.max_infohashes:
                    return  # full: the announce is answered but not kept
            store = self._peers[info_hash] = {}
        if peer not in store and len(store) >= cfg.max_peers_per_infohash:
            del store[min(store, key=lambda p: store[p])]  # the one expiring first
        store[peer] = now + cfg.peer_ttl

    def _prune_store(self, now: float) -> None:
        for ih in list(self._peers):
            store = self._peers[ih]
            for p in [p for p, exp in store.items() if exp <= now]:
                del store[p]
            if not store:
                del self._peers[ih]

    def _answer_samples(self, msg: SampleInfohashes, addr: Peer, now: float) -> None:
        cfg = self.config
        stored = list(self._peers)
        samples = tuple(self._rng.sample(stored, min(len(stored), cfg.max_samples)))
        resp = self._response(
            msg.t,
            addr,
            nodes_for=(msg.target, msg.want),
            samples=samples,
            num=len(stored),
        )
        self._reply(resp, addr, now)

    # --- maintenance --------------------------------------------------------------------------

    def _maintain(self, now: float) -> None:
        cfg = self.config
        self._prune_store(now)
        # keep expired entries a while so a node that keeps failing backs off longer each time
        horizon = now - cfg.backoff_max
        self._backoff = {a: v for a, v in self._backoff.items() if v[0] > horizon}
        for ip, w in list(self._per_ip.items()):
            w.prune(now)
            if not w.expiries:
                del self._per_ip[ip]
        pings = 0
        for node in self.routing.questionable(now):
            if pings >= cfg.max_pings_per_maintenance:
                break
            if node.addr not in self._pinging:
                self._pinging.add(node.addr)
                self._query("ping", node.addr, None, node.node_id, now)
                pings += 1
        if not any(lk.internal for lk in self._lookups.values()):
            # one refresh at a time keeps maintenance traffic low
            for target in self.routing.take_refresh_targets(now, self._rng, limit=1):
                self._start("find_node", target, now, internal=True)
