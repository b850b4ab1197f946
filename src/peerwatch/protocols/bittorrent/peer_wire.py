"""BitTorrent peer wire protocol, connecting side, sans-IO: BEP 3 + BEP 6 + BEP 10 + BEP 9 + BEP 11.

`PeerConnection` is what a prober or single-source downloader speaks to one remote peer. It takes
bytes (and `now`) in and returns small frozen events; methods named ``send_*`` return the bytes to
write. It opens no socket and reads no clock. A peer's fault raises `PeerWireError` (a
`ProtocolError`) and nothing else, whatever the bytes; the events decoded before the fault travel
on the exception (`PeerWireError.events`) so a handshake and bitfield seen just before garbage are
still recorded as evidence.

Memory is bounded: a message may not be longer than `MAX_MESSAGE_LEN` (checked as soon as its
4-byte length prefix arrives), so the receive buffer never holds more than one message, and the
remote's piece set is at most one bitfield long.

The evidence this layer produces (DESIGN.md, "Evidence principles"): `HandshakeReceived` proves
the peer accepted *this* infohash; `Bitfield` / `Have` / `HaveAll` give its completion; verified
`PieceBlock`s from this one peer prove possession of content. `MetadataAssembler` fetches the info
dictionary over BEP 9 and only releases it once its hash equals the infohash.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from peerwatch.errors import ProtocolError
from peerwatch.protocols.bittorrent.bencode import bdecode, bencode

PSTR = b"BitTorrent protocol"  # BEP 3: the handshake starts with chr(19) + this string
HANDSHAKE_LEN = 1 + len(PSTR) + 8 + 20 + 20
BLOCK_SIZE = 16 * 1024  # BEP 3: requests are 2^14 bytes; larger ones are commonly refused
#: Longest message accepted: a 1 MiB piece block plus the 13-byte piece header (id, index, begin,
#: and the 4-byte prefix). Anything longer is refused on its length prefix alone.
MAX_MESSAGE_LEN = 1024 * 1024 + 13
METADATA_PIECE_SIZE = 16 * 1024  # BEP 9: metadata is sent in 16 KiB pieces
MAX_METADATA_SIZE = 16 * 1024 * 1024  # larger BEP 9 'metadata_size' is refused (DoS bound)
#: Most pieces a peer may describe: every bit of the largest bitfield message.
MAX_PIECES = (MAX_MESSAGE_LEN - 1) * 8

# Reserved handshake bits (bytes numbered from 0).
_EXTENSION_BYTE, _EXTENSION_BIT = 5, 0x10  # BEP 10: reserved_byte[5] & 0x10
_FAST_BYTE, _FAST_BIT = 7, 0x04  # BEP 6: reserved_byte[7] & 0x04
_DHT_BYTE, _DHT_BIT = 7, 0x01  # BEP 5: reserved_byte[7] & 0x01

#: Extended message ids we advertise in our BEP 10 handshake 'm'; the remote uses these when it
#: sends to us. (It tells us its own ids, which we use when sending to it.)
OUR_EXTENSIONS: Mapping[str, int] = {"ut_pex": 1, "ut_metadata": 2}
_UT_PEX = OUR_EXTENSIONS["ut_pex"]
_UT_METADATA = OUR_EXTENSIONS["ut_metadata"]


class PeerWireError(ProtocolError):
    """The remote peer broke the peer wire protocol. `events` holds what was decoded before."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.events: tuple[Event, ...] = ()


class MetadataError(PeerWireError):
    """BEP 9 metadata from the peer is inconsistent or does not hash to the infohash."""


class MessageId(enum.IntEnum):
    CHOKE = 0  # BEP 3
    UNCHOKE = 1
    INTERESTED = 2
    NOT_INTERESTED = 3
    HAVE = 4
    BITFIELD = 5
    REQUEST = 6
    PIECE = 7
    CANCEL = 8
    PORT = 9  # BEP 5: the peer's DHT port
    SUGGEST_PIECE = 0x0D  # BEP 6 (fast extension) from here ...
    HAVE_ALL = 0x0E
    HAVE_NONE = 0x0F
    REJECT_REQUEST = 0x10
    ALLOWED_FAST = 0x11  # ... to here
    EXTENDED = 20  # BEP 10


