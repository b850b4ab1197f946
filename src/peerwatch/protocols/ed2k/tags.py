"""eD2k tags: the typed name/value pairs of HELLO, EMULEINFO, file and server records.

Wire form as aMule's src/Tag.cpp reads and writes it (CTag::CTag(CFileDataIO&),
CTag::WriteNewEd2kTag); Kulbak & Bickson's section 6.1.3 "Message Tags" is the prose description:

- ``<type 1>``; if ``type & 0x80`` the name is one byte ``<id 1>`` (the compact "new ed2k" form),
  else ``<len 2><name len>`` where a 1-byte name is an id too;
- the value by type: HASH16 16 bytes, STRING ``<len 2><bytes>``, UINT8/16/32/64 little-endian,
  FLOAT32 4 bytes, BOOL 1 byte, BOOLARRAY ``<bits 2>`` then ``bits/8 + 1`` bytes (aMule's reading),
  BLOB ``<len 4><bytes>``, BSOB ``<len 1><bytes>``, and STR1..STR16 (0x11..0x20) a string whose
  length is ``type - 0x10``, with no length field.

`Tag` keeps the wire type, so ``decode(encode(tag)) == tag`` and ``encode(decode(b)) == b`` for any
canonical bytes. The constructors `Tag.integer` and `Tag.string` choose the smallest form the way
WriteNewEd2kTag does. Strings stay raw bytes: peers send UTF-8 or Latin-1 (see `wire.text`).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from peerwatch.protocols.ed2k.wire import HASH_SIZE, Ed2kError, Reader, u8, u16, u32

#: Most tags accepted in one tag list. HELLO carries about ten; eMule file records a few dozen.
MAX_TAGS = 1024


class TagError(Ed2kError):
    """A tag or tag list is malformed (unknown type, truncated value, too many tags)."""


class TagType(enum.IntEnum):
    HASH16 = 0x01
    STRING = 0x02
    UINT32 = 0x03
    FLOAT32 = 0x04
    BOOL = 0x05
    BOOLARRAY = 0x06
    BLOB = 0x07
    UINT16 = 0x08
    UINT8 = 0x09
    BSOB = 0x0A
    UINT64 = 0x0B
    STR1 = 0x11  # STR1..STR16: compact strings of 1..16 bytes (type - 0x10 is the length)
    STR16 = 0x20


_INT_TYPES: dict[int, int] = {
    TagType.UINT8: 1,
    TagType.UINT16: 2,
    TagType.UINT32: 4,
    TagType.UINT64: 8,
}
_INT_FMT = {1: "<B", 2: "<H", 4: "<I", 8: "<Q"}

TagName = int | bytes
TagValue = int | float | bytes | bool


@dataclass(frozen=True, slots=True)
class Tag:
    """One tag. `name` is an int id (0..255) or a byte string of length other than 1.

    `value` by `type`: int for UINT*, float for FLOAT32, bool for BOOL, bytes for the rest
    (STRING/STRn text, HASH16 digest, BLOB/BSOB data, BOOLARRAY packed bits). `bits` is the
    BOOLARRAY bit count (0 otherwise).
    """

    name: TagName
    type: int
    value: TagValue
    bits: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.name, int):
            if not 0 <= self.name <= 0xFF:
                raise ValueError("a tag id is one byte")
        elif len(self.name) == 1 or len(self.name) > 0xFFFF:
            raise ValueError("a tag name is 0 or 2..65535 bytes (1 byte is an id)")
        _check_value(self)

    @classmethod
    def integer(cls, name: TagName, value: int) -> Tag:
        """The smallest integer form (WriteNewEd2kTag: UINT8, UINT16, UINT32, else UINT64)."""
        for t, size in _INT_TYPES.items():
            if value < 1 << (8 * size):
                return cls(name, t, value)
        return cls(name, TagType.UINT64, value)

    @classmethod
    def uint32(cls, name: TagName, value: int) -> Tag:
        """A fixed 32-bit integer, as eMule writes HELLO tags to peers without value-based types."""
        return cls(name, TagType.UINT32, value)

    @classmethod
    def string(cls, name: TagName, value: bytes | str) -> Tag:
        """STR1..STR16 for 1..16 bytes (WriteNewEd2kTag), else STRING. str is sent as UTF-8."""
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        t = TagType.STR1 + len(raw) - 1 if 1 <= len(raw) <= 16 else TagType.STRING
        return cls(name, t, raw)

    @classmethod
    def hash16(cls, name: TagName, value: bytes) -> Tag:
        return cls(name, TagType.HASH16, bytes(value))

    @classmethod
    def blob(cls, name: TagName, value: bytes) -> Tag:
        return cls(name, TagType.BLOB, bytes(value))

    @property
    def is_int(self) -> bool:
        return self.type in _INT_TYPES

    @property
    def is_string(self) -> bool:
        return self.type == TagType.STRING or TagType.STR1 <= self.type <= TagType.STR16

    def as_int(self) -> int | None:
        return self.value if self.is_int and isinstance(self.value, int) else None

    def as_bytes(self) -> bytes | None:
        return self.value if self.is_string and isinstance(self.value, bytes) else None


def _check_value(tag: Tag) -> None:
    t, v = tag.type, tag.value
    if t in _INT_TYPES:
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << (8 * _INT_TYPES[t]):
            raise ValueError(f"tag type {t:#x} needs an int of {_INT_TYPES[t]} bytes")
    elif t == TagType.FLOAT32:
        if not isinstance(v, float):
            raise ValueError("FLOAT32 tag needs a float")
    elif t == TagType.BOOL:
        if not isinstance(v, bool):
            raise ValueError("BOOL tag needs a bool")
    elif not isinstance(v, bytes):
        raise ValueError(f"tag type {t:#x} needs bytes")
    elif t == TagType.HASH16 and len(v) != HASH_SIZE:
        raise ValueError("HASH16 tag needs 16 bytes")
    elif TagType.STR1 <= t <= TagType.STR16 and len(v) != t - 0x10:
        raise ValueError(f"STR{t - 0x10} tag needs {t - 0x10} bytes")
    elif t == TagType.STRING and len(v) > 0xFFFF:
        raise ValueError("STRING tag is at most 65535 bytes")
    elif t == TagType.BSOB and len(v) > 0xFF:
        raise ValueError("BSOB tag is at most 255 bytes")
    elif t == TagType.BOOLARRAY and len(v) != tag.bits // 8 + 1:
        raise ValueError("BOOLARRAY needs bits // 8 + 1 bytes")
    elif t not in (
        TagType.HASH16,
        TagType.STRING,
        TagType.BLOB,
        TagType.BSOB,
        TagType.BOOLARRAY,
    ) and not (TagType.STR1 <= t <= TagType.STR16):
        raise ValueError(f"unknown tag type {t:#x}")


def encode_tag(tag: Tag) -> bytes:
    if isinstance(tag.name, int):
        out = u8(tag.type | 0x80) + u8(tag.name)
    else:
        out = u8(tag.type) + u16(len(tag.name)) + tag.name
    t, v = tag.type, tag.value
    if t in _INT_TYPES:
        assert isinstance(v, int)
        return out + struct.pack(_INT_FMT[_INT_TYPES[t]], v)
    if t == TagType.FLOAT32:
        assert isinstance(v, float)
        return out + struct.pack("<f", v)
    if t == TagType.BOOL:
        return out + u8(1 if v else 0)
    assert isinstance(v, bytes)
    if t == TagType.STRING:
        return out + u16(len(v)) + v
    if t == TagType.BLOB:
        return out + u32(len(v)) + v
    if t == TagType.BSOB:
        return out + u8(len(v)) + v
    if t == TagType.BOOLARRAY:
        return out + u16(tag.bits) + v
    return out + v  # HASH16 and STR1..STR16: the length is implied by the type


def read_tag(r: Reader) -> Tag:
    raw_type = r.u8()
    name: TagName
    if raw_type & 0x80:
        t = raw_type & 0x7F
        name = r.u8()
    else:
        t = raw_type
        n = r.u16()
        name = r.u8() if n == 1 else r.take(n)
    if t in _INT_TYPES:
        size = _INT_TYPES[t]
        return Tag(name, t, int.from_bytes(r.take(size), "little"))
    if t == TagType.FLOAT32:
        return Tag(name, t, float(struct.unpack("<f", r.take(4))[0]))
    if t == TagType.BOOL:
        return Tag(name, t, r.u8() != 0)
    if t == TagType.HASH16:
        return Tag(name, t, r.hash16())
    if t == TagType.STRING:
        return Tag(name, t, r.string16())
    if t == TagType.BLOB:
        # The 32-bit length is checked against what is left before any allocation (aMule does
        # the same: "this check is needed to avoid huge allocations in case of bad tags").
        return Tag(name, t, r.take(r.u32()))
    if t == TagType.BSOB:
        return Tag(name, t, r.take(r.u8()))
    if t == TagType.BOOLARRAY:
        bits = r.u16()
        return Tag(name, t, r.take(bits // 8 + 1), bits)
    if TagType.STR1 <= t <= TagType.STR16:
        return Tag(name, t, r.take(t - 0x10))
    raise TagError(f"unknown tag type {t:#04x}")


def read_tag_list(r: Reader, *, max_tags: int = MAX_TAGS) -> tuple[Tag, ...]:
    """``<count 4><tag>[count]``; the count is capped before any tag is read."""
    count = r.u32()
    if count > max_tags:
        raise TagError(f"tag count {count} is over {max_tags}")
    if count * 3 > r.remaining:  # every tag takes at least 3 bytes (type, id, 1-byte value)
        raise TagError(f"tag count {count} cannot fit in {r.remaining} bytes")
    try:
        return tuple(read_tag(r) for _ in range(count))
    except TagError:
        raise
    except (Ed2kError, ValueError) as exc:  # a short read; or a value Tag refuses (a bug)
        raise TagError(f"tag list: {exc}") from None


def encode_tag_list(tags: tuple[Tag, ...] | list[Tag]) -> bytes:
    return u32(len(tags)) + b"".join(encode_tag(t) for t in tags)


def decode_tags(data: bytes, *, max_tags: int = MAX_TAGS) -> tuple[Tag, ...]:
    """A whole buffer that is exactly one tag list."""
    r = Reader(data)
    tags = read_tag_list(r, max_tags=max_tags)
    r.end("tag list")
    return tags


def find(tags: tuple[Tag, ...], name: TagName) -> Tag | None:
    """The last tag with this name (a later tag overrides, as in ProcessHelloTypePacket)."""
    found = None
    for tag in tags:
        if tag.name == name:
            found = tag
    return found
