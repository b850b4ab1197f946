"""Kad2 UDP packets: ids, contacts, tags and the messages a source search needs, both ways.

A Kad datagram is ``<protocol 1><opcode 1><payload>``: protocol 0xE4 (OP_KADEMLIAHEADER) carries
the payload as is, 0xE5 (OP_KADEMLIAPACKEDPROT) zlib-compressed (src/include/protocol/Protocols.h;
aMule packs any packet over 200 bytes, CKademliaUDPListener::SendPacket, and unpacks into a buffer
of ``10 * size + 300`` bytes, CClientUDPSocket::OnPacketReceived: we cap the same way).

Byte order (src/kademlia/utils/UInt128.{h,cpp}, src/SafeFile.cpp): a Kad id is a CUInt128, a
128-bit number whose most significant 32-bit word is chunk 0. A 16-byte MD4 hash becomes a
CUInt128 big-endian (SetValueBE: chunk 0 = bytes 0-3 read big-endian) and comes back with
ToByteArray, but on the wire CFileDataIO::WriteUInt128 writes the four chunks in order, each as a
*little-endian* uint32. So the hash ``00 01 02 03 04 ...`` travels as ``03 02 01 00 07 06 ...``.
Here a Kad id is a Python int (the CUInt128 value); `hash_to_id`/`id_to_hash` convert.

IPv4 addresses are Kad "host order" numbers (1.2.3.4 is 0x01020304) written as little-endian
uint32, so 1.2.3.4 travels as ``04 03 02 01`` (KademliaUDPListener.cpp, Process2BootstrapRequest
writes ``contact->GetIPAddress()``; ProcessKademlia2Response swaps it back with
wxUINT32_SWAP_ALWAYS before checking it). TAG_SOURCEIP holds the same number.

Kad tags are CFileDataIO::ReadTag/WriteTag's form, not the compact eD2k one: ``<type 1>`` (no
0x80 flag), the name as a 2-byte-length string (the 1-byte ids such as TAG_SOURCEIP 0xFE are
written ``01 00 FE``), then the value; only HASH16, STRING, UINT8/16/32/64, FLOAT32 and BSOB are
accepted (ReadTag throws on anything else). A tag list has a 1-byte count (ReadTagPtrList). The
`Tag` value type of protocols/ed2k/tags.py is reused; only the wire form differs.

Every decoder is total: hostile bytes raise `KadError` (a ProtocolError) and nothing else; every
count is checked against the bytes left before anything is allocated.
"""

from __future__ import annotations

import ipaddress
import struct
import zlib
from dataclasses import dataclass
from typing import ClassVar

from peerwatch.protocols.ed2k.tags import Tag, TagType
from peerwatch.protocols.ed2k.wire import Ed2kError, Reader, u8, u16, u32, u64

OP_KADEMLIAHEADER = 0xE4
OP_KADEMLIAPACKEDPROT = 0xE5
KADEMLIA_VERSION = 0x08  # src/include/protocol/kad2/Constants.h ("0.49b"), what aMule 2.3.3 sends

# Opcodes: src/include/protocol/kad2/Client2Client/UDP.h (Kademlia2Opcodes).
KADEMLIA2_BOOTSTRAP_REQ = 0x01
KADEMLIA2_BOOTSTRAP_RES = 0x09
KADEMLIA2_HELLO_REQ = 0x11
KADEMLIA2_HELLO_RES = 0x19
KADEMLIA2_REQ = 0x21
KADEMLIA2_HELLO_RES_ACK = 0x22
KADEMLIA2_RES = 0x29
KADEMLIA2_SEARCH_SOURCE_REQ = 0x34
KADEMLIA2_SEARCH_RES = 0x3B
KADEMLIA2_PUBLISH_SOURCE_REQ = 0x44
KADEMLIA2_PUBLISH_RES = 0x4B
KADEMLIA_FIREWALLED_REQ = 0x50  # src/include/protocol/kad/Client2Client/UDP.h (Kad1 opcode)
KADEMLIA_FIREWALLED2_REQ = 0x53
KADEMLIA2_PING = 0x60
KADEMLIA2_PONG = 0x61

# KADEMLIA2_REQ "type": how many contacts the asker wants (src/include/protocol/kad/Constants.h).
KADEMLIA_FIND_VALUE = 0x02
KADEMLIA_STORE = 0x04
KADEMLIA_FIND_NODE = 0x0B

