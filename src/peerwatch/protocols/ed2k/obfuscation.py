"""eMule protocol obfuscation, client to client, connecting side, sans-IO.

The de facto specification is the comment at the top of aMule's (from eMule)
src/EncryptedStreamSocket.cpp ("Basic Obfuscated Handshake Protocol Client <-> Client") and the
code under it. A is the connecting client (us), B the target, whose user hash A must know (from
a source exchange entry, a server's source list or an ed2k link's sources)::

    keys:  A->B  RC4 key MD5(<B's user hash 16><34 1><random key part 4>)
           B->A  RC4 key MD5(<B's user hash 16><203 1><random key part 4>)
           1024 keystream bytes are discarded after keying (RC4Encrypt.cpp RC4CreateKey)
    A->B:  <marker 1><random key part 4>  in clear; the marker is any byte but 0xE3, 0xC5, 0xD4
           ENCRYPT(<magic 0x835E6FC4 4><methods supported 1><method preferred 1><pad len 1><pad>)
    B->A:  ENCRYPT(<magic 4><method selected 1><pad len 1><pad>)

after which both directions carry the ordinary eD2k packet stream through the same two RC4
keystreams. Method 0 (obfuscation) is the only method defined. Integers are little-endian.

`ObfuscationInitiator` opens no socket and reads no clock; randomness comes from an injected
``rng(n) -> bytes`` (``os.urandom`` in production, a seeded generator in tests). The driver owns the
handshake timeout. A peer that does not support obfuscation usually just closes the connection;
one that answers garbage fails the magic check (`ObfuscationError`).
"""

from __future__ import annotations

import enum
import hashlib
import struct
from collections.abc import Callable

from peerwatch.protocols.bittorrent.mse import Rc4
from peerwatch.protocols.ed2k.wire import HASH_SIZE, Ed2kError

MAGIC_REQUESTER = 34  # MAGICVALUE_REQUESTER: in the key of the A->B stream
MAGIC_SERVER = 203  # MAGICVALUE_SERVER: in the key of the B->A stream
MAGIC_SYNC = 0x835E6FC4  # MAGICVALUE_SYNC: proves both sides derived the same keys
METHOD_OBFUSCATION = 0  # ENM_OBFUSCATION, the only encryption method
MAX_PADDING = 254  # aMule's default and largest CryptTCPPaddingLength
_PROTOCOL_MARKERS = frozenset({0xE3, 0xC5, 0xD4})  # a first byte B would read as plain eD2k


class ObfuscationError(Ed2kError):
    """The target's obfuscation answer is wrong (magic value, method)."""


class ObfuscationState(enum.Enum):
    NEW = "new"
    AWAITING_MAGIC = "awaiting magic"  # sent our request; need B's 4-byte magic
    AWAITING_METHOD = "awaiting method"  # need method selected (1) + pad length (1)
    AWAITING_PADDING = "awaiting padding"
    ESTABLISHED = "established"
    FAILED = "failed"


class _Input(enum.Enum):
    START = "start"
    GOT_MAGIC = "got magic"
    GOT_METHOD = "got method"
    GOT_PADDING = "got padding"
    ERROR = "error"


#: Every state transition, in one place (house rule 3).
TRANSITIONS: dict[tuple[ObfuscationState, _Input], ObfuscationState] = {
    (ObfuscationState.NEW, _Input.START): ObfuscationState.AWAITING_MAGIC,
    (ObfuscationState.AWAITING_MAGIC, _Input.GOT_MAGIC): ObfuscationState.AWAITING_METHOD,
    (ObfuscationState.AWAITING_METHOD, _Input.GOT_METHOD): ObfuscationState.AWAITING_PADDING,
    (ObfuscationState.AWAITING_PADDING, _Input.GOT_PADDING): ObfuscationState.ESTABLISHED,
    **{
        (s, _Input.ERROR): ObfuscationState.FAILED
        for s in ObfuscationState
        if s is not ObfuscationState.FAILED
    },
}


def stream_key(target_user_hash: bytes, magic: int, random_key_part: int) -> bytes:
    """MD5(<user hash 16><magic 1><key part 4 LE>): the 16-byte RC4 key of one direction."""
    material = target_user_hash + bytes([magic]) + struct.pack("<I", random_key_part)
    return hashlib.md5(material, usedforsecurity=False).digest()  # the protocol defines MD5


