"""eD2k client-to-server TCP protocol, sans-IO: the messages and the connecting side's session.

A client logs into an eD2k server, is given a client id (a *high* id is its IPv4 address as the
server saw it, a *low* id, below 2**24, means the server could not call it back), tells the server
the files it shares (OFFERFILES) and asks it who else shares a file (GETSOURCES), which the server
answers from what its other clients offered (FOUNDSOURCES). The obfuscation-aware variant
(GETSOURCES_OBFU / FOUNDSOURCES_OBFU) adds each source's crypt options and, when the source can
take obfuscated connections, its user hash: what the obfuscation keys are derived from
(`obfuscation.py`), so a peer that *requires* obfuscation can be dialled at all.

Sources (aMule github amule-project/amule; the client side of the protocol, written from the code
that reads and writes each layout; 2.3.3 and the current tree agree on everything used here):

- src/include/protocol/ed2k/Client2Server/TCP.h: the opcodes, the SRV_TCPFLG_* flags;
- src/include/tags/ClientTags.h: CT_SERVER_FLAGS and its SRVCAP_* bits;
- src/ServerConnect.cpp `ConnectionEstablished`: the LOGINREQUEST layout and tags;
- src/ServerSocket.cpp `ProcessPacket`: SERVERMESSAGE, IDCHANGE (4, 8, 12 or 20 bytes),
  SERVERSTATUS, SERVERIDENT, SERVERLIST, SEARCHRESULT, FOUNDSOURCES(_OBFU), REJECT;
  `PacketReceived`: packed (0xD4) server packets are inflated up to 250,000 bytes and then read
  as eDonkey packets;
- src/PartFile.cpp `AddSources`: the FOUNDSOURCES(_OBFU) entries. The crypt options byte has
  bit 0 = supports, bit 1 = requests, bit 2 = requires obfuscation, and the user hash follows
  when **bit 7 (0x80)** is set. TCP.h's comment says 0x08; aMule's code reads 0x80, and the code
  wins;
- src/DownloadQueue.cpp `ProcessLocalRequests`: GETSOURCES is ``<hash 16><size 4>`` or, for
  files of 4 GiB and more, ``<hash 16><0 4><size 8>``; GETSOURCES_OBFU (same body) when we
  support obfuscation and the server's TCP flags have SRV_TCPFLG_TCPOBFUSCATION; several
  requests go in one TCP frame (at most 15);
- src/SharedFileList.cpp `SendListToServer` and src/KnownFile.cpp `CreateOfferedFilePacket`:
  OFFERFILES entries ``<hash 16><id 4><port 2><tags>``. To a server with SRV_TCPFLG_COMPRESSION
  the id/port are the markers 0xFBFBFBFB/0xFBFB (complete file) or 0xFCFCFCFC/0xFCFC (partial)
  and the packet is zlib-packed; sizes of 4 GiB and more are FT_FILESIZE + FT_FILESIZE_HI;
- src/SearchList.cpp (`CSearchExprTarget`): the search tree of SEARCHREQUEST, in prefix order:
  ``0x00 <op>`` (0 AND, 1 OR, 2 NOT, each with two operands), ``0x01 <string>`` (a keyword),
  ``0x02 <string><tag name>`` (a meta tag value), ``0x03 <u32><op 1><tag name>`` and
  ``0x08 <u64><op 1><tag name>`` (numeric comparisons); src/SearchFile.cpp reads the answers.

`ServerObfuscationInitiator` is the connecting side of the obfuscated server connection
(src/EncryptedStreamSocket.cpp, "Basic Obfuscated Handshake Protocol Client <-> Server": a
Diffie-Hellman exchange over the fixed 768-bit `dh768_p`, then RC4 both ways).

Every decoder is total: any bytes give a message, `Unknown`, or a `ServerError` (an `Ed2kError`),
never another exception; counts are checked against the bytes present before anything is built.
Caps: one packet 2,000,000 bytes (framing), a packed server packet 250,000 bytes once inflated
(aMule's own limit for server packets), 1,024 files or results per OFFERFILES / SEARCHRESULT,
255 sources per FOUNDSOURCES (its count is one byte), a search tree of at most 64 nodes and depth
16 (aMule builds trees of a handful of nodes).
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import itertools
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Self, TypeAlias, cast

from peerwatch.protocols.bittorrent.mse import Rc4
from peerwatch.protocols.ed2k.framing import (
    MAX_PACKET_SIZE,
    FramingError,
    Packet,
    PacketDecoder,
    Protocol,
    encode_packet,
)
from peerwatch.protocols.ed2k.obfuscation import (
    MAGIC_REQUESTER,
    MAGIC_SERVER,
    MAGIC_SYNC,
    ObfuscationError,
)
from peerwatch.protocols.ed2k.tags import Tag, TagError, encode_tag_list, find, read_tag_list
from peerwatch.protocols.ed2k.wire import (
    Ed2kError,
    Reader,
    check_hash,
    string16,
    text,
    u8,
    u16,
    u32,
    u64,
)

MAX_SERVER_UNPACKED = 250_000  # aMule CServerSocket::PacketReceived: UnPackPacket(250000)
MAX_FILES = 1024  # files per OFFERFILES / results per SEARCHRESULT (aMule offers at most 200)
MAX_FOUND_SOURCES = 255  # FOUNDSOURCES' count is one byte
MAX_SEARCH_NODES = 64
MAX_SEARCH_DEPTH = 16
MAX_SERVERS = 255  # SERVERLIST's count is one byte
HIGHEST_LOW_ID = 1 << 24  # aMule NetworkFunctions.h HIGHEST_LOWID_ED2K_KAD: ids below are low

# CT_* login tags (aMule src/include/tags/ClientTags.h)
CT_NAME = 0x01
CT_VERSION = 0x11
CT_SERVER_FLAGS = 0x20
CT_EMULE_VERSION = 0xFB
EDONKEY_VERSION = 0x3C  # EDONKEYVERSION
SO_AMULE = 0x03

# CT_SERVER_FLAGS bits (ClientTags.h SRVCAP_*)
SRVCAP_ZLIB = 0x0001
SRVCAP_IP_IN_LOGIN = 0x0002
SRVCAP_AUXPORT = 0x0004
SRVCAP_NEWTAGS = 0x0008
SRVCAP_UNICODE = 0x0010
SRVCAP_LARGEFILES = 0x0100
SRVCAP_SUPPORTCRYPT = 0x0200
SRVCAP_REQUESTCRYPT = 0x0400
SRVCAP_REQUIRECRYPT = 0x0800

# Server TCP flags, the second word of IDCHANGE (Client2Server/TCP.h SRV_TCPFLG_*)
SRV_TCPFLG_COMPRESSION = 0x0001
SRV_TCPFLG_NEWTAGS = 0x0008
SRV_TCPFLG_UNICODE = 0x0010
SRV_TCPFLG_RELATEDSEARCH = 0x0040
SRV_TCPFLG_TYPETAGINTEGER = 0x0080
SRV_TCPFLG_LARGEFILES = 0x0100
SRV_TCPFLG_TCPOBFUSCATION = 0x0400

# Source crypt options (PartFile.cpp AddSources, BaseClient.cpp SetConnectOptions)
CRYPT_SUPPORTED = 0x01
CRYPT_REQUESTED = 0x02
CRYPT_REQUIRED = 0x04
CRYPT_HAS_USER_HASH = 0x80

# File tags (src/include/tags/FileTags.h) and server tags (ServerTags.h)
FT_FILENAME = 0x01
FT_FILESIZE = 0x02
FT_FILETYPE = 0x03
FT_SOURCES = 0x15
FT_COMPLETE_SOURCES = 0x30
FT_FILESIZE_HI = 0x3A
ST_SERVERNAME = 0x01
ST_DESCRIPTION = 0x0B

# OFFERFILES id/port markers sent to servers with SRV_TCPFLG_COMPRESSION (KnownFile.cpp)
FILE_COMPLETE_ID, FILE_COMPLETE_PORT = 0xFBFBFBFB, 0xFBFB
FILE_INCOMPLETE_ID, FILE_INCOMPLETE_PORT = 0xFCFCFCFC, 0xFCFC

# Numeric search operators (aMule SearchList.h ED2K_SEARCH_OP_*)
SEARCH_OP_EQUAL, SEARCH_OP_GREATER, SEARCH_OP_LESS = 0, 1, 2
SEARCH_OP_GREATER_EQUAL, SEARCH_OP_LESS_EQUAL, SEARCH_OP_NOTEQUAL = 3, 4, 5


class ServerError(Ed2kError):
    """The server (or, for the lab server, a client) broke the client-server protocol.
    `events` holds what was decoded before the fault, so that it can still be recorded."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.events: tuple[Event, ...] = ()


