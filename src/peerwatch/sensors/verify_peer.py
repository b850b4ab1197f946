"""Single-source verification: download a torrent's pieces from one peer, check each, record it.

`verify_peer` drives `transport.piece_download` against one address and turns what happened into
observations (docs/evidence.md):

- one per checked piece, method `piece-verified`: outcome `possession` when the piece hashed to
  the metainfo's value, `piece-failed` when it did not (a failed piece is *not* possession; it is
  recorded because a peer serving corrupt data is a fact too). `extra` names the piece, the hash
  algorithm, the hash computed and the hash expected;
- one summary, method `single-source-download`, with the download's outcome (never `possession`)
  and counts: pieces selected, not held (never requested), verified, failed, not served.

By default the bytes are hashed and discarded. With `keep_content` (the investigator's explicit,
per-case decision, logged in every observation's `extra`) the verified pieces are written under
that folder; each file whose every piece verified is kept, hashed (MD5, SHA-1, SHA-256) and
matched against the watchlist; files with a missing or failed piece are deleted again.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from peerwatch.domain.hashes import Digest, HashKind, HashParseError, parse_hash
from peerwatch.errors import InputError
from peerwatch.evidence.record import ExtraValue, Observation
from peerwatch.protocols.bittorrent.metainfo import Metainfo, MetainfoError, parse_metainfo
from peerwatch.transport.piece_download import (
    DownloadConfig,
    DownloadResult,
    FileSpan,
    PiecePlan,
    PieceResult,
    download,
)
from peerwatch.watchlist.store import Match

METHOD_PIECE = "piece-verified"
METHOD_SUMMARY = "single-source-download"
_PART = ".part"


@dataclass(frozen=True, slots=True)
class TorrentId:
    """What the user named: the handshake hash, and the full hashes when known."""

    wire: bytes  # 20 bytes: v1 infohash or v2 truncated (BEP 52)
    btmh: bytes | None  # full v2 infohash when a 64-hex value was given


@dataclass(frozen=True)
class KeptFile:
    torrent_path: str  # the file's path inside the torrent
    written: Path  # where it was written
    length: int
    md5: str
    sha1: str
    sha256: str
    matches: tuple[Match, ...]  # watchlist entries for any of its hashes


@dataclass(frozen=True)
class VerifyReport:
    download: DownloadResult
    content_key: str
    observations: tuple[Observation, ...]
    kept: tuple[KeptFile, ...] = ()
    not_kept: tuple[str, ...] = ()  # files not kept: a piece missing, failed or an unsafe path
    torrent_matches: tuple[Match, ...] = ()  # watchlist entries for the infohash itself
    keep_content: Path | None = None  # where verified files were kept; None: hash and discard

    @property
    def matches(self) -> tuple[Match, ...]:
        return tuple(m for f in self.kept for m in f.matches)


class Matcher(Protocol):
    """What verification needs of the watchlist (`WatchlistStore.match`)."""

    def match(self, digests: Iterable[Digest]) -> list[Match]: ...


# --- parsing what the user typed ----------------------------------------------------------------


def parse_target(text: str) -> tuple[str, int]:
    """'IP:PORT' or '[IPv6]:PORT' (no host names: resolving one would itself be traffic)."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        raise InputError(f"{text!r} is not IP:PORT", field="target")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        raise InputError(f"{host!r} is not an IP address", field="target") from None
    if not port_text.isdigit() or not 0 < int(port_text) <= 0xFFFF:
        raise InputError(f"port {port_text!r} is not 1..65535", field="target")
    return ip, int(port_text)


def parse_infohash(text: str) -> TorrentId:
    """40 hex digits (v1, or a v2 hash truncated to 20 bytes) or 64 (v2), with an optional
    'btih:' / 'btmh:' prefix; a 32-character base32 v1 hash is accepted too."""
    value = text.strip()
    kind = HashKind.BTIH
    for prefix in ("btih:", "btmh:"):
        if value.lower().startswith(prefix):
            value = value[len(prefix) :]
            kind = HashKind.BTMH if prefix == "btmh:" else HashKind.BTIH
    try:
        raw = parse_hash(value).value
    except HashParseError as exc:
        raise InputError(str(exc), field="infohash") from None
    if len(raw) == 32:
        return TorrentId(raw[:20], raw)
    if len(raw) == 20 and kind is not HashKind.BTMH:
        return TorrentId(raw, None)
    raise InputError("an infohash is 40 (v1) or 64 (v2) hex digits", field="infohash")


def load_torrent(path: Path, wanted: TorrentId) -> Metainfo:
    """Read a .torrent and check that it is the torrent the user named."""
    try:
        meta = parse_metainfo(path.read_bytes())
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=str(path)) from None
    except MetainfoError as exc:
        raise InputError(str(exc), source=str(path)) from None
    if not metainfo_matches(meta, wanted):
        raise InputError(
            "this torrent's infohash is not the one given on the command line", source=str(path)
        )
    return meta


