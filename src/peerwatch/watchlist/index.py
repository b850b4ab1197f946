"""The compact in-memory match index the sensors consult for every hash they see.

Layout: one table per concrete `HashKind`. A table holds its digests sorted and split in two
numpy arrays, with no per-entry Python object:

* `prefix`: uint64, the first 8 bytes of each digest read big-endian, so that integer order is the
  digests' byte order and `np.searchsorted` can run on one contiguous array;
* `rest`: an (n, size - 8) uint8 array of the remaining bytes.

So an entry costs exactly its digest size (16, 20 or 32 bytes) where a Python `set` of `bytes`
costs about 100 (see docs/benchmarks.md). A value stored with an ambiguous kind such as
"sha1|btih" is put in every member table, so it matches a query as either kind; a query with an
ambiguous kind matches when any member table holds the digest.

A batch lookup orders the queries by their top 16 bits (so that neighbouring binary searches share
their path through the table, in cache), binary-searches the prefixes, then compares the remaining
bytes of the candidates; entries that share an 8-byte prefix (rare with real hashes, but a list
can be crafted to contain them) are all checked.

The index is immutable once built; it is safe to query from several threads.
"""

from __future__ import annotations

import ctypes
import itertools
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from peerwatch.domain.hashes import CONCRETE_KINDS, HashKind

__all__ = ["MatchIndex", "MatchIndexBuilder"]

#: Rows per staging chunk while building: big enough to amortise, small enough that a partly
#: filled chunk (at most one per concrete kind) wastes little.
DEFAULT_CHUNK_ROWS = 1 << 20

#: `MatchIndex.from_rows` reports progress after every this many rows.
PROGRESS_EVERY = 100_000

#: The search key is the first 8 bytes of a digest.
_PREFIX = 8

Digests = Sequence[bytes] | NDArray[np.uint8]


def _prefixes(rows: NDArray[np.uint8]) -> NDArray[np.uint64]:
    """The first 8 bytes of each (n, size) row as native uint64, read big-endian."""
    head = np.ascontiguousarray(rows[:, :_PREFIX])
    return head.view(">u8").reshape(-1).astype(np.uint64)


def _items(rest: NDArray[np.uint8]) -> NDArray[np.void]:
    """Each row of a C-contiguous (n, width) uint8 array as one opaque `V<width>` item.

    Gathering and comparing whole items (numpy compares unstructured voids bytewise) is about twice
    as fast as working on the (n, width) array and reducing with `.all(axis=1)`.
    """
    return rest.view(f"V{rest.shape[1]}").reshape(-1)


def _as_rows(digests: Digests, size: int) -> NDArray[np.uint8]:
    """Digests as a C-contiguous (n, size) uint8 array; ValueError if any is not `size` bytes."""
    if isinstance(digests, np.ndarray):
        if digests.dtype != np.uint8 or digests.ndim != 2 or digests.shape[1] != size:
            raise ValueError(
                f"expected an (n, {size}) uint8 array, got shape {digests.shape} {digests.dtype}"
            )
        return np.ascontiguousarray(digests)
    if not digests:
        return np.empty((0, size), dtype=np.uint8)
    lengths = set(map(len, digests))
    if lengths != {size}:
        bad = sorted(lengths - {size})
        raise ValueError(f"expected {size}-byte digests, got lengths {bad}")
    joined = b"".join(digests)
    return np.frombuffer(joined, dtype=np.uint8).reshape(len(digests), size)


