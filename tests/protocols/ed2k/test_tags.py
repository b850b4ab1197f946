"""eD2k tags: golden bytes from aMule Tag.cpp's layouts, round trips, hostile lists."""

from __future__ import annotations

import contextlib
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.errors import ProtocolError
from peerwatch.protocols.ed2k.tags import (
    MAX_TAGS,
    Tag,
    TagError,
    TagType,
    decode_tags,
    encode_tag,
    encode_tag_list,
    find,
)
from peerwatch.protocols.ed2k.wire import Reader

GOLDEN: list[tuple[bytes, Tag]] = [
    # compact name (type | 0x80, id) and STR3 (0x13): CT_NAME = "abc"
    (b"\x93\x01abc", Tag(0x01, TagType.STR1 + 2, b"abc")),
    # UINT32 CT_VERSION = 0x3C, as eMule's HELLO writes it
    (b"\x83\x11\x3c\x00\x00\x00", Tag(0x11, TagType.UINT32, 0x3C)),
    # UINT8 / UINT16 / UINT64
    (b"\x89\xfa\x07", Tag(0xFA, TagType.UINT8, 7)),
    (b"\x88\xfa\x34\x12", Tag(0xFA, TagType.UINT16, 0x1234)),
    (b"\x8b\x02" + struct.pack("<Q", 1 << 40), Tag(0x02, TagType.UINT64, 1 << 40)),
    # old form: <type><name len 2><name>; a 1-byte name is an id
    (b"\x02\x01\x00\x01\x03\x00xyz", Tag(0x01, TagType.STRING, b"xyz")),
    (b"\x03\x04\x00abcd\x01\x00\x00\x00", Tag(b"abcd", TagType.UINT32, 1)),
    # HASH16, BLOB <len 4>, BSOB <len 1>, BOOL, FLOAT32, BOOLARRAY <bits 2><bits/8+1>
    (b"\x81\x28" + bytes(range(16)), Tag(0x28, TagType.HASH16, bytes(range(16)))),
    (b"\x87\x30\x02\x00\x00\x00hi", Tag(0x30, TagType.BLOB, b"hi")),
    (b"\x8a\x30\x01z", Tag(0x30, TagType.BSOB, b"z")),
    (b"\x85\x30\x01", Tag(0x30, TagType.BOOL, True)),
    (b"\x84\x30" + struct.pack("<f", 1.5), Tag(0x30, TagType.FLOAT32, 1.5)),
    (b"\x86\x30\x09\x00\xff\x01", Tag(0x30, TagType.BOOLARRAY, b"\xff\x01", bits=9)),
]


@pytest.mark.parametrize(("wire", "tag"), GOLDEN)
def test_golden(wire: bytes, tag: Tag) -> None:
    assert decode_tags(struct.pack("<I", 1) + wire) == (tag,)


def test_encode_chooses_compact_forms() -> None:
    assert encode_tag(Tag.string(0x01, "abc")) == b"\x93\x01abc"
    assert encode_tag(Tag.string(0x01, b"x" * 17))[:4] == b"\x82\x01\x11\x00"
    assert Tag.integer(1, 255).type == TagType.UINT8
    assert Tag.integer(1, 256).type == TagType.UINT16
    assert Tag.integer(1, 65536).type == TagType.UINT32
    assert Tag.integer(1, 1 << 32).type == TagType.UINT64
    assert encode_tag(Tag(b"abcd", TagType.UINT32, 1)) == GOLDEN[6][0]


def test_find_returns_the_last() -> None:
    tags = (Tag.integer(1, 1), Tag.integer(2, 2), Tag.integer(1, 3))
    found = find(tags, 1)
    assert found is not None and found.as_int() == 3
    assert find(tags, 9) is None


def test_constructor_rejects_inconsistent_tags() -> None:
    with pytest.raises(ValueError, match="id"):
        Tag(b"a", TagType.UINT8, 1)
    with pytest.raises(ValueError, match="STR3"):
        Tag(1, TagType.STR1 + 2, b"ab")
    with pytest.raises(ValueError, match="unknown"):
        Tag(1, 0x0C, b"")


@pytest.mark.parametrize(
    ("wire", "match"),
    [
        (b"\x01\x00\x00\x00\x8c\x01\x00", "unknown tag type 0x0c"),
        (b"\x01\x00\x00\x00\x87\x01\xff\xff\xff\xff", "truncated"),  # 4 GiB blob in 0 bytes
        (b"\x01\x00\x00\x00\x82\x01\xff\xff", "truncated"),
        (b"\x01\x00\x00\x00\x02\xff\xff", "truncated"),  # 64 KiB tag name
        (b"\xff\xff\xff\xff", "over"),  # 4 billion tags
        (struct.pack("<I", MAX_TAGS) + b"\x89\x01\x00" * 10, "cannot fit"),
    ],
)
def test_hostile_lists(wire: bytes, match: str) -> None:
    with pytest.raises(TagError, match=match):
        decode_tags(wire)


def test_trailing_bytes_after_a_list() -> None:
    with pytest.raises(ProtocolError, match="trailing"):
        decode_tags(encode_tag_list([Tag.integer(1, 1)]) + b"x")


names = st.one_of(
    st.integers(0, 255),
    st.binary(max_size=20).filter(lambda b: len(b) != 1),
)


@st.composite
def tags(draw: st.DrawFn) -> Tag:
    name = draw(names)
    kind = draw(st.sampled_from(["int", "str", "hash", "blob", "bsob", "bool", "float", "bits"]))
    if kind == "int":
        t = draw(st.sampled_from([TagType.UINT8, TagType.UINT16, TagType.UINT32, TagType.UINT64]))
        size = {TagType.UINT8: 1, TagType.UINT16: 2, TagType.UINT32: 4, TagType.UINT64: 8}[t]
        return Tag(name, t, draw(st.integers(0, (1 << (8 * size)) - 1)))
    if kind == "str":
        return Tag.string(name, draw(st.binary(max_size=40)))
    if kind == "hash":
        return Tag.hash16(name, draw(st.binary(min_size=16, max_size=16)))
    if kind == "blob":
        return Tag.blob(name, draw(st.binary(max_size=40)))
    if kind == "bsob":
        return Tag(name, TagType.BSOB, draw(st.binary(max_size=40)))
    if kind == "bool":
        return Tag(name, TagType.BOOL, draw(st.booleans()))
    if kind == "float":
        value = draw(st.floats(width=32, allow_nan=False))
        return Tag(name, TagType.FLOAT32, value)
    bits = draw(st.integers(0, 40))
    return Tag(
        name,
        TagType.BOOLARRAY,
        draw(st.binary(min_size=bits // 8 + 1, max_size=bits // 8 + 1)),
        bits,
    )


@given(st.lists(tags(), max_size=12))
@settings(max_examples=300, deadline=None)
def test_round_trip(tag_list: list[Tag]) -> None:
    wire = encode_tag_list(tag_list)
    decoded = decode_tags(wire)
    assert decoded == tuple(tag_list)
    assert encode_tag_list(list(decoded)) == wire


@given(st.binary(max_size=200))
@settings(max_examples=500, deadline=None)
def test_decoder_is_total(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode_tags(data)


def test_float_nan_survives_as_nan() -> None:
    (tag,) = decode_tags(b"\x01\x00\x00\x00\x84\x30" + struct.pack("<f", math.nan))
    assert isinstance(tag.value, float) and math.isnan(tag.value)


def test_reader_refuses_negative_and_short_reads() -> None:
    r = Reader(b"ab")
    with pytest.raises(ProtocolError):
        r.take(-1)
    with pytest.raises(ProtocolError):
        r.u32()
