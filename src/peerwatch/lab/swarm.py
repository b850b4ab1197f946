"""The lab: a swarm of real libtorrent peers and a real opentracker, on loopback only.

Every peer is its own process on its own 127.0.2.x address (see `peer_process`); the tracker is
Debian's opentracker on 127.0.2.250 (HTTP and UDP, whitelist mode). Content is benign random bytes
made here (`lab.content`). Roles are fixed by the peer's index so that tests know what each peer
holds (`Lab.expected`):

    index % 5 == 0   seeds the watched v1 and hybrid torrents
    index % 5 == 1   holds part of the watched v1 torrent (some pieces corrupt, upload-only), and
                     seeds the unwatched torrent
    index % 5 == 2   seeds the watched v2-only and hybrid torrents
    index % 5 == 3   seeds only the unwatched torrent
    index % 5 == 4   seeds the watched v1 torrent and accepts encrypted connections only (MSE)

`leechers` (default none) adds peers after those: each holds a partial copy of the watched v1
torrent (damaged pieces, like role 1) but downloads, at a very low rate, so that it stays partial
for minutes while it connects to the other holders (found at the tracker and on the DHT) and
exchanges PEX (BEP 11) with them. Upload-only peers never connect to each other; leechers do.

`discoverable` (default none) adds peers after those, for discovery (BEP 51 + BEP 9): each seeds
two more torrents that are on no list but repackage watched files under new names, so only their
files can tell. `unlisted-v1` (v1, BEP 47 `sha1` per file) holds a copy of watched-v1's first file
and a new file; `unlisted-v2` (v2-only, 32 KiB pieces, so another infohash and piece layer but the
same per-file pieces root) holds a copy of watched-v2's first file and a new file. Without
`discoverable` these torrents are not made, and nothing else changes.

`ipv6` (default off) adds one peer after those on `::1`, the only IPv6 loopback address (so there
can be only one): it listens on `[::1]` alone and seeds every watched torrent (v1, hybrid,
v2-only). Debian's opentracker is built for IPv4 only (it exits when asked to bind `::1`), so
this peer is found over the IPv6 DHT (BEP 32): the lab also runs a DHT-only libtorrent node on
`[::1]` (no torrents, `Lab.dht6_node`) that the peer announces to and a sensor bootstraps from.
Both take free ports on `::1` (other tests and labs may use `::1` at the same time).
`write_geography` places every peer in a French département (`lab.geography`).

Nothing here sends a packet off the machine: every listen, outgoing and announce address is in
127.0.0.0/8 (or is ::1), and DHT bootstrap, LSD, UPnP and NAT-PMP are off in every peer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peerwatch.errors import PeerwatchError
from peerwatch.lab import content

if TYPE_CHECKING:
    from peerwatch.lab.geography import LabGeography

PEER_NET = "127.0.2."
TRACKER_IP = "127.0.2.250"
TRACKER_PORT = 6969
PEER_PORT = 6881
PIECE = 16 * 1024
#: A leecher's download limit (bytes/s): its damaged pieces take minutes to repair.
LEECHER_RATE = 500


class LabError(PeerwatchError):
    """The lab could not be started or stopped as asked."""


@dataclass(frozen=True)
class LabTorrent:
    name: str
    version: str  # "v1", "v2" or "hybrid"
    watched: bool
    path: Path  # the .torrent file
    btih: str | None  # v1 infohash (hex) when the torrent has one
    btmh: str | None  # v2 infohash, full SHA-256 (hex), when it has one
    pieces: int
    data: Path  # the folder holding the content (the torrent's name is inside)

    @property
    def announce_hashes(self) -> list[str]:
        """What the tracker sees: the v1 hash and/or the v2 hash truncated to 20 bytes (BEP 52)."""
        return [h for h in (self.btih, self.btmh[:40] if self.btmh else None) if h]


@dataclass(frozen=True)
class LabPeer:
    index: int
    ip: str
    port: int
    holds: dict[str, str]  # torrent name -> "seed" or "partial"
    encryption: str  # "forced" or "enabled"
    leecher: bool = False  # downloads the rest (slowly) instead of staying upload-only

    @property
    def name(self) -> str:
        return f"peer-{self.index:02d}"


@dataclass
class Lab:
    """A running (or startable) lab in `workdir`; use as a context manager or start()/stop()."""

    workdir: Path
    peers: int = 20
    tracker: bool = True
    seed: int = 1
    peer_net: str = PEER_NET  # peers get peer_net + 1..N, the tracker peer_net + 250
    leechers: int = 0  # extra peers (after the `peers` role-cycled ones) leeching watched-v1
    discoverable: int = 0  # extra peers (after the leechers) seeding the unlisted torrents
    ipv6: bool = False  # one more peer (the last) on [::1], and a DHT node on [::1] for it
    torrents: dict[str, LabTorrent] = field(default_factory=dict)
    members: list[LabPeer] = field(default_factory=list)
    _procs: list[subprocess.Popen[str]] = field(default_factory=list)
    _dht6_port: int | None = None

    @property
    def tracker_ip(self) -> str:
        return f"{self.peer_net}250"

    @property
    def dht6_node(self) -> tuple[str, int] | None:
        """With `ipv6`: the lab's IPv6 DHT node ("::1", port), where an IPv6 sensor starts."""
        return None if self._dht6_port is None else ("::1", self._dht6_port)

    def write_geography(self, boundaries: Path, folder: Path | None = None) -> LabGeography:
        """A test GeoIP City + ASN database placing every peer in a département, and a units
        CSV (`lab.geography`), in `folder` [default: WORKDIR/geo]. Call after `prepare` or
        `start`."""
        from peerwatch.lab.geography import write_geography  # mmdb-writer: the lab extra

        if not self.members:
            self.prepare()
        return write_geography(self.members, folder or self.workdir / "geo", boundaries=boundaries)

    # -- building -----------------------------------------------------------------------------
    def prepare(self) -> None:
        """Generate the content, the torrents, the watchlist and each peer's data and config."""
        import libtorrent as lt  # the lab extra: only needed when a lab runs

        self.workdir.mkdir(parents=True, exist_ok=True)
        trackers = (
            [
                f"http://{self.tracker_ip}:{TRACKER_PORT}/announce",
                f"udp://{self.tracker_ip}:{TRACKER_PORT}/announce",
            ]
            if self.tracker
            else []
        )
        specs = [
            ("watched-v1", "v1", True, 3),
            ("watched-hybrid", "hybrid", True, 2),
            ("watched-v2", "v2", True, 2),
            ("unwatched-v1", "v1", False, 2),
        ]
        for i, (name, version, watched, nfiles) in enumerate(specs):
            data = self.workdir / "content" / name
            files = content.make_files(
                data / name, nfiles, seed=self.seed * 100 + i, min_size=40_000, max_size=200_000
            )
            del files
            self.torrents[name] = _make_torrent(lt, self.workdir, name, version, watched, trackers)
        if self.discoverable:
            self._make_unlisted(lt, trackers)
        for index in range(self.peers):
            role = index % 5
            holds = {
                0: {"watched-v1": "seed", "watched-hybrid": "seed"},
                1: {"watched-v1": "partial", "unwatched-v1": "seed"},
                2: {"watched-v2": "seed", "watched-hybrid": "seed"},
                3: {"unwatched-v1": "seed"},
                4: {"watched-v1": "seed"},
            }[role]
            self.members.append(
                LabPeer(
                    index,
                    f"{self.peer_net}{index + 1}",
                    PEER_PORT,
                    holds,
                    "forced" if role == 4 else "enabled",
                )
            )
        for index in range(self.peers, self.peers + self.leechers):
            self.members.append(
                LabPeer(
                    index,
                    f"{self.peer_net}{index + 1}",
                    PEER_PORT,
                    {"watched-v1": "partial"},
                    "enabled",
                    leecher=True,
                )
            )
        first = self.peers + self.leechers
        for index in range(first, first + self.discoverable):
            self.members.append(
                LabPeer(
                    index,
                    f"{self.peer_net}{index + 1}",
                    PEER_PORT,
                    {"unlisted-v1": "seed", "unlisted-v2": "seed"},
                    "enabled",
                )
            )
        if self.ipv6:
            # Free ports on ::1, which other labs and tests share (one address for everyone).
            port6, self._dht6_port = _free_ipv6_ports(2)
            self.members.append(
                LabPeer(
                    len(self.members),
                    "::1",
                    port6,
                    {t.name: "seed" for t in self.torrents.values() if t.watched},
                    "enabled",
                )
            )
        self._write_watchlist()
        for peer in self.members:
            self._prepare_peer(peer)
        if self._dht6_port is not None:
            self._prepare_dht6()

    def _make_unlisted(self, lt: Any, trackers: list[str]) -> None:
        """The discovery torrents: watched files repackaged under new names (see the module)."""
        specs = [
            # name, version, whose first file it repackages, piece length, BEP 47 sha1
            ("unlisted-v1", "v1", "watched-v1", PIECE, True),
            ("unlisted-v2", "v2", "watched-v2", 2 * PIECE, False),
        ]
        for i, (name, version, source, piece_length, file_sha1) in enumerate(specs):
            folder = self.workdir / "content" / name / name
            if folder.exists():
                shutil.rmtree(folder)
            first = sorted((self.torrents[source].data / source).iterdir())[0]
            folder.mkdir(parents=True)
            shutil.copyfile(first, folder / f"repack-{first.name}")
            content.make_files(
                folder, 1, seed=self.seed * 100 + 50 + i, min_size=40_000, max_size=120_000
            )
            self.torrents[name] = _make_torrent(
                lt,
                self.workdir,
                name,
                version,
                False,
                trackers,
                piece_length=piece_length,
                file_sha1=file_sha1,
            )

    def _write_watchlist(self) -> None:
        lines = ["# peerwatch lab watchlist: infohashes of the lab's benign watched torrents"]
        for t in self.torrents.values():
            if t.watched:
                if t.btih:
                    lines.append(f"btih:{t.btih}  {t.name}")
                if t.btmh:
                    lines.append(f"btmh:{t.btmh}  {t.name}")
        (self.workdir / "watchlist.txt").write_text("\n".join(lines) + "\n")

    def _prepare_peer(self, peer: LabPeer) -> None:
        root = self.workdir / "peers" / peer.name
        torrents = []
        for name, how in peer.holds.items():
            t = self.torrents[name]
            save = root / "data"
            target = save / name
            if target.exists():
                shutil.rmtree(target)
            if how == "seed":
                # Hard links: twenty seeds of the same files cost no extra disk.
                shutil.copytree(t.data / name, target, copy_function=os.link)
            else:
                shutil.copytree(t.data / name, target)
                # A leecher lacks other pieces than the partial peers, so it wants what they
                # have and stays connected to them (and names them in its PEX messages).
                _damage(target, pieces=2, at_start=peer.leecher)
            entry: dict[str, Any] = {
                "torrent": str(t.path),
                "save_path": str(save),
                "upload_only": not peer.leecher,
            }
            if peer.leecher:
                entry["download_rate_limit"] = LEECHER_RATE
            torrents.append(entry)
        # Every other peer is a starting node: peers that start later reach the earlier ones,
        # which then learn them from the incoming queries, whatever the start order. A node
        # serves one family (BEP 32): the IPv6 peer starts from the lab's IPv6 DHT node.
        bootstrap = [
            (m.ip, m.port)
            for m in self.members
            if m.index != peer.index and (":" in m.ip) is (":" in peer.ip)
        ]
        if ":" in peer.ip and self.dht6_node is not None:
            bootstrap.append(self.dht6_node)
        config = {
            "name": peer.name,
            "ip": peer.ip,
            "port": peer.port,
            "dht": True,
            "dht_nodes": [[ip, port] for ip, port in bootstrap],
            "encryption": peer.encryption,
            "torrents": torrents,
            "status_file": str(root / "status.json"),
        }
        root.mkdir(parents=True, exist_ok=True)
        (root / "config.json").write_text(json.dumps(config, indent=1))

    def _prepare_dht6(self) -> None:
        """The IPv6 DHT node: a libtorrent session on [::1] with the DHT and no torrent."""
        assert self._dht6_port is not None
        root = self.workdir / "peers" / "dht6"
        root.mkdir(parents=True, exist_ok=True)
        config = {
            "name": "dht6",
            "ip": "::1",
            "port": self._dht6_port,
            "dht": True,
            "dht_nodes": [[m.ip, m.port] for m in self.members if ":" in m.ip],
            "encryption": "enabled",
            "torrents": [],
            "status_file": str(root / "status.json"),
        }
        (root / "config.json").write_text(json.dumps(config, indent=1))

    # -- running ------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        if not self.members:
            self.prepare()
        try:
            if self.tracker:
                self._start_tracker()
            if self._dht6_port is not None:
                self._start_process(self.workdir / "peers" / "dht6" / "config.json", "dht6")
            for peer in self.members:
                cfg = self.workdir / "peers" / peer.name / "config.json"
                self._procs.append(
                    subprocess.Popen(  # noqa: S603  # our own module, fixed arguments
                        [sys.executable, "-m", "peerwatch.lab.peer_process", str(cfg)],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        text=True,
                        start_new_session=True,
                    )
                )
            deadline = time.monotonic() + timeout
            for peer, proc in zip(self.members, self._procs[-len(self.members) :], strict=True):
                assert proc.stdout is not None
                line = proc.stdout.readline().strip()
                if not line.startswith("READY"):
                    raise LabError(f"{peer.name} ({peer.ip}) did not start: {line or 'no output'}")
                if time.monotonic() > deadline:
                    raise LabError("the lab did not start in time")
            self._write_state()
        except BaseException:
            self.stop()
            raise

    def restart_peer(self, index: int, port: int) -> LabPeer:
        """Stop peer `index` and start it again listening on `port` (same address, data and
        client), as a client restarted with another port would: the identity rules link the
        two endpoints (`port-change`, docs/leads.md). Returns the peer as it is now."""
        old = self.members[index]
        proc = self._procs[len(self._procs) - len(self.members) + index]
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        peer = dataclasses.replace(old, port=port)
        self.members[index] = peer
        self._prepare_peer(peer)
        position = self._procs.index(proc)
        self._start_process(self.workdir / "peers" / peer.name / "config.json", peer.name)
        self._procs[position] = self._procs.pop()
        self._write_state()
        return peer

    def _start_process(self, cfg: Path, name: str) -> None:
        proc = subprocess.Popen(  # noqa: S603  # our own module, fixed arguments
            [sys.executable, "-m", "peerwatch.lab.peer_process", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        self._procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("READY"):
            raise LabError(f"{name} did not start: {line or 'no output'}")

    def _start_tracker(self) -> None:
        exe = shutil.which("opentracker")
        if exe is None:
            raise LabError("opentracker is not installed (Debian package 'opentracker')")
        tdir = self.workdir / "tracker"
        tdir.mkdir(exist_ok=True)
        hashes = sorted({h for t in self.torrents.values() for h in t.announce_hashes})
        (tdir / "whitelist.txt").write_text("\n".join(hashes) + "\n")
        tdir.chmod(0o755)
        (tdir / "whitelist.txt").chmod(0o644)
        # -d chroots, so the whitelist path is relative to it (Debian's build is whitelist-only).
        proc = subprocess.Popen(  # noqa: S603  # fixed arguments, loopback address only
            [
                exe,
                "-i",
                self.tracker_ip,
                "-p",
                str(TRACKER_PORT),
                "-P",
                str(TRACKER_PORT),
                "-d",
                str(tdir),
                "-w",
                "whitelist.txt",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._procs.append(proc)
        if not _wait_tcp(self.tracker_ip, TRACKER_PORT, 10.0):
            raise LabError(f"opentracker did not listen on {self.tracker_ip}:{TRACKER_PORT}")

    def status(self) -> list[dict[str, Any]]:
        out = []
        for peer in self.members:
            path = self.workdir / "peers" / peer.name / "status.json"
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                out.append({"name": peer.name, "ip": peer.ip, "state": "no status"})
        return out

    def wait_until(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.status()):
                return True
            time.sleep(0.5)
        return False

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self._procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self._procs.clear()
        (self.workdir / "lab.json").unlink(missing_ok=True)

    def _write_state(self) -> None:
        state = {"pids": [p.pid for p in self._procs], "peers": len(self.members)}
        (self.workdir / "lab.json").write_text(json.dumps(state))

    def __enter__(self) -> Lab:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- what tests check against ---------------------------------------------------------------
    def expected(self) -> dict[tuple[str, str], str]:
        """(peer ip, torrent name) -> "seed" | "partial" for every holding in the lab."""
        return {(p.ip, name): how for p in self.members for name, how in p.holds.items()}


def stop_from_state(workdir: Path) -> int:
    """Stop a lab started by another process (`peerwatch lab down`); returns processes signalled."""
    path = workdir / "lab.json"
    if not path.exists():
        return 0
    pids = json.loads(path.read_text())["pids"]
    signalled = 0
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGTERM)
            signalled += 1
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    for pid in pids:
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.killpg(pid, signal.SIGKILL)
    path.unlink()
    return signalled


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours would still answer; it is gone for our purpose once it exited.
    try:
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0
    except OSError:
        return False


def _make_torrent(
    lt: Any,
    workdir: Path,
    name: str,
    version: str,
    watched: bool,
    trackers: list[str],
    *,
    piece_length: int = PIECE,
    file_sha1: bool = False,
) -> LabTorrent:
    """Make `name`.torrent over the folder content/`name`/`name` with libtorrent. `file_sha1`
    adds BEP 47 per-file 'sha1' (libtorrent 2 computes none by itself)."""
    data = workdir / "content" / name
    fs = lt.file_storage()
    lt.add_files(fs, str(data / name))
    flags = {"v1": lt.create_torrent.v1_only, "v2": lt.create_torrent.v2_only, "hybrid": 0}[version]
    with warnings.catch_warnings():
        # libtorrent 2.1 deprecates building from a file_storage; 2.0 has no other way.
        warnings.simplefilter("ignore", DeprecationWarning)
        ct = lt.create_torrent(fs, piece_length, flags=flags)
    for tier, url in enumerate(trackers):
        ct.add_tracker(url, tier)
    ct.set_creator("peerwatch lab")
    lt.set_piece_hashes(ct, str(data))
    if file_sha1:
        for index in range(fs.num_files()):
            path = data / fs.file_path(index)
            digest = hashlib.sha1(path.read_bytes(), usedforsecurity=False).digest()
            with warnings.catch_warnings():
                # libtorrent 2.1 deprecates BEP 47 file hashes (v2 has per-file roots); torrents
                # in the wild still carry them, and discovery must be tested on them.
                warnings.simplefilter("ignore", DeprecationWarning)
                ct.set_file_hash(index, digest)
    raw = lt.bencode(ct.generate())
    path = workdir / "torrents" / f"{name}.torrent"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(raw)
    info = lt.torrent_info(str(path))
    ih = info.info_hashes()
    return LabTorrent(
        name,
        version,
        watched,
        path,
        str(ih.v1) if ih.has_v1() else None,
        str(ih.v2) if ih.has_v2() else None,
        info.num_pieces(),
        data,
    )


def _damage(folder: Path, pieces: int, *, at_start: bool = False) -> None:
    """Overwrite `pieces` pieces in the middle of the first file with zeros.

    The peer then holds a partial copy: libtorrent's check finds those pieces bad and, being
    upload-only, never fetches them."""
    first = sorted(p for p in folder.rglob("*") if p.is_file())[0]
    size = first.stat().st_size
    with first.open("r+b") as f:
        f.seek(0 if at_start else max(0, size // 2 - PIECE))
        f.write(b"\0" * PIECE * pieces)


def _free_ipv6_ports(count: int) -> list[int]:
    """`count` distinct ports free on [::1] for both TCP and UDP (libtorrent listens on both)."""
    import socket

    ports: list[int] = []
    while len(ports) < count:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as tcp:
            tcp.bind(("::1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("::1", port))
                except OSError:
                    continue
        if port not in ports:
            ports.append(port)
    return ports


def _wait_tcp(host: str, port: int, timeout: float) -> bool:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.1)
    return False
