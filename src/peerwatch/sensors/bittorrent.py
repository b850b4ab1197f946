"""The BitTorrent sweep: find who claims to offer each watched torrent, then prove it.

For every watched torrent: DHT get_peers lookups (BEP 5) under each of its ids and announces to
its own and the configured trackers (BEP 3/15) give *claims*; each claim is recorded as an
observation (method `dht-get-peers` / `tracker-announce`, outcome `claim`, naming the node or
tracker that made it, so a ghost peer is attributable). Every distinct claimed address is then
probed (`transport.peer_probe`) and the probe's result is recorded too: possession, no pieces, or
the negative result (refused, unreachable, ...), which matters as much in court.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field

from peerwatch.domain.torrents import WatchedTorrent
from peerwatch.evidence.log import EvidenceLog
from peerwatch.evidence.record import Observation
from peerwatch.protocols.bittorrent.krpc import Peer
from peerwatch.protocols.bittorrent.tracker_http import AnnounceEvent, AnnounceRequest
from peerwatch.sensors.probe_evidence import probe_observation
from peerwatch.transport.dht_driver import DhtDriver
from peerwatch.transport.egress import EgressPolicy
from peerwatch.transport.peer_probe import ProbeConfig, probe
from peerwatch.transport.tracker_client import announce


@dataclass(frozen=True)
class SweepConfig:
    probe: ProbeConfig  # our peer id, timeouts, local address
    bind_ip: str = "127.0.3.1"  # local address for every socket of the sensor
    dht_port: int = 6881  # our DHT node's UDP port (on bind_ip)
    dht_nodes: tuple[Peer, ...] = ()  # where our DHT node starts; empty: no DHT
    trackers: tuple[str, ...] = ()  # announced to for every torrent, besides its own trackers
    use_dht: bool = True
    use_trackers: bool = True
    listen_port: int = 6881  # the port we announce (we do not accept connections)
    probe_concurrency: int = 64  # probes in flight at once
    dht_timeout: float = 30.0  # one get_peers lookup
    tracker_timeout: float = 10.0  # one announce


@dataclass
class SweepStats:
    sweeps: int = 0
    torrents: int = 0
    claims: int = 0  # (peer, source) claims received
    candidates: int = 0  # distinct addresses probed
    proven: int = 0  # probes that proved possession
    observations: int = 0  # records appended to the evidence log
    refused_by_egress: int = 0  # addresses not contacted because the egress policy forbids them
    per_torrent: dict[str, set[tuple[str, int]]] = field(default_factory=dict)  # proven peers
    source_errors: dict[str, str] = field(default_factory=dict)  # tracker/DHT -> its last failure
    probe_errors: int = 0  # probes that failed on our side (recorded as outcome "sensor-error")


@dataclass(frozen=True, slots=True)
class _Claim:
    peer: Peer
    method: str  # "dht-get-peers" or "tracker-announce"
    source: str  # the DHT node ("ip:port") or tracker URL that made the claim
    source_id: str | None  # the DHT node's id (hex)
    lookup_hash: bytes


class BitTorrentSweep:
    def __init__(
        self,
        config: SweepConfig,
        evidence: EvidenceLog,
        egress: EgressPolicy,
        *,
        progress: Callable[[SweepStats], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._evidence = evidence
        self._egress = egress
        self._progress = progress or (lambda _s: None)
        self._clock = clock
        self.stats = SweepStats()
        self._dht: DhtDriver | None = None

    async def __aenter__(self) -> BitTorrentSweep:
        cfg = self.config
        if cfg.use_dht and cfg.dht_nodes:
            self._dht = DhtDriver((cfg.bind_ip, cfg.dht_port), self._egress)
            await self._dht.start()
            await self._dht.bootstrap(cfg.dht_nodes)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._dht is not None:
            self._dht.close()

    async def sweep(self, torrents: Sequence[WatchedTorrent]) -> SweepStats:
        """One pass over `torrents`: claims, then probes, all recorded."""
        for torrent in torrents:
            claims = await self._claims(torrent)
            await self._record(self._claim_observations(torrent, claims))
            await self._probe_all(torrent, claims)
            self.stats.torrents += 1
            self._progress(self.stats)
        self.stats.sweeps += 1
        self._progress(self.stats)
        return self.stats

    async def _claims(self, torrent: WatchedTorrent) -> list[_Claim]:
        jobs: list[tuple[str, Coroutine[object, object, list[_Claim]]]] = []
        if self._dht is not None:
            jobs += [("dht", self._dht_claims(h)) for h in torrent.lookup_hashes]
        if self.config.use_trackers:
            urls = dict.fromkeys((*torrent.trackers, *self.config.trackers))
            jobs += [
                (url, self._tracker_claims(url, h)) for url in urls for h in torrent.lookup_hashes
            ]
        found: list[_Claim] = []
        # One source failing (a tracker URL from the torrent that no code path expected, say)
        # is noted against that source; the others' claims still count.
        parts = await asyncio.gather(*(job for _, job in jobs), return_exceptions=True)
        for (source, _job), part in zip(jobs, parts, strict=True):
            if isinstance(part, BaseException):
                if not isinstance(part, Exception):
                    raise part  # cancellation and interrupts are not a source's fault
                self.stats.source_errors[source] = f"{type(part).__name__}: {part}"
                continue
            found.extend(part)
        self.stats.claims += len(found)
        return found

    async def _dht_claims(self, info_hash: bytes) -> list[_Claim]:
        assert self._dht is not None
        result = await self._dht.get_peers(info_hash, self.config.dht_timeout)
        return [
            _Claim(
                peer,
                "dht-get-peers",
                f"{f.from_node.ip}:{f.from_node.port}",
                f.from_node.node_id.hex(),
                info_hash,
            )
            for f in result.found
            for peer in f.peers
        ]

    async def _tracker_claims(self, url: str, info_hash: bytes) -> list[_Claim]:
        cfg = self.config
        req = AnnounceRequest(
            info_hash=info_hash,
            peer_id=cfg.probe.peer_id,
            port=cfg.listen_port,
            left=1,
            event=AnnounceEvent.STARTED,
        )
        answer = await announce(
            url, req, self._egress, timeout=cfg.tracker_timeout, bind_ip=cfg.bind_ip
        )
        if answer.error is not None:
            self.stats.source_errors[url] = answer.error
        else:
            # Leave the swarm again so that the tracker does not hand our address to others.
            stop = AnnounceRequest(
                info_hash=info_hash,
                peer_id=cfg.probe.peer_id,
                port=cfg.listen_port,
                left=1,
                event=AnnounceEvent.STOPPED,
            )
            await announce(
                url, stop, self._egress, timeout=cfg.tracker_timeout, bind_ip=cfg.bind_ip
            )
        return [
            _Claim((p.ip, p.port), "tracker-announce", url, None, info_hash) for p in answer.peers
        ]

    def _claim_observations(
        self, torrent: WatchedTorrent, claims: list[_Claim]
    ) -> list[Observation]:
        now_ms = int(self._clock() * 1000)
        out = []
        for c in claims:
            if not self._is_candidate(c.peer):
                continue
            extra: dict[str, str | int | bool | None] = {"source": c.source}
            if c.source_id:
                extra["source_node_id"] = c.source_id
            if c.lookup_hash != torrent.wire_hash:
                extra["lookup_hash"] = c.lookup_hash.hex()
            out.append(
                Observation(
                    observed_ms=now_ms,
                    network="bittorrent",
                    method=c.method,
                    content_key=torrent.content_key,
                    ip=c.peer[0],
                    port=c.peer[1],
                    outcome="claim",
                    extra=extra,
                )
            )
        return out

    def _is_candidate(self, peer: Peer) -> bool:
        # Our own announces may come back in peer lists: never probe or record ourselves.
        return peer[0] != self.config.bind_ip and 0 < peer[1] < 65536

    async def _probe_all(self, torrent: WatchedTorrent, claims: list[_Claim]) -> None:
        peers = sorted({c.peer for c in claims if self._is_candidate(c.peer)})
        allowed = [p for p in peers if self._egress.allows(p[0])]
        self.stats.refused_by_egress += len(peers) - len(allowed)
        self.stats.candidates += len(allowed)
        gate = asyncio.Semaphore(self.config.probe_concurrency)

        async def one(peer: Peer) -> Observation:
            async with gate:
                started = self._clock()
                try:
                    result = await probe(
                        peer[0],
                        peer[1],
                        torrent.wire_hash,
                        self.config.probe,
                        piece_count=torrent.piece_count,
                    )
                except Exception as exc:
                    # `probe` turns every fault of the peer into an outcome, so this is ours; it
                    # is recorded as such, and the other probes of the sweep go on.
                    self.stats.probe_errors += 1
                    return self._sensor_error(torrent, peer, started, exc)
            if result.outcome == "possession":
                self.stats.proven += 1
                self.stats.per_torrent.setdefault(torrent.content_key, set()).add(peer)
            return probe_observation(result, content_key=torrent.content_key)

        observations = await asyncio.gather(*(one(p) for p in allowed))
        await self._record(list(observations))

    def _sensor_error(
        self, torrent: WatchedTorrent, peer: Peer, started: float, exc: Exception
    ) -> Observation:
        return Observation(
            observed_ms=int(started * 1000),
            network="bittorrent",
            method="connect",
            content_key=torrent.content_key,
            ip=peer[0],
            port=peer[1],
            outcome="sensor-error",
            extra={
                "detail": f"the sensor failed while probing: {type(exc).__name__}: {exc}"[:1000],
                "duration_ms": int((self._clock() - started) * 1000),
            },
        )

    async def _record(self, observations: list[Observation]) -> None:
        if not observations:
            return
        # The database write runs in a thread so that probes keep going meanwhile.
        await asyncio.to_thread(self._evidence.append, observations)
        self.stats.observations += len(observations)
        self._progress(self.stats)
