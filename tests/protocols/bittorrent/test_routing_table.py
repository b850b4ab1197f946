"""Routing table (BEP 5) and node ids (BEP 5 distance, BEP 42 id/IP binding)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.protocols.bittorrent.node_id import (
    bep42_node_id,
    common_prefix_bits,
    crc32c,
    distance,
    is_bep42_exempt,
    is_bep42_valid,
    random_id_with_prefix,
    random_node_id,
)
from peerwatch.protocols.bittorrent.routing_table import (
    InsertResult,
    NodeState,
    RoutingTable,
    RoutingTableConfig,
)

# --- node ids -----------------------------------------------------------------------------------

# BEP 42 "Test vectors": IP, rand, a conforming node id. Only the first 21 bits and the last byte
# are fixed by the IP; the rest of each example id is random.
BEP42_VECTORS = [
    ("124.31.75.21", 1, "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401"),
    ("21.75.31.124", 86, "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256"),
    ("65.23.51.170", 22, "a5d43220bc8f112a3d426c84764f8c2a1150e616"),
    ("84.124.73.14", 65, "1b0321dd1bb1fe518101ceef99462b947a01ff41"),
    ("43.213.53.83", 90, "e56f6cbf5b7c4be0237986d5243b87aa6d51305a"),
]


def test_crc32c_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C catalogue check value
    assert crc32c(b"") == 0


@pytest.mark.parametrize(("ip", "r", "hex_id"), BEP42_VECTORS)
def test_bep42_vectors(ip: str, r: int, hex_id: str) -> None:
    node_id = bytes.fromhex(hex_id)
    assert node_id[-1] == r
    assert is_bep42_valid(node_id, ip)
    assert not is_bep42_valid(node_id, "1.2.3.4")
    assert bep42_node_id(ip, r, node_id[2:19]) == node_id


def test_bep42_exempts_local_addresses() -> None:
    assert is_bep42_exempt("127.0.0.1") and is_bep42_exempt("10.1.2.3")
    assert is_bep42_exempt("192.168.0.1") and is_bep42_exempt("::1")
    assert not is_bep42_exempt("124.31.75.21")
    assert is_bep42_valid(b"\x00" * 20, "127.0.0.1")
    assert not is_bep42_valid(b"\x00" * 19, "127.0.0.1")


def test_bep42_ipv6_round_trip() -> None:
    node_id = bep42_node_id("2001:db8::1", 3, bytes(17))
    assert is_bep42_valid(node_id, "2001:db8::1")
    assert not is_bep42_valid(node_id, "2001:db8:1::1")


@given(st.binary(min_size=20, max_size=20), st.integers(0, 159), st.integers(0, 2**32))
def test_random_id_with_prefix(own: bytes, bits: int, seed: int) -> None:
    other = random_id_with_prefix(own, bits, random.Random(seed))
    assert common_prefix_bits(own, other) == bits


def test_distance_is_xor() -> None:
    a, b = b"\x00" * 19 + b"\x01", b"\x00" * 19 + b"\x03"
    assert distance(a, b) == 2 and distance(a, a) == 0
    assert common_prefix_bits(a, a) == 160


# --- routing table ------------------------------------------------------------------------------

OWN = b"\x00" * 20


def nid(first: int, rest: int = 0) -> bytes:
    return bytes([first]) + rest.to_bytes(19, "big")


def addr(i: int) -> tuple[str, int]:
    return (f"127.0.{i // 250}.{i % 250 + 1}", 6881)


def test_add_until_full_then_cache() -> None:
    table = RoutingTable(OWN, 0.0)
    # ids in the far half (first bit set): bucket 0 once the table has split
    for i in range(8):
        assert table.heard_from(nid(0x80, i), addr(i), 0.0, responded=True) is InsertResult.ADDED
    # the 9th far node splits the (only) bucket, which contains our own id; bucket 0 stays full
    assert table.heard_from(nid(0x80, 99), addr(99), 0.0, responded=True) is InsertResult.CACHED
    assert table.bucket_count == 2
    assert len(table) == 8
    # near nodes go to the other bucket
    assert table.heard_from(nid(0x01), addr(200), 0.0, responded=True) is InsertResult.ADDED
    assert len(table) == 9


def test_splits_only_towards_own_id_and_stays_bounded() -> None:
    cfg = RoutingTableConfig(k=4, replacement_cache=2)
    rng = random.Random(3)
    own = random_node_id(rng)
    table = RoutingTable(own, 0.0, cfg)
    for i in range(5000):
        table.heard_from(random_node_id(rng), addr(i), 0.0, responded=True)
    assert len(table) <= table.bucket_count * cfg.k
    assert table.bucket_count < 20  # log2(5000) + a few: only the own-id bucket splits
    entries = list(table.entries(0.0))
    for b in range(table.bucket_count - 1):
        in_bucket = [e for e in entries if common_prefix_bits(own, e.node.node_id) == b]
        assert len(in_bucket) <= cfg.k


def test_closest_orders_by_xor_and_skips_bad() -> None:
    table = RoutingTable(OWN, 0.0, RoutingTableConfig(max_failures=1))
    for i in range(1, 6):
        table.heard_from(nid(i), addr(i), 0.0, responded=True)
    target = nid(4)
    assert [n.node_id for n in table.closest(target, 3, 0.0)] == [nid(4), nid(5), nid(1)]
    table.failed(addr(4), 1.0)
    assert [n.node_id for n in table.closest(target, 3, 1.0)] == [nid(5), nid(1), nid(2)]


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 2**32),
    st.integers(1, 400),
    st.integers(0, 80),
    st.integers(1, 70),
    st.sampled_from([1, 2, 8]),
    st.integers(0, 6),
)
def test_closest_matches_a_full_scan(
    seed: int, nodes: int, failures: int, n: int, k: int, near_bits: int
) -> None:
    """Walking buckets outward from the target gives exactly what sorting every live entry by
    XOR distance gives, whatever the table's shape, failures, target and `n`."""
    rng = random.Random(seed)
    own = random_node_id(rng)
    table = RoutingTable(own, 0.0, RoutingTableConfig(k=k, max_failures=2))
    for i in range(nodes):
        # half of the ids near our own, so that the table splits deep
        node = random_id_with_prefix(own, rng.randrange(0, 20), rng) if i % 2 else None
        table.heard_from(node or random_node_id(rng), addr(i), 0.0, responded=True)
    entries = list(table.entries(0.0))
    for e in rng.sample(entries, min(failures, len(entries))):
        table.failed(e.node.addr, 1.0)
        if rng.random() < 0.5:
            table.failed(e.node.addr, 1.0)
    target = random_id_with_prefix(own, near_bits, rng) if rng.random() < 0.5 else own
    if rng.random() < 0.3:
        target = random_node_id(rng)
    live = [e.node for e in table.entries(2.0) if e.state is not NodeState.BAD]
    expected = sorted(live, key=lambda node: distance(node.node_id, target))[:n]
    assert table.closest(target, n, 2.0) == expected


