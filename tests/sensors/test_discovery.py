"""Discovery in memory: a scripted DHT (BEP 51 samples, get_peers claims) and scripted metadata
answers, against a real watchlist and a real signed evidence log (SQLite). The BEP 9 exchange
itself is tested in test_metadata_fetch.py; real libtorrent peers in
tests/interop/test_discovery.py.

Every torrent is built from benign random bytes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from peerwatch.evidence.keys import SensorKey, load_or_create
from peerwatch.evidence.log import EvidenceLog, iter_records, sensor_keys
from peerwatch.evidence.record import ExtraValue, Observation, decode
from peerwatch.evidence.verify import ChainReport, verify_stored
from peerwatch.protocols.bittorrent.dht import LookupDone, PeersFound, SamplesReceived
from peerwatch.protocols.bittorrent.krpc import NodeInfo, Peer
from peerwatch.sensors.discovery import (
    METHOD,
    OUTCOME,
    Discovery,
    DiscoveryConfig,
    DiscoveryStats,
    SampleSchedule,
)
from peerwatch.storage.schema import watch_items
from peerwatch.transport.dht_driver import LookupResult
from peerwatch.transport.egress import EgressPolicy
from peerwatch.transport.metadata_fetch import MetadataFetchConfig, MetadataResult
from peerwatch.transport.piece_download import metainfo_from_info
from peerwatch.watchlist.store import DERIVED_LIST, WatchlistStore
from tests.protocols.bittorrent.torrent_builder import (
    Content,
    bencode,
    hybrid,
    random_content,
    v1_multi,
    v2,
)

CONFIG = DiscoveryConfig(
    fetch=MetadataFetchConfig(peer_id=b"-PW0010-discoverytst"), bind_ip="127.0.11.210"
)


# --- the pure schedule ---------------------------------------------------------------------------


def test_schedule_respects_each_nodes_interval() -> None:
    s = SampleSchedule()
    a, b = ("127.0.0.1", 1), ("127.0.0.2", 2)
    assert s.answered(a, 300, now=0.0)
    assert not s.answered(a, 300, now=299.0)  # asked again too early
    assert s.answered(a, 300, now=300.0)  # the interval is over: a fresh answer
    assert s.answered(b, None, now=0.0) and s.answered(b, None, now=0.0)  # no interval: any time
    assert s.answered(("127.0.0.3", 3), 10**9, now=0.0)  # clamped to BEP 51's 6 hours
    assert s.resting(21599.0) == {("127.0.0.3", 3)} and s.resting(21600.0) == set()
    assert s.answered(("127.0.0.4", 4), -5, now=0.0)  # a negative interval counts as none
    assert ("127.0.0.4", 4) not in s.resting(0.0)


# --- the scripted world --------------------------------------------------------------------------


def node(i: int) -> NodeInfo:
    return NodeInfo(bytes([i]) * 20, f"127.0.11.{100 + i}", 6881)


@dataclass
class ScriptedDht:
    walks: list[list[tuple[NodeInfo, int | None, tuple[bytes, ...]]]]
    peers: dict[bytes, list[tuple[NodeInfo, tuple[Peer, ...]]]]
    targets: list[bytes] = field(default_factory=list)
    looked_up: list[bytes] = field(default_factory=list)
    responses: int = 12  # what each walk's LookupDone reports

    async def sample_infohashes(self, target: bytes, timeout: float = 30.0) -> LookupResult:
        self.targets.append(target)
        answers = self.walks[len(self.targets) - 1] if len(self.targets) <= len(self.walks) else []
        result = LookupResult(target)
        for n, interval, samples in answers:
            result.samples.append(SamplesReceived(1, samples, len(samples), interval, n))
        # A large DHT: each walk reached k nodes (only some of them answer with samples).
        result.done = LookupDone(1, "sample_infohashes", target, (), 20, self.responses, False)
        return result

    async def get_peers(self, info_hash: bytes, timeout: float = 30.0) -> LookupResult:
        self.looked_up.append(info_hash)
        result = LookupResult(info_hash)
        for n, peers in self.peers.get(info_hash, []):
            result.found.append(PeersFound(2, info_hash, peers, n))
        return result


@dataclass
class ScriptedPeers:
    """What each (peer, infohash) answers: the info dict, or a failure outcome."""

    answers: dict[tuple[Peer, bytes], bytes | str]
    asked: list[tuple[Peer, bytes]] = field(default_factory=list)

    async def __call__(
        self, ip: str, port: int, info_hash: bytes, config: MetadataFetchConfig
    ) -> MetadataResult:
        config.egress.check(ip)
        self.asked.append(((ip, port), info_hash))
        answer = self.answers.get(((ip, port), info_hash), "unreachable")
        info = answer if isinstance(answer, bytes) else None
        verified = None
        if info is not None:
            verified = "sha1" if sha1(info) == info_hash else "sha256-truncated"
        return MetadataResult(
            ip=ip,
            port=port,
            info_hash=info_hash,
            outcome="fetched" if info is not None else str(answer),
            detail="scripted",
            encrypted=False,
            peer_id=b"-LT2110-scriptedpeer",
            client="scripted/1.0",
            listen_port=port,
            metadata_size=len(info) if info is not None else None,
            info=info,
            metainfo=metainfo_from_info(info) if info is not None else None,
            verified_as=verified,
            exchange_sha256=hashlib.sha256(repr((ip, port, info_hash)).encode()).hexdigest(),
            started=1_700_000_000.0,
            ended=1_700_000_000.25,
        )


def sha1(data: bytes) -> bytes:
    return hashlib.sha1(data, usedforsecurity=False).digest()


@dataclass
class World:
    store: WatchlistStore
    log: EvidenceLog
    dht: ScriptedDht
    peers: ScriptedPeers
    key: SensorKey
    listed: list[Content]  # files on the CSV list
    ids: dict[str, bytes]  # torrent -> the infohash(es) it was sampled under
    infos: dict[str, bytes]


P1, P2, P3 = ("127.0.11.31", 6881), ("127.0.11.32", 6881), ("127.0.11.33", 6881)
OUTSIDE = ("10.1.2.3", 6881)


@pytest.fixture
def world(sqlite_engine: Engine, tmp_path: Path) -> World:
    rng = random.Random(30)
    listed = random_content(rng, [("a.bin",), ("b.bin",), ("c.bin",)], max_len=30_000)
    store = WatchlistStore(sqlite_engine)
    rows = ["sha1,md5,name,size,category"]
    rows.append(f"{listed[0].sha1.hex()},,a.bin,{len(listed[0].data)},A")
    rows.append(f",{listed[1].md5.hex()},,,B")
    (tmp_path / "cases.csv").write_text("\n".join(rows) + "\n")
    store.import_files([tmp_path / "cases.csv"], list_name="cases")
    # A watched v2 torrent of file c: its pieces root is what a repack of c will share.
    (tmp_path / "c.torrent").write_bytes(bencode(v2([listed[2]], name="c")))
    store.import_files([tmp_path / "c.torrent"], list_name="v2set")
    other = random_content(rng, [("x.bin",), ("y.bin",)], max_len=30_000)
    infos = {
        # BEP 47 sha1 of listed a, under another name
        "sha1": bencode(
            v1_multi([Content(("pack", "z.bin"), listed[0].data), other[0]], name="p1", sha1=True)[
                b"info"
            ]
        ),
        # a hybrid holding file c: the pieces root matches the watched v2 torrent's file
        "root": bencode(
            hybrid([Content(("c2.bin",), listed[2].data), other[1]], name="h")[b"info"]
        ),
        # nothing listed
        "none": bencode(v1_multi(other, name="plain")[b"info"]),
        # md5 of listed b (served only by the second peer; the first sends garbage)
        "md5": bencode(
            v1_multi([Content(("q.bin",), listed[1].data)], md5="hex", name="m")[b"info"]
        ),
    }
    ids = {
        "sha1": sha1(infos["sha1"]),
        "root": sha1(infos["root"]),
        "root-v2": hashlib.sha256(infos["root"]).digest()[:20],
        "none": sha1(infos["none"]),
        "md5": sha1(infos["md5"]),
        "no-peers": b"\x07" * 20,
        "outside": b"\x08" * 20,
    }
    # Already watched: listed by infohash, so never looked up.
    watched = b"\x09" * 20
    (tmp_path / "ih.txt").write_text(f"btih:{watched.hex()}\n")
    store.import_files([tmp_path / "ih.txt"], list_name="ih")
    ids["watched"] = watched
    a, b, c = node(1), node(2), node(3)
    walks: list[list[tuple[NodeInfo, int | None, tuple[bytes, ...]]]] = [
        [(a, 300, (ids["sha1"], ids["root"], ids["watched"])), (b, 300, (ids["none"],))],
        # a again (too early), c new: hybrid's v2 id, md5, no peers, outside, and a repeat
        [
            (a, 300, (ids["sha1"],)),
            (c, None, (ids["root-v2"], ids["md5"], ids["no-peers"], ids["outside"])),
        ],
        [(a, 300, ()), (b, 300, ())],  # nobody new: discovery stops walking here
        [(node(4), 300, (b"\x0a" * 20,))],  # never reached
    ]
    dht_peers: dict[bytes, list[tuple[NodeInfo, tuple[Peer, ...]]]] = {
        ids["sha1"]: [(a, (P1,))],
        ids["root"]: [(b, (P2,))],
        ids["root-v2"]: [(c, (P2,))],
        ids["none"]: [(a, (P3,))],
        ids["md5"]: [(b, (P1,)), (c, (P2, (CONFIG.bind_ip, 6881)))],
        ids["outside"]: [(c, (OUTSIDE,))],
    }
    answers: dict[tuple[Peer, bytes], bytes | str] = {
        (P1, ids["sha1"]): infos["sha1"],
        (P2, ids["root"]): infos["root"],
        (P2, ids["root-v2"]): infos["root"],
        (P3, ids["none"]): infos["none"],
        (P1, ids["md5"]): "hash-mismatch",
        (P2, ids["md5"]): infos["md5"],
    }
    key = load_or_create(tmp_path / "keys", "disc")
    log = EvidenceLog(sqlite_engine, key)
    dht = ScriptedDht(walks, dht_peers)
    return World(store, log, dht, ScriptedPeers(answers), key, listed, ids, infos)


def matches_of(obs: Observation) -> list[dict[str, ExtraValue]]:
    found = obs.extra["matches"]
    assert isinstance(found, list) and all(isinstance(x, dict) for x in found)
    return [x for x in found if isinstance(x, dict)]


def discover(world: World) -> DiscoveryStats:
    async def go() -> DiscoveryStats:
        async with Discovery(
            CONFIG, world.store, world.log, EgressPolicy(), dht=world.dht, fetch=world.peers
        ) as d:
            return await d.run()

    return asyncio.run(go())


def test_discovery_derives_matching_torrents_with_their_evidence(
    world: World, sqlite_engine: Engine
) -> None:
    stats = discover(world)
    ids = world.ids
    # Sampling: three walks (the third brought no new node), a asked twice too early, b once.
    assert (stats.walks, stats.nodes_sampled, stats.early_requests) == (3, 3, 3)
    assert len(world.dht.targets) == 3 and len(set(world.dht.targets)) == 3
    assert stats.samples == 9 and stats.already_watched == 1
    assert ids["watched"] not in world.dht.looked_up
    assert stats.no_peers == 2  # no claim at all; a claim outside the egress policy only
    assert stats.refused_by_egress == 1
    assert all(peer != OUTSIDE for peer, _ih in world.peers.asked)
    assert all(peer[0] != CONFIG.bind_ip for peer, _ih in world.peers.asked)  # never ourselves
    assert stats.fetch_failures == {"hash-mismatch": 1}
    assert (stats.matched, stats.derived, stats.observations) == (3, 3, 3)
    assert stats.errors == 0, stats.last_error

    records = [decode(r.record).observation for r in iter_records(sqlite_engine)]
    assert {o.method for o in records} == {METHOD}
    assert {o.outcome for o in records} == {OUTCOME}  # never 'possession'
    by_key = {o.content_key: o for o in records}
    info_sha1 = {name: sha1(info) for name, info in world.infos.items()}
    assert set(by_key) == {f"btih:{info_sha1[n].hex()}" for n in ("sha1", "root", "md5")}
    o = by_key[f"btih:{ids['sha1'].hex()}"]
    assert (o.ip, o.port, o.client) == (*P1, "scripted/1.0")
    assert o.extra["info_sha1"] == ids["sha1"].hex()
    assert o.extra["info_sha256"] == hashlib.sha256(world.infos["sha1"]).hexdigest()
    assert o.extra["sampled_from"] == "127.0.11.101:6881"
    assert o.extra["peer_claimed_by"] == "127.0.11.101:6881"
    (m,) = matches_of(o)
    assert (m["how"], m["file_path"], m["list"], m["list_version"]) == (
        "sha1",
        "p1/pack/z.bin",
        "cases",
        1,
    )
    hows = {key: sorted(str(x["how"]) for x in matches_of(obs)) for key, obs in by_key.items()}
    assert hows[f"btih:{info_sha1['root'].hex()}"] == ["pieces-root"]
    assert hows[f"btih:{info_sha1['md5'].hex()}"] == ["md5"]
    md5_obs = by_key[f"btih:{info_sha1['md5'].hex()}"]
    assert (md5_obs.ip, md5_obs.port) == P2  # the second peer: the first sent a wrong info dict

    # One derived version per match; the last active, with all three entries and provenance.
    derived = next(i for i in world.store.lists() if i.name == DERIVED_LIST)
    assert (derived.version, derived.items) == (3, 3)
    watched = {t.content_key: t for t in world.store.watched_torrents()}
    for name in ("sha1", "root", "md5"):
        assert f"btih:{info_sha1[name].hex()}" in watched  # swept like any watched torrent
    assert watched[f"btih:{info_sha1['root'].hex()}"].other_hashes == (ids["root-v2"],)
    seqs = {
        o.content_key: r.seq
        for r in iter_records(sqlite_engine)
        for o in [decode(r.record).observation]
    }
    with sqlite_engine.connect() as conn:
        rows = conn.execute(select(watch_items.c.location, watch_items.c.attributes)).all()
    provenance = {loc: json.loads(a) for loc, a in rows if loc.startswith("btih:") and a}
    for key, seq in seqs.items():
        attrs = provenance[key]
        assert attrs["evidence"] == {"sensor": "disc", "seq": seq}
        assert attrs["derived_from"][0]["list"] in ("cases", "v2set")
    trusted = {"disc": world.key.private.public_key()}
    checked = verify_stored(iter_records(sqlite_engine), trusted, sensor_keys(sqlite_engine))
    assert [r for r in checked if not isinstance(r, ChainReport)] == []


def test_a_second_run_derives_nothing_new(world: World) -> None:
    discover(world)
    world.dht.targets.clear()
    world.dht.looked_up.clear()
    again = discover(world)
    assert (again.matched, again.derived, again.observations) == (0, 0, 0)
    # Everything derived is now watched, so never looked up again.
    assert world.ids["sha1"] not in world.dht.looked_up
    assert world.ids["root-v2"] not in world.dht.looked_up


def test_a_walk_that_ran_out_of_nodes_is_the_last(world: World) -> None:
    # A DHT of fewer than k nodes: the first walk asked every node there is, so a second walk
    # would only ask them again within their interval (BEP 51).
    world.dht.responses = 3
    stats = discover(world)
    assert stats.walks == 1 and len(world.dht.targets) == 1
    assert stats.early_requests == 0 and stats.nodes_sampled == 2
    assert stats.derived == 2  # what the first walk sampled: the sha1 and pieces-root torrents
