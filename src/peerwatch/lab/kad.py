"""A simulated Kad network on loopback, and a Kad-enabled variant of the real aMule lab.

Why a simulation: aMule treats 127.0.0.0/8 as unroutable for Kad (CRoutingZone::Add takes only
contacts for which IsGoodIPPort holds, and IsGoodIP in src/NetworkFunctions.cpp refuses the
RFC 3330 reserved ranges, loopback included), so real amuled daemons on loopback never become Kad
contacts of each other. Lookups and source searches are therefore tested against `SimKadNetwork`:
N Python nodes, each an asyncio UDP endpoint on its own address NET.1..N (default 127.0.17.x),
same UDP port, each with a routing table holding the other nodes (and optional "ghost" contacts
that never answer). A node answers as aMule's CKademliaUDPListener does:

- KADEMLIA2_BOOTSTRAP_REQ -> BOOTSTRAP_RES with up to 20 of its contacts (Process2BootstrapRequest);
- KADEMLIA2_HELLO_REQ -> HELLO_RES, and the sender joins its table (Process2HelloRequest);
- KADEMLIA2_REQ -> KADEMLIA2_RES with the `type & 0x1F` contacts closest to the target, only when
  the receiver id is its own (ProcessKademlia2Request);
- KADEMLIA2_SEARCH_SOURCE_REQ -> SEARCH_RES with the sources it stores, 50 a packet, nothing when it
  has none (CIndexed::SendValidSourceResult);
- KADEMLIA2_PUBLISH_SOURCE_REQ -> stored with TAG_SOURCEIP set to the sender's address, and
  TAG_SOURCEUPORT to its port unless given, then PUBLISH_RES (Process2PublishSourceRequest);
- KADEMLIA2_PING -> PONG.

Every node logs what it received (time, sender, opcode), so tests can measure how politely a
client behaved. `publish_source` publishes a source the way a client does: from the source's own
address, to the K nodes closest to the file id (chosen here with the simulation's global view
instead of a lookup).

`kad_amule_conf` is for the real-aMule check (`lab.amule.AmuleLab(kad_ids=...)` applies it): the
aMule lab with Kad switched on (ConnectToKad=1, Autoconnect=1, no eD2k server) and a known Kad id
written to ``preferencesKad.dat``, so that a test can check our decoder against a real
BOOTSTRAP_RES.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from peerwatch.protocols.ed2k.tags import Tag
from peerwatch.protocols.kad import packets as kp
from peerwatch.protocols.kad.packets import KadContact, KadError
from peerwatch.protocols.kad.routing import K, RoutingTable

NET = "127.0.17."  # the simulation's addresses (the real-aMule Kad check uses 127.0.18.)
PORT = 4672  # aMule's default UDP port; every simulated node uses the same one
GHOST_BASE = 101  # ghosts: NET.101.., sources publish from NET.151.., the sensor is NET.250
SOURCE_BASE = 151
SENSOR_IP = NET + "250"
BOOTSTRAP_CONTACTS = 20  # Process2BootstrapRequest: GetBootstrapContacts(&contacts, 20)
RESULTS_PER_PACKET = 50  # CIndexed::SendValidSourceResult


@dataclass(frozen=True, slots=True)
class Received:
    at: float  # time.monotonic()
    ip: str
    port: int
    opcode: int


@dataclass
class StoredSource:
    source_id: int
    tags: tuple[Tag, ...]
    size: int


class SimKadNode(asyncio.DatagramProtocol):
    """One simulated node. A ghost logs what it receives and never answers."""

    def __init__(
        self, node_id: int, ip: str, port: int, *, tcp_port: int = 4662, ghost: bool = False
    ) -> None:
        self.id, self.ip, self.port, self.tcp_port, self.ghost = node_id, ip, port, tcp_port, ghost
        self.table = RoutingTable(node_id)
        self.sources: dict[int, dict[int, StoredSource]] = {}  # file id -> source id -> entry
        self.received: list[Received] = []
        self.malformed = 0
        self.transport: asyncio.DatagramTransport | None = None

    @property
    def contact(self) -> KadContact:
        return KadContact(self.id, self.ip, self.port, self.tcp_port, kp.KADEMLIA_VERSION)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # asyncio's selector datagram transport is not registered as a DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        ip, port = str(addr[0]), int(addr[1])
        opcode = data[1] if len(data) > 1 else -1
        self.received.append(Received(time.monotonic(), ip, port, opcode))
        if self.ghost:
            return
        try:
            msg = kp.decode_datagram(data)
        except KadError:
            self.malformed += 1
            return
        for reply in self.handle(msg, ip, port):
            self._send(reply, (ip, port))

    def _send(self, msg: kp.KadMessage, addr: tuple[str, int]) -> None:
        if self.transport is not None:
            self.transport.sendto(kp.encode_datagram(msg), addr)

    def handle(self, msg: kp.KadMessage, ip: str, port: int) -> list[kp.KadMessage]:
        """The answers to one message (sans-IO: also used directly by tests)."""
        if isinstance(msg, kp.BootstrapReq):
            contacts = tuple(self.table.contacts()[:BOOTSTRAP_CONTACTS])
            return [kp.BootstrapRes(self.id, self.tcp_port, kp.KADEMLIA_VERSION, contacts)]
        if isinstance(msg, kp.HelloReq):
            self.table.add(KadContact(msg.node_id, ip, msg.udp_port or port, msg.tcp_port, 8))
            tags = (Tag.integer(kp.TAG_SOURCEUPORT, self.port),)
            return [kp.HelloRes(self.id, self.tcp_port, kp.KADEMLIA_VERSION, tags)]
        if isinstance(msg, kp.KadReq):
            wanted = msg.wanted & 0x1F
            if wanted == 0 or msg.receiver != self.id:
                return []
            return [kp.KadRes(msg.target, tuple(self.table.closest(msg.target, wanted)))]
        if isinstance(msg, kp.SearchSourceReq):
            return self._search(msg)
        if isinstance(msg, kp.PublishSourceReq):
            return self._publish(msg, ip, port)
        if isinstance(msg, kp.Ping):
            return [kp.Pong(port)]
        return []

    def _search(self, msg: kp.SearchSourceReq) -> list[kp.KadMessage]:
        stored = self.sources.get(msg.target, {})
        start = msg.start_position & 0x7FFF
        match = [
            e for e in stored.values() if not msg.file_size or not e.size or e.size == msg.file_size
        ][start : start + 300]
        out: list[kp.KadMessage] = []
        for i in range(0, len(match), RESULTS_PER_PACKET):
            chunk = match[i : i + RESULTS_PER_PACKET]
            entries = tuple(kp.SearchEntry(e.source_id, e.tags) for e in chunk)
            out.append(kp.SearchRes(self.id, msg.target, entries))
        return out

    def _publish(self, msg: kp.PublishSourceReq, ip: str, port: int) -> list[kp.KadMessage]:
        tags: list[Tag] = []
        size = 0
        has_type = has_uport = False
        for tag in msg.tags:
            if tag.name == kp.TAG_SOURCETYPE and not has_type:
                tags.append(Tag.integer(kp.TAG_SOURCEIP, kp.ip_to_kad(ip)))
                tags.append(tag)
                has_type = True
            elif tag.name == kp.TAG_FILESIZE:
                size = size or (tag.as_int() or 0)
            elif tag.name == kp.TAG_SOURCEUPORT:
                if not has_uport and tag.as_int():
                    tags.append(tag)
                    has_uport = True
            elif tag.name not in (kp.TAG_SOURCEIP, kp.TAG_SOURCETYPE):
                tags.append(tag)
        if not has_type:
            return []  # not a source: aMule drops it without an answer
        if not has_uport:
            tags.append(Tag.integer(kp.TAG_SOURCEUPORT, port))
        self.sources.setdefault(msg.file_id, {})[msg.source_id] = StoredSource(
            msg.source_id, tuple(tags), size
        )
        load = min(100, len(self.sources[msg.file_id]))
        return [kp.PublishRes(msg.file_id, load)]

    def packets_from(self, ip: str) -> list[Received]:
        return [r for r in self.received if r.ip == ip]


@dataclass
class SimKadNetwork:
    """`nodes` simulated nodes on NET.1..N and `ghosts` silent ones on NET.101..; async context
    manager. `seed` fixes the node ids."""

    nodes: int = 30
    ghosts: int = 0
    net: str = NET
    port: int = PORT
    seed: int = 17
    members: list[SimKadNode] = field(default_factory=list, init=False)
    _transports: list[asyncio.DatagramTransport] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if not 1 <= self.nodes <= 99 or not 0 <= self.ghosts <= 49:
            raise ValueError("1..99 nodes and 0..49 ghosts")
        rng = random.Random(self.seed)
        for i in range(self.nodes):
            node_id = rng.getrandbits(128)
            self.members.append(SimKadNode(node_id, f"{self.net}{i + 1}", self.port))
        for j in range(self.ghosts):
            node_id = rng.getrandbits(128)
            ip = f"{self.net}{GHOST_BASE + j}"
            self.members.append(SimKadNode(node_id, ip, self.port, ghost=True))
        for node in self.live:
            for other in self.members:
                if other is not node:
                    node.table.add(other.contact)

    @property
    def live(self) -> list[SimKadNode]:
        return [n for n in self.members if not n.ghost]

    @property
    def ghost_nodes(self) -> list[SimKadNode]:
        return [n for n in self.members if n.ghost]

    def bootstrap(self, n: int = 1) -> list[tuple[str, int]]:
        return [(node.ip, node.port) for node in self.live[:n]]

    def closest(self, target: int, n: int = K) -> list[SimKadNode]:
        live = sorted(self.live, key=lambda node: node.id ^ target)
        return live[:n]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for node in self.members:
                transport, _ = await loop.create_datagram_endpoint(
                    _factory(node), local_addr=(node.ip, node.port)
                )
                self._transports.append(transport)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for t in self._transports:
            t.close()
        self._transports.clear()

    async def __aenter__(self) -> SimKadNetwork:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()

    async def publish_source(
        self,
        file_hash: bytes,
        *,
        ip: str,
        tcp_port: int,
        udp_port: int,
        user_hash: bytes,
        file_size: int = 0,
        source_type: int = 1,
        encryption: int = 0,
        copies: int = K,
        timeout: float = 2.0,
    ) -> int:
        """Publish one source of `file_hash` from (ip, udp_port) to the `copies` closest nodes,
        with the tags aMule's CSearch::StorePacket sends for a high-id source; returns how many
        nodes acknowledged with PUBLISH_RES."""
        file_id = kp.hash_to_id(file_hash)
        tags = [
            Tag.integer(kp.TAG_SOURCETYPE, source_type),
            Tag.integer(kp.TAG_SOURCEPORT, tcp_port),
        ]
        tags.append(Tag(kp.TAG_SOURCEUPORT, 0x08, udp_port))  # CTagInt16
        if file_size:
            tags.append(Tag.integer(kp.TAG_FILESIZE, file_size))
        tags.append(Tag(kp.TAG_ENCRYPTION, 0x09, encryption))  # CTagInt8
        msg = kp.PublishSourceReq(file_id, kp.hash_to_id(user_hash), tuple(tags))
        loop = asyncio.get_running_loop()
        acks: asyncio.Queue[bytes] = asyncio.Queue()

        class _Acks(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
                acks.put_nowait(data)

        transport, _ = await loop.create_datagram_endpoint(_Acks, local_addr=(ip, udp_port))
        try:
            targets = self.closest(file_id, copies)
            for node in targets:
                transport.sendto(kp.encode_datagram(msg), (node.ip, node.port))
            got = 0
            deadline = loop.time() + timeout
            while got < len(targets) and loop.time() < deadline:
                try:
                    data = await asyncio.wait_for(acks.get(), deadline - loop.time())
                except TimeoutError:
                    break
                try:
                    if isinstance(kp.decode_datagram(data), kp.PublishRes):
                        got += 1
                except KadError:
                    pass
            return got
        finally:
            transport.close()


def _factory(node: SimKadNode) -> Callable[[], SimKadNode]:
    return lambda: node


def max_rate(received: list[Received], window: float = 1.0) -> int:
    """The most packets in any `window`-second span of `received` (sorted by time)."""
    times = sorted(r.at for r in received)
    best = lo = 0
    for hi, t in enumerate(times):
        while t - times[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# --- the real aMule lab with Kad on -------------------------------------------------------------

KAD_AMULE_NET = "127.0.18."


def preferences_kad(kad_id: int) -> bytes:
    """aMule's preferencesKad.dat (src/kademlia/kademlia/Prefs.cpp, CPrefs::WriteFile):
    ``<ip 4><unused 2><kad id as WriteUInt128><tag count 1 = 0>``."""
    return struct.pack("<IH", 0, 0) + kp.encode_id(kad_id) + b"\x00"


#: An empty nodes.dat (CRoutingZone::ReadFile: a 0 where old files had the count, version 2,
#: 0 contacts), so amuled starts Kad without trying to download one (amule.cpp, needNodesDat).
EMPTY_NODES_DAT = struct.pack("<III", 0, 2, 0)


def kad_amule_conf(base_conf: str, config_dir: Path, kad_id: int) -> str:
    """The lab's amule.conf with Kad on, and the Kad files written into `config_dir`."""
    (config_dir / "preferencesKad.dat").write_bytes(preferences_kad(kad_id))
    (config_dir / "nodes.dat").write_bytes(EMPTY_NODES_DAT)
    conf = base_conf.replace("ConnectToKad=0", "ConnectToKad=1")
    return conf.replace("Autoconnect=0", "Autoconnect=1")  # Kad starts only on (auto)connect
