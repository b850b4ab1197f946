"""eD2k single-source verification: download a file's parts from one peer, check each, record it.

`verify_ed2k_peer` drives `transport.ed2k_download` against one address and turns what happened
into observations (network ``ed2k``, content key ``ed2k:<hex>``), with the same evidence model as
the BitTorrent `sensors.verify_peer` (docs/evidence.md, docs/ed2k-verify.md):

- one per checked part, method ``piece-verified``: outcome ``possession`` when the part's MD4 is
  the hashset entry (or, for a file below one part, the file hash), ``piece-failed`` when it is
  not (a failed part is *not* possession; a peer serving corrupt data is a fact too). ``extra``
  names the part, the algorithm (md4), the hash computed and the hash expected, and the bytes;
- one summary, method ``single-source-download``, with the download's outcome (never
  ``possession``): parts held / selected / verified / failed / not served, the queue rank, the
  AICH comparison (the peer's AICH master hash against the watchlist entry's ``aich``: match,
  mismatch or unknown) and whether the hashset was checked against the file hash.

Every record names the peer by its user hash (``peer_id``) and its software
(`sensors.ed2k.client_software`). By default the bytes are hashed and discarded. With
`keep_content` (the investigator's explicit, per-case decision, logged in every record's
``extra``) the bytes go to ``<dir>/<ed2k hex>/<name>.part`` as they are hashed; the file is kept
(renamed, hashed with MD5, SHA-1 and SHA-256 and matched against the watchlist) only when every
part of the file verified, and deleted otherwise: nothing half-written is left.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from peerwatch.domain.hashes import Digest, HashKind
from peerwatch.errors import InputError
from peerwatch.evidence.record import ExtraValue, Observation
from peerwatch.protocols.ed2k.hashing import aich_from_base32, aich_to_base32, data_part_count
from peerwatch.protocols.ed2k.link import LinkError, parse_ed2k_link
from peerwatch.sensors.ed2k import LOW_ID_LIMIT, client_software
from peerwatch.sensors.verify_peer import (
    METHOD_PIECE,
    METHOD_SUMMARY,
    KeptFile,
    Matcher,
    content_decision,
    hash_kept_file,
    kept_file_extra,
    safe_path_parts,
)
from peerwatch.transport.ed2k_download import (
    Ed2kDownloadConfig,
    Ed2kDownloadResult,
    PartCheck,
    download_ed2k,
)
from peerwatch.watchlist.store import Match, WatchlistStore

_PART = ".part"


@dataclass(frozen=True, slots=True)
class Ed2kTarget:
    ip: str
    port: int
    user_hash: bytes | None  # from ed2k://USERHASH@IP:PORT: lets the download obfuscate


@dataclass(frozen=True, slots=True)
class Ed2kWanted:
    """The file the user named: its hash and whatever the link or the watchlist adds."""

    file_hash: bytes
    size: int | None = None
    name: str | None = None
    aich: bytes | None = None  # expected AICH master hash (link h=, watchlist attribute aich)


@dataclass(frozen=True)
class Ed2kVerifyReport:
    download: Ed2kDownloadResult
    content_key: str
    observations: tuple[Observation, ...]
    aich: str  # "match", "mismatch" or "unknown"
    expected_aich: bytes | None
    kept: KeptFile | None = None
    not_kept: str | None = None  # why the file was not kept (only with keep_content)
    file_matches: tuple[Match, ...] = ()  # watchlist entries for the eD2k hash itself
    keep_content: Path | None = None


# --- parsing what the user typed ----------------------------------------------------------------


def is_ed2k_target(text: str) -> bool:
    return text.strip().lower().startswith("ed2k://")


def parse_ed2k_target(text: str) -> Ed2kTarget:
    """``ed2k://IP:PORT`` or ``ed2k://USERHASH@IP:PORT`` (no host names: resolving one would
    itself be traffic)."""
    rest = text.strip()[len("ed2k://") :].rstrip("/")
    user_hash: bytes | None = None
    if "@" in rest:
        head, _, rest = rest.partition("@")
        try:
            user_hash = bytes.fromhex(head)
        except ValueError:
            user_hash = None
        if user_hash is None or len(user_hash) != 16:
            raise InputError(f"{head!r} is not a user hash (32 hex digits)", field="target")
    host, sep, port_text = rest.rpartition(":")
    if not sep:
        raise InputError(f"{text!r} is not ed2k://[USERHASH@]IP:PORT", field="target")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        raise InputError(f"{host!r} is not an IP address", field="target") from None
    if not port_text.isdigit() or not 0 < int(port_text) <= 0xFFFF:
        raise InputError(f"port {port_text!r} is not 1..65535", field="target")
    return Ed2kTarget(ip, int(port_text), user_hash)


def parse_ed2k_file(text: str) -> Ed2kWanted:
    """32 hex digits (optionally ``ed2k:``-prefixed) or an ``ed2k://|file|...|/`` link."""
    value = text.strip()
    if value.lower().startswith("ed2k://"):
        try:
            link = parse_ed2k_link(value)
        except LinkError as exc:
            raise InputError(exc.reason, field="hash") from None
        return Ed2kWanted(link.file_hash, link.size, link.name, link.aich_hash)
    value = value.removeprefix("ed2k:")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != 16:
        raise InputError("an eD2k hash is 32 hex digits (or give an ed2k:// link)", field="hash")
    return Ed2kWanted(raw)


