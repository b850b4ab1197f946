"""A small eD2k server for the lab and the tests (asyncio, loopback only), and an aMule lab whose
daemons log into it.

`LabEd2kServer` speaks the client-to-server TCP protocol of `protocols.ed2k.server`:

- LOGINREQUEST -> SERVERMESSAGE, IDCHANGE (the client's high id, its IPv4 address as aMule
  computes it, or a low id for the addresses it is told to treat as firewalled; the server's TCP
  flags), SERVERSTATUS, SERVERIDENT. No callback test is made: the lab decides high or low.
- OFFERFILES: recorded per client (dropped when the client disconnects, as a server does); each
  entry's name, size and complete/partial marker are kept. The source is the client's id and
  the port from its login: aMule sends marker ids (0xFBFBFBFB) to servers with
  SRV_TCPFLG_COMPRESSION, and a server never trusts the id in an offer anyway.
- GETSOURCES / GETSOURCES_OBFU -> FOUNDSOURCES / FOUNDSOURCES_OBFU from what was offered and what
  the test seeded (`seed_source`), never the asking client itself, at most 255. In the OBFU answer
  each source has the crypt options of its login (CT_SERVER_FLAGS) and, when it supports
  obfuscation, its user hash (bit 0x80). A file without sources is answered with an empty list
  (`answer_empty`; real servers may stay silent instead).
- SEARCHREQUEST -> SEARCHRESULT: keywords (AND/OR/NOT) against file names, FT_FILESIZE numeric
  comparisons; other meta conditions do not restrict.
- GETSERVERLIST -> SERVERLIST (empty) and SERVERIDENT.

A connection whose first byte is not an eD2k protocol byte is taken as aMule's obfuscated server
connection (`ServerObfuscation`: the Diffie-Hellman handshake of EncryptedStreamSocket.cpp), on
the same port. Anything malformed from a client closes that client's connection and is noted in
`faults`.

`ServerAmuleLab` is `lab.amule.AmuleLab` with every daemon configured to log into a lab server:
aMule 2.3.3 refuses a server whose address is reserved (`IsGoodIP` in NetworkFunctions.cpp
rejects 127.0.0.0/8 whatever FilterLanIPs says) *unless* the server has a dynamic-IP host name
(ServerList.cpp `AddServer` skips the check for `HasDynIP()`; ServerSocket.cpp resolves the name
when connecting and only applies the IP filter, which the lab turns off for servers). So the
``server.met`` written here names the server by its dotted address in the ST_DYNIP tag, which
resolves to itself. It also gives the server's obfuscation port (ST_TCPPORTOBFUSCATION, the same
port) and SRV_UDPFLG_TCPOBFUSCATION (ST_UDPFLAGS): a peer that *requires* obfuscation only dials
servers that support obfuscated connections (ServerConnect.cpp `TryAnotherConnectionrequest`
makes no plain pass then), and with these it logs in through `ServerObfuscation`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from peerwatch.lab import amule
from peerwatch.protocols.bittorrent.mse import Rc4
from peerwatch.protocols.ed2k import server as s
from peerwatch.protocols.ed2k.framing import FramingError, Protocol
from peerwatch.protocols.ed2k.obfuscation import MAGIC_REQUESTER, MAGIC_SERVER, MAGIC_SYNC
from peerwatch.protocols.ed2k.tags import Tag
from peerwatch.protocols.ed2k.wire import Ed2kError, text

T = TypeVar("T")

LAB_SERVER_FLAGS = (
    s.SRV_TCPFLG_COMPRESSION
    | s.SRV_TCPFLG_NEWTAGS
    | s.SRV_TCPFLG_UNICODE
    | s.SRV_TCPFLG_LARGEFILES
    | s.SRV_TCPFLG_TCPOBFUSCATION
)


DH768_P, PRIME_BYTES = s.DH768_P, s.DH_PRIME_BYTES  # the DH group of the obfuscated connection


class ServerObfuscation:
    """The server side of aMule's "Basic Obfuscated Handshake Protocol Client <-> Server"
    (EncryptedStreamSocket.cpp, the spec comment at its top and `StartNegotiation` /
    `Negotiate` for the client's side it must match):

        client: <marker 1, not 0xE3/0xC5/0xD4><g^a 96><pad len 1><pad>          (plain)
        server: <g^b 96> (plain) then RC4: <magic 4><methods supported 1><preferred 1><pad len 1>
        client: RC4: <magic 4><method selected 1><pad len 1><pad>, then its first packet

    S = (g^a)^b mod dh768_p (96 bytes, big-endian); the server receives with RC4 keyed by
    MD5(S + 34) and sends with MD5(S + 203), 1024 keystream bytes discarded. Lab only: a
    crypt-*requiring* aMule logs into a server only this way. ``feed`` returns (bytes to send,
    decrypted payload); a broken handshake raises `Ed2kError`."""

    def __init__(self, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self._random = random_bytes
        self._buf = b""
        self._recv: Rc4 | None = None
        self._send: Rc4 | None = None
        self._client_done = False

    @staticmethod
    def wants(first: bytes) -> bool:
        """A plain eD2k connection starts with a protocol byte; anything else negotiates."""
        return first[0] not in (Protocol.EDONKEY, Protocol.EMULE, Protocol.PACKED)

    def encrypt(self, data: bytes) -> bytes:
        assert self._send is not None
        return self._send.crypt(data)

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        if self._recv is None:
            self._buf += data
            if len(self._buf) < 2 + PRIME_BYTES:
                return b"", b""
            end = 2 + PRIME_BYTES + self._buf[1 + PRIME_BYTES]
            if len(self._buf) < end:
                return b"", b""
            if len(self._buf) > end:
                raise Ed2kError("client sent data before the server's DH answer")
            g_a = int.from_bytes(self._buf[1 : 1 + PRIME_BYTES], "big")
            if not 1 < g_a < DH768_P - 1:
                raise Ed2kError("client's DH value is out of range")
            b = int.from_bytes(self._random(16), "big") | 1  # 128 bits, as aMule's a
            shared = pow(g_a, b, DH768_P)
            self._recv = Rc4(s.dh_stream_key(shared, MAGIC_REQUESTER))
            self._send = Rc4(s.dh_stream_key(shared, MAGIC_SERVER))
            self._buf = b""
            g_b = pow(2, b, DH768_P).to_bytes(PRIME_BYTES, "big")
            return g_b + self._send.crypt(struct.pack("<IBBB", MAGIC_SYNC, 0, 0, 0)), b""
        plain = self._recv.crypt(data)
        if self._client_done:
            return b"", plain
        self._buf += plain
        if len(self._buf) < 6:
            return b"", b""
        magic, method, pad = struct.unpack_from("<IBB", self._buf)
        if magic != MAGIC_SYNC or method != 0:
            raise Ed2kError("client's obfuscation answer has a wrong magic or method")
        if len(self._buf) < 6 + pad:
            return b"", b""
        rest, self._buf = self._buf[6 + pad :], b""
        self._client_done = True
        return b"", rest


@dataclass(frozen=True)
class LabServerConfig:
    host: str = "127.0.16.240"  # the address the server listens on (loopback only)
    port: int = 0  # 0: any free port (see LabEd2kServer.port once started)
    name: str = "peerwatch lab server"  # ST_SERVERNAME
    description: str = "benign test server"  # ST_DESCRIPTION
    tcp_flags: int = LAB_SERVER_FLAGS  # IDCHANGE's flags (compression, new tags, obfu sources)
    low_id_ips: frozenset[str] = frozenset()  # clients from these addresses get a low id
    answer_empty: bool = True  # answer FOUNDSOURCES with 0 sources for an unknown file
    max_results: int = 200  # search results per answer
    obfuscation: bool = True  # take obfuscated (DH) connections on the same port


@dataclass(frozen=True, slots=True)
class LabSource:
    """A source of a file on the server: a logged-in client's offer or a seeded one."""

    client_id: int
    port: int
    user_hash: bytes | None
    crypt_options: int  # CRYPT_SUPPORTED / REQUESTED / REQUIRED bits (no 0x80)
    complete: bool | None = None

    def found(self, obfuscated: bool) -> s.FoundSource:
        if not obfuscated:
            return s.FoundSource(self.client_id, self.port)
        if self.user_hash is not None and self.crypt_options & s.CRYPT_SUPPORTED:
            return s.FoundSource(
                self.client_id,
                self.port,
                self.crypt_options | s.CRYPT_HAS_USER_HASH,
                self.user_hash,
            )
        return s.FoundSource(self.client_id, self.port, self.crypt_options & 0x7F)


@dataclass
class LabFile:
    size: int | None
    names: set[str] = field(default_factory=set)
    offered_by: dict[int, LabSource] = field(default_factory=dict)  # connection id -> source
    seeded: list[LabSource] = field(default_factory=list)

    def sources(self) -> list[LabSource]:
        return [*self.offered_by.values(), *self.seeded]


@dataclass(frozen=True, slots=True)
class LoginRecord:
    ip: str
    login: s.LoginRequest
    client_id: int  # what we assigned
    obfuscated: bool  # the client connected with the DH obfuscation handshake


class _Out:
    """Where a client's answers go: the socket, through the obfuscation layer once there is one."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.crypt: ServerObfuscation | None = None

    def write(self, data: bytes) -> None:
        self.writer.write(self.crypt.encrypt(data) if self.crypt is not None else data)


@dataclass
class _Client:
    number: int
    ip: str
    obfuscated: bool = False
    login: s.LoginRequest | None = None
    client_id: int = 0
    offered: set[bytes] = field(default_factory=set)


class LabEd2kServer:
    """An in-process eD2k server on loopback; ``async with LabEd2kServer(config) as srv``."""

    def __init__(self, config: LabServerConfig | None = None) -> None:
        self.config = config or LabServerConfig()
        if not self.config.host.startswith("127."):
            raise ValueError("the lab server listens on loopback only")
        self.files: dict[bytes, LabFile] = {}
        self.logins: list[LoginRecord] = []
        self.offers: list[tuple[str, s.OfferFiles]] = []  # (client ip, the packet)
        self.requests: list[tuple[str, s.GetSources]] = []
        self.searches: list[tuple[str, s.SearchRequest]] = []
        self.faults: list[str] = []
        self.server_hash = hashlib.md5(
            f"peerwatch-lab-server-{self.config.host}".encode(), usedforsecurity=False
        ).digest()
        self._server: asyncio.Server | None = None
        self._clients: dict[int, _Client] = {}
        self._next = 0
        self._next_low_id = 1
        self.port = self.config.port
        self._changed = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.config.host, self.config.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):  # Server.close() leaves open connections be
                writer.close()
            tasks = list(self._tasks)
            if tasks:
                _done, pending = await asyncio.wait(tasks, timeout=2.0)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> LabEd2kServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def endpoint(self) -> str:
        return f"{self.config.host}:{self.port}"

    # --- what tests add ---------------------------------------------------------------------------

    def seed_source(
        self,
        file_hash: bytes,
        *,
        ip: str | None = None,
        port: int,
        user_hash: bytes | None = None,
        crypt_options: int = 0,
        low_id: int | None = None,
        size: int | None = None,
        name: str | None = None,
    ) -> None:
        """A source the server will give for `file_hash`: at `ip` (a high id), or with the low id
        `low_id` (< 2**24: no address)."""
        if (ip is None) == (low_id is None):
            raise ValueError("give ip or low_id")
        cid = s.ip_to_id(ip) if ip is not None else low_id
        assert cid is not None
        if low_id is not None and not s.is_low_id(low_id):
            raise ValueError("a low id is below 2**24")
        entry = self.files.setdefault(file_hash, LabFile(size))
        if name:
            entry.names.add(name)
        entry.seeded.append(LabSource(cid, port, user_hash, crypt_options))

    def sources_of(self, file_hash: bytes) -> list[LabSource]:
        entry = self.files.get(file_hash)
        return entry.sources() if entry else []

    async def wait_for_offers(
        self, file_hashes: Iterable[bytes], count: int, timeout: float
    ) -> bool:
        """Until every file in `file_hashes` has at least `count` offered sources (real clients
        offer a little after login)."""
        wanted = list(file_hashes)

        def done() -> bool:
            return all(
                len(self.files[h].offered_by) >= count if h in self.files else False for h in wanted
            )

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not done():
                    self._changed.clear()
                    await self._changed.wait()
        return done()

    # --- one client -----------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        self._next += 1
        client = _Client(self._next, peer[0])
        self._clients[client.number] = client
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        decoder = s.server_decoder()
        crypt: ServerObfuscation | None = None
        out = _Out(writer)
        first = True
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                try:
                    if first and ServerObfuscation.wants(data):
                        if not self.config.obfuscation:
                            raise Ed2kError("an obfuscated connection, and obfuscation is off")
                        crypt = ServerObfuscation()
                        out.crypt = crypt
                        client.obfuscated = True
                    first = False
                    if crypt is not None:
                        answer, data = crypt.feed(data)
                        if answer:
                            writer.write(answer)
                    packets = decoder.feed(data) if data else []
                    for packet in packets:
                        self._handle(client, s.decode(packet), out)
                except (FramingError, Ed2kError) as exc:
                    self.faults.append(f"{client.ip}: {exc}")
                    break
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._drop(client)
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _drop(self, client: _Client) -> None:
        for h in client.offered:
            entry = self.files.get(h)
            if entry is not None:
                entry.offered_by.pop(client.number, None)
        self._clients.pop(client.number, None)
        self._changed.set()

    def _handle(self, client: _Client, msg: s.ServerMessageType, writer: _Out) -> None:
        if isinstance(msg, s.LoginRequest):
            self._login(client, msg, writer)
            return
        if client.login is None:
            raise s.ServerError(f"{type(msg).__name__} before the login")
        if isinstance(msg, s.OfferFiles):
            self.offers.append((client.ip, msg))
            self._offer(client, msg)
        elif isinstance(msg, s.GetSources):
            self.requests.append((client.ip, msg))
            self._answer_sources(client, msg, writer)
        elif isinstance(msg, s.SearchRequest):
            self.searches.append((client.ip, msg))
            writer.write(self._search(msg).encode())
        elif isinstance(msg, s.GetServerList):
            writer.write(s.ServerList(()).encode() + self._ident().encode())
        # anything else (callback requests, unknown opcodes) is ignored, as servers do

    def _login(self, client: _Client, msg: s.LoginRequest, writer: _Out) -> None:
        if client.login is not None:
            raise s.ServerError("a second login on one connection")
        client.login = msg
        if client.ip in self.config.low_id_ips:
            client.client_id = self._next_low_id
            self._next_low_id += 1
        else:
            client.client_id = s.ip_to_id(client.ip)
        self.logins.append(LoginRecord(client.ip, msg, client.client_id, client.obfuscated))
        users = len([c for c in self._clients.values() if c.login is not None])
        files = len(self.files)
        writer.write(
            s.ServerMessage(
                f"server version 17.15 (peerwatch lab)\n{self.config.name}".encode()
            ).encode()
            + s.IdChange(client.client_id, self.config.tcp_flags).encode()
            + s.ServerStatus(users, files).encode()
            + self._ident().encode()
        )
        self._changed.set()

    def _ident(self) -> s.ServerIdent:
        return s.ServerIdent(
            self.server_hash,
            s.ip_to_id(self.config.host),
            self.port,
            (
                Tag.string(s.ST_SERVERNAME, self.config.name),
                Tag.string(s.ST_DESCRIPTION, self.config.description),
            ),
        )

    def _offer(self, client: _Client, msg: s.OfferFiles) -> None:
        login = client.login
        assert login is not None
        for f in msg.files:
            entry = self.files.setdefault(f.file_hash, LabFile(f.size))
            if entry.size is None:
                entry.size = f.size
            if f.name:
                entry.names.add(f.name)
            entry.offered_by[client.number] = LabSource(
                client.client_id,
                login.tcp_port,
                login.user_hash,
                login.crypt_options,
                f.complete,
            )
            client.offered.add(f.file_hash)
        self._changed.set()

    def _answer_sources(self, client: _Client, msg: s.GetSources, writer: _Out) -> None:
        entry = self.files.get(msg.file_hash)
        found: list[s.FoundSource] = []
        if entry is not None and (msg.size is None or entry.size is None or msg.size == entry.size):
            for number, src in [*entry.offered_by.items(), *((0, x) for x in entry.seeded)]:
                if number == client.number:
                    continue  # never the asking client itself
                found.append(src.found(msg.obfuscated))
        if not found and not self.config.answer_empty:
            return
        answer = s.FoundSources(msg.file_hash, tuple(found[: s.MAX_FOUND_SOURCES]), msg.obfuscated)
        writer.write(answer.encode())

    def _search(self, msg: s.SearchRequest) -> s.SearchResult:
        results = []
        for h, entry in self.files.items():
            for name in sorted(entry.names):
                if _matches(msg.query, name, entry.size):
                    sources = entry.sources()
                    complete = [x for x in sources if x.complete is not False]
                    extra = (
                        Tag.uint32(s.FT_SOURCES, len(sources)),
                        Tag.uint32(s.FT_COMPLETE_SOURCES, len(complete)),
                    )
                    results.append(s.FileEntry.build(h, name, entry.size or 0, extra=extra))
                    break
            if len(results) >= self.config.max_results:
                break
        return s.SearchResult(tuple(results))


def _matches(node: s.SearchNode, name: str, size: int | None) -> bool:
    if isinstance(node, s.SearchBool):
        left = _matches(node.left, name, size)
        right = _matches(node.right, name, size)
        return (left and right, left or right, left and not right)[node.op]
    if isinstance(node, s.SearchKeyword):
        return text(node.value).lower() in name.lower()
    if isinstance(node, s.SearchNumeric) and node.tag == s.FT_FILESIZE and size is not None:
        ops = {
            s.SEARCH_OP_EQUAL: size == node.value,
            s.SEARCH_OP_GREATER: size > node.value,
            s.SEARCH_OP_LESS: size < node.value,
            s.SEARCH_OP_GREATER_EQUAL: size >= node.value,
            s.SEARCH_OP_LESS_EQUAL: size <= node.value,
            s.SEARCH_OP_NOTEQUAL: size != node.value,
        }
        return ops.get(node.op, True)
    return True  # other meta conditions (type, extension, availability) do not restrict here


# --- aMule daemons logged into a lab server ------------------------------------------------------

_MET_HEADER = 0x0E  # aMule DataFileVersion.h MET_HEADER
_ST_SERVERNAME, _ST_DYNIP = 0x01, 0x85  # ServerTags.h ST_SERVERNAME, ST_DYNIP
_ST_UDPFLAGS, _ST_TCPPORTOBFUSCATION = 0x92, 0x97  # ServerTags.h
_SRV_UDPFLG_TCPOBFUSCATION = 0x0400  # Client2Server/UDP.h


def server_met(host: str, port: int, name: str = "peerwatch lab server") -> bytes:
    """A server.met with one server, named by its address in ST_DYNIP so that aMule takes it (see
    the module doc). Tags written the long way, as aMule's CTag reads files
    (``<type><name len 2><name><value>``); the IP field holds the address too."""

    def tag_str(tag_id: int, value: str) -> bytes:
        raw = value.encode()
        return b"\x02" + struct.pack("<HB", 1, tag_id) + struct.pack("<H", len(raw)) + raw

    def tag_u32(tag_id: int, value: int) -> bytes:
        return b"\x03" + struct.pack("<HBI", 1, tag_id, value)

    tags = [
        tag_str(_ST_SERVERNAME, name),
        tag_str(_ST_DYNIP, host),
        # SupportsObfuscationTCP() needs an obfuscation port and this UDP flag (Server.h); the
        # lab server takes obfuscated connections on its one port
        tag_u32(_ST_UDPFLAGS, _SRV_UDPFLG_TCPOBFUSCATION),
        tag_u32(_ST_TCPPORTOBFUSCATION, port),
    ]
    entry = struct.pack("<IHI", s.ip_to_id(host), port, len(tags)) + b"".join(tags)
    return bytes([_MET_HEADER]) + struct.pack("<I", 1) + entry


def server_conf(conf: str) -> str:
    """An AmuleLab amule.conf turned into one that connects to the eD2k server at start-up."""
    out = []
    for line in conf.splitlines():
        key = line.split("=", 1)[0]
        if key == "ConnectToED2K":
            line = "ConnectToED2K=1"
        elif key == "Autoconnect":
            line = "Autoconnect=1"
        elif key == "Reconnect":
            line = "Reconnect=1"
        out.append(line)
    # aMule's default SafeServerConnect/"AutoConnectStaticOnly" stay off; the server list file
    # is the one this lab writes (no URL update), and the IP filter does not apply to servers.
    return "\n".join(out) + "\n"


class ServerAmuleLab(amule.AmuleLab):
    """An AmuleLab whose daemons log into the eD2k server at `server` (host, port) and offer
    their shared files there (`AmuleLab(ed2k_server=...)`, with this lab's own defaults)."""

    def __init__(
        self,
        folder: Path,
        *,
        server: tuple[str, int],
        peers: int = 7,
        seed: int = 7,
        tcp_base: int = 47620,
        startup_timeout: float = 90.0,
        net: str = "127.0.16.",
    ) -> None:
        super().__init__(
            folder,
            peers=peers,
            seed=seed,
            tcp_base=tcp_base,
            startup_timeout=startup_timeout,
            net=net,
            ed2k_server=server,
        )
        self.server = server

    def server_log(self, peer: amule.AmulePeer) -> list[str]:
        """The lines of the peer's aMule log about servers (what aMule did with ours)."""
        try:
            lines = (peer.config_dir / "logfile").read_text(errors="replace").splitlines()
        except OSError:
            return []
        words = ("server", "Server", "clientid", "Low-ID", "Connect")
        return [line for line in lines if any(w in line for w in words)]


class BackgroundLabServer:
    """A `LabEd2kServer` on an event loop of its own thread, for synchronous callers (the demo,
    test fixtures): ``with BackgroundLabServer(config) as bg: ... bg.port ...``."""

    def __init__(self, config: LabServerConfig | None = None) -> None:
        self.server = LabEd2kServer(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="lab-ed2k-server", daemon=True
        )

    @property
    def host(self) -> str:
        return self.server.config.host

    @property
    def port(self) -> int:
        return self.server.port

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run `coro` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> None:
        self._thread.start()
        self.call(self.server.start(), 10.0)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self.call(self.server.stop(), 10.0)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10.0)
            self._loop.close()

    def offered(self, file_hashes: Iterable[bytes]) -> dict[bytes, int]:
        """How many logged-in clients offer each file right now."""

        async def counts() -> dict[bytes, int]:
            files = self.server.files
            return {h: len(files[h].offered_by) if h in files else 0 for h in file_hashes}

        return self.call(counts())

    def logged_in(self) -> set[str]:
        """The addresses of the clients that logged in so far."""

        async def ips() -> set[str]:
            return {x.ip for x in self.server.logins}

        return self.call(ips())

    def wait_offered(self, expected: dict[bytes, int], timeout: float) -> dict[bytes, int]:
        """Poll until each file is offered by `expected[hash]` clients, or `timeout` seconds;
        returns the last counts (real clients offer a little after their login)."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.offered(expected)
            if all(now[h] >= n for h, n in expected.items()) or time.monotonic() >= deadline:
                return now
            time.sleep(0.2)

    def __enter__(self) -> BackgroundLabServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


LAB_SERVER_PORT = 4661  # the usual eD2k server port (aMule's server.met examples)


def main(argv: list[str] | None = None) -> int:
    """``python -m peerwatch.lab.ed2k_server --host 127.0.15.240 --port 4661``: run the lab's eD2k
    server until SIGTERM or SIGINT (`peerwatch lab up --amule N` starts it this way)."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="The peerwatch lab's eD2k server (loopback).")
    parser.add_argument("--host", default=f"{amule.BASE_NET}240")
    parser.add_argument("--port", type=int, default=LAB_SERVER_PORT)
    args = parser.parse_args(argv)

    async def serve() -> None:
        server = LabEd2kServer(LabServerConfig(host=args.host, port=args.port))
        await server.start()
        print(f"lab eD2k server listening on {args.host}:{server.port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.stop()

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
