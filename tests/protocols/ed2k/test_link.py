"""ed2k file links (aMule ED2KLink.cpp grammar), with p= checked by the shared hashing code."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.protocols.ed2k.hashing import PART_SIZE, hash_bytes
from peerwatch.protocols.ed2k.link import Ed2kFileLink, LinkError, parse_ed2k_link

DIGEST = hash_bytes(random.Random(2).randbytes(2 * PART_SIZE))  # benign bytes; 3 part hashes
H = DIGEST.hex
P = ":".join(h.hex() for h in DIGEST.part_hashes)
AICH = "A" * 32


def test_minimal_link() -> None:
    link = parse_ed2k_link(f"ed2k://|file|My%20File%20%C3%A9.bin|1234|{H}|/")
    assert link == Ed2kFileLink("My File é.bin", 1234, DIGEST.root)


def test_full_link_with_hashes_and_sources() -> None:
    text = (
        f"ED2K://|FILE|x.bin|{2 * PART_SIZE}|{H.upper()}|p={P}|h={AICH.lower()}|/"
        "|sources,127.0.0.1:4662|/"
    )
    link = parse_ed2k_link(text)
    assert link.part_hashes == DIGEST.part_hashes
    assert link.aich_hash == bytes(20)
    assert link.sources == ("127.0.0.1:4662",)
    assert parse_ed2k_link(link.to_link()) == Ed2kFileLink(
        "x.bin", 2 * PART_SIZE, DIGEST.root, bytes(20), DIGEST.part_hashes
    )


@pytest.mark.parametrize(
    ("text", "field", "match"),
    [
        ("magnet:?xt=urn:btih:00", "link", "not an ed2k file link"),
        (f"ed2k://|server|{H}|1|2|/", "link", "not an ed2k file link"),
        (f"ed2k://|file|a|1|{H}|", "link", "ends with"),
        (f"ed2k://|file|a|0|{H}|/", "size", "outside"),
        (f"ed2k://|file|a|{0x40_0000_0001}|{H}|/", "size", "outside"),
        (f"ed2k://|file|a|-5|{H}|/", "size", "byte count"),
        (f"ed2k://|file|a|1e3|{H}|/", "size", "byte count"),
        ("ed2k://|file|a|1|abc|/", "hash", "32 hex"),
        (f"ed2k://|file|a|1|{'g' * 32}|/", "hash", "bad hex"),
        (f"ed2k://|file|a|1|{'é' * 32}|/", "hash", "bad hex"),
        (f"ed2k://|file|a|{2 * PART_SIZE}|{H}|p={P.rsplit(':', 1)[0]}|/", "p", "has 3"),
        (f"ed2k://|file|a|{2 * PART_SIZE}|{'0' * 32}|p={P}|/", "p", "do not hash"),
        (f"ed2k://|file|a|{2 * PART_SIZE}|{H}|p={P}:zz|/", "p", "32 hex"),
        (f"ed2k://|file|a|1|{H}|h=ABC|/", "h", "32 base32"),
    ],
)
def test_bad_links(text: str, field: str, match: str) -> None:
    with pytest.raises(LinkError, match=match) as err:
        parse_ed2k_link(text)
    assert err.value.field == field


def test_overlong_link() -> None:
    with pytest.raises(LinkError, match="longer"):
        parse_ed2k_link("ed2k://|file|" + "a" * (5 * 1024 * 1024))


@given(st.text(max_size=40), st.integers(1, 2**38), st.binary(min_size=16, max_size=16))
@settings(max_examples=200, deadline=None)
def test_round_trip(name: str, size: int, file_hash: bytes) -> None:
    link = Ed2kFileLink(name.strip(), size, file_hash)
    assert parse_ed2k_link(link.to_link()) == link


_FIELD = st.text(alphabet="0123456789abcdefABCDEFghp=:/,%|. ", max_size=40)


@given(st.lists(_FIELD, max_size=8), st.text(max_size=20))
@settings(max_examples=600, deadline=None)
def test_parser_raises_only_link_error(fields: list[str], noise: str) -> None:
    for text in ("ed2k://|file|" + "|".join(fields), noise):
        with contextlib.suppress(LinkError):
            parse_ed2k_link(text)
