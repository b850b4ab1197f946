"""eD2k file hashing: MD4 of 9,728,000-byte parts, the root hash, and part counts.

The rule (aMule src/KnownFile.cpp, CKnownFile::SetFileSize and its table of examples): the
file is cut into parts of `PART_SIZE` bytes and each part is hashed with MD4. A file of less than
one part has no part hash list and its eD2k hash is the MD4 of the content. Otherwise
the eD2k hash is the MD4 of the concatenated part hashes; and when the size is an exact multiple of
`PART_SIZE` (including exactly one part) a last, empty part is counted, whose hash is MD4 of
nothing (31d6cfe0d16ae931b73c59d7e0c089c0). This is the "red" variant of the AniDB wiki page
"Ed2k-hash", the one aMule computes (its hashset ends with the empty part's hash); some other
tools omit the empty part ("blue") and get a different hash for such sizes. Published vectors
(AniDB wiki): a file of 9,728,000 zero bytes is fc21d9af828f92a8df64beac3357425d (blue:
d7def262...), 19,456,000 zero bytes 114b21c63a74b6ca922291a11177dd5c (blue: 194ee9e4...).

Counts (CKnownFile::SetFileSize): `ed2k_part_count(size)` = size // PART_SIZE + 1 is what
OP_FILESTATUS carries; `hashset_count(size)` is 0 below one part, else size // PART_SIZE + 1,
which is what OP_HASHSETANSWER carries; `data_part_count(size)` is the number of parts that hold
bytes.

MD4 is not in hashlib on OpenSSL 3 builds (it lives in the "legacy" provider, often not loaded), so
this uses pycryptodome's ``Crypto.Hash.MD4`` (a C implementation). This module is the one eD2k
hash implementation; the watchlist's ed2k-link importer verifies part hashes with it.

AICH (Advanced Intelligent Corruption Handling): a SHA-1 hash tree whose leaves are the
184,320-byte blocks of each part (the last block of a part is shorter), split the way aMule's
CAICHHashTree (src/SHAHashSet.cpp) splits a node of ``blocks = ceil(size / base)`` base units:
its left child gets ``(blocks + 1) // 2`` units if the node is itself a left child (the root
counts as one), else ``blocks // 2``, and its right child the rest; the base unit is PART_SIZE
for nodes larger than a part and BLOCK_SIZE below; a node's hash is SHA-1 of its two
children's hashes. `AichHasher` computes the master (root) hash that links carry as ``h=`` and
peers send in OP_AICHFILEHASHANS. Vectors: RHash's test_sums.c, checked there with eMule's Link
Creator (9,728,000 zero bytes: 5D3N4HQHIUMQ7IU7A5QLPLI6RHSWOR7B; 1,000,000 'a': KSYPATEV...).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from Crypto.Hash import MD4

PART_SIZE = 9_728_000  # PARTSIZE in aMule src/include/protocol/ed2k/Constants.h
BLOCK_SIZE = 184_320  # EMBLOCKSIZE: the unit of part requests and of AICH leaves
MAX_FILE_SIZE = 0x40_0000_0000  # MAX_FILE_SIZE (256 GiB), the largest size aMule accepts
AICH_HASH_SIZE = 20
EMPTY_MD4 = bytes.fromhex("31d6cfe0d16ae931b73c59d7e0c089c0")  # MD4(b""), RFC 1320 A.5
_READ_SIZE = 1 << 20


def new_md4() -> MD4.MD4Hash:
    # MD4 is broken for security; eD2k defines its file identity with it, so there is no choice.
    return MD4.new()  # noqa: S303


def md4(data: bytes) -> bytes:
    h = new_md4()
    h.update(data)
    return bytes(h.digest())


def ed2k_part_count(size: int) -> int:
    """The part count of OP_FILESTATUS (and of part bitmaps): size // PART_SIZE + 1."""
    return 0 if size <= 0 else size // PART_SIZE + 1


def hashset_count(size: int) -> int:
    """Part hashes in OP_HASHSETANSWER: 0 below one part, else size // PART_SIZE + 1."""
    n = size // PART_SIZE
    return 0 if n == 0 else n + 1


