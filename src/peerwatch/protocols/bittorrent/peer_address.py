"""Peer addresses as trackers, the DHT and PEX carry them: compact IPv4 (BEP 23), compact IPv6
(BEP 7) and the original non-compact list of dictionaries (BEP 3).

Everything here is pure: bytes (or decoded bencode) in, a tuple of frozen `PeerAddress` out, and
on malformed input a `PeerAddressError` (and nothing else). Counts are capped before any object is
built, so a hostile tracker cannot make us allocate millions of addresses.

Decisions:

* **Port 0 is kept.** A peer list is a *claim* by the tracker (or DHT node, or PEX peer) and the
  evidence log records claims as they were made; dropping entries would make the record lie about
  what was received. `PeerAddress.is_connectable` says whether an address is worth dialling
  (port 0, the unspecified address and multicast addresses are not); sensors filter on that.
* **A compact string whose length is not a multiple of the entry size is rejected whole.** Without
  framing, no entry in it can be trusted (libtorrent silently drops the tail; we record the fault).
* **Non-compact entries are framed individually**, so one malformed dictionary (missing port, a DNS
  name instead of an IP literal, a port out of range) is skipped and counted rather than sinking
  the whole list; see `decode_peer_dicts`.
* Addresses are canonical text (`ipaddress` formatting: dotted quad, RFC 5952 IPv6), so equal
  addresses compare equal whichever way they arrived. An IPv4-mapped IPv6 entry (::ffff:a.b.c.d)
  stays IPv6: it is recorded exactly as it was sent.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from peerwatch.errors import ProtocolError

#: Most peers accepted from one compact string or one list (a tracker's default numwant is 50;
#: opentracker caps at 200). Larger lists are a misbehaving source and are rejected, not truncated.
MAX_PEERS = 10_000

COMPACT_IPV4_LEN = 6  # BEP 23: 4-byte address + 2-byte port, network byte order
COMPACT_IPV6_LEN = 18  # BEP 7: 16-byte address + 2-byte port, network byte order
PEER_ID_LEN = 20

_PORT = struct.Struct(">H")


class PeerAddressError(ProtocolError):
    """A peer list (compact string or list of dictionaries) is malformed or too long."""


@dataclass(frozen=True, slots=True)
class PeerAddress:
    """One peer's IP address (canonical text) and TCP/UDP port, exactly as a source claimed it."""

    ip: str
    port: int

    def __post_init__(self) -> None:
        try:
            parsed = ipaddress.ip_address(self.ip)
        except ValueError:
            raise PeerAddressError(f"{self.ip!r} is not an IP address") from None
        if not 0 <= self.port <= 0xFFFF:
            raise PeerAddressError(f"port {self.port} is out of range 0..65535")
        canonical = str(parsed)
        if canonical != self.ip:
            object.__setattr__(self, "ip", canonical)

    @property
    def family(self) -> int:
        """4 or 6."""
        return 6 if ":" in self.ip else 4

    @property
    def is_connectable(self) -> bool:
        """Worth dialling: a non-zero port on a unicast, specified address."""
        addr = ipaddress.ip_address(self.ip)
        return self.port != 0 and not addr.is_unspecified and not addr.is_multicast

    def to_compact(self) -> bytes:
        """The 6-byte (BEP 23) or 18-byte (BEP 7) compact form."""
        return ipaddress.ip_address(self.ip).packed + _PORT.pack(self.port)

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.family == 6 else f"{self.ip}:{self.port}"


@dataclass(frozen=True, slots=True)
class DictPeer:
    """One entry of a non-compact peer list (BEP 3): the address and, when sent, the peer id."""

    address: PeerAddress
    peer_id: bytes | None


@dataclass(frozen=True, slots=True)
class DictPeers:
    """A decoded non-compact peer list: the usable entries and how many were skipped."""

    peers: tuple[DictPeer, ...]
    skipped: int  # entries that were not a dict with an IP literal and a port in range


def decode_compact_peer(entry: bytes) -> PeerAddress:
    """One compact peer: 6 bytes (IPv4, BEP 23) or 18 bytes (IPv6, BEP 7), e.g. a DHT 'values'
    item (BEP 5, BEP 32)."""
    if len(entry) == COMPACT_IPV4_LEN:
        return _ipv4(entry, 0)
    if len(entry) == COMPACT_IPV6_LEN:
        return _ipv6(entry, 0)
    raise PeerAddressError(f"a compact peer is 6 or 18 bytes, not {len(entry)}")