# Payload length each fixed-size message must have (BEP 3, BEP 5, BEP 6).
_FIXED_LEN: dict[int, int] = {
    MessageId.CHOKE: 0,
    MessageId.UNCHOKE: 0,
    MessageId.INTERESTED: 0,
    MessageId.NOT_INTERESTED: 0,
    MessageId.HAVE: 4,
    MessageId.REQUEST: 12,
    MessageId.CANCEL: 12,
    MessageId.PORT: 2,
    MessageId.SUGGEST_PIECE: 4,
    MessageId.HAVE_ALL: 0,
    MessageId.HAVE_NONE: 0,
    MessageId.REJECT_REQUEST: 12,
    MessageId.ALLOWED_FAST: 4,
}
_FAST_MESSAGES = frozenset(
    {
        MessageId.SUGGEST_PIECE,
        MessageId.HAVE_ALL,
        MessageId.HAVE_NONE,
        MessageId.REJECT_REQUEST,
        MessageId.ALLOWED_FAST,
    }
)


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeReceived:
    """BEP 3 handshake from the peer on our infohash: it accepted the torrent."""

    info_hash: bytes
    peer_id: bytes
    reserved: bytes
    supports_extensions: bool  # BEP 10 bit
    supports_fast: bool  # BEP 6 bit
    supports_dht: bool  # BEP 5 bit


@dataclass(frozen=True, slots=True)
class InfoHashMismatch:
    """The peer answered with another infohash; the connection is over."""

    expected: bytes
    received: bytes
    peer_id: bytes


@dataclass(frozen=True, slots=True)
class ExtensionHandshake:
    """BEP 10 extended handshake. Informational fields are None when absent or malformed."""

    client: str | None  # 'v'
    listen_port: int | None  # 'p'
    yourip: str | None  # 'yourip': our address as the peer sees it
    reqq: int | None  # 'reqq': how many outstanding requests the peer queues
    m: Mapping[str, int] = field(hash=False)  # the peer's extension ids (0 = disabled)
    metadata_size: int | None = None  # BEP 9 'metadata_size'
    upload_only: bool = False  # BEP 21 'upload_only' (a seed or partial seed)


@dataclass(frozen=True, slots=True)
class Bitfield:
    """BEP 3 bitfield. `total` is the piece count when known (else validated later)."""

    bits: bytes
    have_count: int
    total: int | None


@dataclass(frozen=True, slots=True)
class Have:
    index: int


@dataclass(frozen=True, slots=True)
class HaveAll:
    """BEP 6: the peer has every piece (a seed)."""


@dataclass(frozen=True, slots=True)
class HaveNone:
    """BEP 6: the peer has no piece."""


@dataclass(frozen=True, slots=True)
class Choke:
    pass


@dataclass(frozen=True, slots=True)
class Unchoke:
    pass


@dataclass(frozen=True, slots=True)
class Interested:
    pass


@dataclass(frozen=True, slots=True)
class NotInterested:
    pass


@dataclass(frozen=True, slots=True)
class KeepAlive:
    pass


@dataclass(frozen=True, slots=True)
class Request:
    """The peer asks us for a block (we never serve content; a prober ignores it)."""

    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class Cancel:
    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class PieceBlock:
    """BEP 3 piece message: a block of piece `index` starting at `begin`."""

    index: int
    begin: int
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Reject:
    """BEP 6 reject request: the peer will not send this block."""

    index: int
    begin: int
    length: int


@dataclass(frozen=True, slots=True)
class SuggestPiece:
    index: int  # BEP 6


@dataclass(frozen=True, slots=True)
class AllowedFast:
    index: int  # BEP 6: may be requested even while choked


@dataclass(frozen=True, slots=True)
class DhtPort:
    port: int  # BEP 5 port message


Peer = tuple[str, int]  # (IP address text, port) from a compact peer entry


@dataclass(frozen=True, slots=True)
class PexPeers:
    """BEP 11 ut_pex. `added_flags[i]` belongs to `added[i]` (0 when the peer sent no flags)."""

    added: tuple[Peer, ...]
    added_flags: tuple[int, ...]
    added6: tuple[Peer, ...]
    added6_flags: tuple[int, ...]
    dropped: tuple[Peer, ...]
    dropped6: tuple[Peer, ...]


@dataclass(frozen=True, slots=True)
class MetadataRequest:
    piece: int  # BEP 9 msg_type 0: the peer wants a metadata piece from us


@dataclass(frozen=True, slots=True)
class MetadataPiece:
    """BEP 9 msg_type 1: one 16 KiB piece of the info dictionary."""

    piece: int
    total_size: int
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class MetadataReject:
    piece: int  # BEP 9 msg_type 2


@dataclass(frozen=True, slots=True)
class UnknownMessage:
    """A message we do not decode: `extended_id` is set for BEP 10 messages (id 20)."""

    message_id: int
    extended_id: int | None
    length: int


