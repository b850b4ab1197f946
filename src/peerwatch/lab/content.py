"""Benign content the project generates itself, and hash lists that watch it.

Every file is random bytes from a seeded generator: nothing here is, or resembles, real material.
The lists built from these files (VICS JSON, CSV, .torrent) are what tests and the demo import.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from peerwatch.protocols.bittorrent.bencode import bdecode, bencode


@dataclass(frozen=True)
class BenignFile:
    path: Path
    size: int
    md5: str
    sha1: str
    sha256: str


def make_files(
    folder: Path, count: int, *, seed: int = 1, min_size: int = 1000, max_size: int = 300_000
) -> list[BenignFile]:
    """Write `count` files of seeded random bytes and return their hashes."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):
        data = rng.randbytes(rng.randint(min_size, max_size))
        path = folder / f"benign-{seed}-{i:03d}.bin"
        path.write_bytes(data)
        files.append(
            BenignFile(
                path,
                len(data),
                hashlib.md5(data, usedforsecurity=False).hexdigest(),
                hashlib.sha1(data, usedforsecurity=False).hexdigest(),
                hashlib.sha256(data).hexdigest(),
            )
        )
    return files


def torrent_v1(
    files: list[BenignFile], name: str, *, piece_length: int = 16384, trackers: tuple[str, ...] = ()
) -> bytes:
    """A v1 multi-file .torrent (BEP 3) over `files`, with BEP 47 per-file sha1."""
    pieces = bytearray()
    buf = bytearray()
    for f in files:
        buf += f.path.read_bytes()
        while len(buf) >= piece_length:
            pieces += hashlib.sha1(buf[:piece_length], usedforsecurity=False).digest()
            del buf[:piece_length]
    if buf:
        pieces += hashlib.sha1(buf, usedforsecurity=False).digest()
    info = {
        b"name": name.encode(),
        b"piece length": piece_length,
        b"pieces": bytes(pieces),
        b"files": [
            {b"length": f.size, b"path": [f.path.name.encode()], b"sha1": bytes.fromhex(f.sha1)}
            for f in files
        ],
    }
    meta: dict[bytes, object] = {b"info": info}
    if trackers:
        meta[b"announce"] = trackers[0].encode()
    return bencode(meta)


def infohash_v1(torrent: bytes) -> str:
    info = bdecode(torrent)[b"info"]
    return hashlib.sha1(bencode(info), usedforsecurity=False).hexdigest()


def vics_v2(files: list[BenignFile], *, category: int = 1) -> str:
    """A Project VIC VICS data model 2.0 document listing `files` (OData layout)."""
    media = [
        {
            "MediaID": i + 1,
            "Category": category,
            "MD5": f.md5.upper(),
            "SHA1": f.sha1.upper(),
            "SHA256": f.sha256,
            "MediaSize": f.size,
            "VictimIdentified": False,
            "OffenderIdentified": False,
            "IsDistributed": True,
            "Name": f.path.name,
        }
        for i, f in enumerate(files)
    ]
    doc = {
        "odata.metadata": "ProjectVic/DataModels/2.0.xml/CUSTOM/$metadata#Cases",
        "value": [{"CaseID": 1, "CaseNumber": "DEMO-0001", "Media": media}],
    }
    return json.dumps(doc, indent=1)


def csv_list(files: list[BenignFile], *, category: str = "demo") -> str:
    lines = ["md5,sha1,sha256,size,name,category"]
    lines += [f"{f.md5},{f.sha1},{f.sha256},{f.size},{f.path.name},{category}" for f in files]
    return "\n".join(lines) + "\n"