class ServerOp(enum.IntEnum):
    """Client <-> server TCP opcodes (protocol 0xE3), aMule OP_ClientToServerTCP."""

    LOGINREQUEST = 0x01
    REJECT = 0x05
    GETSERVERLIST = 0x14
    OFFERFILES = 0x15
    SEARCHREQUEST = 0x16
    DISCONNECT = 0x18
    GETSOURCES = 0x19
    SEARCH_USER = 0x1A
    CALLBACKREQUEST = 0x1C
    QUERY_MORE_RESULT = 0x21
    GETSOURCES_OBFU = 0x23
    SERVERLIST = 0x32
    SEARCHRESULT = 0x33
    SERVERSTATUS = 0x34
    CALLBACKREQUESTED = 0x35
    CALLBACK_FAIL = 0x36
    SERVERMESSAGE = 0x38
    IDCHANGE = 0x40
    SERVERIDENT = 0x41
    FOUNDSOURCES = 0x42
    USERS_LIST = 0x43
    FOUNDSOURCES_OBFU = 0x44


def id_to_ip(client_id: int) -> str:
    """A high id is the IPv4 address in network byte order read as a little-endian uint32
    (aMule Uint32toStringIP): 127.0.16.1 is 0x0110007F."""
    return str(ipaddress.IPv4Address(client_id.to_bytes(4, "little")))


def ip_to_id(ip: str) -> int:
    """The high id a server gives a client connecting from `ip` (the inverse of `id_to_ip`)."""
    return int.from_bytes(ipaddress.IPv4Address(ip).packed, "little")


def is_low_id(client_id: int) -> bool:
    return client_id < HIGHEST_LOW_ID


def frame(opcode: int, payload: bytes, *, pack: bool = False) -> bytes:
    """An eDonkey (0xE3) packet, or with `pack` a 0xD4 one when zlib makes it smaller (aMule
    CPacket::PackPacket keeps the plain eDonkey packet otherwise)."""
    if pack:
        packed = encode_packet(Protocol.EMULE, opcode, payload, pack=True)
        if packed[0] == Protocol.PACKED:
            return packed
    return encode_packet(Protocol.EDONKEY, opcode, payload)


class _Message:
    OPCODE: ClassVar[int]

    def payload(self) -> bytes:
        raise NotImplementedError

    def encode(self, *, pack: bool = False) -> bytes:
        """The framed packet; with `pack`, zlib-packed when smaller (aMule packs OFFERFILES to
        servers with SRV_TCPFLG_COMPRESSION, and servers pack big answers)."""
        return frame(self.OPCODE, self.payload(), pack=pack)

    @classmethod
    def parse(cls, r: Reader) -> Self:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class _Empty(_Message):
    def payload(self) -> bytes:
        return b""

    @classmethod
    def parse(cls, r: Reader) -> Self:
        r.end(cls.__name__)
        return cls()


@dataclass(frozen=True, slots=True)
class Reject(_Empty):
    """OP_REJECT: the server refused our last command."""

    OPCODE = ServerOp.REJECT


@dataclass(frozen=True, slots=True)
class GetServerList(_Empty):
    OPCODE = ServerOp.GETSERVERLIST


