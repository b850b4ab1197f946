"""Leads benchmark: rank and route targets built from 10 million observations, on SQLite and
PostgreSQL; and, separately, the rate at which `TargetStore.refresh` assigns new evidence records.

    python benchmarks/bench_leads.py [--n 10000000] [--targets 200000] [--ingest 100000]
                                     [--postgres URL] [--out docs/benchmarks.md]

How the data set is made (docs/leads.md, "Benchmark"): signing 10 million evidence records would
take longer than the rest together and measures the evidence log, not the leads, so the generated
observations are written straight into the target tables, exactly as a refresh leaves them:
`target_observations` (one row per observation: target, link, time, outcome, content, address),
`target_links` (one to two endpoints per target) and `targets`; then the aggregates are built by the
product's own code, `TargetStore.rebuild_items` (SQL GROUP BY over the 10 million rows) and
`TargetStore.rebuild_summaries` (score facts, addresses, flags, and placement with the real
`Enricher`: a generated GeoIP City + ASN database placing 127.N.0.0/16 in the N-th of the 101
départements of the shared boundaries file, that file imported as jurisdictions, and units). A
benign generated watchlist (random infohashes, categories 1-3, sizes) gives the scores substance.
Every value is random with a fixed seed; no address is ever contacted.

"Rank and route" is what `peerwatch leads` needs before rendering: every target with its score
(computed at read time, since recency depends on the day), sorted, with its jurisdiction and unit,
then grouped per unit. The ingest rate is measured on a separate database: observations appended
through `EvidenceLog` (not timed), then one `refresh()` timed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, insert, text
from sqlalchemy.exc import OperationalError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from databases import postgres_db, sqlite_db, timed
from peerwatch.enrich.geoip import GeoIP
from peerwatch.enrich.jurisdictions import JurisdictionStore
from peerwatch.enrich.netflags import NetFlagStore
from peerwatch.enrich.placement import Enricher
from peerwatch.evidence.keys import load_or_create
from peerwatch.evidence.log import EvidenceLog
from peerwatch.evidence.record import Observation
from peerwatch.lab.geography import shared_boundaries, shared_data_dirs
from peerwatch.lab.geoip import Placed, build_geoip
from peerwatch.leads.targets import TargetStore, insert_observation_rows
from peerwatch.storage.database import writer
from peerwatch.storage.schema import target_links, targets
from peerwatch.watchlist.store import WatchlistStore
from report import DEFAULT_PATH, machine_info, write_section

PG_DEFAULT = os.environ.get(
    "PEERWATCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def boundaries() -> Path:
    """The shared département boundaries, found where the lab finds them (DESIGN.md)."""
    found = shared_boundaries()
    if found is None:
        where = ", ".join(str(d) for d in shared_data_dirs())
        sys.exit(f"fr-departements-with-overseas.geojson not found in {where}")
    return found


SEED = 20261125
DAY = 86_400_000
T0 = 1_760_000_000_000
SPAN_DAYS = 60
AS_OF = T0 + SPAN_DAYS * DAY
ITEMS = 10_000  # watched items
CLIENTS = (
    "qBittorrent/4.6.0",
    "Transmission/4.0.5",
    "Deluge/2.1.1",
    "libtorrent/2.0.11",
    "uTorrent/3.6.0",
    "BiglyBT/3.5.0.0",
    "Tixati/3.25",
    "rtorrent/0.9.8",
)


def content_key(i: int) -> str:
    return f"btih:{(i * 0x9E3779B97F4A7C15 + 0x1234567) % (1 << 160):040x}"


def enrichment(engine: Engine, folder: Path) -> Enricher:
    """The real enricher over generated GeoIP files and the shared département boundaries."""
    import json

    bounds = boundaries()
    codes = [str(f["properties"]["code"]) for f in json.loads(bounds.read_bytes())["features"]]
    placed = [
        Placed(f"127.{n + 1}.0.0/16", code, asn=64496 + n % 16) for n, code in enumerate(codes)
    ]
    geo = build_geoip(folder / "geo", placed, boundaries=bounds)
    store = JurisdictionStore(engine)
    store.import_geojson(bounds, code_property="code", name_property="nom")
    units = folder / "units.csv"
    # One unit per ten départements, by file order.
    lines = ["unit,name,jurisdictions"] + [
        f"U{i // 10:02d},Unit {i // 10},{';'.join(codes[i : i + 10])}"
        for i in range(0, len(codes), 10)
    ]
    units.write_text("\n".join(lines) + "\n")
    store.import_units(units)
    return Enricher(
        geo=GeoIP(geo.city, geo.asn),
        netflags=NetFlagStore(engine).snapshot(),
        jurisdictions=store.snapshot(),
    )


def watchlist(engine: Engine, folder: Path) -> None:
    rng = np.random.default_rng(SEED + 1)
    path = folder / "bench-list.csv"
    cats = rng.integers(1, 4, ITEMS)
    sizes = rng.integers(1 << 20, 8 << 30, ITEMS)
    path.write_text(
        "btih,category,size\n"
        + "".join(f"{content_key(i)[5:]},{cats[i]},{sizes[i]}\n" for i in range(ITEMS))
    )
    WatchlistStore(engine).import_files([path], list_name="bench")


def _ip(target: int, which: int) -> str:
    d, host = target % 101, target // 101 + which * 4_000
    return f"127.{d + 1}.{host // 254}.{host % 254 + 1}"


def generate(engine: Engine, n: int, n_targets: int, say: Callable[[str], None]) -> int:
    """Write n observations of n_targets targets into the target tables; returns links made."""
    rng = np.random.default_rng(SEED)
    tids = np.arange(1, n_targets + 1)
    n_links = 1 + (tids % 3 == 0)  # a third of the targets changed address once
    link_start = np.concatenate(([1], 1 + np.cumsum(n_links)[:-1]))
    total_links = int(n_links.sum())
    # Target sizes are skewed: a few targets carry many observations.
    weights = rng.pareto(1.5, n_targets) + 1
    target = rng.choice(n_targets, size=n, p=weights / weights.sum()) + 1
    which = (rng.random(n) < 0.5) & (n_links[target - 1] == 2)
    link = link_start[target - 1] + which
    item = (target * 31 + rng.integers(0, 3, n) * 977) % ITEMS
    at = T0 + rng.integers(0, SPAN_DAYS * DAY, n)
    roll = rng.random(n)
    kind = np.where(roll < 0.5, 0, np.where(roll < 0.9, 1, 2))  # claim, possession, refused
    ppm = np.where(rng.random(n) < 0.3, 1_000_000, rng.integers(0, 1_000_000, n))

    keys = [content_key(i) for i in range(ITEMS)]
    link_target = np.repeat(tids, n_links)
    link_which = np.arange(total_links) + 1 - link_start[link_target - 1]
    link_ip = [_ip(int(t), int(w)) for t, w in zip(link_target, link_which, strict=True)]
    link_port = 1024 + link_target % 60_000
    link_client = [CLIENTS[int(t) % len(CLIENTS)] for t in link_target]
    link_port_list = link_port.tolist()
    methods = ("dht-get-peers", "bitfield", "connect")
    outcomes = ("claim", "possession", "refused")

    say(f"writing {n:,} observations of {n_targets:,} targets")
    batch = 200_000
    with writer(engine).begin() as conn:
        conn.execute(text("DELETE FROM targets"))  # nothing there; takes the write lock early
        for lo in range(0, n, batch):
            hi = min(n, lo + batch)
            t_, l_, a_, k_, i_, p_ = (
                x[lo:hi].tolist() for x in (target, link, at, kind, item, ppm)
            )
            rows = [
                (
                    "bench",
                    lo + j + 1,
                    t_[j],
                    l_[j],
                    a_[j],
                    "bittorrent",
                    methods[k_[j]],
                    outcomes[k_[j]],
                    keys[i_[j]],
                    link_ip[l_[j] - 1],
                    link_port_list[l_[j] - 1],
                    None if k_[j] != 1 else link_client[l_[j] - 1],
                    p_[j] if k_[j] == 1 else None,
                )
                for j in range(hi - lo)
            ]
            insert_observation_rows(conn, rows)
            say(f"  {hi:,} observations")
    # Links: first and last sighting, count, last positive sighting, from the same arrays.
    first = np.full(total_links + 1, np.iinfo(np.int64).max)
    last = np.zeros(total_links + 1, dtype=np.int64)
    pos_last = np.zeros(total_links + 1, dtype=np.int64)
    np.minimum.at(first, link, at)
    np.maximum.at(last, link, at)
    np.maximum.at(pos_last, link[kind < 2], at[kind < 2])
    count = np.bincount(link, minlength=total_links + 1)
    with writer(engine).begin() as conn:
        conn.execute(
            insert(targets),
            [TargetStore.blank_target(int(t), AS_OF, None) for t in tids],
        )
        link_rows: list[dict[str, Any]] = []
        for lid in range(1, total_links + 1):
            if count[lid] == 0:
                continue
            t, w = int(link_target[lid - 1]), int(link_which[lid - 1])
            link_rows.append(
                {
                    "id": lid,
                    "target_id": t,
                    "kind": "origin" if w == 0 else "address-change",
                    "reason": "generated for the benchmark",
                    "network": "bittorrent",
                    "ip": link_ip[lid - 1],
                    "port": int(link_port[lid - 1]),
                    "client": link_client[lid - 1],
                    "asn": None,
                    "first_ms": int(first[lid]),
                    "last_ms": int(last[lid]),
                    "positive_last_ms": int(pos_last[lid]) if pos_last[lid] else None,
                    "sensor_id": "bench",
                    "seq": 0,
                    "observations": int(count[lid]),
                }
            )
        for lo in range(0, len(link_rows), 50_000):
            conn.execute(insert(target_links), link_rows[lo : lo + 50_000])
        # Targets without any observation (the skew leaves a few) are not targets: drop them.
        conn.execute(
            text(
                "DELETE FROM targets WHERE id NOT IN (SELECT DISTINCT target_id FROM target_links)"
            )
        )
    return len(link_rows)


def rank_and_route(store: TargetStore) -> tuple[int, int]:
    ranked = store.ranked(as_of_ms=AS_OF)
    by_unit: dict[str | None, list[int]] = {}
    for t in ranked:
        by_unit.setdefault(t.unit, []).append(t.id)
    return len(ranked), len(by_unit)


def ingest_rate(factory: Callable[[], AbstractContextManager[Engine]], n: int) -> float:
    """Observations appended through the evidence log (not timed), then one refresh, timed."""
    rng = np.random.default_rng(SEED + 2)
    with factory() as engine, tempfile.TemporaryDirectory() as d:
        enricher = enrichment(engine, Path(d))
        watchlist(engine, Path(d))
        peers = max(1, n // 20)
        obs: list[Observation] = []
        for i in range(n):
            p = int(rng.integers(0, peers))
            moved = p % 3 == 0 and i > n // 2
            ip = _ip(p, 1 if moved else 0)
            at = T0 + i * 50
            if rng.random() < 0.5:
                obs.append(
                    Observation(
                        at,
                        "bittorrent",
                        "dht-get-peers",
                        content_key(p % ITEMS),
                        ip,
                        1024 + p % 60_000,
                        outcome="claim",
                    )
                )
            else:
                obs.append(
                    Observation(
                        at,
                        "bittorrent",
                        "bitfield",
                        content_key(p % ITEMS),
                        ip,
                        1024 + p % 60_000,
                        client=CLIENTS[p % len(CLIENTS)],
                        completion_ppm=1_000_000,
                        outcome="possession",
                    )
                )
        log = EvidenceLog(engine, load_or_create(Path(d) / "keys", "bench"))
        for lo in range(0, n, 5000):
            log.append(obs[lo : lo + 5000])
        store = TargetStore(engine, enricher, WatchlistStore(engine))
        seconds = timed(store.refresh)
        return n / seconds


def bench_backend(
    label: str,
    factory: Callable[[], AbstractContextManager[Engine]],
    n: int,
    n_targets: int,
    say: Callable[[str], None],
) -> str:
    """One table row: generate, build the aggregates, time rank and route."""
    with factory() as engine, tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        enricher = enrichment(engine, folder)
        watchlist(engine, folder)
        gen = timed(lambda: generate(engine, n, n_targets, say))
        store = TargetStore(engine, enricher, WatchlistStore(engine))
        say("building aggregates")
        items = timed(lambda: _rebuild_items(engine))
        summaries = timed(store.rebuild_summaries)
        if engine.dialect.name == "postgresql":
            with engine.connect() as conn:
                conn.execute(text("ANALYZE"))
                conn.commit()
        cold = timed(lambda: rank_and_route(store))
        best = min(timed(lambda: rank_and_route(store)) for _ in range(3))
        routed, units = rank_and_route(store)
        one_unit = min(timed(lambda: store.ranked(unit="U00", as_of_ms=AS_OF)) for _ in range(3))
        top = store.ranked(as_of_ms=AS_OF)[0]
    say(f"{label}: rank+route {best:.2f} s (first run {cold:.2f} s)")
    say(f"  top target {top.label} score {top.score} routed to {top.unit}")
    return (
        f"| {label} | {n:,} | {routed:,} | {units} | **{best:.2f}** | {cold:.2f} | "
        f"{one_unit:.2f} | {gen:.0f} | {items:.0f} | {summaries:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000, help="observations")
    parser.add_argument("--targets", type=int, default=200_000, help="targets they belong to")
    parser.add_argument("--ingest", type=int, default=100_000, help="records for the refresh rate")
    parser.add_argument("--postgres", default=PG_DEFAULT, help="PostgreSQL URL ('' to skip)")
    parser.add_argument("--out", type=Path, default=DEFAULT_PATH)
    args = parser.parse_args()

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    backends: list[tuple[str, Callable[[], AbstractContextManager[Engine]]]] = [
        ("SQLite (WAL)", sqlite_db)
    ]
    if args.postgres:
        try:
            with postgres_db(args.postgres, "bench_leads"):
                pass
            backends.append(("PostgreSQL", lambda: postgres_db(args.postgres, "bench_leads")))
        except OperationalError as exc:
            say(f"PostgreSQL skipped: {str(exc.orig).strip()}")
    rows = [bench_backend(label, factory, args.n, args.targets, say) for label, factory in backends]
    rates: list[str] = []
    for label, factory in backends:
        rate = ingest_rate(factory, args.ingest)
        rates.append(f"| {label} | {args.ingest:,} | {rate:,.0f}/s |")
        say(rates[-1])
    markdown = "\n".join(
        [
            "## Leads: rank and route",
            "",
            f"`python benchmarks/bench_leads.py --n {args.n} --targets {args.targets} "
            f"--ingest {args.ingest}`: {args.n:,} generated observations written straight into "
            "the target tables (how, and why not through the signed log: docs/leads.md, "
            '"Benchmark"), aggregates built by `TargetStore.rebuild_items` and '
            "`rebuild_summaries` with the real enricher (generated GeoIP City + ASN placing "
            "127.N.0.0/16 in the N-th of the 101 départements, the shared boundaries as "
            "jurisdictions, 11 units). *Rank and route*: `TargetStore.ranked()` over every target "
            "(score computed at read time for a fixed as-of day, sorted, with jurisdiction and "
            "unit) then grouped per unit; best of 3 after a first run. Goal from issue 4: at most "
            "5 s on SQLite.",
            "",
            machine_info(),
            "",
            "| database | observations | targets | units (+ unrouted) | rank + route, s | first "
            "run, s | one unit, s | generate, s | rebuild items, s | rebuild summaries, s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            "Refresh (ingest) rate: evidence records appended through `EvidenceLog` (not timed), "
            "then one `TargetStore.refresh()` timed: read the records, parse their JSON, apply the "
            "identity rules, write the assignments, links and per-item facts, recompute the "
            "touched targets' summaries with placement, 20,000 records per transaction.",
            "",
            "| database | records | refresh rate |",
            "|---|---:|---:|",
            *rates,
        ]
    )
    write_section("leads", markdown, args.out)
    print(f"wrote section 'leads' of {args.out}")


def _rebuild_items(engine: Engine) -> None:
    with writer(engine).begin() as conn:
        TargetStore.rebuild_items(conn)


if __name__ == "__main__":
    main()
