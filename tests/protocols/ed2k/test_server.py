"""eD2k client-to-server messages and the connecting side's session: golden bytes built from
aMule's layouts (ServerConnect.cpp, ServerSocket.cpp, PartFile.cpp AddSources, DownloadQueue.cpp,
KnownFile.cpp CreateOfferedFilePacket, SearchList.cpp), hypothesis round trips, totality on
random and mutated bytes, and the session against scripted server bytes."""

from __future__ import annotations

import contextlib
import random
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.errors import ProtocolError
from peerwatch.protocols.ed2k import server as s
from peerwatch.protocols.ed2k.framing import Packet, PacketDecoder, Protocol
from peerwatch.protocols.ed2k.tags import Tag, TagType

UH = bytes.fromhex("00112233440e66778899aabbccdd6fff")
FH = bytes.fromhex("0f1e2d3c4b5a69788796a5b4c3d2e1f0")
FH2 = bytes(range(16))


def _frame(opcode: int, payload: bytes, prot: int = 0xE3) -> bytes:
    return struct.pack("<BIB", prot, len(payload) + 1, opcode) + payload


def _decode(data: bytes) -> s.ServerMessageType:
    [packet] = s.server_decoder().feed(data)
    return s.decode(packet)


# aMule ServerConnect.cpp: <hash><id 4><port 2><tag count 4 = 4> CT_NAME, CT_VERSION,
# CT_SERVER_FLAGS, CT_EMULE_VERSION (aMule writes them the old way, CTag::WriteTagToFile; the
# compact form here is what Tag.string/uint32 make, which servers read alike).
LOGIN_PAYLOAD = (
    UH
    + struct.pack("<IH", 0, 4662)
    + struct.pack("<I", 4)
    + b"\x99\x01peerwatch"  # CT_NAME, STR9
    + b"\x83\x11"
    + struct.pack("<I", 0x3C)  # CT_VERSION
    + b"\x83\x20"
    + struct.pack("<I", 0x071D)  # CT_SERVER_FLAGS
    + b"\x83\xfb"
    + struct.pack("<I", 0xFF000400)  # CT_EMULE_VERSION 0.1.0, compat 0xFF
)

