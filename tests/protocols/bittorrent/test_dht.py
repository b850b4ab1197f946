"""DHT node: unit behaviour, then a simulated network of 200 nodes routed in memory.

Nothing here touches a socket or a clock: `Network` moves datagrams between `DhtNode`s (and a few
scripted endpoints) with a fixed latency on a fake clock, and records every send so the tests can
check the politeness budgets after the fact. All addresses are 127.0.0.0/8.
"""

from __future__ import annotations

import functools
import heapq
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import pytest

from peerwatch.protocols.bittorrent import krpc
from peerwatch.protocols.bittorrent.dht import (
    CANDIDATE_TRANSITIONS,
    AnnounceReceived,
    CandidateState,
    DhtConfig,
    DhtEvent,
    DhtNode,
    ErrorReceived,
    LookupDone,
    MalformedDatagram,
    NodeAdded,
    NodeIgnored,
    PeersFound,
    QueryReceived,
    SamplesReceived,
)
from peerwatch.protocols.bittorrent.krpc import NodeInfo, Peer
from peerwatch.protocols.bittorrent.node_id import distance, random_node_id

T = TypeVar("T")
LATENCY = 0.02  # one-way, seconds of fake time


class Endpoint(Protocol):
    def receive(self, data: bytes, addr: Peer, now: float) -> list[DhtEvent]: ...
    def datagrams_to_send(self) -> list[tuple[bytes, Peer]]: ...
    def next_timer(self) -> float | None: ...
    def on_timer(self, now: float) -> list[DhtEvent]: ...


@dataclass
class Network:
    """Routes datagrams between endpoints on a fake clock."""

    now: float = 0.0
    nodes: dict[Peer, Endpoint] = field(default_factory=dict)
    events: dict[Peer, list[DhtEvent]] = field(default_factory=lambda: defaultdict(list))
    sends: list[tuple[float, Peer, Peer]] = field(default_factory=list)  # (time, src, dst)
    dead: set[Peer] = field(default_factory=set)
    _heap: list[tuple[float, int, Peer, Peer | None, bytes]] = field(default_factory=list)
    _timer_at: dict[Peer, float] = field(default_factory=dict)
    _seq: int = 0

    def add(self, addr: Peer, node: Endpoint) -> None:
        self.nodes[addr] = node
        self._schedule(addr)

    def call(self, addr: Peer, fn: Callable[[float], T]) -> T:
        """Run `fn(now)` against a node (e.g. start a lookup), then send what it queued."""
        result = fn(self.now)
        self.pump(addr)
        return result

    def pump(self, addr: Peer) -> None:
        node = self.nodes[addr]
        for data, dst in node.datagrams_to_send():
            if addr in self.dead:
                continue
            self.sends.append((self.now, addr, dst))
            if dst in self.nodes and dst not in self.dead:
                self._push(self.now + LATENCY, dst, addr, data)
        self._schedule(addr)

    def _push(self, t: float, dst: Peer, src: Peer | None, data: bytes) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, dst, src, data))

    def _schedule(self, addr: Peer) -> None:
        t = self.nodes[addr].next_timer()
        if t is None:
            return
        t = max(t, self.now)
        current = self._timer_at.get(addr)
        if current is None or t < current:
            self._timer_at[addr] = t
            self._push(t, addr, None, b"")

    def step(self) -> None:
        t, _, dst, src, data = heapq.heappop(self._heap)
        self.now = max(self.now, t)
        node = self.nodes[dst]
        if src is None:
            if self._timer_at.get(dst) != t:
                return  # superseded by an earlier timer
            del self._timer_at[dst]
            evs = node.on_timer(self.now)
        else:
            evs = node.receive(data, src, self.now)
        self.events[dst].extend(evs)
        self.pump(dst)

    def run_until(self, done: Callable[[], bool], limit: float) -> bool:
        while self._heap and not done():
            if self._heap[0][0] > limit:
                break
            self.step()
        return done()

    def advance_to(self, t: float) -> None:
        self.run_until(lambda: False, t)
        self.now = max(self.now, t)


