"""Builds benign test torrents (random content bytes, never real files) as bencodable dicts.

The builders return the whole metainfo dict; tests bencode it with fastbencode and compute the
expected infohashes independently with hashlib over `fastbencode.bencode(meta[b"info"])`.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from peerwatch.protocols.bittorrent.bencode import bencode as bencode

PIECE = 16 * 1024  # the smallest piece length BEP 52 allows


@dataclass
class Content:
    """One benign content file: its path inside the torrent and random bytes."""

    path: tuple[str, ...]
    data: bytes

    @property
    def sha1(self) -> bytes:
        return hashlib.sha1(self.data, usedforsecurity=False).digest()

    @property
    def md5(self) -> bytes:
        return hashlib.md5(self.data, usedforsecurity=False).digest()

    @property
    def pieces_root(self) -> bytes:
        # A stand-in: the decoder checks its size, not the merkle tree (that needs piece layers).
        return hashlib.sha256(b"root:" + self.data).digest()


def random_content(
    rng: random.Random, paths: list[tuple[str, ...]], max_len: int = 40_000
) -> list[Content]:
    return [Content(p, rng.randbytes(rng.randint(1, max_len))) for p in paths]


def v1_pieces(blob: bytes, piece_length: int = PIECE) -> bytes:
    return b"".join(
        hashlib.sha1(blob[i : i + piece_length], usedforsecurity=False).digest()
        for i in range(0, len(blob), piece_length)
    )


def v1_single(
    content: Content, *, name: str = "sample.bin", extra: dict[bytes, object] | None = None
) -> dict[bytes, object]:
    info: dict[bytes, object] = {
        b"name": name.encode(),
        b"piece length": PIECE,
        b"length": len(content.data),
        b"pieces": v1_pieces(content.data),
    }
    info.update(extra or {})
    return {b"announce": b"http://127.0.0.1:6969/announce", b"info": info}


def v1_files(
    files: list[Content], *, pad: bool = False, sha1: bool = False, md5: str | None = None
) -> tuple[list[dict[bytes, object]], bytes]:
    """BEP 3 'files' entries (BEP 47 padding files between them if `pad`) and their byte blob.

    `md5` is None, "hex" (32 hex digits in 'md5sum') or "raw" (16 bytes in 'md5')."""
    entries: list[dict[bytes, object]] = []
    blob = b""
    for i, f in enumerate(files):
        entry: dict[bytes, object] = {
            b"length": len(f.data),
            b"path": [p.encode() for p in f.path],
        }
        if sha1:
            entry[b"sha1"] = f.sha1
        if md5 == "hex":
            entry[b"md5sum"] = f.md5.hex().encode()
        elif md5 == "raw":
            entry[b"md5"] = f.md5
        entries.append(entry)
        blob += f.data
        if pad and i < len(files) - 1 and len(blob) % PIECE:
            gap = PIECE - len(blob) % PIECE
            entries.append({b"attr": b"p", b"length": gap, b"path": [b".pad", str(gap).encode()]})
            blob += bytes(gap)
    return entries, blob


def v1_multi(
    files: list[Content],
    *,
    name: str = "sample",
    pad: bool = False,
    sha1: bool = False,
    md5: str | None = None,
) -> dict[bytes, object]:
    entries, blob = v1_files(files, pad=pad, sha1=sha1, md5=md5)
    info = {
        b"name": name.encode(),
        b"piece length": PIECE,
        b"files": entries,
        b"pieces": v1_pieces(blob),
    }
    return {
        b"announce": b"http://127.0.0.1:6969/announce",
        b"announce-list": [[b"http://127.0.0.1:6969/announce"], [b"udp://127.0.0.1:6970"]],
        b"info": info,
    }


def file_tree(files: list[Content]) -> dict[bytes, object]:
    """BEP 52 'file tree': nested dicts, a file is {'': {'length', 'pieces root'}}."""
    tree: dict[bytes, object] = {}
    for f in files:
        node = tree
        for part in f.path[:-1]:
            child = node.setdefault(part.encode(), {})
            assert isinstance(child, dict)
            node = child
        leaf: dict[bytes, object] = {b"length": len(f.data)}
        if f.data:
            leaf[b"pieces root"] = f.pieces_root
        node[f.path[-1].encode()] = {b"": leaf}
    return tree


def v2(files: list[Content], *, name: str = "sample") -> dict[bytes, object]:
    info = {
        b"name": name.encode(),
        b"piece length": PIECE,
        b"meta version": 2,
        b"file tree": file_tree(files),
    }
    return {b"info": info, b"piece layers": {}}


def hybrid(files: list[Content], *, name: str = "sample", sha1: bool = True) -> dict[bytes, object]:
    """BEP 52 hybrid: the v1 files are the v2 file tree's files in path order, padded."""
    ordered = sorted(files, key=lambda f: [p.encode() for p in f.path])
    entries, blob = v1_files(ordered, pad=True, sha1=sha1)
    info = {
        b"name": name.encode(),
        b"piece length": PIECE,
        b"meta version": 2,
        b"file tree": file_tree(ordered),
        b"files": entries,
        b"pieces": v1_pieces(blob),
    }
    return {b"announce": b"udp://127.0.0.1:6970", b"info": info, b"piece layers": {}}


def infohashes(meta: dict[bytes, object]) -> tuple[bytes, bytes]:
    """(SHA-1, SHA-256) of the bencoded info dict, computed independently of the decoder."""
    raw = bencode(meta[b"info"])
    return hashlib.sha1(raw, usedforsecurity=False).digest(), hashlib.sha256(raw).digest()
