"""Hostile eD2k peers on loopback, and one well-behaved control, for the eD2k sensor's robustness.

The eD2k counterpart of `lab.hostile` (BitTorrent): each server misbehaves on purpose, the way a
broken or malicious eMule/aMule client might, so that the tests can show the eD2k sensor
(`sensors.ed2k.Ed2kSweep` over `transport.ed2k_probe`) turns every one of them into a recorded
outcome that is never possession (DESIGN.md house rule 4) while its memory stays bounded by the
framing caps (`protocols.ed2k.framing`: one packet of at most 2,000,000 bytes buffered, 50,000
bytes after inflation). They listen on 127.0.20.x by default (`HostileEd2kConfig.net`), one
address per kind, on an ephemeral port; every byte they send is generated here and benign.

`HostileEd2kLab` is an async context manager that starts them in the running event loop and names
their addresses in `peers` (kind -> (ip, port)):

- ``zlib-bomb``: a valid HELLOANSWER, then, answering the file request, a packed (0xD4)
  OP_ANSWERSOURCES2 whose zlib payload (just under the 2,000,000-byte packet cap) inflates to
  about 1.9 GiB of zeros (`zlib_bomb`; a real bomb: a full inflate gives all of it);
- ``huge-length``: answers our HELLO with a header announcing 2^32-1 bytes (the largest the
  4-byte length field holds), then trickles bytes of that "packet" for whoever keeps reading;
- ``max-length``: a header announcing exactly the largest packet the decoder accepts (2,000,000
  bytes), all of it but the last byte at once, then nothing: the most a sensor ever buffers;
- ``huge-tag-count``: a HELLOANSWER whose tag list claims 2^32-1 tags (then a few real ones);
- ``slow-drip``: a valid HELLOANSWER one byte per `drip_interval` (1 s), then more packets the
  same way, forever;
- ``garbage-after-hello``: a valid HELLOANSWER, then (after the file request) random bytes that
  are no eD2k header;
- ``endless``: a valid HELLOANSWER, then, instead of answering the file request, an endless
  stream of valid packets that are no answer: queue rankings, EMULEINFO, packed (0xD4) packets
  that inflate to just under the 50,000-byte cap, and large packets of an opcode nobody defines;
- ``silent``: accepts the TCP connection and never writes;
- ``reset``: a TCP reset (SO_LINGER 0) as soon as the connection is accepted;
- ``control``: a well-behaved peer: HELLOANSWER, then OP_MULTIPACKETANSWER (file name and status)
  for the files in `HostileEd2kConfig.control_files`, OP_FILEREQANSNOFIL for any other file.

Every packet is built with `protocols.ed2k` (messages, tags, framing); only the lies (a length,
a tag count, a zlib stream) are written by hand over the same layouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from peerwatch.lab.hostile import drain_servers
from peerwatch.protocols.ed2k import messages as m
from peerwatch.protocols.ed2k.client import ClientIdentity
from peerwatch.protocols.ed2k.framing import (
    HEADER_SIZE,
    MAX_PACKET_SIZE,
    MAX_UNPACKED_SIZE,
    PacketDecoder,
    Protocol,
    encode_packet,
)
from peerwatch.protocols.ed2k.tags import Tag, encode_tag
from peerwatch.protocols.ed2k.wire import Ed2kError, u16, u32

Peer = tuple[str, int]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

HOSTILE_ED2K_NET = "127.0.20."  # where the hostile eD2k peers listen (the BitTorrent ones: .5)

#: Every kind of peer, in the order of their addresses (net + 1, net + 2, ...).
PEER_KINDS = (
    "zlib-bomb",
    "huge-length",
    "max-length",
    "huge-tag-count",
    "slow-drip",
    "garbage-after-hello",
    "endless",
    "silent",
    "reset",
)
CONTROL = "control"

_PROTOCOL_BYTES = frozenset(p.value for p in Protocol)
_MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class ControlFile:
    """A file the control peer shares (it never holds content: only hash, size and name)."""

    file_hash: bytes
    size: int
    name: str = "control.bin"


@dataclass(frozen=True, slots=True)
class HostileEd2kConfig:
    net: str = HOSTILE_ED2K_NET  # kind i listens on net + (i + 1); the control after them
    kinds: tuple[str, ...] = (*PEER_KINDS, CONTROL)  # which servers to start
    control_files: tuple[ControlFile, ...] = ()  # what the control answers FILESTATUS for
    control_ports: int = 1  # listening ports of the control (one address; for benchmarks)
    drip_interval: float = 1.0  # seconds between two bytes of the slow drip
    bomb_inflated: int = 1 << 31  # bytes the zlib bomb inflates to, at most (the cap decides)
    stream_limit: int = 1 << 30  # most bytes one endless or trickling stream sends
    trickle_interval: float = 0.05  # seconds between two blocks of the huge-length trickle
    seed: int = 20  # user hashes and junk


@dataclass
class HostileEd2kStats:
    connections: dict[str, int] = field(default_factory=dict)  # TCP accepts per kind
    hellos: dict[str, int] = field(default_factory=dict)  # our HELLOs each kind read
    file_requests: dict[str, int] = field(default_factory=dict)  # file requests each kind read
    sent: dict[str, int] = field(default_factory=dict)  # bytes each kind wrote


class HostileEd2kLab:
    """``async with HostileEd2kLab(config) as lab:`` runs every server in `config.kinds`."""

    def __init__(self, config: HostileEd2kConfig | None = None) -> None:
        self.config = config or HostileEd2kConfig()
        unknown = set(self.config.kinds) - {*PEER_KINDS, CONTROL}
        if unknown:
            raise ValueError(f"unknown hostile eD2k peer kinds: {sorted(unknown)}")
        self.stats = HostileEd2kStats()
        self.peers: dict[str, Peer] = {}  # kind -> (ip, port); the control's first port
        self.control_peers: list[Peer] = []  # every port of the control
        rng = random.Random(self.config.seed)
        self.user_hashes: dict[str, bytes] = {k: _user_hash(rng) for k in (*PEER_KINDS, CONTROL)}
        self._rng = rng
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._bomb: bytes | None = None
        self.bomb_inflated = 0  # what the zlib bomb inflates to, once started

    def ip(self, kind: str) -> str:
        order = (*PEER_KINDS, CONTROL)
        return f"{self.config.net}{order.index(kind) + 1}"

    def identity(self, kind: str) -> ClientIdentity:
        """What the peer of this kind says in its HELLOANSWER (an eMule 0.50.0 with multipacket,
        extended multipacket and source exchange 2, as `ClientIdentity.tags` writes them)."""
        return ClientIdentity(
            self.user_hashes[kind],
            name=f"hostile {kind}" if kind != CONTROL else "control",
            tcp_port=4662,
            client_id=0x7F000001,
            udp_port=4672,
            compat_client=0,
            version=(0, 50, 0),
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> HostileEd2kLab:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        handlers: dict[str, Handler] = {
            "zlib-bomb": self._zlib_bomb,
            "huge-length": self._huge_length,
            "max-length": self._max_length,
            "huge-tag-count": self._huge_tag_count,
            "slow-drip": self._slow_drip,
            "garbage-after-hello": self._garbage_after_hello,
            "endless": self._endless,
            "silent": self._silent,
            "reset": self._reset,
            CONTROL: self._control,
        }
        if "zlib-bomb" in self.config.kinds:
            self._bomb, self.bomb_inflated = zlib_bomb(self.config.bomb_inflated, MAX_PACKET_SIZE)
        for kind in self.config.kinds:
            ports = self.config.control_ports if kind == CONTROL else 1
            for _ in range(ports):
                server = await asyncio.start_server(
                    self._wrap(kind, handlers[kind]), self.ip(kind), 0
                )
                self._servers.append(server)
                bound = _bound(server)
                self.peers.setdefault(kind, bound)
                if kind == CONTROL:
                    self.control_peers.append(bound)

    async def stop(self) -> None:
        self._closing = True
        for server in self._servers:
            server.close()
        await drain_servers(self._servers, self._tasks)

    def _wrap(self, kind: str, handler: Handler) -> Handler:
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
            except Ed2kError:
                pass  # bytes these peers do not speak (an obfuscated HELLO): hang up, as aMule
                # does on a stream it cannot read
            except asyncio.CancelledError:
                pass  # stop(): end quietly (asyncio's stream callback logs a cancelled handler)
            finally:
                if task is not None:
                    self._tasks.discard(task)
                writer.close()

        return run

    # -- the conversation -----------------------------------------------------------------------

    async def _hello(self, kind: str, reader: asyncio.StreamReader, inbox: _Inbox) -> m.Hello:
        msg = await inbox.next(reader)
        if not isinstance(msg, m.Hello):
            raise asyncio.IncompleteReadError(b"", None)  # not a sensor: hang up
        self.stats.hellos[kind] = self.stats.hellos.get(kind, 0) + 1
        return msg

    async def _file_request(
        self, kind: str, reader: asyncio.StreamReader, inbox: _Inbox
    ) -> m.Message:
        msg = await inbox.next(reader)
        self.stats.file_requests[kind] = self.stats.file_requests.get(kind, 0) + 1
        return msg

    def _hello_answer(self, kind: str) -> bytes:
        return m.HelloAnswer(self.identity(kind).hello().body).encode()

    async def _write(self, kind: str, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        self.stats.sent[kind] = self.stats.sent.get(kind, 0) + len(data)
        await writer.drain()

    async def _greet(
        self, kind: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Our HELLO in, a valid HELLOANSWER out, the file request in."""
        inbox = _Inbox()
        await self._hello(kind, reader, inbox)
        await self._write(kind, writer, self._hello_answer(kind))
        await self._file_request(kind, reader, inbox)

    # -- the peers ------------------------------------------------------------------------------

    async def _zlib_bomb(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._greet("zlib-bomb", reader, writer)
        bomb = self._bomb
        assert bomb is not None  # built by start()
        # ANSWERSOURCES2 is the packet eMule/aMule really send packed (KnownFile.cpp
        # CreateSrcInfoPacket then PackPacket); the header is written by hand because
        # `encode_packet` compresses what it is given, and this payload is already a zlib stream.
        header = struct.pack("<BIB", Protocol.PACKED, len(bomb) + 1, m.EmuleOp.ANSWERSOURCES2)
        await self._write("zlib-bomb", writer, header + bomb)
        await reader.read()  # hold the connection until the sensor drops it

    async def _huge_length(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._hello("huge-length", reader, _Inbox())
        # A HELLOANSWER header whose 4-byte length says 2^32-1 (aMule CPacket: size + 1).
        header = struct.pack("<BIB", Protocol.EDONKEY, 0xFFFFFFFF, m.Op.HELLOANSWER)
        body = self._hello_answer("huge-length")[HEADER_SIZE:]
        await self._write("huge-length", writer, header + body)
        block = body * (4096 // len(body) + 1)
        sent = 0
        while sent < self.config.stream_limit:
            await asyncio.sleep(self.config.trickle_interval)
            await self._write("huge-length", writer, block)
            sent += len(block)

    async def _max_length(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._hello("max-length", reader, _Inbox())
        # The largest length the decoder takes (payload = MAX_PACKET_SIZE), one byte short.
        header = struct.pack("<BIB", Protocol.EDONKEY, MAX_PACKET_SIZE + 1, m.Op.HELLOANSWER)
        body = self._hello_answer("max-length")[HEADER_SIZE:]
        filler = body + bytes(MAX_PACKET_SIZE - 1 - len(body))
        await self._write("max-length", writer, header + filler)
        await reader.read()

    async def _huge_tag_count(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._hello("huge-tag-count", reader, _Inbox())
        body = self.identity("huge-tag-count").hello().body
        # HelloBody's layout (messages.HelloBody.payload) with the tag count replaced by
        # 2^32-1 (aMule CTag lists: <count 4><tag>...): a reader that trusts it loops for ever.
        payload = (
            body.user_hash
            + u32(body.client_id)
            + u16(body.tcp_port)
            + u32(0xFFFFFFFF)
            + b"".join(encode_tag(t) for t in body.tags)
            + u32(body.server_ip)
            + u16(body.server_port)
        )
        packet = encode_packet(Protocol.EDONKEY, m.Op.HELLOANSWER, payload)
        await self._write("huge-tag-count", writer, packet)
        await reader.read()

    async def _slow_drip(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._hello("slow-drip", reader, _Inbox())
        packets = [
            self._hello_answer("slow-drip"),
            m.EmuleInfo(0x30, 0x01, (Tag.uint32(0x20, 1),)).encode(),
            m.QueueRanking(1, bytes(10)).encode(),
        ]
        i = 0
        while True:  # forever: the sensor's deadline ends it
            for byte in packets[i % len(packets)]:
                await self._write("slow-drip", writer, bytes([byte]))
                await asyncio.sleep(self.config.drip_interval)
            i += 1

    async def _garbage_after_hello(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._greet("garbage-after-hello", reader, writer)
        junk = bytearray(self._rng.randbytes(4096))
        # The first byte must not be an eD2k protocol byte (0xE3, 0xC5, 0xD4), so that the
        # garbage is refused at once rather than read as some packet's header.
        while junk[0] in _PROTOCOL_BYTES:
            junk[0] = self._rng.randrange(256)
        await self._write("garbage-after-hello", writer, bytes(junk))
        await reader.read()

    async def _endless(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._greet("endless", reader, writer)
        # Valid packets, none an answer to the file request: what the client core keeps as
        # "unhandled" or as a queue position, and never as the file's status.
        unknown_op = 0xEE  # not an opcode of aMule's TCP.h
        batch = b"".join(
            [
                m.QueueRanking(self._rng.randrange(1, 5000), bytes(10)).encode(),
                m.EmuleInfo(0x30, 0x01, (Tag.uint32(0x20, 1), Tag.string(0x21, "x"))).encode(),
                # Inflates to just under the 50,000-byte cap: the most work a packet can ask.
                encode_packet(Protocol.EMULE, unknown_op, bytes(MAX_UNPACKED_SIZE - 1), pack=True),
                encode_packet(Protocol.EMULE, unknown_op, self._rng.randbytes(60_000)),
            ]
        )
        sent = 0
        while sent < self.config.stream_limit:
            await self._write("endless", writer, batch)
            sent += len(batch)
        await reader.read()

    async def _silent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # read whatever comes, answer nothing, until the sensor gives up

    async def _reset(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _abort(writer)

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        inbox = _Inbox()
        await self._hello(CONTROL, reader, inbox)
        await self._write(CONTROL, writer, self._hello_answer(CONTROL))
        shared = {f.file_hash: f for f in self.config.control_files}
        while True:
            msg = await self._file_request(CONTROL, reader, inbox)
            await self._write(CONTROL, writer, _control_answer(msg, shared))


class _Inbox:
    """The sensor's messages, in order (a read may hold more than one packet, or part of one)."""

    def __init__(self) -> None:
        self._decoder = PacketDecoder()
        self._pending: deque[m.Message] = deque()

    async def next(self, reader: asyncio.StreamReader) -> m.Message:
        """The next message; EOF ends the handler quietly (see `HostileEd2kLab._wrap`)."""
        while not self._pending:
            data = await reader.read(64 * 1024)
            if not data:
                raise asyncio.IncompleteReadError(b"", None)
            self._pending.extend(m.decode(p) for p in self._decoder.feed(data))
        return self._pending.popleft()


def _control_answer(msg: m.Message, shared: dict[bytes, ControlFile]) -> bytes:
    """aMule's answer to a file request (ClientTCPSocket.cpp OP_MULTIPACKET and the stand-alone
    requests): the name and status of a shared file (complete: part count 0), else NOFIL."""
    file_hash = getattr(msg, "file_hash", None)
    if not isinstance(file_hash, bytes):
        return b""
    f = shared.get(file_hash)
    if f is None:
        return m.FileReqAnsNoFil(file_hash).encode()
    name = f.name.encode()
    if isinstance(msg, m.MultiPacket):
        return m.MultiPacketAnswer(file_hash, name, m.PartStatus(0)).encode()
    if isinstance(msg, m.RequestFileName):
        return m.ReqFileNameAnswer(file_hash, name).encode()
    if isinstance(msg, m.SetReqFileId):
        return m.FileStatus(file_hash, m.PartStatus(0)).encode()
    return b""


def zlib_bomb(inflated: int, max_payload: int) -> tuple[bytes, int]:
    """A complete zlib stream of zeros that inflates to at most `inflated` bytes (at least 1 MiB)
    and is at most `max_payload` bytes long, built without compressing the zeros; and the number
    of bytes it inflates to.

    After a full flush (zlib Z_FULL_FLUSH) the compressor starts afresh on a byte boundary, so
    the deflate blocks for each further MiB of zeros are the same bytes: the stream is the zlib
    header, that segment repeated, an empty final fixed-Huffman block and the Adler-32 of the
    zeros (RFC 1950 section 2.2: for n zero bytes, a = 1 and b = n mod 65521)."""
    co = zlib.compressobj(9)
    first = co.compress(bytes(_MIB)) + co.flush(zlib.Z_FULL_FLUSH)
    segment = co.compress(bytes(_MIB)) + co.flush(zlib.Z_FULL_FLUSH)
    header = first[: len(first) - len(segment)]
    if header + segment != first:  # zlib did not repeat itself: no cheap bomb
        raise RuntimeError("zlib's output for a flushed MiB of zeros is not periodic")
    final_block = b"\x03\x00"  # BFINAL=1, BTYPE=01 (fixed), end-of-block code: 10 bits
    room = max_payload - len(header) - len(final_block) - 4
    count = max(1, min(inflated // _MIB, room // len(segment)))
    size = count * _MIB
    adler = (size % 65521) << 16 | 1
    return header + segment * count + final_block + adler.to_bytes(4, "big"), size


def _user_hash(rng: random.Random) -> bytes:
    value = bytearray(rng.randbytes(16))
    value[5], value[14] = 14, 111  # eMule's marks (aMule CPreferences::CPreferences)
    return bytes(value)


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