# --- login --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoginRequest(_Message):
    """OP_LOGINREQUEST: ``<user hash 16><client id 4><tcp port 2><tags>``; aMule sends CT_NAME,
    CT_VERSION, CT_SERVER_FLAGS and CT_EMULE_VERSION (ServerConnect.cpp)."""

    OPCODE = ServerOp.LOGINREQUEST
    user_hash: bytes
    client_id: int
    tcp_port: int
    tags: tuple[Tag, ...]

    def __post_init__(self) -> None:
        check_hash(self.user_hash, "user hash")

    @classmethod
    def build(
        cls,
        user_hash: bytes,
        *,
        name: str = "peerwatch",
        tcp_port: int = 4662,
        client_id: int = 0,
        server_flags: int = (
            SRVCAP_ZLIB
            | SRVCAP_AUXPORT
            | SRVCAP_NEWTAGS
            | SRVCAP_UNICODE
            | SRVCAP_LARGEFILES
            | SRVCAP_SUPPORTCRYPT
            | SRVCAP_REQUESTCRYPT
        ),
        version: tuple[int, int, int] = (0, 1, 0),
        compat_client: int = 0xFF,
    ) -> LoginRequest:
        major, minor, update = version
        return cls(
            user_hash,
            client_id,
            tcp_port,
            (
                Tag.string(CT_NAME, name),
                Tag.uint32(CT_VERSION, EDONKEY_VERSION),
                Tag.uint32(CT_SERVER_FLAGS, server_flags),
                Tag.uint32(
                    CT_EMULE_VERSION, compat_client << 24 | major << 17 | minor << 10 | update << 7
                ),
            ),
        )

    def _int(self, name: int) -> int | None:
        tag = find(self.tags, name)
        return tag.as_int() if tag is not None else None

    @property
    def name(self) -> str | None:
        tag = find(self.tags, CT_NAME)
        raw = tag.as_bytes() if tag is not None else None
        return text(raw) if raw is not None else None

    @property
    def server_flags(self) -> int:
        return self._int(CT_SERVER_FLAGS) or 0

    @property
    def emule_version(self) -> int | None:
        return self._int(CT_EMULE_VERSION)

    @property
    def crypt_options(self) -> int:
        """The FOUNDSOURCES_OBFU crypt byte a server gives this client as a source."""
        flags = self.server_flags
        return (
            (CRYPT_SUPPORTED if flags & SRVCAP_SUPPORTCRYPT else 0)
            | (CRYPT_REQUESTED if flags & SRVCAP_REQUESTCRYPT else 0)
            | (CRYPT_REQUIRED if flags & SRVCAP_REQUIRECRYPT else 0)
        )

    def payload(self) -> bytes:
        return (
            self.user_hash + u32(self.client_id) + u16(self.tcp_port) + encode_tag_list(self.tags)
        )

    @classmethod
    def parse(cls, r: Reader) -> Self:
        h, cid, port = r.hash16(), r.u32(), r.u16()
        tags = read_tag_list(r)
        r.end("login request")
        return cls(h, cid, port, tags)


@dataclass(frozen=True, slots=True)
class ServerMessage(_Message):
    """OP_SERVERMESSAGE: ``<len 2><text>``, one or more lines (aMule splits on CR/LF)."""

    OPCODE = ServerOp.SERVERMESSAGE
    message: bytes

    def payload(self) -> bytes:
        return string16(self.message)

    @classmethod
    def parse(cls, r: Reader) -> Self:
        msg = r.string16()
        r.end("server message")
        return cls(msg)

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(line for line in text(self.message).replace("\r", "\n").split("\n") if line)


@dataclass(frozen=True, slots=True)
class IdChange(_Message):
    """OP_IDCHANGE: ``<id 4>[<tcp flags 4>[<aux port 4>[<reported ip 4><obfuscation port 4>]]]``
    (aMule ServerSocket.cpp reads each part when the packet is long enough). Bytes after the
    parts aMule reads are kept in `extra` so nothing the server sent is lost."""

    OPCODE = ServerOp.IDCHANGE
    client_id: int
    tcp_flags: int | None = None
    aux_port: int | None = None
    reported_ip: int | None = None
    obfuscation_port: int | None = None
    extra: bytes = b""

    def __post_init__(self) -> None:
        parts = (self.tcp_flags, self.aux_port, self.reported_ip)
        for earlier, later in itertools.pairwise(parts):
            if earlier is None and later is not None:
                raise ValueError("IDCHANGE's optional words come in order")
        if (self.reported_ip is None) != (self.obfuscation_port is None):
            raise ValueError("reported ip and obfuscation port come together")
        if self.extra and self.reported_ip is None:
            raise ValueError("extra bytes only after the last word")

    @property
    def low_id(self) -> bool:
        return is_low_id(self.client_id)

    @property
    def supports_obfuscated_sources(self) -> bool:
        return bool((self.tcp_flags or 0) & SRV_TCPFLG_TCPOBFUSCATION)

    def payload(self) -> bytes:
        out = u32(self.client_id)
        for word in (self.tcp_flags, self.aux_port, self.reported_ip, self.obfuscation_port):
            if word is not None:
                out += u32(word)
        return out + self.extra

    @classmethod
    def parse(cls, r: Reader) -> Self:
        cid = r.u32()
        flags = r.u32() if r.remaining >= 4 else None
        aux = r.u32() if flags is not None and r.remaining >= 4 else None
        ip = port = None
        if aux is not None and r.remaining >= 8:
            ip, port = r.u32(), r.u32()
        extra = r.rest()
        if extra and ip is None:
            # aMule ignores a short tail; we refuse it so that decode/encode stays exact.
            raise ServerError(f"IDCHANGE has {len(extra)} stray bytes")
        return cls(cid, flags, aux, ip, port, extra)


@dataclass(frozen=True, slots=True)
class ServerStatus(_Message):
    """OP_SERVERSTATUS: ``<users 4><files 4>`` (aMule reads 8 bytes and ignores the rest; "some
    status packets have a different size")."""

    OPCODE = ServerOp.SERVERSTATUS
    users: int
    files: int
    extra: bytes = b""

    def payload(self) -> bytes:
        return u32(self.users) + u32(self.files) + self.extra

    @classmethod
    def parse(cls, r: Reader) -> Self:
        return cls(r.u32(), r.u32(), r.rest())


