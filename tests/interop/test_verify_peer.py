"""Single-source verification against the lab's real libtorrent peers.

Each download talks to exactly one lab peer: the downloader records every TCP connection it
opens, and the tests assert that they all go to that one address (one connection for a plain
peer; for an encryption-only peer the refused plain attempt and the MSE one).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
import typer

from peerwatch.cli import main as cli_main
from peerwatch.cli.verify_peer import verify_peer as verify_peer_command
from peerwatch.domain.hashes import HashKind
from peerwatch.evidence.log import iter_records
from peerwatch.evidence.record import decode
from peerwatch.lab.swarm import Lab, LabPeer, LabTorrent
from peerwatch.protocols.bittorrent.metainfo import parse_metainfo
from peerwatch.sensors.verify_peer import (
    METHOD_PIECE,
    TorrentId,
    VerifyReport,
    verify_peer,
)
from peerwatch.storage.database import make_engine, migrate, sqlite_url
from peerwatch.transport.piece_download import SHA1, SHA256_MERKLE, DownloadConfig
from peerwatch.watchlist.store import WatchlistStore

CONFIG = DownloadConfig(peer_id=b"-PW0010-" + b"verifypeer00", bind_ip="127.0.3.9")


def _peer(lab: Lab, index: int) -> LabPeer:
    (peer,) = [p for p in lab.members if p.index == index]
    return peer


def _tid(t: LabTorrent) -> TorrentId:
    if t.btih:
        return TorrentId(bytes.fromhex(t.btih), None)
    assert t.btmh is not None
    return TorrentId(bytes.fromhex(t.btmh)[:20], bytes.fromhex(t.btmh))


def _verify(
    lab: Lab, index: int, name: str, *, with_torrent: bool = False, **kw: object
) -> VerifyReport:
    peer, t = _peer(lab, index), lab.torrents[name]
    meta = parse_metainfo(t.path.read_bytes()) if with_torrent else None
    return asyncio.run(
        verify_peer(peer.ip, peer.port, _tid(t), CONFIG, metainfo=meta, **kw)  # type: ignore[arg-type]
    )


def _content_sha256(t: LabTorrent) -> dict[str, str]:
    root = t.data
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_a_seed_serves_every_piece_to_us_alone_metadata_over_bep9(lab: Lab) -> None:
    t = lab.torrents["watched-v1"]
    peer = _peer(lab, 0)
    report = _verify(lab, 0, "watched-v1")
    r = report.download
    assert r.outcome == "complete", r.detail
    assert r.metadata_source == "bep9"
    assert r.verified == t.pieces and r.failed == 0 and r.not_held == 0
    assert {p.index for p in r.pieces} == set(range(t.pieces))
    assert all(p.algorithm == SHA1 for p in r.pieces)
    # Exactly one TCP connection, to that one peer: no other lab peer was contacted.
    assert r.connections == ((peer.ip, peer.port),)
    assert not r.encrypted
    assert r.client is not None and "libtorrent" in r.client
    pieces = [o for o in report.observations if o.method == METHOD_PIECE]
    assert len(pieces) == t.pieces
    assert all(o.outcome == "possession" and o.ip == peer.ip for o in pieces)
    assert {o.content_key for o in report.observations} == {f"btih:{t.btih}"}


def test_an_encryption_only_peer_is_verified_through_mse(lab: Lab) -> None:
    t = lab.torrents["watched-v1"]
    peer = _peer(lab, 4)
    assert peer.encryption == "forced"
    report = _verify(lab, 4, "watched-v1")
    r = report.download
    assert r.outcome == "complete", r.detail
    assert r.encrypted
    assert r.verified == t.pieces and r.failed == 0
    # The plain handshake was hung up on, then MSE: both connections to the same one peer.
    assert r.connections == ((peer.ip, peer.port), (peer.ip, peer.port))
    assert "plain: the peer closed the connection before its handshake" in r.detail
    assert all(o.extra["encrypted"] is True for o in report.observations)


def test_a_partial_peer_is_asked_only_for_the_pieces_it_announced(lab: Lab) -> None:
    t = lab.torrents["watched-v1"]
    peer = _peer(lab, 1)
    report = _verify(lab, 1, "watched-v1", with_torrent=True)
    r = report.download
    assert r.outcome == "complete", r.detail
    assert r.have is not None and 0 < r.have < t.pieces
    assert r.not_held == t.pieces - r.have > 0  # its damaged pieces: never requested
    assert r.verified == r.have and r.failed == 0 and r.not_served == 0
    assert r.connections == ((peer.ip, peer.port),)
    (summary,) = [o for o in report.observations if o.method != METHOD_PIECE]
    assert summary.extra["verified"] == r.have and summary.extra["not_held"] == r.not_held


def test_v2_pieces_are_checked_against_the_piece_layers(lab: Lab) -> None:
    t = lab.torrents["watched-v2"]
    report = _verify(lab, 2, "watched-v2", with_torrent=True)
    r = report.download
    assert r.outcome == "complete", r.detail
    assert r.verified == t.pieces and r.failed == 0
    assert all(p.algorithm == SHA256_MERKLE for p in r.pieces)
    assert {o.content_key for o in report.observations} == {f"btmh:{t.btmh}"}
    # BEP 9 metadata alone has no piece layers: nothing can be checked, so nothing is fetched.
    bare = _verify(lab, 2, "watched-v2").download
    assert bare.metadata_source == "bep9"
    assert bare.outcome == "no-pieces" and bare.unverifiable == t.pieces and bare.pieces == ()


def test_a_hybrid_torrent_from_a_seed_with_a_piece_limit(lab: Lab) -> None:
    report = _verify(lab, 0, "watched-hybrid", pieces=3)
    r = report.download
    assert r.outcome == "complete", r.detail
    assert r.verified == 3 and r.selected == 3
    assert [p.index for p in r.pieces] == [0, 1, 2]


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.callback()(cli_main.main)
    app.command("verify-peer")(verify_peer_command)
    return app


def test_cli_hash_and_discard_then_keep_content_with_watchlist_match(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = lab.torrents["watched-v1"]
    peer = _peer(lab, 0)
    home = tmp_path / "home"
    expected = _content_sha256(t)
    # The investigator's list: SHA-256 of one of the lab's (benign) content files.
    watched_path, watched_sha = sorted(expected.items())[1]
    lst = tmp_path / "known.txt"
    lst.write_text(f"{watched_sha}\n")
    home.mkdir()
    engine = make_engine(sqlite_url(home / "peerwatch.db"))
    migrate(engine)
    WatchlistStore(engine).import_files([lst], list_name="known", kind=HashKind.SHA256)
    cli = _cli()
    target = f"{peer.ip}:{peer.port}"

    # Default: hashed and discarded, nothing written anywhere under tmp_path but in --home.
    before = {p for p in tmp_path.rglob("*") if p.is_file() and home not in p.parents}
    cli(args=["--home", str(home), "verify-peer", target, t.btih or ""], standalone_mode=False)
    text = capsys.readouterr().out
    assert f"{t.pieces} verified" in text and "hashed and discarded" in text
    after = {p for p in tmp_path.rglob("*") if p.is_file() and home not in p.parents}
    assert after == before

    keep = tmp_path / "kept"
    cli(
        args=[
            "--home",
            str(home),
            "verify-peer",
            target,
            t.btih or "",
            "--keep-content",
            str(keep),
            "--torrent",
            str(t.path),
        ],
        standalone_mode=False,
    )
    text = capsys.readouterr().out
    assert "MATCH" in text and "known" in text and watched_sha in text
    root = keep / (t.btih or "")
    written = {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }
    assert written == expected
    assert watched_path in written

    # Both runs are in the evidence log: pieces, then the summary with the kept files' hashes.
    records = [decode(r.record).observation for r in iter_records(engine)]
    pieces = [o for o in records if o.method == METHOD_PIECE]
    assert len(pieces) == 2 * t.pieces
    assert sum(o.extra["content_kept"] is True for o in pieces) == t.pieces
    summaries = [o for o in records if o.method != METHOD_PIECE]
    files = summaries[-1].extra["files_kept"]
    assert isinstance(files, list)
    by_path = {f["path"]: f for f in files if isinstance(f, dict)}
    assert by_path[watched_path]["watchlist_matches"] == ["known"]
    engine.dispose()
