"""eD2k framing: golden headers, incremental feeding, caps, zlib bombs and round trips."""

from __future__ import annotations

import contextlib
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.errors import ProtocolError
from peerwatch.protocols.ed2k.framing import (
    HEADER_SIZE,
    MAX_UNPACKED_SIZE,
    FramingError,
    Packet,
    PacketDecoder,
    Protocol,
    encode_packet,
    unpack_payload,
)


def test_golden_header() -> None:
    # <0xE3><length 4 LE counting the opcode><opcode> (aMule CPacket::GetHeader): 3 payload bytes
    assert encode_packet(Protocol.EDONKEY, 0x4F, b"abc") == b"\xe3\x04\x00\x00\x00\x4fabc"
    assert encode_packet(Protocol.EMULE, 0x01, b"") == b"\xc5\x01\x00\x00\x00\x01"


def test_decode_golden_and_byte_by_byte() -> None:
    stream = b"\xe3\x04\x00\x00\x00\x4fabc" + b"\xc5\x01\x00\x00\x00\x60"
    assert PacketDecoder().feed(stream) == [
        Packet(Protocol.EDONKEY, 0x4F, b"abc"),
        Packet(Protocol.EMULE, 0x60, b""),
    ]
    decoder = PacketDecoder()
    out: list[Packet] = []
    for i in range(len(stream)):
        out += decoder.feed(stream[i : i + 1])
    assert [p.opcode for p in out] == [0x4F, 0x60]
    assert decoder.buffered == 0


def test_packed_packet_is_inflated_to_emule() -> None:
    payload = b"sources " * 200
    wire = encode_packet(Protocol.EMULE, 0x84, payload, pack=True)
    assert wire[0] == Protocol.PACKED
    assert len(wire) < len(payload)
    assert PacketDecoder().feed(wire) == [Packet(Protocol.EMULE, 0x84, payload, packed=True)]


def test_pack_keeps_incompressible_payload_plain() -> None:
    payload = bytes(range(10))
    assert encode_packet(Protocol.EMULE, 0x84, payload, pack=True)[0] == Protocol.EMULE


def test_pack_refuses_edonkey_and_raw_packed() -> None:
    with pytest.raises(ValueError, match="eMule"):
        encode_packet(Protocol.EDONKEY, 1, b"x", pack=True)
    with pytest.raises(ValueError, match="pack=True"):
        encode_packet(Protocol.PACKED, 1, b"x")


def test_unknown_protocol_byte() -> None:
    with pytest.raises(FramingError, match="unknown protocol byte 0x13"):
        PacketDecoder().feed(b"\x13BitTorrent protocol")


def test_zero_length() -> None:
    with pytest.raises(FramingError, match="length 0"):
        PacketDecoder().feed(b"\xe3\x00\x00\x00\x00\x01")


def test_huge_length_refused_on_the_header_alone() -> None:
    decoder = PacketDecoder()
    with pytest.raises(FramingError, match="over 2000000"):
        decoder.feed(b"\xe3\xff\xff\xff\xff\x46")
    assert decoder.buffered == 0
    with pytest.raises(FramingError, match="already failed"):
        decoder.feed(b"")


def test_length_just_under_the_cap_waits() -> None:
    decoder = PacketDecoder(max_packet_size=100)
    assert decoder.feed(struct.pack("<BIB", 0xE3, 101, 0x46)) == []
    assert decoder.buffered == HEADER_SIZE
    with pytest.raises(FramingError):
        PacketDecoder(max_packet_size=100).feed(struct.pack("<BIB", 0xE3, 102, 0x46))


def test_zlib_bomb_stops_at_the_cap() -> None:
    bomb = zlib.compress(bytes(50 * 1024 * 1024), 9)  # 50 MiB of zeros in ~50 KB
    wire = struct.pack("<BIB", Protocol.PACKED, len(bomb) + 1, 0x84) + bomb
    with pytest.raises(FramingError, match=f"past {MAX_UNPACKED_SIZE}"):
        PacketDecoder().feed(wire)


def test_bad_and_truncated_zlib() -> None:
    with pytest.raises(FramingError, match="not a valid zlib"):
        unpack_payload(b"not zlib at all")
    with pytest.raises(FramingError, match="truncated"):
        unpack_payload(zlib.compress(b"x" * 1000)[:-6])
    assert unpack_payload(zlib.compress(b"ok") + b"trailing") == b"ok"


def test_packets_before_a_fault_travel_on_the_error() -> None:
    good = encode_packet(Protocol.EDONKEY, 0x48, bytes(16))
    with pytest.raises(FramingError) as err:
        PacketDecoder().feed(good + b"\x00garbage")
    assert [p.opcode for p in err.value.packets] == [0x48]


@given(
    st.lists(
        st.tuples(
            st.sampled_from([Protocol.EDONKEY, Protocol.EMULE]),
            st.integers(0, 255),
            st.binary(max_size=300),
            st.booleans(),
        ),
        max_size=8,
    ),
    st.integers(1, 50),
)
@settings(max_examples=200, deadline=None)
def test_round_trip_any_split(packets: list[tuple[Protocol, int, bytes, bool]], step: int) -> None:
    wire = b"".join(
        encode_packet(p, op, payload, pack=pack and p is Protocol.EMULE)
        for p, op, payload, pack in packets
    )
    decoder = PacketDecoder()
    out: list[Packet] = []
    for i in range(0, len(wire), step):
        out += decoder.feed(wire[i : i + step])
    assert [(p.protocol, p.opcode, p.payload) for p in out] == [
        (p, op, payload) for p, op, payload, _ in packets
    ]


@given(st.binary(max_size=400))
@settings(max_examples=400, deadline=None)
def test_decoder_is_total(data: bytes) -> None:
    decoder = PacketDecoder(max_packet_size=1000)
    with contextlib.suppress(ProtocolError):
        decoder.feed(data)
    assert decoder.buffered <= HEADER_SIZE + 1000