class Scripted:
    """An endpoint driven by the test: it sends what it is told and keeps what it receives."""

    def __init__(self) -> None:
        self.outbox: list[tuple[bytes, Peer]] = []
        self.inbox: list[tuple[krpc.KrpcMessage, Peer]] = []

    def send(self, msg: krpc.KrpcMessage, dst: Peer) -> None:
        self.outbox.append((krpc.encode(msg), dst))

    def receive(self, data: bytes, addr: Peer, now: float) -> list[DhtEvent]:
        self.inbox.append((krpc.decode(data), addr))
        return []

    def datagrams_to_send(self) -> list[tuple[bytes, Peer]]:
        out, self.outbox = self.outbox, []
        return out

    def next_timer(self) -> float | None:
        return None

    def on_timer(self, now: float) -> list[DhtEvent]:
        return []


class Liar:
    """A DHT node that answers every get_peers with ghost peers (a lying or poisoned node)."""

    def __init__(self, inner: DhtNode, ghosts: tuple[Peer, ...]) -> None:
        self.inner = inner
        self.ghosts = ghosts
        self.extra: list[tuple[bytes, Peer]] = []

    def receive(self, data: bytes, addr: Peer, now: float) -> list[DhtEvent]:
        msg = krpc.decode(data)
        if isinstance(msg, krpc.GetPeers):
            resp = krpc.Response(
                t=msg.t, node_id=self.inner.node_id, values=self.ghosts, token=b"liar"
            )
            self.extra.append((krpc.encode(resp), addr))
            return []
        return self.inner.receive(data, addr, now)

    def datagrams_to_send(self) -> list[tuple[bytes, Peer]]:
        out = self.inner.datagrams_to_send() + self.extra
        self.extra = []
        return out

    def next_timer(self) -> float | None:
        return self.inner.next_timer()

    def on_timer(self, now: float) -> list[DhtEvent]:
        return self.inner.on_timer(now)


def addr_of(i: int) -> Peer:
    return (f"127.0.{i // 200}.{i % 200 + 1}", 6881)


@dataclass
class World:
    net: Network
    addrs: list[Peer]
    dht: dict[Peer, DhtNode]


def build_world(
    n: int = 200,
    *,
    seed: int = 1,
    ids: dict[int, bytes] | None = None,
    wrap: dict[int, Callable[[DhtNode], Endpoint]] | None = None,
    config: DhtConfig | None = None,
    configs: dict[int, DhtConfig] | None = None,
) -> World:
    rng = random.Random(seed)
    net = Network()
    addrs = [addr_of(i) for i in range(n)]
    dht: dict[Peer, DhtNode] = {}
    for i, a in enumerate(addrs):
        node_id = (ids or {}).get(i) or random_node_id(rng)
        cfg = (configs or {}).get(i, config)
        node = DhtNode(node_id, 0.0, config=cfg, rng=random.Random(rng.getrandbits(64)))
        dht[a] = node
        endpoint: Endpoint = wrap[i](node) if wrap and i in wrap else node
        net.add(a, endpoint)
    for i in range(1, n):
        net.advance_to(i * 0.05)
        seeds = rng.sample(addrs[:i], min(3, i))
        net.call(addrs[i], functools.partial(_bootstrap, dht[addrs[i]], seeds))
    net.advance_to(net.now + 20.0)
    return World(net, addrs, dht)


def _bootstrap(node: DhtNode, seeds: list[Peer], now: float) -> int:
    return node.bootstrap(seeds, now)


def closest_addrs(world: World, target: bytes, n: int) -> list[Peer]:
    return sorted(world.addrs, key=lambda a: distance(world.dht[a].node_id, target))[:n]


def announce(world: World, holder: Peer, info_hash: bytes, announcer_ip: str, port: int) -> None:
    """A scripted peer at `announcer_ip` gets a token from `holder` and announces to it."""
    net = world.net
    me = (announcer_ip, 7000)
    client = Scripted()
    net.add(me, client)
    my_id = bytes(20)
    client.send(krpc.GetPeers(t=b"g1", node_id=my_id, info_hash=info_hash), holder)
    net.pump(me)
    net.advance_to(net.now + 2.5)  # past any per-IP budget wait at the holder
    tokens = [m.token for m, a in client.inbox if isinstance(m, krpc.Response) and a == holder]
    assert tokens and tokens[0] is not None
    client.send(
        krpc.AnnouncePeer(t=b"a1", node_id=my_id, info_hash=info_hash, port=port, token=tokens[0]),
        holder,
    )
    net.pump(me)
    net.advance_to(net.now + 2.5)  # past any per-IP budget wait at the holder
    assert any(isinstance(m, krpc.Response) and m.t == b"a1" for m, _ in client.inbox)


