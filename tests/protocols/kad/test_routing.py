"""The Kad routing table: buckets by XOR distance, K per bucket, closest-first answers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.protocols.kad.packets import ID_MAX, KadContact
from peerwatch.protocols.kad.routing import K, RoutingTable, bucket_index, distance


def _c(kad_id: int, n: int = 1) -> KadContact:
    return KadContact(kad_id, f"127.0.17.{n % 250 + 1}", 4672 + n // 250, 4662, 8)


def test_k_is_amules() -> None:
    assert K == 10


def test_bucket_index_golden() -> None:
    assert bucket_index(0, 1 << 127) == 0  # differs in the first bit
    assert bucket_index(0, 1) == 127  # differs only in the last bit
    assert bucket_index(0xF0 << 120, 0xE0 << 120) == 3
    with pytest.raises(ValueError):
        bucket_index(5, 5)
    assert distance(6, 3) == 5


def test_full_bucket_refuses_new_keeps_old() -> None:
    table = RoutingTable(0)
    far = [_c((1 << 127) | i, i) for i in range(K + 1)]  # all in bucket 0
    assert all(table.add(c) for c in far[:K])
    assert not table.add(far[K])
    assert table.bucket_sizes()[0] == K
    assert table.get(far[K].id) is None
    assert table.add(far[3])  # a known contact refreshes
    assert table.remove(far[0].id) and table.add(far[K])


def test_own_id_is_never_added_and_address_moves() -> None:
    table = RoutingTable(42)
    assert not table.add(_c(42))
    assert len(table) == 0
    table.add(KadContact(7, "127.0.17.9", 4672, 4662, 8))
    table.add(KadContact(9, "127.0.17.9", 4672, 4662, 8))  # same address, new id
    assert [c.id for c in table.contacts()] == [9]


@given(
    st.integers(0, ID_MAX),
    st.lists(st.integers(0, ID_MAX), min_size=1, max_size=60, unique=True),
    st.integers(0, ID_MAX),
    st.integers(1, 20),
)
@settings(max_examples=200)
def test_closest_is_brute_force_over_what_was_kept(
    own: int, ids: list[int], target: int, n: int
) -> None:
    table = RoutingTable(own)
    for i, kad_id in enumerate(ids):
        table.add(_c(kad_id, i))
    kept = table.contacts()
    assert len(kept) == len(table) <= len(ids)
    assert all(c.id != own for c in kept)
    assert all(size <= K for size in table.bucket_sizes())
    expected = sorted(kept, key=lambda c: c.id ^ target)[:n]
    assert table.closest(target, n) == expected
    # every contact sits in the bucket of its common-prefix length with our id
    for c in kept:
        assert (own ^ c.id).bit_length() == 128 - bucket_index(own, c.id)