@dataclass(frozen=True, slots=True, eq=False)
class _Table:
    """The sorted, duplicate-free digests of one concrete kind."""

    size: int
    prefix: NDArray[np.uint64]  # (n,)
    rest: NDArray[np.uint8]  # (n, size - 8)

    @classmethod
    def from_unsorted(cls, size: int, rows: NDArray[np.uint8]) -> _Table:
        """Sort `rows` (n, size) by their bytes and drop duplicates (`rows` is not modified)."""
        prefix = _prefixes(rows)
        order = np.argsort(prefix)
        prefix = prefix[order]
        rest = np.ascontiguousarray(rows[order, _PREFIX:])
        del order, rows
        tied = np.flatnonzero(prefix[1:] == prefix[:-1])
        if tied.size:
            # Entries that share a prefix: order them by their remaining bytes too, so that
            # duplicates become neighbours and each run is sorted (rare, so a slow sort is fine).
            at = np.union1d(tied, tied + 1)
            sub = rest[at]
            keys: list[NDArray[np.unsignedinteger]] = [
                sub[:, j] for j in range(sub.shape[1] - 1, -1, -1)
            ]
            keys.append(prefix[at])  # lexsort's last key is the primary one
            rest[at] = sub[np.lexsort(keys)]
            items = _items(rest)
            duplicate = tied[items[tied] == items[tied + 1]]
            if duplicate.size:
                keep = np.ones(prefix.size, dtype=bool)
                keep[duplicate + 1] = False
                prefix = prefix[keep]
                rest = rest[keep]
        prefix.flags.writeable = False
        rest.flags.writeable = False
        return cls(size, prefix, rest)

    def __len__(self) -> int:
        return int(self.prefix.size)

    @property
    def nbytes(self) -> int:
        return int(self.prefix.nbytes + self.rest.nbytes)

    def contains(self, digest: bytes) -> bool:
        """One lookup without building arrays (the caller has checked the length)."""
        prefix = self.prefix
        key = np.uint64(int.from_bytes(digest[:_PREFIX], "big"))
        tail = bytes(digest[_PREFIX:])
        pos = int(prefix.searchsorted(key))
        while pos < prefix.size and prefix[pos] == key:
            if self.rest[pos].tobytes() == tail:
                return True
            pos += 1
        return False

    def lookup(self, rows: NDArray[np.uint8]) -> NDArray[np.bool_]:
        """For each (n, size) row, whether the table holds it."""
        found = np.zeros(rows.shape[0], dtype=bool)
        n = self.prefix.size
        if n == 0 or rows.shape[0] == 0:
            return found
        items = _items(self.rest)
        qitems = _items(np.ascontiguousarray(rows[:, _PREFIX:]))
        qprefix = _prefixes(rows)
        # Search the queries in the order of their top 16 bits (a stable sort of 16-bit keys is a
        # linear-time radix sort): neighbouring searches then share most of their path through
        # the table and find it in cache. Unordered, a batch is several times slower.
        order = np.argsort((qprefix >> np.uint64(48)).astype(np.uint16), kind="stable")
        qprefix = qprefix[order]
        pos = np.searchsorted(self.prefix, qprefix, side="left")
        active = np.flatnonzero(pos < n)  # positions in the ordered batch
        pos = pos[active]
        # Each round checks one more entry of every equal-prefix run; almost every query is
        # settled in the first round (a miss has no equal prefix, a hit matches its first entry).
        while active.size:
            same = self.prefix[pos] == qprefix[active]
            active, pos = active[same], pos[same]
            if not active.size:
                break
            asked = order[active]  # positions in the caller's batch
            hit = items[pos] == qitems[asked]
            found[asked[hit]] = True
            miss = ~hit
            active, pos = active[miss], pos[miss] + 1
            inside = pos < n
            active, pos = active[inside], pos[inside]
        return found


