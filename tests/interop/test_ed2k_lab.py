"""Issue 7 acceptance on real aMule peers: `peerwatch sense ed2k` against Debian's amuled.

Seven amuled 2.3.3 daemons on 127.0.15.1-7 (`lab.amule`, roles: multi-part, exact-part,
obfuscation required, unwatched only, small files, exact-part + unwatched, and one sharing the
multi-part file as an unfinished download holding parts 0 and 2 of 3), driven through the
`peerwatch` command as a user would: watchlist import of the lab's ed2k links (the four watched
files; the unwatched one is not on it), then `sense ed2k` over all seven peers, the one that
requires obfuscation given with its user hash. Every (peer, watched file) pair that the peer
shares must be proven (method file-status, outcome possession) with the peer's user hash,
"aMule <installed version>" and its completion (1,000,000 ppm, 666,666 for the unfinished
download); every other pair must be recorded as the peer's "no such file" answer, never
possession; the unwatched file must appear nowhere. The evidence chain must verify.

Without amuled installed this skips with the reason locally; under CI (CI set) it fails, since
.ci/run installs the package.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from peerwatch.app import App
from peerwatch.cli.main import run
from peerwatch.evidence import record
from peerwatch.evidence.log import iter_records
from peerwatch.lab.amule import SENSOR_IP, AmuleLab, amuled_available, amuled_version
from peerwatch.protocols.ed2k.client import ClientIdentity
from peerwatch.sensors.ed2k import USER_HASH_FILE, result_observation
from peerwatch.settings import Settings
from peerwatch.transport.ed2k_probe import Ed2kProbeConfig, probe_ed2k

PEERS = 7


def require_amuled() -> None:
    if amuled_available():
        return
    reason = "amuled not installed (Debian package amule-daemon)"
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI must run the interop tests)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def amule_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AmuleLab]:
    require_amuled()
    lab = AmuleLab(Path(tmp_path_factory.mktemp("amule")), peers=PEERS)
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()
    assert lab.running() == []
    assert not _amuled_pids(lab.folder), "an amuled of this lab outlived stop()"


def _amuled_pids(folder: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"amuled" in cmdline and str(folder).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


def test_lab_peers_are_ready_and_distinct(amule_lab: AmuleLab) -> None:
    lab = amule_lab
    assert len(lab.peers) == PEERS
    assert len({p.ip for p in lab.peers}) == PEERS
    assert all(p.ip.startswith("127.0.15.") for p in lab.peers)
    assert len({p.user_hash for p in lab.peers}) == PEERS
    assert lab.running() == [p.name for p in lab.peers]
    assert len(_amuled_pids(lab.folder)) == PEERS
    sizes = {k: f.size for k, f in lab.files.items()}
    assert sizes["exact-part"] == 9_728_000
    assert sizes["multi-part"] > 2 * 9_728_000
    assert [p.role for p in lab.peers if p.requires_obfuscation] == ["obfuscated"]
    assert [p.shares for p in lab.peers if p.role == "unwatched"] == [("unwatched",)]
    assert [p.partial for p in lab.peers if p.partial] == [{"multi-part": (0, 2)}]


def test_sense_ed2k_proves_every_sharing_peer(amule_lab: AmuleLab, tmp_path: Path) -> None:
    lab = amule_lab
    version = amuled_version()
    home = tmp_path / "home"
    assert run(["--home", str(home), "watchlist", "import", str(lab.watchlist)]) == 0
    args = ["--home", str(home), "sense", "ed2k", "--bind", SENSOR_IP]
    for p in lab.peers:
        spec = f"{p.user_hash.hex()}@{p.endpoint}" if p.requires_obfuscation else p.endpoint
        args += ["--peer", spec]
    assert run(args) == 0
    user_hash = (home / "keys" / USER_HASH_FILE).read_text().strip()
    assert run(args) == 0  # a second sweep: the same user hash (aMule would ban a new one)
    assert (home / "keys" / USER_HASH_FILE).read_text().strip() == user_hash

    app = App(Settings.resolve(home=home))
    observations = [record.decode(r.record).observation for r in iter_records(app.engine)]
    watched = {f.ed2k.hex(): k for k, f in lab.files.items() if f.watched}
    unwatched = lab.files["unwatched"].ed2k.hex()
    by_ip = {p.ip: p for p in lab.peers}
    expected = {(p.name, k) for p in lab.peers for k in p.shares if k in watched.values()}

    assert len(observations) == 2 * PEERS * len(watched)  # two sweeps, one per (peer, file)
    assert all(unwatched not in o.content_key for o in observations)
    proven: set[tuple[str, str]] = set()
    negative: set[tuple[str, str]] = set()
    for o in observations:
        peer = by_ip[o.ip]
        key = watched[o.content_key.removeprefix("ed2k:")]
        assert o.network == "ed2k"
        assert o.port == peer.tcp_port
        # Every probe got the peer's HELLOANSWER: its user hash, software and ports.
        assert o.peer_id == peer.user_hash.hex()
        assert o.client == f"aMule {version}"
        assert o.extra["tcp_port"] == peer.tcp_port
        assert o.extra["udp_port"] == peer.udp_port
        assert o.extra["client_id"] == 0  # no server, no Kad: aMule has no id to give
        assert o.extra["id_type"] == "low"
        assert o.extra["obfuscated"] is peer.requires_obfuscation
        assert o.extra["requires_obfuscation"] is peer.requires_obfuscation
        if o.outcome == "possession":
            assert o.method == "file-status" and o.method in record.POSSESSION_METHODS
            held = peer.partial.get(key)
            if held is None:
                assert o.completion_ppm == 1_000_000
                assert (o.extra["part_count"], o.extra["parts_held"]) == (0, None)
            else:  # 2 of the 3 parts of the 25,000,000-byte file
                assert o.completion_ppm == len(held) * 1_000_000 // 3 == 666_666
                assert (o.extra["part_count"], o.extra["parts_held"]) == (3, len(held))
            assert o.extra["file_name"] == lab.files[key].path.name
            assert o.exchange_sha256 and len(o.exchange_sha256) == 64
            proven.add((peer.name, key))
        else:
            assert (o.method, o.outcome) == ("no-file", "no-file"), o
            assert o.completion_ppm is None
            negative.add((peer.name, key))
    assert proven == expected  # 100% of the sharing peers, nothing else
    assert negative == {(p.name, k) for p in lab.peers for k in watched.values()} - expected
    obfuscated = [p for p in lab.peers if p.requires_obfuscation]
    assert {(obfuscated[0].name, "multi-part"), (obfuscated[0].name, "exact-part")} <= proven
    unwatched_peer = next(p for p in lab.peers if p.role == "unwatched")
    assert not {k for n, k in proven if n == unwatched_peer.name}
    partial = next(p for p in lab.peers if p.partial)
    assert (partial.name, "multi-part") in proven
    assert run(["--home", str(home), "evidence", "verify"]) == 0
    print(
        f"\n{PEERS} aMule {version} peers, {len(observations) // 2} probes per sweep: "
        f"{len(proven)} (peer, file) pairs proven of {len(expected)} shared "
        f"(obfuscated peer included), {len(negative)} no-file answers, 0 possession of the "
        "unwatched file"
    )


def test_obfuscation_required_peer_needs_its_user_hash(amule_lab: AmuleLab) -> None:
    lab = amule_lab
    peer = next(p for p in lab.peers if p.requires_obfuscation)
    f = lab.files["exact-part"]
    # Its own address and user hash: a second user hash from SENSOR_IP would get it banned.
    config = Ed2kProbeConfig(
        ClientIdentity(bytes(range(16)), supports_crypt=True), bind_ip="127.0.15.201"
    )

    async def both() -> tuple[record.Observation, record.Observation]:
        plain = await probe_ed2k(peer.ip, peer.tcp_port, f.ed2k, config, file_size=f.size)
        crypt = await probe_ed2k(
            peer.ip, peer.tcp_port, f.ed2k, config, file_size=f.size, user_hash=peer.user_hash
        )
        return result_observation(plain), result_observation(crypt)

    plain, crypt = asyncio.run(both())
    assert (plain.method, plain.outcome) == ("connect", "closed")
    assert plain.peer_id is None and plain.completion_ppm is None
    assert "give its user hash" in str(plain.extra["detail"])
    assert (crypt.method, crypt.outcome) == ("file-status", "possession")
    assert crypt.peer_id == peer.user_hash.hex()
    assert crypt.extra["obfuscated"] is True
    assert crypt.extra["part_count"] == 0  # a complete shared file: aMule sends no bitmap
    print("\n" + json.dumps({"plain": plain.extra["detail"], "obfuscated": crypt.extra["detail"]}))
