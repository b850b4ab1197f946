"""MSE/PE initiator: step 3 checked against an independent computation, back-to-back runs against
the test responder in both crypto modes with arbitrary chunking, failures and fuzzing."""

from __future__ import annotations

import hashlib
import itertools
import random
import struct
from collections.abc import Callable

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4
from cryptography.hazmat.primitives.ciphers import Cipher
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peerwatch.protocols.bittorrent.mse import (
    CRYPTO_PLAINTEXT,
    CRYPTO_RC4,
    MseError,
    MseEstablished,
    MseEvent,
    MseInitiator,
    MseOutgoing,
    MseState,
    P,
)
from peerwatch.protocols.bittorrent.peer_wire import (
    Bitfield,
    HandshakeReceived,
    PeerConnection,
)
from tests.protocols.bittorrent.mse_responder import MseResponder, prefer_plaintext, prefer_rc4

IH = bytes(range(20))
OTHER_IH = bytes(range(1, 21))


def seeded(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def h(*parts: bytes) -> bytes:
    return hashlib.sha1(b"".join(parts), usedforsecurity=False).digest()


def rc4(key: bytes) -> Callable[[bytes], bytes]:
    """An RC4 keystream written here independently of the module: cryptography's ARC4, first
    1024 bytes dropped."""
    ctx = Cipher(ARC4(key), mode=None).encryptor()
    ctx.update(bytes(1024))
    return lambda data: bytes(ctx.update(data))


def outgoing(events: list[MseEvent]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, MseOutgoing))


def chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    """Split data at the given (wrapped) offsets."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# --- against an independent computation ---------------------------------------------------------


def test_step1_and_step3_match_an_independent_computation() -> None:
    stream = random.Random(9).randbytes(4096)
    pos = 0

    def rng(n: int) -> bytes:
        nonlocal pos
        pos += n
        return stream[pos - n : pos]

    ia = b"\x13BitTorrent protocol" + bytes(48)
    init = MseInitiator(IH, rng, initial_payload=ia)
    xa = int.from_bytes(stream[:20], "big")  # the 160-bit private key is drawn first
    step1 = init.start()
    assert step1[:96] == pow(2, xa, P).to_bytes(96, "big")
    pad_a = int.from_bytes(stream[20:22], "big") % 513
    assert len(step1) == 96 + pad_a
    assert step1[96:] == stream[22 : 22 + pad_a]

    xb = 0x1234567890ABCDEF1234567890ABCDEF12345678
    yb = pow(2, xb, P).to_bytes(96, "big")
    secret = pow(int.from_bytes(step1[:96], "big"), xb, P).to_bytes(96, "big")
    events, payload = init.receive(yb + b"PadB")
    assert payload == b"" and init.state is MseState.AWAITING_VC
    step3 = outgoing(events)
    assert step3[:20] == h(b"req1", secret)
    assert step3[20:40] == bytes(
        a ^ b for a, b in zip(h(b"req2", IH), h(b"req3", secret), strict=True)
    )
    decrypt_a = rc4(h(b"keyA", secret, IH))
    expected = bytes(8) + struct.pack(">IHH", CRYPTO_RC4 | CRYPTO_PLAINTEXT, 0, len(ia)) + ia
    assert decrypt_a(step3[40:]) == expected

    # Step 4 built by hand: ENCRYPT(VC, crypto_select, len(PadD), PadD), then RC4 payload.
    encrypt_b = rc4(h(b"keyB", secret, IH))
    step4 = encrypt_b(bytes(8) + struct.pack(">IH", CRYPTO_RC4, 3) + b"pad" + b"hello")
    events, payload = init.receive(step4)
    assert events == [MseEstablished(CRYPTO_RC4)]
    assert payload == b"hello"
    assert init.crypto_method == CRYPTO_RC4
    assert decrypt_a(init.encrypt(b"world")) == b"world"


def _initiator_with_secret(
    provide: int = CRYPTO_RC4 | CRYPTO_PLAINTEXT,
) -> tuple[MseInitiator, Callable[[bytes], bytes]]:
    init = MseInitiator(IH, seeded(1), crypto_provide=provide)
    step1 = init.start()
    xb = 0xCAFE_F00D_0000_0000_0000_0000_0000_0000_0000_0001
    secret = pow(int.from_bytes(step1[:96], "big"), xb, P).to_bytes(96, "big")
    init.receive(pow(2, xb, P).to_bytes(96, "big"))
    return init, rc4(h(b"keyB", secret, IH))


@pytest.mark.parametrize(
    ("provide", "select", "pad_len", "match"),
    [
        (CRYPTO_PLAINTEXT, CRYPTO_RC4, 0, "not offered"),
        (CRYPTO_RC4 | CRYPTO_PLAINTEXT, CRYPTO_RC4 | CRYPTO_PLAINTEXT, 0, "not offered"),
        (CRYPTO_RC4, 0, 0, "not offered"),
        (CRYPTO_RC4, CRYPTO_RC4, 513, "PadD"),
    ],
)
def test_bad_step4(provide: int, select: int, pad_len: int, match: str) -> None:
    init, encrypt_b = _initiator_with_secret(provide)
    with pytest.raises(MseError, match=match):
        init.receive(encrypt_b(bytes(8) + struct.pack(">IH", select, pad_len)))
    assert init.state is MseState.FAILED
    with pytest.raises(MseError, match="already failed"):
        init.receive(b"x")


@pytest.mark.parametrize("y", [0, 1, P - 1, P, 2**768 - 1])
def test_degenerate_public_key_is_refused(y: int) -> None:
    init = MseInitiator(IH, seeded(2))
    init.start()
    with pytest.raises(MseError, match="out of range"):
        init.receive(y.to_bytes(96, "big"))


def test_no_sync_within_the_limit() -> None:
    init = MseInitiator(IH, seeded(3))
    init.start()
    init.receive(pow(2, 12345, P).to_bytes(96, "big"))
    garbage = random.Random(4).randbytes(519)
    assert init.receive(garbage) == ([], b"")  # 519 bytes: the VC could still come
    with pytest.raises(MseError, match="within 520 bytes"):
        init.receive(b"\x00")
    assert init.state is MseState.FAILED


def test_api_misuse() -> None:
    init = MseInitiator(IH, seeded(5))
    with pytest.raises(RuntimeError):
        init.receive(b"x")
    with pytest.raises(RuntimeError):
        init.encrypt(b"x")
    init.start()
    with pytest.raises(RuntimeError):
        init.start()
    for kwargs in ({"crypto_provide": 0}, {"crypto_provide": 4}, {"initial_payload": bytes(65536)}):
        with pytest.raises(ValueError):
            MseInitiator(IH, seeded(5), **kwargs)
    with pytest.raises(ValueError):
        MseInitiator(b"short", seeded(5))


# --- back to back with the responder ------------------------------------------------------------


def run_back_to_back(
    *,
    provide: int,
    select: Callable[[int], int],
    seed: int,
    cuts_a: list[int],
    cuts_b: list[int],
    skey: bytes = IH,
) -> tuple[MseInitiator, MseResponder, bytes, bytes]:
    """Full exchange with arbitrary chunking in both directions. The initial payload is a real
    BitTorrent handshake; the responder answers with its own handshake and a bitfield. Returns
    what each side's upper layer received."""
    peer_a = PeerConnection(IH, b"A" * 20, now=0.0)
    ia = peer_a.initiate()
    init = MseInitiator(IH, seeded(seed), crypto_provide=provide, initial_payload=ia)
    resp = MseResponder([OTHER_IH, skey], seeded(seed + 1000), select)
    got_a = b""
    got_b = b""
    established: list[MseEstablished] = []

    def to_b(data: bytes) -> bytes:
        nonlocal got_b
        out = b""
        for piece in chunks(data, cuts_b):
            sent, payload = resp.receive(piece)
            out += sent
            got_b += payload
        return out

    def to_a(data: bytes) -> bytes:
        nonlocal got_a
        out = b""
        for piece in chunks(data, cuts_a):
            events, payload = init.receive(piece)
            established.extend(e for e in events if isinstance(e, MseEstablished))
            out += outgoing(events)
            got_a += payload
        return out

    wire = to_b(init.start())  # Yb + PadB
    wire = to_a(wire)  # step 3
    wire = to_b(wire)  # step 4
    assert resp.established
    reply = handshake_bytes(IH, b"B" * 20) + struct.pack(">IB", 2, 5) + b"\xa0"
    to_a(wire + resp.encrypt(reply))
    assert established == [MseEstablished(resp.method)]
    to_b(init.encrypt(b"after"))
    return init, resp, got_a, got_b


