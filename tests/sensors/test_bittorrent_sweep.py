"""The BitTorrent sweep against scripted services on loopback (127.0.12.x): a DHT node that
claims a peer, a DHT node that answers only once that peer has been contacted, and a fake seeder.

The second node makes the order causal rather than timed: its get_peers answer (without which the
lookup cannot end, its query timeout being far away) is released by the seeder's first
connection, so the sweep can only finish if it probed the claimed peer while the lookup still ran.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import Engine

from peerwatch.domain.torrents import WatchedTorrent
from peerwatch.evidence import record
from peerwatch.evidence.keys import load_or_create
from peerwatch.evidence.log import EvidenceLog, iter_records
from peerwatch.protocols.bittorrent.bencode import bencode
from peerwatch.protocols.bittorrent.dht import DhtConfig
from peerwatch.protocols.bittorrent.krpc import Peer
from peerwatch.protocols.bittorrent.peer_wire import HANDSHAKE_LEN, PSTR
from peerwatch.sensors.bittorrent import BitTorrentSweep, SweepConfig
from peerwatch.transport.egress import EgressPolicy
from peerwatch.transport.peer_probe import ProbeConfig
from tests.transport.fake_dht import FakeDhtNode

HOST = "127.0.12.221"  # the scripted DHT nodes and the seeder
SENSOR = "127.0.12.222"
INFO_HASH = bytes(range(100, 120))
PIECES = 8
NEVER = 600.0  # a query timeout the test never reaches


class FakeSeeder:
    """Answers a BitTorrent handshake with its own (BEP 10 bit set), an extension handshake and
    a full bitfield; `contacted` is set on the first connection."""

    def __init__(self) -> None:
        self.contacted = asyncio.Event()
        self.connections = 0
        self.addr: Peer = ("", 0)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.addr = self._server.sockets[0].getsockname()[:2]

    def close(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.contacted.set()
        try:
            hs = await reader.readexactly(HANDSHAKE_LEN)
            reserved = bytes([0, 0, 0, 0, 0, 0x10, 0, 0])  # BEP 10
            ext = bencode({b"m": {}, b"v": b"fakeseeder/1.0"})
            bitfield = b"\xff" * (PIECES // 8)
            writer.write(
                bytes([len(PSTR)])
                + PSTR
                + reserved
                + hs[28:48]
                + b"-FS0100-000000000000"
                + (len(ext) + 2).to_bytes(4, "big")
                + b"\x14\x00"
                + ext
                + (len(bitfield) + 1).to_bytes(4, "big")
                + b"\x05"
                + bitfield
            )
            await writer.drain()
            while await reader.read(65536):
                pass
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def test_claimed_peers_are_probed_while_the_lookup_runs(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    torrent = WatchedTorrent(INFO_HASH, f"btih:{INFO_HASH.hex()}", piece_count=PIECES)
    log = EvidenceLog(sqlite_engine, load_or_create(tmp_path / "keys", "sweep-unit"))

    async def run() -> tuple[BitTorrentSweep, FakeDhtNode, FakeDhtNode, FakeSeeder]:
        seeder = FakeSeeder()
        await seeder.start()
        talker = await FakeDhtNode.start(HOST, b"a" * 20, values=(seeder.addr,))
        # The late node names the same peer: two claims, one probe.
        late = await FakeDhtNode.start(
            HOST, b"b" * 20, values=(seeder.addr,), hold=seeder.contacted
        )
        config = SweepConfig(
            probe=ProbeConfig(peer_id=b"-PW0001-sweepunit000", bind_ip=SENSOR),
            bind_ip=SENSOR,
            dht_port=0,
            dht_nodes=(talker.addr, late.addr),
            use_trackers=False,
            dht_timeout=NEVER,
            dht=DhtConfig(query_timeout=NEVER),
        )
        try:
            async with BitTorrentSweep(config, log, EgressPolicy()) as sweep:
                async with asyncio.timeout(60):  # a guard against a hang, not a speed check
                    await sweep.sweep([torrent])
        finally:
            talker.close()
            late.close()
            seeder.close()
        return sweep, talker, late, seeder

    sweep, talker, late, seeder = asyncio.run(run())
    stats = sweep.stats
    assert (stats.claims, stats.candidates, stats.proven, stats.observations) == (2, 1, 1, 3)
    assert stats.per_torrent == {torrent.content_key: {seeder.addr}}
    assert seeder.connections == 1 and late.get_peers_received == 1

    observations = [record.decode(r.record).observation for r in iter_records(sqlite_engine)]
    # The log keeps its order: the torrent's claims, then its probe.
    assert [(o.method, o.outcome) for o in observations] == [
        ("dht-get-peers", "claim"),
        ("dht-get-peers", "claim"),
        ("bitfield", "possession"),
    ]
    claims, proof = observations[:2], observations[2]
    assert {o.extra["source"] for o in claims} == {
        f"{ip}:{port}" for ip, port in (talker.addr, late.addr)
    }
    assert all((o.ip, o.port) == seeder.addr for o in observations)
    assert proof.completion_ppm == 1_000_000 and proof.client == "fakeseeder/1.0"
    # Each claim is timed when it reached the sensor: the first one before the probe began,
    # the late one (released by the probe's connection) after.
    first, second = sorted(o.observed_ms for o in claims)
    assert first <= proof.observed_ms <= second


def test_only_our_own_announced_endpoint_is_skipped(sqlite_engine: Engine, tmp_path: Path) -> None:
    """A peer may share the sensor's address (every IPv6 lab peer is on ::1): only the endpoint
    the sensor announces is its own."""
    log = EvidenceLog(sqlite_engine, load_or_create(tmp_path / "keys", "sweep-self"))
    config = SweepConfig(
        ProbeConfig(peer_id=b"-PW0001-sweepself000"), bind_ip="::1", listen_port=6881
    )
    sweep = BitTorrentSweep(config, log, EgressPolicy())
    assert not sweep._is_candidate(("::1", 6881))
    assert sweep._is_candidate(("::1", 6882))
    assert sweep._is_candidate(("127.0.12.9", 6881))
    assert not sweep._is_candidate(("127.0.12.9", 0))
