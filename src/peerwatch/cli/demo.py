"""`peerwatch demo`: the most complete flow that exists today, on benign generated data.

A lab swarm of real libtorrent peers (and Debian's opentracker when installed) on loopback shares
generated random content; the demo watches some of it, sweeps the swarm with the BitTorrent
sensor, and checks the signed evidence as a third party would. Then leads (issue 4): a test GeoIP
database places each lab peer in a French département (`lab.geography`), the département
boundaries and the lab's units are imported, and the targets are listed ranked and routed. When
Debian's amuled is installed, real aMule peers (`lab.amule`) share generated files too, and the
eD2k sensor proves who offers the watched ones (issue 7). Last
the web app (issue 5): a coordinator account `demo` gets a fresh generated password, printed with
the address, and the app is served on 127.0.0.1 until Ctrl-C (or SIGTERM), which stops the web app
and the lab cleanly. `--no-serve` stops after the account (the tests run the flow that way).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.rule import Rule
from rich.table import Table

from peerwatch.accounts.role import Role
from peerwatch.app import App
from peerwatch.audit.log import local_actor
from peerwatch.cli.context import app_of, err, out
from peerwatch.domain.hashes import HashKind
from peerwatch.domain.torrents import WatchedTorrent
from peerwatch.errors import EvidenceError, InputError, PeerwatchError
from peerwatch.evidence import bundle
from peerwatch.evidence.log import RecordFilter
from peerwatch.lab import amule, content, geography
from peerwatch.lab.ed2k_server import BackgroundLabServer, LabServerConfig
from peerwatch.lab.swarm import Lab, LabTorrent, stop_from_state
from peerwatch.protocols.ed2k.client import ClientIdentity
from peerwatch.sensors.bittorrent import BitTorrentSweep, SweepConfig, SweepStats
from peerwatch.sensors.ed2k import (
    Ed2kFile,
    Ed2kServer,
    Ed2kSweep,
    Ed2kSweepConfig,
    load_user_hash,
)
from peerwatch.sensors.ed2k_verify import Ed2kTarget, Ed2kWanted, verify_ed2k_peer
from peerwatch.transport.ed2k_download import Ed2kDownloadConfig
from peerwatch.transport.ed2k_probe import Ed2kProbeConfig
from peerwatch.transport.egress import EgressPolicy
from peerwatch.transport.peer_probe import ProbeConfig
from peerwatch.watchlist.index import MatchIndex

#: The demo's web app account: a coordinator (sees every unit's targets, nationally).
DEMO_USER = "demo"
WEB_HOST = "127.0.0.1"


def demo(
    ctx: typer.Context,
    peers: Annotated[int, typer.Option(help="Peers in the lab swarm (roles cycle every 5).")] = 10,
    wait: Annotated[float, typer.Option(help="Longest time to sweep, in seconds.")] = 90.0,
    lab_net: Annotated[
        str, typer.Option(help="Loopback /24 prefix for the lab's peers (tracker at .250).")
    ] = "127.0.2.",
    sensor_ip: Annotated[str, typer.Option(help="Loopback address of the sensor.")] = "127.0.3.1",
    boundaries: Annotated[
        Path | None,
        typer.Option(
            help="GeoJSON of the French départements (properties code, nom) for the leads step "
            "[default: ../shared/data/fr-departements-with-overseas.geojson next to the checkout, "
            "if there; without it the leads step is skipped].",
            show_default=False,
        ),
    ] = None,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve/--no-serve",
            help="At the end, serve the web app (and keep the lab up) until Ctrl-C; "
            "--no-serve stops after the steps.",
        ),
    ] = True,
    port: Annotated[
        int, typer.Option(min=1, max=65535, help=f"TCP port of the web app on {WEB_HOST}.")
    ] = 8470,
    amule_peers: Annotated[
        int,
        typer.Option(
            "--amule-peers",
            min=0,
            max=99,
            help="Real aMule peers (Debian's amuled) for the eD2k step; 0 skips it (so does a "
            "machine without amuled).",
        ),
    ] = 7,
    amule_net: Annotated[
        str, typer.Option(help="Loopback /24 prefix for the aMule peers.")
    ] = amule.BASE_NET,
) -> None:
    """Run the demo in --home: lab swarm, watchlist, sensor sweep, evidence verified, leads, and
    the web app with a demo coordinator account until Ctrl-C."""
    try:
        import libtorrent  # noqa: F401  # the lab extra
    except ImportError:
        raise PeerwatchError(
            "the demo's lab needs libtorrent: pip install -e '.[lab]' (make demo does it)"
        ) from None
    app = app_of(ctx)
    home = app.settings.home
    home.mkdir(parents=True, exist_ok=True)
    labdir = home / "lab"
    stop_from_state(labdir)  # a lab left by an interrupted run
    if labdir.exists():
        shutil.rmtree(labdir)
    tracker = shutil.which("opentracker") is not None
    for name, net in (("--lab-net", lab_net), ("--amule-net", amule_net)):
        if not (net.startswith("127.") and net.count(".") == 3 and net.endswith(".")):
            raise typer.BadParameter(f"{name} must look like 127.X.Y. (loopback only)")
    if amule_net == lab_net:
        raise typer.BadParameter("--amule-net must differ from --lab-net")
    mule = None
    ed2k_server = None
    if amule_peers and amule.amuled_available():
        mule = amule.AmuleLab(home / "amule", peers=amule_peers, net=amule_net)
        ed2k_server = BackgroundLabServer(LabServerConfig(host=f"{amule_net}240"))
    # Take the port before the lab starts, so that a busy port is said at once, not after a sweep.
    listener = _bind(port) if serve else None
    lab = Lab(labdir, peers=peers, tracker=tracker, peer_net=lab_net)
    # `kill` (SIGTERM) stops the demo like Ctrl-C does: the lab is stopped on the way out.
    # (Handlers can only be set from the main thread; elsewhere SIGTERM keeps its default.)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if main_thread else None
    try:
        out.print(Rule("1. lab swarm: real libtorrent peers on loopback, benign random content"))
        lab.start()
        try:
            if mule is not None and ed2k_server is not None:
                ed2k_server.start()
                # Every aMule peer logs into the lab's eD2k server and offers its files there.
                mule.ed2k_server = (ed2k_server.host, ed2k_server.port)
                err.print(f"  starting {amule_peers} aMule peers (amuled) on {amule_net}x ...")
                mule.start()
            boundaries = boundaries or geography.shared_boundaries()
            _run(app, lab, mule, ed2k_server, home, tracker, wait, sensor_ip, boundaries)
            out.print(Rule("7. web app: a demo coordinator account, then the app on loopback"))
            password = _demo_account(app)
            if listener is None:
                serve_it = f"{_command_name()} --home {home} serve --port {port}"
                _print_credentials(f"not served (--no-serve); serve it with: {serve_it}", password)
            else:
                _serve(app, listener, password)
        finally:
            if mule is not None:
                mule.stop()
            if ed2k_server is not None:
                ed2k_server.stop()
            lab.stop()
            out.print("lab stopped")
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        if listener is not None:
            listener.close()


def _bind(port: int) -> socket.socket:
    """The web app's listening socket, bound now (uvicorn listens on it later)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # As uvicorn does: a restarted demo may bind while old connections are in TIME_WAIT.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((WEB_HOST, port))
    except OSError as exc:
        sock.close()
        raise InputError(
            f"port {port} on {WEB_HOST} is taken ({exc.strerror}): another peerwatch serve or "
            "demo may be running; stop it, or choose another port with --port",
            field="--port",
        ) from None
    return sock


