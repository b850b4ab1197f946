"""The lab itself: real libtorrent peers and opentracker, on loopback, hold what they should."""

from __future__ import annotations

import ipaddress
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from peerwatch.lab.swarm import TRACKER_IP, TRACKER_PORT, Lab
from peerwatch.protocols.bittorrent.bencode import bdecode
from tests.interop.conftest import require_lab_tools


def _torrent_status(status: list[dict[str, Any]], ip: str, lab: Lab, name: str) -> dict[str, Any]:
    t = lab.torrents[name]
    (peer,) = [s for s in status if s.get("ip") == ip]
    (found,) = [x for x in peer["torrents"] if x["v1"] == t.btih and x["v2"] == t.btmh]
    return found  # type: ignore[no-any-return]


def test_every_peer_is_on_loopback_and_joins_the_dht(lab: Lab) -> None:
    assert all(ipaddress.ip_address(p.ip).is_loopback for p in lab.members)
    assert lab.wait_until(lambda st: all(s.get("dht_nodes", 0) >= 3 for s in st), 30), lab.status()


def test_peers_hold_what_their_role_says(lab: Lab) -> None:
    assert lab.wait_until(
        lambda st: all(
            t["state"] in ("seeding", "downloading") for s in st for t in s.get("torrents", [])
        ),
        30,
    )
    status = lab.status()
    for (ip, name), how in lab.expected().items():
        t = _torrent_status(status, ip, lab, name)
        if how == "seed":
            assert t["progress_ppm"] == 1_000_000 and t["seeding"], (ip, name, t)
        else:
            assert 0 < t["pieces_have"] < lab.torrents[name].pieces, (ip, name, t)
    versions = {t.version for t in lab.torrents.values()}
    assert versions == {"v1", "v2", "hybrid"}


def test_tracker_lists_the_peers_of_a_watched_torrent(lab: Lab) -> None:
    t = lab.torrents["watched-v1"]
    holders = {ip for (ip, name) in lab.expected() if name == "watched-v1"}
    query = urllib.parse.urlencode(
        {
            "info_hash": bytes.fromhex(t.btih or ""),
            "peer_id": b"-PW0001-labtest00000",
            "port": 1,
            "uploaded": 0,
            "downloaded": 0,
            "left": 0,
            "compact": 1,
            "numwant": 50,
        }
    )
    url = f"http://{TRACKER_IP}:{TRACKER_PORT}/announce?{query}"

    def listed() -> set[str]:
        with urllib.request.urlopen(url, timeout=5) as resp:  # loopback, our tracker
            body = bdecode(resp.read())
        peers = body[b"peers"]
        return {str(ipaddress.IPv4Address(peers[i : i + 4])) for i in range(0, len(peers), 6)}

    assert lab.wait_until(lambda _st: holders <= listed(), 30), (holders, listed())


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    require_lab_tools(tracker=False)
    small = Lab(tmp_path / "small", peers=3, tracker=False)
    small.start()
    pids = [p.pid for p in small._procs]
    small.stop()
    alive = subprocess.run(
        ["ps", "-o", "pid=", "-p", ",".join(map(str, pids))], capture_output=True, text=True
    ).stdout.split()
    assert alive == []
    assert not (tmp_path / "small" / "lab.json").exists()
