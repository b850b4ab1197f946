"""PEX alone (BEP 11): from one leecher's address, the sensor finds and proves the watched-v1 swarm.

A lab of its own on 127.0.9.x (beside the session lab): 10 role-cycled peers and 2 leechers. The
upload-only peers never connect to each other, so their PEX lists are empty until someone connects
to them; the leechers do connect (to the holders found at the tracker), so the PEX graph of
watched-v1 is every holder that is connected to a leecher. The sweep uses neither the DHT nor the
trackers: every address it probes was learned through ut_pex messages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peerwatch.evidence import record
from peerwatch.evidence.keys import load_or_create
from peerwatch.evidence.log import EvidenceLog, iter_records, sensor_keys
from peerwatch.evidence.verify import ChainReport, verify_stored
from peerwatch.lab.swarm import Lab
from peerwatch.sensors.bittorrent import BitTorrentSweep, SweepConfig
from peerwatch.storage.database import make_engine, migrate, sqlite_url
from peerwatch.transport.egress import EgressPolicy
from peerwatch.transport.peer_probe import ProbeConfig
from peerwatch.transport.pex import collect_pex
from peerwatch.watchlist.store import WatchlistStore
from tests.interop.conftest import require_lab_tools

NET = "127.0.9."
BIND = "127.0.9.200"


@pytest.fixture(scope="module")
def pex_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_lab_tools()
    swarm = Lab(Path(tmp_path_factory.mktemp("pexlab")), peers=20, leechers=2, peer_net=NET)
    swarm.start()
    try:
        leechers = [p.index for p in swarm.members if p.leecher]

        # Each leecher connects to every other holder of watched-v1 (seeds, partial peers, the
        # other leecher); PEX names connected peers only, so wait for the whole graph.
        others = sum(1 for p in swarm.members if "watched-v1" in p.holds) - 1

        def connected(status: list[dict[str, Any]]) -> bool:
            return all(
                status[i].get("torrents") and status[i]["torrents"][0]["peers"] >= others
                for i in leechers
            )

        assert swarm.wait_until(connected, 120), [swarm.status()[i] for i in leechers]
        yield swarm
    finally:
        swarm.stop()


def test_collect_pex_from_a_leecher(pex_lab: Lab) -> None:
    leecher = next(p for p in pex_lab.members if p.leecher)
    t = pex_lab.torrents["watched-v1"]
    assert t.btih is not None
    config = ProbeConfig(peer_id=b"-PW0001-pexcollect00", bind_ip=BIND)
    result = asyncio.run(
        collect_pex(leecher.ip, leecher.port, bytes.fromhex(t.btih), config, wait=75)
    )
    assert result.outcome == "pex", result
    assert result.client is not None and "libtorrent" in result.client
    assert result.first_after is not None and result.first_after < 75
    holders = {(p.ip, p.port) for p in pex_lab.members if "watched-v1" in p.holds}
    assert result.added and set(result.added) <= holders, result
    assert len(result.exchange_sha256) == 64


@pytest.mark.slow
def test_sweep_proves_the_swarm_via_pex_alone(pex_lab: Lab, tmp_path: Path) -> None:
    engine = make_engine(sqlite_url(tmp_path / "s.db"))
    migrate(engine)
    store = WatchlistStore(engine)
    store.import_files([t.path for t in pex_lab.torrents.values() if t.watched], list_name="lab")
    torrents = store.watched_torrents()
    v1 = pex_lab.torrents["watched-v1"]
    key_v1 = f"btih:{v1.btih}"
    holders = {(p.ip, p.port) for p in pex_lab.members if "watched-v1" in p.holds}
    start = next(p for p in pex_lab.members if p.leecher)
    config = SweepConfig(
        probe=ProbeConfig(peer_id=b"-PW0001-pexsweep0000", bind_ip=BIND),
        bind_ip=BIND,
        use_dht=False,
        use_trackers=False,
        use_pex=True,
        pex_peers=((start.ip, start.port),),
        pex_wait=20.0,
        pex_rounds=2,
    )
    key = load_or_create(tmp_path / "keys", "sweep-pex")
    log = EvidenceLog(engine, key)
    egress = EgressPolicy()

    async def run() -> set[tuple[str, int]]:
        async with BitTorrentSweep(config, log, egress) as sweep:
            # Leechers reach the encryption-only seeds a few seconds after the others: sweep
            # again (as a sensor would) until the whole swarm has been proven.
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                stats = await sweep.sweep(torrents)
                if holders <= stats.per_torrent.get(key_v1, set()):
                    break
                await asyncio.sleep(2)
            return stats.per_torrent.get(key_v1, set())

    proven = asyncio.run(run())
    assert egress.denied == 0

    expected = pex_lab.expected()
    by_key = {
        f"btih:{t.btih}" if t.btih else f"btmh:{t.btmh}": n for n, t in pex_lab.torrents.items()
    }
    pex_claimed: set[tuple[str, int]] = set()
    methods = set()
    for row in iter_records(engine):
        obs = record.decode(row.record).observation
        methods.add(obs.method)
        assert obs.method not in {"dht-get-peers", "tracker-announce"}, obs
        if obs.outcome == "claim":
            assert obs.method == "pex" and obs.extra["source"], obs
            assert len(str(obs.extra["exchange_sha256"])) == 64
            if obs.content_key == key_v1:
                assert obs.ip is not None and obs.port is not None
                pex_claimed.add((obs.ip, obs.port))
        elif obs.outcome == "possession":
            assert (obs.ip, by_key[obs.content_key]) in expected, obs
    # Every peer the PEX graph contains is proven, and (given time) that is every holder.
    assert pex_claimed <= holders
    assert pex_claimed <= proven
    assert proven == holders
    assert "pex" in methods and "have-all" in methods and "bitfield" in methods
    items = list(
        verify_stored(
            iter_records(engine), {key.sensor_id: key.private.public_key()}, sensor_keys(engine)
        )
    )
    assert [x for x in items if not isinstance(x, ChainReport)] == []
