"""eD2k / eMule client-to-client TCP messages as frozen dataclasses with encode and decode.

Opcodes and layouts are taken from aMule's code: src/include/protocol/ed2k/Client2Client/TCP.h
for the opcodes, and for each layout the code that reads and writes it (src/BaseClient.cpp,
src/ClientTCPSocket.cpp, src/DownloadClient.cpp, src/UploadClient.cpp, src/UploadDiskIOThread.cpp,
src/KnownFile.cpp, src/PartFile.cpp). Kulbak & Bickson, "The eMule Protocol Specification" (2005),
describes the same client messages in its Appendix A (section 6, "Message Encoding").

`decode(packet)` is total: for any `Packet` it returns a message (`Unknown` for opcodes we do not
model) or raises `MessageError`; every length field is checked against the bytes that are present
before anything is allocated. ``message.encode()`` gives the framed bytes to send.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Self, TypeAlias, cast

from peerwatch.protocols.ed2k.framing import Packet, Protocol, encode_packet
from peerwatch.protocols.ed2k.tags import Tag, TagError, encode_tag_list, read_tag_list
from peerwatch.protocols.ed2k.wire import (
    HASH_SIZE,
    Ed2kError,
    Reader,
    check_hash,
    string16,
    u8,
    u16,
    u32,
    u64,
)

AICH_HASH_SIZE = 20  # AICH master hashes are SHA-1 (aMule CAICHHash::GetHashSize)
SOURCE_EXCHANGE2_VERSION = 4  # aMule/eMule SOURCEEXCHANGE2_VERSION
BLOCKS_PER_REQUEST = 3  # OP_REQUESTPARTS always carries three <start,end> pairs
#: Bytes accepted after a HELLO body. aMule reads 4 ('KDLM' or Hybrid) and notes "many clients
#: seem to send an extra 6" (BaseClient.cpp), so unknown extras are kept rather than refused.
MAX_HELLO_TRAILER = 64
MAX_SOURCES = 1024  # aMule sends at most 501 sources per answer (KnownFile.cpp)


class MessageError(Ed2kError):
    """A packet's payload does not match its opcode's layout."""


class Op(enum.IntEnum):
    """eDonkey opcodes (protocol 0xE3), ED2KStandardClientTCP."""

    HELLO = 0x01
    SENDINGPART = 0x46
    REQUESTPARTS = 0x47
    FILEREQANSNOFIL = 0x48
    END_OF_DOWNLOAD = 0x49
    HELLOANSWER = 0x4C
    SETREQFILEID = 0x4F
    FILESTATUS = 0x50
    HASHSETREQUEST = 0x51
    HASHSETANSWER = 0x52
    STARTUPLOADREQ = 0x54
    ACCEPTUPLOADREQ = 0x55
    CANCELTRANSFER = 0x56
    OUTOFPARTREQS = 0x57
    REQUESTFILENAME = 0x58
    REQFILENAMEANSWER = 0x59
    QUEUERANK = 0x5C


class EmuleOp(enum.IntEnum):
    """eMule extended opcodes (protocol 0xC5), ED2KExtendedClientTCP."""

    EMULEINFO = 0x01
    EMULEINFOANSWER = 0x02
    COMPRESSEDPART = 0x40
    QUEUERANKING = 0x60
    REQUESTSOURCES = 0x81
    REQUESTSOURCES2 = 0x83
    ANSWERSOURCES2 = 0x84
    MULTIPACKET = 0x92
    MULTIPACKETANSWER = 0x93
    AICHFILEHASHANS = 0x9D
    AICHFILEHASHREQ = 0x9E
    COMPRESSEDPART_I64 = 0xA1
    SENDINGPART_I64 = 0xA2
    REQUESTPARTS_I64 = 0xA3
    MULTIPACKET_EXT = 0xA4


class _Message:
    PROTOCOL: ClassVar[Protocol]
    OPCODE: ClassVar[int]

    def payload(self) -> bytes:
        raise NotImplementedError

    def encode(self) -> bytes:
        return encode_packet(self.PROTOCOL, self.OPCODE, self.payload())

    @classmethod
    def parse(cls, r: Reader) -> Self:
        raise NotImplementedError


# --- HELLO / HELLOANSWER ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HelloBody:
    """The body shared by HELLO and HELLOANSWER (aMule SendHelloTypePacket /
    ProcessHelloTypePacket): ``<userhash 16><client id 4><tcp port 2><tags><server ip 4>
    <server port 2>`` and, from some clients, 4 more bytes ('KDLM' from MLdonkey)."""

    user_hash: bytes
    client_id: int
    tcp_port: int
    tags: tuple[Tag, ...]
    server_ip: int = 0
    server_port: int = 0
    trailer: bytes = b""  # kept verbatim: 'KDLM' (MLdonkey), 4 bytes (eDonkey Hybrid), others

    def __post_init__(self) -> None:
        check_hash(self.user_hash, "user hash")

    def payload(self) -> bytes:
        return (
            self.user_hash
            + u32(self.client_id)
            + u16(self.tcp_port)
            + encode_tag_list(self.tags)
            + u32(self.server_ip)
            + u16(self.server_port)
            + self.trailer
        )

    @classmethod
    def read(cls, r: Reader) -> HelloBody:
        user_hash, client_id, port = r.hash16(), r.u32(), r.u16()
        tags = read_tag_list(r)
        server_ip, server_port = r.u32(), r.u16()
        trailer = r.rest()
        if len(trailer) > MAX_HELLO_TRAILER:
            raise MessageError(f"hello has {len(trailer)} trailing bytes")
        return cls(user_hash, client_id, port, tags, server_ip, server_port, trailer)


@dataclass(frozen=True, slots=True)
class Hello(_Message):
    """OP_HELLO: ``<hash size 1 = 16><HelloBody>``."""

    PROTOCOL = Protocol.EDONKEY
    OPCODE = Op.HELLO
    body: HelloBody

    def payload(self) -> bytes:
        return u8(HASH_SIZE) + self.body.payload()

    @classmethod
    def parse(cls, r: Reader) -> Self:
        size = r.u8()
        if size != HASH_SIZE:  # aMule ProcessHelloPacket refuses other sizes too
            raise MessageError(f"hello user hash size {size}, not 16")
        return cls(HelloBody.read(r))


@dataclass(frozen=True, slots=True)
class HelloAnswer(_Message):
    PROTOCOL = Protocol.EDONKEY
    OPCODE = Op.HELLOANSWER
    body: HelloBody

    def payload(self) -> bytes:
        return self.body.payload()

    @classmethod
    def parse(cls, r: Reader) -> Self:
        return cls(HelloBody.read(r))


@dataclass(frozen=True, slots=True)
class EmuleInfo(_Message):
    """OP_EMULEINFO / OP_EMULEINFOANSWER: ``<version 1><protocol 1><tags>``."""

    PROTOCOL = Protocol.EMULE
    OPCODE = EmuleOp.EMULEINFO
    version: int
    protocol_version: int
    tags: tuple[Tag, ...]

    def payload(self) -> bytes:
        return u8(self.version) + u8(self.protocol_version) + encode_tag_list(self.tags)

    @classmethod
    def parse(cls, r: Reader) -> Self:
        version, proto = r.u8(), r.u8()
        tags = read_tag_list(r)
        r.end("emule info")
        return cls(version, proto, tags)


@dataclass(frozen=True, slots=True)
class EmuleInfoAnswer(EmuleInfo):
    OPCODE = EmuleOp.EMULEINFOANSWER


# --- messages that are one file hash ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _HashOnly(_Message):
    file_hash: bytes

    def __post_init__(self) -> None:
        check_hash(self.file_hash, "file hash")

    def payload(self) -> bytes:
        return self.file_hash

    @classmethod
    def parse(cls, r: Reader) -> Self:
        h = r.hash16()
        r.end(cls.__name__)
        return cls(h)


@dataclass(frozen=True, slots=True)
class SetReqFileId(_HashOnly):
    PROTOCOL = Protocol.EDONKEY
    OPCODE = Op.SETREQFILEID


@dataclass(frozen=True, slots=True)
class FileReqAnsNoFil(_HashOnly):
    """The peer does not share the file (aMule answers SETREQFILEID / MULTIPACKET with it)."""

    PROTOCOL = Protocol.EDONKEY
    OPCODE = Op.FILEREQANSNOFIL


@dataclass(frozen=True, slots=True)
class HashSetRequest(_HashOnly):
    PROTOCOL = Protocol.EDONKEY
    OPCODE = Op.HASHSETREQUEST


@dataclass(frozen=True, slots=True)
class StartUploadReq(_HashOnly):
    PROTOCOL = Protocol.EDONKEY
    OPCODE = Op.STARTUPLOADREQ


@dataclass(frozen=True, slots=True)
class EndOfDownload(_HashOnly):
    PROTOCOL = Protocol.EDONKEY
    OPCODE = Op.END_OF_DOWNLOAD


@dataclass(frozen=True, slots=True)
class RequestSources(_HashOnly):
    PROTOCOL = Protocol.EMULE
    OPCODE = EmuleOp.REQUESTSOURCES


@dataclass(frozen=True, slots=True)
class AichFileHashReq(_HashOnly):
    PROTOCOL = Protocol.EMULE
    OPCODE = EmuleOp.AICHFILEHASHREQ


# --- messages without payload -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Empty(_Message):
    def payload(self) -> bytes:
        return b""

    @classmethod
    def parse(cls, r: Reader) -> Self:
        del r  # aMule ignores any payload of these
        return cls()


@dataclass(frozen=True, slots=True)
class AcceptUploadReq(_Empty):
    PROTOCOL = Protocol.EDONKEY
    OPCODE = Op.ACCEPTUPLOADREQ


@dataclass(frozen=True, slots=True)
class CancelTransfer(_Empty):
    PROTOCOL = Protocol.EDONKEY
    OPCODE = Op.CANCELTRANSFER


@dataclass(frozen=True, slots=True)
class OutOfPartReqs(_Empty):
    PROTOCOL = Protocol.EDONKEY
    OPCODE = Op.OUTOFPARTREQS


# --- file request and answers -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestFileName(_Message):
    """OP_REQUESTFILENAME: ``<hash 16>`` then, for peers that advertised extended requests, our
    part status (kept opaque in `extended`; we advertise version 0 and send none)."""

    PROTOCOL = Protocol.EDONKEY
    OPCODE = Op.REQUESTFILENAME
    file_hash: bytes
    extended: bytes = b""

    def __post_init__(self) -> None:
        check_hash(self.file_hash, "file hash")

    def payload(self) -> bytes:
        return self.file_hash + self.extended

    @classmethod
    def parse(cls, r: Reader) -> Self:
        return cls(r.hash16(), r.rest())


@dataclass(frozen=True, slots=True)
class ReqFileNameAnswer(_Message):
    """OP_REQFILENAMEANSWER: ``<hash 16><len 2><name>`` (aMule writes the name with WriteString,
    a 16-bit length; TCP.h's comment says 4, the code says 2)."""

    PROTOCOL = Protocol.EDONKEY
    OPCODE = Op.REQFILENAMEANSWER
    file_hash: bytes
    name: bytes

    def __post_init__(self) -> None:
        check_hash(self.file_hash, "file hash")

    def payload(self) -> bytes:
        return self.file_hash + string16(self.name)

    @classmethod
    def parse(cls, r: Reader) -> Self:
        h, name = r.hash16(), r.string16()
        r.end("file name answer")
        return cls(h, name)


@dataclass(frozen=True, slots=True)
class PartStatus:
    """``<part count 2><bitmap (count+7)/8>``; bit i of byte i//8 (LSB first) is part i.

    A count of 0 means the peer has the complete file (aMule ProcessFileStatus; a complete shared
    file is written as ``WriteUInt16(0)``). The count is the eD2k part count, size // 9,728,000 + 1
    (CKnownFile::SetFileSize "nr. of parts to be used with OP_FILESTATUS").
    """

    part_count: int
    bitmap: bytes = b""

    def __post_init__(self) -> None:
        if len(self.bitmap) != (self.part_count + 7) // 8:
            raise ValueError("bitmap must be (part_count + 7) // 8 bytes")

    @property
    def complete(self) -> bool:
        return self.part_count == 0

    def has(self, index: int) -> bool:
        if self.complete:
            return True
        if not 0 <= index < self.part_count:
            return False
        return bool(self.bitmap[index // 8] >> (index % 8) & 1)

    @property
    def have_count(self) -> int:
        return sum(self.has(i) for i in range(self.part_count))

    def encode(self) -> bytes:
        return u16(self.part_count) + self.bitmap

    @classmethod
    def read(cls, r: Reader) -> PartStatus:
        count = r.u16()
        return cls(count, r.take((count + 7) // 8))

    @classmethod
    def from_parts(cls, parts: list[bool]) -> PartStatus:
        bitmap = bytearray((len(parts) + 7) // 8)
        for i, have in enumerate(parts):
            if have:
                bitmap[i // 8] |= 1 << (i % 8)
        return cls(len(parts), bytes(bitmap))


@dataclass(frozen=True, slots=True)
class FileStatus(_Message):
    PROTOCOL = Protocol.EDONKEY
    OPCODE = Op.FILESTATUS
    file_hash: bytes
    status: PartStatus

    def __post_init__(self) -> None:
        check_hash(self.file_hash, "file hash")

    def payload(self) -> bytes:
        return self.file_hash + self.status.encode()

    @classmethod
    def parse(cls, r: Reader) -> Self:
        h, status = r.hash16(), PartStatus.read(r)
        r.end("file status")
        return cls(h, status)


@dataclass(frozen=True, slots=True)
class HashSetAnswer(_Message):
    """OP_HASHSETANSWER: ``<file hash 16><count 2><part hash 16>[count]`` (aMule
    SendHashsetPacket; TCP.h's comment omits the leading file hash)."""

    PROTOCOL = Protocol.EDONKEY
    OPCODE = Op.HASHSETANSWER
    file_hash: bytes
    part_hashes: tuple[bytes, ...]

    def __post_init__(self) -> None:
        check_hash(self.file_hash, "file hash")
        if len(self.part_hashes) > 0xFFFF:
            raise ValueError("at most 65535 part hashes")
        for h in self.part_hashes:
            check_hash(h, "part hash")

    def payload(self) -> bytes:
        return self.file_hash + u16(len(self.part_hashes)) + b"".join(self.part_hashes)

    @classmethod
    def parse(cls, r: Reader) -> Self:
        h, count = r.hash16(), r.u16()
        if count * HASH_SIZE != r.remaining:
            raise MessageError(f"hashset count {count} does not match {r.remaining} bytes")
        return cls(h, tuple(r.hash16() for _ in range(count)))


@dataclass(frozen=True, slots=True)
class QueueRank(_Message):
    """OP_QUEUERANK (eDonkey): ``<rank 4>``."""

    PROTOCOL = Protocol.EDONKEY
    OPCODE = Op.QUEUERANK
    rank: int

    def payload(self) -> bytes:
        return u32(self.rank)

    @classmethod
    def parse(cls, r: Reader) -> Self:
        rank = r.u32()
        r.end("queue rank")
        return cls(rank)


@dataclass(frozen=True, slots=True)
class QueueRanking(_Message):
    """OP_QUEUERANKING (eMule): ``<rank 2>`` and padding (kept verbatim)."""

    PROTOCOL = Protocol.EMULE
    OPCODE = EmuleOp.QUEUERANKING
    rank: int
    padding: bytes = b""

    def payload(self) -> bytes:
        return u16(self.rank) + self.padding

    @classmethod
    def parse(cls, r: Reader) -> Self:
        return cls(r.u16(), r.rest())


# --- parts --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestParts(_Message):
    """OP_REQUESTPARTS ``<hash 16><start 4>[3]<end 4>[3]``; OP_REQUESTPARTS_I64 the same with
    8-byte offsets. Ends are exclusive; unused pairs are (0, 0) (aMule SendBlockRequests)."""

    PROTOCOL = Protocol.EDONKEY
    OPCODE: ClassVar[int] = Op.REQUESTPARTS
    WIDTH: ClassVar[int] = 4
    file_hash: bytes
    ranges: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        check_hash(self.file_hash, "file hash")
        if len(self.ranges) != BLOCKS_PER_REQUEST:
            raise ValueError("a part request carries exactly three (start, end) pairs")
        limit = 1 << (8 * self.WIDTH)
        for start, end in self.ranges:
            if not (0 <= start < limit and 0 <= end < limit):
                raise ValueError(f"offset does not fit in {self.WIDTH} bytes")

    def payload(self) -> bytes:
        pack = u32 if self.WIDTH == 4 else u64
        starts = b"".join(pack(s) for s, _ in self.ranges)
        ends = b"".join(pack(e) for _, e in self.ranges)
        return self.file_hash + starts + ends

    @classmethod
    def parse(cls, r: Reader) -> Self:
        h = r.hash16()
        read = r.u32 if cls.WIDTH == 4 else r.u64
        starts = [read() for _ in range(BLOCKS_PER_REQUEST)]
        ends = [read() for _ in range(BLOCKS_PER_REQUEST)]
        r.end("part request")
        return cls(h, tuple(zip(starts, ends, strict=True)))

    @property
    def wanted(self) -> tuple[tuple[int, int], ...]:
        """The non-empty ranges (aMule skips pairs with end <= start)."""
        return tuple((s, e) for s, e in self.ranges if e > s)


@dataclass(frozen=True, slots=True)
class RequestParts64(RequestParts):
    PROTOCOL = Protocol.EMULE
    OPCODE = EmuleOp.REQUESTPARTS_I64
    WIDTH = 8


@dataclass(frozen=True, slots=True)
class SendingPart(_Message):
    """OP_SENDINGPART ``<hash 16><start 4><end 4><data end-start>``; OP_SENDINGPART_I64 with 8-byte
    offsets (aMule CreateStandardPackets / ProcessBlockPacket: end > start and the data length
    must be exactly end - start)."""

    PROTOCOL = Protocol.EDONKEY
    OPCODE: ClassVar[int] = Op.SENDINGPART
    WIDTH: ClassVar[int] = 4
    file_hash: bytes
    start: int
    data: bytes

    def __post_init__(self) -> None:
        check_hash(self.file_hash, "file hash")
        if not self.data:
            raise ValueError("a part message carries at least one byte")
        if self.end >= 1 << (8 * self.WIDTH):
            raise ValueError(f"offset does not fit in {self.WIDTH} bytes")

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def payload(self) -> bytes:
        pack = u32 if self.WIDTH == 4 else u64
        return self.file_hash + pack(self.start) + pack(self.end) + self.data

    @classmethod
    def parse(cls, r: Reader) -> Self:
        h = r.hash16()
        read = r.u32 if cls.WIDTH == 4 else r.u64
        start, end = read(), read()
        if end <= start or end - start != r.remaining:
            raise MessageError(f"part [{start}, {end}) does not match {r.remaining} data bytes")
        return cls(h, start, r.rest())


@dataclass(frozen=True, slots=True)
class SendingPart64(SendingPart):
    PROTOCOL = Protocol.EMULE
    OPCODE = EmuleOp.SENDINGPART_I64
    WIDTH = 8


@dataclass(frozen=True, slots=True)
class CompressedPart(_Message):
    """OP_COMPRESSEDPART ``<hash 16><start 4><packed size 4><zlib bytes>``; _I64: 8-byte start.

    One requested block is compressed as a single zlib stream of `packed_size` bytes and sent in
    several of these, each repeating the block's start offset (aMule CreatePackedPackets); the
    receiver inflates them in order (see client.py)."""

    PROTOCOL = Protocol.EMULE
    OPCODE = EmuleOp.COMPRESSEDPART
    WIDTH: ClassVar[int] = 4
    file_hash: bytes
    start: int
    packed_size: int
    data: bytes

    def __post_init__(self) -> None:
        check_hash(self.file_hash, "file hash")
        if not 0 <= self.start < 1 << (8 * self.WIDTH):
            raise ValueError(f"offset does not fit in {self.WIDTH} bytes")

    def payload(self) -> bytes:
        pack = u32 if self.WIDTH == 4 else u64
        return self.file_hash + pack(self.start) + u32(self.packed_size) + self.data

    @classmethod
    def parse(cls, r: Reader) -> Self:
        h = r.hash16()
        start = r.u32() if cls.WIDTH == 4 else r.u64()
        packed_size = r.u32()
        data = r.rest()
        if not data or len(data) > packed_size:
            raise MessageError(f"{len(data)} compressed bytes for a {packed_size}-byte stream")
        return cls(h, start, packed_size, data)


@dataclass(frozen=True, slots=True)
class CompressedPart64(CompressedPart):
    OPCODE = EmuleOp.COMPRESSEDPART_I64
    WIDTH = 8


# --- source exchange ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestSources2(_Message):
    """OP_REQUESTSOURCES2: ``<version 1><options 2><hash 16>`` (aMule SendFileRequest)."""

    PROTOCOL = Protocol.EMULE
    OPCODE = EmuleOp.REQUESTSOURCES2
    file_hash: bytes
    version: int = SOURCE_EXCHANGE2_VERSION
    options: int = 0

    def __post_init__(self) -> None:
        check_hash(self.file_hash, "file hash")

    def payload(self) -> bytes:
        return u8(self.version) + u16(self.options) + self.file_hash

    @classmethod
    def parse(cls, r: Reader) -> Self:
        version, options, h = r.u8(), r.u16(), r.hash16()
        r.end("source request")
        return cls(h, version, options)


@dataclass(frozen=True, slots=True)
class Source:
    """One source of an ANSWERSOURCES2 entry (aMule CKnownFile::CreateSrcInfoPacket).

    `client_id` is as sent: from version 3 on a high ID is in "hybrid" byte order (the IPv4
    address's bytes reversed, aMule GetUserIDHybrid), so `ip` undoes that. Low IDs (< 2^24) are
    firewalled clients with no address."""

    client_id: int
    tcp_port: int
    server_ip: int
    server_port: int
    user_hash: bytes | None = None  # version >= 2
    crypt_options: int | None = None  # version >= 4: bit0 supports, bit1 requests, bit2 requires
    version: int = SOURCE_EXCHANGE2_VERSION

    @property
    def low_id(self) -> bool:
        return self.client_id < 1 << 24

    @property
    def ip(self) -> str | None:
        if self.low_id:
            return None
        raw = self.client_id.to_bytes(4, "little")
        if self.version >= 3:
            raw = raw[::-1]
        return ".".join(str(b) for b in raw)


_SOURCE_SIZE = {1: 12, 2: 28, 3: 28, 4: 29}
_SOURCE_V1 = struct.Struct("<IHIH")
_SOURCE_V2 = struct.Struct("<IHIH16s")  # versions 2 and 3
_SOURCE_V4 = struct.Struct("<IHIH16sB")


@dataclass(frozen=True, slots=True)
class AnswerSources2(_Message):
    """OP_ANSWERSOURCES2: ``<version 1><hash 16><count 2><source>[count]``; a source is
    ``<id 4><port 2><server ip 4><server port 2>``, then ``<user hash 16>`` from version 2 and
    ``<crypt options 1>`` from version 4 (aMule CPartFile::AddClientSources checks the count
    against the data size exactly, as we do)."""

    PROTOCOL = Protocol.EMULE
    OPCODE = EmuleOp.ANSWERSOURCES2
    version: int
    file_hash: bytes
    sources: tuple[Source, ...]

    def __post_init__(self) -> None:
        check_hash(self.file_hash, "file hash")
        if self.version not in _SOURCE_SIZE:
            raise ValueError("source exchange version is 1..4")

    def payload(self) -> bytes:
        out = [u8(self.version), self.file_hash, u16(len(self.sources))]
        for s in self.sources:
            out.append(u32(s.client_id) + u16(s.tcp_port) + u32(s.server_ip) + u16(s.server_port))
            if self.version >= 2:
                out.append(check_hash(s.user_hash or b"", "source user hash"))
            if self.version >= 4:
                out.append(u8(s.crypt_options or 0))
        return b"".join(out)

    @classmethod
    def parse(cls, r: Reader) -> Self:
        version, h, count = r.u8(), r.hash16(), r.u16()
        if version not in _SOURCE_SIZE:
            raise MessageError(f"unknown source exchange version {version}")
        if count > MAX_SOURCES:
            raise MessageError(f"{count} sources is over {MAX_SOURCES}")
        if count * _SOURCE_SIZE[version] != r.remaining:
            raise MessageError(f"{count} v{version} sources do not fill {r.remaining} bytes")
        # The size was checked exactly above, so one struct pass reads every record (a third of
        # the time of field-by-field reads: benchmarks/bench_ed2k.py).
        data = r.take(r.remaining)
        if version == 1:
            sources = tuple(
                Source(cid, port, sip, sport, None, None, version)
                for cid, port, sip, sport in _SOURCE_V1.iter_unpack(data)
            )
        elif version < 4:
            sources = tuple(
                Source(cid, port, sip, sport, uh, None, version)
                for cid, port, sip, sport, uh in _SOURCE_V2.iter_unpack(data)
            )
        else:
            sources = tuple(
                Source(cid, port, sip, sport, uh, crypt, version)
                for cid, port, sip, sport, uh, crypt in _SOURCE_V4.iter_unpack(data)
            )
        return cls(version, h, sources)


# --- AICH and multipacket -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AichFileHashAns(_Message):
    """OP_AICHFILEHASHANS: ``<file hash 16><AICH master hash 20>``."""

    PROTOCOL = Protocol.EMULE
    OPCODE = EmuleOp.AICHFILEHASHANS
    file_hash: bytes
    aich_hash: bytes

    def __post_init__(self) -> None:
        check_hash(self.file_hash, "file hash")
        if len(self.aich_hash) != AICH_HASH_SIZE:
            raise ValueError("an AICH hash is 20 bytes")

    def payload(self) -> bytes:
        return self.file_hash + self.aich_hash

    @classmethod
    def parse(cls, r: Reader) -> Self:
        h, aich = r.hash16(), r.take(AICH_HASH_SIZE)
        r.end("AICH file hash answer")
        return cls(h, aich)


@dataclass(frozen=True, slots=True)
class MultiPacket(_Message):
    """OP_MULTIPACKET ``<hash 16><sub-opcode 1 [body]>...``; OP_MULTIPACKET_EXT puts
    ``<file size 8>`` after the hash (aMule SendFileRequest). Sub-requests we send: REQUESTFILENAME
    (no body, as we advertise extended requests version 0), SETREQFILEID, REQUESTSOURCES2
    ``<version 1><options 2>``, REQUESTSOURCES and AICHFILEHASHREQ. aMule answers REQUESTSOURCES2 in
    a multipacket, while its stand-alone OP_REQUESTSOURCES2 handler refuses the 19-byte packet
    (ClientTCPSocket.cpp checks ``size != 16``), so this is the way to ask aMule for sources."""

    PROTOCOL = Protocol.EMULE
    OPCODE = EmuleOp.MULTIPACKET
    file_hash: bytes
    requests: tuple[int, ...]  # sub-opcodes, in order
    file_size: int | None = None  # set for OP_MULTIPACKET_EXT
    sx2_version: int = SOURCE_EXCHANGE2_VERSION
    sx2_options: int = 0

    def __post_init__(self) -> None:
        check_hash(self.file_hash, "file hash")
        for op in self.requests:
            if op not in _MULTI_REQUESTS:
                raise ValueError(f"sub-request {op:#x} is not one we model")

    def encode(self) -> bytes:
        opcode = EmuleOp.MULTIPACKET if self.file_size is None else EmuleOp.MULTIPACKET_EXT
        return encode_packet(self.PROTOCOL, opcode, self.payload())

    def payload(self) -> bytes:
        out = [self.file_hash]
        if self.file_size is not None:
            out.append(u64(self.file_size))
        for op in self.requests:
            out.append(u8(op))
            if op == EmuleOp.REQUESTSOURCES2:
                out.append(u8(self.sx2_version) + u16(self.sx2_options))
        return b"".join(out)

    @classmethod
    def read(cls, r: Reader, *, ext: bool) -> MultiPacket:
        h = r.hash16()
        size = r.u64() if ext else None
        ops: list[int] = []
        version, options = SOURCE_EXCHANGE2_VERSION, 0
        while r.remaining:
            op = r.u8()
            if op not in _MULTI_REQUESTS:
                raise MessageError(f"unknown multipacket sub-request {op:#04x}")
            if op == EmuleOp.REQUESTSOURCES2:
                version, options = r.u8(), r.u16()
            ops.append(op)
        return cls(h, tuple(ops), size, version, options)


_MULTI_REQUESTS = frozenset(
    {
        Op.REQUESTFILENAME,
        Op.SETREQFILEID,
        EmuleOp.REQUESTSOURCES,
        EmuleOp.REQUESTSOURCES2,
        EmuleOp.AICHFILEHASHREQ,
    }
)


@dataclass(frozen=True, slots=True)
class MultiPacketAnswer(_Message):
    """OP_MULTIPACKETANSWER ``<hash 16>`` then answers: REQFILENAMEANSWER ``<len 2><name>``,
    FILESTATUS ``<PartStatus>``, AICHFILEHASHANS ``<20>`` (aMule ClientTCPSocket.cpp). An unknown
    sub-opcode has no known length, so it ends the decode with an error."""

    PROTOCOL = Protocol.EMULE
    OPCODE = EmuleOp.MULTIPACKETANSWER
    file_hash: bytes
    name: bytes | None = None
    status: PartStatus | None = None
    aich_hash: bytes | None = None
    order: tuple[int, ...] = field(default=())  # sub-opcodes as they came (for exact re-encoding)

    def __post_init__(self) -> None:
        check_hash(self.file_hash, "file hash")

    def payload(self) -> bytes:
        order = self.order or tuple(
            op
            for op, v in (
                (Op.REQFILENAMEANSWER, self.name),
                (Op.FILESTATUS, self.status),
                (EmuleOp.AICHFILEHASHANS, self.aich_hash),
            )
            if v is not None
        )
        out = [self.file_hash]
        for op in order:
            out.append(u8(op))
            if op == Op.REQFILENAMEANSWER:
                out.append(string16(self.name or b""))
            elif op == Op.FILESTATUS:
                out.append((self.status or PartStatus(0)).encode())
            else:
                out.append(self.aich_hash or bytes(AICH_HASH_SIZE))
        return b"".join(out)

    @classmethod
    def parse(cls, r: Reader) -> Self:
        h = r.hash16()
        name: bytes | None = None
        status: PartStatus | None = None
        aich: bytes | None = None
        order: list[int] = []
        while r.remaining:
            op = r.u8()
            if op == Op.REQFILENAMEANSWER:
                name = r.string16()
            elif op == Op.FILESTATUS:
                status = PartStatus.read(r)
            elif op == EmuleOp.AICHFILEHASHANS:
                aich = r.take(AICH_HASH_SIZE)
            else:
                raise MessageError(f"unknown multipacket answer {op:#04x}")
            order.append(op)
        return cls(h, name, status, aich, tuple(order))


@dataclass(frozen=True, slots=True)
class Unknown:
    """A packet whose opcode we do not model; kept whole so it can be recorded."""

    protocol: Protocol
    opcode: int
    payload: bytes

    def encode(self) -> bytes:
        return encode_packet(self.protocol, self.opcode, self.payload)


Message: TypeAlias = (
    Hello
    | HelloAnswer
    | EmuleInfo
    | SetReqFileId
    | FileReqAnsNoFil
    | HashSetRequest
    | StartUploadReq
    | EndOfDownload
    | RequestSources
    | AichFileHashReq
    | AcceptUploadReq
    | CancelTransfer
    | OutOfPartReqs
    | RequestFileName
    | ReqFileNameAnswer
    | FileStatus
    | HashSetAnswer
    | QueueRank
    | QueueRanking
    | RequestParts
    | SendingPart
    | CompressedPart
    | RequestSources2
    | AnswerSources2
    | AichFileHashAns
    | MultiPacket
    | MultiPacketAnswer
    | Unknown
)

_Parser = Callable[[Reader], Message]
_PARSERS: dict[tuple[Protocol, int], _Parser] = {
    (cls.PROTOCOL, cls.OPCODE): cast(_Parser, cls.parse)
    for cls in (
        Hello,
        HelloAnswer,
        EmuleInfo,
        EmuleInfoAnswer,
        SetReqFileId,
        FileReqAnsNoFil,
        HashSetRequest,
        StartUploadReq,
        EndOfDownload,
        RequestSources,
        AichFileHashReq,
        AcceptUploadReq,
        CancelTransfer,
        OutOfPartReqs,
        RequestFileName,
        ReqFileNameAnswer,
        FileStatus,
        HashSetAnswer,
        QueueRank,
        QueueRanking,
        RequestParts,
        RequestParts64,
        SendingPart,
        SendingPart64,
        CompressedPart,
        CompressedPart64,
        RequestSources2,
        AnswerSources2,
        AichFileHashAns,
        MultiPacketAnswer,
    )
}
_PARSERS[(Protocol.EMULE, EmuleOp.MULTIPACKET)] = lambda r: MultiPacket.read(r, ext=False)
_PARSERS[(Protocol.EMULE, EmuleOp.MULTIPACKET_EXT)] = lambda r: MultiPacket.read(r, ext=True)


def decode(packet: Packet) -> Message:
    """The message in one packet. Raises `MessageError` (an `Ed2kError`) and nothing else."""
    parser = _PARSERS.get((packet.protocol, packet.opcode))
    if parser is None:
        return Unknown(packet.protocol, packet.opcode, packet.payload)
    try:
        return parser(Reader(packet.payload))
    except MessageError:
        raise
    except (Ed2kError, TagError) as exc:
        raise MessageError(f"opcode {packet.opcode:#04x}: {exc}") from None
    except ValueError as exc:  # a field a constructor refuses, e.g. a bitmap of the wrong length
        raise MessageError(f"opcode {packet.opcode:#04x}: {exc}") from None