@dataclass(frozen=True, slots=True)
class ServerIdent(_Message):
    """OP_SERVERIDENT: ``<hash 16><ip 4><port 2><tags>``; ST_SERVERNAME and ST_DESCRIPTION are
    the tags aMule reads."""

    OPCODE = ServerOp.SERVERIDENT
    server_hash: bytes
    ip: int
    port: int
    tags: tuple[Tag, ...] = ()

    def __post_init__(self) -> None:
        check_hash(self.server_hash, "server hash")

    def _text(self, name: int) -> str | None:
        tag = find(self.tags, name)
        raw = tag.as_bytes() if tag is not None else None
        return text(raw) if raw is not None else None

    @property
    def name(self) -> str | None:
        return self._text(ST_SERVERNAME)

    @property
    def description(self) -> str | None:
        return self._text(ST_DESCRIPTION)

    def payload(self) -> bytes:
        return self.server_hash + u32(self.ip) + u16(self.port) + encode_tag_list(self.tags)

    @classmethod
    def parse(cls, r: Reader) -> Self:
        h, ip, port = r.hash16(), r.u32(), r.u16()
        tags = read_tag_list(r)
        r.end("server ident")
        return cls(h, ip, port, tags)


@dataclass(frozen=True, slots=True)
class ServerList(_Message):
    """OP_SERVERLIST: ``<count 1>(<ip 4><port 2>)[count]``; `servers` as (ip text, port)."""

    OPCODE = ServerOp.SERVERLIST
    servers: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        if len(self.servers) > MAX_SERVERS:
            raise ValueError("at most 255 servers")

    def payload(self) -> bytes:
        out = [u8(len(self.servers))]
        for ip, port in self.servers:
            out.append(ipaddress.IPv4Address(ip).packed + u16(port))
        return b"".join(out)

    @classmethod
    def parse(cls, r: Reader) -> Self:
        count = r.u8()
        if count * 6 != r.remaining:
            raise ServerError(f"{count} servers do not fill {r.remaining} bytes")
        servers = []
        for _ in range(count):
            ip = str(ipaddress.IPv4Address(r.take(4)))
            servers.append((ip, r.u16()))
        return cls(tuple(servers))


# --- files: offers and search results -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of OFFERFILES or SEARCHRESULT: ``<hash 16><id 4><port 2><tags>``."""

    file_hash: bytes
    client_id: int
    port: int
    tags: tuple[Tag, ...]

    def __post_init__(self) -> None:
        check_hash(self.file_hash, "file hash")

    @classmethod
    def build(
        cls,
        file_hash: bytes,
        name: str,
        size: int,
        *,
        client_id: int = 0,
        port: int = 0,
        extra: tuple[Tag, ...] = (),
    ) -> FileEntry:
        """Name and size the way aMule writes them to a server (a 64-bit size as two uint32
        tags, FT_FILESIZE and FT_FILESIZE_HI)."""
        tags = [Tag.string(FT_FILENAME, name), Tag.uint32(FT_FILESIZE, size & 0xFFFFFFFF)]
        if size >> 32:
            tags.append(Tag.uint32(FT_FILESIZE_HI, size >> 32))
        return cls(file_hash, client_id, port, (*tags, *extra))

    @property
    def name(self) -> str | None:
        tag = find(self.tags, FT_FILENAME)
        raw = tag.as_bytes() if tag is not None else None
        return text(raw) if raw is not None else None

    @property
    def size(self) -> int | None:
        lo, hi = find(self.tags, FT_FILESIZE), find(self.tags, FT_FILESIZE_HI)
        low = lo.as_int() if lo is not None else None
        if low is None:
            return None
        high = hi.as_int() if hi is not None else None
        return low | (high or 0) << 32

    @property
    def complete(self) -> bool | None:
        """From the markers aMule writes to compression-capable servers; None otherwise."""
        if (self.client_id, self.port) == (FILE_COMPLETE_ID, FILE_COMPLETE_PORT):
            return True
        if (self.client_id, self.port) == (FILE_INCOMPLETE_ID, FILE_INCOMPLETE_PORT):
            return False
        return None

    def encode(self) -> bytes:
        return self.file_hash + u32(self.client_id) + u16(self.port) + encode_tag_list(self.tags)

    @classmethod
    def read(cls, r: Reader) -> FileEntry:
        h, cid, port = r.hash16(), r.u32(), r.u16()
        return cls(h, cid, port, read_tag_list(r))


def _read_entries(r: Reader, what: str) -> tuple[FileEntry, ...]:
    count = r.u32()
    if count > MAX_FILES:
        raise ServerError(f"{what}: {count} files is over {MAX_FILES}")
    if count * 26 > r.remaining:  # hash, id, port, tag count: 26 bytes at least each
        raise ServerError(f"{what}: {count} files cannot fit in {r.remaining} bytes")
    return tuple(FileEntry.read(r) for _ in range(count))


@dataclass(frozen=True, slots=True)
class OfferFiles(_Message):
    """OP_OFFERFILES: ``<count 4><FileEntry>[count]`` (an empty list is aMule's keep-alive)."""

    OPCODE = ServerOp.OFFERFILES
    files: tuple[FileEntry, ...]

    def payload(self) -> bytes:
        return u32(len(self.files)) + b"".join(f.encode() for f in self.files)

    @classmethod
    def parse(cls, r: Reader) -> Self:
        files = _read_entries(r, "offer files")
        r.end("offer files")
        return cls(files)


@dataclass(frozen=True, slots=True)
class SearchResult(_Message):
    """OP_SEARCHRESULT: ``<count 4><FileEntry>[count]`` and, from some servers, ``<more 1>``
    (aMule SearchList.cpp reads a trailing 0/1 byte as "more results")."""

    OPCODE = ServerOp.SEARCHRESULT
    files: tuple[FileEntry, ...]
    more: int | None = None

    def payload(self) -> bytes:
        out = u32(len(self.files)) + b"".join(f.encode() for f in self.files)
        return out + (u8(self.more) if self.more is not None else b"")

    @classmethod
    def parse(cls, r: Reader) -> Self:
        files = _read_entries(r, "search result")
        more = r.u8() if r.remaining == 1 else None
        r.end("search result")
        return cls(files, more)


