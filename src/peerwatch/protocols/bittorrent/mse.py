"""Message Stream Encryption / Protocol Encryption (MSE/PE), initiator side, sans-IO.

MSE has no BEP; the de facto specification is Vuze's "Message Stream Encryption" wiki page, which
libtorrent, Transmission and anacrolix/torrent all follow. The exchange, A the initiator (us) and
B the receiver::

    1 A->B: Ya, PadA
    2 B->A: Yb, PadB
    3 A->B: HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
            ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
    4 B->A: ENCRYPT(VC, crypto_select, len(PadD), PadD), ENCRYPT2(payload stream)
    5 A->B: ENCRYPT2(payload stream)

Ya/Yb are 768-bit Diffie-Hellman public keys (96 bytes, big-endian), S the shared secret (96
bytes), SKEY the torrent's infohash, HASH is SHA-1, VC eight zero bytes, ENCRYPT RC4 keyed with
HASH('keyA', S, SKEY) (A->B) or HASH('keyB', S, SKEY) (B->A) after discarding 1024 keystream
bytes, and ENCRYPT2 is whichever method crypto_select chose (RC4 continues the same keystreams,
plaintext passes bytes through). Step 3 is always RC4, whatever is later selected.

`MseInitiator` takes bytes in and gives events, bytes to send and decrypted payload out; it has no
socket and no clock (the driver owns the connect/handshake timeout). Randomness (private key and
padding) comes from an injected ``rng(n) -> bytes`` callable: pass `os.urandom` or
`secrets.token_bytes` in production, a seeded generator in tests.
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher

from peerwatch.errors import ProtocolError

try:  # cryptography >= 43 keeps RC4 among the "decrepit" algorithms; older versions elsewhere
    from cryptography.hazmat.decrepit.ciphers.algorithms import ARC4 as _ARC4
except ImportError:  # pragma: no cover - only on cryptography < 43
    # The ignore covers versions whose stubs no longer list ARC4 here (unused where they do).
    from cryptography.hazmat.primitives.ciphers.algorithms import (  # type: ignore[attr-defined,unused-ignore]
        ARC4 as _ARC4,
    )

#: The MSE Diffie-Hellman prime (768 bits, the Oakley group 1 prime) and generator.
P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E34"
    "04DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000"
    "090563",
    16,
)
G = 2

CRYPTO_PLAINTEXT = 0x01  # crypto_provide / crypto_select bit: header obfuscation only
CRYPTO_RC4 = 0x02  # crypto_provide / crypto_select bit: RC4 for the whole stream

KEY_SIZE = 96  # Ya, Yb and S are 768-bit numbers sent as 96 big-endian bytes
PRIVATE_KEY_BITS = 160  # the spec asks for a random private key of at least 128 bits; 160 is usual
MAX_PAD = 512  # PadA, PadB, PadC and PadD are each 0..512 bytes
VC = bytes(8)  # verification constant
RC4_DISCARD = 1024  # keystream bytes dropped after keying (spec: "discard the first 1024 bytes")
#: After Yb, the encrypted VC must start within PadB's 512 bytes (spec: sync within 512 + 8).
SYNC_WINDOW = MAX_PAD + len(VC)
MAX_INITIAL_PAYLOAD = 0xFFFF  # len(IA) is a 2-byte field


class MseError(ProtocolError):
    """The remote end broke the MSE handshake (no sync, bad key, bad selection)."""


class MseState(enum.Enum):
    NEW = "new"  # start() not called yet
    AWAITING_YB = "awaiting Yb"  # sent Ya + PadA, need the receiver's 96-byte public key
    AWAITING_VC = "awaiting VC"  # sent step 3, scanning PadB for ENCRYPT(VC)
    AWAITING_SELECT = "awaiting crypto_select"  # synced; need crypto_select (4) + len(PadD) (2)
    AWAITING_PAD_D = "awaiting PadD"  # skipping PadD
    ESTABLISHED = "established"  # payload stream flows (RC4 or plaintext)
    FAILED = "failed"  # an MseError was raised; the connection must be dropped


class _Input(enum.Enum):
    START = "start"
    GOT_YB = "got Yb"
    GOT_VC = "got VC"
    GOT_SELECT = "got crypto_select"
    GOT_PAD_D = "got PadD"
    ERROR = "error"


#: Every state transition of the initiator, in one place (house rule 3). A pair missing here is a
#: bug in this module, not the peer's fault.
TRANSITIONS: dict[tuple[MseState, _Input], MseState] = {
    (MseState.NEW, _Input.START): MseState.AWAITING_YB,
    (MseState.AWAITING_YB, _Input.GOT_YB): MseState.AWAITING_VC,
    (MseState.AWAITING_VC, _Input.GOT_VC): MseState.AWAITING_SELECT,
    (MseState.AWAITING_SELECT, _Input.GOT_SELECT): MseState.AWAITING_PAD_D,
    (MseState.AWAITING_PAD_D, _Input.GOT_PAD_D): MseState.ESTABLISHED,
    **{(s, _Input.ERROR): MseState.FAILED for s in MseState if s is not MseState.FAILED},
}


@dataclass(frozen=True, slots=True)
class MseOutgoing:
    """Bytes the driver must write to the socket now (step 3, produced when Yb arrives)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class MseEstablished:
    """The handshake finished; `crypto_method` is CRYPTO_RC4 or CRYPTO_PLAINTEXT."""

    crypto_method: int