def _demo_account(app: App) -> str:
    """Create the demo coordinator, or give the existing one a new password; return it."""
    password = secrets.token_urlsafe(12)  # 16 characters, 96 random bits
    user = app.accounts.user(DEMO_USER)
    if user is None:
        app.accounts.add_user(DEMO_USER, Role.COORDINATOR.value, password, with_totp=False)
        action = "user.add"
    else:
        if user.role is not Role.COORDINATOR or user.totp or user.disabled:
            raise InputError(
                f"this home already has a user {DEMO_USER!r} that is not an enabled coordinator "
                "without TOTP: run the demo in a fresh --home",
                field="--home",
            )
        app.accounts.set_password(DEMO_USER, password)
        action = "user.password"
    app.audit.append(
        actor=local_actor(),
        address="local",
        action=action,
        obj=f"user:{DEMO_USER}",
        detail={"role": Role.COORDINATOR.value, "unit": None, "totp": False, "by": "demo"},
    )
    return password


def _print_credentials(where: str, password: str) -> None:
    # Plain lines (no markup, never wrapped): they are read by people and by the demo's tests.
    out.print(f"  web app: {where}", markup=False)
    out.print(f"  sign in as: {DEMO_USER}", markup=False)
    out.print(f"  password: {password}", markup=False)


