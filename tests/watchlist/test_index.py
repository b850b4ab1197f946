"""The match index against a Python set oracle; all digests are random or crafted bytes."""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.domain.hashes import CONCRETE_KINDS, HashKind
from peerwatch.watchlist import index as index_module
from peerwatch.watchlist.index import MatchIndex, MatchIndexBuilder

Entry = tuple[HashKind, bytes]

#: A few 8-byte prefixes, so that generated digests often share one (the equal-prefix runs).
_PREFIXES = [bytes(8), b"\xff" * 8, bytes(range(8)), b"\x80" + bytes(7)]


@st.composite
def digests(draw: st.DrawFn, size: int) -> bytes:
    if draw(st.booleans()):
        head = draw(st.sampled_from(_PREFIXES))
        tail = draw(st.binary(min_size=size - 8, max_size=size - 8))
        return head + tail
    return draw(st.binary(min_size=size, max_size=size))


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    kind = draw(st.sampled_from(list(HashKind)))
    return kind, draw(digests(kind.digest_size))


def oracle_of(stored: list[Entry]) -> set[Entry]:
    return {(member, digest) for kind, digest in stored for member in kind.members}


def expected(oracle: set[Entry], kind: HashKind, digest: bytes) -> bool:
    return any((member, digest) in oracle for member in kind.members)


def build(stored: list[Entry], chunk_rows: int = 3) -> MatchIndex:
    builder = MatchIndexBuilder(chunk_rows=chunk_rows)
    for kind, digest in stored:
        builder.add(kind, digest)
    return builder.build()


def random_digest(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


@settings(max_examples=200, deadline=None)
@given(
    stored=st.lists(entries(), max_size=60),
    extra=st.lists(entries(), max_size=30),
    how=st.sampled_from(["add", "add_many", "from_rows"]),
)
def test_matches_set_oracle(stored: list[Entry], extra: list[Entry], how: str) -> None:
    if how == "add":
        index = build(stored)
    elif how == "add_many":
        builder = MatchIndexBuilder(chunk_rows=2)
        for kind in HashKind:
            values = [d for k, d in stored if k is kind]
            if values and len(values) % 2:
                builder.add_many(kind, values)
            elif values:
                builder.add_many(
                    kind, np.frombuffer(b"".join(values), np.uint8).reshape(-1, kind.digest_size)
                )
        index = builder.build()
    else:
        index = MatchIndex.from_rows(((k.value, d) for k, d in stored), total=len(stored))
    oracle = oracle_of(stored)

    assert len(index) == len(oracle)
    for kind in HashKind:
        assert index.count(kind) == sum(1 for m, _ in oracle if m in kind.members)

    # Query every stored digest and every extra one under every kind of its size.
    queries = stored + extra
    for kind in HashKind:
        batch = [d for _, d in queries if len(d) == kind.digest_size]
        want = [expected(oracle, kind, d) for d in batch]
        assert [index.contains(kind, d) for d in batch] == want
        assert index.contains_many(kind, batch).tolist() == want
        array = np.frombuffer(b"".join(batch), np.uint8).reshape(-1, kind.digest_size)
        assert index.contains_many(kind, array).tolist() == want
        for d in batch:
            assert index.matching_kinds(kind, d) == tuple(
                m for m in kind.members if (m, d) in oracle
            )


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 3000))
def test_large_random_batches(seed: int, n: int) -> None:
    rng = random.Random(seed)
    stored = [
        (kind, random_digest(rng, kind.digest_size)) for kind in rng.choices(list(HashKind), k=n)
    ]
    index = build(stored, chunk_rows=257)
    oracle = oracle_of(stored)
    for kind in HashKind:
        present = [d for k, d in stored if k.digest_size == kind.digest_size]
        absent = [random_digest(rng, kind.digest_size) for _ in range(len(present) + 5)]
        batch = present + absent
        rng.shuffle(batch)
        got = index.contains_many(kind, batch)
        assert got.dtype == np.bool_
        assert got.tolist() == [expected(oracle, kind, d) for d in batch]


