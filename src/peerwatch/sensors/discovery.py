"""Discovery: find torrents that are not on the watchlist but whose files are.

A sweep (`sensors/bittorrent.py`) only looks for torrents already watched. Discovery looks for the
others, in four steps:

1. **Sample** (BEP 51). `sample_infohashes` walks toward random targets; every node on the way
   answers with up to 20 infohashes it stores (`samples`), how many it stores (`num`) and how
   long to leave it alone (`interval`). Infohashes already watched (any of a watched torrent's
   ids) are skipped.
2. **Peers** (BEP 5). A `get_peers` lookup per new infohash: who claims to have it.
3. **Metadata** (BEP 9). The info dict from one of those peers (`peers_per_torrent` tried, one
   after the other), kept only once it hashes to the infohash (`transport.metadata_fetch`).
4. **Match**. Every file of the torrent against the active lists: BEP 47 `sha1`/`md5` file
   hashes, the v2 per-file `pieces root` (BEP 52) against the roots of watched .torrent files, and
   exact (name, size) (`WatchlistStore.match_files`).

A torrent with at least one matching file is recorded (method `metadata-match`, outcome
`content-match`: a statement about what the torrent *describes*, not that the peer holds it)
and added to the watchlist as a **derived entry** (list `derived`, a new version each time) whose
provenance names the matched items, their lists and versions, and the evidence record. From then
on it is swept like any other watched torrent, and only a sweep's probe can show possession.

Torrents that match nothing leave no record: their peers are nobody's business here, and only
counts are kept (`DiscoveryStats`).

BEP 51 asks an indexer not to sample a node again within the `interval` it gave. The walks are
the DHT node's lookups, which ask every node on their way; `SampleSchedule` notes each node's
interval, and the run stops walking as soon as a walk brings no node that was not sampled before,
or ran out of nodes before k (8) of them answered (it reached every node it could): further walks
would only ask the same nodes again. Answers from nodes asked again too early are counted
(`early_requests`); their samples are still used.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from peerwatch.domain.torrents import WatchedTorrent
from peerwatch.evidence.record import ExtraValue, Observation
from peerwatch.protocols.bittorrent.krpc import Peer
from peerwatch.protocols.bittorrent.metainfo import Metainfo
from peerwatch.transport.dht_driver import DhtDriver, LookupResult
from peerwatch.transport.egress import EgressPolicy
from peerwatch.transport.metadata_fetch import MetadataFetchConfig, MetadataResult, fetch_metadata
from peerwatch.watchlist.store import (
    DERIVED_LIST,
    DerivedEntry,
    FileKey,
    FileMatch,
    ImportResult,
)

METHOD = "metadata-match"
OUTCOME = "content-match"
#: BEP 51: "The permissible range is between 0 and 21600 seconds" for 'interval'.
MAX_INTERVAL = 21600
#: BEP 5: a lookup converges on the k = 8 closest nodes; a walk answered by fewer has run out of
#: nodes to ask.
K = 8


@dataclass(frozen=True)
class DiscoveryConfig:
    fetch: MetadataFetchConfig  # our peer id, timeouts, size bound, egress policy
    bind_ip: str = "127.0.3.1"  # local address of our DHT node
    dht_port: int = 6881  # our DHT node's UDP port
    dht_nodes: tuple[Peer, ...] = ()  # where our DHT node starts
    walks: int = 8  # BEP 51 walks toward random targets, at most
    walk_timeout: float = 30.0  # one walk
    get_peers_timeout: float = 30.0  # one get_peers lookup
    peers_per_torrent: int = 3  # peers asked for the metadata of one torrent, one after another
    max_torrents: int = 1000  # new infohashes examined per run, at most
    concurrency: int = 16  # torrents examined at once
    derived_list: str = DERIVED_LIST  # the list derived entries go to


@dataclass
class DiscoveryStats:
    walks: int = 0  # BEP 51 walks done
    nodes_sampled: int = 0  # distinct nodes that answered with samples
    early_requests: int = 0  # answers from nodes asked again within their interval
    samples: int = 0  # infohashes received, repeats included
    distinct: int = 0  # distinct infohashes received
    already_watched: int = 0  # of those, on the watchlist already
    examined: int = 0  # new infohashes looked up and asked for metadata
    no_peers: int = 0  # of those, no allowed peer claimed by the DHT
    fetched: int = 0  # verified info dicts
    fetch_failures: dict[str, int] = field(default_factory=dict)  # outcome -> attempts
    matched: int = 0  # torrents with at least one file on the watchlist
    derived: int = 0  # derived entries added (a new version of the derived list each)
    observations: int = 0  # records appended to the evidence log
    refused_by_egress: int = 0  # peers not contacted: outside the allowed networks
    errors: int = 0  # failures on our side (the last one in `last_error`)
    last_error: str | None = None
    derived_torrents: list[WatchedTorrent] = field(default_factory=list)


class SampleSource(Protocol):
    """The DHT as discovery uses it (`DhtDriver`)."""

    async def sample_infohashes(self, target: bytes, timeout: float = 30.0) -> LookupResult: ...

    async def get_peers(self, info_hash: bytes, timeout: float = 30.0) -> LookupResult: ...


class DiscoveryWatchlist(Protocol):
    """The watchlist as discovery uses it (`WatchlistStore`)."""

    def watched_torrents(self) -> list[WatchedTorrent]: ...

    def match_files(self, files: Sequence[FileKey]) -> list[FileMatch]: ...

    def add_derived(self, entry: DerivedEntry, *, list_name: str = ...) -> ImportResult: ...


class EvidenceSink(Protocol):
    """Where observations go (`EvidenceLog`)."""

    @property
    def sensor_id(self) -> str: ...

    def append(self, observations: Sequence[Observation]) -> list[int]: ...


Fetch = Callable[[str, int, bytes, MetadataFetchConfig], Awaitable[MetadataResult]]


class SampleSchedule:
    """BEP 51 'interval' per node: "An indexer should not send a new sampling request to this
    node for that period of time." Pure: times come in as arguments."""

    def __init__(self) -> None:
        self._not_before: dict[Peer, float] = {}

    def answered(self, node: Peer, interval: int | None, now: float) -> bool:
        """Note an answer from `node`; False when it came within the interval of an earlier
        one (we asked too early)."""
        due = self._not_before.get(node)
        if due is not None and now < due:
            return False
        wait = min(max(interval or 0, 0), MAX_INTERVAL)
        self._not_before[node] = now + wait
        return True

    def known(self, node: Peer) -> bool:
        return node in self._not_before

    def resting(self, now: float) -> set[Peer]:
        """Nodes that must not be sampled again yet."""
        return {n for n, due in self._not_before.items() if now < due}