def complete_wanted(wanted: Ed2kWanted, watchlist: WatchlistStore | None) -> Ed2kWanted:
    """Fill the size, name and AICH hash from the watchlist where the link gave none."""
    if watchlist is None or (wanted.size and wanted.aich and wanted.name):
        return wanted
    entry = watchlist.ed2k_entry(wanted.file_hash)
    size, name = entry.size, entry.name
    try:
        aich = aich_from_base32(entry.aich) if entry.aich is not None else None
    except ValueError:
        aich = None
    return Ed2kWanted(
        wanted.file_hash,
        wanted.size or size,
        wanted.name or name,
        wanted.aich or aich,
    )


# --- keeping content (only when asked) ----------------------------------------------------------


class _KeptWriter:
    """A `PartSink`: streams the bytes into ``<name>.part`` as they are hashed; the file is kept
    only when every part of the file verified."""

    def __init__(self, root: Path, name: str, size: int, part_count: int) -> None:
        self.root = root
        self.name = name
        self.size = size
        self.part_count = part_count
        self.ok: set[int] = set()
        self.failed: set[int] = set()
        self._file: BinaryIO | None = None

    @property
    def part_path(self) -> Path:
        return self.root / (self.name + _PART)

    def data(self, index: int, offset: int, data: bytes) -> None:
        if self._file is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._file = self.part_path.open("w+b")  # a stale .part is never reused
        self._file.seek(offset)
        self._file.write(data)

    def part_done(self, check: PartCheck) -> None:
        (self.ok if check.ok else self.failed).add(check.index)

    def finish(self, matcher: Matcher | None) -> tuple[KeptFile | None, str | None]:
        if self._file is not None:
            self._file.close()
            self._file = None
        missing = self.part_count - len(self.ok)
        if missing or not self.part_path.exists():
            self.part_path.unlink(missing_ok=True)
            why = f"{len(self.failed)} part(s) failed" if self.failed else ""
            why = why or f"{missing} of {self.part_count} parts not verified"
            return None, f"not kept: {why}"
        final = self.root / self.name
        self.part_path.replace(final)
        return hash_kept_file(final, self.name, self.size, matcher), None


def _kept_name(wanted: Ed2kWanted) -> str:
    """The name to keep the file under: the link's or the watchlist's when it is a safe single
    path component (a list can carry anything), else the hash. Never the peer's name."""
    name = wanted.name
    if name and safe_path_parts((name,)) is not None and len(name) <= 200:
        return name
    return wanted.file_hash.hex()


# --- the sensor ---------------------------------------------------------------------------------


def aich_comparison(peer: bytes | None, expected: bytes | None) -> str:
    if peer is None or expected is None:
        return "unknown"
    return "match" if peer == expected else "mismatch"


