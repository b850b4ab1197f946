"""`sense ed2k --kad-node`: Kad source searches feed the eD2k sensor (issue 7).

A simulated Kad network (`lab.kad`, 20 nodes on 127.0.24.x: real aMule never forms Kad on
loopback) stores three sources of one benign file: the in-process control peer of
`lab.hostile_ed2k` (127.0.25.x), which shares it; an address where nothing listens; and a
firewalled (buddy) source. One sweep from Kad alone must record the three as `kad-sources` claims
(never possession), prove the control with the user hash its HELLO gives, record the dead address
as a failed probe, never dial the firewalled one, and leave a chain that verifies.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from peerwatch.cli.main import run
from peerwatch.evidence import record
from peerwatch.evidence.keys import load_or_create
from peerwatch.evidence.log import EvidenceLog, iter_records, sensor_keys
from peerwatch.evidence.record import CLAIM_METHODS, Observation
from peerwatch.evidence.verify import ChainReport, verify_stored
from peerwatch.lab.hostile_ed2k import CONTROL, ControlFile, HostileEd2kConfig, HostileEd2kLab
from peerwatch.lab.kad import SimKadNetwork
from peerwatch.protocols.ed2k.client import ClientIdentity
from peerwatch.sensors.ed2k import Ed2kFile, Ed2kSweep, Ed2kSweepConfig, Ed2kSweepStats
from peerwatch.storage.database import make_engine, migrate, sqlite_url
from peerwatch.transport.ed2k_probe import Ed2kProbeConfig
from peerwatch.transport.egress import EgressPolicy

KAD_NET = "127.0.24."
PEER_NET = "127.0.25."
SENSOR_IP = "127.0.24.250"
FILE_HASH = bytes.fromhex("5a5a0123456789abcdef0123456789ab")
FILE_SIZE = 1_234_567
DEAD = ("127.0.25.99", 4662)  # nothing listens there
FIREWALLED = ("127.0.25.98", 4662)
OURS = bytes.fromhex("11223344556600778899aabbccddee11")
DEAD_HASH = bytes(range(16))
FIREWALLED_HASH = bytes(range(16, 32))


async def _sweep(tmp_path: Path) -> tuple[Ed2kSweepStats, Any, dict[str, bytes], tuple[str, int]]:
    engine = make_engine(sqlite_url(tmp_path / "kad.db"))
    migrate(engine)
    log = EvidenceLog(engine, load_or_create(tmp_path / "keys", "kad-test"))
    config = HostileEd2kConfig(
        net=PEER_NET,
        kinds=(CONTROL,),
        control_files=(ControlFile(FILE_HASH, FILE_SIZE, "benign.bin"),),
    )
    async with HostileEd2kLab(config) as peers, SimKadNetwork(nodes=20, net=KAD_NET) as kad:
        control = peers.peers[CONTROL]
        user_hash = peers.user_hashes[CONTROL]
        stored = [
            await kad.publish_source(
                FILE_HASH, ip=control[0], tcp_port=control[1], udp_port=4672, user_hash=user_hash
            ),
            await kad.publish_source(
                FILE_HASH, ip=DEAD[0], tcp_port=DEAD[1], udp_port=4672, user_hash=DEAD_HASH
            ),
            await kad.publish_source(
                FILE_HASH,
                ip=FIREWALLED[0],
                tcp_port=FIREWALLED[1],
                udp_port=4672,
                user_hash=FIREWALLED_HASH,
                source_type=3,  # firewalled, reachable through a buddy only
            ),
        ]
        assert min(stored) > 0  # each stored by at least one node
        sweep = Ed2kSweep(
            Ed2kSweepConfig(
                Ed2kProbeConfig(
                    ClientIdentity(OURS, supports_crypt=True),
                    connect_timeout=1.0,
                    timeout=3.0,
                    bind_ip=SENSOR_IP,
                )
            ),
            log,
            EgressPolicy(),
        )
        stats = await sweep.sweep([], [Ed2kFile(FILE_HASH, FILE_SIZE)], (), kad.bootstrap(2))
    return stats, engine, {"control": user_hash}, control


def _observations(engine: Any) -> list[Observation]:
    return [record.decode(row.record).observation for row in iter_records(engine)]


def test_kad_sources_are_claims_and_the_sharing_one_is_proven(tmp_path: Path) -> None:
    stats, engine, hashes, control = asyncio.run(_sweep(tmp_path))
    assert stats.kad_searches == 1 and not stats.kad_errors
    assert stats.claims == 3 and stats.low_id_claims == 1
    assert stats.probes == 2  # the control and the dead address; never the firewalled one
    assert stats.per_file == {f"ed2k:{FILE_HASH.hex()}": {control}}

    found = _observations(engine)
    claims = [o for o in found if o.method == "kad-sources"]
    assert "kad-sources" in CLAIM_METHODS
    assert {o.outcome for o in claims} == {"claim"}
    assert {(o.ip, o.peer_id) for o in claims} == {
        (control[0], hashes["control"].hex()),
        (DEAD[0], DEAD_HASH.hex()),
        (FIREWALLED[0], FIREWALLED_HASH.hex()),
    }
    by_ip = {o.ip: o for o in claims}
    assert by_ip[FIREWALLED[0]].extra["id_type"] == "low" and by_ip[FIREWALLED[0]].port is None
    assert str(by_ip[control[0]].extra["node"]).startswith(KAD_NET)

    probes = [o for o in found if o.method != "kad-sources"]
    assert {(o.ip, o.method, o.outcome) for o in probes} == {
        (control[0], "file-status", "possession"),
        (DEAD[0], "connect", "refused"),
    }
    proven = next(o for o in probes if o.outcome == "possession")
    assert proven.peer_id == hashes["control"].hex()
    assert proven.completion_ppm == 1_000_000
    key = load_or_create(tmp_path / "keys", "kad-test")
    items = list(
        verify_stored(
            iter_records(engine), {key.sensor_id: key.private.public_key()}, sensor_keys(engine)
        )
    )
    # no problem reported, one chain holding every record
    [chain] = items
    assert isinstance(chain, ChainReport) and chain.checked == len(found)


def test_cli_kad_node_outside_loopback_is_not_contacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "home")
    link = f"ed2k://|file|benign.bin|{FILE_SIZE}|{FILE_HASH.hex()}|/"
    code = run(["--home", home, "sense", "ed2k", "--kad-node", "192.0.2.7:4672", "--ed2k", link])
    out = capsys.readouterr().out
    assert code == 0
    assert "Kad: 1 source search(es); 0 source claim(s)" in out
    assert f"Kad search for ed2k:{FILE_HASH.hex()}" in out and "192.0.2.7" in out


def test_cli_needs_a_source_of_peers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["--home", str(tmp_path / "home"), "sense", "ed2k", "--ed2k", "00" * 16])
    assert code != 0
    assert "give at least one --peer, --server or --kad-node" in capsys.readouterr().err
