"""eD2k TCP framing: ``<protocol 1><length 4 LE><opcode 1><payload length-1>``, sans-IO.

Protocol bytes (aMule src/include/protocol/Protocols.h): 0xE3 plain eDonkey, 0xC5 eMule extended,
0xD4 eMule packed. A packed packet's payload is a zlib stream (aMule CPacket::PackPacket uses
``compress2``); once inflated it is an eMule extended (0xC5) packet (CPacket::UnPackPacket sets the
protocol to OP_EMULEPROT), so `Packet.protocol` is never 0xD4 and `Packet.packed` says it came
compressed. The length counts the opcode byte and the payload (CPacket::GetHeader writes
``size + 1``); a length of 0 is malformed (CPacket::GetPacketSizeFromHeader).

Caps (each checked before the bytes it guards are buffered or produced):

- `max_packet_size` (default 2,000,000 bytes, aMule EMSocket.cpp MAX_PACKET_SIZE): a larger length
  field is refused as soon as the 6-byte header is in, so the buffer never holds more than one
  packet;
- `max_unpacked_size` (default 50,000 bytes, the default ``uMaxDecompressedSize`` of aMule's
  CPacket::UnPackPacket, used for client packets): inflation runs through
  ``zlib.decompressobj`` with ``max_length``, so a zlib bomb stops after that many bytes instead
  of exhausting memory.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

from peerwatch.protocols.ed2k.wire import Ed2kError

HEADER_SIZE = 6
MAX_PACKET_SIZE = 2_000_000
MAX_UNPACKED_SIZE = 50_000


class Protocol(enum.IntEnum):
    EDONKEY = 0xE3  # OP_EDONKEYPROT
    EMULE = 0xC5  # OP_EMULEPROT
    PACKED = 0xD4  # OP_PACKEDPROT (zlib payload, eMule extended opcode)


class FramingError(Ed2kError):
    """A packet header or packed payload is malformed or over a cap. `packets` holds the packets
    decoded from the same `feed` before the fault, so they can still be recorded."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.packets: tuple[Packet, ...] = ()


@dataclass(frozen=True, slots=True)
class Packet:
    """One decoded packet. `protocol` is EDONKEY or EMULE (a packed packet is inflated)."""

    protocol: Protocol
    opcode: int
    payload: bytes
    packed: bool = False  # it arrived as 0xD4 (zlib)


def encode_packet(protocol: Protocol, opcode: int, payload: bytes, *, pack: bool = False) -> bytes:
    """Frame one packet. With `pack`, an eMule packet is zlib-compressed when that makes it smaller
    (aMule CPacket::PackPacket keeps the plain packet otherwise)."""
    if protocol is Protocol.PACKED:
        raise ValueError("pass Protocol.EMULE with pack=True to send a packed packet")
    if not 0 <= opcode <= 0xFF:
        raise ValueError("opcode is one byte")
    if pack:
        if protocol is not Protocol.EMULE:
            raise ValueError("only eMule extended packets can be packed")
        packed = zlib.compress(payload, 9)
        if len(packed) < len(payload):
            protocol, payload = Protocol.PACKED, packed
    return struct.pack("<BIB", protocol, len(payload) + 1, opcode) + payload


def unpack_payload(payload: bytes, max_unpacked_size: int = MAX_UNPACKED_SIZE) -> bytes:
    """Inflate a 0xD4 payload, refusing more than `max_unpacked_size` bytes of output."""
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(payload, max_unpacked_size + 1)
    except zlib.error as exc:
        raise FramingError(f"packed packet is not a valid zlib stream: {exc}") from None
    if len(out) > max_unpacked_size:
        raise FramingError(f"packed packet inflates past {max_unpacked_size} bytes")
    if not inflater.eof:
        # zlib's uncompress() (what aMule calls) fails unless the stream ends.
        raise FramingError("packed packet's zlib stream is truncated")
    return out


class PacketDecoder:
    """Incremental decoder: ``feed(bytes) -> [Packet]``. Raises `FramingError` (and then stays
    failed) on a bad header, an over-long length or a bad packed payload."""

    def __init__(
        self, *, max_packet_size: int = MAX_PACKET_SIZE, max_unpacked_size: int = MAX_UNPACKED_SIZE
    ) -> None:
        self._max_packet = max_packet_size
        self._max_unpacked = max_unpacked_size
        self._buf = bytearray()
        self._failed: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete packet (at most HEADER_SIZE + max_packet_size)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Packet]:
        if self._failed is not None:
            raise FramingError(f"decoder already failed: {self._failed}")
        self._buf += data
        packets: list[Packet] = []
        try:
            while len(self._buf) >= HEADER_SIZE:
                prot, length, opcode = struct.unpack_from("<BIB", self._buf)
                if prot not in (Protocol.EDONKEY, Protocol.EMULE, Protocol.PACKED):
                    raise FramingError(f"unknown protocol byte {prot:#04x}")
                if length < 1:
                    raise FramingError("packet length 0 (it must count the opcode)")
                if length - 1 > self._max_packet:
                    raise FramingError(f"packet of {length - 1} bytes is over {self._max_packet}")
                end = HEADER_SIZE + length - 1
                if len(self._buf) < end:
                    break
                payload = bytes(self._buf[HEADER_SIZE:end])
                del self._buf[:end]
                if prot == Protocol.PACKED:
                    packets.append(
                        Packet(
                            Protocol.EMULE,
                            opcode,
                            unpack_payload(payload, self._max_unpacked),
                            packed=True,
                        )
                    )
                else:
                    packets.append(Packet(Protocol(prot), opcode, payload))
        except FramingError as exc:
            self._failed = str(exc)
            self._buf.clear()
            exc.packets = tuple(packets)
            raise
        return packets