def test_equal_prefix_runs() -> None:
    rng = random.Random(7)
    prefix = rng.randbytes(8)
    run = [prefix + rng.randbytes(12) for _ in range(50)]
    absent_same_prefix = [prefix + rng.randbytes(12) for _ in range(50)]
    # Neighbours whose prefix differs by one from the run's, on both sides.
    as_int = int.from_bytes(prefix, "big")
    before = (as_int - 1).to_bytes(8, "big") + rng.randbytes(12)
    after = (as_int + 1).to_bytes(8, "big") + rng.randbytes(12)
    builder = MatchIndexBuilder(chunk_rows=7)
    # Added in reverse and twice, so sorting and de-duplication inside the run are exercised.
    builder.add_many(HashKind.SHA1, [*reversed(run), before, after])
    builder.add_many(HashKind.SHA1, run[::3])
    index = builder.build()

    assert index.count(HashKind.SHA1) == len(run) + 2
    assert index.contains_many(HashKind.SHA1, [*run, before, after]).all()
    assert not index.contains_many(HashKind.SHA1, absent_same_prefix).any()
    assert all(index.contains(HashKind.SHA1, d) for d in run)
    assert not any(index.contains(HashKind.SHA1, d) for d in absent_same_prefix)
    # A run that ends the table: the search must not read past the last entry.
    top = b"\xff" * 8
    tail_run = [top + bytes([i]) * 12 for i in (3, 1, 2)]
    index = MatchIndex.from_rows([("sha1", d) for d in tail_run])
    assert index.contains_many(HashKind.SHA1, [*tail_run, top + b"\x09" * 12]).tolist() == [
        True,
        True,
        True,
        False,
    ]


def test_identical_prefix_and_rest_in_every_kind_deduplicated() -> None:
    rows = [(kind.value, bytes(kind.digest_size)) for kind in HashKind for _ in range(3)]
    index = MatchIndex.from_rows(rows)
    assert len(index) == len(CONCRETE_KINDS)
    for kind in CONCRETE_KINDS:
        assert index.count(kind) == 1


def test_empty_index() -> None:
    index = MatchIndexBuilder().build()
    assert len(index) == 0
    assert index.nbytes == 0
    for kind in HashKind:
        assert index.count(kind) == 0
        assert not index.contains(kind, bytes(kind.digest_size))
        assert index.contains_many(kind, [bytes(kind.digest_size)] * 3).tolist() == [False] * 3
        assert index.contains_many(kind, []).shape == (0,)
    assert len(MatchIndex.from_rows([])) == 0


def test_empty_batch_on_full_index() -> None:
    index = build([(HashKind.MD5, bytes(16))])
    assert index.contains_many(HashKind.MD5, []).tolist() == []
    assert index.contains_many(HashKind.MD5, np.empty((0, 16), np.uint8)).tolist() == []


def test_kinds_kept_apart() -> None:
    rng = random.Random(3)
    sha1, btih, both = (rng.randbytes(20) for _ in range(3))
    index = build([(HashKind.SHA1, sha1), (HashKind.BTIH, btih), (HashKind.SHA1_OR_BTIH, both)])
    assert index.contains(HashKind.SHA1, sha1)
    assert not index.contains(HashKind.BTIH, sha1)
    assert index.contains(HashKind.BTIH, btih)
    assert not index.contains(HashKind.SHA1, btih)
    assert index.contains(HashKind.SHA1, both)
    assert index.contains(HashKind.BTIH, both)
    assert index.contains(HashKind.SHA1_OR_BTIH, sha1)  # an ambiguous query matches any member
    assert index.matching_kinds(HashKind.SHA1_OR_BTIH, both) == (HashKind.SHA1, HashKind.BTIH)
    assert index.matching_kinds(HashKind.SHA1_OR_BTIH, sha1) == (HashKind.SHA1,)
    assert index.contains_many(HashKind.BTIH, [sha1, btih, both]).tolist() == [False, True, True]
    # Same bytes, other sizes: md5 / sha256 tables know nothing of them.
    assert not index.contains(HashKind.MD5, sha1[:16])
    assert len(index) == 4