@dataclass(frozen=True)
class SampledHash:
    info_hash: bytes
    node: str  # "ip:port" of the node that sampled it
    node_id: str  # its id, hex


class Discovery:
    """One discovery run: `async with Discovery(...) as d: stats = await d.run()`."""

    def __init__(
        self,
        config: DiscoveryConfig,
        watchlist: DiscoveryWatchlist,
        evidence: EvidenceSink,
        egress: EgressPolicy,
        *,
        dht: SampleSource | None = None,
        fetch: Fetch | None = None,
        progress: Callable[[DiscoveryStats], None] | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        random_target: Callable[[], bytes] = lambda: os.urandom(20),
    ) -> None:
        self.config = config
        self._watchlist = watchlist
        self._evidence = evidence
        self._egress = egress
        self._dht = dht
        self._own_dht: DhtDriver | None = None
        self._fetch: Fetch = fetch or _fetch
        self._progress = progress or (lambda _s: None)
        self._clock = clock
        self._monotonic = monotonic
        self._random_target = random_target
        self.schedule = SampleSchedule()
        self.stats = DiscoveryStats()
        self._derive_lock = asyncio.Lock()

    async def __aenter__(self) -> Discovery:
        cfg = self.config
        if self._dht is None:
            driver = DhtDriver((cfg.bind_ip, cfg.dht_port), self._egress)
            await driver.start()
            self._own_dht = driver
            self._dht = driver
            await driver.bootstrap(cfg.dht_nodes)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._own_dht is not None:
            self._own_dht.close()
            self._own_dht = None

    async def run(self) -> DiscoveryStats:
        """Sample, then examine every new infohash (bounded), record and derive the matches."""
        known: set[bytes] = set()
        for t in await asyncio.to_thread(self._watchlist.watched_torrents):
            known.update(t.lookup_hashes)
        samples = await self._sample(known)
        gate = asyncio.Semaphore(self.config.concurrency)

        async def one(sample: SampledHash) -> None:
            async with gate:
                try:
                    await self._examine(sample, known)
                except Exception as exc:
                    # Peers' faults are outcomes inside `_examine`; this is ours. Noted, and the
                    # other torrents go on.
                    self.stats.errors += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                self._progress(self.stats)

        await asyncio.gather(*(one(s) for s in samples[: self.config.max_torrents]))
        self._progress(self.stats)
        return self.stats

    # -- 1. sampling ------------------------------------------------------------------------

    async def _sample(self, known: set[bytes]) -> list[SampledHash]:
        assert self._dht is not None
        stats = self.stats
        seen: dict[bytes, SampledHash] = {}
        for _ in range(self.config.walks):
            result = await self._dht.sample_infohashes(
                self._random_target(), self.config.walk_timeout
            )
            stats.walks += 1
            now = self._monotonic()
            new_nodes = 0
            for answer in result.samples:
                node = answer.from_node
                addr = (node.ip, node.port)
                first = not self.schedule.known(addr)
                if not self.schedule.answered(addr, answer.interval, now):
                    stats.early_requests += 1
                elif first:
                    new_nodes += 1
                    stats.nodes_sampled += 1
                for info_hash in answer.samples:
                    stats.samples += 1
                    if info_hash in seen:
                        continue
                    seen[info_hash] = SampledHash(
                        info_hash, f"{node.ip}:{node.port}", node.node_id.hex()
                    )
                    if info_hash in known:
                        stats.already_watched += 1
            stats.distinct = len(seen)
            self._progress(stats)
            if new_nodes == 0:
                # Every node on this walk had been sampled already: another walk would only ask
                # them again before their interval is over (BEP 51).
                break
            done = result.done
            if done is not None and not done.timed_out and done.responses < K:
                # The walk ran out of nodes before k of them answered: it has asked every node
                # it could reach, and another walk would only ask them again.
                break
        return [s for s in seen.values() if s.info_hash not in known]

    # -- 2-4. one infohash ------------------------------------------------------------------

    async def _examine(self, sample: SampledHash, known: set[bytes]) -> None:
        assert self._dht is not None
        if sample.info_hash in known:
            return  # derived meanwhile under its other id (a hybrid is sampled under two)
        self.stats.examined += 1
        lookup = await self._dht.get_peers(sample.info_hash, self.config.get_peers_timeout)
        claimed: dict[Peer, str] = {}
        for found in lookup.found:
            for peer in found.peers:
                claimed.setdefault(peer, f"{found.from_node.ip}:{found.from_node.port}")
        peers = [p for p in sorted(claimed) if self._is_candidate(p)]
        allowed = [p for p in peers if self._egress.allows(p[0])]
        self.stats.refused_by_egress += len(peers) - len(allowed)
        if not allowed:
            self.stats.no_peers += 1
            return
        result: MetadataResult | None = None
        for peer in allowed[: self.config.peers_per_torrent]:
            attempt = await self._fetch(peer[0], peer[1], sample.info_hash, self.config.fetch)
            if attempt.ok:
                result = attempt
                break
            failures = self.stats.fetch_failures
            failures[attempt.outcome] = failures.get(attempt.outcome, 0) + 1
        if result is None or result.metainfo is None:
            return
        self.stats.fetched += 1
        meta = result.metainfo
        keys = [
            FileKey(i, f.path_str, f.length, f.sha1, f.md5, f.pieces_root)
            for i, f in enumerate(meta.files)
        ]
        matches = await asyncio.to_thread(self._watchlist.match_files, keys)
        if not matches:
            return
        source = claimed[(result.ip, result.port)]
        await self._derive(sample, source, result, meta, matches, known)

    def _is_candidate(self, peer: Peer) -> bool:
        # Our own address may come back in peer lists: never contact ourselves.
        return peer[0] != self.config.bind_ip and 0 < peer[1] < 65536

    async def _derive(
        self,
        sample: SampledHash,
        claim_source: str,
        result: MetadataResult,
        meta: Metainfo,
        matches: list[FileMatch],
        known: set[bytes],
    ) -> None:
        torrent = WatchedTorrent.from_hashes(
            meta.btih, meta.btmh, name=meta.name, piece_count=meta.piece_count
        )
        # One at a time: a hybrid sampled under both its ids must give one record, one entry.
        async with self._derive_lock:
            if any(h in known for h in torrent.lookup_hashes):
                return
            self.stats.matched += 1
            obs = match_observation(sample, claim_source, result, meta, matches)
            (seq,) = await asyncio.to_thread(self._evidence.append, [obs])
            self.stats.observations += 1
            entry = derived_entry(
                meta, matches, evidence={"sensor": self._evidence.sensor_id, "seq": seq}
            )
            entry.attributes["peer"] = f"{result.ip}:{result.port}"
            added = await asyncio.to_thread(
                self._watchlist.add_derived, entry, list_name=self.config.derived_list
            )
            known.update(torrent.lookup_hashes)
            if not added.unchanged:
                self.stats.derived += 1
                self.stats.derived_torrents.append(torrent)