GOLDEN: list[tuple[bytes, s.ServerMessageType]] = [
    (_frame(0x01, LOGIN_PAYLOAD), s.LoginRequest.build(UH)),
    (_frame(0x38, b"\x05\x00hello"), s.ServerMessage(b"hello")),
    (_frame(0x40, struct.pack("<I", 0x0110007F)), s.IdChange(0x0110007F)),
    (
        _frame(0x40, struct.pack("<II", 0x0110007F, 0x0519)),
        s.IdChange(0x0110007F, 0x0519),
    ),
    (
        _frame(0x40, struct.pack("<IIIII", 5, 0x0400, 4661, 0x0110007F, 4665)),
        s.IdChange(5, 0x0400, 4661, 0x0110007F, 4665),
    ),
    (_frame(0x34, struct.pack("<II", 12, 345)), s.ServerStatus(12, 345)),
    (
        _frame(0x41, FH + struct.pack("<IHI", 0x0110007F, 4661, 1) + b"\x92\x01ab"),
        s.ServerIdent(FH, 0x0110007F, 4661, (Tag(0x01, TagType.STR1 + 1, b"ab"),)),
    ),
    (_frame(0x14, b""), s.GetServerList()),
    (_frame(0x05, b""), s.Reject()),
    (
        _frame(0x32, b"\x01" + bytes([127, 0, 16, 9]) + struct.pack("<H", 4661)),
        s.ServerList((("127.0.16.9", 4661),)),
    ),
    # DownloadQueue.cpp: <hash><size 4>, and <hash><0 4><size 8> for 4 GiB and more
    (_frame(0x19, FH), s.GetSources(FH)),
    (_frame(0x19, FH + struct.pack("<I", 300_000)), s.GetSources(FH, 300_000)),
    (
        _frame(0x23, FH + struct.pack("<IQ", 0, 5 << 30)),
        s.GetSources(FH, 5 << 30, obfuscated=True),
    ),
    # TCP.h / PartFile.cpp: <hash><count 1>(<id 4><port 2>)[count]
    (
        _frame(0x42, FH + b"\x02" + struct.pack("<IHIH", 0x0110007F, 4662, 7, 4663)),
        s.FoundSources(FH, (s.FoundSource(0x0110007F, 4662), s.FoundSource(7, 4663))),
    ),
    # OBFU: <id 4><port 2><crypt 1>[<user hash 16> when crypt & 0x80]
    (
        _frame(
            0x44,
            FH
            + b"\x02"
            + struct.pack("<IHB", 0x0110007F, 4662, 0x87)
            + UH
            + struct.pack("<IHB", 0x0210007F, 4663, 0x00),
        ),
        s.FoundSources(
            FH,
            (
                s.FoundSource(0x0110007F, 4662, 0x87, UH),
                s.FoundSource(0x0210007F, 4663, 0),
            ),
            obfuscated=True,
        ),
    ),
    # KnownFile.cpp: <hash><id 4><port 2><tags> with FT_FILENAME and FT_FILESIZE (uint32)
    (
        _frame(
            0x15,
            struct.pack("<I", 1)
            + FH
            + struct.pack("<IH", 0xFBFBFBFB, 0xFBFB)
            + struct.pack("<I", 2)
            + b"\x95\x01a.bin"
            + b"\x83\x02"
            + struct.pack("<I", 300_000),
        ),
        s.OfferFiles((s.FileEntry.build(FH, "a.bin", 300_000, client_id=0xFBFBFBFB, port=0xFBFB),)),
    ),
    (
        _frame(0x33, struct.pack("<I", 0) + b"\x01"),
        s.SearchResult((), more=1),
    ),
    # SearchList.cpp: AND(keyword "benign", size > 1000)
    (
        _frame(
            0x16,
            b"\x00\x00"
            + b"\x01\x06\x00benign"
            + b"\x03"
            + struct.pack("<IB", 1000, 1)
            + b"\x01\x00\x02",
        ),
        s.SearchRequest(
            s.SearchBool(0, s.SearchKeyword(b"benign"), s.SearchNumeric(1000, 1, s.FT_FILESIZE))
        ),
    ),
]


@pytest.mark.parametrize(("wire", "message"), GOLDEN)
def test_golden_bytes(wire: bytes, message: s.ServerMessageType) -> None:
    assert message.encode() == wire
    assert _decode(wire) == message


def test_login_request_fields() -> None:
    login = s.LoginRequest.build(UH, name="x", tcp_port=1234)
    assert login.name == "x" and login.tcp_port == 1234
    assert login.server_flags & s.SRVCAP_SUPPORTCRYPT
    assert login.crypt_options == s.CRYPT_SUPPORTED | s.CRYPT_REQUESTED
    required = s.LoginRequest.build(
        UH, server_flags=s.SRVCAP_SUPPORTCRYPT | s.SRVCAP_REQUESTCRYPT | s.SRVCAP_REQUIRECRYPT
    )
    assert required.crypt_options == 0x07


def test_high_id_is_the_address_little_endian() -> None:
    # aMule: 127.0.16.1 -> 0x0110007F = 17825919 (what amuled logged as "New clientid is")
    assert s.ip_to_id("127.0.16.1") == 17825919
    assert s.id_to_ip(17825919) == "127.0.16.1"
    assert not s.is_low_id(17825919) and s.is_low_id(0xFFFFFF)
    src = s.FoundSource(17825919, 4662)
    assert src.ip == "127.0.16.1" and not src.low_id
    assert s.FoundSource(42, 4662).ip is None


def test_large_offer_has_high_size_tag_and_markers() -> None:
    entry = s.FileEntry.build(FH, "big", (5 << 32) + 7, client_id=0xFCFCFCFC, port=0xFCFC)
    assert entry.size == (5 << 32) + 7 and entry.complete is False
    assert s.FileEntry.build(FH, "a", 1).complete is None


