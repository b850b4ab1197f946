"""Peer wire connection: golden bytes built by hand with struct, a fake remote peer answering in
memory, BEP 9 metadata exchange, BEP 11 PEX, framing limits and fuzzing. No network."""

from __future__ import annotations

import contextlib
import hashlib
import random
import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peerwatch.protocols.bittorrent.bencode import bdecode, bencode
from peerwatch.protocols.bittorrent.metainfo import parse_metainfo
from peerwatch.protocols.bittorrent.peer_wire import (
    MAX_MESSAGE_LEN,
    MAX_METADATA_SIZE,
    METADATA_PIECE_SIZE,
    AllowedFast,
    Bitfield,
    Cancel,
    Choke,
    DhtPort,
    Event,
    ExtensionHandshake,
    HandshakeReceived,
    Have,
    HaveNone,
    InfoHashMismatch,
    Interested,
    KeepAlive,
    MetadataAssembler,
    MetadataError,
    MetadataPiece,
    MetadataReject,
    MetadataRequest,
    NotInterested,
    PeerConnection,
    PeerWireError,
    PexPeers,
    PieceBlock,
    Reject,
    Request,
    State,
    SuggestPiece,
    Unchoke,
    UnknownMessage,
)
from tests.protocols.bittorrent.torrent_builder import Content, v2

RNG = random.Random(20240503)
IH = RNG.randbytes(20)
OUR_ID = b"-PW0001-" + RNG.randbytes(12)
PEER_ID = b"-lt20B0-" + RNG.randbytes(12)
NOW = 1000.0

EXT_FAST = bytes([0, 0, 0, 0, 0, 0x10, 0, 0x04])  # BEP 10 + BEP 6 bits
PEER_UT_METADATA = 3  # the fake peer's own ids (what we must use when sending to it)
PEER_UT_PEX = 1
OUR_UT_METADATA = 2  # the ids we advertise (what it uses when sending to us)
OUR_UT_PEX = 1


# --- hand-built wire bytes ----------------------------------------------------------------------


def handshake(info_hash: bytes = IH, peer_id: bytes = PEER_ID, reserved: bytes = EXT_FAST) -> bytes:
    return struct.pack(">B19s8s20s20s", 19, b"BitTorrent protocol", reserved, info_hash, peer_id)


