"""Real aMule peers on loopback: several Debian `amuled` (aMule 2.3.3) daemons sharing benign files.

Each peer is one `amuled --config-dir DIR` process on its own address 127.0.15.N (N = 1, 2, ...)
with its own ports, its own user hash (written by the lab into ``preferences.dat`` before the
first start, so the lab knows it: obfuscation needs it) and an ``amule.conf`` written by the lab:

- ``Address=`` binds every socket to the peer's address; ``ConnectToED2K=0``/``ConnectToKad=0``
  and ``Autoconnect=0``: no server, no Kad (aMule treats 127.0.0.0/8 as unroutable for Kad, so
  Kad contacts would never form on loopback anyway); no IP filter download, no version check;
- ``FilterLanIPs=0`` and ``ParanoidFiltering=0``: otherwise aMule ignores loopback clients;
- ``AcceptExternalConnections=1`` on the peer's own address: amuled refuses to run without EC;
- ``[Obfuscation]`` ``IsClientCryptLayerRequired=1`` for the peer whose role requires it.

The files a peer shares are hard links (or copies) of the lab's generated content in its
``Incoming`` folder, which aMule always shares. All content is seeded random bytes: a multi-part
file of 25,000,000 bytes (3 parts), one of exactly 9,728,000 bytes (one full part plus the empty
part aMule counts), two small ones, and one file that is *not* on the lab's watchlist. Roles
cycle every 7 peers:

====  ============  =========================================================
role  name          shares
====  ============  =========================================================
0     multi         multi-part, small-1
1     exact         exact-part, small-2
2     obfuscated    multi-part, exact-part (obfuscation required)
3     unwatched     unwatched only
4     small         small-1, small-2
5     mixed         exact-part, unwatched
6     partial       multi-part (parts 0 and 2 of 3, unfinished), small-1
====  ============  =========================================================

role 6, partial, shares small-1 and the multi-part file as an unfinished download holding parts 0
and 2 of 3 (a ``.part``/``.part.met`` pair the lab writes in its ``Temp`` folder, paused), so its
file status lists 2 of 3 parts.

amuled hashes its shared files at start-up. Its files on disk do not say reliably when that is
done (``known.met`` is sometimes only rewritten at shutdown), so a peer is ready when its log says
its listen socket is up and its part files are loaded, and it answers OP_FILESTATUS for every file
it shares, asked one file at a time from CHECK_IP with CHECK_USER_HASH (never the sensor's
address). `start()` runs those checks with ``asyncio.run``: call it outside an event loop.

Lessons from this machine: aMule bans, for hours, a source address that shows a second user hash,
so a sensor must keep one user hash (the sensor keeps it in HOME); aMule sends its user hash with
byte 5 = 14 and byte 14 = 111 (eMule's marks), so the lab writes hashes that already carry them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from peerwatch.errors import PeerwatchError
from peerwatch.protocols.ed2k.client import ClientIdentity
from peerwatch.protocols.ed2k.hashing import PART_SIZE, data_part_count, hash_file
from peerwatch.transport.ed2k_probe import Ed2kProbeConfig, probe_ed2k

AMULED = "amuled"
BASE_NET = "127.0.15."  # the lab's aMule addresses (other labs use 127.0.2/8/11-14)
SENSOR_IP = "127.0.15.200"  # where tests and the demo probe from (one user hash, always)
CHECK_IP = "127.0.15.250"  # where the lab checks its peers are ready, with CHECK_USER_HASH only
CHECK_USER_HASH = bytes.fromhex("9e1ab0c4ec0e4d2f8a51c3b7d6e26f01")  # bytes 5, 14 = 14, 111
ROLES = ("multi", "exact", "obfuscated", "unwatched", "small", "mixed", "partial")
_SHARES = {
    "multi": ("multi-part", "small-1"),
    "exact": ("exact-part", "small-2"),
    "obfuscated": ("multi-part", "exact-part"),
    "unwatched": ("unwatched",),
    "small": ("small-1", "small-2"),
    "mixed": ("exact-part", "unwatched"),
    "partial": ("multi-part", "small-1"),  # multi-part as a download holding parts 0 and 2
}
#: role -> (file key, parts held): shared as an unfinished download (a .part file).
_PARTIAL = {"partial": ("multi-part", (0, 2))}
_SIZES = {
    "multi-part": 25_000_000,
    "exact-part": PART_SIZE,
    "small-1": 300_000,
    "small-2": 1_234_567,
    "unwatched": 2_000_000,
}
_WATCHED = ("multi-part", "exact-part", "small-1", "small-2")
_PREFERENCES_VERSION = 0x14  # PREFFILE_VERSION of aMule 2.3.3's preferences.dat


class AmuleLabError(PeerwatchError):
    """A lab aMule peer did not start or get ready."""


@dataclass(frozen=True, slots=True)
class AmuleFile:
    key: str  # "multi-part", "exact-part", "small-1", "small-2", "unwatched"
    path: Path
    size: int
    ed2k: bytes  # the eD2k hash
    watched: bool  # on the lab's watchlist

    @property
    def link(self) -> str:
        return f"ed2k://|file|{self.path.name}|{self.size}|{self.ed2k.hex()}|/"


@dataclass(frozen=True, slots=True)
class AmulePeer:
    name: str
    role: str
    ip: str
    tcp_port: int
    udp_port: int
    ec_port: int
    config_dir: Path
    user_hash: bytes  # as the peer sends it in HELLO
    requires_obfuscation: bool
    shares: tuple[str, ...]  # AmuleFile keys
    partial: dict[str, tuple[int, ...]]  # file key -> parts held, for files shared unfinished

    @property
    def endpoint(self) -> str:
        return f"{self.ip}:{self.tcp_port}"


def amuled_available() -> bool:
    return shutil.which(AMULED) is not None


def amuled_version() -> str:
    """The installed amuled's version, e.g. "2.3.3" (`amuled --version` says it, exit 255)."""
    text = subprocess.run(  # noqa: S603 (a fixed program, no shell)
        [AMULED, "--version"], capture_output=True, text=True, check=False, timeout=30
    ).stdout
    for word in text.split():
        if word[:1].isdigit() and word.count(".") == 2:
            return word
    raise AmuleLabError(f"no version in `amuled --version`: {text!r}")


