"""`peerwatch lab ...`: a swarm of real libtorrent peers and opentracker on loopback, for humans."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from peerwatch.cli.context import app_of, out
from peerwatch.lab.swarm import Lab, LabError, stop_from_state

cli = typer.Typer(help="The lab: real BitTorrent peers and a tracker on 127.0.2.x (benign data).")


def _dir(ctx: typer.Context, workdir: Path | None) -> Path:
    return workdir or app_of(ctx).settings.home / "lab"


@cli.command("up")
def up(
    ctx: typer.Context,
    peers: Annotated[int, typer.Option(help="Number of peers (roles cycle every 5).")] = 20,
    workdir: Annotated[
        Path | None, typer.Option("--dir", help="Lab folder [default: HOME/lab].")
    ] = None,
    tracker: Annotated[bool, typer.Option(help="Start opentracker on 127.0.2.250:6969.")] = True,
) -> None:
    """Start the lab in the background; `peerwatch lab down` stops it."""
    folder = _dir(ctx, workdir)
    if (folder / "lab.json").exists():
        raise LabError(f"a lab is already running in {folder} (peerwatch lab down)")
    if not 1 <= peers <= 250:
        raise typer.BadParameter("--peers must be between 1 and 250 (one 127.0.2.x address each)")
    lab = Lab(folder, peers=peers, tracker=tracker)
    lab.start()
    # The processes run in their own sessions and outlive this command; lab.json lists them.
    lab._procs.clear()
    out.print(
        f"lab up in {folder}: {peers} peers on 127.0.2.1-{peers}"
        + (", tracker 127.0.2.250:6969" if tracker else "")
    )
    out.print(f"watchlist of its watched torrents: {folder / 'watchlist.txt'}")


@cli.command("down")
def down(
    ctx: typer.Context,
    workdir: Annotated[
        Path | None, typer.Option("--dir", help="Lab folder [default: HOME/lab].")
    ] = None,
) -> None:
    """Stop the lab's processes."""
    n = stop_from_state(_dir(ctx, workdir))
    out.print(f"stopped {n} lab processes" if n else "no lab was running")


@cli.command("status")
def status(
    ctx: typer.Context,
    workdir: Annotated[
        Path | None, typer.Option("--dir", help="Lab folder [default: HOME/lab].")
    ] = None,
) -> None:
    """Show each peer: address, DHT nodes, torrents held and completion."""
    folder = _dir(ctx, workdir)
    if not (folder / "lab.json").exists():
        out.print("no lab is running")
        raise typer.Exit(1)
    table = Table("peer", "address", "DHT nodes", "torrents (completion)")
    for path in sorted((folder / "peers").glob("*/status.json")):
        import json

        s = json.loads(path.read_text())
        held = ", ".join(
            f"{(t['v1'] or t['v2'])[:8]} {t['progress_ppm'] / 10_000:.0f}%" for t in s["torrents"]
        )
        table.add_row(s["name"], f"{s['ip']}:{s['port']}", str(s["dht_nodes"]), held)
    out.print(table)
