"""eMule obfuscation, initiator side, against a test responder written from the spec comment of
aMule's EncryptedStreamSocket.cpp; RC4 checked against RFC 6229."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.protocols.bittorrent.mse import Rc4
from peerwatch.protocols.ed2k.obfuscation import (
    ObfuscationError,
    ObfuscationInitiator,
    ObfuscationState,
    stream_key,
)
from tests.protocols.ed2k.obfuscation_responder import Responder

TARGET = bytes.fromhex("a0a1a2a3a4a5a6a7a8a9aaabacadaeaf")


def seeded(seed: int) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return rng.randbytes


def test_rc4_with_discard_matches_rfc6229() -> None:
    # RFC 6229 section 2, key 0x0102...10 (128 bits): keystream rows at offsets 1536 and 4096.
    # Our keystream starts after the 1024 bytes eMule discards (RC4Encrypt.cpp RC4CreateKey).
    rc4 = Rc4(bytes.fromhex("0102030405060708090a0b0c0d0e0f10"))
    rc4.crypt(bytes(1536 - 1024))
    assert rc4.crypt(bytes(16)).hex() == "ffa0b514647ec04f6306b892ae661181"
    rc4.crypt(bytes(4096 - 1536 - 16))
    assert rc4.crypt(bytes(16)).hex() == "a36a4c301ae8ac13610ccbc12256cacc"


def test_stream_key_layout() -> None:
    # MD5(<user hash 16><magic 1><random key part 4, little-endian>)
    key = stream_key(TARGET, 34, 0x04030201)
    assert key == hashlib.md5(TARGET + b"\x22\x01\x02\x03\x04", usedforsecurity=False).digest()


@given(st.integers(0, 2**32), st.binary(max_size=300), st.integers(1, 40))
@settings(max_examples=150, deadline=None)
def test_handshake_and_payload_both_ways(seed: int, pad: bytes, step: int) -> None:
    a = ObfuscationInitiator(TARGET, seeded(seed))
    b = Responder(TARGET, pad[:255])
    answer = b.feed(a.start())
    with pytest.raises(RuntimeError, match="established"):
        a.encrypt(b"too early")
    wire = answer + b.encrypt(b"\xe3 reply bytes")
    got = b""
    for i in range(0, len(wire), step):  # any split of the answer
        got += a.receive(wire[i : i + step])
    assert a.established and a.method_selected == 0
    assert got == b"\xe3 reply bytes"
    hello = b"\xe3\x05\x00\x00\x00\x01" + b"hell"
    b.feed(a.encrypt(hello))
    b.feed(a.encrypt(b"more"))
    assert b.payload == hello + b"more"


def test_marker_never_looks_like_plain_ed2k() -> None:
    # An rng that offers 0xE3, 0xC5, 0xD4 first: the marker must skip them.
    seq = iter([b"\xe3", b"\xc5", b"\xd4", b"\x42", b"\x00"])  # then pad length 0

    def rng(n: int) -> bytes:
        return next(seq) if n == 1 else bytes(n)

    out = ObfuscationInitiator(TARGET, rng).start()
    assert out[0] == 0x42


def test_request_length_and_padding_cap() -> None:
    out = ObfuscationInitiator(TARGET, seeded(1), max_padding=0).start()
    assert len(out) == 1 + 4 + 4 + 3  # marker, key part, magic, two methods, pad length
    for seed in range(20):
        assert len(ObfuscationInitiator(TARGET, seeded(seed)).start()) <= 12 + 254


def test_wrong_user_hash_fails_the_magic_check() -> None:
    a = ObfuscationInitiator(TARGET, seeded(2))
    b = Responder(bytes(16))  # derives other keys: its answer decrypts to garbage for A
    with pytest.raises(AssertionError):
        b.feed(a.start())  # B itself cannot read A's magic either
    a2 = ObfuscationInitiator(TARGET, seeded(2))
    b2 = Responder(TARGET, magic=0x12345678)
    answer = b2.feed(a2.start())
    with pytest.raises(ObfuscationError, match="magic"):
        a2.receive(answer)
    assert a2.state is ObfuscationState.FAILED
    with pytest.raises(ObfuscationError, match="already failed"):
        a2.receive(b"")


def test_plain_peer_answer_is_refused() -> None:
    a = ObfuscationInitiator(TARGET, seeded(3))
    a.start()
    with pytest.raises(ObfuscationError):
        a.receive(b"\xe3\x10\x00\x00\x00\x4c" + bytes(16))


def test_unknown_method_is_refused() -> None:
    a = ObfuscationInitiator(TARGET, seeded(4))
    b = Responder(TARGET, method=7)
    with pytest.raises(ObfuscationError, match="method 7"):
        a.receive(b.feed(a.start()))


def test_misuse() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        ObfuscationInitiator(b"short", seeded(0))
    a = ObfuscationInitiator(TARGET, seeded(0))
    with pytest.raises(RuntimeError):
        a.receive(b"x")
    with pytest.raises(RuntimeError):
        a.encrypt(b"x")
    a.start()
    with pytest.raises(RuntimeError):
        a.start()