# --- sources ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetSources(_Message):
    """OP_GETSOURCES / OP_GETSOURCES_OBFU: ``<hash 16>``, ``<hash 16><size 4>`` or, for 4 GiB
    and more, ``<hash 16><0 4><size 8>`` (DownloadQueue.cpp). `size` None: the 16-byte form."""

    OPCODE = ServerOp.GETSOURCES
    file_hash: bytes
    size: int | None = None
    obfuscated: bool = False  # OP_GETSOURCES_OBFU: answer with crypt options and user hashes

    def __post_init__(self) -> None:
        check_hash(self.file_hash, "file hash")
        if self.size is not None and not 0 <= self.size < 1 << 64:
            raise ValueError("file size out of range")

    def encode(self, *, pack: bool = False) -> bytes:
        op = ServerOp.GETSOURCES_OBFU if self.obfuscated else ServerOp.GETSOURCES
        return frame(op, self.payload(), pack=pack)

    def payload(self) -> bytes:
        if self.size is None:
            return self.file_hash
        if self.size > 0xFFFFFFFF:
            return self.file_hash + u32(0) + u64(self.size)
        return self.file_hash + u32(self.size)

    @classmethod
    def read(cls, r: Reader, *, obfuscated: bool) -> GetSources:
        h = r.hash16()
        size: int | None = None
        if r.remaining == 4:
            size = r.u32()
        elif r.remaining == 12:
            if r.u32() != 0:
                raise ServerError("64-bit GETSOURCES must have 0 in its 32-bit size")
            size = r.u64()
        r.end("get sources")
        return cls(h, size, obfuscated)


@dataclass(frozen=True, slots=True)
class FoundSource:
    """One source of FOUNDSOURCES(_OBFU). `client_id` is the ed2k id: a high id is the source's
    IPv4 address (`id_to_ip`), a low id (< 2**24) a firewalled client with no dialable address.
    `crypt_options`/`user_hash` only in the OBFU form."""

    client_id: int
    port: int
    crypt_options: int | None = None
    user_hash: bytes | None = None

    def __post_init__(self) -> None:
        if self.user_hash is not None:
            check_hash(self.user_hash, "source user hash")
            if self.crypt_options is None or not self.crypt_options & CRYPT_HAS_USER_HASH:
                raise ValueError("a user hash needs crypt options with bit 0x80")
        elif self.crypt_options is not None and self.crypt_options & CRYPT_HAS_USER_HASH:
            raise ValueError("crypt options bit 0x80 needs the user hash")

    @property
    def low_id(self) -> bool:
        return is_low_id(self.client_id)

    @property
    def ip(self) -> str | None:
        return None if self.low_id else id_to_ip(self.client_id)

    def encode(self, obfuscated: bool) -> bytes:
        out = u32(self.client_id) + u16(self.port)
        if obfuscated:
            out += u8(self.crypt_options or 0) + (self.user_hash or b"")
        elif self.crypt_options is not None:
            raise ValueError("plain FOUNDSOURCES carries no crypt options")
        return out


@dataclass(frozen=True, slots=True)
class FoundSources(_Message):
    """OP_FOUNDSOURCES: ``<hash 16><count 1>(<id 4><port 2>)[count]``; OP_FOUNDSOURCES_OBFU adds
    ``<crypt options 1>`` and, when its bit 7 is set, ``<user hash 16>`` to each source
    (PartFile.cpp AddSources)."""

    OPCODE = ServerOp.FOUNDSOURCES
    file_hash: bytes
    sources: tuple[FoundSource, ...]
    obfuscated: bool = False

    def __post_init__(self) -> None:
        check_hash(self.file_hash, "file hash")
        if len(self.sources) > MAX_FOUND_SOURCES:
            raise ValueError("at most 255 sources per answer")

    def encode(self, *, pack: bool = False) -> bytes:
        op = ServerOp.FOUNDSOURCES_OBFU if self.obfuscated else ServerOp.FOUNDSOURCES
        return frame(op, self.payload(), pack=pack)

    def payload(self) -> bytes:
        body = b"".join(s.encode(self.obfuscated) for s in self.sources)
        return self.file_hash + u8(len(self.sources)) + body

    @classmethod
    def read(cls, r: Reader, *, obfuscated: bool) -> FoundSources:
        h, count = r.hash16(), r.u8()
        if count * (7 if obfuscated else 6) > r.remaining:
            raise ServerError(f"{count} sources cannot fit in {r.remaining} bytes")
        sources = []
        for _ in range(count):
            cid, port = r.u32(), r.u16()
            if obfuscated:
                crypt = r.u8()
                uh = r.hash16() if crypt & CRYPT_HAS_USER_HASH else None
                sources.append(FoundSource(cid, port, crypt, uh))
            else:
                sources.append(FoundSource(cid, port))
        r.end("found sources")
        return cls(h, tuple(sources), obfuscated)


# --- search -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchBool:
    """``0x00 <op>`` then two operands: op 0 AND, 1 OR, 2 NOT (left AND NOT right)."""

    op: int
    left: SearchNode
    right: SearchNode


@dataclass(frozen=True, slots=True)
class SearchKeyword:
    """``0x01 <string>``: a keyword matched against file names."""

    value: bytes


@dataclass(frozen=True, slots=True)
class SearchMeta:
    """``0x02 <string><tag name>``: a string meta tag (file type, extension) equals `value`."""

    value: bytes
    tag: int | bytes


@dataclass(frozen=True, slots=True)
class SearchNumeric:
    """``0x03 <u32>`` or ``0x08 <u64>``, then ``<op 1><tag name>``: a numeric comparison."""

    value: int
    op: int
    tag: int | bytes
    wide: bool = False  # the 0x08 (64-bit) form


SearchNode: TypeAlias = SearchBool | SearchKeyword | SearchMeta | SearchNumeric


def keyword_query(*words: str) -> SearchNode:
    """A simple keyword search: every word must be in the name (AND), as aMule builds it."""
    if not words:
        raise ValueError("at least one keyword")
    node: SearchNode = SearchKeyword(words[-1].encode("utf-8"))
    for word in reversed(words[:-1]):
        node = SearchBool(0, SearchKeyword(word.encode("utf-8")), node)
    return node


def _tag_name(tag: int | bytes) -> bytes:
    return u16(1) + u8(tag) if isinstance(tag, int) else string16(tag)