async def _fetch(
    ip: str, port: int, info_hash: bytes, config: MetadataFetchConfig
) -> MetadataResult:
    return await fetch_metadata(ip, port, info_hash, config)


def _match_json(m: FileMatch) -> dict[str, ExtraValue]:
    return {
        "file_index": m.file_index,
        "file_path": m.file_path,
        "file_size": m.file_size,
        "how": m.how,
        "item_id": m.item_id,
        "list": m.list_name,
        "list_version": m.list_version,
        "source": m.source,
        "location": m.location,
        "item_name": m.name,
        "item_size": m.size,
        "category": m.category,
    }


def match_observation(
    sample: SampledHash,
    claim_source: str,
    result: MetadataResult,
    meta: Metainfo,
    matches: list[FileMatch],
) -> Observation:
    """The evidence of why a torrent was derived: the verified info dict (its SHA-1 and SHA-256
    and the peer it came from) and each matched file with the watch item it matched."""
    hows = sorted({m.how for m in matches})
    files = sorted({m.file_index for m in matches})
    extra: dict[str, ExtraValue] = {
        "detail": (
            f"info dict of {result.metadata_size} bytes fetched over BEP 9 from this peer and "
            f"verified against the infohash ({result.verified_as}); {len(files)} of its "
            f"{len(meta.files)} file(s) match the watchlist by {', '.join(hows)}. A statement "
            "about the torrent's content, not possession by the peer."
        ),
        "info_hash": sample.info_hash.hex(),
        "info_sha1": result.info_sha1,
        "info_sha256": result.info_sha256,
        "verified_as": result.verified_as,
        "metadata_size": result.metadata_size,
        "torrent_name": meta.name,
        "torrent_version": meta.version,
        "file_count": len(meta.files),
        "total_size": meta.total_size,
        "sampled_from": sample.node,
        "sampled_from_node_id": sample.node_id,
        "peer_claimed_by": claim_source,
        "encrypted": result.encrypted,
        "duration_ms": int((result.ended - result.started) * 1000),
        "matches": [_match_json(m) for m in matches],
    }
    if result.listen_port is not None:
        extra["listen_port"] = result.listen_port
    content_key = WatchedTorrent.from_hashes(meta.btih, meta.btmh).content_key
    return Observation(
        observed_ms=int(result.started * 1000),
        network="bittorrent",
        method=METHOD,
        content_key=content_key,
        ip=result.ip,
        port=result.port,
        client=result.client,
        peer_id=result.peer_id.hex() if result.peer_id else None,
        outcome=OUTCOME,
        exchange_sha256=result.exchange_sha256,
        extra=extra,
    )


def derived_entry(
    meta: Metainfo, matches: list[FileMatch], *, evidence: dict[str, object]
) -> DerivedEntry:
    """The watchlist entry for a discovered torrent, with its provenance."""
    categories = [m.category for m in matches if m.category is not None]
    return DerivedEntry(
        btih=meta.btih,
        btmh=meta.btmh,
        name=meta.name,
        size=meta.total_size,
        # The category of the first matched item that has one: what it was listed as.
        category=categories[0] if categories else None,
        attributes={
            "trackers": list(meta.trackers),
            "piece_length": meta.piece_length,
            "piece_count": meta.piece_count,
            "version": meta.version,
            "file_count": len(meta.files),
            "private": meta.private,
            "derived_from": [_match_json(m) for m in matches],
            "evidence": evidence,
        },
    )