def make_content(folder: Path, *, seed: int = 7) -> dict[str, AmuleFile]:
    """The lab's files (seeded random bytes) and their eD2k hashes."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for key, size in _SIZES.items():
        path = folder / f"benign-ed2k-{key}.bin"
        if not path.exists() or path.stat().st_size != size:
            rng = random.Random(f"{seed}-{key}")  # one generator per file: same bytes every run
            with path.open("wb") as f:
                left = size
                while left:
                    n = min(left, 1 << 20)
                    f.write(rng.randbytes(n))
                    left -= n
        files[key] = AmuleFile(key, path, size, hash_file(path).root, key in _WATCHED)
    return files


def lab_user_hash(seed: int, index: int) -> bytes:
    """A stable user hash for peer `index`, with eMule's marks (byte 5 = 14, byte 14 = 111)."""
    seed_text = f"peerwatch-lab-{seed}-{index}".encode()
    h = bytearray(hashlib.md5(seed_text, usedforsecurity=False).digest())
    h[5], h[14] = 14, 111
    return bytes(h)


def _conf(peer: AmulePeer) -> str:
    d = peer.config_dir
    # aMule's EC password is stored as its MD5 (hex); EC is on but nothing here uses it.
    ec_password = hashlib.md5(b"peerwatch-lab", usedforsecurity=False).hexdigest()
    required = int(peer.requires_obfuscation)
    # MaxUpload: a fixed limit (KiB/s). With 0 (unlimited, aMule's default) aMule 2.3.3 allows
    # "current upload rate + 5 KiB/s" (UploadBandwidthThrottler.cpp) and starts near 5 KiB/s, so
    # verify-peer would take many minutes for the 25 MB file (docs/ed2k-verify.md).
    return f"""[eMule]
AppVersion=2.3.3
MaxUpload=60000
Nick=peerwatch-lab-{peer.name}
Port={peer.tcp_port}
UDPPort={peer.udp_port}
UDPEnable=1
Address={peer.ip}
Autoconnect=0
Reconnect=0
ConnectToKad=0
ConnectToED2K=0
Serverlist=0
AddServerListFromServer=0
AddServerListFromClient=0
UPnPEnabled=0
TempDir={d}/Temp
IncomingDir={d}/Incoming
OSDirectory={d}/
FilterLanIPs=0
ParanoidFiltering=0
IPFilterAutoLoad=0
IPFilterURL=
NewVersionCheck=0
GeoIPEnabled=0
ConfirmExit=0
KadNodesUrl=
Ed2kServersUrl=
[ExternalConnect]
AcceptExternalConnections=1
ECAddress={peer.ip}
ECPort={peer.ec_port}
ECPassword={ec_password}
UPnPECEnabled=0
IpFilterClients=0
IpFilterServers=0
[WebServer]
Enabled=0
[Obfuscation]
IsClientCryptLayerSupported=1
IsCryptLayerRequested={required}
IsClientCryptLayerRequired={required}
"""


