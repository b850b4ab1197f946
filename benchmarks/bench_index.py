"""Benchmark of the match index against a plain Python set of bytes, on random digests.

    python benchmarks/bench_index.py          # 10 million entries, updates docs/benchmarks.md
    python benchmarks/bench_index.py --n 100000 --out /tmp/bench.md

The digests are random bytes from a seeded generator (never real hashes), streamed block by block
so that the process holds only what is measured. Memory is read from /proc/self/statm (resident
set size); the build peak is sampled every 5 ms by a thread.
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from peerwatch.domain.hashes import HashKind
from peerwatch.watchlist.index import MatchIndex, MatchIndexBuilder
from report import DEFAULT_PATH, machine_info, write_section

#: The list mix: (kind, share of entries).
MIX: tuple[tuple[HashKind, float], ...] = (
    (HashKind.SHA1, 0.4),
    (HashKind.MD5, 0.3),
    (HashKind.SHA256, 0.3),
)
BLOCK_ROWS = 100_000
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """Resident set size of this process, in bytes."""
    with Path("/proc/self/statm").open() as f:
        return int(f.read().split()[1]) * PAGE


@dataclass
class PeakSampler:
    """Samples RSS in a thread while a `with` block runs; `peak` is the highest value seen."""

    interval: float = 0.005
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> PeakSampler:
        self.peak = rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, rss())


def counts(n: int) -> list[tuple[HashKind, int]]:
    sizes = [(kind, int(n * share)) for kind, share in MIX]
    sizes[0] = (sizes[0][0], n - sum(c for _, c in sizes[1:]))
    return sizes


def blocks(n: int, seed: int) -> Iterator[tuple[HashKind, NDArray[np.uint8]]]:
    """The benchmark's list: (kind, block of random digests), the same for the same seed."""
    for number, (kind, count) in enumerate(counts(n)):
        rng = np.random.default_rng([seed, number])
        for start in range(0, count, BLOCK_ROWS):
            rows = min(BLOCK_ROWS, count - start)
            yield kind, rng.integers(0, 256, size=(rows, kind.digest_size), dtype=np.uint8)


def split(block: NDArray[np.uint8]) -> list[bytes]:
    raw = block.tobytes()
    size = block.shape[1]
    return [raw[i : i + size] for i in range(0, len(raw), size)]


def rows(n: int, seed: int) -> Iterator[tuple[str, bytes]]:
    """(kind value, digest) rows, as the database hands them to `MatchIndex.from_rows`."""
    for kind, block in blocks(n, seed):
        value = kind.value
        for digest in split(block):
            yield value, digest


