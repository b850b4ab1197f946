"""Watchlist import benchmark: a large generated VICS 2.0 file, streamed into SQLite.

    python benchmarks/bench_import.py [--media 1000000] [--out docs/benchmarks.md]

Each measurement runs in its own child process so that its peak resident memory (ru_maxrss) is its
own: peerwatch's import into SQLite, peerwatch's parser alone, and in the same run the plain
`json.load` of the same file, which is what reading it without streaming costs. The file holds
random hex digests from a seeded generator, never real hashes.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import DEFAULT_PATH, machine_info, write_section


def write_vics(path: Path, media: int, seed: int = 11) -> None:
    """A VICS 2.0 document with `media` entries, written piece by piece (constant memory)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        f.write('{"odata.metadata":"ProjectVic/DataModels/2.0.xml/CUSTOM/$metadata#Cases",')
        f.write('"value":[{"CaseID":1,"Media":[')
        for i in range(media):
            if i:
                f.write(",")
            entry = {
                "MediaID": i + 1,
                "Category": rng.randint(0, 3),
                "MD5": rng.randbytes(16).hex().upper(),
                "SHA1": rng.randbytes(20).hex().upper(),
                "SHA256": rng.randbytes(32).hex(),
                "MediaSize": rng.randint(1000, 10_000_000),
                "VictimIdentified": rng.random() < 0.1,
                "IsDistributed": True,
            }
            f.write(json.dumps(entry, separators=(",", ":")))
        f.write("]}]}")


def child(mode: str, path: Path) -> None:
    """Run one measurement and print it as JSON (runs in a fresh interpreter)."""
    from peerwatch.storage.database import make_engine, migrate, sqlite_url
    from peerwatch.watchlist.formats import parse_file
    from peerwatch.watchlist.store import WatchlistStore

    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    items = hashes = 0
    if mode == "import":
        with tempfile.TemporaryDirectory() as d:
            engine = make_engine(sqlite_url(Path(d) / "bench.db"))
            migrate(engine)
            result = WatchlistStore(engine).import_files([path], list_name="bench")
            items, hashes = result.items, result.hashes
            elapsed = time.perf_counter() - t
            engine.dispose()
    elif mode == "parse":
        for item in parse_file(path, None, kind=None, default_category=None, on_invalid=None):
            items += 1
            hashes += len(item.hashes)
        elapsed = time.perf_counter() - t
    elif mode == "json-load":
        with path.open("rb") as f:
            doc = json.load(f)
        items = sum(len(case["Media"]) for case in doc["value"])
        elapsed = time.perf_counter() - t
    else:
        raise SystemExit(f"unknown mode {mode}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {
                "items": items,
                "hashes": hashes,
                "seconds": elapsed,
                "peak_mib": peak / 1024,
                "start_mib": start_rss / 1024,
            }
        )
    )


def measure(mode: str, path: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    print(mode, result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=int, default=1_000_000, help="media entries in the file")
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH)
    parser.add_argument("--child", nargs=2, metavar=("MODE", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    rows: list[str] = []
    peaks: dict[tuple[str, int], float] = {}
    sizes: dict[int, float] = {}
    for media in (args.media // 10, args.media):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "vics.json"
            write_vics(path, media)
            sizes[media] = path.stat().st_size / 2**20
            for mode, label in (
                ("import", "peerwatch import into SQLite (parse, store, one transaction)"),
                ("parse", "peerwatch VICS parser alone (ijson, streamed)"),
                ("json-load", "baseline: `json.load` of the whole file"),
            ):
                r = measure(mode, path)
                if int(r["items"]) != media:
                    raise SystemExit(f"{mode}: read {r['items']} media of {media}")
                peaks[mode, media] = r["peak_mib"]
                rows.append(
                    f"| {media:,} ({sizes[media]:,.0f} MiB) | {label} | {r['seconds']:.1f} | "
                    f"{media / r['seconds']:,.0f} | {r['peak_mib']:,.0f} |"
                )
    small, big = args.media // 10, args.media
    markdown = "\n".join(
        [
            "## Watchlist import (VICS 2.0, streamed)",
            "",
            f"`python benchmarks/bench_import.py --media {args.media}`: generated VICS 2.0 files "
            f"(random MD5, SHA1 and SHA256 per media). Each line ran in its own process; peak "
            "memory is its ru_maxrss, interpreter and libraries included.",
            "",
            machine_info(),
            "",
            "| media (file size) | what | seconds | media/s | peak memory, MiB |",
            "|---|---|---:|---:|---:|",
            *rows,
            "",
            f"With a file {sizes[big] / sizes[small]:.0f} times larger, the streamed import's "
            f"peak memory went from {peaks['import', small]:,.0f} to "
            f"{peaks['import', big]:,.0f} MiB and the parser's from {peaks['parse', small]:,.0f} "
            f"to {peaks['parse', big]:,.0f} MiB, while `json.load` went from "
            f"{peaks['json-load', small]:,.0f} to {peaks['json-load', big]:,.0f} MiB "
            f"({peaks['json-load', big] / peaks['import', big]:.1f} times the import's peak).",
        ]
    )
    write_section("import", markdown, args.out)
    print(f"wrote section 'import' of {args.out}")


if __name__ == "__main__":
    main()
