"""Hash kinds and parsing of textual hash values.

A hash on a list is a (kind, digest) pair. Some lengths are ambiguous in plain text: 32 hex digits
may be MD5 or eD2k (MD4), 40 hex digits SHA-1 or a BitTorrent v1 infohash, 64 hex digits SHA-256
or a BitTorrent v2 infohash (BEP 52). Unless the user says `--kind`, such a value is stored with an
"either" kind and matched as both members of the pair (see docs/watchlist.md).
"""

from __future__ import annotations

import base64
import binascii
import enum
from dataclasses import dataclass


class HashKind(enum.StrEnum):
    MD5 = "md5"
    ED2K = "ed2k"  # MD4 root hash of 9,728,000-byte parts
    SHA1 = "sha1"
    BTIH = "btih"  # BitTorrent v1 infohash: SHA-1 of the bencoded info dict (BEP 3)
    SHA256 = "sha256"
    BTMH = (
        "btmh"  # BitTorrent v2 infohash: SHA-256 of the info dict (BEP 52); also v2 'pieces root'
    )
    MD5_OR_ED2K = "md5|ed2k"
    SHA1_OR_BTIH = "sha1|btih"
    SHA256_OR_BTMH = "sha256|btmh"

    @property
    def digest_size(self) -> int:
        return _SIZES[self]

    @property
    def members(self) -> tuple[HashKind, ...]:
        """The concrete kinds a value of this kind is matched as."""
        return _MEMBERS.get(self, (self,))

    @property
    def is_ambiguous(self) -> bool:
        return self in _MEMBERS


_SIZES: dict[HashKind, int] = {
    HashKind.MD5: 16,
    HashKind.ED2K: 16,
    HashKind.MD5_OR_ED2K: 16,
    HashKind.SHA1: 20,
    HashKind.BTIH: 20,
    HashKind.SHA1_OR_BTIH: 20,
    HashKind.SHA256: 32,
    HashKind.BTMH: 32,
    HashKind.SHA256_OR_BTMH: 32,
}

_MEMBERS: dict[HashKind, tuple[HashKind, ...]] = {
    HashKind.MD5_OR_ED2K: (HashKind.MD5, HashKind.ED2K),
    HashKind.SHA1_OR_BTIH: (HashKind.SHA1, HashKind.BTIH),
    HashKind.SHA256_OR_BTMH: (HashKind.SHA256, HashKind.BTMH),
}

#: Concrete kinds, in a fixed order (the match index keeps one table per concrete kind).
CONCRETE_KINDS: tuple[HashKind, ...] = (
    HashKind.MD5,
    HashKind.ED2K,
    HashKind.SHA1,
    HashKind.BTIH,
    HashKind.SHA256,
    HashKind.BTMH,
)

_AMBIGUOUS_BY_SIZE: dict[int, HashKind] = {
    16: HashKind.MD5_OR_ED2K,
    20: HashKind.SHA1_OR_BTIH,
    32: HashKind.SHA256_OR_BTMH,
}


class HashParseError(ValueError):
    """A textual hash value is malformed; the message says why (length, bad digit)."""


@dataclass(frozen=True, slots=True, order=True)
class Digest:
    """A hash value of a known (possibly ambiguous) kind."""

    kind: HashKind
    value: bytes

    def __post_init__(self) -> None:
        if len(self.value) != self.kind.digest_size:
            raise HashParseError(
                f"{self.kind.value} needs {self.kind.digest_size} bytes, got {len(self.value)}"
            )

    @property
    def hex(self) -> str:
        return self.value.hex()

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.value.hex()}"


def decode_hash_text(text: str, *, base32: bool = True) -> bytes:
    """Decode a hex (16/20/32 bytes) or, when allowed, base32 (32 chars = 20 bytes) hash string."""
    s = text.strip()
    if len(s) in (32, 40, 64):
        try:
            return binascii.unhexlify(s)
        except ValueError:  # binascii.Error, or non-ASCII text
            if len(s) != 32 or not base32:
                raise HashParseError(f"bad hex digit in {s!r}") from None
    if len(s) == 32 and base32:
        # BEP 9 magnet links and some lists write SHA-1 / v1 infohashes in RFC 4648 base32.
        try:
            return base64.b32decode(s.upper())
        except ValueError:  # binascii.Error, or non-ASCII text
            raise HashParseError(f"{s!r} is neither hex nor base32") from None
    raise HashParseError(
        f"length {len(s)} is not a hash length (32/40/64 hex digits or 32 base32 characters)"
    )


def parse_hash(text: str, kind: HashKind | None = None) -> Digest:
    """Parse a textual hash. Without `kind`, the length decides and ambiguous lengths stay
    ambiguous.

    A 32-character value that is valid hex is read as hex (MD5/eD2k); only values that are not hex
    are read as base32 (SHA-1/infohash v1).
    """
    # Base32 is only ever used for 20-byte values (SHA-1, v1 infohashes).
    raw = decode_hash_text(text, base32=kind is None or kind.digest_size == 20)
    if kind is None:
        kind = _AMBIGUOUS_BY_SIZE[len(raw)]
    elif kind.digest_size != len(raw):
        raise HashParseError(
            f"a {kind.value} hash is {kind.digest_size} bytes "
            f"({kind.digest_size * 2} hex digits), got {len(raw)} bytes"
        )
    return Digest(kind, raw)