Event = (
    HandshakeReceived
    | InfoHashMismatch
    | ExtensionHandshake
    | Bitfield
    | Have
    | HaveAll
    | HaveNone
    | Choke
    | Unchoke
    | Interested
    | NotInterested
    | KeepAlive
    | Request
    | Cancel
    | PieceBlock
    | Reject
    | SuggestPiece
    | AllowedFast
    | DhtPort
    | PexPeers
    | MetadataRequest
    | MetadataPiece
    | MetadataReject
    | UnknownMessage
)


# --- the state table ----------------------------------------------------------------------------


class State(enum.Enum):
    NEW = "new"  # initiate() not called
    AWAITING_HANDSHAKE = "awaiting handshake"
    AWAITING_FIRST_MESSAGE = "awaiting first message"  # the only time a piece set may come
    CONNECTED = "connected"
    CLOSED = "closed"  # infohash mismatch or protocol error: drop the connection


class Trigger(enum.Enum):
    INITIATE = "initiate"
    HANDSHAKE = "handshake"
    MISMATCH = "infohash mismatch"
    KEEPALIVE = "keep-alive"
    PIECE_SET = "bitfield/have all/have none"  # BEP 3 + BEP 6: only as the first message
    SIDEBAND = "extended or port message"  # does not use up the first-message slot
    MESSAGE = "message"
    ERROR = "protocol error"


#: Every legal transition (house rule 3). A (state, trigger) pair not listed is a protocol error.
#: BEP 3: "'bitfield' is only ever sent as the first message"; BEP 6 says the same of 'have all'
#: and 'have none'. Extended (BEP 10) and port (BEP 5) messages are commonly sent between the
#: handshake and the bitfield, so they leave the first-message slot open.
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (State.NEW, Trigger.INITIATE): State.AWAITING_HANDSHAKE,
    (State.AWAITING_HANDSHAKE, Trigger.HANDSHAKE): State.AWAITING_FIRST_MESSAGE,
    (State.AWAITING_HANDSHAKE, Trigger.MISMATCH): State.CLOSED,
    (State.AWAITING_FIRST_MESSAGE, Trigger.KEEPALIVE): State.AWAITING_FIRST_MESSAGE,
    (State.AWAITING_FIRST_MESSAGE, Trigger.SIDEBAND): State.AWAITING_FIRST_MESSAGE,
    (State.AWAITING_FIRST_MESSAGE, Trigger.PIECE_SET): State.CONNECTED,
    (State.AWAITING_FIRST_MESSAGE, Trigger.MESSAGE): State.CONNECTED,
    (State.CONNECTED, Trigger.KEEPALIVE): State.CONNECTED,
    (State.CONNECTED, Trigger.SIDEBAND): State.CONNECTED,
    (State.CONNECTED, Trigger.MESSAGE): State.CONNECTED,
    **{(s, Trigger.ERROR): State.CLOSED for s in State if s is not State.CLOSED},
}

_SIDEBAND = frozenset({MessageId.EXTENDED, MessageId.PORT})
_PIECE_SET = frozenset({MessageId.BITFIELD, MessageId.HAVE_ALL, MessageId.HAVE_NONE})


_KNOWN_IDS = frozenset(int(m) for m in MessageId)


def _trigger_for(message_id: int) -> Trigger:
    if message_id in _PIECE_SET:
        return Trigger.PIECE_SET
    if message_id in _SIDEBAND or message_id not in _KNOWN_IDS:
        return Trigger.SIDEBAND  # unknown ids are ignored, whenever they come
    return Trigger.MESSAGE


# --- the connection -----------------------------------------------------------------------------