class ObfuscationInitiator:
    """Connecting side. ``start()`` gives the request to send; ``receive(data)`` returns the
    decrypted eD2k bytes that follow the handshake (empty until established); ``encrypt(data)``
    prepares eD2k bytes to send once established. Our HELLO must wait for B's answer: aMule, as B,
    drops the connection when bytes follow our padding in the read that completes our request
    (EncryptedStreamSocket.cpp Read(), "more data then the current negotiation step required"),
    and aMule as A also holds its packets until the handshake is done."""

    def __init__(
        self,
        target_user_hash: bytes,
        rng: Callable[[int], bytes],
        *,
        max_padding: int = MAX_PADDING,
    ) -> None:
        if len(target_user_hash) != HASH_SIZE:
            raise ValueError("the target's user hash is 16 bytes")
        if not 0 <= max_padding <= 255:
            raise ValueError("padding length is one byte")
        self._target = bytes(target_user_hash)
        self._rng = rng
        self._max_padding = max_padding
        self._state = ObfuscationState.NEW
        self._buf = bytearray()
        self._pad_left = 0
        self._out: Rc4 | None = None
        self._in: Rc4 | None = None
        self.method_selected: int | None = None

    @property
    def state(self) -> ObfuscationState:
        return self._state

    @property
    def established(self) -> bool:
        return self._state is ObfuscationState.ESTABLISHED

    def _go(self, what: _Input) -> None:
        self._state = TRANSITIONS[(self._state, what)]

    def start(self) -> bytes:
        if self._state is not ObfuscationState.NEW:
            raise RuntimeError("start() was already called")
        self._go(_Input.START)
        marker = self._marker()
        key_part = struct.unpack("<I", self._rng(4))[0]
        self._out = Rc4(stream_key(self._target, MAGIC_REQUESTER, key_part))
        self._in = Rc4(stream_key(self._target, MAGIC_SERVER, key_part))
        pad_len = self._rng(1)[0] % (self._max_padding + 1)
        body = struct.pack("<IBBB", MAGIC_SYNC, METHOD_OBFUSCATION, METHOD_OBFUSCATION, pad_len)
        padding = self._rng(pad_len) if pad_len else b""
        return bytes([marker]) + struct.pack("<I", key_part) + self._out.crypt(body + padding)

    def _marker(self) -> int:
        # aMule GetSemiRandomNotProtocolMarker: random, but never a byte that starts a plain packet.
        for _ in range(128):
            b = self._rng(1)[0]
            if b not in _PROTOCOL_MARKERS:
                return b
        return 0x01

    def encrypt(self, data: bytes) -> bytes:
        if self._out is None or not self.established:
            raise RuntimeError("send eD2k bytes only once the obfuscation handshake is established")
        return self._out.crypt(data)

    def receive(self, data: bytes) -> bytes:
        if self._state is ObfuscationState.FAILED:
            raise ObfuscationError("the obfuscation handshake already failed")
        if self._in is None:
            raise RuntimeError("call start() before receive()")
        plain = self._in.crypt(bytes(data))
        if self._state is ObfuscationState.ESTABLISHED:
            return plain
        self._buf += plain
        try:
            self._advance()
        except ObfuscationError:
            self._go(_Input.ERROR)
            self._buf.clear()
            raise
        if self.established:  # _advance moved the state on
            rest = bytes(self._buf)
            self._buf.clear()
            return rest
        return b""

    def _advance(self) -> None:
        while True:
            if self._state is ObfuscationState.AWAITING_MAGIC:
                if len(self._buf) < 4:
                    return
                magic = struct.unpack_from("<I", self._buf)[0]
                if magic != MAGIC_SYNC:
                    raise ObfuscationError(f"wrong obfuscation magic {magic:#010x}")
                del self._buf[:4]
                self._go(_Input.GOT_MAGIC)
            elif self._state is ObfuscationState.AWAITING_METHOD:
                if len(self._buf) < 2:
                    return
                method, self._pad_left = self._buf[0], self._buf[1]
                if method != METHOD_OBFUSCATION:
                    raise ObfuscationError(f"target selected unknown method {method}")
                self.method_selected = method
                del self._buf[:2]
                self._go(_Input.GOT_METHOD)
            elif self._state is ObfuscationState.AWAITING_PADDING:
                drop = min(self._pad_left, len(self._buf))
                del self._buf[:drop]
                self._pad_left -= drop
                if self._pad_left:
                    return
                self._go(_Input.GOT_PADDING)
            else:
                return