def lookup_done(world: World, addr: Peer, lookup: int) -> LookupDone | None:
    for e in world.net.events[addr]:
        if isinstance(e, LookupDone) and e.lookup == lookup:
            return e
    return None


def assert_budgets(sends: list[tuple[float, Peer, Peer]], per_ip: int, total: int) -> None:
    """No sender ever sent more than `per_ip` packets to one IP, or `total` packets in all, in
    any one-second window."""
    by_pair: dict[tuple[Peer, str], list[float]] = defaultdict(list)
    by_src: dict[Peer, list[float]] = defaultdict(list)
    for t, src, dst in sends:
        by_pair[(src, dst[0])].append(t)
        by_src[src].append(t)
    for times in by_pair.values():
        for i in range(len(times) - per_ip):
            assert times[i + per_ip] - times[i] >= 1.0 - 1e-9
    for times in by_src.values():
        for i in range(len(times) - total):
            assert times[i + total] - times[i] >= 1.0 - 1e-9


# --- simulated network --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def info_hash() -> bytes:
    return random.Random(99).randbytes(20)


def test_get_peers_finds_peers_announced_on_five_nodes(info_hash: bytes) -> None:
    world = build_world()
    net = world.net
    holders = closest_addrs(world, info_hash, 5)
    for j, h in enumerate(holders):
        announce(world, h, info_hash, f"127.0.50.{j + 1}", 51000 + j)
    observer = max(world.addrs, key=lambda a: distance(world.dht[a].node_id, info_hash))
    node = world.dht[observer]
    start = net.now
    lookup = net.call(observer, lambda now: node.get_peers(info_hash, now))
    assert isinstance(lookup, int)
    assert net.run_until(lambda: lookup_done(world, observer, lookup) is not None, start + 30)
    done = lookup_done(world, observer, lookup)
    assert done is not None and not done.timed_out
    found = [e for e in net.events[observer] if isinstance(e, PeersFound) and e.lookup == lookup]
    by_holder = {e.from_node.addr: set(e.peers) for e in found}
    for j, h in enumerate(holders):
        assert by_holder[h] == {(f"127.0.50.{j + 1}", 51000 + j)}
        assert next(e for e in found if e.from_node.addr == h).from_node.node_id == (
            world.dht[h].node_id
        )
    # converged on the true k closest, each with a token, in a bounded number of queries/time
    true_closest = closest_addrs(world, info_hash, 8)
    assert [n.addr for n, _ in done.closest_with_tokens] == true_closest
    assert all(tok for _, tok in done.closest_with_tokens)
    assert done.queries_sent <= 40
    assert net.now - start < 3.0
    assert_budgets(net.sends, per_ip=5, total=200)


def test_lying_node_ghost_peers_are_attributed(info_hash: bytes) -> None:
    ghosts = (("127.0.66.1", 1), ("127.0.66.2", 2))
    liar_id = info_hash[:-1] + bytes([info_hash[-1] ^ 1])  # as close as it gets
    world = build_world(seed=2, ids={17: liar_id}, wrap={17: lambda d: Liar(d, ghosts)}, n=120)
    net = world.net
    liar = world.addrs[17]
    honest = closest_addrs(world, info_hash, 3)[1:]
    for j, h in enumerate(honest):
        announce(world, h, info_hash, f"127.0.50.{j + 1}", 52000 + j)
    observer = world.addrs[3]
    node = world.dht[observer]
    lookup = net.call(observer, lambda now: node.get_peers(info_hash, now))
    assert net.run_until(lambda: lookup_done(world, observer, lookup) is not None, net.now + 30)
    found = [e for e in net.events[observer] if isinstance(e, PeersFound) and e.lookup == lookup]
    ghost_claims = [e for e in found if set(e.peers) & set(ghosts)]
    assert [e.from_node for e in ghost_claims] == [NodeInfo(liar_id, *liar)]
    honest_claims = {p for e in found if e.from_node.addr != liar for p in e.peers}
    assert honest_claims == {("127.0.50.1", 52000), ("127.0.50.2", 52001)}