def test_states_good_questionable_bad() -> None:
    cfg = RoutingTableConfig()
    table = RoutingTable(OWN, 0.0, cfg)
    table.heard_from(nid(1), addr(1), 0.0, responded=True)

    def state(now: float) -> NodeState:
        entry = table.get(addr(1), now)
        assert entry is not None
        return entry.state

    assert state(10.0) is NodeState.GOOD
    assert state(cfg.good_for + 1) is NodeState.QUESTIONABLE
    assert table.questionable(cfg.good_for + 1)[0].addr == addr(1)
    # BEP 5: answered once, and queried us within 15 minutes -> good again
    table.heard_from(nid(1), addr(1), cfg.good_for + 2, responded=False)
    assert state(cfg.good_for + 3) is NodeState.GOOD
    assert table.failed(addr(1), 1000.0) is NodeState.GOOD
    assert table.failed(addr(1), 1001.0) is NodeState.BAD
    # an answer clears the failures
    table.heard_from(nid(1), addr(1), 1002.0, responded=True)
    assert state(1002.0) is NodeState.GOOD


def test_bad_node_is_replaced_by_a_cached_one_that_answered() -> None:
    table = RoutingTable(OWN, 0.0, RoutingTableConfig(k=2, max_failures=1))
    table.heard_from(nid(0x80, 1), addr(1), 0.0, responded=True)
    table.heard_from(nid(0x80, 2), addr(2), 0.0, responded=True)
    table.heard_from(nid(0x01), addr(9), 0.0, responded=True)  # forces the split
    assert table.heard_from(nid(0x80, 3), addr(3), 0.0, responded=True) is InsertResult.CACHED
    assert table.failed(addr(1), 5.0) is NodeState.BAD
    assert table.get(addr(1), 5.0) is None
    entry = table.get(addr(3), 5.0)
    assert entry is not None and entry.state is NodeState.GOOD