def _serve(app: App, listener: socket.socket, password: str) -> None:
    import uvicorn

    from peerwatch.web.site import create_app

    host, port = listener.getsockname()[:2]
    config = uvicorn.Config(
        create_app(app),
        log_level="warning",
        access_log=False,
        server_header=False,
        # One process; the lab and the database stay with this one.
        workers=1,
    )
    server = uvicorn.Server(config)
    _print_credentials(f"http://{host}:{port}/", password)
    out.print("  the lab keeps running; Ctrl-C stops the web app and the lab")
    # uvicorn catches SIGINT/SIGTERM, shuts down, then raises the signal again.
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[listener])
    out.print("web app stopped")


def _run(
    app: App,
    lab: Lab,
    mule: amule.AmuleLab | None,
    ed2k_server: BackgroundLabServer | None,
    home: Path,
    tracker: bool,
    wait: float,
    sensor_ip: str,
    boundaries: Path | None,
) -> None:
    for p in lab.members:
        held = ", ".join(f"{name} ({how})" for name, how in p.holds.items())
        enc = "  (encrypted connections only)" if p.encryption == "forced" else ""
        out.print(f"  {p.name} {p.ip}:{p.port}  {held}{enc}")
    if tracker:
        out.print(f"  opentracker on {lab.tracker_ip}:6969 (HTTP and UDP)")
    else:
        out.print("  [yellow]opentracker is not installed: DHT only[/]")

    out.print(Rule("2. watchlist: the watched torrents, and a VICS list of their files' hashes"))
    watched = [t for t in lab.torrents.values() if t.watched]
    vics = home / "lab-files.vics.json"
    vics.write_text(content.vics_v2(_files_of(watched), category=1))
    for paths, name in (([t.path for t in watched], "lab-torrents"), ([vics], "lab-files")):
        r = app.watchlist.import_files(paths, list_name=name)
        state = "unchanged" if r.unchanged else f"version {r.version}"
        out.print(f"  {name}: {state}, {r.items} records, {r.hashes} hashes")
    index = MatchIndex.from_rows(app.watchlist.iter_active_hashes(), total=None, progress=None)
    out.print(f"  match index: {len(index)} entries in {index.nbytes:,} bytes")
    unwatched = lab.torrents["unwatched-v1"]
    out.print(
        "  unwatched torrent on the watchlist: "
        f"{index.contains(HashKind.BTIH, bytes.fromhex(unwatched.btih or ''))}"
    )

    out.print(Rule("3. BitTorrent sensor: DHT and tracker claims, every claimed peer probed"))
    torrents = app.watchlist.watched_torrents()
    config = SweepConfig(
        probe=ProbeConfig(peer_id=b"-PW0010-" + secrets.token_hex(6).encode(), bind_ip=sensor_ip),
        bind_ip=sensor_ip,
        dht_nodes=tuple((p.ip, p.port) for p in lab.members[:3]),
        use_trackers=tracker,
    )
    holders = {(ip, name) for (ip, name) in lab.expected() if lab.torrents[name].watched}
    stats = asyncio.run(_sweep(app, config, torrents, len(holders), wait))
    proven = {ip for peers in stats.per_torrent.values() for ip, _ in peers}
    out.print(
        f"  {stats.sweeps} sweep(s): {stats.claims} claims, {stats.candidates} peers probed, "
        f"{stats.proven} possessions proven, {stats.observations} observations written"
    )
    for key, peers in sorted(stats.per_torrent.items()):
        out.print(f"  {key[:21]}...  proven: {', '.join(sorted(ip for ip, _ in peers))}")
    holder_ips = {ip for ip, _ in holders}
    out.print(
        f"  peers holding watched content: {len(holder_ips)}, proven: "
        f"{len(proven & holder_ips)}; peers holding only unwatched content proven: "
        f"{len(proven - holder_ips)}"
    )

    out.print(Rule("4. eD2k sensor: a server's source lists, then HELLO and file status per peer"))
    if mule is None or ed2k_server is None:
        out.print("  [yellow]no aMule peers[/] (amuled not installed, or --amule-peers 0): skipped")
    else:
        _ed2k(app, mule, ed2k_server, sensor_ip)

    out.print(Rule("5. evidence: verify the log, export one peer's bundle, check it with openssl"))
    target_ip = sorted(proven)[0] if proven else lab.members[0].ip
    target = home / "bundles" / f"{target_ip}-{int(time.time())}"
    result = bundle.export_bundle(app.engine, target, RecordFilter(ip=target_ip))
    report = bundle.verify_bundle(target)
    out.print(
        f"  bundle for {target_ip}: {result.records} records, peerwatch verify-bundle: "
        + ("OK" if report.ok else f"FAILED {report.problems[0]}")
    )
    # Our own script by absolute path, run by bash from PATH as a user would run it.
    command = ["bash", str(target / "verify.sh")]
    script = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    out.print(f"  verify.sh (openssl only): {script.stdout.strip().splitlines()[-1]}")
    if not report.ok or script.returncode != 0:
        raise EvidenceError("the demo bundle did not verify")

    out.print(Rule("6. leads: peers placed by a test GeoIP database, ranked and routed to units"))
    if boundaries is None:
        out.print("  [yellow]no département boundaries file[/] (--boundaries): leads step skipped")
    else:
        _leads(app, lab, mule, boundaries)
    out.print(Rule())
    pw = _command_name()
    home_opt = f"--home {home}"
    out.print(
        "Steps done. From the command line, try:\n"
        f"  {pw} {home_opt} observations --ip {target_ip}\n"
        f"  {pw} {home_opt} leads   (and: {pw} {home_opt} target show 1)\n"
        f"  {pw} {home_opt} evidence verify\n"
        f"  {pw} evidence verify-bundle {target}\n"
        f"  {pw} {home_opt} lab up   (after the demo; then: {pw} {home_opt} sense bittorrent "
        "--dht-node 127.0.2.1:6881)"
    )