def test_packed_server_packet_is_read_as_edonkey() -> None:
    # aMule packs OFFERFILES to servers with SRV_TCPFLG_COMPRESSION (0xD4 + zlib)
    offer = s.OfferFiles(tuple(s.FileEntry.build(FH, f"n{i}.bin", i + 1) for i in range(20)))
    wire = offer.encode(pack=True)
    assert wire[0] == 0xD4
    assert _decode(wire) == offer


def test_plain_emule_packet_is_unknown() -> None:
    msg = _decode(_frame(0x40, b"\x01\x02\x03\x04", prot=0xC5))
    assert isinstance(msg, s.Unknown) and msg.opcode == 0x40


@pytest.mark.parametrize(
    "wire",
    [
        _frame(0x40, b"\x01\x02"),  # IDCHANGE shorter than its id
        _frame(0x40, struct.pack("<II", 5, 0) + b"\x01"),  # a stray byte
        _frame(0x42, FH + b"\x03" + bytes(12)),  # 3 sources announced, 2 present
        _frame(0x42, FH + b"\x01" + bytes(7)),  # a trailing byte
        _frame(0x44, FH + b"\x01" + struct.pack("<IHB", 1, 2, 0x80) + bytes(10)),  # short hash
        _frame(0x19, FH + struct.pack("<IQ", 5, 5)),  # 64-bit form without the 0
        _frame(0x15, struct.pack("<I", 100_000)),  # more files than bytes
        _frame(0x16, b"\x00\x07" + b"\x01\x00\x00" * 2),  # unknown operator
        _frame(0x16, b"\x00\x00" * 40 + b"\x01\x00\x00" * 41),  # deeper than the cap
        _frame(0x16, b"\x09"),  # unknown node type
        _frame(0x38, b"\x09\x00abc"),  # message length past the end
        _frame(0x32, b"\x02" + bytes(6)),  # 2 servers, one present
    ],
)
def test_malformed_packets_raise_server_error(wire: bytes) -> None:
    with pytest.raises(s.ServerError):
        _decode(wire)


def test_zlib_bomb_is_capped() -> None:
    bomb = zlib.compress(bytes(s.MAX_SERVER_UNPACKED + 10), 9)
    with pytest.raises(ProtocolError, match="inflates past"):
        s.server_decoder().feed(_frame(0x15, bomb, prot=0xD4))


# --- hypothesis round trips ------------------------------------------------------------------

hashes = st.binary(min_size=16, max_size=16)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
names = st.text(min_size=0, max_size=40)
tags = st.lists(
    st.one_of(
        st.builds(Tag.integer, st.integers(0, 255), st.integers(0, (1 << 64) - 1)),
        st.builds(Tag.string, st.integers(0, 255), names),
    ),
    max_size=5,
).map(tuple)
entries = st.builds(s.FileEntry, hashes, u32, u16, tags)


@st.composite
def found_sources(draw: st.DrawFn) -> s.FoundSources:
    obfuscated = draw(st.booleans())
    sources = []
    for _ in range(draw(st.integers(0, 8))):
        cid, port = draw(u32), draw(u16)
        if not obfuscated:
            sources.append(s.FoundSource(cid, port))
            continue
        crypt = draw(st.integers(0, 0x7F))
        uh = draw(st.one_of(st.none(), hashes))
        sources.append(s.FoundSource(cid, port, crypt | (0x80 if uh else 0), uh))
    return s.FoundSources(draw(hashes), tuple(sources), obfuscated)


search_leaves = st.one_of(
    st.builds(s.SearchKeyword, st.binary(max_size=20)),
    st.builds(s.SearchMeta, st.binary(max_size=20), st.integers(0, 255)),
    st.builds(s.SearchNumeric, u32, st.integers(0, 5), st.integers(0, 255)),
    st.builds(
        s.SearchNumeric,
        st.integers(0, (1 << 64) - 1),
        st.integers(0, 5),
        st.binary(min_size=2, max_size=6),
        st.just(True),
    ),
)
search_trees = st.recursive(
    search_leaves,
    lambda kids: st.builds(s.SearchBool, st.integers(0, 2), kids, kids),
    max_leaves=8,
)

