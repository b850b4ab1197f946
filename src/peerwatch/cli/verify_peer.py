"""`peerwatch verify-peer IP:PORT INFOHASH`: single-source download with every piece checked."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from peerwatch.cli.context import app_of, err, out
from peerwatch.sensors.verify_peer import (
    VerifyReport,
    load_torrent,
    parse_infohash,
    parse_target,
)
from peerwatch.sensors.verify_peer import (
    verify_peer as run_verify,
)
from peerwatch.transport.piece_download import DownloadConfig


def _pieces(value: str) -> int | None:
    if value.strip().lower() == "all":
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise typer.BadParameter(f"--pieces must be 'all' or a positive number, not {value!r}")
    return int(value)


def verify_peer(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(help="The one peer to download from: IP:PORT.")],
    infohash: Annotated[
        str, typer.Argument(help="Infohash: 40 hex digits (v1 or truncated v2) or 64 (v2).")
    ],
    pieces: Annotated[
        str,
        typer.Option(help="How many of the pieces the peer announces to fetch: N or 'all'."),
    ] = "all",
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
    """Download pieces from ONE peer only and check each against the metainfo.

    Every checked piece is recorded in the evidence log (method piece-verified): outcome
    'possession' when it hashed right, 'piece-failed' when not. Exit status 0 when at least one
    piece verified, 1 otherwise. Only loopback addresses are contacted.
    """
    ip, port = parse_target(target)
    wanted = parse_infohash(infohash)
    limit = _pieces(pieces)
    meta = load_torrent(torrent, wanted) if torrent is not None else None
    app = app_of(ctx)
    if keep_content is not None:
        err.print(f"[yellow]keeping content:[/] verified files go to {escape(str(keep_content))}")
    config = DownloadConfig(peer_id=b"-PW0010-" + secrets.token_hex(6).encode())
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
