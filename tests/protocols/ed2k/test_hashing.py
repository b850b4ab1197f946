"""eD2k hashing: published vectors (AniDB wiki, aMule KnownFile.cpp, RFC 1320), the exact-multiple
rule, part counts, and streaming == one shot."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.protocols.ed2k.hashing import (
    EMPTY_MD4,
    PART_SIZE,
    AichHasher,
    Ed2kHasher,
    aich_from_base32,
    aich_to_base32,
    data_part_count,
    ed2k_part_count,
    hash_bytes,
    hash_file,
    hash_stream,
    hashset_count,
    md4,
    part_range,
    root_from_part_hashes,
)

# RFC 1320 appendix A.5 (the MD4 test suite).
RFC1320 = [
    (b"", "31d6cfe0d16ae931b73c59d7e0c089c0"),
    (b"a", "bde52cb31de33e46245e05fbdbd6fb24"),
    (b"abc", "a448017aaf21d8525fc10ae87aa6729d"),
    (b"message digest", "d9130a8164549fe818874806e1c7014b"),
    (b"abcdefghijklmnopqrstuvwxyz", "d79e1c308aa5bbcdeea8ed63df412da9"),
]


@pytest.mark.parametrize(("data", "digest"), RFC1320)
def test_md4_rfc1320(data: bytes, digest: str) -> None:
    assert md4(data).hex() == digest


def test_empty_part_hash_is_md4_of_nothing() -> None:
    assert md4(b"") == EMPTY_MD4


# AniDB wiki "Ed2k-hash", table "File of zeros": the network's ("red") hash of sizes that are an
# exact multiple of the part size, next to the variant without the empty part ("blue").
ANIDB_ZEROS = [
    (PART_SIZE, "fc21d9af828f92a8df64beac3357425d", "d7def262a127cd79096a108e7a9fc138"),
    (2 * PART_SIZE, "114b21c63a74b6ca922291a11177dd5c", "194ee9e4fa79b2ee9f8829284c466051"),
]


@pytest.mark.parametrize(("size", "red", "blue"), ANIDB_ZEROS)
def test_exact_multiple_rule_against_anidb(size: int, red: str, blue: str) -> None:
    digest = hash_bytes(bytes(size))
    assert digest.hex == red
    assert digest.hex != blue
    # the rule itself: the hashset ends with the hash of an empty part (aMule KnownFile.cpp table)
    assert digest.part_hashes[-1] == EMPTY_MD4
    assert len(digest.part_hashes) == size // PART_SIZE + 1
    # "blue" drops the empty part: one data part is then hashed alone, more are hashed together
    data_parts = digest.part_hashes[:-1]
    blue_root = data_parts[0] if len(data_parts) == 1 else md4(b"".join(data_parts))
    assert blue_root.hex() == blue


def test_zero_file_neighbours() -> None:
    # Sizes one below and above a part of zeros; the same values appear in several independent
    # public eD2k test suites.
    assert hash_bytes(bytes(PART_SIZE - 1)).hex == "ac44b93fc9aff773ab0005c911f8396f"
    assert hash_bytes(bytes(PART_SIZE + 1)).hex == "06329e9dba1373512c06386fe29e3c65"


def test_small_file_is_plain_md4_and_has_no_hashset() -> None:
    data = b"benign generated test bytes"
    digest = hash_bytes(data)
    assert digest.root == md4(data)
    assert digest.part_hashes == ()
    assert digest.part_hash(0) == digest.root
    with pytest.raises(IndexError):
        digest.part_hash(1)


# aMule CKnownFile::SetFileSize: size -> data parts, ED2K parts (OP_FILESTATUS), hashset count.
COUNTS = [
    (1, 1, 1, 0),
    (PART_SIZE - 1, 1, 1, 0),
    (PART_SIZE, 1, 2, 2),
    (PART_SIZE + 1, 2, 2, 2),
    (2 * PART_SIZE, 2, 3, 3),
    (2 * PART_SIZE + 1, 3, 3, 3),
]


@pytest.mark.parametrize(("size", "data_parts", "ed2k_parts", "hashes"), COUNTS)
def test_part_counts(size: int, data_parts: int, ed2k_parts: int, hashes: int) -> None:
    assert data_part_count(size) == data_parts
    assert ed2k_part_count(size) == ed2k_parts
    assert hashset_count(size) == hashes


def test_part_range() -> None:
    assert part_range(PART_SIZE + 5, 0) == (0, PART_SIZE)
    assert part_range(PART_SIZE + 5, 1) == (PART_SIZE, PART_SIZE + 5)
    with pytest.raises(IndexError):
        part_range(PART_SIZE, 1)


def test_root_from_part_hashes_rejects_short_lists() -> None:
    with pytest.raises(ValueError, match="two"):
        root_from_part_hashes([EMPTY_MD4])
    with pytest.raises(ValueError, match="16-byte"):
        root_from_part_hashes([b"x", b"y"])


def test_multi_part_random_content_and_file(tmp_path: Path) -> None:
    rng = random.Random(7)
    data = rng.randbytes(2 * PART_SIZE + 12345)
    digest = hash_bytes(data)
    expected_parts = [md4(data[i : i + PART_SIZE]) for i in range(0, len(data), PART_SIZE)]
    assert list(digest.part_hashes) == expected_parts
    assert digest.root == md4(b"".join(expected_parts))
    path = tmp_path / "benign.bin"
    path.write_bytes(data)
    assert hash_file(path) == digest
    assert hash_stream(io.BytesIO(data)) == digest


@given(st.integers(0, 3000), st.lists(st.integers(1, 700), max_size=20), st.integers(0, 2**32))
@settings(max_examples=60, deadline=None)
def test_streaming_equals_one_shot(size: int, cuts: list[int], seed: int) -> None:
    # A small part size would not exercise the rule, so check the chunking logic on small data and
    # the boundary in the vectors above.
    data = random.Random(seed).randbytes(size)
    hasher = Ed2kHasher()
    pos = 0
    for cut in cuts:
        hasher.update(data[pos : pos + cut])
        pos += cut
    hasher.update(data[pos:])
    assert hasher.digest() == hash_bytes(data)


def test_streaming_across_the_part_boundary() -> None:
    data = random.Random(3).randbytes(PART_SIZE + 100)
    hasher = Ed2kHasher()
    for i in range(0, len(data), 999_999):
        hasher.update(data[i : i + 999_999])
    assert hasher.digest() == hash_bytes(data)
    assert hasher.digest().part_hashes[0] == md4(data[:PART_SIZE])


def test_aich_base32() -> None:
    raw = bytes(range(20))
    text = aich_to_base32(raw)
    assert len(text) == 32
    assert aich_from_base32(text.lower()) == raw
    with pytest.raises(ValueError, match="32 base32"):
        aich_from_base32("ABC")
    with pytest.raises(ValueError, match="base32"):
        aich_from_base32("1" * 32)


# RHash librhash/test_sums.c (the long-message tests, whose eD2k and AICH values it says were
# checked with eMule's Link Creator; the 5-part pair sits in an "#if 0" block there).
RHASH_LONG = [
    (b"a" * 1_000_000, "bbce80cc6bb65e5c6745e30d4eeca9a4", "KSYPATEV3KP26FJYUEEBCPL5LQJ5FGUK"),
    (bytes(PART_SIZE - 1), "ac44b93fc9aff773ab0005c911f8396f", "L6SPMD2CM6PRZBGRQ6UFC4HJFFOATRA4"),
    (bytes(PART_SIZE), "fc21d9af828f92a8df64beac3357425d", "5D3N4HQHIUMQ7IU7A5QLPLI6RHSWOR7B"),
    (bytes(PART_SIZE + 1), "06329e9dba1373512c06386fe29e3c65", "HL3TFXORIUEPXUWFPY3JLR7SMKGTO4IH"),
    (bytes(5 * PART_SIZE), "3b613901daba54f6c0671793e28a1205", "EZCO3XF2RJ4FERRDEXGOSSRGL5NA5BBM"),
]


@pytest.mark.parametrize(("data", "ed2k", "aich"), RHASH_LONG, ids=["a1M", "p-1", "p", "p+1", "5p"])
def test_rhash_long_vectors_ed2k_and_aich(data: bytes, ed2k: str, aich: str) -> None:
    digest = hash_bytes(data, aich=True)
    assert digest.hex == ed2k
    assert digest.aich is not None and aich_to_base32(digest.aich) == aich


@pytest.mark.parametrize(
    ("text", "aich"),
    [  # RHash test_sums.c aich_tests: below one block the AICH hash is SHA-1 of the data
        (b"", "3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ"),
        (b"abc", "VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5"),
        (b"message digest", "YERFFTW2RPUJSTK7UAUQURZDDQORNKXD"),
    ],
)
def test_aich_short_vectors(text: bytes, aich: str) -> None:
    digest = hash_bytes(text, aich=True)
    assert digest.aich is not None and aich_to_base32(digest.aich) == aich


def test_aich_streaming_split_does_not_matter() -> None:
    data = random.Random(9).randbytes(PART_SIZE + 400_000)
    whole = AichHasher()
    whole.update(data)
    pieces = AichHasher()
    for i in range(0, len(data), 184_321):  # never aligned with a block
        pieces.update(data[i : i + 184_321])
    assert whole.digest() == pieces.digest()
    assert hash_bytes(data).aich is None
