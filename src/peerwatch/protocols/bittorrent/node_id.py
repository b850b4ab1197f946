"""160-bit DHT node ids (BEP 5): XOR distance, and the BEP 42 id/IP binding.

Ids are plain 20-byte `bytes`; distances are non-negative `int`s ("the XOR result interpreted as
an unsigned integer", BEP 5 "Overview").

BEP 42 ("DHT Security extension") ties a node's id to its external IP so one host cannot pick ids
at will: the first 21 bits of the id are the top bits of ``crc32c((ip & mask) | (r << 29))``
(IPv4; IPv6 masks the high 64 bits) where ``r`` is the id's last byte modulo 8. Local and
private addresses are exempt. CRC-32C (Castagnoli) is not in `hashlib` or `zlib`, so a small
table-driven implementation lives here.
"""

from __future__ import annotations

import ipaddress
import random

NODE_ID_LEN = 20
NODE_ID_BITS = 160

_CRC32C_POLY = 0x82F63B78  # Castagnoli polynomial, bit-reflected


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _CRC32C_POLY if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()  # an immutable constant, computed once

# BEP 42: which bits of the address take part in the hash.
_V4_MASK = bytes([0x03, 0x0F, 0x3F, 0xFF])
_V6_MASK = bytes([0x01, 0x03, 0x07, 0x0F, 0x1F, 0x3F, 0x7F, 0xFF])

# BEP 42 "local IPs ... are exempt": the ranges it names, plus loopback and link-local for IPv6.
_EXEMPT_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "127.0.0.0/8",
        "::1/128",
        "fe80::/10",
        "fc00::/7",
    )
)


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli, RFC 3720 appendix B.4) of `data`, continuing from `crc`."""
    c = crc ^ 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def distance(a: bytes, b: bytes) -> int:
    """BEP 5 XOR metric: smaller is closer."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def common_prefix_bits(a: bytes, b: bytes) -> int:
    """How many leading bits `a` and `b` share (160 when equal)."""
    return NODE_ID_BITS - distance(a, b).bit_length()


def random_node_id(rng: random.Random) -> bytes:
    return rng.getrandbits(NODE_ID_BITS).to_bytes(NODE_ID_LEN, "big")


def random_id_with_prefix(own: bytes, prefix_bits: int, rng: random.Random) -> bytes:
    """A random id that shares exactly `prefix_bits` leading bits with `own` (bit `prefix_bits`
    flipped), used to refresh the bucket at that depth (BEP 5 "Routing Table")."""
    if not 0 <= prefix_bits < NODE_ID_BITS:
        raise ValueError(f"prefix_bits {prefix_bits} outside 0..{NODE_ID_BITS - 1}")
    own_int = int.from_bytes(own, "big")
    bit = NODE_ID_BITS - prefix_bits - 1  # the first differing bit, counted from the right
    value = (own_int >> (bit + 1)) << (bit + 1)  # the shared prefix
    value |= ~own_int & (1 << bit)  # the flipped bit
    value |= rng.getrandbits(bit) if bit else 0
    return value.to_bytes(NODE_ID_LEN, "big")


def is_bep42_exempt(ip: str) -> bool:
    """BEP 42: local network addresses are not held to the id/IP binding."""
    addr = ipaddress.ip_address(ip)
    return any(addr.version == net.version and addr in net for net in _EXEMPT_NETWORKS)


def bep42_crc(ip: str, r: int) -> int:
    """``crc32c((ip & mask) | (r << 29))`` over the masked address bytes (BEP 42)."""
    packed = ipaddress.ip_address(ip).packed
    mask = _V4_MASK if len(packed) == 4 else _V6_MASK
    masked = bytearray(p & m for p, m in zip(packed, mask, strict=False))
    masked[0] |= (r & 0x07) << 5
    return crc32c(bytes(masked))


def bep42_node_id(ip: str, r: int, rest: bytes) -> bytes:
    """A BEP 42-conforming id for `ip`: 21 bits from the CRC, 139 bits from `rest` (at least 17
    bytes; byte 2's low 3 bits and bytes 3..18 are taken from it), and `r` as the last byte."""
    if len(rest) < 17:
        raise ValueError("rest must hold at least 17 bytes")
    crc = bep42_crc(ip, r)
    head = bytes([(crc >> 24) & 0xFF, (crc >> 16) & 0xFF, ((crc >> 8) & 0xF8) | (rest[0] & 0x07)])
    return head + rest[1:17] + bytes([r & 0xFF])


def is_bep42_valid(node_id: bytes, ip: str) -> bool:
    """True if `node_id`'s first 21 bits match its IP (BEP 42), or the IP is exempt."""
    if len(node_id) != NODE_ID_LEN:
        return False
    if is_bep42_exempt(ip):
        return True
    crc = bep42_crc(ip, node_id[-1])
    prefix = int.from_bytes(node_id[:3], "big") >> 3
    return prefix == (crc >> 11)
