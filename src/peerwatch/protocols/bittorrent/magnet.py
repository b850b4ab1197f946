"""Parser for BitTorrent magnet URIs (BEP 9, with the v2 'btmh' form of BEP 52).

    magnet:?xt=urn:btih:<40 hex | 32 base32>&xt=urn:btmh:1220<64 hex>&dn=<name>&xl=<size>&tr=<url>

Pure and total: `parse_magnet` returns a frozen `Magnet` or raises `MagnetError`, never anything
else. Parameters may carry BEP 9's numbered suffix (``xt.1``, ``tr.2``). `xt` values for other
networks (``urn:ed2k:``, ``urn:sha1:``...) are kept in `other_xt` but a magnet without a BitTorrent
infohash is rejected.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl

from peerwatch.errors import ProtocolError

#: Longest magnet URI accepted (real ones with many trackers are a few KiB).
MAX_MAGNET_LENGTH = 64 * 1024
#: Most query parameters accepted.
MAX_PARAMETERS = 1000

_SCHEME = "magnet:?"
_BTIH = "urn:btih:"
_BTMH = "urn:btmh:"
# Multihash prefix for SHA2-256 (code 0x12) with a 32-byte (0x20) digest, as BEP 52 magnets use.
_MULTIHASH_SHA256 = "1220"
_NUMBERED = re.compile(r"^([a-z.]+?)(?:\.[0-9]+)?$")
_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_B32 = re.compile(r"[A-Za-z2-7]{32}")
_DIGITS = re.compile(r"[0-9]{1,20}")


class MagnetError(ProtocolError):
    """The text is not a usable BitTorrent magnet URI; `field` names the parameter (e.g. 'xt')."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}" if field else message)


@dataclass(frozen=True, slots=True)
class Magnet:
    """A decoded magnet URI. At least one of `btih` (v1, 20 bytes) and `btmh` (v2, 32 bytes)."""

    btih: bytes | None
    btmh: bytes | None
    name: str | None  # dn: display name
    size: int | None  # xl: exact length in bytes
    trackers: tuple[str, ...]  # tr, in order, duplicates dropped
    peers: tuple[str, ...] = ()  # x.pe: peer addresses (BEP 9)
    other_xt: tuple[str, ...] = ()  # xt URNs of other networks, kept verbatim


def parse_magnet(uri: str) -> Magnet:
    """Decode a magnet URI; raise `MagnetError` (and nothing else) when it is not usable."""
    text = uri.strip()
    if len(text) > MAX_MAGNET_LENGTH:
        raise MagnetError(f"{len(text)} characters is longer than the {MAX_MAGNET_LENGTH} limit")
    if not text[: len(_SCHEME)].lower() == _SCHEME:
        raise MagnetError("does not start with 'magnet:?'")
    try:
        params = parse_qsl(
            text[len(_SCHEME) :],
            keep_blank_values=True,
            max_num_fields=MAX_PARAMETERS,
            errors="replace",
        )
    except ValueError as exc:  # too many fields
        raise MagnetError(str(exc)) from None

    btih: bytes | None = None
    btmh: bytes | None = None
    name: str | None = None
    size: int | None = None
    trackers: dict[str, None] = {}
    peers: dict[str, None] = {}
    other: list[str] = []
    for raw_key, value in params:
        m = _NUMBERED.match(raw_key.lower())
        key = m.group(1) if m else raw_key.lower()
        if key == "xt":
            low = value.lower()
            if low.startswith(_BTIH):
                btih = _merge(btih, _btih(value[len(_BTIH) :]), "btih")
            elif low.startswith(_BTMH):
                btmh = _merge(btmh, _btmh(value[len(_BTMH) :]), "btmh")
            else:
                other.append(value)
        elif key == "dn":
            name = value
        elif key == "xl":
            if not _DIGITS.fullmatch(value):
                raise MagnetError(f"not a byte count: {value[:40]!r}", field="xl")
            size = int(value)
        elif key == "tr":
            if value:
                trackers.setdefault(value, None)
        elif key == "x.pe" and value:
            peers.setdefault(value, None)
    if btih is None and btmh is None:
        raise MagnetError("no 'urn:btih:' or 'urn:btmh:' exact topic", field="xt")
    return Magnet(
        btih=btih,
        btmh=btmh,
        name=name,
        size=size,
        trackers=tuple(trackers),
        peers=tuple(peers),
        other_xt=tuple(other),
    )


def _merge(old: bytes | None, new: bytes, what: str) -> bytes:
    # BEP 52 hybrid magnets carry one btih and one btmh; two different values of one kind would
    # name two torrents, which a single watch-list entry cannot.
    if old is not None and old != new:
        raise MagnetError(f"two different {what} values", field="xt")
    return new


def _btih(text: str) -> bytes:
    """BEP 9: 40 hex digits, or 32 base32 characters (RFC 4648)."""
    if _HEX40.fullmatch(text):
        return binascii.unhexlify(text)
    if _B32.fullmatch(text):
        return base64.b32decode(text.upper())
    raise MagnetError(
        f"urn:btih needs 40 hex digits or 32 base32 characters, got {text[:80]!r}", field="xt"
    )


def _btmh(text: str) -> bytes:
    """BEP 52: a multihash in hex; only SHA2-256 ('1220' + 64 hex digits) is defined."""
    if not text.startswith(_MULTIHASH_SHA256):
        raise MagnetError(
            f"urn:btmh must be a SHA2-256 multihash starting '1220', got {text[:80]!r}", field="xt"
        )
    digest = text[len(_MULTIHASH_SHA256) :]
    if not _HEX64.fullmatch(digest):
        raise MagnetError(
            f"urn:btmh needs 64 hex digits after '1220', got {len(digest)} characters", field="xt"
        )
    return binascii.unhexlify(digest)