def _encode_node(node: SearchNode) -> bytes:
    if isinstance(node, SearchBool):
        return u8(0) + u8(node.op) + _encode_node(node.left) + _encode_node(node.right)
    if isinstance(node, SearchKeyword):
        return u8(1) + string16(node.value)
    if isinstance(node, SearchMeta):
        return u8(2) + string16(node.value) + _tag_name(node.tag)
    if node.wide:
        return u8(8) + u64(node.value) + u8(node.op) + _tag_name(node.tag)
    return u8(3) + u32(node.value) + u8(node.op) + _tag_name(node.tag)


class _TreeReader:
    def __init__(self, r: Reader) -> None:
        self.r = r
        self.nodes = 0

    def node(self, depth: int) -> SearchNode:
        self.nodes += 1
        if self.nodes > MAX_SEARCH_NODES:
            raise ServerError(f"search tree has more than {MAX_SEARCH_NODES} nodes")
        if depth > MAX_SEARCH_DEPTH:
            raise ServerError(f"search tree is deeper than {MAX_SEARCH_DEPTH}")
        r = self.r
        kind = r.u8()
        if kind == 0:
            op = r.u8()
            if op > 2:
                raise ServerError(f"unknown search operator {op}")
            return SearchBool(op, self.node(depth + 1), self.node(depth + 1))
        if kind == 1:
            return SearchKeyword(r.string16())
        if kind == 2:
            return SearchMeta(r.string16(), self.tag())
        if kind in (3, 8):
            value = r.u32() if kind == 3 else r.u64()
            return SearchNumeric(value, r.u8(), self.tag(), wide=kind == 8)
        raise ServerError(f"unknown search node type {kind:#04x}")

    def tag(self) -> int | bytes:
        name = self.r.string16()
        return name[0] if len(name) == 1 else name


@dataclass(frozen=True, slots=True)
class SearchRequest(_Message):
    """OP_SEARCHREQUEST: one search tree (aMule SearchList.cpp)."""

    OPCODE = ServerOp.SEARCHREQUEST
    query: SearchNode

    def payload(self) -> bytes:
        return _encode_node(self.query)

    @classmethod
    def parse(cls, r: Reader) -> Self:
        query = _TreeReader(r).node(0)
        r.end("search request")
        return cls(query)


@dataclass(frozen=True, slots=True)
class Unknown:
    """A packet whose opcode we do not model; kept whole so that it can be recorded."""

    protocol: Protocol
    opcode: int
    payload: bytes

    def encode(self) -> bytes:
        return encode_packet(self.protocol, self.opcode, self.payload)


ServerMessageType: TypeAlias = (
    LoginRequest
    | Reject
    | GetServerList
    | ServerMessage
    | IdChange
    | ServerStatus
    | ServerIdent
    | ServerList
    | OfferFiles
    | SearchResult
    | SearchRequest
    | GetSources
    | FoundSources
    | Unknown
)

_Parser = Callable[[Reader], ServerMessageType]
_PARSERS: dict[int, _Parser] = {
    cls.OPCODE: cast(_Parser, cls.parse)
    for cls in (
        LoginRequest,
        Reject,
        GetServerList,
        ServerMessage,
        IdChange,
        ServerStatus,
        ServerIdent,
        ServerList,
        OfferFiles,
        SearchResult,
        SearchRequest,
    )
}
_PARSERS[ServerOp.GETSOURCES] = lambda r: GetSources.read(r, obfuscated=False)
_PARSERS[ServerOp.GETSOURCES_OBFU] = lambda r: GetSources.read(r, obfuscated=True)
_PARSERS[ServerOp.FOUNDSOURCES] = lambda r: FoundSources.read(r, obfuscated=False)
_PARSERS[ServerOp.FOUNDSOURCES_OBFU] = lambda r: FoundSources.read(r, obfuscated=True)


def decode(packet: Packet) -> ServerMessageType:
    """The message in one client-server packet. A packed packet is an eDonkey one once inflated
    (aMule CServerSocket::PacketReceived); a plain eMule (0xC5) packet is not a server message
    and comes back as `Unknown`. Raises `ServerError` (an `Ed2kError`) and nothing else."""
    if packet.protocol is not Protocol.EDONKEY and not packet.packed:
        return Unknown(packet.protocol, packet.opcode, packet.payload)
    parser = _PARSERS.get(packet.opcode)
    if parser is None:
        return Unknown(packet.protocol, packet.opcode, packet.payload)
    try:
        return parser(Reader(packet.payload))
    except ServerError:
        raise
    except (Ed2kError, TagError, ValueError) as exc:
        # a short read, a bad tag, or a field a constructor refuses
        raise ServerError(f"server opcode {packet.opcode:#04x}: {exc}") from None


def server_decoder() -> PacketDecoder:
    """A framing decoder with the caps of aMule's server socket."""
    return PacketDecoder(max_packet_size=MAX_PACKET_SIZE, max_unpacked_size=MAX_SERVER_UNPACKED)


# --- the connecting side's session --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoggedIn:
    """IDCHANGE: the server accepted us. A low id means it could not call us back."""

    client_id: int
    tcp_flags: int
    message: IdChange = field(repr=False)

    @property
    def low_id(self) -> bool:
        return is_low_id(self.client_id)


@dataclass(frozen=True, slots=True)
class MessageReceived:
    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StatusReceived:
    users: int
    files: int


@dataclass(frozen=True, slots=True)
class IdentReceived:
    server_hash: bytes
    name: str | None
    description: str | None


@dataclass(frozen=True, slots=True)
class SourcesFound:
    """FOUNDSOURCES(_OBFU) about a file we asked for (the server's *claim* that these clients
    offered it)."""

    file_hash: bytes
    sources: tuple[FoundSource, ...]
    obfuscated: bool


@dataclass(frozen=True, slots=True)
class SourcesUnanswered:
    """The server did not answer about these files before the deadline (servers send nothing
    for a file they know no source for)."""

    file_hashes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SearchAnswered:
    files: tuple[FileEntry, ...]
    more: int | None


@dataclass(frozen=True, slots=True)
class ServersListed:
    servers: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Rejected:
    """OP_REJECT: the server refused our last command."""


@dataclass(frozen=True, slots=True)
class Unhandled:
    message: ServerMessageType