def metainfo_matches(meta: Metainfo, wanted: TorrentId) -> bool:
    if wanted.btmh is not None:
        return meta.btmh == wanted.btmh
    return wanted.wire in (meta.btih, meta.btmh_truncated)


def content_key(meta: Metainfo | None, wanted: TorrentId) -> str:
    """Same naming as the sweep (`WatchedTorrent.content_key`)."""
    if meta is not None:
        if meta.btih is not None:
            return f"btih:{meta.btih.hex()}"
        if meta.btmh is not None:
            return f"btmh:{meta.btmh.hex()}"
    if wanted.btmh is not None:
        return f"btmh:{wanted.btmh.hex()}"
    return f"btih:{wanted.wire.hex()}"


# --- keeping content (only when asked) ----------------------------------------------------------


def safe_path_parts(path: tuple[str, ...]) -> tuple[str, ...] | None:
    """The path's components if none can leave the folder (metadata may come from the peer)."""
    for part in path:
        if part in ("", ".", "..") or any(c in part for c in "/\\\0") or ":" in part[:2]:
            return None
    return path


class _ContentWriter:
    """Writes verified pieces into the files they cover, under `root`; nothing else is written."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.plan: PiecePlan | None = None
        self._open: dict[int, BinaryIO] = {}
        self.ok: set[int] = set()

    def piece(self, result: PieceResult, data: bytes, plan: PiecePlan) -> None:
        if not result.ok:
            return  # unverified bytes are never kept
        self.plan = plan
        self.ok.add(result.index)
        start = result.index * plan.piece_length
        end = start + len(data)
        for n, span in enumerate(plan.files):
            lo, hi = max(start, span.offset), min(end, span.offset + span.length)
            if lo >= hi or safe_path_parts(span.path) is None:
                continue
            f = self._file(n, span)
            f.seek(lo - span.offset)
            f.write(data[lo - start : hi - start])

    def _file(self, n: int, span: FileSpan) -> BinaryIO:
        f = self._open.get(n)
        if f is None:
            target = self._part_path(span)
            target.parent.mkdir(parents=True, exist_ok=True)
            f = target.open("w+b")  # a stale .part of an earlier run is never reused
            self._open[n] = f
        return f

    def _part_path(self, span: FileSpan) -> Path:
        return self.root.joinpath(*span.path).with_name(span.path[-1] + _PART)

    def finish(self, matcher: Matcher | None) -> tuple[list[KeptFile], list[str]]:
        for f in self._open.values():
            f.close()
        kept: list[KeptFile] = []
        not_kept: list[str] = []
        plan = self.plan
        if plan is None:
            return kept, not_kept
        for n, span in enumerate(plan.files):
            name = "/".join(span.path)
            part = self._part_path(span)
            complete = all(i in self.ok for i in plan.pieces_of(span))
            if safe_path_parts(span.path) is None:
                not_kept.append(f"{name} (unsafe path)")
                continue
            if not complete or n not in self._open:
                part.unlink(missing_ok=True)
                not_kept.append(name)
                continue
            final = self.root.joinpath(*span.path)
            part.replace(final)
            kept.append(hash_kept_file(final, name, span.length, matcher))
        return kept, not_kept


def hash_kept_file(path: Path, name: str, length: int, matcher: Matcher | None) -> KeptFile:
    md5 = hashlib.md5(usedforsecurity=False)
    sha1 = hashlib.sha1(usedforsecurity=False)
    sha256 = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            md5.update(chunk)
            sha1.update(chunk)
            sha256.update(chunk)
    digests = [
        Digest(HashKind.MD5, md5.digest()),
        Digest(HashKind.SHA1, sha1.digest()),
        Digest(HashKind.SHA256, sha256.digest()),
    ]
    matches = tuple(matcher.match(digests)) if matcher is not None else ()
    return KeptFile(
        name, path, length, md5.hexdigest(), sha1.hexdigest(), sha256.hexdigest(), matches
    )


# --- the sensor ---------------------------------------------------------------------------------


async def verify_peer(
    ip: str,
    port: int,
    torrent: TorrentId,
    config: DownloadConfig,
    *,
    metainfo: Metainfo | None = None,
    pieces: int | None = None,
    keep_content: Path | None = None,
    watchlist: Matcher | None = None,
    clock: Callable[[], float] = time.time,
) -> VerifyReport:
    """Download from `ip:port` only, check every piece, and build the observations (the caller
    appends them to the evidence log). `keep_content` is where verified files go when the
    investigator decided to keep them; None keeps nothing."""
    if metainfo is not None and not metainfo_matches(metainfo, torrent):
        raise InputError("the metainfo given is not the torrent named", field="infohash")
    writer: _ContentWriter | None = None
    if keep_content is not None:
        root = keep_content / torrent.wire.hex()
        root.mkdir(parents=True, exist_ok=True)
        writer = _ContentWriter(root)

    def on_piece(result: PieceResult, data: bytes, plan: PiecePlan) -> None:
        if writer is not None:
            writer.piece(result, data, plan)
        # Otherwise hash and discard: the bytes go out of scope here.

    result = await download(
        ip,
        port,
        torrent.wire,
        config,
        on_piece,
        metainfo=metainfo,
        btmh=torrent.btmh,
        pieces=pieces,
        clock=clock,
    )
    kept: list[KeptFile] = []
    not_kept: list[str] = []
    if writer is not None:
        kept, not_kept = writer.finish(watchlist)
    key = content_key(result.metainfo, torrent)
    torrent_matches: tuple[Match, ...] = ()
    if watchlist is not None:
        torrent_matches = tuple(watchlist.match(_torrent_digests(result.metainfo, torrent)))
    observations = build_observations(
        result, content_key=key, keep_content=keep_content, kept=kept, not_kept=not_kept
    )
    return VerifyReport(
        result,
        key,
        tuple(observations),
        tuple(kept),
        tuple(not_kept),
        torrent_matches,
        keep_content,
    )


def _torrent_digests(meta: Metainfo | None, torrent: TorrentId) -> list[Digest]:
    out = []
    if meta is not None and meta.btih is not None:
        out.append(Digest(HashKind.BTIH, meta.btih))
    if meta is not None and meta.btmh is not None:
        out.append(Digest(HashKind.BTMH, meta.btmh))
    if not out:
        if torrent.btmh is not None:
            out.append(Digest(HashKind.BTMH, torrent.btmh))
        else:
            out.append(Digest(HashKind.BTIH, torrent.wire))
    return out


def _names(matches: Iterable[Match]) -> ExtraValue:
    return list[ExtraValue](sorted({m.list_name for m in matches}))


def content_decision(keep_content: Path | None) -> dict[str, ExtraValue]:
    """The investigator's decision about content, logged with every record it concerns."""
    out: dict[str, ExtraValue] = {"content_kept": keep_content is not None}
    if keep_content is not None:
        out["keep_content_dir"] = os.fspath(keep_content)
    return out