def _ed2k(app: App, mule: amule.AmuleLab, ed2k_server: BackgroundLabServer, sensor_ip: str) -> None:
    for p in mule.peers:
        enc = "  (obfuscation required)" if p.requires_obfuscation else ""
        out.print(f"  {p.name} {p.endpoint}  user hash {p.user_hash.hex()}  {p.role}{enc}")
    r = app.watchlist.import_files([mule.watchlist], list_name="lab-ed2k")
    state = "unchanged" if r.unchanged else f"version {r.version}"
    out.print(f"  watchlist lab-ed2k (ed2k links): {state}, {r.items} records")
    files = [Ed2kFile(f.ed2k, f.size) for f in mule.files.values() if f.watched]
    # The sensor is given the server only: it learns the peers, and the user hash that the
    # peer requiring obfuscation needs, from the server's source lists (FOUNDSOURCES_OBFU).
    expected = {f.ed2k: len(mule.sharing(k)) for k, f in mule.files.items() if f.watched}
    offered = ed2k_server.wait_offered(expected, 60.0)
    out.print(
        f"  lab eD2k server {ed2k_server.host}:{ed2k_server.port}: "
        f"{len(ed2k_server.logged_in() & {p.ip for p in mule.peers})} of {len(mule.peers)} "
        "aMule peers logged in; watched files offered by "
        f"{sum(offered.values())} (peer, file) pairs"
    )
    identity = ClientIdentity(
        load_user_hash(app.settings.keys_dir), client_id=0, supports_crypt=True
    )
    config = Ed2kSweepConfig(Ed2kProbeConfig(identity, bind_ip=sensor_ip))
    server = Ed2kServer(ed2k_server.host, ed2k_server.port)
    stats = asyncio.run(Ed2kSweep(config, app.evidence, EgressPolicy()).sweep([], files, [server]))
    sharing = {
        (p.ip, p.tcp_port) for p in mule.peers for key in p.shares if mule.files[key].watched
    }
    proven = {peer for found in stats.per_file.values() for peer in found}
    out.print(
        f"  {stats.claims} server claims, {stats.probes} probes: {stats.proven} possessions "
        f"proven, {stats.no_file} 'no such file' answers, {stats.failed} failed; aMule peers "
        f"sharing watched files: {len(sharing)}, proven: {len(proven & sharing)}; others "
        f"proven: {len(proven - sharing)}"
    )
    # Single-source verification (verify-peer): small-2 (1,234,567 bytes), all of it, from one
    # peer only; with fewer peers than roles it may be shared by none: then the smallest shared.
    shared = [k for k, f in mule.files.items() if f.watched and mule.sharing(k)]
    key = "small-2" if "small-2" in shared else min(shared, key=lambda k: mule.files[k].size)
    small, peer = mule.files[key], mule.sharing(key)[0]
    report = asyncio.run(
        verify_ed2k_peer(
            Ed2kTarget(peer.ip, peer.tcp_port, peer.user_hash),
            Ed2kWanted(small.ed2k, small.size, small.path.name),
            Ed2kDownloadConfig(Ed2kProbeConfig(identity, bind_ip=sensor_ip)),
            watchlist=app.watchlist,
        )
    )
    app.evidence.append(report.observations)
    d = report.download
    out.print(
        f"  verify-peer {peer.endpoint} {report.content_key}: {d.verified} of "
        f"{d.part_count} part(s) downloaded from that peer alone and checked with MD4 "
        f"({d.outcome}; content hashed and discarded)"
    )