@pytest.mark.parametrize("kind", list(HashKind))
def test_wrong_length_raises(kind: HashKind) -> None:
    size = kind.digest_size
    index = build([(kind, bytes(size))])
    builder = MatchIndexBuilder()
    for bad in (bytes(size - 1), bytes(size + 1), b""):
        with pytest.raises(ValueError, match="bytes"):
            builder.add(kind, bad)
        with pytest.raises(ValueError, match=f"{size}-byte"):
            builder.add_many(kind, [bytes(size), bad])
        with pytest.raises(ValueError, match="bytes"):
            index.contains(kind, bad)
        with pytest.raises(ValueError, match="bytes"):
            index.matching_kinds(kind, bad)
        with pytest.raises(ValueError, match=f"{size}-byte"):
            index.contains_many(kind, [bytes(size), bad])
        with pytest.raises(ValueError, match="row 1"):
            MatchIndex.from_rows([(kind.value, bytes(size)), (kind.value, bad)])
    with pytest.raises(ValueError, match="uint8 array"):
        index.contains_many(kind, np.zeros((2, size + 1), np.uint8))
    with pytest.raises(ValueError, match="uint8 array"):
        index.contains_many(kind, np.zeros((2, size), np.uint16))
    with pytest.raises(ValueError, match="uint8 array"):
        builder.add_many(kind, np.zeros(size, np.uint8))
    # Nothing half-added: the builder still builds an empty index.
    assert len(builder.build()) == 0


def test_unknown_kind_row() -> None:
    with pytest.raises(ValueError, match="row 0: unknown hash kind 'crc32'"):
        MatchIndex.from_rows([("crc32", bytes(4))])


def test_progress_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_module, "PROGRESS_EVERY", 10)
    seen: list[int] = []
    rows = [("md5", i.to_bytes(16, "big")) for i in range(25)]
    index = MatchIndex.from_rows(iter(rows), total=25, progress=seen.append)
    assert seen == [10, 20, 25]
    assert len(index) == 25
    seen.clear()
    MatchIndex.from_rows([], total=0, progress=seen.append)
    assert seen == [0]


def test_builder_is_left_empty_and_reusable() -> None:
    builder = MatchIndexBuilder(chunk_rows=2)
    builder.add_many(HashKind.MD5, [bytes(16), b"\x01" * 16, b"\x02" * 16])
    first = builder.build()
    builder.add(HashKind.SHA256, bytes(32))
    second = builder.build()
    assert (len(first), len(second)) == (3, 1)
    assert first.contains(HashKind.MD5, b"\x02" * 16)
    assert not second.contains(HashKind.MD5, b"\x02" * 16)


def test_index_does_not_alias_caller_arrays() -> None:
    rows = np.zeros((4, 16), np.uint8)
    rows[:, 0] = [1, 2, 3, 4]
    builder = MatchIndexBuilder()
    builder.add_many(HashKind.MD5, rows)
    rows[:] = 0xEE  # the caller reuses its buffer
    index = builder.build()
    assert index.contains(HashKind.MD5, b"\x03" + bytes(15))
    assert not index.contains(HashKind.MD5, b"\xee" * 16)


def _random_rows(n: int, seed: int) -> Iterator[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    for kind, share in ((HashKind.SHA1, 0.4), (HashKind.MD5, 0.3), (HashKind.SHA256, 0.3)):
        block = rng.integers(0, 256, size=(int(n * share), kind.digest_size), dtype=np.uint8)
        for row in block:
            yield kind.value, row.tobytes()


def test_memory_per_entry() -> None:
    n = 200_000
    index = MatchIndex.from_rows(_random_rows(n, seed=11), total=n)
    assert len(index) == n
    # Exactly the digest bytes: 0.4*20 + 0.3*16 + 0.3*32 = 22.4 bytes per entry.
    assert index.nbytes == n * 22.4
    assert index.nbytes / len(index) <= 32
    # Worst case, all SHA-256: still at most 32.
    rng = np.random.default_rng(12)
    builder = MatchIndexBuilder()
    builder.add_many(HashKind.SHA256, rng.integers(0, 256, size=(n, 32), dtype=np.uint8))
    index = builder.build()
    assert index.nbytes / len(index) == 32


def test_build_peak_memory() -> None:
    n = 200_000
    data = np.random.default_rng(13).integers(0, 256, size=(n, 20), dtype=np.uint8)
    tracemalloc.start()
    try:
        builder = MatchIndexBuilder()
        builder.add_many(HashKind.SHA1, data)
        index = builder.build()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert index.nbytes == n * 20
    # Staging copy + sort temporaries; a set of bytes would hold ~100 bytes/entry at the end.
    assert peak / n <= 64, peak / n

    rows = [("sha1", row.tobytes()) for row in data]  # made before tracing: the caller's rows
    tracemalloc.start()
    try:
        index = MatchIndex.from_rows(iter(rows), total=n)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(index) == n
    assert peak / n <= 64, peak / n