def kept_file_extra(f: KeptFile) -> ExtraValue:
    """A kept file as a summary record lists it: where, how long, its hashes, its matches."""
    return {
        "path": f.torrent_path,
        "length": f.length,
        "md5": f.md5,
        "sha1": f.sha1,
        "sha256": f.sha256,
        "watchlist_matches": _names(f.matches),
    }


def _address(ip: str, port: int) -> ExtraValue:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def build_observations(
    result: DownloadResult,
    *,
    content_key: str,
    keep_content: Path | None,
    kept: Sequence[KeptFile] = (),
    not_kept: Sequence[str] = (),
) -> list[Observation]:
    """One `piece-verified` observation per checked piece, then the `single-source-download`
    summary. Only a piece that hashed right is recorded with outcome `possession`."""
    common: dict[str, ExtraValue] = {
        "encrypted": result.encrypted,
        "metadata_source": result.metadata_source,
        **content_decision(keep_content),
    }
    peer_id = result.peer_id.hex() if result.peer_id else None

    def observation(
        at: float, method: str, outcome: str, extra: dict[str, ExtraValue]
    ) -> Observation:
        return Observation(
            observed_ms=int(at * 1000),
            network="bittorrent",
            method=method,
            content_key=content_key,
            ip=result.ip,
            port=result.port,
            client=result.client,
            peer_id=peer_id,
            completion_ppm=result.completion_ppm,
            outcome=outcome,
            exchange_sha256=result.exchange_sha256,
            extra=extra,
        )

    out: list[Observation] = []
    for p in result.pieces:
        extra: dict[str, ExtraValue] = {
            "piece_index": p.index,
            "piece_length": p.length,
            "hash_algorithm": p.algorithm,
            "piece_hash": p.digest.hex(),
            "expected_hash": p.expected.hex(),
            **common,
        }
        outcome = "possession" if p.ok else "piece-failed"
        out.append(observation(p.at, METHOD_PIECE, outcome, extra))
    summary: dict[str, ExtraValue] = {
        "detail": result.detail,
        "piece_count": result.total,
        "pieces_announced": result.have,
        "selected": result.selected,
        "not_held": result.not_held,
        "unverifiable": result.unverifiable,
        "requested": result.wanted,
        "verified": result.verified,
        "failed": result.failed,
        "not_served": result.not_served,
        "connections": [_address(ip, port) for ip, port in result.connections],
        "duration_ms": int((result.ended - result.started) * 1000),
        **common,
    }
    if keep_content is not None:
        summary["files_kept"] = [kept_file_extra(f) for f in kept]
        summary["files_not_kept"] = list[ExtraValue](not_kept)
    out.append(observation(result.started, METHOD_SUMMARY, result.outcome, summary))
    return out