class PeerConnection:
    """One outgoing peer wire connection (we sent the TCP SYN, we send the handshake first)."""

    def __init__(
        self,
        info_hash: bytes,
        our_peer_id: bytes,
        *,
        extensions: bool = True,
        fast: bool = True,
        dht: bool = False,
        now: float,
    ) -> None:
        if len(info_hash) != 20 or len(our_peer_id) != 20:
            raise ValueError("info_hash and peer id must be 20 bytes each")
        self.info_hash = bytes(info_hash)
        self.our_peer_id = bytes(our_peer_id)
        self._extensions = extensions
        self._fast = fast
        self._dht = dht
        self._state = State.NEW
        self._buf = bytearray()
        self.created_at = now
        self.last_received_at = now
        self.remote: HandshakeReceived | None = None
        self.remote_extensions: dict[str, int] = {}  # the peer's BEP 10 'm' (ids to send it)
        self.remote_metadata_size: int | None = None
        self._piece_count: int | None = None
        self._bits = bytearray()  # the remote's pieces, grown by haves while the count is unknown
        self._bitfield_seen = False
        self._have_all = False
        self._have_count = 0

    # -- state --------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def extensions_enabled(self) -> bool:
        """BEP 10 in use: both sides set the reserved bit."""
        return self._extensions and self.remote is not None and self.remote.supports_extensions

    @property
    def fast_enabled(self) -> bool:
        """BEP 6 in use: both sides set the reserved bit."""
        return self._fast and self.remote is not None and self.remote.supports_fast

    @property
    def piece_count(self) -> int | None:
        return self._piece_count

    @property
    def have_count(self) -> int:
        """Pieces the peer announced (bitfield, have, have all); exact once the count is known."""
        if self._have_all and self._piece_count is not None:
            return self._piece_count
        return self._have_count

    @property
    def is_seed(self) -> bool:
        if self._have_all:
            return True
        return self._piece_count is not None and self._have_count == self._piece_count

    def _go(self, trigger: Trigger, what: str) -> None:
        nxt = TRANSITIONS.get((self._state, trigger))
        if nxt is None:
            raise PeerWireError(f"{what} is not allowed while {self._state.value}")
        self._state = nxt

    def set_piece_count(self, n: int) -> None:
        """Tell the connection how many pieces the torrent has (from the metainfo, perhaps just
        fetched over BEP 9). Pieces announced earlier are checked now: a bitfield of the wrong
        length or with spare bits set, or a have beyond the last piece, raises `PeerWireError`."""
        if not 0 < n <= MAX_PIECES:
            raise ValueError(f"piece count {n} out of range")
        if self._piece_count is not None:
            if n != self._piece_count:
                raise ValueError("the piece count is already set to another value")
            return
        nbytes = (n + 7) // 8
        if self._bitfield_seen and len(self._bits) != nbytes:
            self._fail_now()
            raise PeerWireError(f"bitfield of {len(self._bits)} bytes for {n} pieces")
        bits = bytes(self._bits) + bytes(max(0, nbytes - len(self._bits)))
        if _set_bits_beyond(bits, n):
            self._fail_now()
            raise PeerWireError(f"the peer announced a piece at or beyond the last one ({n})")
        self._bits = bytearray(bits)
        self._piece_count = n

    def _fail_now(self) -> None:
        if self._state is not State.CLOSED:
            self._go(Trigger.ERROR, "error")

    # -- receiving ----------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes from the socket; returns the events they complete, in order."""
        if self._state is State.NEW:
            raise RuntimeError("call initiate() first")
        if self._state is State.CLOSED:
            raise PeerWireError("the connection is closed")
        self.last_received_at = now
        self._buf += data
        events: list[Event] = []
        try:
            self._parse(events)
        except PeerWireError as exc:
            self._fail_now()
            self._buf.clear()
            exc.events = tuple(events)
            raise
        return events

    def _parse(self, events: list[Event]) -> None:
        buf = self._buf
        while self._state is not State.CLOSED:
            if self._state is State.AWAITING_HANDSHAKE:
                # Reject a wrong protocol string as soon as it shows, not after 68 bytes.
                if buf and buf[0] != len(PSTR):
                    raise PeerWireError(f"handshake protocol length {buf[0]}, expected 19")
                head = bytes(buf[1 : 1 + len(PSTR)])
                if head != PSTR[: len(head)]:
                    raise PeerWireError("handshake protocol string is not 'BitTorrent protocol'")
                if len(buf) < HANDSHAKE_LEN:
                    return
                events.append(self._handshake(bytes(buf[:HANDSHAKE_LEN])))
                del buf[:HANDSHAKE_LEN]
                continue
            if len(buf) < 4:
                return
            (length,) = struct.unpack_from(">I", buf)
            if length > MAX_MESSAGE_LEN:
                raise PeerWireError(f"message length {length} exceeds {MAX_MESSAGE_LEN}")
            if len(buf) < 4 + length:
                return
            if length == 0:  # BEP 3: a zero length prefix is a keep-alive
                del buf[:4]
                self._go(Trigger.KEEPALIVE, "keep-alive")
                events.append(KeepAlive())
                continue
            message_id = buf[4]
            payload = bytes(buf[5 : 4 + length])
            del buf[: 4 + length]
            events.extend(self._message(message_id, payload))

    def _handshake(self, raw: bytes) -> HandshakeReceived | InfoHashMismatch:
        reserved = raw[20:28]
        info_hash = raw[28:48]
        peer_id = raw[48:68]
        if info_hash != self.info_hash:
            self._go(Trigger.MISMATCH, "handshake")
            return InfoHashMismatch(self.info_hash, info_hash, peer_id)
        self._go(Trigger.HANDSHAKE, "handshake")
        self.remote = HandshakeReceived(
            info_hash=info_hash,
            peer_id=peer_id,
            reserved=reserved,
            supports_extensions=bool(reserved[_EXTENSION_BYTE] & _EXTENSION_BIT),
            supports_fast=bool(reserved[_FAST_BYTE] & _FAST_BIT),
            supports_dht=bool(reserved[_DHT_BYTE] & _DHT_BIT),
        )
        return self.remote

    def _message(self, mid: int, payload: bytes) -> list[Event]:
        known = mid in _KNOWN_IDS
        name = MessageId(mid).name.lower() if known else f"message {mid}"
        expected = _FIXED_LEN.get(mid)
        if expected is not None and len(payload) != expected:
            raise PeerWireError(f"{name} has {len(payload)} payload bytes, expected {expected}")
        if mid in _FAST_MESSAGES and not self.fast_enabled:
            # BEP 6: receiving a fast message without the extension negotiated MUST close.
            raise PeerWireError(f"{name} without the fast extension negotiated (BEP 6)")
        if mid == MessageId.EXTENDED and not self.extensions_enabled:
            raise PeerWireError("extended message without BEP 10 negotiated")
        self._go(_trigger_for(mid), name)
        if not known:
            return [UnknownMessage(mid, None, len(payload))]
        if mid == MessageId.CHOKE:
            return [Choke()]
        if mid == MessageId.UNCHOKE:
            return [Unchoke()]
        if mid == MessageId.INTERESTED:
            return [Interested()]
        if mid == MessageId.NOT_INTERESTED:
            return [NotInterested()]
        if mid == MessageId.HAVE:
            return [self._have(_u32(payload, 0))]
        if mid == MessageId.BITFIELD:
            return [self._bitfield(payload)]
        if mid in (MessageId.REQUEST, MessageId.CANCEL, MessageId.REJECT_REQUEST):
            index, begin, length = struct.unpack(">III", payload)
            self._check_index(index, name)
            if mid == MessageId.REQUEST:
                return [Request(index, begin, length)]
            if mid == MessageId.CANCEL:
                return [Cancel(index, begin, length)]
            return [Reject(index, begin, length)]
        if mid == MessageId.PIECE:
            if len(payload) < 8:
                raise PeerWireError(f"piece message of {len(payload)} bytes has no header")
            index, begin = struct.unpack_from(">II", payload)
            self._check_index(index, name)
            return [PieceBlock(index, begin, payload[8:])]
        if mid == MessageId.PORT:
            return [DhtPort(struct.unpack(">H", payload)[0])]
        if mid == MessageId.SUGGEST_PIECE:
            return [SuggestPiece(self._check_index(_u32(payload, 0), name))]
        if mid == MessageId.ALLOWED_FAST:
            return [AllowedFast(self._check_index(_u32(payload, 0), name))]
        if mid == MessageId.HAVE_ALL:
            self._have_all = True
            self._have_count = self._piece_count or 0
            return [HaveAll()]
        if mid == MessageId.HAVE_NONE:
            return [HaveNone()]
        return self._extended(payload)

    def _check_index(self, index: int, what: str) -> int:
        limit = MAX_PIECES if self._piece_count is None else self._piece_count
        if index >= limit:
            raise PeerWireError(f"{what} for piece {index}, beyond the last piece ({limit - 1})")
        return index

    def _have(self, index: int) -> Have:
        self._check_index(index, "have")
        byte, mask = index // 8, 0x80 >> (index % 8)  # BEP 3: high bit of byte 0 is piece 0
        if byte >= len(self._bits):
            self._bits += bytes(byte + 1 - len(self._bits))
        if not self._bits[byte] & mask:
            self._bits[byte] |= mask
            if not self._have_all:
                self._have_count += 1
        return Have(index)

    def _bitfield(self, bits: bytes) -> Bitfield:
        n = self._piece_count
        if n is not None:
            if len(bits) != (n + 7) // 8:
                raise PeerWireError(f"bitfield of {len(bits)} bytes for {n} pieces")
            if _set_bits_beyond(bits, n):
                raise PeerWireError("bitfield has spare bits set (BEP 3: they must be zero)")
        self._bits = bytearray(bits)
        self._bitfield_seen = True
        self._have_count = int.from_bytes(bits, "big").bit_count()
        return Bitfield(bits, self._have_count, n)

    # -- BEP 10 extended messages ---------------------------------------------------------------

    def _extended(self, payload: bytes) -> list[Event]:
        if not payload:
            raise PeerWireError("extended message without an extended message id (BEP 10)")
        ext_id, body = payload[0], payload[1:]
        if ext_id == 0:
            return [self._extension_handshake(body)]
        if ext_id == _UT_METADATA:
            return self._ut_metadata(body)
        if ext_id == _UT_PEX:
            return [_pex(body)]
        return [UnknownMessage(MessageId.EXTENDED, ext_id, len(body))]

    def _extension_handshake(self, body: bytes) -> ExtensionHandshake:
        d = _bdict(body, "extension handshake")
        m_raw = d.get(b"m", {})
        if not isinstance(m_raw, dict):
            raise PeerWireError("extension handshake 'm' is not a dictionary (BEP 10)")
        for key, value in m_raw.items():
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
                raise PeerWireError(f"extension handshake 'm' id for {key!r} is not 0..255")
            name = key.decode("utf-8", errors="replace")
            # BEP 10: subsequent handshakes update 'm'; an id of 0 disables the extension.
            if value == 0:
                self.remote_extensions.pop(name, None)
            else:
                self.remote_extensions[name] = value
        # Out of range counts as absent: the peer's bitfield is still worth having, and
        # MetadataAssembler refuses sizes over MAX_METADATA_SIZE anyway.
        metadata_size = _opt_int(d, b"metadata_size", 1, MAX_METADATA_SIZE)
        if metadata_size is not None:
            self.remote_metadata_size = metadata_size
        client = d.get(b"v")
        return ExtensionHandshake(
            client=client[:256].decode("utf-8", errors="replace")
            if isinstance(client, bytes)
            else None,
            listen_port=_opt_int(d, b"p", 1, 0xFFFF),
            yourip=_ip_text(d.get(b"yourip")),
            reqq=_opt_int(d, b"reqq", 0, 2**31 - 1),
            m=dict(self.remote_extensions),
            metadata_size=metadata_size,
            upload_only=_opt_int(d, b"upload_only", 0, 2**31 - 1) not in (None, 0),
        )

    def _ut_metadata(self, body: bytes) -> list[Event]:
        end = _bencode_end(body)
        d = _bdict(body[:end], "ut_metadata message")
        data = body[end:]
        msg_type = _opt_int(d, b"msg_type", 0, 2**31 - 1)
        piece = _opt_int(d, b"piece", 0, MAX_METADATA_SIZE // METADATA_PIECE_SIZE - 1)
        if msg_type is None or piece is None:
            raise PeerWireError("ut_metadata message needs integer 'msg_type' and 'piece' (BEP 9)")
        if msg_type == 0:
            return [MetadataRequest(piece)]
        if msg_type == 1:
            total = _opt_int(d, b"total_size", 1, MAX_METADATA_SIZE)
            if total is None:
                raise PeerWireError(f"ut_metadata data needs 'total_size' 1..{MAX_METADATA_SIZE}")
            if len(data) > METADATA_PIECE_SIZE:
                raise PeerWireError(f"ut_metadata piece of {len(data)} bytes is over 16 KiB")
            return [MetadataPiece(piece, total, data)]
        if msg_type == 2:
            return [MetadataReject(piece)]
        # BEP 9: "an unrecognized message ID MUST be ignored".
        return [UnknownMessage(MessageId.EXTENDED, _UT_METADATA, len(body))]

    # -- sending ------------------------------------------------------------------------------

    def initiate(self) -> bytes:
        """Our BEP 3 handshake, sent first: we opened the connection."""
        self._go(Trigger.INITIATE, "initiate")
        reserved = bytearray(8)
        if self._extensions:
            reserved[_EXTENSION_BYTE] |= _EXTENSION_BIT
        if self._fast:
            reserved[_FAST_BYTE] |= _FAST_BIT
        if self._dht:
            reserved[_DHT_BYTE] |= _DHT_BIT
        return bytes([len(PSTR)]) + PSTR + bytes(reserved) + self.info_hash + self.our_peer_id

    def send_extension_handshake(
        self,
        *,
        client: str | None = None,
        listen_port: int | None = None,
        reqq: int | None = None,
        yourip: bytes | None = None,
        metadata_size: int | None = None,
    ) -> bytes:
        """BEP 10 handshake advertising `OUR_EXTENSIONS`; optional fields only when given."""
        if not self._extensions:
            raise RuntimeError("BEP 10 extensions are disabled on this connection")
        d: dict[bytes, object] = {
            b"m": {k.encode(): v for k, v in OUR_EXTENSIONS.items()},
        }
        if client is not None:
            d[b"v"] = client.encode()
        if listen_port is not None:
            d[b"p"] = listen_port
        if reqq is not None:
            d[b"reqq"] = reqq
        if yourip is not None:
            d[b"yourip"] = yourip
        if metadata_size is not None:
            d[b"metadata_size"] = metadata_size
        return _extended(0, bencode(d))

    def send_keepalive(self) -> bytes:
        return bytes(4)

    def send_interested(self) -> bytes:
        return _frame(MessageId.INTERESTED)

    def send_not_interested(self) -> bytes:
        return _frame(MessageId.NOT_INTERESTED)

    def send_have_none(self) -> bytes:
        """BEP 6: with the fast extension on, a peer must send a piece set first; a prober has
        no pieces."""
        if not self.fast_enabled:
            raise RuntimeError("have none needs the fast extension on both sides")
        return _frame(MessageId.HAVE_NONE)

    def send_request(self, index: int, begin: int, length: int = BLOCK_SIZE) -> bytes:
        if not 0 < length <= BLOCK_SIZE:
            raise ValueError(f"block length must be 1..{BLOCK_SIZE}")
        if self._piece_count is not None and not 0 <= index < self._piece_count:
            raise ValueError(f"piece {index} does not exist")
        return _frame(MessageId.REQUEST, struct.pack(">III", index, begin, length))

    def send_cancel(self, index: int, begin: int, length: int = BLOCK_SIZE) -> bytes:
        return _frame(MessageId.CANCEL, struct.pack(">III", index, begin, length))

    def request_metadata(self, piece: int) -> bytes:
        """BEP 9 request for one 16 KiB metadata piece, using the peer's ut_metadata id."""
        return self._ut_metadata_out({b"msg_type": 0, b"piece": piece})

    def send_metadata_reject(self, piece: int) -> bytes:
        """BEP 9 reject: how a prober answers metadata requests (it serves nothing)."""
        return self._ut_metadata_out({b"msg_type": 2, b"piece": piece})

    def _ut_metadata_out(self, d: dict[bytes, object]) -> bytes:
        ext_id = self.remote_extensions.get("ut_metadata")
        if ext_id is None:
            raise RuntimeError("the peer did not announce ut_metadata (BEP 9)")
        return _extended(ext_id, bencode(d))


# --- BEP 9 metadata assembly --------------------------------------------------------------------


class MetadataAssembler:
    """Collects BEP 9 metadata pieces and releases the info dictionary only once it hashes to the
    infohash: SHA-1 for v1 (BEP 3), SHA-256 for v2 (BEP 52; a 20-byte infohash is the truncated
    SHA-256, and the full 32-byte `btmh` is compared as well when it is known)."""

    def __init__(self, info_hash: bytes, size: int, *, btmh: bytes | None = None) -> None:
        if len(info_hash) not in (20, 32):
            raise ValueError("info_hash must be 20 (v1 / truncated v2) or 32 (v2) bytes")
        if btmh is not None and len(btmh) != 32:
            raise ValueError("btmh must be 32 bytes")
        if not 0 < size <= MAX_METADATA_SIZE:
            raise MetadataError(f"metadata_size {size} is not 1..{MAX_METADATA_SIZE}")
        self.info_hash = bytes(info_hash)
        self.btmh = btmh
        self.size = size
        self.piece_total = -(-size // METADATA_PIECE_SIZE)
        self._pieces: dict[int, bytes] = {}

    @property
    def complete(self) -> bool:
        return len(self._pieces) == self.piece_total

    def missing(self) -> list[int]:
        return [i for i in range(self.piece_total) if i not in self._pieces]

    def add(self, piece: MetadataPiece) -> None:
        """Store one piece; a wrong size, index or total raises `MetadataError`."""
        if piece.total_size != self.size:
            raise MetadataError(f"total_size {piece.total_size} but metadata_size {self.size}")
        if not 0 <= piece.piece < self.piece_total:
            raise MetadataError(f"metadata piece {piece.piece} of {self.piece_total}")
        last = piece.piece == self.piece_total - 1
        expected = self.size - piece.piece * METADATA_PIECE_SIZE if last else METADATA_PIECE_SIZE
        if len(piece.data) != expected:
            raise MetadataError(
                f"metadata piece {piece.piece} has {len(piece.data)} bytes, expected {expected}"
            )
        self._pieces[piece.piece] = piece.data

    def result(self) -> bytes:
        """The verified bencoded info dictionary; `MetadataError` if it does not hash right."""
        if not self.complete:
            raise RuntimeError(f"metadata pieces missing: {self.missing()[:10]}")
        info = b"".join(self._pieces[i] for i in range(self.piece_total))
        if not _info_matches(info, self.info_hash, self.btmh):
            self._pieces.clear()  # start over (from another peer) rather than keep bad data
            raise MetadataError("metadata does not hash to the infohash")
        return info


def _info_matches(info: bytes, info_hash: bytes, btmh: bytes | None) -> bool:
    sha256 = hashlib.sha256(info).digest()
    if btmh is not None and sha256 != btmh:
        return False
    if len(info_hash) == 32:
        return sha256 == info_hash
    if hashlib.sha1(info, usedforsecurity=False).digest() == info_hash:  # BEP 3 infohash
        return btmh is None or sha256 == btmh
    return sha256[:20] == info_hash  # BEP 52: v2 infohash truncated to 20 bytes


# --- small codecs -------------------------------------------------------------------------------


def _frame(mid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", 1 + len(payload), mid) + payload


def _extended(ext_id: int, body: bytes) -> bytes:
    return _frame(MessageId.EXTENDED, bytes([ext_id]) + body)


def _u32(data: bytes, offset: int) -> int:
    return int(struct.unpack_from(">I", data, offset)[0])


def _set_bits_beyond(bits: bytes, n: int) -> bool:
    """True if any bit for piece >= n is set (BEP 3: spare bits at the end must be zero)."""
    full, rem = divmod(n, 8)
    if rem and bits[full] & (0xFF >> rem):
        return True
    start = full + (1 if rem else 0)
    return any(bits[start:])


def _bdict(data: bytes, what: str) -> dict[bytes, Any]:
    try:
        value = bdecode(data)
    except Exception:  # fastbencode raises ValueError and others; a total decoder leaks nothing
        raise PeerWireError(f"{what} is not canonical bencode") from None
    if not isinstance(value, dict):
        raise PeerWireError(f"{what} is not a bencoded dictionary")
    return value


def _opt_int(d: dict[bytes, Any], key: bytes, low: int, high: int) -> int | None:
    """An integer field within [low, high], or None when missing, not an integer or outside."""
    v = d.get(key)
    if isinstance(v, int) and not isinstance(v, bool) and low <= v <= high:
        return v
    return None


def _ip_text(raw: object) -> str | None:
    if isinstance(raw, bytes) and len(raw) in (4, 16):
        return str(ipaddress.ip_address(raw))
    return None


_MAX_BENCODE_DEPTH = 16


def _bencode_end(data: bytes) -> int:
    """Offset just past the bencoded value at the start of `data` (BEP 9 data messages append
    the raw piece after the dictionary, so the decoder needs to know where it ends)."""
    pos = 0
    depth = 0
    n = len(data)
    while True:
        if pos >= n:
            raise PeerWireError("truncated bencoded value")
        c = data[pos]
        if c in b"dl":
            depth += 1
            if depth > _MAX_BENCODE_DEPTH:
                raise PeerWireError("bencoded value nested too deeply")
            pos += 1
            continue
        if c == ord("e"):
            if depth == 0:
                raise PeerWireError("unexpected 'e' in bencoded value")
            depth -= 1
            pos += 1
        elif c == ord("i"):
            stop = data.find(b"e", pos + 1, pos + 24)
            if stop < 0:
                raise PeerWireError("bad bencoded integer")
            pos = stop + 1
        elif 0x30 <= c <= 0x39:
            colon = data.find(b":", pos, pos + 9)
            if colon < 0 or not data[pos:colon].isdigit():
                raise PeerWireError("bad bencoded string length")
            pos = colon + 1 + int(data[pos:colon])
            if pos > n:
                raise PeerWireError("truncated bencoded string")
        else:
            raise PeerWireError(f"unexpected byte {c:#04x} in bencoded value")
        if depth == 0:
            return pos


def _compact_peers(raw: object, size: int, key: str) -> tuple[Peer, ...]:
    """BEP 11 / BEP 23 compact peers: 4-byte IPv4 (or 16-byte IPv6) then a 2-byte port."""
    if raw is None:
        return ()
    if not isinstance(raw, bytes) or len(raw) % size:
        raise PeerWireError(f"ut_pex '{key}' is not a multiple of {size} bytes")
    ip_len = size - 2
    return tuple(
        (
            str(ipaddress.ip_address(raw[i : i + ip_len])),
            int.from_bytes(raw[i + ip_len : i + size], "big"),
        )
        for i in range(0, len(raw), size)
    )


def _flags(raw: object, count: int) -> tuple[int, ...]:
    # BEP 11: one flag byte per added peer. libtorrent ignores a flags string of the wrong
    # length; so do we (the peers themselves are still valid).
    if isinstance(raw, bytes) and len(raw) == count:
        return tuple(raw)
    return (0,) * count


def _pex(body: bytes) -> PexPeers:
    d = _bdict(body, "ut_pex message")
    added = _compact_peers(d.get(b"added"), 6, "added")
    added6 = _compact_peers(d.get(b"added6"), 18, "added6")
    return PexPeers(
        added=added,
        added_flags=_flags(d.get(b"added.f"), len(added)),
        added6=added6,
        added6_flags=_flags(d.get(b"added6.f"), len(added6)),
        dropped=_compact_peers(d.get(b"dropped"), 6, "dropped"),
        dropped6=_compact_peers(d.get(b"dropped6"), 18, "dropped6"),
    )
