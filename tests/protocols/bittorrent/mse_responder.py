"""A minimal MSE receiver (the listening side), for tests only: peerwatch never accepts
connections. It lets the tests run `MseInitiator` against an independent state machine in memory.

Written from the spec's step list, reusing only the primitives (SHA-1, RC4 with discard, DH) of
`peerwatch.protocols.bittorrent.mse`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from peerwatch.protocols.bittorrent.mse import (
    CRYPTO_PLAINTEXT,
    CRYPTO_RC4,
    KEY_SIZE,
    MAX_PAD,
    VC,
    MseError,
    Rc4,
    pad,
    private_key,
    public_key,
    rc4_pair,
    sha1,
    shared_secret,
)


def prefer_plaintext(provided: int) -> int:
    return CRYPTO_PLAINTEXT if provided & CRYPTO_PLAINTEXT else CRYPTO_RC4


def prefer_rc4(provided: int) -> int:
    return CRYPTO_RC4 if provided & CRYPTO_RC4 else CRYPTO_PLAINTEXT


class MseResponder:
    """Receiver B. `receive(data)` returns (bytes to send, decrypted payload from A)."""

    def __init__(
        self,
        skeys: list[bytes],
        rng: Callable[[int], bytes],
        select: Callable[[int], int] = prefer_rc4,
    ) -> None:
        self._skeys = skeys
        self._rng = rng
        self._select = select
        self._x = private_key(rng)
        self._buf = bytearray()
        self._step = "ya"
        self._secret = b""
        self._req1 = b""
        self._out: Rc4 | None = None
        self._in: Rc4 | None = None
        self._need = 0
        self.method = 0
        self.skey: bytes | None = None
        self.crypto_provide = 0

    @property
    def established(self) -> bool:
        return self._step == "done"

    def encrypt(self, data: bytes) -> bytes:
        assert self.established
        if self.method == CRYPTO_RC4:
            assert self._out is not None
            return self._out.crypt(data)
        return data

    def _decrypt(self, data: bytes) -> bytes:
        assert self._in is not None
        return self._in.crypt(data)

    def _take(self, n: int) -> bytes:
        chunk = bytes(self._buf[:n])
        del self._buf[:n]
        return chunk

    def receive(self, data: bytes) -> tuple[bytes, bytes]:
        if self._step == "done":
            if self.method == CRYPTO_RC4:
                return b"", self._decrypt(data)
            return b"", bytes(data)
        self._buf += data
        out = b""
        payload = b""
        while True:
            if self._step == "ya":
                if len(self._buf) < KEY_SIZE:
                    break
                self._secret = shared_secret(self._x, self._take(KEY_SIZE))
                self._req1 = sha1(b"req1", self._secret)
                out += public_key(self._x) + pad(self._rng)
                self._step = "req1"
            elif self._step == "req1":
                # PadA is up to 512 bytes, then HASH('req1', S).
                at = self._buf.find(self._req1, 0, MAX_PAD + 20)
                if at < 0:
                    if len(self._buf) >= MAX_PAD + 20:
                        raise MseError("responder: no HASH('req1', S) within 532 bytes")
                    break
                del self._buf[: at + 20]
                self._step = "skey"
            elif self._step == "skey":
                if len(self._buf) < 20:
                    break
                obfuscated = self._take(20)
                req3 = sha1(b"req3", self._secret)
                for skey in self._skeys:
                    mask = bytes(a ^ b for a, b in zip(sha1(b"req2", skey), req3, strict=True))
                    if mask == obfuscated:
                        self.skey = skey
                        break
                else:
                    raise MseError("responder: no torrent matches the obfuscated SKEY")
                self._out, self._in = rc4_pair(self._secret, self.skey, initiator=False)
                self._step = "provide"
            elif self._step == "provide":
                if len(self._buf) < 14:
                    break
                head = self._decrypt(self._take(14))
                if head[:8] != VC:
                    raise MseError("responder: bad VC")
                self.crypto_provide, self._need = struct.unpack(">IH", head[8:])
                self._step = "padc"
            elif self._step == "padc":
                if len(self._buf) < self._need + 2:
                    break
                plain = self._decrypt(self._take(self._need + 2))
                (self._need,) = struct.unpack(">H", plain[-2:])
                self._step = "ia"
            elif self._step == "ia":
                if len(self._buf) < self._need:
                    break
                payload += self._decrypt(self._take(self._need))  # IA is always RC4
                self.method = self._select(self.crypto_provide)
                assert self._out is not None
                pad_d = pad(self._rng)
                out += self._out.crypt(VC + struct.pack(">IH", self.method, len(pad_d)) + pad_d)
                self._step = "done"
                rest = self._take(len(self._buf))
                if rest:
                    payload += self.receive(rest)[1]
                break
        return out, payload
