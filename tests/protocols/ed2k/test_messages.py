"""eD2k client messages: golden bytes from aMule's layouts, round trips, totality, corpus."""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.errors import ProtocolError
from peerwatch.protocols.ed2k import messages as m
from peerwatch.protocols.ed2k.framing import Packet, PacketDecoder, Protocol
from peerwatch.protocols.ed2k.tags import Tag, TagType
from tests.protocols.ed2k.messages_strategies import messages

CORPUS = Path(__file__).parent / "fuzz_corpus"
UH = bytes.fromhex("00112233445566778899aabbccddeeff")
FH = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")


def _frame(prot: int, opcode: int, payload: bytes) -> bytes:
    return struct.pack("<BIB", prot, len(payload) + 1, opcode) + payload


# HELLO per aMule SendHelloPacket + SendHelloTypePacket: <16><hash><id 4><port 2><tags><server 6>
HELLO_PAYLOAD = (
    b"\x10"
    + UH
    + struct.pack("<IH", 0x0100007F, 4662)
    + struct.pack("<I", 2)
    + b"\x93\x01abc"  # CT_NAME "abc" (STR3)
    + b"\x83\x11\x3c\x00\x00\x00"  # CT_VERSION 0x3C (UINT32)
    + struct.pack("<IH", 0, 0)
)

GOLDEN: list[tuple[bytes, m.Message]] = [
    (
        _frame(0xE3, 0x01, HELLO_PAYLOAD),
        m.Hello(
            m.HelloBody(
                UH,
                0x0100007F,
                4662,
                (Tag(0x01, TagType.STR1 + 2, b"abc"), Tag(0x11, TagType.UINT32, 0x3C)),
            )
        ),
    ),
    (_frame(0xE3, 0x4F, FH), m.SetReqFileId(FH)),
    (_frame(0xE3, 0x48, FH), m.FileReqAnsNoFil(FH)),
    (_frame(0xE3, 0x59, FH + b"\x05\x00a.bin"), m.ReqFileNameAnswer(FH, b"a.bin")),
    # FILESTATUS, 10 parts, parts 0, 2 and 9: bits LSB first (aMule WritePartStatus)
    (
        _frame(0xE3, 0x50, FH + b"\x0a\x00\x05\x02"),
        m.FileStatus(FH, m.PartStatus.from_parts([i in (0, 2, 9) for i in range(10)])),
    ),
    # complete file: part count 0, no bitmap
    (_frame(0xE3, 0x50, FH + b"\x00\x00"), m.FileStatus(FH, m.PartStatus(0))),
    (
        _frame(0xE3, 0x52, FH + b"\x02\x00" + UH + FH),
        m.HashSetAnswer(FH, (UH, FH)),
    ),
    (
        _frame(0xE3, 0x47, FH + struct.pack("<6I", 0, 100, 0, 50, 200, 0)),
        m.RequestParts(FH, ((0, 50), (100, 200), (0, 0))),
    ),
    (_frame(0xE3, 0x46, FH + struct.pack("<II", 10, 13) + b"xyz"), m.SendingPart(FH, 10, b"xyz")),
    (
        _frame(0xC5, 0xA2, FH + struct.pack("<QQ", 1 << 33, (1 << 33) + 2) + b"ok"),
        m.SendingPart64(FH, 1 << 33, b"ok"),
    ),
    (
        _frame(0xC5, 0x40, FH + struct.pack("<II", 0, 9) + b"zz"),
        m.CompressedPart(FH, 0, 9, b"zz"),
    ),
    (_frame(0xC5, 0x83, b"\x04\x00\x00" + FH), m.RequestSources2(FH)),
    # ANSWERSOURCES2 v4: 127.0.0.2 as a hybrid ID (bytes reversed), port 4662, user hash, crypt 1
    (
        _frame(
            0xC5,
            0x84,
            b"\x04"
            + FH
            + b"\x01\x00"
            + bytes([2, 0, 0, 127])
            + b"\x36\x12"
            + bytes(6)
            + UH
            + b"\x01",
        ),
        m.AnswerSources2(
            4, FH, (m.Source(int.from_bytes(bytes([2, 0, 0, 127]), "little"), 4662, 0, 0, UH, 1),)
        ),
    ),
    (
        _frame(0xC5, 0x92, FH + b"\x58\x4f\x83\x04\x00\x00\x9e"),
        m.MultiPacket(
            FH, (m.Op.REQUESTFILENAME, m.Op.SETREQFILEID, m.EmuleOp.REQUESTSOURCES2, 0x9E)
        ),
    ),
    (
        _frame(0xC5, 0x93, FH + b"\x59\x01\x00x\x50\x00\x00"),
        m.MultiPacketAnswer(
            FH, b"x", m.PartStatus(0), None, (m.Op.REQFILENAMEANSWER, m.Op.FILESTATUS)
        ),
    ),
]