Event: TypeAlias = (
    LoggedIn
    | MessageReceived
    | StatusReceived
    | IdentReceived
    | SourcesFound
    | SourcesUnanswered
    | SearchAnswered
    | ServersListed
    | Rejected
    | Unhandled
)


_CLIENT_MESSAGES = (LoginRequest, OfferFiles, GetSources, SearchRequest, GetServerList)


class SessionState(enum.Enum):
    NEW = "new"
    AWAITING_ID = "awaiting id"
    CONNECTED = "connected"
    FAILED = "failed"


class _Input(enum.Enum):
    START = "start"
    ID_CHANGE = "id change"
    ERROR = "error"


TRANSITIONS: dict[tuple[SessionState, _Input], SessionState] = {
    (SessionState.NEW, _Input.START): SessionState.AWAITING_ID,
    (SessionState.AWAITING_ID, _Input.ID_CHANGE): SessionState.CONNECTED,
    # a server may send IDCHANGE again (a later callback result); the id is updated
    (SessionState.CONNECTED, _Input.ID_CHANGE): SessionState.CONNECTED,
    **{
        (s, _Input.ERROR): SessionState.FAILED for s in SessionState if s is not SessionState.FAILED
    },
}


@dataclass(frozen=True, slots=True)
class SessionConfig:
    login_timeout: float = 25.0  # seconds for IDCHANGE (aMule CONSERVTIMEOUT, 25 s)
    answer_timeout: float = 10.0  # seconds for a batch of source answers (ours)
    batch_size: int = 15  # GETSOURCES per TCP frame (aMule iMaxFilesPerTcpFrame)
    use_obfuscated_sources: bool = True  # GETSOURCES_OBFU when the server has the TCP flag


@dataclass(frozen=True, slots=True)
class FileQuery:
    file_hash: bytes
    size: int | None = None


class ServerSession:
    """The connecting side of one server connection: login, then source requests in batches.

    ``start(now)`` queues LOGINREQUEST; events come from ``receive(bytes, now)``; bytes to send
    accumulate for ``data_to_send()``. ``ask_sources(files, now)`` may be called at any time:
    requests wait for the IDCHANGE (the server decides GETSOURCES_OBFU support in its TCP
    flags), then go `batch_size` per write, the next batch once every file of the previous one
    was answered or `answer_timeout` passed (``expire(now)`` reports the silent ones).
    ``deadline`` is when the driver should call ``expire`` (or give up, before login)."""

    def __init__(self, login: LoginRequest, config: SessionConfig | None = None) -> None:
        self.login = login
        self.config = config or SessionConfig()
        self._state = SessionState.NEW
        self._decoder = server_decoder()
        self._out = bytearray()
        self._queue: list[FileQuery] = []
        self._pending: dict[bytes, float] = {}  # file hash -> when asked
        self._batch_deadline: float | None = None
        self._login_deadline: float | None = None
        self.client_id: int | None = None
        self.tcp_flags = 0

    @property
    def state(self) -> SessionState:
        return self._state

    @property
    def idle(self) -> bool:
        """Logged in and nothing asked is still waiting for an answer."""
        return self._state is SessionState.CONNECTED and not self._queue and not self._pending

    @property
    def deadline(self) -> float | None:
        if self._state is SessionState.AWAITING_ID:
            return self._login_deadline
        if self._state is SessionState.CONNECTED and self._pending:
            return self._batch_deadline
        return None

    @property
    def obfuscated_sources(self) -> bool:
        return self.config.use_obfuscated_sources and bool(
            self.tcp_flags & SRV_TCPFLG_TCPOBFUSCATION
        )

    def _go(self, what: _Input) -> None:
        self._state = TRANSITIONS[(self._state, what)]

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def start(self, now: float) -> None:
        self._go(_Input.START)
        self._out += self.login.encode()
        self._login_deadline = now + self.config.login_timeout

    def ask_sources(self, files: Sequence[FileQuery], now: float) -> None:
        if self._state is SessionState.FAILED:
            raise RuntimeError("the session failed")
        self._queue.extend(files)
        self._next_batch(now)

    def _next_batch(self, now: float) -> None:
        if self._state is not SessionState.CONNECTED or self._pending or not self._queue:
            return
        batch, self._queue = (
            self._queue[: self.config.batch_size],
            self._queue[self.config.batch_size :],
        )
        for f in batch:
            self._out += GetSources(f.file_hash, f.size, self.obfuscated_sources).encode()
            self._pending[f.file_hash] = now
        self._batch_deadline = now + self.config.answer_timeout

    def expire(self, now: float) -> list[Event]:
        """Files whose answer is overdue become `SourcesUnanswered`; the next batch goes out."""
        if (
            self._state is not SessionState.CONNECTED
            or self._batch_deadline is None
            or now < self._batch_deadline
            or not self._pending
        ):
            return []
        missing = tuple(self._pending)
        self._pending.clear()
        self._next_batch(now)
        return [SourcesUnanswered(missing)]

    def receive(self, data: bytes, now: float) -> list[Event]:
        if self._state is SessionState.FAILED:
            raise ServerError("the session already failed")
        if self._state is SessionState.NEW:
            raise RuntimeError("call start() before receive()")
        events: list[Event] = []
        try:
            fault: FramingError | None = None
            try:
                packets = self._decoder.feed(data)
            except FramingError as exc:
                packets, fault = list(exc.packets), exc
            for packet in packets:
                self._handle(decode(packet), events, now)
            if fault is not None:
                raise fault
        except Ed2kError as exc:
            self._go(_Input.ERROR)
            error = exc if isinstance(exc, ServerError) else ServerError(str(exc))
            error.events = tuple(events)
            raise error from None
        return events

    def _handle(self, msg: ServerMessageType, events: list[Event], now: float) -> None:
        if isinstance(msg, IdChange):
            if msg.client_id == 0:
                # aMule ServerSocket.cpp: id 0 is the server giving up on us ("rejected our
                # login (no client ID assigned)").
                raise ServerError("the server assigned no client id (id 0)")
            self.client_id = msg.client_id
            self.tcp_flags = msg.tcp_flags or 0
            self._go(_Input.ID_CHANGE)
            events.append(LoggedIn(msg.client_id, self.tcp_flags, msg))
            self._next_batch(now)
        elif isinstance(msg, ServerMessage):
            events.append(MessageReceived(msg.lines))
        elif isinstance(msg, ServerStatus):
            events.append(StatusReceived(msg.users, msg.files))
        elif isinstance(msg, ServerIdent):
            events.append(IdentReceived(msg.server_hash, msg.name, msg.description))
        elif isinstance(msg, FoundSources):
            if self._state is not SessionState.CONNECTED:
                raise ServerError("sources before the IDCHANGE")
            if msg.file_hash not in self._pending:
                # aMule drops "Sources received for unknown file"; so do we (not an error:
                # a late answer after our deadline is harmless).
                events.append(Unhandled(msg))
                return
            del self._pending[msg.file_hash]
            events.append(SourcesFound(msg.file_hash, msg.sources, msg.obfuscated))
            self._next_batch(now)
        elif isinstance(msg, SearchResult):
            events.append(SearchAnswered(msg.files, msg.more))
        elif isinstance(msg, ServerList):
            events.append(ServersListed(msg.servers))
        elif isinstance(msg, Reject):
            events.append(Rejected())
        elif isinstance(
            msg, LoginRequest | OfferFiles | GetSources | SearchRequest | GetServerList
        ):
            raise ServerError(f"the server sent a client's message ({type(msg).__name__})")
        else:
            events.append(Unhandled(msg))


