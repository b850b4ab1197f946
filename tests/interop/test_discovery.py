"""Discovery mode against real libtorrent peers: BEP 51 samples from their DHT nodes, BEP 9
metadata from their seeds, and derived watchlist entries for the torrents whose files are watched.

This file runs its OWN lab on 127.0.11.x (never the shared 127.0.2.x one): five role-cycled peers
(one of each role) and two `discoverable` peers seeding `unlisted-v1` (a watched-v1 file renamed,
BEP 47 sha1) and `unlisted-v2` (a watched-v2 file renamed, v2-only, other piece length). No
tracker: the DHT alone. Our sensor uses 127.0.11.240 and a pre-check node 127.0.11.241.

The watchlist holds the lab's watched infohashes, the watched-v2 .torrent as a list (its file's
pieces root), and a CSV with the SHA-1 of watched-v1's first file and the name and size (with a
SHA-256, since a CSV row needs a hash) of unwatched-v1's first file. Three torrents are on no
list; each must be found by exactly one kind of match: unlisted-v1 by sha1, unlisted-v2 by pieces
root, unwatched-v1 by name and size. All content is benign generated random bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from peerwatch.cli.main import run
from peerwatch.evidence.log import iter_records
from peerwatch.evidence.record import ExtraValue, Observation, decode
from peerwatch.lab.swarm import Lab, LabTorrent
from peerwatch.storage.database import make_engine, sqlite_url
from peerwatch.transport.dht_driver import DhtDriver
from peerwatch.transport.egress import EgressPolicy
from peerwatch.watchlist.store import DERIVED_LIST, WatchlistStore
from tests.interop.conftest import require_lab_tools

LAB_NET = "127.0.11."
SENSOR = "127.0.11.240"
CHECKER = "127.0.11.241"


@pytest.fixture(scope="module")
def discovery_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_lab_tools(tracker=False)
    lab = Lab(
        Path(tmp_path_factory.mktemp("discovery-lab")),
        peers=5,
        tracker=False,
        peer_net=LAB_NET,
        discoverable=2,
        seed=11,
    )
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()


def key_of(t: LabTorrent) -> str:
    return f"btih:{t.btih}" if t.btih else f"btmh:{t.btmh}"


def first_file(t: LabTorrent) -> Path:
    return sorted((t.data / t.name).iterdir())[0]


def wait_for_dht(lab: Lab, timeout: float = 90.0) -> tuple[int, float, float, set[str]]:
    """Sample the lab's DHT (our own check node) until every lab infohash shows up in some
    node's BEP 51 answer, and until a get_peers lookup finds every holder of every torrent (a
    peer announces its torrents a few seconds apart, and the sweep after discovery must find
    them all). Returns (nodes that answered samples, seconds until every id was sampled, seconds
    until every holder was found, intervals seen)."""
    ids = {
        bytes.fromhex(h): {ip for (ip, name) in lab.expected() if name == t.name}
        for t in lab.torrents.values()
        for h in t.announce_hashes
    }

    async def go() -> tuple[int, float, float, set[str]]:
        driver = DhtDriver((CHECKER, 6881), EgressPolicy())
        await driver.start()
        try:
            await driver.bootstrap([(m.ip, m.port) for m in lab.members])
            started = time.monotonic()
            seen: set[bytes] = set()
            nodes: set[str] = set()
            intervals: set[str] = set()
            sampled_after: float | None = None
            while time.monotonic() - started < timeout:
                if sampled_after is None:
                    result = await driver.sample_infohashes(os.urandom(20), 10.0)
                    for answer in result.samples:
                        nodes.add(answer.from_node.ip)
                        intervals.add(str(answer.interval))
                        seen.update(answer.samples)
                    if set(ids) <= seen:
                        sampled_after = time.monotonic() - started
                if sampled_after is not None:
                    lookups = await asyncio.gather(*(driver.get_peers(h, 10.0) for h in ids))
                    if all(
                        want <= {ip for ip, _port in found.peers}
                        for want, found in zip(ids.values(), lookups, strict=True)
                    ):
                        settled = time.monotonic() - started
                        return len(nodes), sampled_after, settled, intervals
                await asyncio.sleep(1.0)
            missing = sorted(h.hex() for h in set(ids) - seen)
            raise AssertionError(f"the lab DHT did not settle in {timeout} s (unsampled {missing})")
        finally:
            driver.close()

    return asyncio.run(go())


def pw(home: Path, *args: str) -> int:
    return run(["--home", str(home), *args])


def test_discovery_derives_repackaged_torrents_from_real_peers(
    discovery_lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lab = discovery_lab
    t = lab.torrents
    home = tmp_path / "home"
    assert pw(home, "watchlist", "import", str(lab.workdir / "watchlist.txt"), "--list", "lab") == 0
    assert pw(home, "watchlist", "import", str(t["watched-v2"].path), "--list", "v2-files") == 0
    a, b = first_file(t["watched-v1"]), first_file(t["unwatched-v1"])
    cases = tmp_path / "cases.csv"
    cases.write_text(
        "sha1,sha256,name,size,category\n"
        f"{hashlib.sha1(a.read_bytes(), usedforsecurity=False).hexdigest()},,case-a.bin,,A\n"
        f",{hashlib.sha256(b'not this file').hexdigest()},{b.name},{b.stat().st_size},B\n"
    )
    assert pw(home, "watchlist", "import", str(cases), "--list", "cases") == 0
    capsys.readouterr()

    # libtorrent 2.x answers BEP 51 from what its node stores: wait until every lab torrent's
    # id has been announced to, and sampled from, the lab's DHT nodes.
    nodes, waited, settled, intervals = wait_for_dht(lab)
    assert nodes == len(lab.members)
    assert intervals == {"21600"}  # libtorrent's default: six hours

    started = time.monotonic()
    dht_nodes = [x for m in lab.members[:3] for x in ("--dht-node", f"{m.ip}:{m.port}")]
    code = pw(
        home, "sense", "bittorrent", "--discover", "--bind", f"{SENSOR}:6881", "--no-trackers",
        *dht_nodes,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = captured.out
    assert "sweeping the 3 derived torrent(s)" in out, out
    row = re.search(
        r"discovery: (\d+) walk\(s\), (\d+) node\(s\) sampled, (\d+) sample\(s\), "
        r"(\d+) new infohash\(es\), (\d+) metadata fetched, (\d+) match\(es\), (\d+) derived",
        out,
    )
    assert row is not None, out
    walks, sampled, samples, new, fetched, matched, derived = map(int, row.groups())
    assert walks == 1  # a 7-node DHT: the first walk reached every node (BEP 51 politeness)
    assert sampled == len(lab.members) and samples >= 7  # 7 distinct ids in the lab
    assert new == 3 and fetched == 3 and matched == 3 and derived == 3
    assert "BEP 51 answer(s) came from nodes asked again" not in out

    engine = make_engine(sqlite_url(home / "peerwatch.db"))
    observations = [decode(r.record).observation for r in iter_records(engine)]
    found = {o.content_key: o for o in observations if o.method == "metadata-match"}
    assert set(found) == {key_of(t[n]) for n in ("unlisted-v1", "unlisted-v2", "unwatched-v1")}
    holders = {n: {ip for (ip, name) in lab.expected() if name == n} for n in t}

    def single_match(name: str) -> tuple[Observation, dict[str, ExtraValue]]:
        obs = found[key_of(t[name])]
        matches = obs.extra["matches"]
        assert isinstance(matches, list) and len(matches) == 1
        (m,) = matches
        assert isinstance(m, dict)
        assert obs.outcome == "content-match" and obs.ip in holders[name]
        assert obs.client is not None and "libtorrent" in obs.client
        assert obs.exchange_sha256 is not None and len(obs.exchange_sha256) == 64
        return obs, m

    obs, m = single_match("unlisted-v1")
    assert (m["how"], m["list"], m["item_name"]) == ("sha1", "cases", "case-a.bin")
    assert m["file_path"] == f"unlisted-v1/repack-{a.name}"
    assert obs.extra["info_sha1"] == t["unlisted-v1"].btih and obs.extra["verified_as"] == "sha1"
    obs, m = single_match("unlisted-v2")
    assert (m["how"], m["list"]) == ("pieces-root", "v2-files")
    btmh = t["unlisted-v2"].btmh
    assert btmh is not None
    assert obs.extra["info_sha256"] == btmh and obs.extra["verified_as"] == "sha256-truncated"
    assert obs.extra["info_hash"] == btmh[:40]
    obs, m = single_match("unwatched-v1")
    assert (m["how"], m["list"], m["file_size"]) == ("name-size", "cases", b.stat().st_size)

    # Derived entries: one new version per torrent, with provenance naming the evidence record.
    store = WatchlistStore(engine)
    (derived_list,) = [i for i in store.lists() if i.name == DERIVED_LIST]
    assert (derived_list.version, derived_list.items) == (3, 3)
    watched = {w.content_key for w in store.watched_torrents()}
    assert set(found) <= watched

    # Swept like any watched torrent, right after: each holder's possession is proven by a probe.
    proven = {
        (o.content_key, o.ip)
        for o in observations
        if o.outcome == "possession" and o.method in ("have-all", "bitfield")
    }
    for name in ("unlisted-v1", "unlisted-v2", "unwatched-v1"):
        seen = [
            (o.method, o.ip, o.outcome, o.extra.get("detail") or o.extra.get("source"))
            for o in observations
            if o.content_key == key_of(t[name])
        ]
        assert {(key_of(t[name]), ip) for ip in holders[name]} <= proven, (name, seen)
    assert {k for k, _ip in proven} == set(found)  # nothing else was swept
    assert pw(home, "evidence", "verify") == 0

    # A second run finds nothing new: everything derived is watched now.
    capsys.readouterr()
    again = pw(
        home, "sense", "bittorrent", "--discover", "--bind", f"{SENSOR}:6881", "--no-trackers",
        *dht_nodes,
    )  # fmt: skip
    assert again == 0
    assert "no new derived entry" in capsys.readouterr().out
    print(
        f"\ndiscovery: {len(lab.members)} peers, BEP 51 samples complete after {waited:.1f} s, "
        f"every holder on the DHT after {settled:.1f} s, "
        f"{walks} walk(s), {sampled} nodes, {samples} samples, {new} new infohashes, "
        f"{fetched} fetched, {matched} matches, {derived} derived; discovery + sweep "
        f"{elapsed:.1f} s"
    )
