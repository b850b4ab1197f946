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

The user hash is the sensor's identity on the network: it is created once and kept in
HOME/keys/ed2k-userhash (aMule bans, for hours, an address that shows a second user hash).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from peerwatch.evidence.log import EvidenceLog
from peerwatch.evidence.record import ExtraValue, Observation
from peerwatch.protocols.ed2k.client import PeerHello
from peerwatch.transport.ed2k_probe import Ed2kProbeConfig, Ed2kProbeResult, probe_ed2k
from peerwatch.transport.egress import EgressPolicy

USER_HASH_FILE = "ed2k-userhash"
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
class Ed2kFile:
    file_hash: bytes
    size: int | None = None


@dataclass(frozen=True)
class Ed2kSweepConfig:
    probe: Ed2kProbeConfig  # our identity, timeouts, local address, obfuscation mode
    concurrency: int = 8  # peers probed at once; each peer is asked about one file at a time


@dataclass
class Ed2kSweepStats:
    sweeps: int = 0
    probes: int = 0
    proven: int = 0  # probes that recorded possession
    no_file: int = 0
    failed: int = 0  # no HELLOANSWER or no file answer
    observations: int = 0
    refused_by_egress: int = 0
    per_file: dict[str, set[tuple[str, int]]] = field(default_factory=dict)  # proven peers


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

    async def sweep(self, peers: Sequence[Ed2kPeer], files: Sequence[Ed2kFile]) -> Ed2kSweepStats:
        gate = asyncio.Semaphore(self.config.concurrency)
        # One entry per address (the one that knows the user hash): aMule takes a second
        # connection with our user hash from our address, while the first is open, as a thief.
        by_address: dict[tuple[str, int], Ed2kPeer] = {}
        for peer in peers:
            known = by_address.get((peer.ip, peer.port))
            if known is None or (known.user_hash is None and peer.user_hash is not None):
                by_address[(peer.ip, peer.port)] = peer
        allowed = []
        for peer in by_address.values():
            if self._egress.allows(peer.ip):
                allowed.append(peer)
            else:
                self.stats.refused_by_egress += 1

        async def one_peer(peer: Ed2kPeer) -> list[Observation]:
            out = []
            async with gate:
                for f in files:  # one file at a time per peer, each on its own connection
                    result = await probe_ed2k(
                        peer.ip,
                        peer.port,
                        f.file_hash,
                        self.config.probe,
                        user_hash=peer.user_hash,
                        file_size=f.size,
                    )
                    out.append(self._count(result))
            return out

        batches = await asyncio.gather(*(one_peer(p) for p in allowed))
        observations = [o for batch in batches for o in batch]
        if observations:
            await asyncio.to_thread(self._log.append, observations)
        self.stats.observations += len(observations)
        self.stats.sweeps += 1
        if self._progress is not None:
            self._progress(self.stats)
        return self.stats

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
