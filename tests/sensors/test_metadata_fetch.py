"""BEP 9 metadata fetch from one peer: the sans-IO session against scripted peer bytes (honest and
hostile), then the asyncio driver against a fake peer on 127.0.11.200 (loopback only).

Every torrent here is built from random bytes (benign); no real content or hash list is used.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import struct
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.protocols.bittorrent.bencode import bdecode, bencode
from peerwatch.protocols.bittorrent.peer_wire import (
    MAX_METADATA_SIZE,
    METADATA_PIECE_SIZE,
    OUR_EXTENSIONS,
)
from peerwatch.transport.egress import EgressDeniedError
from peerwatch.transport.metadata_fetch import (
    FETCHED,
    MetadataFetchConfig,
    MetadataSession,
    fetch_metadata,
)

OUR_ID = b"-PW0010-metadatatest"
PEER_ID = b"-LT2110-scriptedpeer"
EXT_FAST = bytes([0, 0, 0, 0, 0, 0x10, 0, 0x04])  # BEP 10 + BEP 6 reserved bits
THEIR_UT_METADATA = 3  # the scripted peer's id: what we must use when we send to it
OUR_UT_METADATA = OUR_EXTENSIONS["ut_metadata"]  # what it must use when it sends to us
HOST = "127.0.11.200"  # this test file's own loopback address (the lab owns 127.0.11.1-250)


# --- benign torrents ----------------------------------------------------------------------------


def v1_info(rng: random.Random, pieces: int = 2000, **extra: object) -> bytes:
    """A v1 info dict of random piece hashes: 2000 pieces make ~40 KB, three BEP 9 pieces."""
    info: dict[bytes, object] = {
        b"length": pieces * 16384 - 7,
        b"name": b"benign.bin",
        b"piece length": 16384,
        b"pieces": rng.randbytes(20 * pieces),
    }
    info.update({k.encode(): v for k, v in extra.items()})
    return bencode(info)


def v2_info(rng: random.Random) -> bytes:
    """A v2-only info dict (BEP 52) with one file; its pieces root is random (not checked)."""
    tree = {b"benign.bin": {b"": {b"length": 50_000, b"pieces root": rng.randbytes(32)}}}
    return bencode(
        {b"file tree": tree, b"meta version": 2, b"name": b"benign.bin", b"piece length": 16384}
    )


def sha1(data: bytes) -> bytes:
    return hashlib.sha1(data, usedforsecurity=False).digest()


# --- the scripted peer --------------------------------------------------------------------------


def handshake(info_hash: bytes, reserved: bytes = EXT_FAST) -> bytes:
    return struct.pack(">B19s8s20s20s", 19, b"BitTorrent protocol", reserved, info_hash, PEER_ID)


def frame(mid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", 1 + len(payload), mid) + payload


def ext(ext_id: int, body: bytes) -> bytes:
    return frame(20, bytes([ext_id]) + body)


def ext_handshake(metadata_size: int | None, *, ut_metadata: bool = True) -> bytes:
    d: dict[bytes, object] = {
        b"m": {b"ut_metadata": THEIR_UT_METADATA} if ut_metadata else {b"ut_pex": 1},
        b"v": b"scripted/1.0",
        b"p": 6881,
    }
    if metadata_size is not None:
        d[b"metadata_size"] = metadata_size
    return ext(0, bencode(d))


def metadata_piece(piece: int, total: int, data: bytes) -> bytes:
    head = bencode({b"msg_type": 1, b"piece": piece, b"total_size": total})
    return ext(OUR_UT_METADATA, head + data)


def metadata_reject(piece: int) -> bytes:
    return ext(OUR_UT_METADATA, bencode({b"msg_type": 2, b"piece": piece}))


Serve = Callable[[int, bytes], bytes]  # (piece asked, the info it serves) -> bytes to answer


def honest(piece: int, info: bytes) -> bytes:
    chunk = info[piece * METADATA_PIECE_SIZE : (piece + 1) * METADATA_PIECE_SIZE]
    return metadata_piece(piece, len(info), chunk)


class ScriptedPeer:
    """The remote side, byte for byte: its handshake, extension handshake and have_all, then an
    answer (from `serve`) to each BEP 9 request it parses out of what we send."""

    def __init__(
        self,
        info: bytes,
        info_hash: bytes,
        *,
        announce_size: int | None = None,
        serve: Serve = honest,
        greeting: bytes | None = None,
    ) -> None:
        self.info = info
        self.info_hash = info_hash
        self.size = len(info) if announce_size is None else announce_size
        self.serve = serve
        self.custom_greeting = greeting
        self.requests: list[int] = []
        self.batches: list[int] = []  # requests parsed from each chunk we sent
        self.rejects_from_us: list[int] = []
        self.buf = bytearray()
        self.got_handshake = False

    def greeting(self) -> bytes:
        if self.custom_greeting is not None:
            return self.custom_greeting
        return handshake(self.info_hash) + ext_handshake(self.size) + frame(0x0E)  # have_all

    def answer(self, data: bytes) -> bytes:
        self.buf += data
        out = bytearray()
        if not self.got_handshake:
            if len(self.buf) < 68:
                return b""
            assert self.buf[28:48] == self.info_hash and self.buf[48:68] == OUR_ID
            del self.buf[:68]
            self.got_handshake = True
        asked = len(self.requests)
        while len(self.buf) >= 4:
            (length,) = struct.unpack_from(">I", self.buf)
            if len(self.buf) < 4 + length:
                break
            body = bytes(self.buf[4 : 4 + length])
            del self.buf[: 4 + length]
            if length and body[0] == 20 and body[1] == THEIR_UT_METADATA:
                msg = bdecode(body[2:])
                if msg[b"msg_type"] == 0:
                    self.requests.append(msg[b"piece"])
                    out += self.serve(msg[b"piece"], self.info)
                elif msg[b"msg_type"] == 2:
                    self.rejects_from_us.append(msg[b"piece"])
        self.batches.append(len(self.requests) - asked)
        return bytes(out)


def session_for(info_hash: bytes, **kwargs: object) -> MetadataSession:
    return MetadataSession(info_hash, OUR_ID, now=0.0, **kwargs)  # type: ignore[arg-type]


def run(session: MetadataSession, peer: ScriptedPeer, *, rounds: int = 50) -> None:
    """Pump bytes both ways until the session is done or nobody has anything to say."""
    ours = session.initiate()
    theirs = peer.answer(ours) + peer.greeting()
    for _ in range(rounds):
        if session.done or not theirs:
            return
        ours = session.receive(theirs, 1.0)
        theirs = peer.answer(ours) if ours else b""


# --- honest peers ---------------------------------------------------------------------------------


def test_v1_metadata_of_several_pieces_is_fetched_and_verified_by_sha1() -> None:
    info = v1_info(random.Random(1))
    assert len(info) > 2 * METADATA_PIECE_SIZE  # three BEP 9 pieces
    peer = ScriptedPeer(info, sha1(info))
    session = session_for(sha1(info), window=2)
    run(session, peer)
    assert session.error is None
    assert session.info == info
    assert session.verified_as == "sha1"
    assert session.metadata_size == len(info)
    assert sorted(peer.requests) == [0, 1, 2]  # each piece once, no more
    assert session.metainfo is not None and session.metainfo.btih == sha1(info)
    assert session.metainfo.files[0].length == 2000 * 16384 - 7


def test_window_bounds_the_requests_in_flight() -> None:
    info = v1_info(random.Random(2), pieces=4000)  # 80 KB: five pieces
    peer = ScriptedPeer(info, sha1(info))
    session = session_for(sha1(info), window=2)
    run(session, peer)
    assert session.info == info
    assert sorted(peer.requests) == [0, 1, 2, 3, 4]
    # The peer answers everything it got before we speak again, so a chunk's requests are all
    # the requests in flight.
    assert max(peer.batches) == 2


def test_v2_metadata_verified_by_sha256_truncated_and_full() -> None:
    info = v2_info(random.Random(3))
    btmh = hashlib.sha256(info).digest()
    session = session_for(btmh[:20])
    run(session, ScriptedPeer(info, btmh[:20]))
    assert session.info == info and session.verified_as == "sha256-truncated"
    full = session_for(btmh[:20], btmh=btmh)
    run(full, ScriptedPeer(info, btmh[:20]))
    assert full.info == info and full.verified_as == "sha256"
    assert full.metainfo is not None and full.metainfo.btmh == btmh


def test_metadata_requests_from_the_peer_are_rejected() -> None:
    info = v1_info(random.Random(4), pieces=10)
    ask = ext(OUR_UT_METADATA, bencode({b"msg_type": 0, b"piece": 0}))
    greeting = handshake(sha1(info)) + ext_handshake(len(info)) + ask
    peer = ScriptedPeer(info, sha1(info), greeting=greeting)
    session = session_for(sha1(info))
    run(session, peer)
    assert session.info == info
    assert peer.rejects_from_us == [0]  # we serve nothing, not even metadata


# --- hostile peers --------------------------------------------------------------------------------


def test_wrong_hash_is_a_clean_hash_mismatch() -> None:
    rng = random.Random(5)
    info = v1_info(rng)
    other = v1_info(rng)  # same size, other bytes
    assert len(other) == len(info)
    peer = ScriptedPeer(other, sha1(info))  # answers our infohash with someone else's info
    session = session_for(sha1(info))
    run(session, peer)
    assert session.error is not None and session.error.outcome == "hash-mismatch"
    assert session.info is None and session.metainfo is None


def test_one_flipped_byte_is_a_hash_mismatch() -> None:
    info = v1_info(random.Random(6))

    def flip(piece: int, data: bytes) -> bytes:
        chunk = bytearray(data[piece * METADATA_PIECE_SIZE : (piece + 1) * METADATA_PIECE_SIZE])
        if piece == 1:
            chunk[100] ^= 1
        return metadata_piece(piece, len(data), bytes(chunk))

    session = session_for(sha1(info))
    run(session, ScriptedPeer(info, sha1(info), serve=flip))
    assert session.error is not None and session.error.outcome == "hash-mismatch"
    assert session.info is None


def test_metadata_size_over_our_limit_is_refused_before_any_request() -> None:
    info = v1_info(random.Random(7))
    peer = ScriptedPeer(info, sha1(info))
    session = session_for(sha1(info), max_size=20_000)
    run(session, peer)
    assert session.error is not None and session.error.outcome == "too-large"
    assert peer.requests == []  # not one byte of metadata asked for


def test_metadata_size_beyond_the_protocol_bound_counts_as_absent() -> None:
    info = v1_info(random.Random(8))
    for size in (MAX_METADATA_SIZE + 1, 2**40, 0, -5):
        peer = ScriptedPeer(info, sha1(info), announce_size=size)
        session = session_for(sha1(info))
        run(session, peer)
        assert session.error is not None and session.error.outcome == "no-metadata", size
        assert peer.requests == []


def test_pieces_of_the_wrong_size_total_or_index_are_bad_pieces() -> None:
    info = v1_info(random.Random(9))
    n = len(info)

    def short(piece: int, data: bytes) -> bytes:
        return metadata_piece(piece, n, data[piece * METADATA_PIECE_SIZE :][:100])

    def wrong_total(piece: int, data: bytes) -> bytes:
        chunk = data[piece * METADATA_PIECE_SIZE : (piece + 1) * METADATA_PIECE_SIZE]
        return metadata_piece(piece, n + 1, chunk)

    def other_index(piece: int, data: bytes) -> bytes:
        return honest(piece, data) + metadata_piece(piece, n, b"x" * METADATA_PIECE_SIZE)

    for serve in (short, wrong_total):
        session = session_for(sha1(info))
        run(session, ScriptedPeer(info, sha1(info), serve=serve))
        assert session.error is not None and session.error.outcome == "bad-piece", serve
    # The same piece again with other bytes: the last copy is kept, so the hash catches it
    # (pieces 0 and 1 are overwritten before the honest last piece completes the set).
    session = session_for(sha1(info))
    run(session, ScriptedPeer(info, sha1(info), serve=other_index))
    assert session.error is not None and session.error.outcome == "hash-mismatch"
    assert session.info is None


def test_unrequested_pieces_are_ignored() -> None:
    info = v1_info(random.Random(10))
    junk = metadata_piece(2, len(info), b"j" * (len(info) - 2 * METADATA_PIECE_SIZE))
    greeting = handshake(sha1(info)) + ext_handshake(len(info)) + junk
    peer = ScriptedPeer(info, sha1(info), greeting=greeting)
    session = session_for(sha1(info), window=1)  # piece 2 is not asked for at first
    run(session, peer)
    assert session.info == info  # the unasked-for piece 2 did not poison the assembly


def test_reject_no_ut_metadata_no_extensions_and_wrong_infohash() -> None:
    info = v1_info(random.Random(11), pieces=10)
    ih = sha1(info)

    def reject(piece: int, _data: bytes) -> bytes:
        return metadata_reject(piece)

    cases = {
        "rejected": ScriptedPeer(info, ih, serve=reject),
        "no-metadata": ScriptedPeer(
            info, ih, greeting=handshake(ih) + ext_handshake(len(info), ut_metadata=False)
        ),
        "refused": ScriptedPeer(info, ih, greeting=handshake(b"\x01" * 20)),
    }
    for outcome, peer in cases.items():
        session = session_for(ih)
        run(session, peer)
        assert session.error is not None and session.error.outcome == outcome
        assert session.info is None
    no_bep10 = session_for(ih)
    run(no_bep10, ScriptedPeer(info, ih, greeting=handshake(ih, reserved=bytes(8))))
    assert no_bep10.error is not None and no_bep10.error.outcome == "no-metadata"


def test_verified_bytes_that_are_no_torrent_are_bad_metadata() -> None:
    info = bencode({b"name": b"x", b"note": b"hashes right, but no pieces or length"})
    session = session_for(sha1(info))
    run(session, ScriptedPeer(info, sha1(info)))
    assert session.error is not None and session.error.outcome == "bad-metadata"
    assert session.info is None


def test_garbage_after_the_handshake_is_a_protocol_error() -> None:
    info = v1_info(random.Random(12), pieces=10)
    greeting = handshake(sha1(info)) + struct.pack(">I", 2**31) + b"\xff" * 10
    session = session_for(sha1(info))
    run(session, ScriptedPeer(info, sha1(info), greeting=greeting))
    assert session.error is not None and session.error.outcome == "protocol-error"
    assert session.remote is not None  # the handshake before the garbage was still seen


def test_late_bytes_and_closing_after_the_outcome_change_nothing() -> None:
    info = v1_info(random.Random(13), pieces=10)
    session = session_for(sha1(info))
    run(session, ScriptedPeer(info, sha1(info)))
    assert session.info == info
    assert session.receive(b"\xff" * 100, 2.0) == b""
    session.closed("the peer closed the connection")
    session.timed_out(1.0)
    assert session.error is None and session.info == info


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=3))
def test_any_bytes_end_in_an_outcome_never_an_exception(noise: bytes, where: int) -> None:
    info = v1_info(random.Random(14), pieces=10)
    ih = sha1(info)
    prefix = [b"", handshake(ih), handshake(ih) + ext_handshake(len(info)), handshake(ih)[:30]]
    session = session_for(ih)
    session.initiate()
    session.receive(prefix[where] + noise, 1.0)
    session.receive(noise, 1.5)
    session.closed("the peer closed the connection")
    assert session.done
    assert session.info is None and session.error is not None
    assert session.error.outcome in {
        "refused",
        "closed",
        "protocol-error",
        "no-metadata",
        "too-large",
        "bad-piece",
        "rejected",
    }


# --- the driver, against a fake peer on loopback ------------------------------------------------


CONFIG = MetadataFetchConfig(peer_id=OUR_ID, connect_timeout=2.0, timeout=3.0)


class FakeServer:
    """A TCP peer on HOST: each connection gets a fresh `ScriptedPeer` from `make` (or is closed
    at once when `make` returns None); counts connections."""

    def __init__(self, make: Callable[[], ScriptedPeer | None]) -> None:
        self.make = make
        self.connections = 0
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> FakeServer:
        self.server = await asyncio.start_server(self._handle, HOST, 0)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        peer = self.make()
        try:
            if peer is None:
                return
            greeted = False
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                out = peer.answer(data)
                if not greeted and peer.got_handshake:
                    out = peer.greeting() + out
                    greeted = True
                if out:
                    writer.write(out)
                    await writer.drain()
        except ConnectionError:
            return
        finally:
            writer.close()


@pytest.fixture
def info() -> Iterator[bytes]:
    yield v1_info(random.Random(20))


def test_driver_fetches_from_one_peer_and_hashes_the_exchange(info: bytes) -> None:
    async def go() -> None:
        async with FakeServer(lambda: ScriptedPeer(info, sha1(info))) as srv:
            result = await fetch_metadata(HOST, srv.port, sha1(info), CONFIG)
            assert result.outcome == FETCHED, result.detail
            assert result.ok and result.info == info
            assert result.info_sha1 == sha1(info).hex()
            assert result.info_sha256 == hashlib.sha256(info).hexdigest()
            assert result.client == "scripted/1.0" and result.peer_id == PEER_ID
            assert result.metadata_size == len(info) and not result.encrypted
            assert len(result.exchange_sha256) == 64
            assert srv.connections == 1

    asyncio.run(go())


def test_driver_failures_are_outcomes(info: bytes) -> None:
    rng = random.Random(21)
    other = v1_info(rng)

    async def go() -> None:
        async with FakeServer(lambda: ScriptedPeer(other, sha1(info))) as srv:
            bad = await fetch_metadata(HOST, srv.port, sha1(info), CONFIG)
            assert bad.outcome == "hash-mismatch" and bad.info is None and bad.metainfo is None
        async with FakeServer(lambda: None) as srv:  # hangs up on every handshake
            closed = await fetch_metadata(HOST, srv.port, sha1(info), CONFIG)
            assert closed.outcome == "refused"
            assert "plain:" in closed.detail and "MSE:" in closed.detail
            assert srv.connections == 2  # plaintext, then MSE as peers demanding it expect
        silent = ScriptedPeer(info, sha1(info), greeting=b"")
        async with FakeServer(lambda: silent) as srv:
            config = MetadataFetchConfig(peer_id=OUR_ID, timeout=0.5)
            slow = await fetch_metadata(HOST, srv.port, sha1(info), config)
            assert slow.outcome == "timeout" and srv.connections == 1
        async with FakeServer(lambda: None) as srv:
            port = srv.port
        gone = await fetch_metadata(HOST, port, sha1(info), CONFIG)
        assert gone.outcome == "unreachable"

    asyncio.run(go())


def test_driver_never_contacts_a_destination_outside_the_egress_policy(info: bytes) -> None:
    async def go() -> None:
        with pytest.raises(EgressDeniedError):
            await fetch_metadata("192.0.2.1", 6881, sha1(info), CONFIG)

    asyncio.run(go())
    assert CONFIG.egress.denied >= 1
