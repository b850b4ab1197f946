"""Probing real libtorrent peers: possession, partial copies, refusals and MSE, all recorded."""

from __future__ import annotations

import asyncio
from pathlib import Path

from peerwatch.evidence.keys import load_or_create
from peerwatch.evidence.log import EvidenceLog, iter_records, sensor_keys
from peerwatch.evidence.verify import ChainReport, verify_stored
from peerwatch.lab.swarm import Lab
from peerwatch.sensors.probe_evidence import probe_observation
from peerwatch.storage.database import make_engine, migrate, sqlite_url
from peerwatch.transport.peer_probe import ProbeConfig, ProbeResult, probe

CONFIG = ProbeConfig(peer_id=b"-PW0001-" + b"interop00000", bind_ip="127.0.3.1")


def _probe_all(lab: Lab) -> dict[tuple[str, str], ProbeResult]:
    async def run() -> dict[tuple[str, str], ProbeResult]:
        jobs = {}
        for t in lab.torrents.values():
            # A v2-only torrent is addressed on the wire by its truncated SHA-256 (BEP 52).
            ih = bytes.fromhex(t.btih) if t.btih else bytes.fromhex(t.btmh or "")[:20]
            for p in lab.members:
                jobs[p.ip, t.name] = probe(p.ip, p.port, ih, CONFIG, piece_count=t.pieces)
        results = await asyncio.gather(*jobs.values())
        return dict(zip(jobs, results, strict=True))

    return asyncio.run(run())


def test_probes_prove_exactly_the_holders(lab: Lab, tmp_path: Path) -> None:
    results = _probe_all(lab)
    expected = lab.expected()
    for pair, r in results.items():
        how = expected.get(pair)
        if how is None:
            assert r.outcome == "refused" and not r.handshake_accepted, (pair, r)
            continue
        assert r.outcome == "possession", (pair, r)
        assert r.client is not None and "libtorrent" in r.client
        assert r.peer_id is not None and len(r.peer_id) == 20
        if how == "seed":
            assert r.completion_ppm == 1_000_000, (pair, r)
        else:
            assert r.completion_ppm is not None and 0 < r.completion_ppm < 1_000_000, (pair, r)
    # The peers that accept encrypted connections only were proven through MSE.
    forced = {p.ip for p in lab.members if p.encryption == "forced"}
    assert forced
    for (ip, _name), r in results.items():
        if ip in forced and r.outcome == "possession":
            assert r.encrypted, r
            assert "plain: the peer closed the connection before its handshake" in r.detail
    holdings = sum(1 for k in results if k in expected)
    assert sum(r.outcome == "possession" for r in results.values()) == holdings

    # Every probe is an observation; the log they make verifies.
    engine = make_engine(sqlite_url(tmp_path / "e.db"))
    migrate(engine)
    key = load_or_create(tmp_path / "keys", "interop")
    observations = [
        probe_observation(r, content_key=f"lab:{name}") for (_ip, name), r in results.items()
    ]
    EvidenceLog(engine, key).append(observations)
    assert {o.method for o in observations} == {"have-all", "bitfield", "connect"}
    assert sum(o.outcome == "possession" for o in observations) == holdings
    items = list(
        verify_stored(
            iter_records(engine), {"interop": key.private.public_key()}, sensor_keys(engine)
        )
    )
    assert [x for x in items if not isinstance(x, ChainReport)] == []