_PARTFILE_VERSION = 0xE0  # PARTFILE_VERSION (files below 4 GiB)
_FT_FILENAME, _FT_FILESIZE, _FT_TRANSFERRED, _FT_STATUS = 0x01, 0x02, 0x08, 0x14
_FT_GAPSTART, _FT_GAPEND = 0x09, 0x0A
_PART_DATE = 1_700_000_000  # the .part file's mtime, recorded in the .part.met


def write_part_file(temp: Path, number: int, f: AmuleFile, held: tuple[int, ...]) -> None:
    """An unfinished download of `f` holding the parts `held`: ``NNN.part`` (the bytes of the held
    parts, zeros in the gaps) and ``NNN.part.met`` as aMule's CPartFile::SavePartFile writes it:
    version, the .part's mtime, file hash, hashset, then tags (name, size, bytes transferred,
    status 1 = paused: the lab's downloads ask no one) and one gap-start/gap-end pair of tags
    (names "\x09N"/"\x0aN", end exclusive) per missing part. aMule loads it at start-up and
    shares it with a part status listing exactly the held parts."""
    digest = hash_file(f.path)
    parts = data_part_count(f.size)
    if not digest.part_hashes or not all(0 <= i < parts for i in held):
        raise ValueError("a partial file needs at least two parts and held parts inside it")
    part = temp / f"{number:03d}.part"
    with f.path.open("rb") as src, part.open("wb") as dst:
        for i in range(parts):
            length = min(PART_SIZE, f.size - i * PART_SIZE)
            data = src.read(length)
            dst.write(data if i in held else bytes(length))
    os.utime(part, (_PART_DATE, _PART_DATE))
    gaps = [i for i in range(parts) if i not in held]
    transferred = sum(min(PART_SIZE, f.size - i * PART_SIZE) for i in held)
    tags = [
        _met_tag(bytes([_FT_FILENAME]), f.path.name.encode()),
        _met_tag(bytes([_FT_FILESIZE]), f.size),
        _met_tag(bytes([_FT_TRANSFERRED]), transferred),
        _met_tag(bytes([_FT_STATUS]), 1),
    ]
    for n, i in enumerate(gaps):
        tags.append(_met_tag(bytes([_FT_GAPSTART]) + str(n).encode(), i * PART_SIZE))
        end = min((i + 1) * PART_SIZE, f.size)
        tags.append(_met_tag(bytes([_FT_GAPEND]) + str(n).encode(), end))
    met = (
        bytes([_PARTFILE_VERSION])
        + struct.pack("<I", _PART_DATE)
        + f.ed2k
        + struct.pack("<H", len(digest.part_hashes))
        + b"".join(digest.part_hashes)
        + struct.pack("<I", len(tags))
        + b"".join(tags)
    )
    (temp / f"{number:03d}.part.met").write_bytes(met)


