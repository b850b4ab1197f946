"""A test-only obfuscation target (client B), written from the spec comment at the top of aMule's
src/EncryptedStreamSocket.cpp, to run `ObfuscationInitiator` back to back."""

from __future__ import annotations

import struct

from peerwatch.protocols.bittorrent.mse import Rc4
from peerwatch.protocols.ed2k.obfuscation import (
    MAGIC_REQUESTER,
    MAGIC_SERVER,
    MAGIC_SYNC,
    stream_key,
)


class Responder:
    """The target side (client B), per the spec comment: reads A's marker and key part, derives the
    keys from its own user hash, checks the magic, answers with magic, method 0 and padding."""

    def __init__(
        self, user_hash: bytes, pad: bytes = b"", magic: int = MAGIC_SYNC, method: int = 0
    ) -> None:
        self.method = method
        self.user_hash = user_hash
        self.pad = pad
        self.magic = magic
        self.buf = b""
        self.recv: Rc4 | None = None
        self.send: Rc4 | None = None
        self.done = False
        self.payload = b""

    def feed(self, data: bytes) -> bytes:
        if self.done:
            assert self.recv is not None
            self.payload += self.recv.crypt(data)
            return b""
        self.buf += data
        if len(self.buf) < 5 + 7:
            return b""
        assert self.buf[0] not in (0xE3, 0xC5, 0xD4)
        (key_part,) = struct.unpack_from("<I", self.buf, 1)
        self.recv = Rc4(stream_key(self.user_hash, MAGIC_REQUESTER, key_part))
        self.send = Rc4(stream_key(self.user_hash, MAGIC_SERVER, key_part))
        head = self.recv.crypt(self.buf[5:12])
        magic, supported, preferred, pad_len = struct.unpack("<IBBB", head)
        assert (magic, supported, preferred) == (MAGIC_SYNC, 0, 0)
        rest = self.buf[12:]
        if len(rest) < pad_len:  # a real peer waits; the tests send the request whole
            raise AssertionError("request padding split")
        self.recv.crypt(rest[:pad_len])
        # aMule's Read() errors out when bytes follow the request in the same read (ECS_UNKNOWN).
        assert not rest[pad_len:], "payload sent before the target's answer"
        self.done = True
        return self.send.crypt(
            struct.pack("<IBB", self.magic, self.method, len(self.pad)) + self.pad
        )

    def encrypt(self, data: bytes) -> bytes:
        assert self.send is not None
        return self.send.crypt(data)