def msg(mid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", 1 + len(payload), mid) + payload


def ext(ext_id: int, body: bytes) -> bytes:
    return msg(20, bytes([ext_id]) + body)


def ext_handshake(metadata_size: int | None = None, **extra: object) -> bytes:
    d: dict[bytes, object] = {
        b"m": {b"ut_metadata": PEER_UT_METADATA, b"ut_pex": PEER_UT_PEX},
        b"v": b"libtorrent/2.0.11",
        b"p": 6881,
        b"reqq": 500,
        b"yourip": bytes([127, 0, 0, 9]),
    }
    if metadata_size is not None:
        d[b"metadata_size"] = metadata_size
    d.update({k.encode(): v for k, v in extra.items()})
    return ext(0, bencode(d))


def connect(info_hash: bytes = IH, **kwargs: bool) -> PeerConnection:
    conn = PeerConnection(info_hash, OUR_ID, now=NOW, **kwargs)
    conn.initiate()
    return conn


def feed(conn: PeerConnection, data: bytes) -> list[Event]:
    return conn.receive(data, NOW + 1)


def bitfield_bytes(have: set[int], n: int) -> bytes:
    bits = bytearray((n + 7) // 8)
    for i in have:
        bits[i // 8] |= 0x80 >> (i % 8)
    return bytes(bits)


class FakePeer:
    """The remote side: answers our handshake, advertises ut_metadata/ut_pex, sends a bitfield,
    and serves BEP 9 metadata pieces (optionally tampered with)."""

    def __init__(
        self,
        info: bytes,
        have: set[int],
        pieces: int,
        *,
        info_hash: bytes = IH,
        tamper: bool = False,
    ) -> None:
        self.info = info
        self.info_hash = info_hash
        self.have = have
        self.pieces = pieces
        self.tamper = tamper

    def greeting(self) -> bytes:
        return (
            handshake(self.info_hash)
            + ext_handshake(len(self.info))
            + msg(5, bitfield_bytes(self.have, self.pieces))
        )

    def answer(self, data: bytes) -> bytes:
        """Answer one ut_metadata request framed by us."""
        length, mid, ext_id = struct.unpack_from(">IBB", data)
        assert len(data) == 4 + length and mid == 20 and ext_id == PEER_UT_METADATA
        req = bdecode(data[6:])
        assert req[b"msg_type"] == 0
        piece = req[b"piece"]
        chunk = self.info[piece * METADATA_PIECE_SIZE : (piece + 1) * METADATA_PIECE_SIZE]
        if self.tamper and piece == 0:
            chunk = bytes([chunk[0] ^ 1]) + chunk[1:]
        head = bencode({b"msg_type": 1, b"piece": piece, b"total_size": len(self.info)})
        return ext(OUR_UT_METADATA, head + chunk)


def benign_info(rng: random.Random, pieces: int = 1200) -> bytes:
    """A v1 info dict of random piece hashes (no content needed): over 16 KiB, so BEP 9 needs
    several metadata pieces."""
    info = {
        b"length": pieces * 16384 - 100,
        b"name": b"sample.bin",
        b"piece length": 16384,
        b"pieces": rng.randbytes(20 * pieces),
    }
    return bencode(info)


# --- golden bytes -------------------------------------------------------------------------------


def test_initiate_golden_bytes() -> None:
    conn = PeerConnection(IH, OUR_ID, now=NOW)
    expected = b"\x13BitTorrent protocol" + b"\x00\x00\x00\x00\x00\x10\x00\x04" + IH + OUR_ID
    assert conn.initiate() == expected
    assert len(expected) == 68
    plain = PeerConnection(IH, OUR_ID, extensions=False, fast=False, dht=True, now=NOW)
    assert plain.initiate()[20:28] == bytes(7) + b"\x01"  # BEP 5 DHT bit only
    with pytest.raises(PeerWireError):
        conn.initiate()  # once only: NEW -> AWAITING_HANDSHAKE is the only initiate transition


def test_send_golden_bytes() -> None:
    conn = connect()
    assert conn.send_keepalive() == b"\x00\x00\x00\x00"
    assert conn.send_interested() == b"\x00\x00\x00\x01\x02"
    assert conn.send_not_interested() == b"\x00\x00\x00\x01\x03"
    assert conn.send_request(7, 16384) == struct.pack(">IBIII", 13, 6, 7, 16384, 16384)
    assert conn.send_cancel(7, 0, 100) == struct.pack(">IBIII", 13, 8, 7, 0, 100)
    with pytest.raises(ValueError):
        conn.send_request(0, 0, 16385)
    raw = conn.send_extension_handshake(client="peerwatch/0.1", listen_port=6881, reqq=10)
    length, mid, ext_id = struct.unpack_from(">IBB", raw)
    assert (length, mid, ext_id) == (len(raw) - 4, 20, 0)
    assert bdecode(raw[6:]) == {
        b"m": {b"ut_metadata": OUR_UT_METADATA, b"ut_pex": OUR_UT_PEX},
        b"p": 6881,
        b"reqq": 10,
        b"v": b"peerwatch/0.1",
    }
    with pytest.raises(RuntimeError):
        conn.request_metadata(0)  # the peer has not announced ut_metadata yet
    feed(conn, handshake() + ext_handshake(100))
    assert conn.request_metadata(1) == ext(PEER_UT_METADATA, b"d8:msg_typei0e5:piecei1ee")
    assert conn.send_metadata_reject(0) == ext(PEER_UT_METADATA, b"d8:msg_typei2e5:piecei0ee")
    assert conn.send_have_none() == b"\x00\x00\x00\x01\x0f"
    conn.set_piece_count(3)
    with pytest.raises(ValueError):
        conn.send_request(3, 0)


# --- the fake peer conversation -----------------------------------------------------------------


def test_fake_peer_handshake_extension_bitfield() -> None:
    info = benign_info(random.Random(1))
    peer = FakePeer(info, {0, 1, 2, 9}, 12)
    conn = connect()
    conn.set_piece_count(12)
    events = feed(conn, peer.greeting())
    assert events == [
        HandshakeReceived(IH, PEER_ID, EXT_FAST, True, True, False),
        ExtensionHandshake(
            client="libtorrent/2.0.11",
            listen_port=6881,
            yourip="127.0.0.9",
            reqq=500,
            m={"ut_metadata": PEER_UT_METADATA, "ut_pex": PEER_UT_PEX},
            metadata_size=len(info),
        ),
        Bitfield(bitfield_bytes({0, 1, 2, 9}, 12), 4, 12),
    ]
    assert conn.state is State.CONNECTED
    assert (conn.have_count, conn.piece_count, conn.is_seed) == (4, 12, False)
    assert conn.extensions_enabled and conn.fast_enabled
    assert conn.remote_metadata_size == len(info)
    assert feed(conn, msg(4, struct.pack(">I", 5)) + msg(4, struct.pack(">I", 5))) == [
        Have(5),
        Have(5),
    ]
    assert conn.have_count == 5  # a repeated have counts once
    assert conn.last_received_at == NOW + 1


def test_message_events() -> None:
    conn = connect()
    feed(conn, handshake() + msg(14))  # have all: a seed
    conn.set_piece_count(10)
    assert conn.is_seed and conn.have_count == 10
    stream = (
        bytes(4)
        + msg(0)
        + msg(1)
        + msg(2)
        + msg(3)
        + msg(7, struct.pack(">II", 2, 16384) + b"block")
        + msg(6, struct.pack(">III", 1, 0, 16384))
        + msg(8, struct.pack(">III", 1, 0, 16384))
        + msg(16, struct.pack(">III", 3, 0, 16384))
        + msg(13, struct.pack(">I", 4))
        + msg(17, struct.pack(">I", 5))
        + msg(9, struct.pack(">H", 6881))
        + msg(99, b"xyz")
        + ext(77, b"whatever")
    )
    assert feed(conn, stream) == [
        KeepAlive(),
        Choke(),
        Unchoke(),
        Interested(),
        NotInterested(),
        PieceBlock(2, 16384, b"block"),
        Request(1, 0, 16384),
        Cancel(1, 0, 16384),
        Reject(3, 0, 16384),
        SuggestPiece(4),
        AllowedFast(5),
        DhtPort(6881),
        UnknownMessage(99, None, 3),
        UnknownMessage(20, 77, 8),
    ]


def test_have_none_and_sideband_before_first_message() -> None:
    conn = connect()
    # Extended and port messages may come before the piece set; keep-alives too.
    events = feed(conn, handshake() + ext_handshake() + bytes(4) + msg(9, b"\x1a\xe1") + msg(15))
    assert [type(e) for e in events] == [
        HandshakeReceived,
        ExtensionHandshake,
        KeepAlive,
        DhtPort,
        HaveNone,
    ]
    assert conn.have_count == 0 and not conn.is_seed


def test_no_bitfield_first_message_is_fine() -> None:
    conn = connect()
    feed(conn, handshake() + msg(1) + msg(4, struct.pack(">I", 0)))
    assert conn.state is State.CONNECTED and conn.have_count == 1


def test_bitfield_before_piece_count_is_checked_later() -> None:
    conn = connect()
    feed(conn, handshake() + msg(5, bitfield_bytes({0, 9}, 10)) + msg(4, struct.pack(">I", 3)))
    assert conn.have_count == 3
    conn.set_piece_count(10)
    assert conn.have_count == 3 and conn.piece_count == 10
    conn.set_piece_count(10)  # idempotent
    with pytest.raises(ValueError):
        conn.set_piece_count(11)

    bad = connect()
    feed(bad, handshake() + msg(5, bitfield_bytes({0, 9}, 10)))
    with pytest.raises(PeerWireError, match="bitfield of 2 bytes for 20 pieces"):
        bad.set_piece_count(20)
    assert bad.state is State.CLOSED

    spare = connect()
    feed(spare, handshake() + msg(5, bitfield_bytes({11}, 12)))
    with pytest.raises(PeerWireError):
        spare.set_piece_count(10)  # bit 11 is a spare bit for 10 pieces

    beyond = connect()
    feed(beyond, handshake() + msg(4, struct.pack(">I", 40)))
    with pytest.raises(PeerWireError, match="beyond the last"):
        beyond.set_piece_count(10)


@pytest.mark.parametrize(
    ("stream", "match"),
    [
        (msg(5, b"\xff\xc0") + msg(5, b"\xff\xc0"), "not allowed while connected"),
        (msg(1) + msg(5, b"\xff\xc0"), "bitfield is not allowed"),
        (msg(14) + msg(15), "have_none is not allowed"),
        (msg(5, b"\xff"), "bitfield of 1 bytes for 10 pieces"),
        (msg(5, b"\xff\xe0"), "spare bits"),
        (msg(4, struct.pack(">I", 10)), "beyond the last piece"),
        (msg(4, b"\x00\x00\x01"), "have has 3 payload bytes, expected 4"),
        (msg(7, b"\x00\x00"), "no header"),
        (msg(0, b"x"), "choke has 1 payload bytes"),
        (msg(16, struct.pack(">III", 10, 0, 1)), "beyond the last piece"),
        (ext(0, b"le"), "not a bencoded dictionary"),
        (ext(0, b"d1:bi1e1:ai1ee"), "not canonical bencode"),
        (ext(0, b"d1:mi1ee"), "'m' is not a dictionary"),
        (ext(0, b"d1:md1:xi300eee"), "not 0..255"),
    ],
)
def test_protocol_errors(stream: bytes, match: str) -> None:
    conn = connect()
    conn.set_piece_count(10)
    with pytest.raises(PeerWireError, match=match) as info:
        feed(conn, handshake() + stream)
    assert isinstance(info.value.events[0], HandshakeReceived)  # evidence before the fault kept
    assert conn.state is State.CLOSED
    with pytest.raises(PeerWireError, match="closed"):
        feed(conn, bytes(4))


def test_fast_and_extended_messages_need_negotiation() -> None:
    conn = connect(fast=False)
    with pytest.raises(PeerWireError, match="BEP 6"):
        feed(conn, handshake() + msg(14))
    conn = connect()
    with pytest.raises(PeerWireError, match="BEP 6"):
        feed(conn, handshake(reserved=bytes(8)) + msg(15))  # the peer did not set the bit
    conn = connect(extensions=False)
    with pytest.raises(PeerWireError, match="BEP 10"):
        feed(conn, handshake() + ext_handshake())
    with pytest.raises(RuntimeError):
        conn.send_extension_handshake()
    with pytest.raises(RuntimeError):
        connect(fast=False).send_have_none()


def test_infohash_mismatch_closes() -> None:
    conn = connect()
    other = bytes(20)
    assert feed(conn, handshake(info_hash=other) + msg(1)) == [
        InfoHashMismatch(expected=IH, received=other, peer_id=PEER_ID)
    ]
    assert conn.state is State.CLOSED
    with pytest.raises(PeerWireError):
        feed(conn, msg(1))


def test_bad_protocol_string_is_rejected_early() -> None:
    conn = connect()
    with pytest.raises(PeerWireError, match="length 20"):
        feed(conn, b"\x14")  # one byte is enough
    conn = connect()
    with pytest.raises(PeerWireError, match="not 'BitTorrent protocol'"):
        feed(conn, b"\x13BitTorrent Protocol")


def test_garbage_after_handshake() -> None:
    conn = connect()
    with pytest.raises(PeerWireError, match="exceeds") as info:
        feed(conn, handshake() + b"GET /announce HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert info.value.events == (HandshakeReceived(IH, PEER_ID, EXT_FAST, True, True, False),)


def test_oversized_length_prefix_rejected_on_prefix_with_bounded_buffer() -> None:
    conn = connect()
    feed(conn, handshake())
    with pytest.raises(PeerWireError, match="exceeds"):
        feed(conn, struct.pack(">I", MAX_MESSAGE_LEN + 1))  # the prefix alone
    assert len(conn._buf) == 0
    # The largest legal message is buffered until complete, and never more than that.
    conn = connect()
    feed(conn, handshake() + msg(1))
    big = msg(7, struct.pack(">II", 0, 0) + bytes(MAX_MESSAGE_LEN - 9))
    assert len(big) == MAX_MESSAGE_LEN + 4
    for i in range(0, len(big) - 1, 65536):
        assert feed(conn, big[i : min(i + 65536, len(big) - 1)]) == []
        assert len(conn._buf) <= MAX_MESSAGE_LEN + 4
    [block] = feed(conn, big[-1:])
    assert isinstance(block, PieceBlock) and len(block.data) == MAX_MESSAGE_LEN - 9
    assert len(conn._buf) == 0


def _stream() -> bytes:
    info = benign_info(random.Random(2), pieces=30)
    peer = FakePeer(info, {1, 3, 5}, 30)
    pex = bencode({b"added": bytes([127, 0, 0, 2, 0x1A, 0xE1]), b"added.f": b"\x02"})
    return (
        peer.greeting()
        + msg(1)
        + ext(OUR_UT_PEX, pex)
        + msg(7, struct.pack(">II", 1, 0) + b"abc")
        + bytes(4)
    )


def test_byte_by_byte_gives_the_same_events() -> None:
    stream = _stream()
    whole = feed(connect(), stream)
    conn = connect()
    one_by_one: list[Event] = []
    for i in range(len(stream)):
        one_by_one += feed(conn, stream[i : i + 1])
    assert one_by_one == whole
    assert len(whole) == 7


@given(st.lists(st.integers(min_value=0, max_value=1), min_size=1, max_size=1200))
@settings(max_examples=40, deadline=None)
def test_any_chunking_gives_the_same_events(cuts: list[int]) -> None:
    stream = _stream()
    expected = feed(connect(), stream)
    conn = connect()
    got: list[Event] = []
    start = 0
    for i, cut in enumerate(cuts):
        if cut and i > start:
            got += feed(conn, stream[start:i])
            start = i
    got += feed(conn, stream[start:])
    assert got == expected


# --- BEP 9 metadata -----------------------------------------------------------------------------


def fetch_metadata(peer: FakePeer) -> bytes:
    conn = connect(peer.info_hash)
    events = feed(conn, peer.greeting())
    [ext_hs] = [e for e in events if isinstance(e, ExtensionHandshake)]
    assert ext_hs.metadata_size is not None
    asm = MetadataAssembler(peer.info_hash, ext_hs.metadata_size)
    for piece in asm.missing():
        for event in feed(conn, peer.answer(conn.request_metadata(piece))):
            assert isinstance(event, MetadataPiece)
            asm.add(event)
    assert asm.complete
    return asm.result()


def test_metadata_exchange_v1_verifies_and_parses() -> None:
    info = benign_info(random.Random(3))
    assert len(info) > 16384  # several metadata pieces
    ih = hashlib.sha1(info, usedforsecurity=False).digest()
    got = fetch_metadata(FakePeer(info, set(), 1200, info_hash=ih))
    assert got == info
    meta = parse_metainfo(b"d4:info" + got + b"e")
    assert meta.btih == ih and meta.piece_length == 16384


def test_metadata_wrong_hash_is_rejected() -> None:
    info = benign_info(random.Random(4))
    ih = hashlib.sha1(info, usedforsecurity=False).digest()
    with pytest.raises(MetadataError, match="does not hash"):
        fetch_metadata(FakePeer(info, set(), 1200, info_hash=ih, tamper=True))


def test_metadata_assembler_v2() -> None:
    meta = v2([Content(("a.bin",), random.Random(5).randbytes(100))])
    info = bencode(meta[b"info"])
    btmh = hashlib.sha256(info).digest()

    def assemble(info_hash: bytes, full: bytes | None = None) -> bytes:
        asm = MetadataAssembler(info_hash, len(info), btmh=full)
        asm.add(MetadataPiece(0, len(info), info))
        return asm.result()

    assert assemble(btmh[:20]) == info  # BEP 52 truncated infohash
    assert assemble(btmh[:20], btmh) == info
    assert assemble(btmh) == info  # the full 32-byte v2 infohash
    with pytest.raises(MetadataError):
        assemble(btmh[:20], bytes(32))  # the truncated one matches, the full one does not
    with pytest.raises(MetadataError):
        assemble(bytes(20))


def test_metadata_assembler_rejects_bad_pieces() -> None:
    size = 2 * METADATA_PIECE_SIZE + 10
    asm = MetadataAssembler(IH, size)
    assert asm.piece_total == 3 and asm.missing() == [0, 1, 2]
    cases: list[tuple[MetadataPiece, str]] = [
        (MetadataPiece(0, size + 1, bytes(METADATA_PIECE_SIZE)), "total_size"),
        (MetadataPiece(3, size, bytes(10)), "piece 3 of 3"),
        (MetadataPiece(0, size, bytes(100)), "expected 16384"),
        (MetadataPiece(2, size, bytes(11)), "expected 10"),
    ]
    for piece, match in cases:
        with pytest.raises(MetadataError, match=match):
            asm.add(piece)
    with pytest.raises(RuntimeError):
        asm.result()
    with pytest.raises(MetadataError):
        MetadataAssembler(IH, MAX_METADATA_SIZE + 1)
    with pytest.raises(MetadataError):
        MetadataAssembler(IH, 0)


def test_metadata_messages() -> None:
    conn = connect()
    feed(conn, handshake() + ext_handshake(50))
    head = bencode({b"msg_type": 1, b"piece": 0, b"total_size": 50})
    events = feed(
        conn,
        ext(OUR_UT_METADATA, b"d8:msg_typei0e5:piecei0ee")
        + ext(OUR_UT_METADATA, b"d8:msg_typei2e5:piecei1ee")
        + ext(OUR_UT_METADATA, head + b"x" * 50)
        + ext(OUR_UT_METADATA, b"d8:msg_typei9e5:piecei0ee"),
    )
    assert events == [
        MetadataRequest(0),
        MetadataReject(1),
        MetadataPiece(0, 50, b"x" * 50),
        UnknownMessage(20, OUR_UT_METADATA, 25),  # BEP 9: unknown msg_type is ignored
    ]


@pytest.mark.parametrize(
    "body",
    [
        b"d8:msg_typei1e5:piecei0ee" + b"x",  # data without total_size
        bencode({b"msg_type": 1, b"piece": 0, b"total_size": 99999}) + bytes(16385),
        b"d8:msg_typei0ee",  # no piece
        b"d8:msg_typei0e5:piecei0e",  # truncated
        b"i1e",  # not a dict
        b"d" * 40,  # too deep
        b"d8:msg_typei0e5:piecei-1ee",
        b"d8:msg_typei0e5:piece99999999999:",
        b"x",
    ],
)
def test_bad_metadata_messages(body: bytes) -> None:
    conn = connect()
    feed(conn, handshake() + ext_handshake(50))
    with pytest.raises(PeerWireError):
        feed(conn, ext(OUR_UT_METADATA, body))


def test_extension_handshake_updates_and_tolerates_odd_fields() -> None:
    conn = connect()
    feed(conn, handshake() + ext_handshake())
    [update] = feed(
        conn,
        ext(
            0,
            bencode(
                {
                    b"m": {b"ut_pex": 0, b"lt_donthave": 7},
                    b"metadata_size": MAX_METADATA_SIZE + 1,
                    b"p": 70000,
                    b"v": 5,
                    b"yourip": b"abc",
                    b"upload_only": 1,
                }
            ),
        ),
    )
    assert update == ExtensionHandshake(
        client=None,
        listen_port=None,
        yourip=None,
        reqq=None,
        m={"ut_metadata": PEER_UT_METADATA, "lt_donthave": 7},
        metadata_size=None,
        upload_only=True,
    )
    assert conn.remote_extensions == {"ut_metadata": PEER_UT_METADATA, "lt_donthave": 7}


# --- BEP 11 PEX ---------------------------------------------------------------------------------


def test_pex_parsing() -> None:
    conn = connect()
    feed(conn, handshake() + ext_handshake())
    v6 = bytes.fromhex("00000000000000000000000000000001")
    body = bencode(
        {
            b"added": bytes([127, 0, 0, 2, 0x1A, 0xE1, 127, 0, 0, 3, 0, 80]),
            b"added.f": b"\x01\x12",
            b"added6": v6 + b"\x1a\xe2",
            b"added6.f": b"\x00",
            b"dropped": bytes([127, 0, 0, 4, 0x1A, 0xE3]),
            b"dropped6": b"",
        }
    )
    assert feed(conn, ext(OUR_UT_PEX, body)) == [
        PexPeers(
            added=(("127.0.0.2", 6881), ("127.0.0.3", 80)),
            added_flags=(0x01, 0x12),
            added6=(("::1", 6882),),
            added6_flags=(0,),
            dropped=(("127.0.0.4", 6883),),
            dropped6=(),
        )
    ]
    # A flags string of the wrong length is ignored (flags 0), like libtorrent does.
    [odd] = feed(conn, ext(OUR_UT_PEX, bencode({b"added": bytes(6), b"added.f": b"\x01\x02"})))
    assert isinstance(odd, PexPeers) and odd.added_flags == (0,)
    with pytest.raises(PeerWireError, match="multiple of 6"):
        feed(conn, ext(OUR_UT_PEX, bencode({b"added": bytes(7)})))


def test_pex_rejects_non_bytes() -> None:
    conn = connect()
    feed(conn, handshake() + ext_handshake())
    with pytest.raises(PeerWireError, match="added6"):
        feed(conn, ext(OUR_UT_PEX, bencode({b"added6": 5})))


# --- fuzzing ------------------------------------------------------------------------------------

_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_peer_wire_errors(conn: PeerConnection, chunks: list[bytes]) -> None:
    for chunk in chunks:
        try:
            feed(conn, chunk)
        except PeerWireError:
            return


@given(st.lists(st.binary(max_size=200), max_size=5))
@_FUZZ
def test_fuzz_raw_bytes(chunks: list[bytes]) -> None:
    _only_peer_wire_errors(connect(), chunks)


@given(st.binary(max_size=400), st.booleans())
@_FUZZ
def test_fuzz_after_handshake(data: bytes, count_known: bool) -> None:
    conn = connect()
    if count_known:
        conn.set_piece_count(13)
    feed(conn, handshake() + ext_handshake(100))
    _only_peer_wire_errors(conn, [data])


_frames = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 20, 21]),
        st.one_of(
            st.binary(max_size=40),
            st.builds(lambda e, b: bytes([e]) + b, st.sampled_from([0, 1, 2, 3]), st.binary()),
            st.builds(
                lambda e, b: bytes([e]) + b,
                st.sampled_from([0, 1, 2]),
                st.sampled_from(
                    [
                        b"d8:msg_typei1e5:piecei0e10:total_sizei5ee12345",
                        b"d1:md6:ut_pexi1eee",
                        b"d5:added6:abcdefe",
                        b"d8:msg_typei0e5:piecei0ee",
                    ]
                ),
            ),
        ),
    ),
    max_size=8,
)


@given(_frames, st.booleans())
@_FUZZ
def test_fuzz_well_framed_messages(frames: list[tuple[int, bytes]], count_known: bool) -> None:
    """Valid length prefixes with arbitrary ids and payloads reach every decoder branch."""
    conn = connect()
    if count_known:
        conn.set_piece_count(9)
    feed(conn, handshake())
    _only_peer_wire_errors(conn, [msg(mid, payload) for mid, payload in frames])
    if not count_known and conn.state is not State.CLOSED:
        with contextlib.suppress(PeerWireError):
            conn.set_piece_count(9)


def test_constructor_validates() -> None:
    bad: list[Callable[[], object]] = [
        lambda: PeerConnection(b"short", OUR_ID, now=NOW),
        lambda: MetadataAssembler(b"short", 10),
        lambda: MetadataAssembler(IH, 10, btmh=b"x"),
    ]
    for make in bad:
        with pytest.raises(ValueError):
            make()
    with pytest.raises(RuntimeError):
        PeerConnection(IH, OUR_ID, now=NOW).receive(b"", NOW)