def test_dead_nodes_time_out_and_back_off(info_hash: bytes) -> None:
    world = build_world(seed=3, n=150)
    net = world.net
    holders = closest_addrs(world, info_hash, 5)
    for j, h in enumerate(holders):
        announce(world, h, info_hash, f"127.0.50.{j + 1}", 53000 + j)
    rng = random.Random(4)
    observer = world.addrs[0]
    others = [a for a in world.addrs if a != observer]
    net.dead = set(rng.sample(others, int(0.3 * len(world.addrs))))
    node = world.dht[observer]
    before = len(net.sends)
    start = net.now
    lookup = net.call(observer, lambda now: node.get_peers(info_hash, now))
    assert net.run_until(lambda: lookup_done(world, observer, lookup) is not None, start + 60)
    done = lookup_done(world, observer, lookup)
    assert done is not None
    assert net.now - start < 20.0
    found = {e.from_node.addr for e in net.events[observer] if isinstance(e, PeersFound)}
    assert found == {h for h in holders if h not in net.dead}
    assert all(n.addr not in net.dead for n, _ in done.closest_with_tokens)
    # each dead node was tried at most max_attempts times, then backed off
    mine = [(t, dst) for t, src, dst in net.sends[before:] if src == observer]
    per_dead: dict[Peer, int] = defaultdict(int)
    for _, dst in mine:
        if dst in net.dead:
            per_dead[dst] += 1
    assert per_dead and max(per_dead.values()) <= node.config.max_attempts
    assert node.stats.timeouts > 0
    failed = {a for a, c in per_dead.items() if c == node.config.max_attempts}
    before2 = len(net.sends)
    lookup2 = net.call(observer, lambda now: node.get_peers(info_hash, now))
    assert net.run_until(lambda: lookup_done(world, observer, lookup2) is not None, net.now + 60)
    again = {dst for _, src, dst in net.sends[before2:] if src == observer}
    assert not again & failed
    assert_budgets(net.sends, per_ip=5, total=200)


def test_tight_budgets_delay_but_do_not_break_lookups(info_hash: bytes) -> None:
    # the sensor is the constrained one; the network around it is ordinary
    tight = DhtConfig(per_ip_packets=1, global_packets=4)
    world = build_world(seed=7, n=100, configs={5: tight})
    net = world.net
    holders = closest_addrs(world, info_hash, 3)
    for j, h in enumerate(holders):
        announce(world, h, info_hash, f"127.0.50.{j + 1}", 55000 + j)
    observer = world.addrs[5]
    node = world.dht[observer]
    targets = [info_hash, *(random.Random(i).randbytes(20) for i in range(3))]
    lookups = [net.call(observer, functools.partial(node.get_peers, t)) for t in targets]
    assert net.run_until(
        lambda: all(lookup_done(world, observer, lk) is not None for lk in lookups), net.now + 60
    )
    assert node.stats.queries_deferred > 0
    found = {e.from_node.addr for e in net.events[observer] if isinstance(e, PeersFound)}
    assert found == set(holders)
    assert_budgets([s for s in net.sends if s[1] == observer], per_ip=1, total=4)
    assert_budgets(net.sends, per_ip=5, total=200)


def test_samples_lookup_reports_stored_infohashes(info_hash: bytes) -> None:
    world = build_world(seed=5, n=80)
    net = world.net
    holders = closest_addrs(world, info_hash, 2)
    for j, h in enumerate(holders):
        announce(world, h, info_hash, f"127.0.50.{j + 1}", 54000 + j)
    observer = world.addrs[1]
    node = world.dht[observer]
    lookup = net.call(observer, lambda now: node.sample_infohashes(info_hash, now))
    assert net.run_until(lambda: lookup_done(world, observer, lookup) is not None, net.now + 30)
    samples = [e for e in net.events[observer] if isinstance(e, SamplesReceived)]
    with_hash = {e.from_node.addr for e in samples if info_hash in e.samples}
    assert with_hash == set(holders)
    assert all(e.num == 1 and e.interval == 300 for e in samples if e.from_node.addr in holders)