# --- obfuscated server connections (connecting side) --------------------------------------------

# dh768_p of aMule EncryptedStreamSocket.cpp; the generator is 2
DH768_P = int.from_bytes(
    bytes.fromhex(
        "F2BF52C55F587ADD5371A936E886EB3C6217A33EC34CB40DC73A41A643AFFCE721FC286366535BDB"
        "CE259F2286DA4A91B207CBAA5255D4F61CCEAED45AD5E0747DF7781828105F340F762387F88B2891"
        "42FB42688F05150F548B5F436AF70DF3"
    ),
    "big",
)
DH_PRIME_BYTES = 96
DH_EXPONENT_BYTES = 16  # DHAGREEMENT_A_BITS = 128
_PLAIN_MARKERS = frozenset({Protocol.EDONKEY, Protocol.EMULE, Protocol.PACKED})


def dh_stream_key(secret: int, magic: int) -> bytes:
    """RC4 key of one direction: MD5(<S 96, big-endian><magic 1>) (EncryptedStreamSocket.cpp)."""
    raw = secret.to_bytes(DH_PRIME_BYTES, "big") + bytes([magic])
    return hashlib.md5(raw, usedforsecurity=False).digest()  # the derivation aMule uses


class ServerObfuscationInitiator:
    """aMule's "Basic Obfuscated Handshake Protocol Client <-> Server", connecting side, sans-IO
    (EncryptedStreamSocket.cpp `StartNegotiation` ECS_PENDING_SERVER and `Negotiate`
    ONS_BASIC_SERVER_*)::

        us:     <marker 1><g^a 96><pad len 1><pad>                            (in clear)
        server: <g^b 96> (in clear), RC4: <magic 4><methods 1><preferred 1><pad len 1><pad>
        us:     RC4: <magic 4><method 0 1><pad len 1><pad>, sent with our first packet

    S = (g^b)^a mod dh768_p; we send with RC4 keyed MD5(S + 34), receive with MD5(S + 203),
    1024 keystream bytes discarded. ``start()`` gives the first bytes; ``receive(bytes)`` the
    decrypted payload once established (an `ObfuscationError` on a bad answer); ``encrypt`` may
    be called once established, and its first call carries our delayed answer."""

    def __init__(self, random_bytes: Callable[[int], bytes]) -> None:
        self._random = random_bytes
        self._a = 0
        self._buf = b""
        self._send: Rc4 | None = None
        self._recv: Rc4 | None = None
        self._pad_left: int | None = None  # the server's padding still to skip
        self.established = False
        self._answered = False

    def start(self) -> bytes:
        self._a = int.from_bytes(self._random(DH_EXPONENT_BYTES), "big") | 1
        g_a = pow(2, self._a, DH768_P).to_bytes(DH_PRIME_BYTES, "big")
        marker = next((b for b in self._random(32) if b not in _PLAIN_MARKERS), 0x01)
        pad = self._random(1)[0] % 16  # aMule: GetRandomUint8() % 16
        return bytes([marker]) + g_a + bytes([pad]) + self._random(pad)

    def receive(self, data: bytes) -> bytes:
        if self.established:
            assert self._recv is not None
            return self._recv.crypt(data)
        if self._recv is None:
            self._buf += data
            if len(self._buf) < DH_PRIME_BYTES:
                return b""
            g_b = int.from_bytes(self._buf[:DH_PRIME_BYTES], "big")
            if not 1 < g_b < DH768_P - 1:
                raise ObfuscationError("the server's DH value is out of range")
            secret = pow(g_b, self._a, DH768_P)
            self._send = Rc4(dh_stream_key(secret, MAGIC_REQUESTER))
            self._recv = Rc4(dh_stream_key(secret, MAGIC_SERVER))
            data, self._buf = self._buf[DH_PRIME_BYTES:], b""
        self._buf += self._recv.crypt(data)
        if self._pad_left is None:
            if len(self._buf) < 7:
                return b""
            magic, _supported, _preferred, pad = struct.unpack_from("<IBBB", self._buf)
            if magic != MAGIC_SYNC:
                raise ObfuscationError(f"wrong obfuscation magic {magic:#010x} from the server")
            self._pad_left, self._buf = pad, self._buf[7:]
        drop = min(self._pad_left, len(self._buf))
        self._pad_left -= drop
        self._buf = self._buf[drop:]
        if self._pad_left:
            return b""
        self.established = True
        rest, self._buf = self._buf, b""
        return rest

    def encrypt(self, data: bytes) -> bytes:
        if not self.established or self._send is None:
            raise RuntimeError("send only once the obfuscation handshake is established")
        if not self._answered:
            self._answered = True
            data = struct.pack("<IBB", MAGIC_SYNC, 0, 0) + data  # method 0, no padding
        return self._send.crypt(data)