# Tag ids: src/include/tags/FileTags.h.
TAG_FILESIZE = 0x02
TAG_SOURCES = 0x15
TAG_KADMISCOPTIONS = 0xF2
TAG_ENCRYPTION = 0xF3
TAG_BUDDYHASH = 0xF8
TAG_CLIENTLOWID = 0xF9
TAG_SERVERPORT = 0xFA
TAG_SERVERIP = 0xFB
TAG_SOURCEUPORT = 0xFC
TAG_SOURCEPORT = 0xFD
TAG_SOURCEIP = 0xFE
TAG_SOURCETYPE = 0xFF

ID_BITS = 128
ID_MAX = (1 << ID_BITS) - 1
CONTACT_SIZE = 25  # <id 16><ip 4><udp port 2><tcp port 2><version 1>
MAX_DATAGRAM = 65535
#: zlib output cap of a packed packet: aMule's own 10 * size + 300, and never over this.
MAX_UNPACKED = 1 << 20
_KAD_TAG_TYPES = frozenset(
    {
        TagType.HASH16,
        TagType.STRING,
        TagType.UINT8,
        TagType.UINT16,
        TagType.UINT32,
        TagType.UINT64,
        TagType.FLOAT32,
        TagType.BSOB,
    }
)
_MIN_TAG = 4  # <type 1><name length 2><empty name><1-byte value>


class KadError(Ed2kError):
    """A remote Kad node sent bytes that break the protocol (a ProtocolError, via Ed2kError)."""


# --- ids, addresses -----------------------------------------------------------------------------


def hash_to_id(digest: bytes) -> int:
    """The CUInt128 of a 16-byte MD4 hash (file hash, user hash): CUInt128::SetValueBE."""
    if len(digest) != 16:
        raise ValueError("a Kad id comes from a 16-byte hash")
    return int.from_bytes(digest, "big")


def id_to_hash(kad_id: int) -> bytes:
    """CUInt128::ToByteArray: the hash bytes of an id (the user hash of a SEARCH_RES answer)."""
    return _check_id(kad_id).to_bytes(16, "big")


def encode_id(kad_id: int) -> bytes:
    """CFileDataIO::WriteUInt128: chunks 0..3 (most significant first), each little-endian."""
    v = _check_id(kad_id)
    return struct.pack("<4I", *((v >> (96 - 32 * i)) & 0xFFFFFFFF for i in range(4)))


def read_id(r: Reader) -> int:
    words: tuple[int, int, int, int] = struct.unpack("<4I", r.take(16))
    return (words[0] << 96) | (words[1] << 64) | (words[2] << 32) | words[3]


def _check_id(kad_id: int) -> int:
    if not 0 <= kad_id <= ID_MAX:
        raise ValueError("a Kad id is a 128-bit unsigned number")
    return kad_id


def ip_to_kad(ip: str) -> int:
    """The Kad "host order" number of a dotted IPv4 address (1.2.3.4 -> 0x01020304)."""
    return int(ipaddress.IPv4Address(ip))


def kad_to_ip(value: int) -> str:
    return str(ipaddress.IPv4Address(value & 0xFFFFFFFF))


# --- tags ---------------------------------------------------------------------------------------


def encode_kad_tag(tag: Tag) -> bytes:
    """CFileDataIO::WriteTag: ``<type><name len 2><name>`` (an id is a 1-byte name), the value."""
    if tag.type not in _KAD_TAG_TYPES:
        raise ValueError(f"tag type {tag.type:#x} is not a Kad tag type")
    name = bytes([tag.name]) if isinstance(tag.name, int) else tag.name
    out = u8(tag.type) + u16(len(name)) + name
    v = tag.value
    if tag.type == TagType.UINT8:
        assert isinstance(v, int)
        return out + u8(v)
    if tag.type == TagType.UINT16:
        assert isinstance(v, int)
        return out + u16(v)
    if tag.type == TagType.UINT32:
        assert isinstance(v, int)
        return out + u32(v)
    if tag.type == TagType.UINT64:
        assert isinstance(v, int)
        return out + u64(v)
    if tag.type == TagType.FLOAT32:
        assert isinstance(v, float)
        return out + struct.pack("<f", v)
    assert isinstance(v, bytes)
    if tag.type == TagType.STRING:
        return out + u16(len(v)) + v
    if tag.type == TagType.BSOB:
        return out + u8(len(v)) + v
    return out + v  # HASH16


