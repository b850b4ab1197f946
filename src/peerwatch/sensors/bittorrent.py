"""The BitTorrent sweep: find who claims to offer each watched torrent, then prove it.

For every watched torrent: DHT get_peers lookups (BEP 5) under each of its ids and announces to
its own and the configured trackers (BEP 3/15) give *claims*; each claim is recorded as an
observation (method `dht-get-peers` / `tracker-announce`, outcome `claim`, naming the node or
tracker that made it, so a ghost peer is attributable, and timed when it reached us). Every
distinct claimed address is probed (`transport.peer_probe`) and the probe's result is recorded
too: possession, no pieces, or the negative result (refused, unreachable, ...), which matters as
much in court.

Probes start as soon as an address is first claimed: the DHT streams each node's reply
(`DhtDriver.get_peers(on_peers=...)`) and each tracker answer is used when it arrives, so a peer
is probed while the lookups and announces still run instead of after the slowest of them (a
departed DHT node among the closest holds a lookup open for a 2 s timeout). The log keeps its
order: a torrent's claims are appended once its lookups, announces and PEX are done, then its
probes once every probe has ended.

With `use_pex`, peer exchange (BEP 11) adds claims: the sweep connects to the start peers
(`pex_peers`, and every peer the DHT and trackers claimed), collects their ut_pex lists
(`transport.pex`), then asks the peers learned that way, breadth-first for `pex_rounds` rounds.
Each learned peer is a claim with method `pex` naming the peer that told us (and the digest of
that exchange); all of them are then probed like any other claim.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field

from peerwatch.domain.torrents import WatchedTorrent
from peerwatch.evidence.log import EvidenceLog
from peerwatch.evidence.record import Observation
from peerwatch.protocols.bittorrent.dht import DhtConfig, PeersFound
from peerwatch.protocols.bittorrent.krpc import Peer
from peerwatch.protocols.bittorrent.tracker_http import AnnounceEvent, AnnounceRequest
from peerwatch.sensors.probe_evidence import probe_observation
from peerwatch.transport.dht_driver import DhtDriver
from peerwatch.transport.egress import EgressPolicy
from peerwatch.transport.peer_probe import ProbeConfig, probe
from peerwatch.transport.pex import PexResult, collect_pex
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
    pex_peers: tuple[Peer, ...] = ()  # where peer exchange starts (besides DHT/tracker claims)
    use_pex: bool = False
    pex_wait: float = 75.0  # how long one peer may take to send its first ut_pex message
    pex_rounds: int = 2  # breadth-first rounds: the start peers, then the peers they named, ...
    pex_max_peers: int = 1000  # peers asked for PEX per torrent, at most
    dht: DhtConfig = field(default_factory=DhtConfig)  # our DHT node's budgets and timeouts


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
    pex_asked: int = 0  # peers asked for their PEX list
    pex_answered: int = 0  # of those, peers that sent at least one ut_pex message
    pex_errors: int = 0  # PEX collections that failed on our side


@dataclass(frozen=True, slots=True)
class _Claim:
    peer: Peer
    method: str  # "dht-get-peers", "tracker-announce" or "pex"
    source: str  # the DHT node or PEX peer ("ip:port") or tracker URL that made the claim
    source_id: str | None  # the DHT node's id (hex)
    lookup_hash: bytes
    exchange_sha256: str | None = None  # PEX: digest of the exchange the claim came from
    at_ms: int | None = None  # when the claim reached us (None: when it is recorded)


class _Prober:
    """Probes every distinct claimed address of one torrent once, each as soon as it is first
    claimed, at most `probe_concurrency` at a time; `observations()` waits for them all."""

    def __init__(self, sweep: BitTorrentSweep, torrent: WatchedTorrent) -> None:
        self._sweep = sweep
        self._torrent = torrent
        self._gate = asyncio.Semaphore(sweep.config.probe_concurrency)
        self._seen: set[Peer] = set()
        self._tasks: dict[Peer, asyncio.Task[Observation]] = {}

    def claimed(self, peer: Peer) -> None:
        sweep = self._sweep
        if peer in self._seen or not sweep._is_candidate(peer):
            return
        self._seen.add(peer)
        if not sweep._egress.allows(peer[0]):
            sweep.stats.refused_by_egress += 1
            return
        sweep.stats.candidates += 1
        self._tasks[peer] = asyncio.create_task(sweep._probe_one(self._torrent, peer, self._gate))

    async def observations(self) -> list[Observation]:
        """Every probe's observation, in address order (as when probes began after the claims)."""
        done = await asyncio.gather(*self._tasks.values())
        by_peer = dict(zip(self._tasks, done, strict=True))
        return [by_peer[p] for p in sorted(by_peer)]

    def cancel(self) -> None:
        for task in self._tasks.values():
            task.cancel()


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
            self._dht = DhtDriver((cfg.bind_ip, cfg.dht_port), self._egress, config=cfg.dht)
            await self._dht.start()
            await self._dht.bootstrap(cfg.dht_nodes)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._dht is not None:
            self._dht.close()

    async def sweep(self, torrents: Sequence[WatchedTorrent]) -> SweepStats:
        """One pass over `torrents`: claims and probes (each begun when its address is first
        claimed), all recorded."""
        for torrent in torrents:
            prober = _Prober(self, torrent)
            try:
                claims = await self._claims(torrent, prober.claimed)
                if self.config.use_pex:
                    claims += await self._pex_claims(torrent, claims, prober.claimed)
                await self._record(self._claim_observations(torrent, claims))
                await self._record(await prober.observations())
            finally:
                prober.cancel()  # only the unfinished ones, when something above raised
            self.stats.torrents += 1
            self._progress(self.stats)
        self.stats.sweeps += 1
        self._progress(self.stats)
        return self.stats

    async def _claims(
        self, torrent: WatchedTorrent, on_peer: Callable[[Peer], None]
    ) -> list[_Claim]:
        """Every claim of the DHT and the trackers for `torrent`; `on_peer` is called with each
        claimed address the moment its claim arrives."""
        found: list[_Claim] = []

        def emit(claim: _Claim) -> None:
            found.append(claim)
            on_peer(claim.peer)

        jobs: list[tuple[str, Coroutine[object, object, None]]] = []
        if self._dht is not None:
            jobs += [("dht", self._dht_claims(h, emit)) for h in torrent.lookup_hashes]
        if self.config.use_trackers:
            urls = dict.fromkeys((*torrent.trackers, *self.config.trackers))
            jobs += [
                (url, self._tracker_claims(url, h, emit))
                for url in urls
                for h in torrent.lookup_hashes
            ]
        # One source failing (a tracker URL from the torrent that no code path expected, say)
        # is noted against that source; the others' claims still count, and so do the claims
        # the failing source made before it failed (they may be probed already).
        parts = await asyncio.gather(*(job for _, job in jobs), return_exceptions=True)
        for (source, _job), part in zip(jobs, parts, strict=True):
            if isinstance(part, BaseException):
                if not isinstance(part, Exception):
                    raise part  # cancellation and interrupts are not a source's fault
                self.stats.source_errors[source] = f"{type(part).__name__}: {part}"
        self.stats.claims += len(found)
        return found

    async def _dht_claims(self, info_hash: bytes, emit: Callable[[_Claim], None]) -> None:
        assert self._dht is not None

        def on_peers(f: PeersFound) -> None:
            at_ms = int(self._clock() * 1000)
            source = f"{f.from_node.ip}:{f.from_node.port}"
            node_id = f.from_node.node_id.hex()
            for peer in f.peers:
                emit(_Claim(peer, "dht-get-peers", source, node_id, info_hash, at_ms=at_ms))

        await self._dht.get_peers(info_hash, self.config.dht_timeout, on_peers=on_peers)

    async def _tracker_claims(
        self, url: str, info_hash: bytes, emit: Callable[[_Claim], None]
    ) -> None:
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
        at_ms = int(self._clock() * 1000)
        # Handed over before the `stopped` announce below, so their probes start meanwhile.
        for p in answer.peers:
            emit(_Claim((p.ip, p.port), "tracker-announce", url, None, info_hash, at_ms=at_ms))
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

    async def _pex_claims(
        self, torrent: WatchedTorrent, known: list[_Claim], on_peer: Callable[[Peer], None]
    ) -> list[_Claim]:
        """Breadth-first peer exchange from the start peers and the peers already claimed;
        `on_peer` is called with each learned address as its round ends."""
        cfg = self.config
        frontier = list(dict.fromkeys([*cfg.pex_peers, *(c.peer for c in known)]))
        asked: set[Peer] = set()
        found: list[_Claim] = []
        gate = asyncio.Semaphore(cfg.probe_concurrency)

        async def one(peer: Peer) -> PexResult | None:
            async with gate:
                try:
                    return await collect_pex(
                        peer[0], peer[1], torrent.wire_hash, cfg.probe, wait=cfg.pex_wait
                    )
                except Exception as exc:
                    # `collect_pex` turns the peer's faults into outcomes: this one is ours.
                    self.stats.pex_errors += 1
                    self.stats.source_errors[f"pex {peer[0]}:{peer[1]}"] = (
                        f"{type(exc).__name__}: {exc}"
                    )
                    return None

        for _round in range(cfg.pex_rounds):
            batch = []
            for peer in frontier:
                if peer in asked or not self._is_candidate(peer):
                    continue
                if len(asked) >= cfg.pex_max_peers:
                    break
                asked.add(peer)
                if not self._egress.allows(peer[0]):
                    self.stats.refused_by_egress += 1
                    continue
                batch.append(peer)
            if not batch:
                break
            self.stats.pex_asked += len(batch)
            results = await asyncio.gather(*(one(p) for p in batch))
            frontier = []
            at_ms = int(self._clock() * 1000)
            for peer, result in zip(batch, results, strict=True):
                if result is None or not result.messages:
                    continue
                self.stats.pex_answered += 1
                for learned in result.added:
                    found.append(
                        _Claim(
                            learned,
                            "pex",
                            f"{peer[0]}:{peer[1]}",
                            None,
                            torrent.wire_hash,
                            result.exchange_sha256,
                            at_ms,
                        )
                    )
                    frontier.append(learned)
                    on_peer(learned)
        self.stats.claims += len(found)
        return found

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
            if c.exchange_sha256:
                extra["exchange_sha256"] = c.exchange_sha256
            if c.lookup_hash != torrent.wire_hash:
                extra["lookup_hash"] = c.lookup_hash.hex()
            out.append(
                Observation(
                    observed_ms=now_ms if c.at_ms is None else c.at_ms,
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
        # Our own announces may come back in peer lists: never probe or record ourselves. Only the
        # announced endpoint is ours: a peer may share our address (everything on ::1 does).
        own = (self.config.bind_ip, self.config.listen_port)
        return peer != own and 0 < peer[1] < 65536

    async def _probe_one(
        self, torrent: WatchedTorrent, peer: Peer, gate: asyncio.Semaphore
    ) -> Observation:
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
            self._progress(self.stats)
        return probe_observation(result, content_key=torrent.content_key)

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
