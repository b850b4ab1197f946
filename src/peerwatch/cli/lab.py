"""`peerwatch lab ...`: real peers on loopback for humans: a libtorrent swarm with opentracker
(127.0.2.x) and, with `--amule N`, Debian's amuled daemons (127.0.15.x)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from peerwatch.cli.context import app_of, err, out
from peerwatch.lab import amule
from peerwatch.lab.ed2k_server import LAB_SERVER_PORT
from peerwatch.lab.swarm import Lab, LabError, stop_from_state

cli = typer.Typer(
    help="The lab: real BitTorrent peers and a tracker on 127.0.2.x, real aMule peers on "
    "127.0.15.x (benign data)."
)


def _dir(ctx: typer.Context, workdir: Path | None) -> Path:
    return workdir or app_of(ctx).settings.home / "lab"


@cli.command("up")
def up(
    ctx: typer.Context,
    peers: Annotated[
        int, typer.Option(help="BitTorrent peers (roles cycle every 5); 0: none.")
    ] = 20,
    amule_peers: Annotated[
        int,
        typer.Option(
            "--amule",
            help="aMule peers (Debian's amuled; roles cycle every 7, docs/ed2k.md); 0: none.",
        ),
    ] = 0,
    workdir: Annotated[
        Path | None, typer.Option("--dir", help="Lab folder [default: HOME/lab].")
    ] = None,
    tracker: Annotated[bool, typer.Option(help="Start opentracker on 127.0.2.250:6969.")] = True,
) -> None:
    """Start the lab in the background; `peerwatch lab down` stops it."""
    folder = _dir(ctx, workdir)
    if (folder / "lab.json").exists() or amule.read_state(folder / "amule") is not None:
        raise LabError(f"a lab is already running in {folder} (peerwatch lab down)")
    if not 0 <= peers <= 250:
        raise typer.BadParameter("--peers must be between 0 and 250 (one 127.0.2.x address each)")
    if not 0 <= amule_peers <= 99:
        raise typer.BadParameter("--amule must be between 0 and 99 (one 127.0.15.x address each)")
    if peers == 0 and amule_peers == 0:
        raise typer.BadParameter("nothing to start: --peers and --amule are both 0")
    if peers:
        lab = Lab(folder, peers=peers, tracker=tracker)
        lab.start()
        # The processes run in their own sessions and outlive this command; lab.json lists them.
        lab._procs.clear()
        out.print(
            f"lab up in {folder}: {peers} BitTorrent peers on 127.0.2.1-{peers}"
            + (", tracker 127.0.2.250:6969" if tracker else "")
        )
        out.print(f"watchlist of its watched torrents: {folder / 'watchlist.txt'}")
    if amule_peers:
        (folder / "amule").mkdir(parents=True, exist_ok=True)
        host, port = f"{amule.BASE_NET}240", LAB_SERVER_PORT
        server = _start_ed2k_server(folder / "amule", host, port)
        mule = amule.AmuleLab(folder / "amule", peers=amule_peers, ed2k_server=(host, port))
        err.print(f"starting {amule_peers} amuled peers (they hash their files first) ...")
        try:
            mule.start()
        except BaseException:
            server.terminate()
            server.wait(10)
            if peers:
                stop_from_state(folder)
            raise
        mule.detach({"ed2k-server": server.pid})
        out.print(
            f"{amule_peers} aMule peers on {mule.net}1-{amule_peers} (TCP "
            f"{mule.peers[0].tcp_port}-{mule.peers[-1].tcp_port}), logged into the lab eD2k "
            f"server {host}:{port}; probe them from {mule.sensor_ip}, e.g. "
            f"sense ed2k --bind {mule.sensor_ip} --server {host}:{port}"
        )
        out.print(f"watchlist of its watched eD2k files: {mule.watchlist}")


@cli.command("down")
def down(
    ctx: typer.Context,
    workdir: Annotated[
        Path | None, typer.Option("--dir", help="Lab folder [default: HOME/lab].")
    ] = None,
) -> None:
    """Stop the lab's processes."""
    folder = _dir(ctx, workdir)
    n = stop_from_state(folder) + amule.stop_from_state(folder / "amule")
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
    mule = amule.read_state(folder / "amule")
    if not (folder / "lab.json").exists() and mule is None:
        out.print("no lab is running")
        raise typer.Exit(1)
    if mule is not None:
        _amule_table(mule)
    if not (folder / "lab.json").exists():
        return
    table = Table("peer", "address", "DHT nodes", "torrents (completion)")
    for path in sorted((folder / "peers").glob("*/status.json")):
        import json

        s = json.loads(path.read_text())
        held = ", ".join(
            f"{(t['v1'] or t['v2'])[:8]} {t['progress_ppm'] / 10_000:.0f}%" for t in s["torrents"]
        )
        table.add_row(s["name"], f"{s['ip']}:{s['port']}", str(s["dht_nodes"]), held)
    out.print(table)


def _start_ed2k_server(folder: Path, host: str, port: int) -> subprocess.Popen[bytes]:
    """The lab eD2k server as a process of its own (it outlives this command, like the peers)."""
    with (folder / "ed2k-server.out").open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603 (our own module, fixed arguments)
            [
                sys.executable,
                "-m",
                "peerwatch.lab.ed2k_server",
                "--host",
                host,
                "--port",
                str(port),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LabError(
                f"the lab eD2k server exited with {proc.returncode}: "
                + (folder / "ed2k-server.out").read_text(errors="replace").strip()[-300:]
            )
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
            return proc
        time.sleep(0.1)
    proc.kill()
    raise LabError(f"the lab eD2k server did not listen on {host}:{port} in 15 s")


def _amule_table(state: dict[str, object]) -> None:
    table = Table("aMule peer", "address", "role", "user hash", "shares", "running")
    peers = state.get("peers")
    for p in peers if isinstance(peers, list) else []:
        alive = amule.pid_running(int(p["pid"]))
        table.add_row(
            p["name"],
            f"{p['ip']}:{p['tcp_port']}",
            p["role"] + (" (obfuscation required)" if p["requires_obfuscation"] else ""),
            p["user_hash"],
            ", ".join(p["shares"]),
            "yes" if alive else "[red]no[/]",
        )
    out.print(table)
    services = state.get("services")
    if isinstance(services, dict) and "ed2k-server" in services:
        alive = amule.pid_running(int(services["ed2k-server"]))
        out.print(
            f"lab eD2k server {state.get('ed2k_server')}: "
            + ("running" if alive else "[red]not running[/]")
        )
