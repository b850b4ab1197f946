"""The hash chain and its signatures (docs/evidence.md, "How the chain is built").

    record_hash(n) = SHA-256(canonical bytes of record n)
    link(0)        = SHA-256("peerwatch-evidence-v1" 0x00 sensor-id 0x00 raw-public-key)
    link(n)        = SHA-256(link(n-1) || record_hash(n))
    signature(n)   = Ed25519(link(n))             (RFC 8032, 64 bytes)

Signing the link rather than the record means a signature vouches for the record and for every
record before it. A record can be checked alone with its `prev_link` (a bundle that holds only one
target's records), and a run of consecutive records also proves nothing was removed between them.
"""

from __future__ import annotations

import hashlib

GENESIS_LABEL = b"peerwatch-evidence-v1"


def genesis_link(sensor_id: str, public_key: bytes) -> bytes:
    return hashlib.sha256(
        GENESIS_LABEL + b"\x00" + sensor_id.encode("utf-8") + b"\x00" + public_key
    ).digest()


def record_hash(record: bytes) -> bytes:
    return hashlib.sha256(record).digest()


def next_link(prev_link: bytes, record: bytes) -> bytes:
    return hashlib.sha256(prev_link + hashlib.sha256(record).digest()).digest()


def link_from_hash(prev_link: bytes, record_sha256: bytes) -> bytes:
    """The same link from the record's hash alone: how a record purged under retention (only its
    hash kept) still takes its place in the chain."""
    return hashlib.sha256(prev_link + record_sha256).digest()