def data_part_count(size: int) -> int:
    """Parts that hold bytes: ceil(size / PART_SIZE)."""
    return -(-size // PART_SIZE)


def root_from_part_hashes(part_hashes: Iterable[bytes]) -> bytes:
    """The eD2k hash from a full part-hash list (two or more hashes; see `hashset_count`)."""
    hashes = list(part_hashes)
    if len(hashes) < 2 or any(len(h) != 16 for h in hashes):
        raise ValueError("a part-hash list has at least two 16-byte hashes")
    return md4(b"".join(hashes))


@dataclass(frozen=True, slots=True)
class Ed2kDigest:
    size: int
    root: bytes  # the eD2k hash
    part_hashes: tuple[bytes, ...]  # the hashset (empty below one part)
    aich: bytes | None = None  # the AICH master hash, when asked for

    @property
    def hex(self) -> str:
        return self.root.hex()

    def part_hash(self, index: int) -> bytes:
        """The hash a downloaded part `index` must have (the root for a one-part file)."""
        if not self.part_hashes:
            if index != 0:
                raise IndexError(index)
            return self.root
        return self.part_hashes[index]


class Ed2kHasher:
    """Streaming eD2k hasher: ``update`` any number of times, then ``digest``."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._current = new_md4()
        self._in_part = 0
        self._size = 0

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), PART_SIZE - self._in_part)
            self._current.update(view[:take])
            self._in_part += take
            self._size += take
            view = view[take:]
            if self._in_part == PART_SIZE:
                self._parts.append(bytes(self._current.digest()))
                self._current = new_md4()
                self._in_part = 0

    def digest(self) -> Ed2kDigest:
        parts = list(self._parts)
        # The last part: the bytes since the last boundary, or, at an exact multiple of
        # PART_SIZE, the empty part whose hash is MD4(b"") (the "red" rule, see module doc).
        parts.append(bytes(self._current.copy().digest()))
        if len(parts) == 1:
            return Ed2kDigest(self._size, parts[0], ())
        return Ed2kDigest(self._size, root_from_part_hashes(parts), tuple(parts))


_BLOCKS_PER_PART = -(-PART_SIZE // BLOCK_SIZE)  # 53: 52 full blocks and one of 143,360 bytes


def _sha1() -> hashlib._Hash:
    return hashlib.sha1(usedforsecurity=False)  # AICH defines SHA-1


class AichHasher:
    """Streaming AICH master hash: SHA-1 of every block, then the tree (see module doc)."""

    def __init__(self) -> None:
        self._leaves: list[bytes] = []
        self._current = _sha1()
        self._in_block = 0
        self._size = 0

    def _block_room(self) -> int:
        # Blocks restart at every part boundary, so a part's last block is shorter.
        in_part = self._size % PART_SIZE
        return min(BLOCK_SIZE - self._in_block, PART_SIZE - in_part)

    def update(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self._block_room())
            self._current.update(view[:take])
            self._in_block += take
            self._size += take
            view = view[take:]
            if self._block_room() == 0 or self._size % PART_SIZE == 0:
                self._leaves.append(self._current.digest())
                self._current = _sha1()
                self._in_block = 0

    def digest(self) -> bytes:
        if self._size == 0:
            return _sha1().digest()  # SHA-1 of nothing, as RHash gives for an empty input
        leaves = list(self._leaves)
        if self._in_block:
            leaves.append(self._current.copy().digest())
        base = BLOCK_SIZE if self._size <= PART_SIZE else PART_SIZE
        return self._node(leaves, 0, self._size, True, base)

    def _node(self, leaves: list[bytes], start: int, size: int, left: bool, base: int) -> bytes:
        if size <= base:  # only blocks are this small: a leaf
            index = start // PART_SIZE * _BLOCKS_PER_PART + start % PART_SIZE // BLOCK_SIZE
            return leaves[index]
        blocks = -(-size // base)
        left_size = ((blocks + 1 if left else blocks) // 2) * base
        right_size = size - left_size
        h = _sha1()
        for child_start, child_size, is_left in (
            (start, left_size, True),
            (start + left_size, right_size, False),
        ):
            child_base = BLOCK_SIZE if child_size <= PART_SIZE else PART_SIZE
            h.update(self._node(leaves, child_start, child_size, is_left, child_base))
        return h.digest()


def hash_stream(stream: BinaryIO, *, aich: bool = False) -> Ed2kDigest:
    hasher = Ed2kHasher()
    aich_hasher = AichHasher() if aich else None
    while chunk := stream.read(_READ_SIZE):
        hasher.update(chunk)
        if aich_hasher is not None:
            aich_hasher.update(chunk)
    digest = hasher.digest()
    if aich_hasher is None:
        return digest
    return Ed2kDigest(digest.size, digest.root, digest.part_hashes, aich_hasher.digest())


def hash_bytes(data: bytes, *, aich: bool = False) -> Ed2kDigest:
    return hash_stream(io.BytesIO(data), aich=aich)


def hash_file(path: Path, *, aich: bool = False) -> Ed2kDigest:
    with path.open("rb") as f:
        return hash_stream(f, aich=aich)


def part_range(size: int, index: int) -> tuple[int, int]:
    """[start, end) of data part `index` of a file of `size` bytes."""
    if not 0 <= index < data_part_count(size):
        raise IndexError(index)
    start = index * PART_SIZE
    return start, min(start + PART_SIZE, size)


def aich_from_base32(text: str) -> bytes:
    """An AICH master hash as written in links (``h=``): 32 base32 characters, 20 bytes."""
    s = text.strip().upper()
    if len(s) != 32:
        raise ValueError(f"an AICH hash is 32 base32 characters, got {len(s)}")
    try:
        return base64.b32decode(s)
    except binascii.Error:
        raise ValueError(f"{text!r} is not base32") from None


def aich_to_base32(value: bytes) -> str:
    if len(value) != AICH_HASH_SIZE:
        raise ValueError("an AICH hash is 20 bytes")
    return base64.b32encode(value).decode("ascii")