def test_bad_node_is_replaced_by_a_newcomer() -> None:
    table = RoutingTable(OWN, 0.0, RoutingTableConfig(k=1, max_failures=1, replacement_cache=0))
    table.heard_from(nid(0x80, 1), addr(1), 0.0, responded=True)
    table.heard_from(nid(0x01), addr(9), 0.0, responded=True)  # split
    assert table.would_accept(nid(0x80, 2), 1.0) is False
    table.failed(addr(1), 1.0)
    assert table.would_accept(nid(0x80, 2), 1.0) is True
    assert table.heard_from(nid(0x80, 2), addr(2), 1.0, responded=True) is InsertResult.ADDED
    assert table.get(addr(1), 1.0) is None


def test_a_node_that_only_queried_us_waits_in_the_cache() -> None:
    table = RoutingTable(OWN, 0.0)
    assert table.heard_from(nid(1), addr(1), 0.0, responded=False) is InsertResult.CACHED
    assert table.get(addr(1), 0.0) is None and table.id_at(addr(1)) == nid(1)
    assert table.would_accept(nid(1), 0.0)
    assert table.heard_from(nid(1), addr(1), 0.5, responded=True) is InsertResult.ADDED
    assert table.get(addr(1), 0.5) is not None


def test_id_change_at_same_address_is_refused_and_counted() -> None:
    table = RoutingTable(OWN, 0.0)
    table.heard_from(nid(1), addr(1), 0.0, responded=True)
    assert table.heard_from(nid(2), addr(1), 1.0, responded=True) is InsertResult.ID_CHANGED
    assert table.heard_from(nid(3), addr(1), 2.0, responded=False) is InsertResult.ID_CHANGED
    entry = table.get(addr(1), 2.0)
    assert entry is not None and entry.node.node_id == nid(1)
    assert table.id_change_offences == {addr(1): 2}
    # the same id from another address is refused too: the first sighting wins
    assert table.heard_from(nid(1), addr(2), 3.0, responded=True) is InsertResult.ID_CONFLICT
    assert table.heard_from(OWN, addr(3), 3.0, responded=True) is InsertResult.SELF


def test_offender_memory_is_bounded() -> None:
    table = RoutingTable(OWN, 0.0, RoutingTableConfig(max_offenders=3))
    for i in range(10):
        table.heard_from(nid(1, i), addr(i), 0.0, responded=True)
        table.heard_from(nid(2, i), addr(i), 0.0, responded=True)
    assert len(table.id_change_offences) == 3


def test_refresh_targets_for_stale_buckets() -> None:
    cfg = RoutingTableConfig()
    table = RoutingTable(OWN, 0.0, cfg)
    rng = random.Random(1)
    assert table.take_refresh_targets(10.0, rng) == []
    targets = table.take_refresh_targets(cfg.refresh_after, rng)
    assert len(targets) == 1 and common_prefix_bits(OWN, targets[0]) == 0
    assert table.take_refresh_targets(cfg.refresh_after + 1, rng) == []  # now fresh again


def test_remove() -> None:
    table = RoutingTable(OWN, 0.0)
    table.heard_from(nid(1), addr(1), 0.0, responded=True)
    table.heard_from(nid(2), addr(2), 0.0, responded=False)
    assert table.remove(addr(1)) and table.remove(addr(2))
    assert not table.remove(addr(1))
    assert len(table) == 0 and table.id_at(addr(2)) is None


@given(st.lists(st.tuples(st.integers(0, 60), st.booleans(), st.integers(0, 2)), max_size=200))
@settings(max_examples=100, deadline=None)
def test_invariants_under_random_traffic(ops: list[tuple[int, bool, int]]) -> None:
    cfg = RoutingTableConfig(k=3, replacement_cache=2, max_failures=2)
    rng = random.Random(0)
    ids = [random_node_id(rng) for _ in range(61)]
    table = RoutingTable(OWN, 0.0, cfg)
    for now, (i, responded, action) in enumerate(ops):
        if action == 2:
            table.failed(addr(i), float(now))
        else:
            table.heard_from(ids[i], addr(i), float(now), responded=responded)
        entries = list(table.entries(float(now)))
        assert len({e.node.addr for e in entries}) == len(entries)
        assert len({e.node.node_id for e in entries}) == len(entries)
        assert len(entries) <= cfg.k * table.bucket_count
        for e in entries:
            assert table.id_at(e.node.addr) == e.node.node_id
