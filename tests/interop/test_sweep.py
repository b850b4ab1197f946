"""The BitTorrent sensor against the lab's 20 real peers: DHT alone, then trackers alone.

Each run must prove every peer that holds a watched torrent (with its client name and completion)
and record no possession for anyone else.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from peerwatch.domain.torrents import WatchedTorrent
from peerwatch.evidence import record
from peerwatch.evidence.keys import load_or_create
from peerwatch.evidence.log import EvidenceLog, iter_records, sensor_keys
from peerwatch.evidence.verify import ChainReport, verify_stored
from peerwatch.lab.swarm import Lab
from peerwatch.sensors.bittorrent import BitTorrentSweep, SweepConfig
from peerwatch.storage.database import make_engine, migrate, sqlite_url
from peerwatch.transport.egress import EgressPolicy
from peerwatch.transport.peer_probe import ProbeConfig
from peerwatch.watchlist.store import WatchlistStore


def _watched(lab: Lab, engine: Engine) -> list[WatchedTorrent]:
    store = WatchlistStore(engine)
    paths = [t.path for t in lab.torrents.values() if t.watched]
    store.import_files(paths, list_name="lab")
    return store.watched_torrents()


def _holders(lab: Lab) -> dict[str, set[tuple[str, int]]]:
    out: dict[str, set[tuple[str, int]]] = {}
    ports = {p.ip: p.port for p in lab.members}
    for (ip, name), _how in lab.expected().items():
        t = lab.torrents[name]
        if t.watched:
            key = f"btih:{t.btih}" if t.btih else f"btmh:{t.btmh}"
            out.setdefault(key, set()).add((ip, ports[ip]))
    return out


@pytest.mark.parametrize("source", ["dht", "tracker"])
def test_sweep_proves_every_holder(lab: Lab, tmp_path: Path, source: str) -> None:
    engine = make_engine(sqlite_url(tmp_path / "s.db"))
    migrate(engine)
    torrents = _watched(lab, engine)
    assert len(torrents) == 3
    holders = _holders(lab)
    bind = {"dht": "127.0.3.10", "tracker": "127.0.3.11"}[source]
    config = SweepConfig(
        probe=ProbeConfig(peer_id=b"-PW0001-" + source.encode().ljust(12, b"0"), bind_ip=bind),
        bind_ip=bind,
        dht_nodes=tuple((p.ip, p.port) for p in lab.members[:3]) if source == "dht" else (),
        use_dht=source == "dht",
        use_trackers=source == "tracker",
    )
    key = load_or_create(tmp_path / "keys", f"sweep-{source}")
    log = EvidenceLog(engine, key)
    egress = EgressPolicy()

    async def run() -> dict[str, set[tuple[str, int]]]:
        async with BitTorrentSweep(config, log, egress) as sweep:
            # Peers announce to the DHT and trackers as they start: sweep again until every
            # holder has been proven, as a sensor's repeated sweeps would.
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                stats = await sweep.sweep(torrents)
                if all(holders[k] <= stats.per_torrent.get(k, set()) for k in holders):
                    break
                await asyncio.sleep(2)
            return stats.per_torrent

    proven = asyncio.run(run())
    assert {k: proven.get(k, set()) for k in holders} == holders
    assert egress.denied == 0

    # The log: possession only for holders, with client and completion; claims name a source.
    expected = lab.expected()
    by_name = {
        (f"btih:{t.btih}" if t.btih else f"btmh:{t.btmh}"): name for name, t in lab.torrents.items()
    }
    rows = list(iter_records(engine))
    methods = set()
    for row in rows:
        obs = record.decode(row.record).observation
        methods.add(obs.method)
        how = expected.get((obs.ip, by_name[obs.content_key]))
        if obs.outcome == "possession":
            assert how is not None, obs
            assert obs.client is not None and "libtorrent" in obs.client
            if how == "seed":
                assert obs.completion_ppm == 1_000_000, obs
            else:
                assert obs.completion_ppm is not None and 0 < obs.completion_ppm < 1_000_000
        elif obs.outcome == "claim":
            assert obs.extra["source"], obs
    claim_method = {"dht": "dht-get-peers", "tracker": "tracker-announce"}[source]
    assert claim_method in methods and "have-all" in methods and "bitfield" in methods
    items = list(
        verify_stored(
            iter_records(engine), {key.sensor_id: key.private.public_key()}, sensor_keys(engine)
        )
    )
    assert [x for x in items if not isinstance(x, ChainReport)] == []