class MatchIndex:
    """An immutable set of (concrete kind, digest) entries, built by `MatchIndexBuilder`."""

    __slots__ = ("_tables",)

    def __init__(self, tables: Mapping[HashKind, _Table]) -> None:
        self._tables: dict[HashKind, _Table] = {
            kind: tables[kind]
            if kind in tables
            else _Table.from_unsorted(kind.digest_size, _empty(kind))
            for kind in CONCRETE_KINDS
        }

    @classmethod
    def from_rows(
        cls,
        rows: Iterable[tuple[str, bytes]],
        total: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> MatchIndex:
        """Build from (kind value, digest) rows, as they come from the database.

        `total` is the expected number of rows when known: staging chunks are no larger than it.
        `progress` is called with the number of rows read so far every `PROGRESS_EVERY` rows and
        once at the end. A row with an unknown kind or a digest of the wrong length raises
        ValueError naming the row (counted from 0).
        """
        chunk_rows = DEFAULT_CHUNK_ROWS if total is None else max(1, min(total, DEFAULT_CHUNK_ROWS))
        builder = MatchIndexBuilder(chunk_rows=chunk_rows)
        stages = builder._stages_by_value
        done = 0
        iterator = iter(rows)
        while block := list(itertools.islice(iterator, PROGRESS_EVERY)):
            for i, (kind, digest) in enumerate(block):
                targets = stages.get(kind)
                if targets is None:
                    raise ValueError(f"row {done + i}: unknown hash kind {kind!r}")
                for stage in targets:
                    if not stage.add(digest):
                        raise ValueError(
                            f"row {done + i}: a {kind} digest is {stage.size} bytes, "
                            f"got {len(digest)}"
                        )
            done += len(block)
            if progress is not None:
                progress(done)
        if progress is not None and done == 0:
            progress(0)
        return builder.build()

    def contains(self, kind: HashKind, digest: bytes) -> bool:
        """Whether `digest` is listed as `kind` (an ambiguous kind: as any of its members)."""
        _check_length(kind, digest)
        return any(self._tables[m].contains(digest) for m in kind.members)

    def matching_kinds(self, kind: HashKind, digest: bytes) -> tuple[HashKind, ...]:
        """The concrete kinds among `kind.members` under which `digest` is listed."""
        _check_length(kind, digest)
        return tuple(m for m in kind.members if self._tables[m].contains(digest))

    def contains_many(self, kind: HashKind, digests: Digests) -> NDArray[np.bool_]:
        """For each digest, whether it is listed as `kind` (ambiguous kind: any member).

        `digests` is a sequence of `bytes` or an (n, digest_size) uint8 array; any digest of the
        wrong length raises ValueError.
        """
        rows = _as_rows(digests, kind.digest_size)
        result = np.zeros(rows.shape[0], dtype=bool)
        for member in kind.members:
            result |= self._tables[member].lookup(rows)
        return result

    def count(self, kind: HashKind) -> int:
        """Entries a query of `kind` searches: its table, or the sum of its members' tables."""
        return sum(len(self._tables[m]) for m in kind.members)

    def __len__(self) -> int:
        """Entries over all tables; a value stored with an ambiguous kind counts once per member."""
        return sum(len(t) for t in self._tables.values())

    @property
    def nbytes(self) -> int:
        """Bytes held by the tables' arrays (the index's memory, less a few hundred bytes)."""
        return sum(t.nbytes for t in self._tables.values())

    def __repr__(self) -> str:
        counts = ", ".join(f"{k.value}={len(t)}" for k, t in self._tables.items() if len(t))
        return f"<MatchIndex {len(self)} entries ({counts or 'empty'}), {self.nbytes} bytes>"


def _check_length(kind: HashKind, digest: bytes) -> None:
    if len(digest) != kind.digest_size:
        raise ValueError(f"a {kind.value} digest is {kind.digest_size} bytes, got {len(digest)}")


def _empty(kind: HashKind) -> NDArray[np.uint8]:
    return np.empty((0, kind.digest_size), dtype=np.uint8)


class _Stage:
    """Rows of one concrete kind, accumulated in fixed-size numpy chunks."""

    __slots__ = ("_chunk", "_chunk_rows", "_chunks", "_fill", "_view", "size")

    def __init__(self, size: int, chunk_rows: int) -> None:
        self.size = size
        self._chunk_rows = chunk_rows
        self._chunks: list[NDArray[np.uint8]] = []
        self._chunk: NDArray[np.uint8] | None = None
        self._view = memoryview(b"")
        self._fill = 0  # bytes written to the current chunk

    def add(self, digest: bytes) -> bool:
        """Append one digest; False (and nothing stored) when its length is wrong."""
        size = self.size
        if len(digest) != size:
            return False
        if self._fill == len(self._view):
            self._new_chunk()
        fill = self._fill
        self._view[fill : fill + size] = digest
        self._fill = fill + size
        return True

    def add_rows(self, rows: NDArray[np.uint8]) -> None:
        """Append an (n, size) uint8 array (copied)."""
        if rows.shape[0]:
            self._chunks.append(np.array(rows, dtype=np.uint8, order="C", copy=True))

    def _new_chunk(self) -> None:
        self._seal()
        self._chunk = np.empty((self._chunk_rows, self.size), dtype=np.uint8)
        self._view = self._chunk.reshape(-1).data

    def _seal(self) -> None:
        if self._chunk is not None and self._fill:
            self._chunks.append(self._chunk[: self._fill // self.size])
        self._chunk, self._view, self._fill = None, memoryview(b""), 0

    def take(self) -> NDArray[np.uint8]:
        """All rows so far as one array; the stage is left empty."""
        self._seal()
        chunks, self._chunks = self._chunks, []
        if not chunks:
            return np.empty((0, self.size), dtype=np.uint8)
        if len(chunks) == 1:
            return chunks[0]
        rows = np.concatenate(chunks)
        chunks.clear()
        return rows


class MatchIndexBuilder:
    """Accumulates (kind, digest) entries in compact chunks, then `build()`s a `MatchIndex`.

    Building 10 million entries stays small: rows are staged in numpy chunks of `chunk_rows` rows
    (no Python object per entry), and `build()` sorts one kind at a time, releasing its chunks.
    """

    def __init__(self, *, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        self._stages = {k: _Stage(k.digest_size, chunk_rows) for k in CONCRETE_KINDS}
        #: kind value -> stages a value of that kind goes into (its members' stages).
        self._stages_by_value: dict[str, tuple[_Stage, ...]] = {
            kind.value: tuple(self._stages[m] for m in kind.members) for kind in HashKind
        }

    def add(self, kind: HashKind, digest: bytes) -> None:
        """Add one digest; an ambiguous kind adds it to each member kind."""
        _check_length(kind, digest)
        for stage in self._stages_by_value[kind.value]:
            stage.add(digest)

    def add_many(self, kind: HashKind, digests: Digests | Iterable[bytes]) -> None:
        """Add an (n, digest_size) uint8 array, or an iterable of `bytes`, all of one kind.

        A digest of the wrong length raises ValueError and nothing of its block (up to
        DEFAULT_CHUNK_ROWS digests of an iterable; all of an array) is added.
        """
        targets = self._stages_by_value[kind.value]
        for rows in _row_blocks(digests, kind.digest_size):
            for stage in targets:
                stage.add_rows(rows)

    def build(self) -> MatchIndex:
        """The index of everything added so far; the builder is left empty and reusable."""
        tables: dict[HashKind, _Table] = {}
        for kind, stage in self._stages.items():
            tables[kind] = _Table.from_unsorted(stage.size, stage.take())
        _release_freed_memory()
        return MatchIndex(tables)


def _release_freed_memory() -> None:
    """Give the build's freed temporaries back to the operating system.

    Sorting allocates several table-sized temporaries. glibc serves allocations below its adaptive
    mmap threshold (which rises to the size of the largest block freed, up to 32 MiB) from its heap
    and keeps freed heap memory resident: measured, about 8 bytes per entry after a 10 million
    entry build, a third of the index itself. malloc_trim(0) hands free heap pages back; on other
    C libraries this does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim  # the C library already loaded
    except (OSError, AttributeError):  # e.g. musl has no malloc_trim
        return
    malloc_trim(0)


def _row_blocks(digests: Digests | Iterable[bytes], size: int) -> Iterator[NDArray[np.uint8]]:
    """(n, size) arrays of at most DEFAULT_CHUNK_ROWS rows from an array or iterable of bytes."""
    if isinstance(digests, np.ndarray):
        yield _as_rows(digests, size)
        return
    iterator = iter(digests)
    while block := list(itertools.islice(iterator, DEFAULT_CHUNK_ROWS)):
        yield _as_rows(block, size)