def read_kad_tag(r: Reader) -> Tag:
    """CFileDataIO::ReadTag."""
    t = r.u8()
    if t not in _KAD_TAG_TYPES:
        raise KadError(f"Kad tag type {t:#04x} is not accepted (CFileDataIO::ReadTag)")
    n = r.u16()
    name: int | bytes = r.u8() if n == 1 else r.take(n)
    if t == TagType.UINT8:
        return Tag(name, t, r.u8())
    if t == TagType.UINT16:
        return Tag(name, t, r.u16())
    if t == TagType.UINT32:
        return Tag(name, t, r.u32())
    if t == TagType.UINT64:
        return Tag(name, t, r.u64())
    if t == TagType.FLOAT32:
        return Tag(name, t, float(struct.unpack("<f", r.take(4))[0]))
    if t == TagType.STRING:
        return Tag(name, t, r.string16())
    if t == TagType.BSOB:
        return Tag(name, t, r.take(r.u8()))
    return Tag(name, t, r.hash16())


def read_kad_tags(r: Reader) -> tuple[Tag, ...]:
    """ReadTagPtrList: ``<count 1><tag>[count]``, the count checked against the bytes left."""
    count = r.u8()
    if count * _MIN_TAG > r.remaining:
        raise KadError(f"tag count {count} cannot fit in {r.remaining} bytes")
    return tuple(read_kad_tag(r) for _ in range(count))


def encode_kad_tags(tags: tuple[Tag, ...]) -> bytes:
    if len(tags) > 0xFF:
        raise ValueError("a Kad tag list holds at most 255 tags")
    return u8(len(tags)) + b"".join(encode_kad_tag(t) for t in tags)


def tag_int(tags: tuple[Tag, ...], name: int) -> int | None:
    """The first integer tag of that id (CSearch::ProcessResultFile takes the last; a tag
    repeated by a hostile node is its own fact, so we take the first like Process2Publish...)."""
    for tag in tags:
        if tag.name == name:
            return tag.as_int()
    return None


# --- contacts -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KadContact:
    """One node as Kad lists it (BOOTSTRAP_RES, KADEMLIA2_RES): id, address, ports, version."""

    id: int
    ip: str
    udp_port: int
    tcp_port: int
    version: int

    def encode(self) -> bytes:
        return (
            encode_id(self.id)
            + u32(ip_to_kad(self.ip))
            + u16(self.udp_port)
            + u16(self.tcp_port)
            + u8(self.version)
        )

    @property
    def address(self) -> tuple[str, int]:
        return (self.ip, self.udp_port)


def read_contact(r: Reader) -> KadContact:
    kad_id = read_id(r)
    ip = kad_to_ip(r.u32())
    udp, tcp, version = r.u16(), r.u16(), r.u8()
    return KadContact(kad_id, ip, udp, tcp, version)


def _read_contacts(r: Reader, count: int, what: str) -> tuple[KadContact, ...]:
    if count * CONTACT_SIZE != r.remaining:
        # aMule's CHECK_PACKET_EXACT_SIZE(16+1 + 25*n) in ProcessKademlia2Response.
        raise KadError(f"{what}: {count} contacts need {count * CONTACT_SIZE} bytes, {r.remaining}")
    return tuple(read_contact(r) for _ in range(count))


# --- messages -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BootstrapReq:
    """KADEMLIA2_BOOTSTRAP_REQ: empty (CKademliaUDPListener::Bootstrap)."""

    opcode: ClassVar[int] = KADEMLIA2_BOOTSTRAP_REQ

    def encode(self) -> bytes:
        return b""


@dataclass(frozen=True, slots=True)
class BootstrapRes:
    """KADEMLIA2_BOOTSTRAP_RES: ``<node id 16><tcp port 2><version 1><count 2><contact 25>*``
    (Process2BootstrapRequest; aMule sends at most 20 contacts)."""

    opcode: ClassVar[int] = KADEMLIA2_BOOTSTRAP_RES
    node_id: int
    tcp_port: int
    version: int
    contacts: tuple[KadContact, ...]

    def encode(self) -> bytes:
        return (
            encode_id(self.node_id)
            + u16(self.tcp_port)
            + u8(self.version)
            + u16(len(self.contacts))
            + b"".join(c.encode() for c in self.contacts)
        )

    @classmethod
    def decode(cls, r: Reader) -> BootstrapRes:
        node_id, tcp, version = read_id(r), r.u16(), r.u8()
        return cls(node_id, tcp, version, _read_contacts(r, r.u16(), "BOOTSTRAP_RES"))