MseEvent = MseOutgoing | MseEstablished


# --- primitives shared with the test responder ---------------------------------------------------


def sha1(*parts: bytes) -> bytes:
    h = hashlib.sha1(usedforsecurity=False)  # MSE's HASH is SHA-1 by definition
    for part in parts:
        h.update(part)
    return h.digest()


class Rc4:
    """One RC4 keystream with the first 1024 bytes already discarded, as MSE requires."""

    def __init__(self, key: bytes) -> None:
        # RC4 is weak, but MSE defines it: this is obfuscation the remote peer expects, not secrecy.
        self._ctx: Any = Cipher(_ARC4(key), mode=None).encryptor()  # noqa: S304
        self._ctx.update(bytes(RC4_DISCARD))

    def crypt(self, data: bytes) -> bytes:
        """Encrypt or decrypt (the same XOR), advancing the keystream by len(data)."""
        return bytes(self._ctx.update(data)) if data else b""


def rc4_pair(secret: bytes, skey: bytes, *, initiator: bool) -> tuple[Rc4, Rc4]:
    """(outgoing, incoming) keystreams: keyA carries A->B, keyB carries B->A."""
    key_a = Rc4(sha1(b"keyA", secret, skey))
    key_b = Rc4(sha1(b"keyB", secret, skey))
    return (key_a, key_b) if initiator else (key_b, key_a)