def queries(n: int, seed: int, per_kind: int) -> dict[HashKind, list[bytes]]:
    """Per kind, `per_kind` digests in random order: half listed, half random (absent)."""
    rng = np.random.default_rng([seed, 99])
    sizes = dict(counts(n))
    wanted = {
        kind: np.sort(rng.integers(0, sizes[kind], size=per_kind // 2)) if sizes[kind] else None
        for kind, _ in MIX
    }
    present: dict[HashKind, list[bytes]] = {kind: [] for kind, _ in MIX}
    offset = dict.fromkeys(sizes, 0)
    for kind, block in blocks(n, seed):
        picks = wanted[kind]
        if picks is not None:
            lo, hi = offset[kind], offset[kind] + block.shape[0]
            inside = picks[(picks >= lo) & (picks < hi)] - lo
            present[kind].extend(split(block[inside]))
        offset[kind] += block.shape[0]
    batches: dict[HashKind, list[bytes]] = {}
    for kind, _ in MIX:
        absent = rng.integers(0, 256, size=(per_kind - len(present[kind]), kind.digest_size))
        batch = present[kind] + split(absent.astype(np.uint8))
        order = rng.permutation(len(batch))
        batches[kind] = [batch[i] for i in order]
    return batches


def best_time(run: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def measure_set(
    n: int,
    seed: int,
    batches: dict[HashKind, list[bytes]],
    answers: dict[HashKind, NDArray[np.bool_]],
    rounds: int,
) -> tuple[int, int, float, float]:
    """RSS growth, build peak, build time and lookup time of a set of the same digests."""
    before = settle()
    with PeakSampler() as sampler:
        start = time.perf_counter()
        digests = {digest for _, digest in rows(n, seed)}
        build = time.perf_counter() - start
    held = settle() - before
    lookups = best_time(lambda: [[d in digests for d in b] for b in batches.values()], rounds)
    for kind, batch in batches.items():
        assert answers[kind].tolist() == [d in digests for d in batch], kind
    return held, sampler.peak - before, build, lookups


def settle() -> int:
    gc.collect()
    return rss()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="entries in the list")
    parser.add_argument("--queries", type=int, default=1_000_000, help="digests per lookup batch")
    parser.add_argument("--rounds", type=int, default=3, help="lookup rounds (best one counts)")
    parser.add_argument("--seed", type=int, default=20240601, help="seed of the random digests")
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH, help="markdown file to update")
    args = parser.parse_args()
    n: int = args.n
    per_kind: int = args.queries
    seed: int = args.seed

    base = settle()

    # 1. MatchIndex built from streamed rows, the way the CLI builds it from the database.
    with PeakSampler() as sampler:
        start = time.perf_counter()
        index = MatchIndex.from_rows(rows(n, seed), total=n)
        index_build = time.perf_counter() - start
    index_rss = settle() - base
    index_peak = sampler.peak - base
    process_rss = rss()
    assert len(index) == n, "random digests collided; choose another seed"

    batches = queries(n, seed, per_kind)
    arrays = {
        kind: np.frombuffer(b"".join(batch), np.uint8).reshape(-1, kind.digest_size)
        for kind, batch in batches.items()
    }
    total_queries = sum(len(b) for b in batches.values())
    index_list_time = best_time(
        lambda: [index.contains_many(kind, batch) for kind, batch in batches.items()], args.rounds
    )
    index_array_time = best_time(
        lambda: [index.contains_many(kind, batch) for kind, batch in arrays.items()], args.rounds
    )
    index_answers = {kind: index.contains_many(kind, batch) for kind, batch in batches.items()}
    for kind, answer in index_answers.items():
        assert answer.sum() == len(batches[kind]) // 2 or n == 0, (kind, answer.sum())
    index_bytes = index.nbytes

    # 2. A plain Python set of bytes holding the same digests.
    set_figures = measure_set(n, seed, batches, index_answers, args.rounds)
    set_rss, set_peak, set_build, set_time = set_figures

    # 3. The vectorised build path (add_many on numpy blocks): time only.
    start = time.perf_counter()
    builder = MatchIndexBuilder()
    for kind, block in blocks(n, seed):
        builder.add_many(kind, block)
    del index
    index = builder.build()
    array_build = time.perf_counter() - start
    assert len(index) == n

    def per(value: float) -> str:
        return f"{value / n:.1f}" if n else "n/a"

    def rate(seconds: float) -> str:
        return f"{total_queries / seconds / 1e6:.2f} M/s"

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.1f}x" if b > 0 else "n/a"

    mix = ", ".join(f"{share:.0%} {kind.value}" for kind, share in MIX)
    command = "python benchmarks/bench_index.py" + ("" if n == 10_000_000 else f" --n {n}")
    table = [
        "| | MatchIndex | Python `set` of `bytes` | set / index |",
        "|---|---:|---:|---:|",
        f"| entries | {n:,} | {n:,} | |",
        f"| bytes/entry held by the arrays (`nbytes / len`) | {per(index_bytes)} | | |",
        f"| bytes/entry, RSS growth once built | {per(index_rss)} | {per(set_rss)} | "
        f"{ratio(set_rss, index_rss)} |",
        f"| bytes/entry, RSS peak during build | {per(index_peak)} | {per(set_peak)} | "
        f"{ratio(set_peak, index_peak)} |",
        f"| whole process RSS with the index, MiB | {process_rss / 2**20:.0f} | | |",
        f"| build from rows (`from_rows` / set comprehension), s | {index_build:.1f} | "
        f"{set_build:.1f} | {ratio(set_build, index_build)} |",
        f"| build from numpy blocks (`add_many`), s | {array_build:.1f} | | |",
        f"| lookups, batches of `bytes` | {rate(index_list_time)} | {rate(set_time)} | "
        f"{ratio(index_list_time, set_time)} |",
        f"| lookups, batches as (n, size) uint8 arrays | {rate(index_array_time)} | | |",
    ]
    section = "\n".join(
        [
            "## Match index",
            "",
            f"`{command}` (seed {seed}): {n:,} random digests ({mix}), streamed as "
            "(kind, digest) rows. Lookups: one batch of "
            f"{per_kind:,} digests per kind, half listed and half absent, in random order; best "
            f"of {args.rounds} rounds; the set is queried with `[d in s for d in batch]`. "
            "RSS is read from /proc/self/statm before and after, after garbage collection; the "
            "peak is sampled every 5 ms. The last column divides the set's figure by the "
            "index's.",
            "",
            machine_info(),
            "",
            *table,
        ]
    )
    write_section("index", section, args.out)
    print(section)


if __name__ == "__main__":
    main()