def test_node_that_changes_id_is_ignored() -> None:
    world = build_world(seed=6, n=60)
    net = world.net
    victim = world.addrs[10]
    old_id = world.dht[victim].node_id
    knowers = [a for a in world.addrs if world.dht[a].routing.get(victim, net.now) is not None]
    assert knowers
    # the same address comes back with a new id and asks around
    impostor = DhtNode(random.Random(7).randbytes(20), net.now, rng=random.Random(8))
    net.nodes[victim] = impostor
    net.call(victim, lambda now: impostor.bootstrap(knowers[:3], now))
    net.advance_to(net.now + 10)
    ignored = [
        e
        for a in world.addrs
        for e in net.events[a]
        if isinstance(e, NodeIgnored) and e.node.addr == victim
    ]
    assert ignored and all(e.node.node_id == impostor.node_id for e in ignored)
    for a in knowers:
        entry = world.dht[a].routing.get(victim, net.now)
        assert entry is not None and entry.node.node_id == old_id
    assert sum(world.dht[a].routing.id_change_offences.get(victim, 0) for a in knowers) >= 1


# --- single node --------------------------------------------------------------------------------


def _node(**cfg: object) -> DhtNode:
    return DhtNode(b"\x00" * 20, 0.0, config=DhtConfig(**cfg), rng=random.Random(1))  # type: ignore[arg-type]


REMOTE = ("127.0.0.2", 6881)


def test_queries_over_the_per_ip_budget_wait_for_the_timer() -> None:
    node = _node(per_ip_packets=2, query_timeout=100.0)
    for _ in range(5):
        node.ping(REMOTE, 0.0)
    assert len(node.datagrams_to_send()) == 2
    assert node.next_timer() == pytest.approx(1.0)
    node.on_timer(1.0)
    assert len(node.datagrams_to_send()) == 2
    node.on_timer(2.0)
    assert len(node.datagrams_to_send()) == 1
    assert node.stats.queries_deferred == 3


def test_global_budget_spreads_queries_to_many_ips() -> None:
    node = _node(global_packets=3, query_timeout=100.0)
    for i in range(7):
        node.ping((f"127.0.1.{i + 1}", 6881), 0.0)
    assert len(node.datagrams_to_send()) == 3
    node.on_timer(node.next_timer() or 0.0)
    assert len(node.datagrams_to_send()) == 3
    node.on_timer(2.0)
    assert len(node.datagrams_to_send()) == 1


def test_replies_over_budget_are_dropped_and_counted() -> None:
    node = _node(per_ip_packets=2)
    for i in range(4):
        node.receive(krpc.encode(krpc.Ping(t=b"%d" % i, node_id=b"r" * 20)), REMOTE, 0.0)
    replies = [krpc.decode(d) for d, a in node.datagrams_to_send() if a == REMOTE]
    assert len(replies) == 2
    assert node.stats.replies_dropped >= 2


def _replies(node: DhtNode) -> list[krpc.KrpcMessage]:
    """What the node sent to REMOTE that is not a query of its own."""
    msgs = [krpc.decode(d) for d, a in node.datagrams_to_send() if a == REMOTE]
    return [m for m in msgs if isinstance(m, krpc.Response | krpc.ErrorMessage)]