def private_key(rng: Callable[[int], bytes]) -> int:
    x = int.from_bytes(rng(PRIVATE_KEY_BITS // 8), "big")
    return x if x > 1 else 2  # never 0 or 1, which would make the public key trivial


def public_key(x: int) -> bytes:
    return pow(G, x, P).to_bytes(KEY_SIZE, "big")


def shared_secret(x: int, remote_public: bytes) -> bytes:
    """S = Y^x mod P as 96 big-endian bytes; rejects degenerate public keys (1, P-1, >= P)."""
    y = int.from_bytes(remote_public, "big")
    if not 1 < y < P - 1:
        raise MseError("remote Diffie-Hellman public key is out of range")
    return pow(y, x, P).to_bytes(KEY_SIZE, "big")


def pad(rng: Callable[[int], bytes]) -> bytes:
    """0..512 random bytes (PadA/PadB/PadD)."""
    n = int.from_bytes(rng(2), "big") % (MAX_PAD + 1)
    return rng(n) if n else b""


# --- the initiator ------------------------------------------------------------------------------


class MseInitiator:
    """The connecting side of an MSE handshake.

    ``start()`` gives Ya + PadA to send. Each ``receive(data)`` returns ``(events, payload)``:
    events may hold an `MseOutgoing` (bytes to write now) and, once, `MseEstablished`; payload is
    the decrypted bytes of the remote's payload stream (its BitTorrent handshake and messages) for
    the layer above. After establishment, ``encrypt(data)`` prepares outgoing payload bytes.
    """

    def __init__(
        self,
        info_hash: bytes,
        rng: Callable[[int], bytes],
        *,
        crypto_provide: int = CRYPTO_RC4 | CRYPTO_PLAINTEXT,
        initial_payload: bytes = b"",
    ) -> None:
        if len(info_hash) != 20:
            raise ValueError("info_hash (SKEY) must be 20 bytes")
        if crypto_provide & ~(CRYPTO_RC4 | CRYPTO_PLAINTEXT) or not crypto_provide:
            raise ValueError("crypto_provide must be CRYPTO_RC4, CRYPTO_PLAINTEXT or both")
        if len(initial_payload) > MAX_INITIAL_PAYLOAD:
            raise ValueError("initial payload is longer than 65535 bytes")
        self._skey = bytes(info_hash)
        self._rng = rng
        self._provide = crypto_provide
        self._ia = bytes(initial_payload)
        self._x = private_key(rng)
        self._state = MseState.NEW
        self._buf = bytearray()
        self._scanned = 0  # bytes after Yb already searched for ENCRYPT(VC)
        self._out: Rc4 | None = None
        self._in: Rc4 | None = None
        self._encrypted_vc = b""
        self._method = 0
        self._pad_d = 0

    @property
    def state(self) -> MseState:
        return self._state

    @property
    def crypto_method(self) -> int:
        """The selected method once established, else 0."""
        return self._method

    def _go(self, what: _Input) -> None:
        self._state = TRANSITIONS[(self._state, what)]

    def _fail(self, message: str) -> MseError:
        self._go(_Input.ERROR)
        self._buf.clear()
        return MseError(message)

    def start(self) -> bytes:
        """Step 1: our public key Ya and 0..512 random bytes of PadA."""
        if self._state is not MseState.NEW:
            raise RuntimeError("start() was already called")
        self._go(_Input.START)
        return public_key(self._x) + pad(self._rng)

    def encrypt(self, data: bytes) -> bytes:
        """Outgoing payload after establishment: RC4 or passed through (plaintext mode)."""
        if self._state is not MseState.ESTABLISHED:
            raise RuntimeError("the MSE handshake is not established")
        if self._method == CRYPTO_RC4:
            assert self._out is not None
            return self._out.crypt(data)
        return bytes(data)

    def receive(self, data: bytes) -> tuple[list[MseEvent], bytes]:
        if self._state is MseState.FAILED:
            raise MseError("the MSE handshake already failed")
        if self._state is MseState.NEW:
            raise RuntimeError("call start() before receive()")
        if self._state is MseState.ESTABLISHED:
            return [], self._payload(bytes(data))
        self._buf += data
        events: list[MseEvent] = []
        try:
            established = self._advance(events)
        except MseError as exc:
            raise self._fail(str(exc)) from None
        payload = b""
        if established:
            rest = bytes(self._buf)
            self._buf.clear()
            payload = self._payload(rest)
        return events, payload

    def _payload(self, data: bytes) -> bytes:
        if self._method == CRYPTO_RC4:
            assert self._in is not None
            return self._in.crypt(data)
        return data

    def _take(self, n: int) -> bytes:
        chunk = bytes(self._buf[:n])
        del self._buf[:n]
        return chunk

    def _advance(self, events: list[MseEvent]) -> bool:
        """Consume what the buffer allows; True once established."""
        while True:
            state = self._state
            if state is MseState.AWAITING_YB:
                if len(self._buf) < KEY_SIZE:
                    return False
                secret = shared_secret(self._x, self._take(KEY_SIZE))
                events.append(MseOutgoing(self._step3(secret)))
                self._go(_Input.GOT_YB)
            elif state is MseState.AWAITING_VC:
                if not self._sync():
                    return False
                self._go(_Input.GOT_VC)
            elif state is MseState.AWAITING_SELECT:
                if len(self._buf) < 6:
                    return False
                assert self._in is not None
                select, pad_len = struct.unpack(">IH", self._in.crypt(self._take(6)))
                # Exactly one method, and one we offered (spec: crypto_select is a single bit).
                if select not in (CRYPTO_RC4, CRYPTO_PLAINTEXT) or not select & self._provide:
                    raise MseError(f"receiver selected crypto method {select:#x}, not offered")
                if pad_len > MAX_PAD:
                    raise MseError(f"len(PadD) {pad_len} is larger than {MAX_PAD}")
                self._method = select
                self._pad_d = pad_len
                self._go(_Input.GOT_SELECT)
            elif state is MseState.AWAITING_PAD_D:
                if len(self._buf) < self._pad_d:
                    return False
                assert self._in is not None
                self._in.crypt(self._take(self._pad_d))  # PadD is RC4 too; its content is ignored
                self._go(_Input.GOT_PAD_D)
                events.append(MseEstablished(self._method))
            else:
                return self._state is MseState.ESTABLISHED

    def _step3(self, secret: bytes) -> bytes:
        self._out, self._in = rc4_pair(secret, self._skey, initiator=True)
        self._encrypted_vc = self._in.crypt(VC)  # what the receiver's first ENCRYPT(VC) looks like
        # PadC is reserved for extensions; standard practice is zero length.
        body = VC + struct.pack(">IH", self._provide, 0) + struct.pack(">H", len(self._ia))
        return (
            sha1(b"req1", secret)
            + bytes(
                a ^ b for a, b in zip(sha1(b"req2", self._skey), sha1(b"req3", secret), strict=True)
            )
            + self._out.crypt(body)
            + self._out.crypt(self._ia)
        )

    def _sync(self) -> bool:
        """Find ENCRYPT(VC) in PadB (spec: within 512 + 8 bytes after Yb); drop PadB."""
        # Resume the search a few bytes back so a VC split across receives is still found.
        start = max(0, self._scanned - len(VC) + 1)
        limit = min(len(self._buf), SYNC_WINDOW)
        at = self._buf.find(self._encrypted_vc, start, limit)
        if at < 0:
            if len(self._buf) >= SYNC_WINDOW:
                raise MseError(f"no MSE verification constant within {SYNC_WINDOW} bytes of Yb")
            self._scanned = len(self._buf)
            return False
        del self._buf[: at + len(VC)]
        return True