id_changes = st.one_of(
    st.builds(s.IdChange, u32),
    st.builds(s.IdChange, u32, u32),
    st.builds(s.IdChange, u32, u32, u32),
    st.builds(s.IdChange, u32, u32, u32, u32, u32, st.binary(max_size=8)),
)

server_messages = st.one_of(
    st.builds(s.LoginRequest, hashes, u32, u16, tags),
    st.builds(s.ServerMessage, st.binary(max_size=200)),
    id_changes,
    st.builds(s.ServerStatus, u32, u32, st.binary(max_size=8)),
    st.builds(s.ServerIdent, hashes, u32, u16, tags),
    st.builds(
        s.ServerList,
        st.lists(st.tuples(st.ip_addresses(v=4).map(str), u16), max_size=5).map(tuple),
    ),
    st.builds(s.OfferFiles, st.lists(entries, max_size=4).map(tuple)),
    st.builds(
        s.SearchResult,
        st.lists(entries, max_size=4).map(tuple),
        st.one_of(st.none(), u16.map(lambda v: v & 1)),
    ),
    st.builds(s.SearchRequest, search_trees),
    st.builds(
        s.GetSources,
        hashes,
        st.one_of(st.none(), u32, st.integers(1 << 32, (1 << 64) - 1)),
        st.booleans(),
    ),
    found_sources(),
    st.just(s.GetServerList()),
    st.just(s.Reject()),
)


@settings(max_examples=300, deadline=None)
@given(server_messages)
def test_round_trip(message: s.ServerMessageType) -> None:
    wire = message.encode()
    assert _decode(wire) == message
    assert _decode(wire).encode() == wire


# --- totality ----------------------------------------------------------------------------------

OPCODES = sorted({int(op) for op in s.ServerOp})


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(OPCODES), st.binary(max_size=300), st.booleans())
def test_decode_is_total_on_random_payloads(opcode: int, payload: bytes, packed: bool) -> None:
    prot = Protocol.EMULE if packed else Protocol.EDONKEY
    with contextlib.suppress(ProtocolError):
        s.decode(Packet(prot, opcode, payload, packed=packed))


def test_decode_is_total_on_mutated_golden_packets() -> None:
    rng = random.Random(7)
    for wire, _ in GOLDEN:
        payload = wire[6:]
        for _ in range(300):
            data = bytearray(payload)
            for _ in range(rng.randint(1, 4)):
                action = rng.randrange(3)
                if action == 0 and data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
                elif action == 1 and data:
                    del data[rng.randrange(len(data)) :]
                else:
                    data[rng.randrange(len(data) + 1) : 0] = rng.randbytes(rng.randint(1, 8))
            with contextlib.suppress(ProtocolError):
                s.decode(Packet(Protocol.EDONKEY, wire[5], bytes(data)))


def test_session_decoder_is_total_on_random_streams() -> None:
    rng = random.Random(11)
    for _ in range(300):
        session = s.ServerSession(s.LoginRequest.build(UH))
        session.start(0.0)
        blob = rng.randbytes(rng.randint(0, 200))
        if rng.random() < 0.5:
            blob = bytes([rng.choice((0xE3, 0xD4, 0xC5))]) + blob
        try:
            session.receive(blob, 1.0)
        except ProtocolError:
            assert session.state is s.SessionState.FAILED


# --- the session ---------------------------------------------------------------------------------


def _logged_in(flags: int = s.SRV_TCPFLG_TCPOBFUSCATION, **config: object) -> s.ServerSession:
    session = s.ServerSession(s.LoginRequest.build(UH), s.SessionConfig(**config))  # type: ignore[arg-type]
    session.start(0.0)
    assert PacketDecoder().feed(session.data_to_send())[0].opcode == s.ServerOp.LOGINREQUEST
    return session


def _sent(session: s.ServerSession) -> list[s.ServerMessageType]:
    return [s.decode(p) for p in PacketDecoder().feed(session.data_to_send())]


