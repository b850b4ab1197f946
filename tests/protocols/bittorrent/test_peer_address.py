"""Compact (BEP 23, BEP 7) and dictionary (BEP 3) peer lists: golden bytes, caps, round trips,
fuzz."""

from __future__ import annotations

import contextlib
import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.errors import ProtocolError
from peerwatch.protocols.bittorrent.peer_address import (
    DictPeer,
    PeerAddress,
    PeerAddressError,
    decode_compact_ipv4,
    decode_compact_ipv6,
    decode_compact_peer,
    decode_peer_dicts,
    encode_compact_ipv4,
    encode_compact_ipv6,
)

# --- golden bytes -------------------------------------------------------------------------------


def test_compact_ipv4_golden() -> None:
    # BEP 23: 4 address bytes then 2 port bytes, network byte order.
    data = bytes([10, 0, 0, 1, 0x1A, 0xE1]) + bytes([192, 168, 1, 200, 0x00, 0x50])
    assert decode_compact_ipv4(data) == (
        PeerAddress("10.0.0.1", 6881),
        PeerAddress("192.168.1.200", 80),
    )


def test_compact_ipv6_golden() -> None:
    # BEP 7: 16 address bytes then 2 port bytes.
    addr = bytes.fromhex("20010db8000000000000000000000001")
    data = addr + b"\xc8\xd5" + bytes(16) + b"\x00\x01"
    assert decode_compact_ipv6(data) == (
        PeerAddress("2001:db8::1", 51413),
        PeerAddress("::", 1),
    )


def test_encode_golden() -> None:
    peers = [PeerAddress("127.0.0.1", 6881), PeerAddress("1.2.3.4", 65535)]
    assert encode_compact_ipv4(peers) == b"\x7f\x00\x00\x01\x1a\xe1\x01\x02\x03\x04\xff\xff"
    assert encode_compact_ipv6([PeerAddress("::1", 2)]) == bytes(15) + b"\x01\x00\x02"


def test_empty_lists() -> None:
    assert decode_compact_ipv4(b"") == ()
    assert decode_compact_ipv6(b"") == ()
    assert encode_compact_ipv4([]) == b""


def test_decode_single_compact_peer() -> None:
    assert decode_compact_peer(b"\x7f\x00\x00\x01\x1a\xe1") == PeerAddress("127.0.0.1", 6881)
    assert decode_compact_peer(bytes(15) + b"\x01\x1a\xe1") == PeerAddress("::1", 6881)
    with pytest.raises(PeerAddressError, match="6 or 18"):
        decode_compact_peer(b"\x00" * 7)


@pytest.mark.parametrize("size", [1, 5, 7, 13])
def test_compact_ipv4_bad_length_rejected(size: int) -> None:
    with pytest.raises(PeerAddressError, match="multiple of 6"):
        decode_compact_ipv4(bytes(size))


@pytest.mark.parametrize("size", [6, 17, 19, 35])
def test_compact_ipv6_bad_length_rejected(size: int) -> None:
    with pytest.raises(PeerAddressError, match="multiple of 18"):
        decode_compact_ipv6(bytes(size))


def test_compact_not_bytes_rejected() -> None:
    with pytest.raises(PeerAddressError, match="byte string"):
        decode_compact_ipv4([1, 2, 3])  # type: ignore[arg-type]


def test_caps() -> None:
    assert len(decode_compact_ipv4(bytes(6 * 3), max_peers=3)) == 3
    with pytest.raises(PeerAddressError, match="limit"):
        decode_compact_ipv4(bytes(6 * 4), max_peers=3)
    with pytest.raises(PeerAddressError, match="limit"):
        decode_compact_ipv6(bytes(18 * 4), max_peers=3)
    entry = {b"ip": b"1.2.3.4", b"port": 1}
    with pytest.raises(PeerAddressError, match="limit"):
        decode_peer_dicts([entry] * 4, max_peers=3)


# --- PeerAddress --------------------------------------------------------------------------------


def test_port_zero_kept_but_not_connectable() -> None:
    (peer,) = decode_compact_ipv4(b"\x01\x02\x03\x04\x00\x00")
    assert peer == PeerAddress("1.2.3.4", 0)
    assert not peer.is_connectable
    assert PeerAddress("1.2.3.4", 1).is_connectable
    assert not PeerAddress("0.0.0.0", 1).is_connectable  # noqa: S104 - an address, not a bind
    assert not PeerAddress("224.0.0.1", 1).is_connectable
    assert not PeerAddress("ff02::1", 1).is_connectable


