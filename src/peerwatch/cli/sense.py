"""`peerwatch sense ...`: run a sensor over the watched content."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Annotated

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from peerwatch.app import App
from peerwatch.cli.context import app_of, err, out
from peerwatch.domain.hashes import HashKind, HashParseError, parse_hash
from peerwatch.domain.torrents import WatchedTorrent
from peerwatch.errors import InputError
from peerwatch.protocols.ed2k.client import ClientIdentity
from peerwatch.protocols.ed2k.link import LinkError, parse_ed2k_link
from peerwatch.sensors.bittorrent import BitTorrentSweep, SweepConfig, SweepStats
from peerwatch.sensors.discovery import Discovery, DiscoveryConfig, DiscoveryStats
from peerwatch.sensors.ed2k import (
    Ed2kFile,
    Ed2kPeer,
    Ed2kServer,
    Ed2kSweep,
    Ed2kSweepConfig,
    Ed2kSweepStats,
    load_user_hash,
)
from peerwatch.transport.ed2k_probe import Ed2kProbeConfig
from peerwatch.transport.egress import LOOPBACK, EgressPolicy
from peerwatch.transport.metadata_fetch import MetadataFetchConfig
from peerwatch.transport.peer_probe import ProbeConfig

cli = typer.Typer(help="Sensors: find who offers watched content and prove it.")


def _endpoint(text: str, what: str, default_port: int | None = None) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, str(default_port) if default_port else ""
    host = host.strip("[]")
    try:
        number = int(port)
    except ValueError:
        raise InputError(f"{text!r} is not HOST:PORT", source="command line", field=what) from None
    if not 0 < number < 65536:
        raise InputError(f"port {number} out of range", source="command line", field=what)
    return host, number


def _torrents_from(hashes: list[str]) -> list[WatchedTorrent]:
    out = []
    for i, text in enumerate(hashes, start=1):
        try:
            d = parse_hash(text)
        except HashParseError as exc:
            raise InputError(str(exc), source="command line", location=f"--infohash {i}") from None
        if d.kind is HashKind.SHA1_OR_BTIH:
            out.append(WatchedTorrent.from_hashes(d.value, None))
        elif d.kind is HashKind.SHA256_OR_BTMH:
            out.append(WatchedTorrent.from_hashes(None, d.value))
        else:
            raise InputError(
                "an infohash is 40 hex digits (v1) or 64 (v2)",
                source="command line",
                location=f"--infohash {i}",
            )
    return out


def _progress_table(stats: SweepStats, started: float) -> Table:
    table = Table(
        "elapsed",
        "sweeps",
        "torrents swept",
        "peers claimed",
        "peers probed",
        "peers proven",
        "observations written",
    )
    table.add_row(
        f"{time.monotonic() - started:.0f} s",
        str(stats.sweeps),
        str(stats.torrents),
        str(stats.claims),
        str(stats.candidates),
        str(stats.proven),
        str(stats.observations),
    )
    return table


def _discovery_table(stats: DiscoveryStats, started: float) -> Table:
    table = Table(
        "elapsed",
        "walks",
        "nodes sampled",
        "samples seen",
        "new infohashes",
        "metadata fetched",
        "matches",
        "derived entries",
    )
    table.add_row(
        f"{time.monotonic() - started:.0f} s",
        str(stats.walks),
        str(stats.nodes_sampled),
        str(stats.samples),
        str(stats.distinct - stats.already_watched),
        str(stats.fetched),
        str(stats.matched),
        str(stats.derived),
    )
    return table


def _discover(
    config: DiscoveryConfig, app: App, egress: EgressPolicy, started: float
) -> DiscoveryStats:
    async def run() -> DiscoveryStats:
        with Live(_discovery_table(DiscoveryStats(), started), console=err, transient=True) as live:
            async with Discovery(
                config,
                app.watchlist,
                app.evidence,
                egress,
                progress=lambda s: live.update(_discovery_table(s, started)),
            ) as discovery:
                return await discovery.run()

    stats = asyncio.run(run())
    out.print(_discovery_table(stats, started))
    out.print(
        f"discovery: {stats.walks} walk(s), {stats.nodes_sampled} node(s) sampled, "
        f"{stats.samples} sample(s), {stats.distinct - stats.already_watched} new infohash(es), "
        f"{stats.fetched} metadata fetched, {stats.matched} match(es), "
        f"{stats.derived} derived entr{'y' if stats.derived == 1 else 'ies'}"
    )
    for t in stats.derived_torrents:
        out.print(f"derived: {escape(t.content_key)} {escape(t.name or '')}")
    if stats.early_requests:
        out.print(
            f"{stats.early_requests} BEP 51 answer(s) came from nodes asked again within their "
            "interval"
        )
    if stats.fetch_failures:
        shown = ", ".join(f"{k} {v}" for k, v in sorted(stats.fetch_failures.items()))
        out.print(f"metadata not obtained: {escape(shown)}")
    if stats.errors:
        err.print(
            f"[red]{stats.errors} error(s) on our side[/], last: {escape(stats.last_error or '')}"
        )
    return stats


@cli.command("bittorrent")
def bittorrent(
    ctx: typer.Context,
    duration: Annotated[
        float, typer.Option(help="Keep sweeping for this many seconds (0: one sweep).")
    ] = 0.0,
    bind: Annotated[
        str, typer.Option(help="Local IP[:PORT] for every socket; the port is the DHT node's.")
    ] = "127.0.3.1:6881",
    dht_node: Annotated[
        list[str] | None, typer.Option("--dht-node", help="DHT node HOST:PORT to start from.")
    ] = None,
    tracker: Annotated[
        list[str] | None, typer.Option("--tracker", help="Tracker URL announced to as well.")
    ] = None,
    infohash: Annotated[
        list[str] | None,
        typer.Option("--infohash", help="Sweep this infohash (hex) instead of the watchlist."),
    ] = None,
    dht: Annotated[bool, typer.Option(help="Use the DHT (needs --dht-node).")] = True,
    trackers: Annotated[bool, typer.Option(help="Announce to trackers.")] = True,
    allow_network: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-network",
            help="Also allow traffic to this CIDR (default: loopback only, 127.0.0.0/8 and ::1).",
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Probes in flight at once.")] = 64,
    discover: Annotated[
        bool,
        typer.Option(
            "--discover",
            help="Discovery mode: sample the DHT (BEP 51), fetch unwatched torrents' metadata "
            "(BEP 9), add those whose files are watched to the 'derived' list, then sweep them.",
        ),
    ] = False,
    walks: Annotated[
        int, typer.Option(help="With --discover: BEP 51 walks toward random targets, at most.")
    ] = 8,
    peers_per_torrent: Annotated[
        int, typer.Option(help="With --discover: peers asked for one torrent's metadata.")
    ] = 3,
) -> None:
    """Sweep watched torrents: DHT and tracker claims, then a probe of every claimed peer.

    Every claim and every probe result (possession or not) is appended to the evidence log.
    With --discover, first find unwatched torrents whose files are watched and add them.
    """
    app = app_of(ctx)
    ip, port = _endpoint(bind, "--bind", 6881)
    nodes = tuple(_endpoint(n, "--dht-node") for n in dht_node or [])
    egress = EgressPolicy((*LOOPBACK, *(allow_network or [])))
    peer_id = b"-PW0010-" + secrets.token_hex(6).encode()
    started = time.monotonic()
    if discover:
        if infohash:
            raise InputError("--discover looks for new torrents: it takes no --infohash")
        if not nodes:
            raise InputError("--discover samples the DHT: give at least one --dht-node")
        if walks < 1 or peers_per_torrent < 1:
            raise InputError("--walks and --peers-per-torrent must be at least 1")
        found = _discover(
            DiscoveryConfig(
                fetch=MetadataFetchConfig(peer_id=peer_id, bind_ip=ip, egress=egress),
                bind_ip=ip,
                dht_port=port,
                dht_nodes=nodes,
                walks=walks,
                peers_per_torrent=peers_per_torrent,
                concurrency=min(concurrency, DiscoveryConfig.concurrency),
            ),
            app,
            egress,
            started,
        )
        torrents = found.derived_torrents
        if not torrents:
            out.print("no new derived entry: nothing more to sweep")
            return
        out.print(f"sweeping the {len(torrents)} derived torrent(s)")
    else:
        torrents = _torrents_from(infohash) if infohash else app.watchlist.watched_torrents()
    if not torrents:
        raise InputError("nothing to sweep: the watchlist has no torrent (or give --infohash)")
    config = SweepConfig(
        probe=ProbeConfig(peer_id=peer_id, bind_ip=ip),
        bind_ip=ip,
        dht_port=port,
        dht_nodes=nodes,
        trackers=tuple(tracker or []),
        use_dht=dht and bool(nodes),
        use_trackers=trackers,
        probe_concurrency=concurrency,
    )
    if dht and not nodes:
        err.print("[yellow]note[/]: no --dht-node given: the DHT is not used")
    log = app.evidence

    async def run() -> SweepStats:
        with Live(_progress_table(SweepStats(), started), console=err, transient=True) as live:
            async with BitTorrentSweep(
                config, log, egress, progress=lambda s: live.update(_progress_table(s, started))
            ) as sweep:
                stats = await sweep.sweep(torrents)
                while time.monotonic() - started < duration:
                    stats = await sweep.sweep(torrents)
                return stats

    stats = asyncio.run(run())
    out.print(_progress_table(stats, started))
    for key, peers in sorted(stats.per_torrent.items()):
        shown = ", ".join(f"{a}:{p}" for a, p in sorted(peers))
        out.print(f"{escape(key)}: possession proven for {len(peers)} peer(s): {escape(shown)}")
    if egress.denied or stats.refused_by_egress:
        out.print(
            f"[yellow]{egress.denied + stats.refused_by_egress} destination(s) outside the "
            "allowed networks were not contacted[/] (see --allow-network)"
        )


def _ed2k_peer(text: str) -> Ed2kPeer:
    """[USERHASH@]HOST:PORT; the user hash (32 hex digits) lets the probe obfuscate."""
    user_hash: bytes | None = None
    if "@" in text:
        head, _, text = text.partition("@")
        try:
            user_hash = bytes.fromhex(head)
        except ValueError:
            user_hash = None
        if user_hash is None or len(user_hash) != 16:
            raise InputError(
                f"{head!r} is not a user hash (32 hex digits)",
                source="command line",
                field="--peer",
            )
    host, port = _endpoint(text, "--peer")
    return Ed2kPeer(host, port, user_hash)


def _ed2k_files(app: App, given: list[str]) -> list[Ed2kFile]:
    if not given:
        kinds = (HashKind.ED2K.value, HashKind.MD5_OR_ED2K.value)
        found = {v: None for k, v in app.watchlist.iter_active_hashes() if k in kinds}
        return [Ed2kFile(h) for h in found]
    files = []
    for i, text in enumerate(given, start=1):
        if text.startswith("ed2k://"):
            try:
                link = parse_ed2k_link(text)
            except LinkError as exc:
                raise InputError(
                    exc.reason, source="command line", location=f"--ed2k {i}"
                ) from None
            files.append(Ed2kFile(link.file_hash, link.size))
            continue
        try:
            value = bytes.fromhex(text)
        except ValueError:
            value = b""
        if len(value) != 16:
            raise InputError(
                "an eD2k hash is 32 hex digits (or give an ed2k:// link)",
                source="command line",
                location=f"--ed2k {i}",
            )
        files.append(Ed2kFile(value))
    return files


def _ed2k_table(stats: Ed2kSweepStats, started: float) -> Table:
    table = Table(
        "elapsed",
        "sweeps",
        "source claims",
        "probes",
        "proven",
        "no file",
        "failed",
        "observations",
    )
    table.add_row(
        f"{time.monotonic() - started:.0f} s",
        str(stats.sweeps),
        str(stats.claims),
        str(stats.probes),
        str(stats.proven),
        str(stats.no_file),
        str(stats.failed),
        str(stats.observations),
    )
    return table


@cli.command("ed2k")
def ed2k(
    ctx: typer.Context,
    peer: Annotated[
        list[str] | None,
        typer.Option(
            "--peer",
            help="eD2k peer [USERHASH@]HOST:PORT to probe; with its user hash (32 hex digits) "
            "the probe can obfuscate, which a peer that requires obfuscation needs.",
        ),
    ] = None,
    server: Annotated[
        list[str] | None,
        typer.Option(
            "--server",
            help="eD2k server HOST:PORT to ask for the sources of every watched file "
            "(repeatable); each source is recorded as a claim and probed (low ids: recorded "
            "only).",
        ),
    ] = None,
    kad_node: Annotated[
        list[str] | None,
        typer.Option(
            "--kad-node",
            help="Kad node IP:UDPPORT to bootstrap from (repeatable); one Kad source search per "
            "watched file, each source recorded as a claim and probed (firewalled: recorded "
            "only).",
        ),
    ] = None,
    ed2k_hash: Annotated[
        list[str] | None,
        typer.Option(
            "--ed2k", help="Probe for this eD2k hash or ed2k:// link instead of the watchlist."
        ),
    ] = None,
    duration: Annotated[
        float, typer.Option(help="Keep sweeping for this many seconds (0: one sweep).")
    ] = 0.0,
    bind: Annotated[str, typer.Option(help="Local IP for every connection.")] = "127.0.15.200",
    obfuscation: Annotated[
        str,
        typer.Option(
            help="auto: obfuscated first when the peer's user hash is known, else plain; "
            "plain; obfuscated."
        ),
    ] = "auto",
    allow_network: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-network",
            help="Also allow traffic to this CIDR (default: loopback only, 127.0.0.0/8 and ::1).",
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Peers probed at once.")] = 8,
    source_exchange: Annotated[
        bool,
        typer.Option(
            "--source-exchange",
            help="Also ask every peer that offers source exchange for its sources of the file; "
            "each source is recorded as a source-exchange claim and high ids are probed in "
            "follow-up rounds of the same sweep (bounded). Off by default: asking costs up to "
            "a few seconds per proven peer (the wait for the answer).",
        ),
    ] = False,
) -> None:
    """Probe eD2k peers (eMule, aMule) for watched files: HELLO, file request, file status.

    Peers come from --peer, from the source lists of --server and from Kad source searches
    (--kad-node) and, with --source-exchange, from the peers' own source lists; each listed
    source is also recorded as a server-sources, kad-sources or source-exchange claim.
    One observation per peer and file: possession (file status, with completion), the peer's
    "no such file" answer, or why the probe failed. The sensor's user hash is created once and
    kept in HOME/keys/ed2k-userhash.
    """
    app = app_of(ctx)
    if obfuscation not in ("auto", "plain", "obfuscated"):
        raise InputError("--obfuscation is auto, plain or obfuscated", source="command line")
    if concurrency < 1:
        raise InputError("--concurrency must be at least 1", source="command line")
    peers = [_ed2k_peer(p) for p in peer or []]
    servers = [Ed2kServer(*_endpoint(x, "--server")) for x in server or []]
    kad_nodes = [_endpoint(x, "--kad-node") for x in kad_node or []]
    if not peers and not servers and not kad_nodes:
        raise InputError("give at least one --peer, --server or --kad-node", source="command line")
    files = _ed2k_files(app, ed2k_hash or [])
    if not files:
        raise InputError("nothing to probe for: the watchlist has no eD2k hash (or give --ed2k)")
    egress = EgressPolicy((*LOOPBACK, *(allow_network or [])))
    identity = ClientIdentity(
        load_user_hash(app.settings.keys_dir), client_id=0, supports_crypt=True
    )
    config = Ed2kSweepConfig(
        probe=Ed2kProbeConfig(
            identity, bind_ip=bind, obfuscation=obfuscation, source_exchange=source_exchange
        ),
        concurrency=concurrency,
    )
    started = time.monotonic()

    async def run() -> Ed2kSweepStats:
        with Live(_ed2k_table(Ed2kSweepStats(), started), console=err, transient=True) as live:
            sweep = Ed2kSweep(
                config,
                app.evidence,
                egress,
                progress=lambda s: live.update(_ed2k_table(s, started)),
            )
            stats = await sweep.sweep(peers, files, servers, kad_nodes)
            while time.monotonic() - started < duration:
                stats = await sweep.sweep(peers, files, servers, kad_nodes)
            return stats

    stats = asyncio.run(run())
    out.print(_ed2k_table(stats, started))
    for key, proven in sorted(stats.per_file.items()):
        shown = ", ".join(f"{a}:{p}" for a, p in sorted(proven))
        out.print(f"{escape(key)}: possession proven for {len(proven)} peer(s): {escape(shown)}")
    if servers or kad_nodes:
        out.print(
            f"servers: {stats.servers_asked} asked; Kad: {stats.kad_searches} source "
            f"search(es); {stats.claims} source claim(s) recorded ({stats.low_id_claims} low "
            "id or firewalled, not probed)"
        )
    if source_exchange:
        out.print(
            f"source exchange: {stats.sx_answers} peer answer(s), {stats.sx_claims} claim(s) "
            f"recorded; {stats.sx_new_peers} new peer(s) probed in {stats.sx_rounds} follow-up "
            f"round(s); {stats.sx_not_followed} source(s) not followed and "
            f"{stats.sx_unrecorded} not recorded (per-sweep bounds)"
        )
    for file_hash, why in sorted(stats.kad_errors.items()):
        out.print(f"[yellow]Kad search for ed2k:{escape(file_hash)}[/]: {escape(why)}")
    for endpoint, why in sorted(stats.server_errors.items()):
        out.print(f"[yellow]server {escape(endpoint)}[/]: {escape(why)}")
    if stats.refused_by_egress:
        out.print(
            f"[yellow]{stats.refused_by_egress} peer(s) outside the allowed networks were not "
            "contacted[/] (see --allow-network)"
        )