def _met_tag(name: bytes, value: int | bytes) -> bytes:
    """A tag the way aMule's CFileDataIO::WriteTag writes files: ``<type 1><name len 2><name>``
    then a uint32 (type 3) or a string (type 2, ``<len 2><bytes>``)."""
    head = struct.pack("<H", len(name)) + name
    if isinstance(value, int):
        return b"\x03" + head + struct.pack("<I", value)
    return b"\x02" + head + struct.pack("<H", len(value)) + value


class AmuleLab:
    """`peers` amuled daemons on NET1..N (default 127.0.15.) sharing the lab content; a context
    manager. Labs that run at once need different `net` and `tcp_base`."""

    def __init__(
        self,
        folder: Path,
        *,
        peers: int = 7,
        seed: int = 7,
        tcp_base: int = 46620,
        startup_timeout: float = 90.0,
        net: str = BASE_NET,
        kad_ids: Mapping[str, int] | None = None,
        ed2k_server: tuple[str, int] | None = None,
    ) -> None:
        """`kad_ids`: switch Kad on in every peer (peer name -> its Kad id; a peer not listed gets
        one seeded by its name), for checking Kad packet formats against real aMule
        (lab/kad.py, docs/kad.md). Without it Kad is off, as it never forms on loopback.
        `ed2k_server`: (host, port) of an eD2k server every daemon logs into at start-up and
        offers its files to (lab/ed2k_server.py, docs/ed2k-server.md); without it, none."""
        if not 1 <= peers <= 99:
            raise ValueError(f"between 1 and 99 peers ({net}1-99)")
        if not (net.startswith("127.") and net.endswith(".") and net.count(".") == 3):
            raise ValueError(f"net must be a loopback /24 prefix like '127.0.15.', not {net!r}")
        self.folder = folder
        self.net = net
        self.kad_ids = None if kad_ids is None else dict(kad_ids)
        self.ed2k_server = ed2k_server
        # Where the lab checks readiness from; tests and the demo probe from sensor_ip.
        self.check_ip = f"{net}{CHECK_IP.rsplit('.', 1)[1]}"
        self.sensor_ip = f"{net}{SENSOR_IP.rsplit('.', 1)[1]}"
        self.seed = seed
        self.startup_timeout = startup_timeout
        self.files: dict[str, AmuleFile] = {}
        self.peers: list[AmulePeer] = []
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.last_check: dict[str, str] = {}  # peer -> its last readiness probe, in words
        for i in range(peers):
            role = ROLES[i % len(ROLES)]
            self.peers.append(
                AmulePeer(
                    name=f"amule{i + 1:02d}",
                    role=role,
                    ip=f"{net}{i + 1}",
                    tcp_port=tcp_base + i,
                    udp_port=tcp_base + 100 + i,
                    ec_port=tcp_base + 200 + i,
                    config_dir=folder / "peers" / f"amule{i + 1:02d}",
                    user_hash=lab_user_hash(seed, i),
                    requires_obfuscation=role == "obfuscated",
                    shares=_SHARES[role],
                    partial=dict([_PARTIAL[role]]) if role in _PARTIAL else {},
                )
            )

    @property
    def watchlist(self) -> Path:
        return self.folder / "watchlist-ed2k.txt"

    def sharing(self, key: str) -> list[AmulePeer]:
        return [p for p in self.peers if key in p.shares]

    def start(self) -> None:
        if not amuled_available():
            raise AmuleLabError("amuled is not installed (Debian package amule-daemon)")
        self.files = make_content(self.folder / "content", seed=self.seed)
        self.watchlist.write_text(
            "# the aMule lab's watched files (benign, generated)\n"
            + "".join(f.link + "\n" for f in self.files.values() if f.watched)
        )
        try:
            for peer in self.peers:
                self._start_peer(peer)
            deadline = time.monotonic() + self.startup_timeout
            for peer in self.peers:
                self._wait_ready(peer, deadline)
            if self.ed2k_server is not None:
                self._wait_listed(deadline)
        except BaseException:
            self.stop()
            raise

    def _start_peer(self, peer: AmulePeer) -> None:
        d = peer.config_dir
        if d.exists():
            shutil.rmtree(d)
        (d / "Incoming").mkdir(parents=True)
        (d / "Temp").mkdir()
        conf = _conf(peer)
        if self.kad_ids is not None:
            from peerwatch.lab.kad import kad_amule_conf  # the Kad lab builds on this one

            kad_id = self.kad_ids.get(peer.name, random.Random(peer.name).getrandbits(128))
            conf = kad_amule_conf(conf, d, kad_id)
        if self.ed2k_server is not None:
            from peerwatch.lab.ed2k_server import server_conf, server_met  # builds on this one

            conf = server_conf(conf)
            (d / "server.met").write_bytes(server_met(*self.ed2k_server))
        (d / "amule.conf").write_text(conf)
        (d / "preferences.dat").write_bytes(bytes([_PREFERENCES_VERSION]) + peer.user_hash)
        (d / "shareddir.dat").write_text("")
        for number, (key, held) in enumerate(sorted(peer.partial.items()), start=1):
            write_part_file(d / "Temp", number, self.files[key], held)
        for key in peer.shares:
            if key in peer.partial:
                continue
            src = self.files[key].path
            dst = d / "Incoming" / src.name
            try:
                os.link(src, dst)
            except OSError:
                shutil.copyfile(src, dst)
        log = (d / "amuled.out").open("wb")
        try:
            self._procs[peer.name] = subprocess.Popen(  # noqa: S603 (fixed program, no shell)
                [AMULED, f"--config-dir={d}"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our stop() signals it by pid; no terminal signals
            )
        finally:
            log.close()

    def _wait_ready(self, peer: AmulePeer, deadline: float) -> None:
        d = peer.config_dir
        proc = self._procs[peer.name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AmuleLabError(
                    f"{peer.name} exited with {proc.returncode}: {_tail(d / 'logfile')}"
                )
            log = _read(d / "logfile")
            parts_loaded = "No part files found" in log or (
                f"Found {len(peer.partial)} part file" in log
            )
            if "ListenSocket: Ok." in log and parts_loaded and self._answers(peer):
                return
            if "ListenSocket: Could not" in log or ("Port" in log and "is in use" in log):
                raise AmuleLabError(f"{peer.name} could not listen: {_tail(d / 'logfile')}")
            time.sleep(0.2)
        raise AmuleLabError(
            f"{peer.name} not ready in time (it does not yet answer a file status for every file "
            f"it shares; last: {self.last_check.get(peer.name)}): {_tail(d / 'logfile')}"
        )

    def _answers(self, peer: AmulePeer) -> bool:
        """The peer answers OP_FILESTATUS for every file it shares (probed from CHECK_IP)."""
        config = Ed2kProbeConfig(
            ClientIdentity(CHECK_USER_HASH, name="peerwatch-lab-check", supports_crypt=True),
            timeout=5.0,
            bind_ip=self.check_ip,
        )
        user_hash = peer.user_hash if peer.requires_obfuscation else None

        async def probe_all() -> list[str]:
            # One at a time: aMule takes a second connection with the same user hash from the
            # same address, while the first is open, as a user hash thief.
            outcomes = []
            for key in peer.shares:
                f = self.files[key]
                result = await probe_ed2k(
                    peer.ip, peer.tcp_port, f.ed2k, config, user_hash=user_hash, file_size=f.size
                )
                outcomes.append(result.outcome)
                self.last_check[peer.name] = f"{key}: {result.outcome} ({result.detail})"
            return outcomes

        return all(outcome == "possession" for outcome in asyncio.run(probe_all()))

    def _wait_listed(self, deadline: float) -> None:
        """Until the eD2k server lists every peer as a source of every file it shares (peers
        log in and offer their files a little after they are ready), asked from the check
        address like the readiness probes."""
        from peerwatch.protocols.ed2k.server import FileQuery  # the server lab builds on this
        from peerwatch.transport.ed2k_server import Ed2kServerConfig, query_server

        assert self.ed2k_server is not None
        host, port = self.ed2k_server
        expected = {key: {(p.ip, p.tcp_port) for p in self.sharing(key)} for key in self.files}
        queries = [FileQuery(self.files[k].ed2k, self.files[k].size) for k in expected]
        config = Ed2kServerConfig(
            CHECK_USER_HASH, name="peerwatch-lab-check", bind_ip=self.check_ip, timeout=10.0
        )
        missing = "no answer yet"
        while time.monotonic() < deadline:
            result = asyncio.run(query_server(host, port, queries, config))
            listed = {
                a.file_hash: {(x.ip, x.port) for x in a.sources if x.ip is not None}
                for a in result.files
            }
            gaps = {k: want - listed.get(self.files[k].ed2k, set()) for k, want in expected.items()}
            if not any(gaps.values()):
                return
            missing = ", ".join(f"{k}: {sorted(g)}" for k, g in gaps.items() if g)
            time.sleep(0.5)
        raise AmuleLabError(f"the eD2k server {host}:{port} does not list every peer: {missing}")

    def stop(self) -> None:
        """SIGTERM every daemon (amuled shuts down cleanly on it), SIGKILL any left after 15 s."""
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15.0
        for proc in self._procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5.0)
        self._procs.clear()

    def running(self) -> list[str]:
        return [name for name, p in self._procs.items() if p.poll() is None]

    def detach(self, services: dict[str, int] | None = None) -> Path:
        """Leave the daemons running after this process exits (`peerwatch lab up --amule N`):
        write `amule.json` (their pids and what each peer is, for `lab status` and `lab down`,
        plus the pids of `services` started with them, such as the lab eD2k server) and forget
        them. Returns the state file."""
        state = {
            "services": dict(services or {}),
            "ed2k_server": (
                f"{self.ed2k_server[0]}:{self.ed2k_server[1]}" if self.ed2k_server else None
            ),
            "peers": [
                {
                    "name": p.name,
                    "role": p.role,
                    "ip": p.ip,
                    "tcp_port": p.tcp_port,
                    "udp_port": p.udp_port,
                    "user_hash": p.user_hash.hex(),
                    "requires_obfuscation": p.requires_obfuscation,
                    "shares": list(p.shares),
                    "pid": self._procs[p.name].pid,
                }
                for p in self.peers
            ],
            "files": {k: {"ed2k": f.ed2k.hex(), "size": f.size} for k, f in self.files.items()},
            "watchlist": str(self.watchlist),
        }
        path = self.folder / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(path)
        self._procs.clear()
        return path

    def __enter__(self) -> AmuleLab:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


STATE_FILE = "amule.json"


def read_state(folder: Path) -> dict[str, object] | None:
    """What `AmuleLab.detach` wrote in `folder`, or None when no detached lab is there."""
    path = folder / STATE_FILE
    if not path.exists():
        return None
    state: dict[str, object] = json.loads(path.read_text())
    return state


def stop_from_state(folder: Path, grace: float = 15.0) -> int:
    """Stop the daemons of a detached lab (`peerwatch lab down`): SIGTERM (amuled shuts down
    cleanly), SIGKILL after `grace` seconds. Returns how many were signalled."""
    state = read_state(folder)
    if state is None:
        return 0
    peers = state.get("peers")
    pids = [int(p["pid"]) for p in peers if isinstance(p, dict)] if isinstance(peers, list) else []
    services = state.get("services")
    if isinstance(services, dict):
        pids += [int(pid) for pid in services.values()]
    signalled = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            signalled.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(pid) for pid in signalled):
        time.sleep(0.2)
    for pid in signalled:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    (folder / STATE_FILE).unlink()
    return len(signalled)


def pid_running(pid: int) -> bool:
    """Whether a detached lab daemon still runs."""
    return _alive(pid)


def _alive(pid: int) -> bool:
    try:
        # A detached daemon is not our child: reap it if it is, else ask the kernel.
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return _state_of(pid) != "Z"


def _state_of(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "Z"
    return stat.rsplit(")", 1)[1].split()[0]


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, lines: int = 5) -> str:
    return " | ".join(_read(path).strip().splitlines()[-lines:]) or "(no log)"