def test_canonical_text() -> None:
    assert PeerAddress("2001:DB8:0:0::1", 1).ip == "2001:db8::1"
    assert PeerAddress("2001:DB8:0:0::1", 1) == PeerAddress("2001:db8::1", 1)
    assert str(PeerAddress("::1", 80)) == "[::1]:80"
    assert str(PeerAddress("1.2.3.4", 80)) == "1.2.3.4:80"
    assert PeerAddress("::ffff:1.2.3.4", 80).family == 6
    assert PeerAddress("1.2.3.4", 80).family == 4


@pytest.mark.parametrize(
    ("ip", "port"), [("1.2.3", 1), ("host.example", 1), ("1.2.3.4", -1), ("1.2.3.4", 65536)]
)
def test_invalid_address_rejected(ip: str, port: int) -> None:
    with pytest.raises(PeerAddressError):
        PeerAddress(ip, port)


def test_encode_family_mismatch_is_our_bug() -> None:
    with pytest.raises(ValueError, match="IPv4"):
        encode_compact_ipv4([PeerAddress("::1", 1)])
    with pytest.raises(ValueError, match="IPv6"):
        encode_compact_ipv6([PeerAddress("1.2.3.4", 1)])


# --- non-compact dictionaries (BEP 3) -----------------------------------------------------------


def test_dict_peers() -> None:
    pid = b"-UT3530-" + b"x" * 12
    decoded = decode_peer_dicts(
        [
            {b"ip": b"10.1.2.3", b"port": 6881, b"peer id": pid},
            {b"ip": b"2001:db8::5", b"port": 51413},
            {b"ip": b"10.1.2.4", b"port": 1, b"peer id": b"short"},  # bad id dropped
            {b"ip": b"tracker.example", b"port": 1},  # DNS name: would need a lookup
            {b"ip": b"10.1.2.5"},  # no port
            {b"ip": b"10.1.2.6", b"port": 70000},  # out of range
            {b"ip": b"\xff\xfe", b"port": 1},  # not ASCII
            {b"ip": 5, b"port": 1},
            b"not a dict",
        ]
    )
    assert decoded.peers == (
        DictPeer(PeerAddress("10.1.2.3", 6881), pid),
        DictPeer(PeerAddress("2001:db8::5", 51413), None),
        DictPeer(PeerAddress("10.1.2.4", 1), None),
    )
    assert decoded.skipped == 6


def test_dict_peers_not_a_list() -> None:
    with pytest.raises(PeerAddressError, match="not a list"):
        decode_peer_dicts({b"ip": b"1.2.3.4"})


# --- hypothesis round trips and fuzz ------------------------------------------------------------

ipv4s = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6s = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
ports = st.integers(0, 65535)


@given(st.lists(st.builds(PeerAddress, ipv4s, ports), max_size=50))
def test_ipv4_round_trip(peers: list[PeerAddress]) -> None:
    data = encode_compact_ipv4(peers)
    assert len(data) == 6 * len(peers)
    assert decode_compact_ipv4(data) == tuple(peers)


@given(st.lists(st.builds(PeerAddress, ipv6s, ports), max_size=50))
def test_ipv6_round_trip(peers: list[PeerAddress]) -> None:
    data = encode_compact_ipv6(peers)
    assert len(data) == 18 * len(peers)
    assert decode_compact_ipv6(data) == tuple(peers)


@given(st.binary(min_size=6, max_size=6))
def test_ipv4_decode_matches_struct(entry: bytes) -> None:
    a, b, c, d, port = struct.unpack(">4BH", entry)
    assert decode_compact_peer(entry) == PeerAddress(f"{a}.{b}.{c}.{d}", port)
    assert decode_compact_peer(entry).to_compact() == entry


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_fuzz_compact_only_raises_protocol_error(data: bytes) -> None:
    for decode in (decode_compact_ipv4, decode_compact_ipv6, decode_compact_peer):
        with contextlib.suppress(ProtocolError):
            decode(data)


bencode_values = st.recursive(
    st.integers(-(2**70), 2**70) | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from([b"ip", b"port", b"peer id", b"x"]), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300)
@given(bencode_values)
def test_fuzz_dicts_only_raise_protocol_error(value: object) -> None:
    with contextlib.suppress(ProtocolError):
        decode_peer_dicts(value)
