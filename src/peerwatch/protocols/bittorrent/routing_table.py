"""Kademlia routing table for the BitTorrent DHT (BEP 5 "Routing Table").

Buckets are indexed by how many leading bits a node's id shares with ours: bucket ``i`` holds
nodes sharing exactly ``i`` bits, and the last bucket holds everything sharing at least as many.
Only the last bucket (the one whose range contains our own id) is ever split, which is BEP 5's
"split the bucket that contains our own id" rule expressed per prefix length. Each bucket keeps
at most `k` nodes plus a bounded replacement cache, so the whole table is bounded by
``160 * (k + replacement_cache)`` entries.

Node states follow BEP 5: *good* if it answered one of our queries within 15 minutes (or answered
once and has queried us within 15 minutes), *questionable* after 15 minutes of silence, *bad*
after failing to answer several queries in a row. Bad nodes are replaced first; a full bucket of
good nodes sends newcomers to the replacement cache.

Trust rules, kept strict because what the DHT says ends up as evidence:
- the first id seen at an (ip, port) is the only one believed there: a different id from the same
  address is refused and counted as an offence (`id_change_offences`);
- an id already in the table at another address is refused (`InsertResult.ID_CONFLICT`);
- a node that only *queried* us goes to the replacement cache; it enters a bucket only after it
  has answered one of our queries (the DHT pings it when `would_accept` says there is room).

Pure: every method that needs the time takes `now`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum

from peerwatch.protocols.bittorrent.krpc import NodeInfo, Peer
from peerwatch.protocols.bittorrent.node_id import (
    NODE_ID_BITS,
    random_id_with_prefix,
)


@dataclass(frozen=True, slots=True)
class RoutingTableConfig:
    k: int = 8  # BEP 5: bucket size
    good_for: float = 15 * 60.0  # BEP 5: a node is good for 15 minutes after it is heard from
    max_failures: int = 2  # BEP 5 "fail to respond to multiple queries in a row" -> bad
    replacement_cache: int = 8  # newcomers kept per bucket while it is full
    refresh_after: float = 15 * 60.0  # BEP 5: refresh a bucket unchanged for 15 minutes
    max_offenders: int = 4096  # most addresses whose id-change offences are remembered


class NodeState(Enum):
    GOOD = "good"
    QUESTIONABLE = "questionable"
    BAD = "bad"


class InsertResult(Enum):
    ADDED = "added"  # now in a bucket
    UPDATED = "updated"  # already known (bucket or cache); timestamps refreshed
    CACHED = "cached"  # put in the bucket's replacement cache
    DROPPED = "dropped"  # nowhere to keep it
    ID_CHANGED = "id-changed"  # this address was known with another id: refused, offence counted
    ID_CONFLICT = "id-conflict"  # this id is known at another address: refused
    SELF = "self"  # our own id


@dataclass(slots=True, eq=False)  # identity: an entry is one node's record
class _Entry:
    node_id: bytes
    addr: Peer
    first_seen: float
    last_response: float | None = None  # last time it answered one of our queries
    last_query: float | None = None  # last time it queried us
    failures: int = 0  # consecutive unanswered queries
    # Derived once: `closest` ranks entries by the id as an int and hands out the NodeInfo,
    # which answering every find_node/get_peers query would otherwise rebuild.
    id_int: int = field(init=False)
    info: NodeInfo = field(init=False)

    def __post_init__(self) -> None:
        self.id_int = int.from_bytes(self.node_id, "big")
        self.info = NodeInfo(self.node_id, self.addr[0], self.addr[1])

    def state(self, now: float, cfg: RoutingTableConfig) -> NodeState:
        # BAD depends on failures alone; the hot paths (`closest`, `would_accept`, `_insert`)
        # test `failures >= max_failures` inline instead of calling this.
        if self.failures >= cfg.max_failures:
            return NodeState.BAD
        if self.last_response is None:
            return NodeState.QUESTIONABLE
        if now - self.last_response < cfg.good_for:
            return NodeState.GOOD
        if self.last_query is not None and now - self.last_query < cfg.good_for:
            return NodeState.GOOD
        return NodeState.QUESTIONABLE

    def last_seen(self) -> float:
        return max(self.first_seen, self.last_response or 0.0, self.last_query or 0.0)


@dataclass(frozen=True, slots=True)
class RoutingEntry:
    """A snapshot of one routing-table node."""

    node: NodeInfo
    state: NodeState
    last_seen: float
    failures: int


@dataclass(slots=True, eq=False)
class _Bucket:
    last_changed: float
    nodes: list[_Entry]  # least recently seen first
    replacements: list[_Entry]  # oldest first


class RoutingTable:
    """BEP 5 routing table around `own_id`; bounded, pure, keyed by address and id."""

    def __init__(self, own_id: bytes, now: float, config: RoutingTableConfig | None = None):
        if len(own_id) != 20:
            raise ValueError("own_id must be 20 bytes")
        self.own_id = own_id
        self._own_int = int.from_bytes(own_id, "big")
        self.config = config or RoutingTableConfig()
        self._buckets: list[_Bucket] = [_Bucket(now, [], [])]
        self._by_addr: dict[Peer, _Entry] = {}
        self._by_id: dict[bytes, _Entry] = {}
        self._offences: dict[Peer, int] = {}

    # --- queries ------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Nodes in buckets (the replacement caches are not counted)."""
        return sum(len(b.nodes) for b in self._buckets)

    @property
    def bucket_count(self) -> int:
        return len(self._buckets)

    @property
    def id_change_offences(self) -> dict[Peer, int]:
        """How many times each address answered with an id other than the first it used."""
        return dict(self._offences)

    def get(self, addr: Peer, now: float) -> RoutingEntry | None:
        """The node at `addr` if it is in a bucket (not in a replacement cache)."""
        e = self._by_addr.get(addr)
        if e is None or not self._in_bucket(e):
            return None
        return self._snapshot(e, now)

    def id_at(self, addr: Peer) -> bytes | None:
        """The id first seen at `addr`, if the table (buckets or caches) remembers it."""
        e = self._by_addr.get(addr)
        return None if e is None else e.node_id

    def entries(self, now: float) -> Iterator[RoutingEntry]:
        for b in self._buckets:
            for e in b.nodes:
                yield self._snapshot(e, now)

    def closest(self, target: bytes, n: int, now: float) -> list[NodeInfo]:
        """The `n` non-bad bucket nodes closest to `target` by XOR distance (BEP 5), nearest
        first (ids are unique in the table, so distance alone orders them).

        Buckets are visited outward from the target instead of scanning every entry: a node in
        bucket ``i`` differs from our id first at bit ``i``, so, with ``c`` the number of leading
        bits the target shares with our id, bucket ``c`` holds the nodes closest to the target
        (they also share bit ``c`` with it), every deeper bucket comes next (all of them differ
        from the target first at bit ``c``, so they are ranked together), then buckets
        ``c - 1``, ``c - 2``, ..., 0, each strictly farther than the one before. Answering a
        query looks at one or two buckets instead of the whole table (the scan was 28 % of the
        time spent answering, docs/benchmarks.md)."""
        if n <= 0:
            return []
        t = int.from_bytes(target, "big")
        max_failures = self.config.max_failures
        out: list[NodeInfo] = []
        for group in self._outward(NODE_ID_BITS - (t ^ self._own_int).bit_length()):
            # BAD is decided by failures alone (`_Entry.state`); checked inline, it is hot.
            live = [e for e in group if e.failures < max_failures]
            if len(live) > 1:
                live.sort(key=lambda e: e.id_int ^ t)
            out.extend([e.info for e in live[: n - len(out)]])
            if len(out) >= n:
                break
        return out

    def _outward(self, c: int) -> Iterator[list[_Entry]]:
        """Bucket entries in groups of increasing distance from a target sharing `c` leading
        bits with our id (see `closest`); each group is built only when asked for."""
        buckets = self._buckets
        last = len(buckets) - 1
        if c < last:
            yield buckets[c].nodes
            yield [e for b in buckets[c + 1 :] for e in b.nodes]
        else:
            yield buckets[last].nodes
            c = last
        for i in range(c - 1, -1, -1):
            yield buckets[i].nodes

    def questionable(self, now: float) -> list[NodeInfo]:
        """Bucket nodes to ping before they can be trusted again (BEP 5)."""
        cfg = self.config
        return [
            e.info
            for b in self._buckets
            for e in b.nodes
            if e.state(now, cfg) is NodeState.QUESTIONABLE
        ]

    def would_accept(self, node_id: bytes, now: float) -> bool:
        """True if a node with this id could enter a bucket now (room, a bad node, or a split)."""
        if node_id == self.own_id or (
            node_id in self._by_id and self._in_bucket(self._by_id[node_id])
        ):
            return False
        idx = self._index(node_id)
        b = self._buckets[idx]
        if len(b.nodes) < self.config.k:
            return True
        max_failures = self.config.max_failures
        if any(e.failures >= max_failures for e in b.nodes):  # a bad node can be replaced
            return True
        return idx == len(self._buckets) - 1 and len(self._buckets) < NODE_ID_BITS

    def take_refresh_targets(
        self, now: float, rng: random.Random, *, limit: int = NODE_ID_BITS
    ) -> list[bytes]:
        """A random id in each of up to `limit` buckets unchanged for `refresh_after` (BEP 5
        "Buckets that have not been changed in 15 minutes should be refreshed"); those buckets
        count as changed from now."""
        targets: list[bytes] = []
        for i, b in enumerate(self._buckets):
            if len(targets) >= limit:
                break
            if now - b.last_changed >= self.config.refresh_after:
                b.last_changed = now
                targets.append(random_id_with_prefix(self.own_id, i, rng))
        return targets

    # --- updates ------------------------------------------------------------------------------

    def heard_from(
        self, node_id: bytes, addr: Peer, now: float, *, responded: bool
    ) -> InsertResult:
        """Record that `node_id` at `addr` answered one of our queries (`responded`) or sent us a
        query. Returns what happened to it."""
        if node_id == self.own_id:
            return InsertResult.SELF
        known = self._by_addr.get(addr)
        if known is not None:
            if known.node_id != node_id:
                self._count_offence(addr)
                return InsertResult.ID_CHANGED
            self._touch(known, now, responded=responded)
            if responded and not self._in_bucket(known):
                return self._promote(known, now)
            return InsertResult.UPDATED
        if node_id in self._by_id:
            return InsertResult.ID_CONFLICT
        entry = _Entry(node_id, addr, first_seen=now)
        self._touch(entry, now, responded=responded)
        if not responded:
            return self._cache(entry, self._buckets[self._index(node_id)])
        return self._insert(entry, now)

    def failed(self, addr: Peer, now: float) -> NodeState | None:
        """One of our queries to `addr` went unanswered. Returns the node's new state (None if
        unknown); a node that turns bad is replaced by the freshest answering cache entry."""
        e = self._by_addr.get(addr)
        if e is None:
            return None
        e.failures += 1
        state = e.state(now, self.config)
        if state is NodeState.BAD:
            b = self._buckets[self._index(e.node_id)]
            if e in b.replacements:
                self._forget(e)
                b.replacements.remove(e)
                return state
            for r in reversed(b.replacements):
                if r.last_response is not None and r.failures == 0:
                    b.replacements.remove(r)
                    b.nodes.remove(e)
                    self._forget(e)
                    b.nodes.append(r)
                    b.last_changed = now
                    break
        return state

    def remove(self, addr: Peer) -> bool:
        e = self._by_addr.get(addr)
        if e is None:
            return False
        b = self._buckets[self._index(e.node_id)]
        if e in b.nodes:
            b.nodes.remove(e)
        else:
            b.replacements.remove(e)
        self._forget(e)
        return True

    # --- internals ----------------------------------------------------------------------------

    def _index(self, node_id: bytes) -> int:
        cpl = NODE_ID_BITS - (int.from_bytes(node_id, "big") ^ self._own_int).bit_length()
        return min(cpl, len(self._buckets) - 1)

    def _in_bucket(self, e: _Entry) -> bool:
        return e in self._buckets[self._index(e.node_id)].nodes

    def _snapshot(self, e: _Entry, now: float) -> RoutingEntry:
        return RoutingEntry(e.info, e.state(now, self.config), e.last_seen(), e.failures)

    @staticmethod
    def _touch(e: _Entry, now: float, *, responded: bool) -> None:
        if responded:
            e.last_response = now
            e.failures = 0
        else:
            e.last_query = now

    def _count_offence(self, addr: Peer) -> None:
        if addr not in self._offences and len(self._offences) >= self.config.max_offenders:
            del self._offences[next(iter(self._offences))]  # forget the oldest offender
        self._offences[addr] = self._offences.get(addr, 0) + 1

    def _forget(self, e: _Entry) -> None:
        self._by_addr.pop(e.addr, None)
        self._by_id.pop(e.node_id, None)

    def _remember(self, e: _Entry) -> None:
        self._by_addr[e.addr] = e
        self._by_id[e.node_id] = e

    def _cache(self, e: _Entry, b: _Bucket) -> InsertResult:
        if self.config.replacement_cache <= 0:
            return InsertResult.DROPPED
        if len(b.replacements) >= self.config.replacement_cache:
            self._forget(b.replacements.pop(0))
        b.replacements.append(e)
        self._remember(e)
        return InsertResult.CACHED

    def _promote(self, e: _Entry, now: float) -> InsertResult:
        """A cached node answered: move it into its bucket if there is room."""
        b = self._buckets[self._index(e.node_id)]
        b.replacements.remove(e)
        self._forget(e)
        result = self._insert(e, now)
        return InsertResult.UPDATED if result is InsertResult.CACHED else result

    def _insert(self, e: _Entry, now: float) -> InsertResult:
        cfg = self.config
        while True:
            idx = self._index(e.node_id)
            b = self._buckets[idx]
            if len(b.nodes) < cfg.k:
                b.nodes.append(e)
                b.last_changed = now
                self._remember(e)
                return InsertResult.ADDED
            bad = [x for x in b.nodes if x.failures >= cfg.max_failures]  # NodeState.BAD
            if bad:
                worst = max(bad, key=lambda x: (x.failures, -x.last_seen()))
                b.nodes.remove(worst)
                self._forget(worst)
                b.nodes.append(e)
                b.last_changed = now
                self._remember(e)
                return InsertResult.ADDED
            if idx == len(self._buckets) - 1 and len(self._buckets) < NODE_ID_BITS:
                self._split()
                continue
            return self._cache(e, b)

    def _split(self) -> None:
        """Split the last bucket: nodes sharing exactly `i` bits stay, deeper ones move on."""
        i = len(self._buckets) - 1
        old = self._buckets[i]
        new = _Bucket(old.last_changed, [], [])
        self._buckets.append(new)
        keep_nodes: list[_Entry] = []
        keep_repl: list[_Entry] = []
        for e in old.nodes:
            (new.nodes if self._index(e.node_id) == i + 1 else keep_nodes).append(e)
        for e in old.replacements:
            (new.replacements if self._index(e.node_id) == i + 1 else keep_repl).append(e)
        old.nodes = keep_nodes
        old.replacements = keep_repl
