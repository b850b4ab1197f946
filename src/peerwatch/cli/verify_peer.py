"""`peerwatch verify-peer IP:PORT INFOHASH` (BitTorrent) and `peerwatch verify-peer
ed2k://[USERHASH@]IP:PORT HASH|LINK` (eD2k): single-source download with every piece or part
checked."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from peerwatch.app import App
from peerwatch.cli.context import app_of, err, out
from peerwatch.errors import InputError
from peerwatch.protocols.ed2k.client import ClientIdentity
from peerwatch.sensors.ed2k import load_user_hash
from peerwatch.sensors.ed2k_verify import (
    Ed2kVerifyReport,
    complete_wanted,
    is_ed2k_target,
    parse_ed2k_file,
    parse_ed2k_target,
    verify_ed2k_peer,
)
from peerwatch.sensors.verify_peer import (
    VerifyReport,
    load_torrent,
    parse_infohash,
    parse_target,
)
from peerwatch.sensors.verify_peer import (
    verify_peer as run_verify,
)
from peerwatch.transport.ed2k_download import Ed2kDownloadConfig
from peerwatch.transport.ed2k_probe import Ed2kProbeConfig
from peerwatch.transport.piece_download import DownloadConfig


def _pieces(value: str, option: str = "--pieces") -> int | None:
    if value.strip().lower() == "all":
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise typer.BadParameter(f"{option} must be 'all' or a positive number, not {value!r}")
    return int(value)


def verify_peer(
    ctx: typer.Context,
    target: Annotated[
        str,
        typer.Argument(
            help="The one peer to download from: IP:PORT (BitTorrent) or "
            "ed2k://[USERHASH@]IP:PORT (eD2k; the user hash lets the stream be obfuscated)."
        ),
    ],
    infohash: Annotated[
        str,
        typer.Argument(
            help="Infohash: 40 hex digits (v1 or truncated v2) or 64 (v2); for an ed2k:// "
            "target, the eD2k hash (32 hex digits) or an ed2k://|file|...|/ link.",
            metavar="HASH",
        ),
    ],
    pieces: Annotated[
        str,
        typer.Option(help="How many of the pieces the peer announces to fetch: N or 'all'."),
    ] = "all",
    parts: Annotated[
        str | None,
        typer.Option(
            help="eD2k: how many of the parts the peer holds to fetch, first ones first: N or "
            "'all' [default: all].",
            show_default=False,
        ),
    ] = None,
    bind: Annotated[
        str | None,
        typer.Option(
            help="Local IP to connect from [default: chosen by the system].", show_default=False
        ),
    ] = None,
    keep_content: Annotated[
        Path | None,
        typer.Option(
            "--keep-content",
            help="Keep verified whole files under this folder, hash them (MD5, SHA-1, SHA-256) "
            "and match them against the watchlist. Without it, bytes are hashed and discarded.",
            show_default=False,
        ),
    ] = None,
    torrent: Annotated[
        Path | None,
        typer.Option(
            "--torrent",
            help="The .torrent file [default: fetch the metadata from the same peer (BEP 9)].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Download pieces (eD2k: parts) from ONE peer only and check each one.

    Every checked piece is recorded in the evidence log (method piece-verified): outcome
    'possession' when it hashed right, 'piece-failed' when not. eD2k parts are checked with MD4
    against the peer's hashset, itself checked against the file hash. Exit status 0 when at least
    one piece verified, 1 otherwise. Only loopback addresses are contacted.
    """
    if is_ed2k_target(target):
        _verify_ed2k(app_of(ctx), target, infohash, parts or pieces, keep_content, torrent, bind)
        return
    if parts is not None:
        raise InputError("--parts is for ed2k:// targets; use --pieces", source="command line")
    ip, port = parse_target(target)
    wanted = parse_infohash(infohash)
    limit = _pieces(pieces)
    meta = load_torrent(torrent, wanted) if torrent is not None else None
    app = app_of(ctx)
    if keep_content is not None:
        err.print(f"[yellow]keeping content:[/] verified files go to {escape(str(keep_content))}")
    config = DownloadConfig(peer_id=b"-PW0010-" + secrets.token_hex(6).encode(), bind_ip=bind)
    report = asyncio.run(
        run_verify(
            ip,
            port,
            wanted,
            config,
            metainfo=meta,
            pieces=limit,
            keep_content=keep_content,
            watchlist=app.watchlist,
        )
    )
    app.evidence.append(report.observations)
    _render(report)
    if report.download.verified == 0:
        raise typer.Exit(1)


