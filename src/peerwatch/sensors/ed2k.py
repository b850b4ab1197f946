"""The eD2k sensor: probe eMule/aMule peers for watched files and record every result.

For every (peer, watched file) pair the sensor runs one probe (`transport.ed2k_probe`): HELLO with
the sensor's own stable user hash, the file request batch in one write, and the peer's answer.
Each probe gives exactly one observation (network ``ed2k``, content key ``ed2k:<hex>``):

- method ``file-status``, outcome ``possession``: the peer answered OP_FILESTATUS on our file
  hash after an accepted HELLO; completion from its part status (a complete file: 1,000,000 ppm);
- method ``no-file``, outcome ``no-file``: the peer answered OP_FILEREQANSNOFIL, it does not share
  the file; recorded because a negative result matters as much in court;
- method ``hello``: a HELLOANSWER but no file answer (outcome says why);
- method ``connect``: no HELLOANSWER (refused, unreachable, timeout, hung up, protocol error).

Only ``file-status`` is ever recorded with outcome ``possession``. Every observation that got a
HELLOANSWER names the peer by its user hash (``peer_id``), its software and version (``client``),
and carries its client id (with high/low: an id >= 2**24 is a high id, the peer's IPv4 address
as the server saw it), its TCP and UDP ports and whether the stream was obfuscated (``extra``).

With servers (`--server HOST:PORT`), the sweep first logs into every server and asks it for
the sources of every watched file (`transport.ed2k_server`). Each listed source is recorded as
method ``server-sources``, outcome ``claim`` (what the server says its clients offered: a claim,
never possession), and each high-id source becomes a probe candidate for the files it was listed
for, with the user hash the OBFU answer gave (so a peer that requires obfuscation can be
dialled). Low-id sources (firewalled; id < 2**24, no address) are recorded with ip ``0.0.0.0``
(no address known) and never probed. Peers given directly are probed for every file; a peer both
given and listed is probed once per file.

With Kad nodes (`--kad-node HOST:PORT`), the sweep bootstraps from them and runs one Kad2 source
search per watched file (`transport.kad`, one search at a time: its send budget is per search).
Each source a node lists is recorded as method ``kad-sources``, outcome ``claim`` (what that node
stores, never possession: nodes can list "ghost" peers), and each high-id source becomes a probe
candidate for that file, with the user hash the node gave. Firewalled (buddy) sources are
recorded, never probed.

With source exchange (`--source-exchange`, `Ed2kProbeConfig.source_exchange`), every probe of a
peer that advertises SX2 also asks it for its sources of the file (OP_REQUESTSOURCES2 in the file
request multipacket; see `transport.ed2k_probe`). Each source a peer lists is recorded as method
``source-exchange``, outcome ``claim`` (the peer's word, never possession), naming the peer that
told us; each high-id source not yet probed for that file in this sweep is probed for it in a
follow-up round of the same sweep, whose probes ask for sources too. A hostile peer can list
thousands of fake sources, so everything is bounded per sweep: at most `sx_claims_per_answer`
claims recorded per answer, `sx_new_peers` addresses first dialled because of source lists and
`sx_rounds` follow-up rounds; what is left over is counted (`sx_not_followed`), never dialled.
Low-id sources (no address) are recorded with ip ``0.0.0.0`` and never probed; addresses outside
the egress policy are never dialled.

The user hash is the sensor's identity on the network: it is created once and kept in
HOME/keys/ed2k-userhash (aMule bans, for hours, an address that shows a second user hash).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from peerwatch.evidence.log import EvidenceLog
from peerwatch.evidence.record import ExtraValue, Observation
from peerwatch.protocols.ed2k.client import PeerHello
from peerwatch.protocols.ed2k.server import FileQuery
from peerwatch.transport.ed2k_probe import Ed2kProbeConfig, Ed2kProbeResult, probe_ed2k
from peerwatch.transport.ed2k_server import (
    Ed2kServerConfig,
    Ed2kServerResult,
    ServerSource,
    query_server,
)
from peerwatch.transport.egress import EgressPolicy
from peerwatch.transport.kad import KadSearchConfig, KadSearchResult, find_sources

USER_HASH_FILE = "ed2k-userhash"
NO_ADDRESS = "0.0.0.0"  # noqa: S104 (not a bind: the ip of a low-id claim, which has no address)
LOW_ID_LIMIT = 0x1000000  # aMule HIGHEST_LOWID_ED2K: ids below are low ids

# CT_EMULE_VERSION compat byte -> software (aMule src/include/common/ClientSoftware.h).
_SOFTWARE = {
    0x00: "eMule",
    0x01: "cDonkey",
    0x02: "xMule",
    0x03: "aMule",
    0x04: "Shareaza",
    0x05: "eMule Plus",
    0x06: "Hydranode",
    0x0A: "MLDonkey",
    0x14: "lphant",
    0x28: "Shareaza",
    0x32: "eDonkeyHybrid",
    0x33: "eDonkey",
    0x34: "MLDonkey",
    0x35: "Old eMule",
    0x44: "Shareaza",
    0x98: "MLDonkey",
}


def load_user_hash(keys_dir: Path) -> bytes:
    """The sensor's eD2k user hash, created once (random, with eMule's marks: byte 5 = 14,
    byte 14 = 111, as eMule/aMule make theirs) and kept in `keys_dir`."""
    path = keys_dir / USER_HASH_FILE
    if path.exists():
        value = bytes.fromhex(path.read_text().strip())
        if len(value) != 16:
            raise ValueError(f"{path} does not hold a 16-byte user hash")
        return value
    keys_dir.mkdir(parents=True, exist_ok=True)
    fresh = bytearray(os.urandom(16))
    fresh[5], fresh[14] = 14, 111
    tmp = path.with_suffix(".tmp")
    tmp.write_text(fresh.hex() + "\n")
    tmp.replace(path)
    return bytes(fresh)


def client_software(hello: PeerHello) -> str:
    """ "aMule 2.3.3", "eMule 0.50.0", or the eDonkey version number when that is all it said."""
    if hello.emule_version is not None and hello.compat_client is not None:
        name = _SOFTWARE.get(hello.compat_client, f"compat {hello.compat_client:#04x}")
        major, minor, update = hello.emule_version
        text = f"{name} {major}.{minor}.{update}"
        return f"{text} ({hello.mod_version})" if hello.mod_version else text
    return f"eDonkey-compatible (version {hello.version})" if hello.version else "unknown"


def result_observation(
    result: Ed2kProbeResult, *, clock_offset_ms: int | None = None
) -> Observation:
    hello = result.hello
    if result.outcome == "possession":
        method = "file-status"
    elif result.outcome == "no-file":
        method = "no-file"
    elif hello is not None:
        method = "hello"
    else:
        method = "connect"
    extra: dict[str, ExtraValue] = {
        "detail": result.detail,
        "obfuscated": result.obfuscated,
        "duration_ms": int((result.ended - result.started) * 1000),
    }
    if hello is not None:
        extra.update(
            {
                "client_id": hello.client_id,
                "id_type": "high" if hello.client_id >= LOW_ID_LIMIT else "low",
                "tcp_port": hello.tcp_port,
                "udp_port": hello.udp_port,
                "kad_port": hello.kad_port,
                "nick": hello.name,
                "requires_obfuscation": hello.requires_crypt,
            }
        )
    if result.file_name is not None:
        extra["file_name"] = result.file_name
    if result.status is not None:
        extra["part_count"] = result.status.part_count
        extra["parts_held"] = None if result.status.complete else result.status.have_count
    if result.sources_detail:  # the probe had source exchange on
        extra["sources_requested"] = result.sources_requested
        extra["sources_listed"] = len(result.sources)
        extra["sources_detail"] = result.sources_detail
    return Observation(
        observed_ms=int(result.started * 1000),
        network="ed2k",
        method=method,
        content_key=f"ed2k:{result.file_hash.hex()}",
        ip=result.ip,
        port=result.port,
        clock_offset_ms=clock_offset_ms,
        client=client_software(hello) if hello is not None else None,
        peer_id=hello.user_hash.hex() if hello is not None else None,
        completion_ppm=result.completion_ppm,
        outcome=result.outcome,
        exchange_sha256=result.exchange_sha256,
        extra=extra,
    )


@dataclass(frozen=True, slots=True)
class Ed2kPeer:
    ip: str
    port: int
    user_hash: bytes | None = None  # known from a source list or the command line (obfuscation)


@dataclass(frozen=True, slots=True)
class Ed2kServer:
    host: str
    port: int

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


def server_claim_observations(
    result: Ed2kServerResult, *, clock_offset_ms: int | None = None
) -> list[Observation]:
    """One ``server-sources`` / ``claim`` observation per (file answer, listed source)."""
    out = []
    for answer in result.files:
        for src in answer.sources:
            extra: dict[str, ExtraValue] = {
                "server": result.endpoint,
                "server_name": result.server_name,
                "answer": "FOUNDSOURCES_OBFU" if answer.obfuscated else "FOUNDSOURCES",
                "client_id": src.client_id,
                "id_type": "low" if src.low_id else "high",
                "tcp_port": src.port,
                "crypt_options": src.crypt_options,
                "user_hash": src.user_hash.hex() if src.user_hash is not None else None,
                "requires_obfuscation": src.requires_obfuscation,
                "sources_in_answer": len(answer.sources),
                "our_client_id": result.client_id,
            }
            out.append(
                Observation(
                    observed_ms=int(answer.at * 1000),
                    network="ed2k",
                    method="server-sources",
                    content_key=f"ed2k:{answer.file_hash.hex()}",
                    ip=src.ip if src.ip is not None else NO_ADDRESS,
                    port=None if src.low_id else src.port,
                    clock_offset_ms=clock_offset_ms,
                    peer_id=src.user_hash.hex() if src.user_hash is not None else None,
                    outcome="claim",
                    exchange_sha256=result.exchange_sha256,
                    extra=extra,
                )
            )
    return out


def kad_claim_observations(
    result: KadSearchResult, *, clock_offset_ms: int | None = None
) -> list[Observation]:
    """One ``kad-sources`` / ``claim`` observation per source a Kad node listed."""
    out = []
    for src in result.sources:
        node = f"{src.node[0]}:{src.node[1]}"
        extra: dict[str, ExtraValue] = {
            "node": node,
            "source_type": src.source_type,
            "id_type": "low" if src.low_id else "high",
            "tcp_port": src.tcp_port,
            "udp_port": src.udp_port,
            "crypt_options": src.crypt_options,
            "requires_obfuscation": src.requires_crypt,
            "user_hash": src.user_hash.hex(),
            "nodes_queried": result.contacts_queried,
        }
        if src.low_id:
            extra["buddy"] = (
                f"{src.buddy_ip}:{src.buddy_port}" if src.buddy_ip is not None else None
            )
        out.append(
            Observation(
                observed_ms=int(result.finished_at * 1000),
                network="ed2k",
                method="kad-sources",
                content_key=f"ed2k:{result.file_hash.hex()}",
                ip=src.ip,
                port=None if src.low_id else src.tcp_port,
                clock_offset_ms=clock_offset_ms,
                peer_id=src.user_hash.hex(),
                outcome="claim",
                exchange_sha256=result.exchange_digest,
                extra=extra,
            )
        )
    return out


def sx_claim_observations(
    result: Ed2kProbeResult, limit: int, *, clock_offset_ms: int | None = None
) -> list[Observation]:
    """One ``source-exchange`` / ``claim`` observation per source the peer listed (its first
    `limit`), naming the peer that told us by address and user hash."""
    hello = result.hello
    out = []
    for src in result.sources[: max(limit, 0)]:
        extra: dict[str, ExtraValue] = {
            "told_by": f"{result.ip}:{result.port}",
            "told_by_user_hash": hello.user_hash.hex() if hello is not None else None,
            "sx_version": src.version,
            "client_id": src.client_id,
            "id_type": "low" if src.low_id else "high",
            "tcp_port": src.tcp_port,
            "server": f"{_ipv4(src.server_ip)}:{src.server_port}" if src.server_ip else None,
            "user_hash": src.user_hash.hex() if src.user_hash is not None else None,
            "crypt_options": src.crypt_options,
            "requires_obfuscation": (
                bool(src.crypt_options & 4) if src.crypt_options is not None else None
            ),
            "sources_in_answer": len(result.sources),
        }
        ip = src.ip
        out.append(
            Observation(
                observed_ms=int(result.ended * 1000),
                network="ed2k",
                method="source-exchange",
                content_key=f"ed2k:{result.file_hash.hex()}",
                ip=ip if ip is not None else NO_ADDRESS,
                port=None if src.low_id else src.tcp_port,
                clock_offset_ms=clock_offset_ms,
                peer_id=src.user_hash.hex() if src.user_hash is not None else None,
                outcome="claim",
                exchange_sha256=result.exchange_sha256,
                extra=extra,
            )
        )
    return out


def _ipv4(value: int) -> str:
    """A server IP as aMule writes it (CreateSrcInfoPacket `GetServerIP`: network byte order
    read as a little-endian uint32)."""
    return ".".join(str(b) for b in value.to_bytes(4, "little"))


@dataclass(frozen=True, slots=True)
class Ed2kFile:
    file_hash: bytes
    size: int | None = None


@dataclass(frozen=True)
class Ed2kSweepConfig:
    probe: Ed2kProbeConfig  # our identity, timeouts, local address, obfuscation mode
    concurrency: int = 8  # peers probed at once; each peer is asked about one file at a time
    # server logins: None = the probe's user hash and local address, default timeouts
    server: Ed2kServerConfig | None = None
    # Kad source searches: None = default budget and timeouts, the sweep's egress policy
    kad: KadSearchConfig | None = None
    # Source exchange (when probe.source_exchange): per-sweep bounds, so that a peer listing
    # thousands of fake sources cannot make a sweep unbounded (see module doc).
    sx_rounds: int = 2  # follow-up rounds probing listed sources (each may list more)
    sx_new_peers: int = 64  # addresses first dialled because a peer listed them
    sx_claims_per_answer: int = 501  # claims recorded per answer (aMule lists at most 501)


@dataclass
class Ed2kSweepStats:
    sweeps: int = 0
    probes: int = 0
    proven: int = 0  # probes that recorded possession
    no_file: int = 0
    failed: int = 0  # no HELLOANSWER or no file answer
    probe_errors: int = 0  # probes that failed on our side (recorded as outcome "sensor-error")
    observations: int = 0
    refused_by_egress: int = 0
    per_file: dict[str, set[tuple[str, int]]] = field(default_factory=dict)  # proven peers
    servers_asked: int = 0  # server sessions run
    server_errors: dict[str, str] = field(default_factory=dict)  # server -> why it failed
    claims: int = 0  # (server answer or Kad node, source) claims recorded
    low_id_claims: int = 0  # of which low id (recorded, never probed)
    kad_searches: int = 0  # Kad source searches run (one per file and sweep)
    kad_errors: dict[str, str] = field(default_factory=dict)  # file -> why its search failed
    sx_answers: int = 0  # probes whose peer answered the source request
    sx_claims: int = 0  # source-exchange claims recorded (also counted in `claims`)
    sx_rounds: int = 0  # follow-up rounds run
    sx_new_peers: int = 0  # addresses dialled because a peer listed them
    sx_not_followed: int = 0  # listed high-id sources left unprobed by the bounds
    sx_unrecorded: int = 0  # listed sources past `sx_claims_per_answer` (not recorded)


class Ed2kSweep:
    """Probe every peer for every file; append one observation per probe."""

    def __init__(
        self,
        config: Ed2kSweepConfig,
        log: EvidenceLog,
        egress: EgressPolicy,
        *,
        progress: Callable[[Ed2kSweepStats], None] | None = None,
    ) -> None:
        self.config = config
        self._log = log
        self._egress = egress
        self._progress = progress
        self.stats = Ed2kSweepStats()

    async def sweep(
        self,
        peers: Sequence[Ed2kPeer],
        files: Sequence[Ed2kFile],
        servers: Sequence[Ed2kServer] = (),
        kad_nodes: Sequence[tuple[str, int]] = (),
    ) -> Ed2kSweepStats:
        gate = asyncio.Semaphore(self.config.concurrency)
        claims, listed = await self._ask_servers(servers, files)
        kad_claims, kad_listed = await self._ask_kad(kad_nodes, files)
        claims += kad_claims
        listed += kad_listed
        # One entry per address (the one that knows the user hash): aMule takes a second
        # connection with our user hash from our address, while the first is open, as a thief.
        # Given peers are asked about every file; listed sources about the files they were
        # listed for.
        by_address: dict[tuple[str, int], Ed2kPeer] = {}
        wanted: dict[tuple[str, int], set[bytes]] = {}
        every = {f.file_hash for f in files}
        for peer, hashes in [*((p, every) for p in peers), *listed]:
            key = (peer.ip, peer.port)
            known = by_address.get(key)
            if known is None or (known.user_hash is None and peer.user_hash is not None):
                by_address[key] = peer
            wanted.setdefault(key, set()).update(hashes)
        allowed = []
        for peer in by_address.values():
            if self._egress.allows(peer.ip):
                allowed.append(peer)
            else:
                self.stats.refused_by_egress += 1
        dialled = {(p.ip, p.port) for p in allowed}
        state = _SweepState(dialled=dialled, refused=set(by_address) - dialled)
        round_results = await self._probe_round(allowed, wanted, files, gate, state.probed)
        observations = claims + [o for o, _ in round_results]
        if self.config.probe.source_exchange:
            rounds = 0
            while True:
                found, targets, want = self._source_candidates(
                    [r for _, r in round_results if r is not None],
                    state,
                    follow=rounds < self.config.sx_rounds,
                )
                observations += found
                if not targets:
                    break
                rounds += 1
                self.stats.sx_rounds += 1
                round_results = await self._probe_round(targets, want, files, gate, state.probed)
                observations += [o for o, _ in round_results]
        if observations:
            await asyncio.to_thread(self._log.append, observations)
        self.stats.observations += len(observations)
        self.stats.sweeps += 1
        if self._progress is not None:
            self._progress(self.stats)
        return self.stats

    async def _probe_round(
        self,
        peers: Sequence[Ed2kPeer],
        wanted: dict[tuple[str, int], set[bytes]],
        files: Sequence[Ed2kFile],
        gate: asyncio.Semaphore,
        probed: set[tuple[str, int, bytes]],
    ) -> list[tuple[Observation, Ed2kProbeResult | None]]:
        """Probe each peer for the files it is wanted for: one observation per probe, with the
        probe's result (None when the probe failed on our side)."""

        async def one_peer(peer: Ed2kPeer) -> list[tuple[Observation, Ed2kProbeResult | None]]:
            out: list[tuple[Observation, Ed2kProbeResult | None]] = []
            mine = wanted[(peer.ip, peer.port)]
            async with gate:
                for f in files:  # one file at a time per peer, each on its own connection
                    if f.file_hash not in mine:
                        continue
                    probed.add((peer.ip, peer.port, f.file_hash))
                    started = time.time()
                    try:
                        result = await probe_ed2k(
                            peer.ip,
                            peer.port,
                            f.file_hash,
                            self.config.probe,
                            user_hash=peer.user_hash,
                            file_size=f.size,
                        )
                    except Exception as exc:
                        # `probe_ed2k` turns every fault of the peer into an outcome, so this
                        # one is ours: recorded as such, and the sweep's other probes go on.
                        self.stats.probes += 1
                        self.stats.probe_errors += 1
                        out.append((_sensor_error(peer, f, started, exc), None))
                        continue
                    out.append((self._count(result), result))
            return out

        batches = await asyncio.gather(*(one_peer(p) for p in peers))
        return [pair for batch in batches for pair in batch]

    def _source_candidates(
        self,
        results: Sequence[Ed2kProbeResult],
        state: _SweepState,
        *,
        follow: bool,
    ) -> tuple[list[Observation], list[Ed2kPeer], dict[tuple[str, int], set[bytes]]]:
        """The source-exchange claims of a round's probes, and the sources to probe next: high
        ids not yet probed for that file in this sweep, inside the egress policy and the sweep's
        budget of new addresses (`sx_new_peers`); none when `follow` is false (the sweep's
        rounds are used up)."""
        limit = self.config.sx_claims_per_answer
        claims: list[Observation] = []
        peers: dict[tuple[str, int], Ed2kPeer] = {}
        want: dict[tuple[str, int], set[bytes]] = {}
        for result in results:
            if result.sources_answered:
                self.stats.sx_answers += 1
            found = sx_claim_observations(result, limit)
            claims += found
            self.stats.claims += len(found)
            self.stats.sx_claims += len(found)
            self.stats.sx_unrecorded += max(len(result.sources) - limit, 0)
            for src in result.sources[: max(limit, 0)]:
                ip = src.ip
                if ip is None:
                    self.stats.low_id_claims += 1
                    continue  # a low id has no address: recorded, never probed
                key = (ip, src.tcp_port)
                if src.tcp_port == 0 or key in state.refused:
                    continue  # no port to dial, or already refused by the egress policy
                if (ip, src.tcp_port, result.file_hash) in state.probed:
                    continue  # asked about this file in this sweep already
                if not follow:
                    self.stats.sx_not_followed += 1  # the sweep's rounds are used up
                    continue
                if key not in state.dialled:
                    if not self._egress.allows(ip):
                        state.refused.add(key)
                        self.stats.refused_by_egress += 1
                        continue
                    if state.new_peers >= self.config.sx_new_peers:
                        self.stats.sx_not_followed += 1
                        continue
                    state.dialled.add(key)
                    state.new_peers += 1
                    self.stats.sx_new_peers += 1
                known = peers.get(key)
                if known is None or (known.user_hash is None and src.user_hash is not None):
                    peers[key] = Ed2kPeer(ip, src.tcp_port, src.user_hash)
                want.setdefault(key, set()).add(result.file_hash)
        if self._progress is not None:
            self._progress(self.stats)
        return claims, list(peers.values()), want

    async def _ask_servers(
        self, servers: Sequence[Ed2kServer], files: Sequence[Ed2kFile]
    ) -> tuple[list[Observation], list[tuple[Ed2kPeer, set[bytes]]]]:
        """Every server's source list for every file: the claim observations, and the dialable
        (high-id) sources with the files each was listed for."""
        if not servers or not files:
            return [], []
        probe = self.config.probe
        # --obfuscation obfuscated means no plain bytes at all: the server connections too
        config = self.config.server or Ed2kServerConfig(
            probe.identity.user_hash,
            name=probe.identity.name,
            bind_ip=probe.bind_ip,
            obfuscation=probe.obfuscation == "obfuscated",
        )
        queries = [FileQuery(f.file_hash, f.size) for f in files]
        asked = []
        for server in dict.fromkeys(servers):
            if self._egress.allows(server.host):
                asked.append(server)
            else:  # reported as a server error (refused_by_egress counts peers)
                self.stats.server_errors[server.endpoint] = "outside the allowed networks"
        results = await asyncio.gather(
            *(query_server(x.host, x.port, queries, config) for x in asked),
            return_exceptions=True,
        )
        claims: list[Observation] = []
        listed: dict[tuple[str, int], tuple[ServerSource, set[bytes]]] = {}
        for server, result in zip(asked, results, strict=True):
            self.stats.servers_asked += 1
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # cancellation and interrupts are not the server's fault
                # a bug of ours in one server's exchange: noted, the other servers still count
                self.stats.server_errors[server.endpoint] = f"{type(result).__name__}: {result}"
                continue
            if result.outcome != "answered":
                self.stats.server_errors[result.endpoint] = f"{result.outcome}: {result.detail}"
            found = server_claim_observations(result)
            claims += found
            self.stats.claims += len(found)
            for answer in result.files:
                for src in answer.sources:
                    if src.ip is None:
                        self.stats.low_id_claims += 1
                        continue  # a low id has no address: recorded, never probed
                    key = (src.ip, src.port)
                    known = listed.get(key)
                    if known is None:
                        listed[key] = (src, {answer.file_hash})
                    else:
                        keep = known[0] if known[0].user_hash is not None else src
                        listed[key] = (keep, known[1] | {answer.file_hash})
        if self._progress is not None:
            self._progress(self.stats)
        peers = [
            (Ed2kPeer(ip, port, src.user_hash), hashes)
            for (ip, port), (src, hashes) in listed.items()
        ]
        return claims, peers

    async def _ask_kad(
        self, nodes: Sequence[tuple[str, int]], files: Sequence[Ed2kFile]
    ) -> tuple[list[Observation], list[tuple[Ed2kPeer, set[bytes]]]]:
        """One Kad source search per file: the claim observations, and the dialable (high-id)
        sources with the file each was listed for."""
        if not nodes or not files:
            return [], []
        config = self.config.kad or KadSearchConfig(egress=self._egress)
        claims: list[Observation] = []
        listed: list[tuple[Ed2kPeer, set[bytes]]] = []
        for f in files:  # one search at a time: the per-IP send budget is per search
            self.stats.kad_searches += 1
            try:
                result = await find_sources(
                    nodes, f.file_hash, f.size, bind_ip=self.config.probe.bind_ip, config=config
                )
            except Exception as exc:  # a bootstrap node outside the egress policy, or our bug
                self.stats.kad_errors[f.file_hash.hex()] = f"{type(exc).__name__}: {exc}"
                continue
            found = kad_claim_observations(result)
            claims += found
            self.stats.claims += len(found)
            for src in result.sources:
                if src.low_id:
                    self.stats.low_id_claims += 1
                    continue  # firewalled: reachable only through its buddy, never probed
                listed.append((Ed2kPeer(src.ip, src.tcp_port, src.user_hash), {f.file_hash}))
        if self._progress is not None:
            self._progress(self.stats)
        return claims, listed

    def _count(self, result: Ed2kProbeResult) -> Observation:
        self.stats.probes += 1
        if result.outcome == "possession":
            self.stats.proven += 1
            key = f"ed2k:{result.file_hash.hex()}"
            self.stats.per_file.setdefault(key, set()).add((result.ip, result.port))
        elif result.outcome == "no-file":
            self.stats.no_file += 1
        else:
            self.stats.failed += 1
        if self._progress is not None:
            self._progress(self.stats)
        return result_observation(result)


@dataclass
class _SweepState:
    """What one sweep has done so far (source exchange's bounds and dedup are per sweep)."""

    dialled: set[tuple[str, int]]  # addresses dialled (or to be) in this sweep
    refused: set[tuple[str, int]]  # addresses outside the egress policy
    probed: set[tuple[str, int, bytes]] = field(default_factory=set)  # (ip, port, file) asked
    new_peers: int = 0  # addresses dialled because a peer listed them


def _sensor_error(peer: Ed2kPeer, f: Ed2kFile, started: float, exc: Exception) -> Observation:
    """A probe that raised: our fault, recorded (never possession) so the sweep goes on."""
    return Observation(
        observed_ms=int(started * 1000),
        network="ed2k",
        method="connect",
        content_key=f"ed2k:{f.file_hash.hex()}",
        ip=peer.ip,
        port=peer.port,
        outcome="sensor-error",
        extra={
            "detail": f"the sensor failed while probing: {type(exc).__name__}: {exc}"[:1000],
            "duration_ms": int((time.time() - started) * 1000),
        },
    )