@dataclass(frozen=True, slots=True)
class _Hello:
    """HELLO_REQ/HELLO_RES: ``<node id 16><tcp port 2><version 1><tags>`` (SendMyDetails; the
    tags are TAG_SOURCEUPORT, the internal Kad port, and TAG_KADMISCOPTIONS, AddContact2)."""

    node_id: int
    tcp_port: int
    version: int
    tags: tuple[Tag, ...] = ()

    def encode(self) -> bytes:
        return (
            encode_id(self.node_id)
            + u16(self.tcp_port)
            + u8(self.version)
            + encode_kad_tags(self.tags)
        )

    @property
    def udp_port(self) -> int | None:
        return tag_int(self.tags, TAG_SOURCEUPORT)


@dataclass(frozen=True, slots=True)
class HelloReq(_Hello):
    opcode: ClassVar[int] = KADEMLIA2_HELLO_REQ


@dataclass(frozen=True, slots=True)
class HelloRes(_Hello):
    opcode: ClassVar[int] = KADEMLIA2_HELLO_RES


@dataclass(frozen=True, slots=True)
class HelloResAck:
    """KADEMLIA2_HELLO_RES_ACK: ``<node id 16><tags>`` (Process2HelloResponse)."""

    opcode: ClassVar[int] = KADEMLIA2_HELLO_RES_ACK
    node_id: int
    tags: tuple[Tag, ...] = ()

    def encode(self) -> bytes:
        return encode_id(self.node_id) + encode_kad_tags(self.tags)


@dataclass(frozen=True, slots=True)
class KadReq:
    """KADEMLIA2_REQ: ``<type 1><target 16><receiver id 16>``. The low 5 bits of type are the
    number of contacts wanted; a node answers only when the receiver id is its own
    (ProcessKademlia2Request)."""

    opcode: ClassVar[int] = KADEMLIA2_REQ
    wanted: int
    target: int
    receiver: int

    def encode(self) -> bytes:
        return u8(self.wanted) + encode_id(self.target) + encode_id(self.receiver)


@dataclass(frozen=True, slots=True)
class KadRes:
    """KADEMLIA2_RES: ``<target 16><count 1><contact 25>*``."""

    opcode: ClassVar[int] = KADEMLIA2_RES
    target: int
    contacts: tuple[KadContact, ...]

    def encode(self) -> bytes:
        if len(self.contacts) > 0xFF:
            raise ValueError("KADEMLIA2_RES holds at most 255 contacts")
        body = b"".join(c.encode() for c in self.contacts)
        return encode_id(self.target) + u8(len(self.contacts)) + body


@dataclass(frozen=True, slots=True)
class SearchSourceReq:
    """KADEMLIA2_SEARCH_SOURCE_REQ: ``<file id 16><start position 2><file size 8>``
    (CSearch::StorePacket; the node masks the start with 0x7FFF and a size of 0 matches any,
    CIndexed::SendValidSourceResult)."""

    opcode: ClassVar[int] = KADEMLIA2_SEARCH_SOURCE_REQ
    target: int
    start_position: int = 0
    file_size: int = 0

    def encode(self) -> bytes:
        return encode_id(self.target) + u16(self.start_position) + u64(self.file_size)


@dataclass(frozen=True, slots=True)
class SearchEntry:
    """One SEARCH_RES result: the answer id (for sources, the source's user hash as a CUInt128)
    and its tags."""

    answer: int
    tags: tuple[Tag, ...]

    def encode(self) -> bytes:
        return encode_id(self.answer) + encode_kad_tags(self.tags)


@dataclass(frozen=True, slots=True)
class SearchRes:
    """KADEMLIA2_SEARCH_RES: ``<sender id 16><target 16><count 2>(<answer 16><tags>)*``
    (CIndexed::SendValidSourceResult, at most 50 results a packet; Process2SearchResponse)."""

    opcode: ClassVar[int] = KADEMLIA2_SEARCH_RES
    sender_id: int
    target: int
    results: tuple[SearchEntry, ...]

    def encode(self) -> bytes:
        return (
            encode_id(self.sender_id)
            + encode_id(self.target)
            + u16(len(self.results))
            + b"".join(e.encode() for e in self.results)
        )


