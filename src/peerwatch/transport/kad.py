"""Kad2 source search over UDP: the asyncio driver of protocols/kad (bootstrap, lookup, search).

`find_sources` bootstraps from the given nodes (KADEMLIA2_BOOTSTRAP_REQ), runs an iterative
lookup towards the file hash (KADEMLIA2_REQ, protocols/kad/lookup.py) and asks the closest nodes
that answered for sources (KADEMLIA2_SEARCH_SOURCE_REQ); every KADEMLIA2_SEARCH_RES about the file
gives `KadSource`s. A Kad source list is a *claim* by the node that stores it, not possession:
the eD2k sensor must still probe each source.

Politeness: real Kad nodes ban an address that floods them (aMule's CKademliaUDPListener
InTrackListIsAllowedPacket / PacketTracking.cpp limits each opcode per address per time), so
every datagram goes through a `SendBudget`: at most `per_ip` packets to one remote IP in any
one-second window (default 5) and at most `global_rate` packets a second in all. A contact that
never answers (a "ghost") is given up after `timeout` and the lookup goes on without it.
Every destination is checked with the `EgressPolicy` (loopback only by default), whatever a node
lists. Plain UDP only: Kad UDP obfuscation (the per-node verify keys of aMule's
EncryptedDatagramSocket) is not implemented; aMule nodes answer plain Kad packets.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import socket
import struct
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from peerwatch.protocols.kad import packets as kp
from peerwatch.protocols.kad.lookup import Kind, Lookup
from peerwatch.protocols.kad.packets import KadContact, KadError
from peerwatch.protocols.kad.routing import K
from peerwatch.transport.egress import EgressPolicy

#: Source types a node may report (CSearch::ProcessResultFile accepts 1, 3, 4, 5, 6; 2 is unused).
SOURCE_TYPES = frozenset({1, 3, 4, 5, 6})
LOW_ID_TYPES = frozenset({3, 5})  # firewalled, reached through a buddy (TAG_SERVERIP/PORT)


@dataclass
class KadSearchConfig:
    per_ip: int = 5  # packets to one remote IP in any one-second window (real peers ban more)
    global_rate: int = 50  # packets a second to everyone together
    timeout: float = 3.0  # seconds a node has to answer one request
    bootstrap_timeout: float = 5.0  # seconds to wait for the bootstrap nodes' answers
    alpha: int = 3  # parallel KADEMLIA2_REQs (aMule 2.3.3's ALPHA_QUERY)
    k: int = K  # closest contacts that converge the lookup and get the search request
    wanted: int = kp.KADEMLIA_FIND_VALUE  # contacts asked for per KADEMLIA2_REQ, as aMule
    linger: float = 1.5  # seconds to keep listening for SEARCH_RES after the last request
    duration: float = 60.0  # hard cap on the whole search
    max_queries: int = 100  # at most this many nodes asked for contacts
    max_datagrams: int = 20_000  # at most this many received datagrams handled
    max_sources: int = 10_000  # at most this many distinct sources kept (more are `ignored`)
    node_id: int | None = None  # our Kad id (random when None); nodes never learn it here
    egress: EgressPolicy = field(default_factory=EgressPolicy)


@dataclass(frozen=True, slots=True)
class KadSource:
    """One source as a node reported it (CSearch::ProcessResultFile's fields)."""

    ip: str
    tcp_port: int
    udp_port: int
    user_hash: bytes  # the SEARCH_RES answer id as hash bytes (CUInt128::ToByteArray)
    source_type: int  # 1 high id, 3 firewalled (buddy), 4 high id >4 GB, 5 buddy >4 GB, 6 callback
    crypt_options: int  # TAG_ENCRYPTION: 1 supported, 2 requested, 4 required, 8 direct callback
    buddy_ip: str | None  # low id sources (type 3/5): TAG_SERVERIP/TAG_SERVERPORT, the buddy
    buddy_port: int | None
    buddy_hash: str | None  # TAG_BUDDYHASH as sent (hex text)
    node: tuple[str, int]  # the node that reported it

    @property
    def supports_crypt(self) -> bool:
        return bool(self.crypt_options & 0x01)

    @property
    def requests_crypt(self) -> bool:
        return bool(self.crypt_options & 0x02)

    @property
    def requires_crypt(self) -> bool:
        return bool(self.crypt_options & 0x04)

    @property
    def low_id(self) -> bool:
        return self.source_type in LOW_ID_TYPES


@dataclass(frozen=True, slots=True)
class KadNodeAnswer:
    """One answer a node gave: to our bootstrap, our contact request or our source search."""

    ip: str
    port: int
    kind: str  # "bootstrap", "contacts", "sources"
    node_id: str  # the node's Kad id as 32 hex digits ("" when the packet does not carry it)
    count: int  # contacts or source results in the answer
    at: float  # seconds since the search started


@dataclass(frozen=True, slots=True)
class KadSearchResult:
    file_hash: bytes
    file_size: int | None
    sources: tuple[KadSource, ...]
    contacts_queried: int  # nodes sent a KADEMLIA2_REQ
    searched: tuple[tuple[str, int], ...]  # nodes sent a SEARCH_SOURCE_REQ
    node_answers: tuple[KadNodeAnswer, ...]
    ghosts: tuple[tuple[str, int], ...]  # nodes given up: no answer in time, or a broken one
    packets_sent: int
    packets_received: int
    malformed: int  # datagrams that were not valid Kad (KadError)
    ignored: int  # valid but unasked, off-target or unusable answers
    denied: int  # contacts outside the egress policy, never contacted
    exchange_digest: str  # SHA-256 over every datagram both ways, in order (see _Exchange)
    started_at: float  # UTC epoch seconds
    finished_at: float


class SendBudget:
    """Sliding one-second windows: at most `per_ip` packets per remote IP and `global_rate` in
    all. `take(ip, now)` spends one packet when allowed; `wait(ip, now)` says how long until."""

    # The window is 5% over a second so that a receiver, whose clock sees our packets with some
    # jitter, never counts more than `per_ip` of them in any one second.
    def __init__(self, per_ip: int, global_rate: int, window: float = 1.05) -> None:
        if per_ip < 1 or global_rate < 1:
            raise ValueError("rates must be at least 1 packet per window")
        self.per_ip, self.global_rate, self.window = per_ip, global_rate, window
        self._per: dict[str, deque[float]] = {}
        self._all: deque[float] = deque()

    def _trim(self, q: deque[float], now: float) -> None:
        while q and now - q[0] >= self.window:
            q.popleft()

    def wait(self, ip: str, now: float) -> float:
        q = self._per.setdefault(ip, deque())
        self._trim(q, now)
        self._trim(self._all, now)
        waits = [0.0]
        if len(q) >= self.per_ip:
            waits.append(q[0] + self.window - now)
        if len(self._all) >= self.global_rate:
            waits.append(self._all[0] + self.window - now)
        return max(waits)

    def take(self, ip: str, now: float) -> bool:
        if self.wait(ip, now) > 0:
            return False
        self._per[ip].append(now)
        self._all.append(now)
        return True


class _Exchange:
    """The digest of the raw exchange: SHA-256 over ``<dir 1><ipv4 4><port 2><len 4><bytes>``
    for every datagram, in the order sent/received (dir ``>`` out, ``<`` in)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def add(self, direction: bytes, addr: tuple[str, int], data: bytes) -> None:
        ip = socket.inet_aton(addr[0])
        self._h.update(direction + ip + struct.pack(">HI", addr[1], len(data)) + data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue(maxsize=4096)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if not self.queue.full():  # a flood is dropped, never buffered without bound
            self.queue.put_nowait((data, (str(addr[0]), int(addr[1]))))

    def error_received(self, exc: Exception) -> None:  # ICMP errors: a ghost, seen by timeout
        pass


class _Search:
    """The state of one `find_sources` run (the asyncio part)."""

    def __init__(self, config: KadSearchConfig, file_hash: bytes, file_size: int | None) -> None:
        self.config = config
        self.file_hash = file_hash
        self.file_size = file_size
        self.target = kp.hash_to_id(file_hash)
        self.node_id = config.node_id if config.node_id is not None else secrets.randbits(128)
        self.budget = SendBudget(config.per_ip, config.global_rate)
        self.exchange = _Exchange()
        self.t0 = time.monotonic()
        self.sent = self.received = self.malformed = self.ignored = self.denied = 0
        self.answers: list[KadNodeAnswer] = []
        self.sources: dict[tuple[bytes, str, int], KadSource] = {}
        self.find_sent: dict[tuple[str, int], int] = {}  # address -> contact id asked
        self.search_sent: set[tuple[str, int]] = set()
        self.transport: asyncio.DatagramTransport | None = None
        self.inbox = _Inbox()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def send(self, msg: kp.KadMessage, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        data = kp.encode_datagram(msg)
        self.transport.sendto(data, addr)
        self.exchange.add(b">", addr, data)
        self.sent += 1

    async def send_paced(self, msg: kp.KadMessage, addr: tuple[str, int]) -> None:
        while not self.budget.take(addr[0], self.now()):
            await asyncio.sleep(max(0.005, self.budget.wait(addr[0], self.now())))
        self.send(msg, addr)

    def allowed(self, contact: KadContact) -> bool:
        if self.config.egress.allows(contact.ip) and contact.udp_port > 0:
            return True
        self.denied += 1
        return False

    async def recv(self, timeout: float) -> tuple[kp.KadMessage, tuple[str, int]] | None:
        """The next valid Kad datagram within `timeout`, or None."""
        try:
            data, addr = await asyncio.wait_for(self.inbox.queue.get(), max(0.0, timeout))
        except TimeoutError:
            return None
        self.received += 1
        self.exchange.add(b"<", addr, data)
        try:
            return kp.decode_datagram(data), addr
        except KadError:
            self.malformed += 1
            return None

    def answer(self, addr: tuple[str, int], kind: str, node_id: int | None, count: int) -> None:
        nid = f"{node_id:032x}" if node_id is not None else ""
        self.answers.append(KadNodeAnswer(addr[0], addr[1], kind, nid, count, self.now()))

    def take_sources(self, msg: kp.SearchRes, addr: tuple[str, int]) -> None:
        for entry in msg.results:
            source = _source(entry, addr)
            key = (source.user_hash, source.ip, source.tcp_port) if source else None
            if (
                source is None
                or key is None
                or not self.config.egress.allows(source.ip)
                or (key not in self.sources and len(self.sources) >= self.config.max_sources)
            ):
                self.ignored += 1
                continue
            self.sources.setdefault(key, source)


def _source(entry: kp.SearchEntry, node: tuple[str, int]) -> KadSource | None:
    """CSearch::ProcessResultFile: the tags of one result, None for a type it would not use."""
    tags = entry.tags
    source_type = kp.tag_int(tags, kp.TAG_SOURCETYPE)
    ip = kp.tag_int(tags, kp.TAG_SOURCEIP)
    tcp = kp.tag_int(tags, kp.TAG_SOURCEPORT)
    if source_type not in SOURCE_TYPES or ip is None or ip > 0xFFFFFFFF or tcp is None:
        return None
    udp = kp.tag_int(tags, kp.TAG_SOURCEUPORT)
    buddy_ip = kp.tag_int(tags, kp.TAG_SERVERIP)
    buddy_port = kp.tag_int(tags, kp.TAG_SERVERPORT)
    buddy_hash = None
    for tag in tags:
        if tag.name == kp.TAG_BUDDYHASH and isinstance(tag.value, bytes):
            buddy_hash = tag.value.decode("latin-1")
    return KadSource(
        ip=kp.kad_to_ip(ip),
        tcp_port=tcp & 0xFFFF,
        udp_port=(udp or 0) & 0xFFFF,
        user_hash=kp.id_to_hash(entry.answer),
        source_type=source_type,
        crypt_options=(kp.tag_int(tags, kp.TAG_ENCRYPTION) or 0) & 0xFF,
        buddy_ip=kp.kad_to_ip(buddy_ip) if buddy_ip is not None else None,
        buddy_port=buddy_port & 0xFFFF if buddy_port is not None else None,
        buddy_hash=buddy_hash,
        node=node,
    )


async def _open(s: _Search, bind_ip: str | None) -> None:
    loop = asyncio.get_running_loop()
    # No bind address: any interface, as a UDP client socket normally is.
    local = (bind_ip or "0.0.0.0", 0)  # noqa: S104
    transport, _ = await loop.create_datagram_endpoint(
        lambda: s.inbox, local_addr=local, family=socket.AF_INET
    )
    s.transport = transport


async def _bootstrap(s: _Search, nodes: Sequence[tuple[str, int]]) -> list[KadContact]:
    """KADEMLIA2_BOOTSTRAP_REQ to each node; the nodes that answer and the contacts they list."""
    waiting = set()
    for host, port in nodes:
        s.config.egress.check(host)
        waiting.add((host, port))
        await s.send_paced(kp.BootstrapReq(), (host, port))
    found: dict[int, KadContact] = {}
    deadline = s.now() + s.config.bootstrap_timeout
    while waiting and s.now() < deadline and s.received < s.config.max_datagrams:
        got = await s.recv(deadline - s.now())
        if got is None:
            continue
        msg, addr = got
        if not isinstance(msg, kp.BootstrapRes) or addr not in waiting:
            s.ignored += 1
            continue
        waiting.discard(addr)
        s.answer(addr, "bootstrap", msg.node_id, len(msg.contacts))
        found[msg.node_id] = KadContact(msg.node_id, addr[0], addr[1], msg.tcp_port, msg.version)
        for c in msg.contacts:
            if c.version > 1 and s.allowed(c):  # Kad1 contacts are ignored (as aMule)
                found.setdefault(c.id, c)
    return list(found.values())


async def _lookup(s: _Search, seeds: list[KadContact]) -> Lookup:
    cfg = s.config
    lookup = Lookup(
        s.target,
        seeds,
        search=True,
        alpha=cfg.alpha,
        k=cfg.k,
        timeout=cfg.timeout,
        wanted=cfg.wanted,
        max_queries=cfg.max_queries,
        own_id=s.node_id,
    )
    end = cfg.duration
    last_sent = s.now()
    while s.now() < end and s.received < cfg.max_datagrams:
        now = s.now()

        def allow(c: KadContact, now: float = now) -> bool:
            return s.budget.take(c.ip, now)

        for req in lookup.next_requests(now, allow=allow):
            addr = req.contact.address
            if req.kind is Kind.FIND:
                s.find_sent[addr] = req.contact.id
                s.send(kp.KadReq(cfg.wanted, s.target, req.contact.id), addr)
            else:
                s.search_sent.add(addr)
                s.send(kp.SearchSourceReq(s.target, 0, s.file_size or 0), addr)
            last_sent = s.now()
        if lookup.done and s.now() - last_sent >= cfg.linger:
            break
        got = await s.recv(0.05)
        if got is None:
            continue
        msg, addr = got
        if isinstance(msg, kp.KadRes) and msg.target == s.target and addr in s.find_sent:
            listed = [c for c in msg.contacts if c.version > 1 and s.allowed(c)]
            if lookup.on_response(s.find_sent[addr], listed, s.now()):
                s.answer(addr, "contacts", s.find_sent[addr], len(msg.contacts))
            else:
                s.ignored += 1
        elif isinstance(msg, kp.SearchRes) and msg.target == s.target and addr in s.search_sent:
            s.answer(addr, "sources", msg.sender_id, len(msg.results))
            s.take_sources(msg, addr)
        else:
            s.ignored += 1
    return lookup


async def find_sources(
    bootstrap: Sequence[tuple[str, int]],
    file_hash: bytes,
    file_size: int | None,
    *,
    bind_ip: str | None,
    config: KadSearchConfig | None = None,
) -> KadSearchResult:
    """Search Kad for sources of `file_hash` (16-byte eD2k hash), starting from `bootstrap`
    nodes (HOST:PORT of their Kad UDP port). `file_size` narrows the nodes' answers (0/None:
    any size). Raises EgressDeniedError for a bootstrap node outside the egress policy."""
    cfg = config or KadSearchConfig()
    kp.hash_to_id(file_hash)  # ValueError on a hash that is not 16 bytes
    for host, _ in bootstrap:  # all refused before anything is sent
        cfg.egress.check(host)
    s = _Search(cfg, bytes(file_hash), file_size)
    started = time.time()
    await _open(s, bind_ip)
    try:
        seeds = await _bootstrap(s, bootstrap)
        lookup = await _lookup(s, seeds)
    finally:
        assert s.transport is not None
        s.transport.close()
    return KadSearchResult(
        file_hash=s.file_hash,
        file_size=file_size,
        sources=tuple(s.sources.values()),
        contacts_queried=lookup.queried,
        searched=tuple(sorted(s.search_sent)),
        node_answers=tuple(s.answers),
        ghosts=tuple(sorted(c.address for c in lookup.failed())),
        packets_sent=s.sent,
        packets_received=s.received,
        malformed=s.malformed,
        ignored=s.ignored,
        denied=s.denied,
        exchange_digest=s.exchange.hexdigest(),
        started_at=started,
        finished_at=time.time(),
    )


async def bootstrap_node(
    host: str, port: int, *, bind_ip: str | None, timeout: float = 5.0, attempts: int = 1
) -> kp.BootstrapRes | None:
    """One KADEMLIA2_BOOTSTRAP_REQ to one node (resent up to `attempts` times, one a second at
    most): its BOOTSTRAP_RES, or None when it does not answer."""
    cfg = KadSearchConfig(bootstrap_timeout=timeout)
    cfg.egress.check(host)
    s = _Search(cfg, bytes(16), None)
    await _open(s, bind_ip)
    try:
        for _ in range(max(1, attempts)):
            await s.send_paced(kp.BootstrapReq(), (host, port))
            deadline = s.now() + timeout
            while s.now() < deadline:
                got = await s.recv(deadline - s.now())
                if got is None:
                    continue
                msg, addr = got
                if isinstance(msg, kp.BootstrapRes) and addr == (host, port):
                    return msg
        return None
    finally:
        assert s.transport is not None
        s.transport.close()
