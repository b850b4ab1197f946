"""Hostile peers, a lying DHT node and broken trackers on loopback, for robustness tests.

Each server here misbehaves on purpose, the way a broken or malicious client on the real network
might, so that the tests can show the sensor turns every one of them into a recorded outcome
(DESIGN.md house rule 4: "a misbehaving peer becomes a recorded fact, never a crashed sensor") and
keeps its memory bounded. They only ever listen on 127.0.5.x (the lab's real peers are on
127.0.2.x) and only answer what connects to them; the ghost peers they name are on 127.0.6.x,
where nothing listens. Every byte they send is generated here and benign.

`HostileLab` is an async context manager that starts them all on ephemeral ports in the running
event loop and names their addresses:

- ``oversized``: a correct handshake, then a message whose length prefix is 0xFFFFFFF0, then a
  stream of junk for whoever keeps reading;
- ``bomb``: a correct handshake, then a BEP 10 extension handshake that is a bencode bomb
  (``d1:m`` + 100k nested lists);
- ``bomb_string``: a BEP 10 extension handshake declaring a string of 2^40 bytes;
- ``drip``: one byte of a handshake every 0.5 s, never completing it;
- ``garbage``: a correct handshake, then bytes that break the peer wire protocol, then a reset;
- ``silent``: accepts the TCP connection and never sends anything;
- ``reset``: a correct handshake (BEP 10 on), then a TCP reset while we write;
- ``flood``: a correct handshake, then endless maximum-length messages of an unknown id;
- ``dht``: a UDP DHT node whose get_peers answers are an oversized reply (hundreds of peers), a
  reply with a malformed ``values`` entry, junk datagrams and finally a valid reply naming the
  hostile peers, `HostileConfig.extra_peers` and ghost peers on 127.0.6.x; its find_node answers
  name nodes whose ids change from one answer to the next;
- ``http_tracker``: ``/endless`` answers an endless chunked body, ``/huge`` a Content-Length of a
  terabyte, ``/drip`` one chunk byte per second forever;
- ``udp_tracker``: answers every datagram with replies carrying wrong transaction ids, then
  floods the asker with more of them for a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import struct
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

from peerwatch.protocols.bittorrent.bencode import bdecode, bencode
from peerwatch.protocols.bittorrent.krpc import MAX_DATAGRAM_SIZE, MAX_TRANSACTION_ID
from peerwatch.protocols.bittorrent.peer_wire import HANDSHAKE_LEN, MAX_MESSAGE_LEN, PSTR

Peer = tuple[str, int]

HOSTILE_NET = "127.0.5."  # where the hostile servers listen
GHOST_NET = "127.0.6."  # where the ghost peers and nodes they name are (nothing listens there)
_EXTENSION_RESERVED = bytes([0, 0, 0, 0, 0, 0x10, 0, 0])  # BEP 10 bit only
_NO_RESERVED = bytes(8)

#: The ports of each kind of TCP peer (in `HostileLab.peers`).
PEER_KINDS = (
    "oversized",
    "bomb",
    "bomb_string",
    "drip",
    "garbage",
    "silent",
    "reset",
    "flood",
)


async def drain_servers(servers: list[asyncio.Server], tasks: set[asyncio.Task[None]]) -> None:
    """Stop closed servers' connection handlers and wait for the servers to close (the hostile
    labs' `stop()`; the servers are already closed and the lab marked closing)."""
    # Handlers may still be starting for connections accepted just before the close: repeat
    # until none is left (each ends at its first await once cancelled or the lab is closing).
    for _round in range(10):
        running = [t for t in tasks if not t.done()]
        if not running:
            break
        for task in running:
            task.cancel()
        await asyncio.wait(running, timeout=1.0)
    for server in servers:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 2.0)
    servers.clear()


@dataclass(frozen=True, slots=True)
class HostileConfig:
    extra_peers: tuple[Peer, ...] = ()  # real peers the DHT node also names (e.g. a lab seed)
    ghosts: int = 200  # ghost peers for the valid get_peers reply (trimmed to fit a datagram)
    oversized_values: int = 600  # peers in the oversized get_peers reply
    junk_datagrams: int = 50  # non-KRPC datagrams sent with every get_peers answer
    ghost_port: int = 6881  # the port the ghost peers and nodes are named with
    bomb_depth: int = 100_000  # nested lists in the bencode bomb
    drip_interval: float = 0.5  # seconds between two bytes of the slow drip
    flood_limit: int = 64 * 1024 * 1024  # most bytes one flood or junk stream sends
    http_endless_chunk: int = 16 * 1024  # chunk size of the endless chunked body
    udp_flood_seconds: float = 3.0  # how long the UDP tracker floods each address that asks
    net: str = HOSTILE_NET  # the hostile servers get net + 1, 2, ...
    ghost_net: str = GHOST_NET
    seed: int = 5  # for the benign random junk