def test_transitions_table_matches_the_states() -> None:
    assert set(s.TRANSITIONS.values()) <= set(s.SessionState)
    assert (s.SessionState.NEW, s._Input.START) in s.TRANSITIONS
    assert all(
        s.TRANSITIONS[(st_, s._Input.ERROR)] is s.SessionState.FAILED
        for st_ in s.SessionState
        if st_ is not s.SessionState.FAILED
    )


def test_session_waits_for_idchange_then_asks_obfuscated_in_one_write() -> None:
    session = _logged_in()
    session.ask_sources([s.FileQuery(FH, 300_000), s.FileQuery(FH2)], 0.5)
    assert session.data_to_send() == b""  # nothing before the IDCHANGE
    assert session.deadline == 25.0  # the login deadline
    wire = (
        s.ServerMessage(b"server version 17.15\nwelcome").encode()
        + s.IdChange(0x0110007F, s.SRV_TCPFLG_TCPOBFUSCATION | s.SRV_TCPFLG_COMPRESSION).encode()
        + s.ServerStatus(3, 9).encode()
    )
    events = session.receive(wire, 1.0)
    assert events[0] == s.MessageReceived(("server version 17.15", "welcome"))
    assert isinstance(events[1], s.LoggedIn) and not events[1].low_id
    assert events[2] == s.StatusReceived(3, 9)
    assert session.state is s.SessionState.CONNECTED
    assert _sent(session) == [
        s.GetSources(FH, 300_000, obfuscated=True),
        s.GetSources(FH2, None, obfuscated=True),
    ]
    assert session.deadline == 11.0  # answer timeout 10 s from the batch
    answer = s.FoundSources(FH, (s.FoundSource(0x0110007F, 4662, 0x87, UH),), obfuscated=True)
    packed = answer.encode(pack=True)
    assert packed[0] == 0xE3  # too small to gain from zlib: sent plain, as aMule does
    [found] = session.receive(packed, 2.0)
    assert found == s.SourcesFound(FH, answer.sources, True)
    assert not session.idle
    assert session.expire(5.0) == []  # not yet
    assert session.expire(11.0) == [s.SourcesUnanswered((FH2,))]
    assert session.idle


def test_session_uses_plain_getsources_without_the_server_flag() -> None:
    session = _logged_in()
    session.receive(s.IdChange(5, 0).encode(), 1.0)
    session.ask_sources([s.FileQuery(FH)], 1.0)
    assert _sent(session) == [s.GetSources(FH)]


def test_session_sends_batches_of_fifteen() -> None:
    session = _logged_in()
    session.receive(s.IdChange(5, s.SRV_TCPFLG_TCPOBFUSCATION).encode(), 1.0)
    files = [s.FileQuery(bytes([i]) * 16) for i in range(20)]
    session.ask_sources(files, 1.0)
    first = _sent(session)
    assert len(first) == 15
    for q in files[:15]:
        session.receive(s.FoundSources(q.file_hash, (), obfuscated=True).encode(), 2.0)
    second = _sent(session)
    assert [m.file_hash for m in second if isinstance(m, s.GetSources)] == [
        q.file_hash for q in files[15:]
    ]


def test_session_faults() -> None:
    session = _logged_in()
    with pytest.raises(s.ServerError, match="before the IDCHANGE"):
        session.receive(s.FoundSources(FH, ()).encode(), 1.0)
    assert session.state is s.SessionState.FAILED
    session = _logged_in()
    with pytest.raises(s.ServerError, match="id 0"):
        session.receive(s.IdChange(0).encode(), 1.0)
    session = _logged_in()
    with pytest.raises(s.ServerError, match="client's message") as info:
        session.receive(s.IdChange(9).encode() + s.GetSources(FH).encode(), 1.0)
    assert isinstance(info.value.events[0], s.LoggedIn)  # what came before the fault is kept


def test_unasked_sources_are_not_events_of_our_files() -> None:
    session = _logged_in()
    session.receive(s.IdChange(9).encode(), 1.0)
    [event] = session.receive(s.FoundSources(FH, ()).encode(), 1.0)
    assert isinstance(event, s.Unhandled)