def _leads(app: App, lab: Lab, mule: amule.AmuleLab | None, boundaries: Path) -> None:
    """Place the lab's peers (lab.geography), import the map and the units, list the leads."""
    if not lab.members:
        lab.prepare()
    placed: list[geography.Locatable] = list(lab.members)
    if mule is not None:
        # The aMule peers continue the rotation after the BitTorrent ones.
        placed += [geography.Located(p.ip, len(lab.members) + i) for i, p in enumerate(mule.peers)]
    geo = geography.write_geography(placed, lab.workdir / "geo", boundaries=boundaries)
    app.geoip_config.set(city=geo.city, asn=geo.asn)
    app.jurisdictions.import_geojson(boundaries, code_property="code", name_property="nom")
    app.jurisdictions.import_units(geo.units_csv)
    rotation = ", ".join(geography.ROTATION)
    out.print(
        f"  test GeoIP database (not real locations): peers placed in rotation in {rotation}; "
        f"units from {geo.units_csv.name}"
    )
    store = app.targets
    store.refresh()
    ranked = store.ranked()
    table = Table("#", "target", "score", "jurisdiction", "unit", "address")
    routed = 0
    for i, t in enumerate(ranked, start=1):
        ip = t.ips[-1] if t.ips else ""
        if t.jurisdiction is not None and t.jurisdiction == geo.placed.get(ip):
            routed += 1
        table.add_row(
            str(i),
            t.label,
            str(t.score),
            f"{t.jurisdiction} {t.jurisdiction_name or ''}".strip() if t.jurisdiction else "-",
            t.unit or "-",
            ", ".join(t.ips),
        )
    out.print(table)
    out.print(f"  {len(ranked)} targets, {routed} routed to the département their address is in")


async def _sweep(
    app: App, config: SweepConfig, targets: list[WatchedTorrent], holders: int, wait: float
) -> SweepStats:
    started = time.monotonic()
    async with BitTorrentSweep(config, app.evidence, EgressPolicy()) as sweep:
        stats = await sweep.sweep(targets)
        # Peers announce as they start: sweep again until every holder is proven, as a
        # sensor's repeated sweeps would.
        while (
            sum(len(p) for p in stats.per_torrent.values()) < holders
            and time.monotonic() - started < wait
        ):
            err.print(f"  ... sweep {stats.sweeps + 1}")
            await asyncio.sleep(2)
            stats = await sweep.sweep(targets)
    return stats


def _files_of(torrents: list[LabTorrent]) -> list[content.BenignFile]:
    """The content files of the lab's torrents, with their hashes."""
    files = []
    for t in torrents:
        for path in sorted(p for p in t.data.rglob("*") if p.is_file()):
            data = path.read_bytes()
            files.append(
                content.BenignFile(
                    path,
                    len(data),
                    hashlib.md5(data, usedforsecurity=False).hexdigest(),
                    hashlib.sha1(data, usedforsecurity=False).hexdigest(),
                    hashlib.sha256(data).hexdigest(),
                )
            )
    return files


def _command_name() -> str:
    """How the user can run peerwatch again: as typed when it is not on PATH (e.g. .venv/bin)."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "peerwatch" and shutil.which("peerwatch") != str(argv0.resolve()):
        try:
            return str(argv0.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(argv0)
    return "peerwatch"