@dataclass
class HostileStats:
    connections: dict[str, int] = field(default_factory=dict)  # TCP accepts per kind
    dht_queries: dict[str, int] = field(default_factory=dict)  # KRPC queries by method
    http_requests: dict[str, int] = field(default_factory=dict)  # by path kind
    udp_tracker_datagrams: int = 0  # requests the UDP tracker received
    udp_flood_datagrams: int = 0  # wrong-transaction-id datagrams it flooded back
    find_node_ids: list[list[bytes]] = field(default_factory=list)  # node ids in each answer


class HostileLab:
    """``async with HostileLab(config) as hostile:`` runs every hostile server until exit."""

    def __init__(self, config: HostileConfig | None = None) -> None:
        self.config = config or HostileConfig()
        self.stats = HostileStats()
        self.peers: dict[str, Peer] = {}  # kind -> (ip, port) of each hostile TCP peer
        self.dht: Peer = ("", 0)
        self.http_tracker: Peer = ("", 0)
        self.udp_tracker: Peer = ("", 0)
        self.dht_node_id = random.Random(self.config.seed).randbytes(20)
        self._servers: list[asyncio.Server] = []
        self._transports: list[asyncio.BaseTransport] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._rng = random.Random(self.config.seed)
        self._values: list[bytes] = []  # the believed get_peers reply's compact peers
        self.ghosts_named: tuple[Peer, ...] = ()  # the ghost peers that reply names

    # -- addresses ------------------------------------------------------------------------------

    def ip(self, n: int) -> str:
        return f"{self.config.net}{n}"

    @property
    def ghost_peers(self) -> tuple[Peer, ...]:
        """The addresses the DHT node names where nothing listens."""
        cfg = self.config
        return tuple(
            (f"{cfg.ghost_net}{1 + i % 250}", cfg.ghost_port + i // 250) for i in range(cfg.ghosts)
        )

    @property
    def http_urls(self) -> dict[str, str]:
        ip, port = self.http_tracker
        return {k: f"http://{ip}:{port}/{k}/announce" for k in ("endless", "huge", "drip")}

    @property
    def udp_url(self) -> str:
        ip, port = self.udp_tracker
        return f"udp://{ip}:{port}/announce"

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> HostileLab:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        handlers: dict[str, Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]]
        handlers = {
            "oversized": self._oversized,
            "bomb": self._bomb,
            "bomb_string": self._bomb_string,
            "drip": self._drip,
            "garbage": self._garbage,
            "silent": self._silent,
            "reset": self._reset,
            "flood": self._flood,
        }
        for n, kind in enumerate(PEER_KINDS, start=1):
            server = await asyncio.start_server(self._wrap(kind, handlers[kind]), self.ip(n), 0)
            self._servers.append(server)
            self.peers[kind] = _bound(server)
        n = len(PEER_KINDS) + 1
        loop = asyncio.get_running_loop()
        dht_transport, _ = await loop.create_datagram_endpoint(
            lambda: _DhtProtocol(self), local_addr=(self.ip(n), 0)
        )
        self._transports.append(dht_transport)
        self.dht = _sockname(dht_transport)
        http = await asyncio.start_server(self._http, self.ip(n + 1), 0)
        self._servers.append(http)
        self.http_tracker = _bound(http)
        udp_transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpTrackerProtocol(self), local_addr=(self.ip(n + 2), 0)
        )
        self._transports.append(udp_transport)
        self.udp_tracker = _sockname(udp_transport)
        self._fit_values()

    async def stop(self) -> None:
        self._closing = True
        for server in self._servers:
            server.close()
        for transport in self._transports:
            transport.close()
        await drain_servers(self._servers, self._tasks)
        self._transports.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _wrap(
        self,
        kind: str,
        handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.stats.connections[kind] = self.stats.connections.get(kind, 0) + 1
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
            try:
                if not self._closing:
                    await handler(reader, writer)
            except (OSError, asyncio.IncompleteReadError):
                pass  # the sensor hung up on us: that is what it should do
            except asyncio.CancelledError:
                pass  # stop(): end quietly (asyncio's stream callback logs a cancelled handler)
            finally:
                if task is not None:
                    self._tasks.discard(task)
                writer.close()

        return run

    # -- TCP peers ------------------------------------------------------------------------------

    async def _handshake(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reserved: bytes
    ) -> bytes:
        """Read the sensor's BEP 3 handshake and answer it correctly for the same infohash."""
        theirs = await reader.readexactly(HANDSHAKE_LEN)
        info_hash = theirs[28:48]
        peer_id = b"-HO0001-" + self._rng.randbytes(12)
        writer.write(bytes([len(PSTR)]) + PSTR + reserved + info_hash + peer_id)
        await writer.drain()
        return info_hash

    async def _stream_junk(self, writer: asyncio.StreamWriter, block: bytes) -> None:
        sent = 0
        while sent < self.config.flood_limit:
            writer.write(block)
            await writer.drain()
            sent += len(block)

    async def _oversized(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._handshake(reader, writer, _NO_RESERVED)
        writer.write(struct.pack(">I", 0xFFFFFFF0) + b"\x07")
        await self._stream_junk(writer, bytes(64 * 1024))

    async def _bomb(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._handshake(reader, writer, _EXTENSION_RESERVED)
        depth = self.config.bomb_depth
        body = b"d1:m" + b"l" * depth + b"e" * depth + b"e"
        writer.write(_extended(0, body))
        await writer.drain()
        await reader.read()  # hold the connection until the sensor drops it

    async def _bomb_string(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._handshake(reader, writer, _EXTENSION_RESERVED)
        body = b"d1:v" + str(2**40).encode() + b":" + b"x" * 1024
        writer.write(_extended(0, body))
        await writer.drain()
        await reader.read()

    async def _drip(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plausible handshake, one byte at a time; the last byte never comes.
        partial = bytes([len(PSTR)]) + PSTR + _NO_RESERVED + bytes(40)
        for i in range(HANDSHAKE_LEN - 1):
            writer.write(partial[i : i + 1])
            await writer.drain()
            await asyncio.sleep(self.config.drip_interval)
        await reader.read()

    async def _garbage(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._handshake(reader, writer, _NO_RESERVED)
        await asyncio.sleep(0.05)  # the handshake and the garbage arrive apart
        # A 'have' with a 2-byte payload (BEP 3 fixes it at 4), then random bytes.
        writer.write(b"\x00\x00\x00\x03\x04\xde\xad" + self._rng.randbytes(4096))
        await writer.drain()
        await asyncio.sleep(0.05)
        _abort(writer)

    async def _silent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # read whatever comes, answer nothing, until the sensor gives up

    async def _reset(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._handshake(reader, writer, _EXTENSION_RESERVED)
        _abort(writer)

    async def _flood(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._handshake(reader, writer, _NO_RESERVED)
        # Messages of exactly the largest legal length, of an id nobody defines (99): a sensor
        # must skip them without holding more than one in memory.
        frame = struct.pack(">IB", MAX_MESSAGE_LEN, 99) + bytes(MAX_MESSAGE_LEN - 1)
        await self._stream_junk(writer, frame)

    # -- HTTP tracker ---------------------------------------------------------------------------

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if self._closing:
                return
            head = await reader.readuntil(b"\r\n\r\n")
            path = head.split(b" ", 2)[1].decode("latin-1") if head.count(b" ") >= 2 else "/"
            kind = path.strip("/").split("/", 1)[0]
            self.stats.http_requests[kind] = self.stats.http_requests.get(kind, 0) + 1
            if kind == "huge":
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n" + b"d" * 4096
                )
                await self._stream_junk(writer, b"x" * 65536)
            elif kind == "drip":
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                while True:
                    writer.write(b"1\r\nx\r\n")
                    await writer.drain()
                    await asyncio.sleep(1.0)
            else:
                size = self.config.http_endless_chunk
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                await self._stream_junk(writer, b"%x\r\n" % size + b"d" * size + b"\r\n")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass  # stop()
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    # -- DHT ------------------------------------------------------------------------------------

    def _dht_answers(self, data: bytes) -> list[bytes]:
        try:
            msg = bdecode(data)
        except Exception:  # whatever the decoder raises: a hostile node just ignores it
            return []
        if not isinstance(msg, dict) or msg.get(b"y") != b"q":
            return []
        t = msg.get(b"t")
        method = msg.get(b"q")
        if not isinstance(t, bytes) or not isinstance(method, bytes):
            return []
        name = method.decode("latin-1")
        self.stats.dht_queries[name] = self.stats.dht_queries.get(name, 0) + 1
        me = self.dht_node_id

        def reply(r: dict[bytes, object]) -> bytes:
            return bencode({b"t": t, b"y": b"r", b"r": {b"id": me, **r}})

        if method == b"find_node":
            # Nodes whose ids change from one answer to the next (and our own address under a
            # fresh id), at ghost addresses where nothing answers.
            ids = [self._rng.randbytes(20) for _ in range(8)]
            self.stats.find_node_ids.append(ids)
            nodes = b"".join(
                node_id + _compact((f"{self.config.ghost_net}{200 + i}", self.config.ghost_port))
                for i, node_id in enumerate(ids[:7])
            )
            nodes += ids[7] + _compact(self.dht)
            return [reply({b"nodes": nodes})]
        if method == b"get_peers":
            token = {b"token": self._rng.randbytes(8)}
            out: list[bytes] = []
            # 1. Hundreds of peers: a reply too large for any DHT datagram.
            many = [
                _compact((f"{self.config.ghost_net}{1 + i % 250}", 7000 + i))
                for i in range(self.config.oversized_values)
            ]
            out.append(reply({**token, b"values": many}))
            # 2. A malformed values entry (5 bytes is neither IPv4 nor IPv6 compact).
            out.append(reply({**token, b"values": [*many[:5], b"\x7f\x00\x06\x01\x1a"]}))
            # 3. Junk that is not KRPC at all, and a truncated reply to this very query.
            junk = self.config.junk_datagrams
            out.extend(self._rng.randbytes(self._rng.randrange(1, 200)) for _ in range(junk))
            out.append(b"d1:t" + str(len(t)).encode() + b":" + t + b"1:y1:r")
            # 4. The answer that gets believed: our peers, the extra ones, and ghosts.
            out.append(reply({**token, b"values": self._values}))
            # 5. The same answer again: a late duplicate.
            out.append(out[-1])
            return out
        if method == b"ping":
            return [reply({})]
        return []

    def _fit_values(self) -> None:
        """Name our peers, the extra ones and as many ghosts as fit in one DHT datagram (sized
        for the longest transaction id KRPC allows, so that any query's answer fits)."""
        values = [_compact(p) for p in [*self.peers.values(), *self.config.extra_peers]]
        fitted: list[Peer] = []
        for g in self.ghost_peers:
            trial = [*values, _compact(g)]
            r = {b"id": bytes(20), b"token": bytes(8), b"values": trial}
            if len(bencode({b"t": bytes(MAX_TRANSACTION_ID), b"y": b"r", b"r": r})) > (
                MAX_DATAGRAM_SIZE
            ):
                break
            values = trial
            fitted.append(g)
        self._values = values
        self.ghosts_named = tuple(fitted)


class _DhtProtocol(asyncio.DatagramProtocol):
    def __init__(self, lab: HostileLab) -> None:
        self._lab = lab
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's transport (CPython's class does not subclass DatagramTransport).
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if self._transport is None:
            return
        for answer in self._lab._dht_answers(data):
            self._transport.sendto(answer, addr)


class _UdpTrackerProtocol(asyncio.DatagramProtocol):
    """BEP 15 replies whose transaction ids never match, short datagrams, and then a flood of
    them for `HostileConfig.udp_flood_seconds` to whoever asked."""

    def __init__(self, lab: HostileLab) -> None:
        self._lab = lab
        self._transport: asyncio.DatagramTransport | None = None
        self._flooding: set[tuple[str | object, int]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's transport (CPython's class does not subclass DatagramTransport).
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        if self._transport is None or len(data) < 16:
            return
        self._lab.stats.udp_tracker_datagrams += 1
        txid = struct.unpack_from(">I", data, 12)[0]
        for k in range(1, 11):
            wrong = (txid + k) & 0xFFFFFFFF
            # A connect reply with a connection id, or an announce reply with peers.
            self._transport.sendto(struct.pack(">IIQ", 0, wrong, 0x41727101980 + k), addr)
            self._transport.sendto(
                struct.pack(">IIIII", 1, wrong, 1800, 0, 1) + _compact(("127.0.6.9", 6881)), addr
            )
        self._transport.sendto(b"\x00\x00\x00", addr)  # too short to be a reply
        if addr not in self._flooding and self._lab.config.udp_flood_seconds > 0:
            self._flooding.add(addr)
            self._lab._spawn(self._flood(addr, txid))

    async def _flood(self, addr: tuple[str | object, int], txid: int) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + self._lab.config.udp_flood_seconds
        wrong = struct.pack(">IIQ", 0, (txid ^ 0x5A5A5A5A) & 0xFFFFFFFF, 1)
        try:
            while loop.time() < end and self._transport is not None:
                for _ in range(20):
                    self._transport.sendto(wrong, addr)
                self._lab.stats.udp_flood_datagrams += 20
                await asyncio.sleep(0.001)
        finally:
            self._flooding.discard(addr)


# -- helpers -------------------------------------------------------------------------------------


def _extended(ext_id: int, body: bytes) -> bytes:
    """A BEP 10 extended message (id 20)."""
    return struct.pack(">IBB", 2 + len(body), 20, ext_id) + body


def _compact(peer: Peer) -> bytes:
    return ipaddress.IPv4Address(peer[0]).packed + struct.pack(">H", peer[1])


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _bound(server: asyncio.Server) -> Peer:
    host, port = server.sockets[0].getsockname()[:2]
    return str(host), int(port)


def _sockname(transport: asyncio.BaseTransport) -> Peer:
    host, port = transport.get_extra_info("sockname")[:2]
    return str(host), int(port)