def handshake_bytes(info_hash: bytes, peer_id: bytes) -> bytes:
    return struct.pack(">B19s8s20s20s", 19, b"BitTorrent protocol", bytes(8), info_hash, peer_id)


@pytest.mark.parametrize(
    ("provide", "select", "method"),
    [
        (CRYPTO_RC4 | CRYPTO_PLAINTEXT, prefer_rc4, CRYPTO_RC4),
        (CRYPTO_RC4 | CRYPTO_PLAINTEXT, prefer_plaintext, CRYPTO_PLAINTEXT),
        (CRYPTO_RC4, prefer_plaintext, CRYPTO_RC4),
        (CRYPTO_PLAINTEXT, prefer_rc4, CRYPTO_PLAINTEXT),
    ],
)
def test_back_to_back_modes(provide: int, select: Callable[[int], int], method: int) -> None:
    init, resp, got_a, got_b = run_back_to_back(
        provide=provide, select=select, seed=7, cuts_a=[], cuts_b=[]
    )
    assert init.crypto_method == resp.method == method
    assert resp.skey == IH and resp.crypto_provide == provide
    # The responder's upper layer got our BitTorrent handshake (IA), then what followed.
    assert got_b[:68] == PeerConnection(IH, b"A" * 20, now=0.0).initiate()
    assert got_b[68:] == b"after"
    # Our upper layer got the responder's handshake and bitfield, which the peer wire decodes.
    conn = PeerConnection(IH, b"A" * 20, now=0.0)
    conn.initiate()
    events = conn.receive(got_a, 1.0)
    assert isinstance(events[0], HandshakeReceived)
    assert events[1] == Bitfield(b"\xa0", 2, None)


def test_plaintext_mode_passes_bytes_through() -> None:
    init, _, _, _ = run_back_to_back(
        provide=CRYPTO_PLAINTEXT, select=prefer_plaintext, seed=8, cuts_a=[], cuts_b=[]
    )
    assert init.encrypt(b"clear") == b"clear"
    assert init.receive(b"clear too") == ([], b"clear too")


@given(
    st.sampled_from([CRYPTO_RC4, CRYPTO_PLAINTEXT, CRYPTO_RC4 | CRYPTO_PLAINTEXT]),
    st.booleans(),
    st.integers(min_value=0, max_value=2**16),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
    st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_back_to_back_any_chunking(
    provide: int, rc4_first: bool, seed: int, cuts_a: list[int], cuts_b: list[int]
) -> None:
    select = prefer_rc4 if rc4_first else prefer_plaintext
    init, _, got_a, got_b = run_back_to_back(
        provide=provide, select=select, seed=seed, cuts_a=cuts_a, cuts_b=cuts_b
    )
    assert init.state is MseState.ESTABLISHED
    assert got_a.startswith(handshake_bytes(IH, b"B" * 20))
    assert got_b.endswith(b"after") and len(got_b) == 68 + 5


def test_byte_by_byte() -> None:
    init, _, got_a, got_b = run_back_to_back(
        provide=CRYPTO_RC4,
        select=prefer_rc4,
        seed=11,
        cuts_a=list(range(2000)),
        cuts_b=list(range(2000)),
    )
    assert init.crypto_method == CRYPTO_RC4
    assert len(got_a) == 68 + 6 and len(got_b) == 68 + 5


def test_wrong_skey_fails_cleanly_on_both_sides() -> None:
    init = MseInitiator(IH, seeded(12))
    resp = MseResponder([OTHER_IH], seeded(13))  # the responder does not serve our torrent
    events, _ = init.receive(resp.receive(init.start())[0])
    with pytest.raises(MseError, match="no torrent matches"):
        resp.receive(outgoing(events))
    # The receiver hangs up or sends noise; either way we never see the VC and give up.
    with pytest.raises(MseError, match="verification constant"):
        init.receive(random.Random(14).randbytes(600))
    assert init.state is MseState.FAILED


# --- fuzzing ------------------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=300), max_size=6))
@settings(max_examples=200, deadline=None)
def test_fuzz_initiator_raises_only_mse_error(pieces: list[bytes]) -> None:
    init = MseInitiator(IH, seeded(15))
    init.start()
    try:
        for piece in pieces:
            events, _ = init.receive(piece)
            assert all(isinstance(e, MseOutgoing | MseEstablished) for e in events)
    except MseError:
        assert init.state is MseState.FAILED