def _verify_ed2k(
    app: App,
    target: str,
    hash_text: str,
    parts: str,
    keep_content: Path | None,
    torrent: Path | None,
    bind: str | None,
) -> None:
    if torrent is not None:
        raise InputError("--torrent is for BitTorrent targets", source="command line")
    peer = parse_ed2k_target(target)
    wanted = complete_wanted(parse_ed2k_file(hash_text), app.watchlist)
    limit = _pieces(parts, "--parts")
    if keep_content is not None:
        err.print(f"[yellow]keeping content:[/] verified files go to {escape(str(keep_content))}")
    # The sensor's one stable user hash, as `sense ed2k` uses: aMule bans, for hours, an
    # address that shows a second one.
    identity = ClientIdentity(
        load_user_hash(app.settings.keys_dir), client_id=0, supports_crypt=True
    )
    config = Ed2kDownloadConfig(Ed2kProbeConfig(identity, bind_ip=bind))
    report = asyncio.run(
        verify_ed2k_peer(
            peer,
            wanted,
            config,
            parts=limit,
            keep_content=keep_content,
            watchlist=app.watchlist,
        )
    )
    app.evidence.append(report.observations)
    _render_ed2k(report)
    if report.download.verified == 0:
        raise typer.Exit(1)


def _render_ed2k(report: Ed2kVerifyReport) -> None:
    r = report.download
    table = Table("", "", show_header=False, box=None)
    table.add_row("peer", f"{r.ip}:{r.port}" + (" (obfuscated)" if r.obfuscated else ""))
    table.add_row("user hash", r.hello.user_hash.hex() if r.hello is not None else "-")
    table.add_row("file", report.content_key + f" ({r.file_size:,} bytes)")
    table.add_row("client", escape(report.observations[-1].client or "-"))
    table.add_row("outcome", f"{r.outcome}: {escape(r.detail)}")
    table.add_row(
        "parts held",
        "-" if r.parts_held is None else f"{r.parts_held} / {r.part_count}",
    )
    table.add_row(
        "upload",
        ("accepted" if r.upload_accepted else "not accepted")
        + (f", queue rank {r.queue_rank}" if r.queue_rank is not None else ""),
    )
    table.add_row(
        "hashset",
        {
            None: "not needed (one part: the file hash is the part hash)",
            True: "matches the file hash",
            False: "does not match the file hash",
        }[r.hashset_verified],
    )
    table.add_row("AICH", report.aich)
    table.add_row(
        "parts",
        f"[green]{r.verified} verified[/], "
        + (f"[red]{r.failed} failed[/]" if r.failed else "0 failed")
        + f", {r.not_held} not held (not requested), {r.not_served} not served",
    )
    table.add_row(
        "content",
        "hashed and discarded"
        if report.keep_content is None
        else (
            f"kept under {escape(str(report.kept.written))}"
            if report.kept is not None
            else escape(report.not_kept or "not kept")
        ),
    )
    table.add_row("evidence", f"{len(report.observations)} observations recorded")
    out.print(table)
    for m in report.file_matches:
        out.print(f"[bold]watchlist:[/] eD2k hash on list {escape(m.list_name)} v{m.list_version}")
    if report.kept is not None:
        files = Table("file", "bytes", "SHA-256", "watchlist")
        f = report.kept
        lists = ", ".join(sorted({m.list_name for m in f.matches}))
        files.add_row(
            escape(f.torrent_path),
            f"{f.length:,}",
            f.sha256,
            f"[bold red]MATCH[/] {escape(lists)}" if lists else "-",
        )
        out.print(files)


def _render(report: VerifyReport) -> None:
    r = report.download
    table = Table("", "", show_header=False, box=None)
    table.add_row("peer", f"{r.ip}:{r.port}" + (" (MSE)" if r.encrypted else ""))
    table.add_row("torrent", report.content_key)
    table.add_row("client", escape(r.client or "-"))
    table.add_row("outcome", f"{r.outcome}: {escape(r.detail)}")
    table.add_row("metadata", r.metadata_source or "-")
    if r.total is not None:
        table.add_row("pieces announced", f"{r.have if r.have is not None else '?'} / {r.total}")
    table.add_row(
        "pieces",
        f"[green]{r.verified} verified[/], "
        + (f"[red]{r.failed} failed[/]" if r.failed else "0 failed")
        + f", {r.not_held} not held (not requested), {r.not_served} not served"
        + (f", {r.unverifiable} without known hashes" if r.unverifiable else ""),
    )
    table.add_row("connections", ", ".join(f"{ip}:{port}" for ip, port in r.connections))
    table.add_row(
        "content",
        "hashed and discarded"
        if report.keep_content is None
        else f"verified whole files kept under {escape(str(report.keep_content))}",
    )
    table.add_row("evidence", f"{len(report.observations)} observations recorded")
    out.print(table)
    for m in report.torrent_matches:
        out.print(f"[bold]watchlist:[/] infohash on list {escape(m.list_name)} v{m.list_version}")
    if report.keep_content is not None:
        files = Table("file", "bytes", "SHA-256", "watchlist")
        for f in report.kept:
            lists = ", ".join(sorted({m.list_name for m in f.matches}))
            files.add_row(
                escape(f.torrent_path),
                f"{f.length:,}",
                f.sha256,
                f"[bold red]MATCH[/] {escape(lists)}" if lists else "-",
            )
        for name in report.not_kept:
            files.add_row(escape(name), "-", "not kept (incomplete)", "-")
        out.print(files)
