"""The eD2k error root and the little-endian reader every eD2k decoder uses.

All eD2k integers are little-endian (aMule CMemFile / eMule CSafeMemFile); hashes are 16 raw bytes;
strings carry a 16-bit length. `Reader` raises `Ed2kError` on any short read, so a decoder built on
it is total: hostile bytes give `Ed2kError` (a `ProtocolError`) and nothing else.
"""

from __future__ import annotations

import struct

from peerwatch.errors import ProtocolError

HASH_SIZE = 16  # MD4 digests: file hashes, part hashes, user hashes


class Ed2kError(ProtocolError):
    """A remote eD2k peer sent bytes that break the protocol."""


class Reader:
    """Cursor over one packet payload; every read is bounds-checked."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = bytes(data)
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int) -> bytes:
        if n < 0 or n > self.remaining:
            raise Ed2kError(f"truncated: need {n} bytes, {self.remaining} left")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def rest(self) -> bytes:
        return self.take(self.remaining)

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack("<H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack("<I", self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = struct.unpack("<Q", self.take(8))[0]
        return value

    def hash16(self) -> bytes:
        return self.take(HASH_SIZE)

    def string16(self) -> bytes:
        """A string with a 16-bit length prefix (aMule CFileDataIO::ReadString), raw bytes."""
        return self.take(self.u16())

    def end(self, what: str) -> None:
        """Strict decoders call this: trailing bytes are a malformed packet."""
        if self.remaining:
            raise Ed2kError(f"{what}: {self.remaining} unexpected trailing bytes")


def u8(v: int) -> bytes:
    return struct.pack("<B", v)


def u16(v: int) -> bytes:
    return struct.pack("<H", v)


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def string16(raw: bytes) -> bytes:
    if len(raw) > 0xFFFF:
        raise ValueError("an eD2k string is at most 65535 bytes")
    return u16(len(raw)) + raw


def check_hash(value: bytes, what: str = "hash") -> bytes:
    if len(value) != HASH_SIZE:
        raise ValueError(f"{what} must be {HASH_SIZE} bytes, got {len(value)}")
    return bytes(value)


def text(raw: bytes) -> str:
    """Display form of a peer-supplied string: UTF-8 (eMule's unicode clients) else Latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")