@pytest.mark.parametrize(("wire", "message"), GOLDEN)
def test_golden(wire: bytes, message: m.Message) -> None:
    (packet,) = PacketDecoder().feed(wire)
    assert m.decode(packet) == message
    assert message.encode() == wire


def test_source_ip_undoes_hybrid_order() -> None:
    msg = GOLDEN[12][1]
    assert isinstance(msg, m.AnswerSources2)
    assert msg.sources[0].ip == "127.0.0.2"
    low = m.Source(5, 1, 0, 0)
    assert low.low_id and low.ip is None
    v1 = m.Source(int.from_bytes(bytes([127, 0, 0, 3]), "little"), 1, 0, 0, version=1)
    assert v1.ip == "127.0.0.3"


def test_part_status_reading() -> None:
    status = m.PartStatus.from_parts([True, False, True])
    assert (status.has(0), status.has(1), status.has(2), status.has(3)) == (
        True,
        False,
        True,
        False,
    )
    assert status.have_count == 2 and not status.complete
    assert m.PartStatus(0).complete and m.PartStatus(0).has(123)


@pytest.mark.parametrize(
    ("prot", "opcode", "payload", "match"),
    [
        (0xE3, 0x01, b"\x14" + bytes(40), "hash size 20"),
        (0xE3, 0x4F, bytes(17), "trailing"),
        (0xE3, 0x50, FH + b"\xff\xff", "truncated"),  # 65535 parts, no bitmap
        (0xE3, 0x52, FH + b"\xff\xff" + bytes(16), "does not match"),
        (0xE3, 0x46, FH + struct.pack("<II", 10, 10), "does not match"),  # empty range
        (0xE3, 0x46, FH + struct.pack("<II", 0, 0xFFFFFFFF) + b"x", "does not match"),
        (0xC5, 0x40, FH + struct.pack("<II", 0, 1) + b"xx", "compressed bytes"),
        (0xC5, 0x84, b"\x05" + FH + b"\x00\x00", "version 5"),
        (0xC5, 0x84, b"\x04" + FH + b"\xff\xff", "over"),
        (0xC5, 0x84, b"\x04" + FH + b"\x02\x00" + bytes(29), "do not fill"),
        (0xC5, 0x93, FH + b"\x77", "unknown multipacket answer"),
        (0xC5, 0x92, FH + b"\x77", "unknown multipacket sub-request"),
        (0xE3, 0x4C, UH + bytes(6) + b"\xff\xff\xff\x7f", "over"),  # 2^31 tags
        (0xE3, 0x4C, UH + bytes(6) + bytes(4) + bytes(6) + bytes(65), "65 trailing"),
    ],
)
def test_hostile_payloads(prot: int, opcode: int, payload: bytes, match: str) -> None:
    with pytest.raises(m.MessageError, match=match):
        m.decode(Packet(Protocol(prot), opcode, payload))


def test_unknown_opcode_is_kept() -> None:
    msg = m.decode(Packet(Protocol.EMULE, 0x77, b"raw"))
    assert msg == m.Unknown(Protocol.EMULE, 0x77, b"raw")
    assert msg.encode() == b"\xc5\x04\x00\x00\x00\x77raw"


@given(messages)
@settings(max_examples=600, deadline=None)
def test_round_trip(message: m.Message) -> None:
    wire = message.encode()
    (packet,) = PacketDecoder().feed(wire)
    decoded = m.decode(packet)
    assert decoded == message
    assert decoded.encode() == wire


def _decode_total(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        for packet in PacketDecoder().feed(data):
            m.decode(packet)


@given(st.sampled_from([0xE3, 0xC5]), st.integers(0, 255), st.binary(max_size=120))
@settings(max_examples=1500, deadline=None)
def test_decode_is_total_on_any_payload(prot: int, opcode: int, payload: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        m.decode(Packet(Protocol(prot), opcode, payload))


@given(st.sampled_from([w for w, _ in GOLDEN]), st.data())
@settings(max_examples=500, deadline=None)
def test_mutated_golden(wire: bytes, draw: st.DataObject) -> None:
    buf = bytearray(wire)
    for _ in range(draw.draw(st.integers(1, 4))):
        i = draw.draw(st.integers(0, len(buf) - 1))
        buf[i] = draw.draw(st.integers(0, 255))
    _decode_total(bytes(buf[: draw.draw(st.integers(0, len(buf)))]))
    _decode_total(bytes(buf))


def test_fuzz_corpus() -> None:
    files = sorted(CORPUS.glob("*.bin"))
    assert len(files) >= 12
    for path in files:
        data = path.read_bytes()
        if path.name.startswith("valid_"):
            packets = PacketDecoder().feed(data)
            assert packets, path.name
            for packet in packets:
                m.decode(packet)
        else:
            with pytest.raises(ProtocolError):
                for packet in PacketDecoder().feed(data):
                    m.decode(packet)
                raise AssertionError(f"{path.name} decoded without error")