async def verify_ed2k_peer(
    target: Ed2kTarget,
    wanted: Ed2kWanted,
    config: Ed2kDownloadConfig,
    *,
    parts: int | None = None,
    keep_content: Path | None = None,
    watchlist: Matcher | None = None,
    clock: Callable[[], float] = time.time,
) -> Ed2kVerifyReport:
    """Download from `target` only, check every part, build the observations (the caller appends
    them to the evidence log). `wanted.size` must be known (eD2k peers never send it)."""
    if wanted.size is None:
        raise InputError(
            "the file size is unknown: give an ed2k:// link, or import the file's link into the "
            "watchlist (eD2k peers never send a file's size)",
            field="hash",
        )
    writer: _KeptWriter | None = None
    if keep_content is not None:
        writer = _KeptWriter(
            keep_content / wanted.file_hash.hex(),
            _kept_name(wanted),
            wanted.size,
            data_part_count(wanted.size),
        )
    result = await download_ed2k(
        target.ip,
        target.port,
        wanted.file_hash,
        wanted.size,
        config,
        user_hash=target.user_hash,
        parts=parts,
        sink=writer,
        clock=clock,
    )
    kept: KeptFile | None = None
    not_kept: str | None = None
    if writer is not None:
        kept, not_kept = writer.finish(watchlist)
    key = f"ed2k:{wanted.file_hash.hex()}"
    file_matches: tuple[Match, ...] = ()
    if watchlist is not None:
        file_matches = tuple(watchlist.match([Digest(HashKind.ED2K, wanted.file_hash)]))
    aich = aich_comparison(result.aich_hash, wanted.aich)
    observations = build_observations(
        result,
        content_key=key,
        aich=aich,
        expected_aich=wanted.aich,
        keep_content=keep_content,
        kept=kept,
        not_kept=not_kept,
    )
    return Ed2kVerifyReport(
        result,
        key,
        tuple(observations),
        aich,
        wanted.aich,
        kept,
        not_kept,
        file_matches,
        keep_content,
    )


def build_observations(
    result: Ed2kDownloadResult,
    *,
    content_key: str,
    aich: str,
    expected_aich: bytes | None,
    keep_content: Path | None,
    kept: KeptFile | None = None,
    not_kept: str | None = None,
) -> list[Observation]:
    """One `piece-verified` observation per checked part, then the `single-source-download`
    summary. Only a part that hashed right is recorded with outcome `possession`."""
    hello = result.hello
    common: dict[str, ExtraValue] = {
        "obfuscated": result.obfuscated,
        **content_decision(keep_content),
    }

    def observation(
        at: float, method: str, outcome: str, extra: dict[str, ExtraValue]
    ) -> Observation:
        return Observation(
            observed_ms=int(at * 1000),
            network="ed2k",
            method=method,
            content_key=content_key,
            ip=result.ip,
            port=result.port,
            client=client_software(hello) if hello is not None else None,
            peer_id=hello.user_hash.hex() if hello is not None else None,
            completion_ppm=result.completion_ppm,
            outcome=outcome,
            exchange_sha256=result.exchange_sha256,
            extra=extra,
        )

    out: list[Observation] = []
    for p in result.parts:
        extra: dict[str, ExtraValue] = {
            "part_index": p.index,
            "part_length": p.length,
            "hash_algorithm": "md4",
            "part_hash": p.digest.hex(),
            "expected_hash": p.expected.hex(),
            "expected_from": p.expected_from,
            "compressed_bytes": p.compressed_bytes,
            **common,
        }
        outcome = "possession" if p.ok else "piece-failed"
        out.append(observation(p.at, METHOD_PIECE, outcome, extra))
    summary: dict[str, ExtraValue] = {
        "detail": result.detail,
        "file_size": result.file_size,
        "file_name": result.file_name,
        "part_count": result.part_count,
        "parts_held": result.parts_held,
        "selected": result.selected,
        "not_held": result.not_held,
        "requested": result.wanted,
        "verified": result.verified,
        "failed": result.failed,
        "not_served": result.not_served,
        "upload_accepted": result.upload_accepted,
        "queue_rank": result.queue_rank,
        "hashset_verified": result.hashset_verified,
        "aich": aich,
        "aich_peer": aich_to_base32(result.aich_hash) if result.aich_hash else None,
        "aich_expected": aich_to_base32(expected_aich) if expected_aich else None,
        "duration_ms": int((result.ended - result.started) * 1000),
        **common,
    }
    if hello is not None:
        summary.update(
            {
                "client_id": hello.client_id,
                "id_type": "high" if hello.client_id >= LOW_ID_LIMIT else "low",
                "tcp_port": hello.tcp_port,
                "udp_port": hello.udp_port,
                "nick": hello.name,
            }
        )
    if keep_content is not None:
        summary["file_kept"] = None if kept is None else kept_file_extra(kept)
        summary["file_not_kept"] = not_kept
    out.append(observation(result.started, METHOD_SUMMARY, result.outcome, summary))
    return out