def test_answers_ping_find_node_and_unknown_method() -> None:
    node = _node()
    evs = node.receive(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe", REMOTE, 0.0)
    assert evs == [QueryReceived("ping", b"abcdefghij0123456789", REMOTE, False)]
    (reply,) = _replies(node)
    assert isinstance(reply, krpc.Response) and reply.t == b"aa"
    assert reply.node_id == node.node_id and reply.requester == REMOTE  # BEP 42 'ip'
    # find_node: the closest nodes we know, once they have answered us
    known = [(f"127.0.2.{i}", 6881) for i in range(1, 4)]
    for i, a in enumerate(known):
        node.ping(a, 0.0)
        (d, _), *_ = node.datagrams_to_send()
        q = krpc.decode(d)
        node.receive(krpc.encode(krpc.Response(t=q.t, node_id=bytes([i + 1]) * 20)), a, 0.1)
    node.receive(
        krpc.encode(krpc.FindNode(t=b"f", node_id=b"r" * 20, target=b"\x02" * 20)), REMOTE, 0.2
    )
    (reply,) = _replies(node)
    assert isinstance(reply, krpc.Response)
    assert [n.addr for n in reply.nodes] == [known[1], known[2], known[0]]  # XOR order
    node.receive(
        krpc.encode(krpc.UnknownQuery(t=b"u", method=b"vote", node_id=b"x" * 20)), REMOTE, 0.3
    )
    (err,) = _replies(node)
    assert isinstance(err, krpc.ErrorMessage) and err.code == 204


def test_malformed_datagrams_are_recorded_and_broken_queries_get_203() -> None:
    node = _node()
    evs = node.receive(b"d1:ad2:id3:abce1:q4:ping1:t2:zz1:y1:qe", REMOTE, 0.0)
    assert evs == [MalformedDatagram(REMOTE, "a.id: 3 bytes, not 20")]
    (err,) = _replies(node)
    assert isinstance(err, krpc.ErrorMessage) and err.code == 203 and err.t == b"zz"
    evs = node.receive(b"\xff garbage", REMOTE, 0.0)
    assert len(evs) == 1 and isinstance(evs[0], MalformedDatagram)
    assert node.datagrams_to_send() == []  # no transaction id: nothing to answer
    assert node.stats.malformed == 2


def test_read_only_node_answers_nothing_and_flags_its_queries() -> None:
    node = _node(read_only=True)
    evs = node.receive(krpc.encode(krpc.Ping(t=b"p", node_id=b"r" * 20)), REMOTE, 0.0)
    assert evs == [QueryReceived("ping", b"r" * 20, REMOTE, False)]
    assert node.datagrams_to_send() == []
    node.ping(REMOTE, 0.0)
    (q,) = [krpc.decode(d) for d, _ in node.datagrams_to_send()]
    assert isinstance(q, krpc.Ping) and q.read_only  # BEP 43


def test_ipv6_node_answers_with_nodes6() -> None:
    node = _node(ipv6=True)
    peer6 = ("::1", 6881)
    node.ping(("::2", 6881), 0.0)
    ((d, _),) = node.datagrams_to_send()
    q = krpc.decode(d)
    node.receive(krpc.encode(krpc.Response(t=q.t, node_id=b"n" * 20)), ("::2", 6881), 0.1)
    node.receive(krpc.encode(krpc.FindNode(t=b"f", node_id=b"r" * 20, target=b"t" * 20)), peer6, 1)
    replies = [krpc.decode(d) for d, a in node.datagrams_to_send() if a == peer6]
    resp = next(m for m in replies if isinstance(m, krpc.Response))
    assert resp.nodes == () and resp.nodes6 == (NodeInfo(b"n" * 20, "::2", 6881),)
    assert resp.requester == peer6


def test_sample_infohashes_answer() -> None:
    node = _node()
    ih = b"i" * 20
    node.receive(krpc.encode(krpc.GetPeers(t=b"1", node_id=b"r" * 20, info_hash=ih)), REMOTE, 0.0)
    (resp,) = _replies(node)
    assert isinstance(resp, krpc.Response) and resp.token is not None
    ann = krpc.AnnouncePeer(t=b"2", node_id=b"r" * 20, info_hash=ih, port=6000, token=resp.token)
    node.receive(krpc.encode(ann), REMOTE, 0.0)
    _replies(node)
    q = krpc.SampleInfohashes(t=b"3", node_id=b"r" * 20, target=b"t" * 20)
    node.receive(krpc.encode(q), REMOTE, 0.0)
    (resp,) = _replies(node)
    assert isinstance(resp, krpc.Response)
    assert resp.samples == (ih,) and resp.num == 1 and resp.interval == 300


def test_announce_needs_a_valid_token_and_tokens_rotate() -> None:
    node = _node()
    ih = b"i" * 20
    node.receive(krpc.encode(krpc.GetPeers(t=b"1", node_id=b"r" * 20, info_hash=ih)), REMOTE, 0.0)
    (resp,) = _replies(node)
    assert isinstance(resp, krpc.Response) and resp.token
    token = resp.token
    # a wrong token is refused with 203, and reported
    bad = krpc.AnnouncePeer(t=b"2", node_id=b"r" * 20, info_hash=ih, port=9, token=b"nope")
    evs = node.receive(krpc.encode(bad), REMOTE, 1.0)
    assert any(isinstance(e, AnnounceReceived) and not e.accepted for e in evs)
    (err,) = _replies(node)
    assert isinstance(err, krpc.ErrorMessage) and err.code == 203
    # the same token from another IP is refused too (BEP 5: bound to the asker's IP)
    stolen = krpc.AnnouncePeer(t=b"3", node_id=b"s" * 20, info_hash=ih, port=9, token=token)
    evs = node.receive(krpc.encode(stolen), ("127.0.0.3", 1), 1.0)
    assert any(isinstance(e, AnnounceReceived) and not e.accepted for e in evs)
    assert node.stored_peers(ih, 1.0) == ()
    node.datagrams_to_send()
    # still valid after one rotation (5 min), not after two (BEP 5: up to 10 minutes)
    node.on_timer(301.0)
    good = krpc.AnnouncePeer(
        t=b"4", node_id=b"r" * 20, info_hash=ih, port=0, token=token, implied_port=True
    )
    evs = node.receive(krpc.encode(good), REMOTE, 301.0)
    assert AnnounceReceived(ih, REMOTE, NodeInfo(b"r" * 20, *REMOTE), True) in evs
    assert node.stored_peers(ih, 302.0) == (REMOTE,)
    node.on_timer(602.0)
    evs = node.receive(krpc.encode(good), REMOTE, 602.0)
    assert any(isinstance(e, AnnounceReceived) and not e.accepted for e in evs)
    # announced peers are served to get_peers
    node.datagrams_to_send()
    node.receive(krpc.encode(krpc.GetPeers(t=b"5", node_id=b"r" * 20, info_hash=ih)), REMOTE, 603)
    (resp,) = _replies(node)
    assert isinstance(resp, krpc.Response) and resp.values == (REMOTE,)
    assert resp.nodes == ()  # BEP 5: values, otherwise nodes


def test_new_node_is_pinged_then_added_and_an_id_change_is_refused() -> None:
    node = _node()
    rid = b"\x80" + b"r" * 19
    node.receive(krpc.encode(krpc.Ping(t=b"p", node_id=rid)), REMOTE, 0.0)
    out = [krpc.decode(d) for d, a in node.datagrams_to_send()]
    ping = next(m for m in out if isinstance(m, krpc.Ping))
    evs = node.receive(krpc.encode(krpc.Response(t=ping.t, node_id=rid)), REMOTE, 0.1)
    assert NodeAdded(NodeInfo(rid, *REMOTE)) in evs
    other = b"\x81" + b"z" * 19
    evs = node.receive(krpc.encode(krpc.Ping(t=b"q", node_id=other)), REMOTE, 0.2)
    assert any(isinstance(e, NodeIgnored) for e in evs)
    entry = node.routing.get(REMOTE, 0.2)
    assert entry is not None and entry.node.node_id == rid
    assert node.routing.id_change_offences == {REMOTE: 1}


def test_lookup_with_no_contacts_finishes_on_the_next_timer() -> None:
    node = _node()
    lookup = node.get_peers(b"i" * 20, 5.0)
    assert node.next_timer() == 5.0
    evs = node.on_timer(5.0)
    assert evs == [LookupDone(lookup, "get_peers", b"i" * 20, (), 0, 0, False)]


def test_error_reply_fails_the_candidate() -> None:
    node = _node()
    lookup = node.bootstrap([REMOTE], 0.0)
    assert lookup
    ((data, _),) = node.datagrams_to_send()
    q = krpc.decode(data)
    evs = node.receive(krpc.encode(krpc.ErrorMessage(t=q.t, code=202, message="busy")), REMOTE, 0.1)
    assert evs == [ErrorReceived(202, "busy", REMOTE, lookup)]


def test_transition_table_only_moves_forward() -> None:
    # every state reachable from FRESH, nothing leaves RESPONDED or FAILED
    sources = {s for s, _ in CANDIDATE_TRANSITIONS}
    assert CandidateState.RESPONDED not in sources
    assert CandidateState.FAILED not in sources
    assert set(CANDIDATE_TRANSITIONS.values()) | {CandidateState.FRESH} == set(CandidateState)
