"""A small, well-formed eD2k peer on loopback that shares given files — and can lie about content.

`Ed2kLabPeer` is an asyncio TCP server (one per test, on a 127.x address the test owns) that
answers the client protocol the way aMule's uploading side does, built on `protocols.ed2k`
messages: HELLOANSWER, the file request (OP_MULTIPACKET -> one MULTIPACKETANSWER with name,
FILESTATUS and AICH hash; the stand-alone REQUESTFILENAME / SETREQFILEID / AICHFILEHASHREQ too;
FILEREQANSNOFIL for a file it does not share), HASHSETANSWER, STARTUPLOADREQ -> ACCEPTUPLOADREQ
(or only OP_QUEUERANKING, when told never to accept), and REQUESTPARTS(_I64) -> SENDINGPART in
10,240-byte packets (aMule's smallest chunk, UploadDiskIOThread.cpp `CreateStandardPackets`) or,
with ``compress=True``, each block as one zlib stream cut into COMPRESSEDPART packets
(`CreatePackedPackets`). Each answer batch is one write; ``reverse=True`` serves a request's
blocks last first (each block's packets in order, as aMule sends them), to exercise reassembly.

It is honest about everything but content: ``corrupt_parts={i, ...}`` flips the first byte of
every block it sends from those parts, so those parts fail verification while the hashset, the
file hash and every other part stay right (the hostile peer of issue 7's acceptance test).
Malformed-protocol peers are `lab/hostile_ed2k.py`'s business.

Source exchange: with ``sources=(...)`` the peer advertises SX2 in its HELLOANSWER and answers
each OP_REQUESTSOURCES2 inside a multipacket with OP_ANSWERSOURCES2 listing those sources (in the
version asked, at most 4), sent before the MULTIPACKETANSWER as aMule does (ClientTCPSocket.cpp
OP_MULTIPACKET), zlib-packed with ``pack_sources=True`` (aMule packs answers past 354 bytes,
KnownFile.cpp `CreateSrcInfoPacket`); ``sources=()`` advertises SX2 and, like aMule with no
source to give, never answers. With ``sources=None`` (the default) SX2 is not advertised.

Everything it saw is kept for the tests: connections, the part requests (`requests`: one entry
per REQUESTPARTS, its non-empty ranges), the number of bytes of part data sent, the source
requests and every byte received (`received`).
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from peerwatch.protocols.ed2k import messages as m
from peerwatch.protocols.ed2k.client import CT_EMULE_MISCOPTIONS2, ClientIdentity
from peerwatch.protocols.ed2k.framing import PacketDecoder, encode_packet
from peerwatch.protocols.ed2k.hashing import PART_SIZE, hash_bytes
from peerwatch.protocols.ed2k.tags import Tag
from peerwatch.protocols.ed2k.wire import Ed2kError

SX2_BIT = 1 << 10  # CT_EMULE_MISCOPTIONS2 bit 10: source exchange 2 (aMule BaseClient.cpp)
PACKET_DATA = 10_240  # bytes of file data per SENDINGPART / COMPRESSEDPART packet
LAB_USER_HASH = bytes.fromhex("5e7c1a0f3b2e0e4d9a8c7b6a5f4e6f01")  # bytes 5, 14 = 14, 111


@dataclass(frozen=True)
class SharedFile:
    """A file the peer shares: its bytes (generated, benign) and their hashes."""

    name: str
    data: bytes = field(repr=False)
    ed2k: bytes
    part_hashes: tuple[bytes, ...]  # the hashset (empty below one part)
    aich: bytes | None

    @classmethod
    def of(cls, name: str, data: bytes) -> SharedFile:
        digest = hash_bytes(data, aich=True)
        return cls(name, data, digest.root, digest.part_hashes, digest.aich)

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class Ed2kLabPeer:
    """A loopback eD2k peer sharing `files`. Use as ``async with Ed2kLabPeer(...) as peer``."""

    host: str
    files: Iterable[SharedFile]
    port: int = 0  # 0: an ephemeral port (see `port` after start)
    user_hash: bytes = LAB_USER_HASH
    nick: str = "peerwatch-lab-ed2k"
    corrupt_parts: frozenset[int] | set[int] = frozenset()
    compress: bool = False  # send blocks as COMPRESSEDPART
    reverse: bool = False  # serve each request's blocks last first (out of file order)
    hang_up_after: int | None = None  # close the connection once this many data bytes are sent
    accept_upload: bool = True  # False: only ever send a queue rank
    queue_rank: int = 3  # the rank sent while queued
    hold_parts: frozenset[int] | set[int] | None = None  # parts listed as held (None: complete)
    # source exchange (module doc): None = SX2 not advertised; else the sources to list
    sources: tuple[m.Source, ...] | None = None
    pack_sources: bool = False  # send ANSWERSOURCES2 zlib-packed (0xD4)
    source_requests: int = 0  # REQUESTSOURCES2 seen (in a multipacket or alone)
    received: bytearray = field(default_factory=bytearray, repr=False)  # every byte received
    requests: list[tuple[tuple[int, int], ...]] = field(default_factory=list)
    upload_requests: int = 0
    connections: int = 0
    bytes_sent: int = 0
    _server: asyncio.Server | None = field(default=None, repr=False)
    _shared: dict[bytes, SharedFile] = field(default_factory=dict, repr=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self._shared = {f.ed2k: f for f in self.files}

    async def __aenter__(self) -> Ed2kLabPeer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()
            self._server = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    # --- one connection -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.connections += 1
        decoder = PacketDecoder()
        greeted = False
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                self.received += data
                try:
                    packets = decoder.feed(data)
                except Ed2kError:
                    return  # a well-formed peer hangs up on garbage, as aMule does
                for packet in packets:
                    try:
                        msg = m.decode(packet)
                    except Ed2kError:
                        return
                    if not greeted and not isinstance(msg, m.Hello):
                        return  # aMule: "Asks for something without saying hello"
                    greeted = True
                    out = self._answer(msg)
                    if out is None:
                        return
                    if self.hang_up_after is not None and self.bytes_sent >= self.hang_up_after:
                        writer.write(out)
                        await writer.drain()
                        return  # a peer going away mid-upload
                    if out:
                        writer.write(out)  # one write per answer batch
                        await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    def _status(self, f: SharedFile) -> m.PartStatus:
        if self.hold_parts is None:
            return m.PartStatus(0)  # complete: aMule writes a part count of 0
        count = f.size // PART_SIZE + 1
        return m.PartStatus.from_parts([i in self.hold_parts for i in range(count)])

    def _answer(self, msg: m.Message) -> bytes | None:
        """Bytes to send for `msg` (b"" for nothing); None to hang up."""
        if isinstance(msg, m.Hello):
            identity = ClientIdentity(
                self.user_hash, name=self.nick, tcp_port=self.port, version=(2, 3, 3)
            )
            body = identity.hello().body
            if self.sources is None:  # SX2 only when there is an answer to give
                tags = tuple(
                    Tag.uint32(CT_EMULE_MISCOPTIONS2, (t.as_int() or 0) & ~SX2_BIT)
                    if t.name == CT_EMULE_MISCOPTIONS2
                    else t
                    for t in body.tags
                )
                body = m.HelloBody(body.user_hash, body.client_id, body.tcp_port, tags)
            return m.HelloAnswer(body).encode()
        if isinstance(msg, m.MultiPacket):
            f = self._shared.get(msg.file_hash)
            if f is None:
                return m.FileReqAnsNoFil(msg.file_hash).encode()
            name: bytes | None = None
            status: m.PartStatus | None = None
            aich: bytes | None = None
            order: list[int] = []
            before = b""  # aMule sends the source answer before the multipacket answer
            for op in msg.requests:  # answered in the order asked (aMule ProcessMultiPacket)
                if op == m.Op.REQUESTFILENAME:
                    name = f.name.encode()
                    order.append(m.Op.REQFILENAMEANSWER)
                elif op == m.Op.SETREQFILEID:
                    status = self._status(f)
                    order.append(m.Op.FILESTATUS)
                elif op == m.EmuleOp.AICHFILEHASHREQ and f.aich is not None:
                    aich = f.aich
                    order.append(m.EmuleOp.AICHFILEHASHANS)
                elif op == m.EmuleOp.REQUESTSOURCES2:
                    self.source_requests += 1
                    before += self._source_answer(f, msg.sx2_version)
            answer = m.MultiPacketAnswer(f.ed2k, name, status, aich, tuple(order)).encode()
            return before + answer
        if isinstance(msg, m.RequestSources2):
            # aMule refuses this stand-alone 19-byte form (ClientTCPSocket.cpp checks size 16)
            self.source_requests += 1
            return b""
        if isinstance(msg, m.RequestFileName | m.SetReqFileId | m.AichFileHashReq):
            f = self._shared.get(msg.file_hash)
            if f is None:
                return m.FileReqAnsNoFil(msg.file_hash).encode()
            if isinstance(msg, m.RequestFileName):
                return m.ReqFileNameAnswer(f.ed2k, f.name.encode()).encode()
            if isinstance(msg, m.SetReqFileId):
                return m.FileStatus(f.ed2k, self._status(f)).encode()
            return m.AichFileHashAns(f.ed2k, f.aich).encode() if f.aich is not None else b""
        if isinstance(msg, m.HashSetRequest):
            f = self._shared.get(msg.file_hash)
            if f is None or not f.part_hashes:
                return b""  # aMule sends no hashset for a file below one part
            return m.HashSetAnswer(f.ed2k, f.part_hashes).encode()
        if isinstance(msg, m.StartUploadReq):
            self.upload_requests += 1
            if msg.file_hash not in self._shared:
                return m.FileReqAnsNoFil(msg.file_hash).encode()
            if not self.accept_upload:
                return m.QueueRanking(self.queue_rank, bytes(10)).encode()
            return m.AcceptUploadReq().encode()
        if isinstance(msg, m.RequestParts):
            f = self._shared.get(msg.file_hash)
            self.requests.append(msg.wanted)
            if f is None or not self.accept_upload:
                return b""  # aMule drops requests from a client without a slot
            blocks = list(msg.wanted)
            if self.reverse:
                blocks.reverse()  # legal: each packet names its own offsets
            return b"".join(p for start, end in blocks for p in self._block(f, start, end))
        if isinstance(msg, m.EndOfDownload):
            return None
        return b""

    def _source_answer(self, f: SharedFile, version: int) -> bytes:
        if not self.sources or version < 1:
            return b""  # aMule: no source to give (or an SX1-only request), no answer
        answer = m.AnswerSources2(min(version, m.SOURCE_EXCHANGE2_VERSION), f.ed2k, self.sources)
        return encode_packet(
            answer.PROTOCOL, answer.OPCODE, answer.payload(), pack=self.pack_sources
        )

    def _block(self, f: SharedFile, start: int, end: int) -> list[bytes]:
        if end > f.size or end - start > 3 * 184_320:
            return []  # aMule AddReqBlock drops such a request silently
        data = bytearray(f.data[start:end])
        if start // PART_SIZE in self.corrupt_parts:
            data[0] ^= 0xFF  # the lie: a wrong byte, everything else honest
        self.bytes_sent += len(data)
        large = end > 0xFFFFFFFF
        out = []
        if self.compress:
            packed = zlib.compress(bytes(data), 1)
            kind = m.CompressedPart64 if large else m.CompressedPart
            for at in range(0, len(packed), PACKET_DATA):
                chunk = packed[at : at + PACKET_DATA]
                out.append(kind(f.ed2k, start, len(packed), chunk).encode())
        else:
            plain = m.SendingPart64 if large else m.SendingPart
            for at in range(0, len(data), PACKET_DATA):
                out.append(plain(f.ed2k, start + at, bytes(data[at : at + PACKET_DATA])).encode())
        return out