def decode_compact_ipv4(data: bytes, *, max_peers: int = MAX_PEERS) -> tuple[PeerAddress, ...]:
    """BEP 23 'peers' string: 6 bytes per peer."""
    count = _count(data, COMPACT_IPV4_LEN, max_peers, "IPv4 (BEP 23)")
    return tuple(_ipv4(data, i * COMPACT_IPV4_LEN) for i in range(count))


def decode_compact_ipv6(data: bytes, *, max_peers: int = MAX_PEERS) -> tuple[PeerAddress, ...]:
    """BEP 7 'peers6' string: 18 bytes per peer."""
    count = _count(data, COMPACT_IPV6_LEN, max_peers, "IPv6 (BEP 7)")
    return tuple(_ipv6(data, i * COMPACT_IPV6_LEN) for i in range(count))


def encode_compact_ipv4(peers: Iterable[PeerAddress]) -> bytes:
    """Inverse of `decode_compact_ipv4`; raises ValueError (our bug) on an IPv6 address."""
    return _encode(peers, 4)


def encode_compact_ipv6(peers: Iterable[PeerAddress]) -> bytes:
    """Inverse of `decode_compact_ipv6`; raises ValueError (our bug) on an IPv4 address."""
    return _encode(peers, 6)


def decode_peer_dicts(value: object, *, max_peers: int = MAX_PEERS) -> DictPeers:
    """BEP 3 non-compact 'peers': a list of dicts with 'ip', 'port' and optionally 'peer id'.

    `value` is the decoded bencode value. It must be a list no longer than `max_peers`; entries
    that are not usable (not a dict, 'ip' not an IP literal — BEP 3 also allows a DNS name, which
    would need a lookup, i.e. I/O — or 'port' missing or out of range) are skipped and counted.
    A 'peer id' of the wrong length is dropped (the address is kept).
    """
    if not isinstance(value, list):
        raise PeerAddressError("non-compact 'peers' is not a list")
    if len(value) > max_peers:
        raise PeerAddressError(f"{len(value)} peers is more than the {max_peers}-peer limit")
    peers: list[DictPeer] = []
    skipped = 0
    for item in value:
        peer = _dict_peer(item)
        if peer is None:
            skipped += 1
        else:
            peers.append(peer)
    return DictPeers(tuple(peers), skipped)


# --- internals ----------------------------------------------------------------------------------


def _count(data: bytes, size: int, max_peers: int, what: str) -> int:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise PeerAddressError(f"compact {what} peers is not a byte string")
    count, rest = divmod(len(data), size)
    if rest:
        raise PeerAddressError(
            f"compact {what} peers is {len(data)} bytes, not a multiple of {size}"
        )
    if count > max_peers:
        raise PeerAddressError(f"{count} peers is more than the {max_peers}-peer limit")
    return count


def _ipv4(data: bytes, off: int) -> PeerAddress:
    a, b, c, d = data[off : off + 4]
    return PeerAddress(f"{a}.{b}.{c}.{d}", (data[off + 4] << 8) | data[off + 5])


def _ipv6(data: bytes, off: int) -> PeerAddress:
    ip = str(ipaddress.IPv6Address(bytes(data[off : off + 16])))
    return PeerAddress(ip, (data[off + 16] << 8) | data[off + 17])


def _encode(peers: Iterable[PeerAddress], family: int) -> bytes:
    out = bytearray()
    for peer in peers:
        if peer.family != family:
            raise ValueError(f"{peer} is not an IPv{family} address")
        out += peer.to_compact()
    return bytes(out)


def _dict_peer(item: object) -> DictPeer | None:
    if not isinstance(item, dict):
        return None
    ip = item.get(b"ip")
    port = item.get(b"port")
    if not isinstance(ip, bytes) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        return None
    try:
        address = PeerAddress(ip.decode("ascii"), port)
    except (UnicodeDecodeError, PeerAddressError):
        return None
    peer_id = item.get(b"peer id")
    if not isinstance(peer_id, bytes) or len(peer_id) != PEER_ID_LEN:
        peer_id = None
    return DictPeer(address, peer_id)
