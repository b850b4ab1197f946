"""Hostile peers, a lying DHT node and broken trackers: the sensor records them and keeps going.

Issue 3 acceptance: an oversized length prefix, a bencode bomb, an endless slow drip, garbage
after the handshake, a silent peer and ghost peers from a DHT node each become a recorded outcome
(protocol-error, timeout, unreachable, refused), never an exception, never possession; one sweep
over all of them and a real lab seed still proves the seed; memory stays bounded (tracemalloc
peak, and the peer wire buffer under its one-message cap).

Every server here is `peerwatch.lab.hostile` on 127.0.5.x; the ghosts it names are on 127.0.6.x,
where nothing listens. Short timeouts keep the suite fast.
"""

from __future__ import annotations

import asyncio
import socket
import time
import tracemalloc
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from peerwatch.domain.torrents import WatchedTorrent
from peerwatch.evidence import record
from peerwatch.evidence.keys import load_or_create
from peerwatch.evidence.log import EvidenceLog, iter_records, sensor_keys
from peerwatch.evidence.record import Observation
from peerwatch.evidence.verify import ChainReport, verify_stored
from peerwatch.lab.hostile import GHOST_NET, HOSTILE_NET, PEER_KINDS, HostileConfig, HostileLab
from peerwatch.lab.swarm import Lab
from peerwatch.protocols.bittorrent import peer_wire
from peerwatch.protocols.bittorrent.tracker_http import AnnounceEvent, AnnounceRequest
from peerwatch.sensors import bittorrent as sensor
from peerwatch.sensors.bittorrent import BitTorrentSweep, SweepConfig
from peerwatch.sensors.probe_evidence import probe_observation
from peerwatch.storage.database import make_engine, migrate, sqlite_url
from peerwatch.transport.dht_driver import DhtDriver
from peerwatch.transport.egress import EgressPolicy
from peerwatch.transport.peer_probe import ProbeConfig, ProbeResult, probe
from peerwatch.transport.tracker_client import announce

T = TypeVar("T")

PROBE_TIMEOUT = 1.5
MEMORY_LIMIT = 50 * 1024 * 1024
INFO_HASH = bytes(range(20))
PEER_ID = b"-PW0001-hostile00000"

#: What each hostile peer must come out as. `reset` and `flood` accept the handshake and then
#: hang up or drown us in unknown messages without announcing a piece: "no-pieces".
EXPECTED = {
    "oversized": {"protocol-error"},
    "bomb": {"protocol-error"},
    "bomb_string": {"protocol-error"},
    "drip": {"timeout"},
    "garbage": {"protocol-error"},
    "silent": {"timeout"},
    "reset": {"no-pieces", "refused"},
    "flood": {"no-pieces"},
}
NEGATIVE = {"protocol-error", "timeout", "unreachable", "refused", "no-pieces"}


def _config(bind: str, **kw: Any) -> ProbeConfig:
    return ProbeConfig(
        peer_id=PEER_ID, bind_ip=bind, timeout=PROBE_TIMEOUT, connect_timeout=1.0, **kw
    )


def _measured(run: Callable[[], Coroutine[Any, Any, T]]) -> tuple[T, int]:
    """Run `run()` in a fresh event loop under tracemalloc; returns its result and the peak."""
    tracemalloc.start()
    try:
        result = asyncio.run(run())
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak


@pytest.fixture
def buffer_peak(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """The largest peer wire receive buffer seen after (`held`) and during (`fed`) a receive."""
    seen = {"held": 0, "fed": 0}
    original = peer_wire.PeerConnection.receive

    def receive(self: peer_wire.PeerConnection, data: bytes, now: float) -> list[Any]:
        # `_buf` is private; reading its length here is the only way to see the bound hold.
        seen["fed"] = max(seen["fed"], len(self._buf) + len(data))
        try:
            return original(self, data, now)
        finally:
            seen["held"] = max(seen["held"], len(self._buf))

    monkeypatch.setattr(peer_wire.PeerConnection, "receive", receive)
    yield seen


def test_each_hostile_peer_is_a_recorded_outcome(buffer_peak: dict[str, int]) -> None:
    config = _config("127.0.3.50")

    async def run() -> dict[str, tuple[ProbeResult, float]]:
        async with HostileLab() as hostile:

            async def one(kind: str) -> tuple[str, tuple[ProbeResult, float]]:
                ip, port = hostile.peers[kind]
                t0 = time.monotonic()
                result = await probe(ip, port, INFO_HASH, config, piece_count=40)
                return kind, (result, time.monotonic() - t0)

            results = dict(await asyncio.gather(*(one(k) for k in PEER_KINDS)))
            assert hostile.stats.connections.get("drip") == 1  # plain only: no MSE retry
            return results

    results, peak = _measured(run)
    for kind, (r, took) in results.items():
        assert r.outcome in EXPECTED[kind], (kind, r)
        # Bounded time: one attempt's timeout, plus at most the close.
        assert took < PROBE_TIMEOUT + 1.5, (kind, took)
        obs = probe_observation(r, content_key="btih:" + INFO_HASH.hex())
        assert obs.outcome != "possession" and obs.completion_ppm in (None, 0), obs
    assert "message length 4294967280" in results["oversized"][0].detail
    assert "extension handshake" in results["bomb"][0].detail
    assert results["drip"][0].detail.endswith(f"no complete answer within {PROBE_TIMEOUT:g} s")
    # The handshake seen before the peer broke is kept: its peer id is on the record.
    assert results["flood"][0].peer_id is not None
    assert results["reset"][0].outcome != "possession"
    # Memory: the receive buffer never holds more than one largest message (with its prefix),
    # and while being fed at most that plus one socket read.
    assert buffer_peak["held"] <= peer_wire.MAX_MESSAGE_LEN + 4, buffer_peak
    assert buffer_peak["fed"] <= peer_wire.MAX_MESSAGE_LEN + 4 + 64 * 1024, buffer_peak
    assert peak < MEMORY_LIMIT, peak


def test_hostile_trackers_give_errors_in_bounded_time_and_memory() -> None:
    req = AnnounceRequest(
        info_hash=INFO_HASH, peer_id=PEER_ID, port=6881, left=1, event=AnnounceEvent.STARTED
    )
    egress = EgressPolicy()

    async def run() -> dict[str, tuple[str | None, float, int]]:
        async with HostileLab() as hostile:

            async def one(url: str) -> tuple[str, tuple[str | None, float, int]]:
                t0 = time.monotonic()
                answer = await announce(
                    url, req, egress, timeout=1.5, bind_ip="127.0.3.51", udp_retransmit=0.3
                )
                return url, (answer.error, time.monotonic() - t0, len(answer.peers))

            urls = [*hostile.http_urls.values(), hostile.udp_url, "udp://127.0.5.99:99999/a"]
            out = dict(await asyncio.gather(*(one(u) for u in urls)))
            assert hostile.stats.udp_tracker_datagrams >= 2  # it was asked, and retried
            assert hostile.stats.udp_flood_datagrams > 1000  # and it flooded us meanwhile

            # Cancelled mid-flood (a sweep being stopped), an announce ends at once.
            pending = asyncio.ensure_future(
                announce(hostile.udp_url, req, egress, timeout=60, bind_ip="127.0.3.51")
            )
            await asyncio.sleep(0.5)
            pending.cancel()
            done, _ = await asyncio.wait({pending}, timeout=1.0)
            assert done and pending.cancelled()
            return {k.split("/")[3] if k.startswith("http") else k: v for k, v in out.items()}

    results, peak = _measured(run)
    for name, (error, took, peers) in results.items():
        assert error is not None and peers == 0, (name, error)
        assert took < 2.5, (name, took)
    assert "body is larger than" in (results["endless"][0] or "")
    assert "Content-Length 1000000000000" in (results["huge"][0] or "")
    assert "no answer within" in (results["drip"][0] or "")
    udp = [v for k, v in results.items() if k.startswith("udp://127.0.5.") and "99999" not in k]
    assert udp and "no answer within" in (udp[0][0] or "")
    assert "unusable tracker URL" in (results["udp://127.0.5.99:99999/a"][0] or "")
    assert peak < MEMORY_LIMIT, peak


def test_lying_dht_node_is_survived_and_attributed() -> None:
    egress = EgressPolicy()

    async def run() -> None:
        async with HostileLab() as hostile:
            driver = DhtDriver(("127.0.3.52", 0), egress)
            await driver.start()
            try:
                assert await driver.bootstrap([hostile.dht], timeout=3.0) == 1
                await driver.bootstrap([hostile.dht], timeout=3.0)  # a second find_node answer
                result = await driver.get_peers(INFO_HASH, timeout=5.0)
                assert result.done is not None
                # Every claim names the hostile node that made it.
                assert {(f.from_node.ip, f.from_node.port) for f in result.found} == {hostile.dht}
                assert set(hostile.ghosts_named) <= result.peers
                assert len(hostile.ghosts_named) >= 150
                await asyncio.sleep(0.2)  # the late duplicate may still be on its way
                stats = driver.node.stats
                # The oversized reply, the malformed values entry, the junk and the truncated
                # reply were each counted and dropped; the duplicate was unexpected.
                assert stats.malformed >= 2 + hostile.config.junk_datagrams + 1, stats
                assert stats.unexpected_responses >= 1, stats
                # find_node answers named the same addresses under new ids each time.
                ids = hostile.stats.find_node_ids
                assert len(ids) >= 2 and not set(ids[0]) & set(ids[1])

                # A flood of junk at our node, then a node fault on one datagram: counted, and
                # the node still answers lookups afterwards.
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sock.bind(("127.0.5.200", 0))
                port = driver._transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
                before = driver.node.stats.malformed
                for i in range(5000):
                    sock.sendto(b"d1:y1:q" + bytes([i % 256]) * (i % 1400), ("127.0.3.52", port))
                    await asyncio.sleep(0)  # let the node read (beyond, the kernel drops them)
                await asyncio.sleep(0.2)
                flooded = driver.node.stats.malformed - before
                assert flooded > 4000, flooded
                original = driver.node.receive
                calls = {"n": 0}

                def faulty(data: bytes, addr: tuple[str, int], now: float) -> list[Any]:
                    calls["n"] += 1
                    if calls["n"] == 1:
                        raise RuntimeError("simulated node bug")
                    return original(data, addr, now)

                driver.node.receive = faulty  # type: ignore[method-assign]
                sock.sendto(b"x", ("127.0.3.52", port))
                sock.close()
                await asyncio.sleep(0.5)
                assert driver.errors == 1 and driver.last_error is not None
                again = await driver.get_peers(bytes(range(1, 21)), timeout=5.0)
                assert again.done is not None and len(again.peers) > 100
            finally:
                driver.close()

    _none, peak = _measured(run)
    assert peak < MEMORY_LIMIT, peak


def _log(tmp_path: Path, name: str) -> tuple[Any, EvidenceLog, Any]:
    engine = make_engine(sqlite_url(tmp_path / f"{name}.db"))
    migrate(engine)
    key = load_or_create(tmp_path / "keys", name)
    return engine, EvidenceLog(engine, key), key


def _observations(engine: Any) -> list[Observation]:
    return [record.decode(row.record).observation for row in iter_records(engine)]


def test_one_sweep_over_hostile_claims_still_proves_the_real_seed(lab: Lab, tmp_path: Path) -> None:
    t = lab.torrents["watched-v1"]
    assert t.btih is not None
    seed = next(p for p in lab.members if p.holds.get(t.name) == "seed")
    torrent = WatchedTorrent.from_hashes(
        bytes.fromhex(t.btih),
        None,
        name=t.name,
        piece_count=t.pieces,
        # The torrent's own tracker list is hostile input too: an unusable URL is an error.
        trackers=("udp://127.0.5.99:99999/announce",),
    )
    engine, log, key = _log(tmp_path, "hostile-sweep")
    egress = EgressPolicy()
    bind = "127.0.3.53"

    async def run() -> tuple[sensor.SweepStats, HostileLab, float]:
        async with HostileLab(HostileConfig(extra_peers=((seed.ip, seed.port),))) as hostile:
            config = SweepConfig(
                probe=_config(bind),
                bind_ip=bind,
                dht_port=0,
                dht_nodes=(hostile.dht,),
                trackers=(*hostile.http_urls.values(), hostile.udp_url),
                dht_timeout=5.0,
                tracker_timeout=1.5,
            )
            t0 = time.monotonic()
            async with BitTorrentSweep(config, log, egress) as sweep:
                stats = await sweep.sweep([torrent])
            return stats, hostile, time.monotonic() - t0

    (stats, hostile, took), peak = _measured(run)
    key_name = torrent.content_key
    assert stats.per_torrent == {key_name: {(seed.ip, seed.port)}}
    assert stats.proven == 1 and stats.probe_errors == 0
    assert egress.denied == 0
    # Every hostile tracker and the unusable URL are noted; none gave a claim.
    assert set(stats.source_errors) == {
        *hostile.http_urls.values(),
        hostile.udp_url,
        "udp://127.0.5.99:99999/announce",
    }

    obs = _observations(engine)
    dht_source = f"{hostile.dht[0]}:{hostile.dht[1]}"
    claims = [o for o in obs if o.outcome == "claim"]
    probes = {(o.ip, o.port): o for o in obs if o.outcome != "claim"}
    assert all(o.method == "dht-get-peers" and o.extra["source"] == dht_source for o in claims)
    assert all(o.extra["source_node_id"] == hostile.dht_node_id.hex() for o in claims)
    claimed = {(o.ip, o.port) for o in claims}
    ghosts = set(hostile.ghosts_named)
    assert ghosts <= claimed and len(ghosts) >= 150
    assert set(hostile.peers.values()) <= claimed and (seed.ip, seed.port) in claimed
    # Every claim was probed and recorded once; possession only for the real seed.
    assert set(probes) == claimed
    assert [a for a, o in probes.items() if o.outcome == "possession"] == [(seed.ip, seed.port)]
    assert probes[seed.ip, seed.port].completion_ppm == 1_000_000
    for kind, addr in hostile.peers.items():
        assert probes[addr].outcome in EXPECTED[kind], (kind, probes[addr])
    for addr in ghosts:
        assert addr[0].startswith(GHOST_NET)
        assert probes[addr].outcome in ("unreachable", "refused"), probes[addr]
        assert probes[addr].peer_id is None
    assert all(o.outcome in NEGATIVE for a, o in probes.items() if a != (seed.ip, seed.port))
    assert all(ip.startswith((HOSTILE_NET, GHOST_NET, "127.0.2.")) for ip, _ in probes)

    items = list(
        verify_stored(
            iter_records(engine), {key.sensor_id: key.private.public_key()}, sensor_keys(engine)
        )
    )
    assert [x for x in items if not isinstance(x, ChainReport)] == []
    assert peak < MEMORY_LIMIT, peak
    assert took < 20, took


def test_a_probe_that_raises_is_recorded_and_the_sweep_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine, log, _key = _log(tmp_path, "probe-bug")
    torrent = WatchedTorrent.from_hashes(INFO_HASH, None, piece_count=40)
    bind = "127.0.3.54"
    broken: set[tuple[str, int]] = set()
    real_probe = probe

    async def probe_with_a_bug(ip: str, port: int, *args: Any, **kw: Any) -> ProbeResult:
        if (ip, port) in broken:
            raise RuntimeError("simulated sensor bug")
        return await real_probe(ip, port, *args, **kw)

    monkeypatch.setattr("peerwatch.sensors.bittorrent.probe", probe_with_a_bug)

    async def run() -> tuple[sensor.SweepStats, HostileLab]:
        async with HostileLab() as hostile:
            broken.add(hostile.peers["garbage"])
            config = SweepConfig(
                probe=_config(bind),
                bind_ip=bind,
                dht_port=0,
                dht_nodes=(hostile.dht,),
                use_trackers=False,
                dht_timeout=5.0,
            )
            async with BitTorrentSweep(config, log, EgressPolicy()) as sweep:
                stats = await sweep.sweep([torrent])
            return stats, hostile

    stats, hostile = asyncio.run(run())
    assert stats.probe_errors == 1 and stats.proven == 0
    probes = {(o.ip, o.port): o for o in _observations(engine) if o.outcome != "claim"}
    bug = probes[hostile.peers["garbage"]]
    assert bug.outcome == "sensor-error" and "simulated sensor bug" in str(bug.extra["detail"])
    # The other probes of the same sweep were made and recorded.
    assert probes[hostile.peers["oversized"]].outcome == "protocol-error"
    assert probes[hostile.peers["silent"]].outcome == "timeout"
    assert len(probes) == stats.candidates