@dataclass(frozen=True, slots=True)
class PublishSourceReq:
    """KADEMLIA2_PUBLISH_SOURCE_REQ: ``<file id 16><source id 16><tags>``
    (SendPublishSourcePacket; the source id is the publisher's user hash)."""

    opcode: ClassVar[int] = KADEMLIA2_PUBLISH_SOURCE_REQ
    file_id: int
    source_id: int
    tags: tuple[Tag, ...]

    def encode(self) -> bytes:
        return encode_id(self.file_id) + encode_id(self.source_id) + encode_kad_tags(self.tags)


@dataclass(frozen=True, slots=True)
class PublishRes:
    """KADEMLIA2_PUBLISH_RES: ``<file id 16><load 1>[<options 1>]`` (Process2PublishResponse)."""

    opcode: ClassVar[int] = KADEMLIA2_PUBLISH_RES
    file_id: int
    load: int
    options: int | None = None

    def encode(self) -> bytes:
        tail = b"" if self.options is None else u8(self.options)
        return encode_id(self.file_id) + u8(self.load) + tail


@dataclass(frozen=True, slots=True)
class FirewalledReq:
    """KADEMLIA_FIREWALLED_REQ: ``<tcp port 2>``, "connect to my TCP port" (what aMule sends a
    hello partner of Kad version up to 6, CKademliaUDPListener::FirewalledCheck)."""

    opcode: ClassVar[int] = KADEMLIA_FIREWALLED_REQ
    tcp_port: int

    def encode(self) -> bytes:
        return u16(self.tcp_port)


@dataclass(frozen=True, slots=True)
class FirewalledReq2:
    """KADEMLIA_FIREWALLED2_REQ: ``<tcp port 2><user hash 16><connect options 1>``
    (FirewalledCheck, Kad version 7 and up). The user hash is the sender's eD2k user hash written
    as a CUInt128 (CPrefs' m_clientHash.SetValueBE(user hash), then WriteUInt128)."""

    opcode: ClassVar[int] = KADEMLIA_FIREWALLED2_REQ
    tcp_port: int
    user_id: int
    connect_options: int

    def encode(self) -> bytes:
        return u16(self.tcp_port) + encode_id(self.user_id) + u8(self.connect_options)

    @property
    def user_hash(self) -> bytes:
        return id_to_hash(self.user_id)


@dataclass(frozen=True, slots=True)
class Ping:
    opcode: ClassVar[int] = KADEMLIA2_PING

    def encode(self) -> bytes:
        return b""


@dataclass(frozen=True, slots=True)
class Pong:
    """KADEMLIA2_PONG: ``<udp port 2>``, the port the pinged node saw us on (Process2Ping)."""

    opcode: ClassVar[int] = KADEMLIA2_PONG
    udp_port: int

    def encode(self) -> bytes:
        return u16(self.udp_port)


@dataclass(frozen=True, slots=True)
class UnknownKad:
    """A well-framed packet with an opcode we do not handle (kept, not an error)."""

    opcode: int
    payload: bytes

    def encode(self) -> bytes:
        return self.payload


KadMessage = (
    BootstrapReq
    | BootstrapRes
    | HelloReq
    | HelloRes
    | HelloResAck
    | KadReq
    | KadRes
    | SearchSourceReq
    | SearchRes
    | PublishSourceReq
    | PublishRes
    | FirewalledReq
    | FirewalledReq2
    | Ping
    | Pong
    | UnknownKad
)


def _decode_payload(opcode: int, r: Reader) -> KadMessage:
    msg: KadMessage
    if opcode == KADEMLIA2_BOOTSTRAP_REQ:
        msg = BootstrapReq()
    elif opcode == KADEMLIA2_BOOTSTRAP_RES:
        return BootstrapRes.decode(r)
    elif opcode in (KADEMLIA2_HELLO_REQ, KADEMLIA2_HELLO_RES):
        node_id, tcp, version = read_id(r), r.u16(), r.u8()
        if version == 0:
            raise KadError("Kad version 0 (AddContact2 refuses it)")
        tags = read_kad_tags(r)
        cls = HelloReq if opcode == KADEMLIA2_HELLO_REQ else HelloRes
        msg = cls(node_id, tcp, version, tags)
    elif opcode == KADEMLIA2_HELLO_RES_ACK:
        msg = HelloResAck(read_id(r), read_kad_tags(r))
    elif opcode == KADEMLIA2_REQ:
        wanted = r.u8()
        msg = KadReq(wanted, read_id(r), read_id(r))
    elif opcode == KADEMLIA2_RES:
        target = read_id(r)
        return KadRes(target, _read_contacts(r, r.u8(), "KADEMLIA2_RES"))
    elif opcode == KADEMLIA2_SEARCH_SOURCE_REQ:
        msg = SearchSourceReq(read_id(r), r.u16(), r.u64())
    elif opcode == KADEMLIA2_SEARCH_RES:
        sender, target, count = read_id(r), read_id(r), r.u16()
        if count * 17 > r.remaining:  # each result: a 16-byte answer and a tag count
            raise KadError(f"SEARCH_RES count {count} cannot fit in {r.remaining} bytes")
        entries = tuple(SearchEntry(read_id(r), read_kad_tags(r)) for _ in range(count))
        msg = SearchRes(sender, target, entries)
    elif opcode == KADEMLIA2_PUBLISH_SOURCE_REQ:
        msg = PublishSourceReq(read_id(r), read_id(r), read_kad_tags(r))
    elif opcode == KADEMLIA2_PUBLISH_RES:
        file_id, load = read_id(r), r.u8()
        msg = PublishRes(file_id, load, r.u8() if r.remaining else None)
    elif opcode == KADEMLIA_FIREWALLED_REQ:
        msg = FirewalledReq(r.u16())
    elif opcode == KADEMLIA_FIREWALLED2_REQ:
        msg = FirewalledReq2(r.u16(), read_id(r), r.u8())
    elif opcode == KADEMLIA2_PING:
        msg = Ping()
    elif opcode == KADEMLIA2_PONG:
        msg = Pong(r.u16())
    else:
        return UnknownKad(opcode, r.rest())
    r.end(f"Kad opcode {opcode:#04x}")
    return msg


def decode_datagram(data: bytes) -> KadMessage:
    """One UDP datagram (0xE4 plain or 0xE5 packed) to a message; `KadError` on anything else."""
    if len(data) > MAX_DATAGRAM:
        raise KadError(f"datagram of {len(data)} bytes is over {MAX_DATAGRAM}")
    if len(data) < 2:
        raise KadError("a Kad packet has at least a protocol and an opcode byte")
    protocol, opcode, payload = data[0], data[1], bytes(data[2:])
    if protocol == OP_KADEMLIAPACKEDPROT:
        payload = _unpack(payload)
    elif protocol != OP_KADEMLIAHEADER:
        raise KadError(f"protocol byte {protocol:#04x} is not Kad (0xE4/0xE5)")
    try:
        return _decode_payload(opcode, Reader(payload))
    except KadError:
        raise
    except (Ed2kError, ValueError) as exc:  # a short read; or a value a dataclass refuses
        raise KadError(f"Kad opcode {opcode:#04x}: {exc}") from None


def _unpack(payload: bytes) -> bytes:
    limit = min(10 * len(payload) + 300, MAX_UNPACKED)
    d = zlib.decompressobj()
    try:
        out = d.decompress(payload, limit)
    except zlib.error as exc:
        raise KadError(f"packed Kad packet: {exc}") from None
    if d.unconsumed_tail or not d.eof:
        raise KadError(f"packed Kad packet does not unpack within {limit} bytes")
    return out


def encode_datagram(msg: KadMessage, *, pack: bool | None = None) -> bytes:
    """The datagram for `msg`. By default packed when over 200 bytes and smaller packed, like
    CKademliaUDPListener::SendPacket / CPacket::PackPacket; `pack` forces either form."""
    payload = msg.encode()
    if pack is None and len(payload) + 2 > 200:
        packed = zlib.compress(payload)
        if len(packed) < len(payload):
            return bytes([OP_KADEMLIAPACKEDPROT, msg.opcode]) + packed
    elif pack:
        return bytes([OP_KADEMLIAPACKEDPROT, msg.opcode]) + zlib.compress(payload)
    return bytes([OP_KADEMLIAHEADER, msg.opcode]) + payload
