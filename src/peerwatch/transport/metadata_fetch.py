"""Fetch one torrent's info dictionary from ONE peer over BEP 9, checked against the infohash.

This is how discovery learns what an infohash sampled from the DHT (BEP 51) contains without a
.torrent: connect to one peer of the swarm, BEP 3 handshake on the infohash, BEP 10 extension
handshake (the peer announces `ut_metadata` and `metadata_size`), ask for every 16 KiB metadata
piece (a bounded window at a time), and release the assembled bytes only once they hash to the
infohash: SHA-1 of the info dict for a v1 infohash (BEP 3), SHA-256 for a v2 one (BEP 52; a
20-byte id is the truncated SHA-256). Nothing else is ever requested: no piece of content.

Two parts, like `piece_download`:

- `MetadataSession` is the pure part: bytes (and `now`) in, bytes to send out, over one
  connection. It drives `PeerConnection` and `MetadataAssembler` from `peer_wire`. Whatever the
  peer sends, it never raises: a fault of the peer ends the session with a `MetadataFetchError`
  (`error`) whose `outcome` names the failure (below).
- `fetch_metadata` is the asyncio driver: one address only, plaintext first and MSE/PE when the
  peer hangs up on a plain handshake (as `peer_probe` does), the whole exchange hashed
  direction-tagged (`exchange_sha256`, as for a probe), a time limit per connection. It returns a
  `MetadataResult` and never raises for the peer's faults.

Outcomes: `fetched`; `refused` (another infohash, or closed before the handshake), `unreachable`,
`timeout`, `no-metadata` (no BEP 10, no `ut_metadata`, or no usable `metadata_size`),
`too-large` (`metadata_size` over `max_size`), `rejected` (BEP 9 reject), `bad-piece` (a piece of
the wrong size, index or total), `hash-mismatch` (the pieces do not hash to the infohash),
`bad-metadata` (they do, but the info dict is not a valid torrent), `closed`, `protocol-error`.

Memory is bounded by `max_size` (at most `MAX_METADATA_SIZE`, 16 MiB) plus one peer wire message.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from peerwatch.protocols.bittorrent import mse, peer_wire
from peerwatch.protocols.bittorrent.metainfo import Metainfo, MetainfoError
from peerwatch.protocols.bittorrent.peer_wire import (
    MAX_METADATA_SIZE,
    ExtensionHandshake,
    HandshakeReceived,
    InfoHashMismatch,
    MetadataAssembler,
    MetadataError,
    MetadataPiece,
    MetadataReject,
    MetadataRequest,
    PeerConnection,
    PeerWireError,
)
from peerwatch.transport.egress import EgressPolicy
from peerwatch.transport.piece_download import metainfo_from_info
from peerwatch.transport.wire_stream import (
    READ_SIZE,
    Exchange,
    WireStream,
    close_stream,
    open_stream,
)

FETCHED = "fetched"


class MetadataFetchError(PeerWireError):
    """The peer did not deliver verified metadata; `outcome` says how (see the module doc)."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class MetadataFetchConfig:
    peer_id: bytes  # our 20-byte peer id
    client: str = "peerwatch"  # what our BEP 10 handshake says we are
    connect_timeout: float = 5.0  # TCP connect
    timeout: float = 20.0  # one connection: handshake to verified metadata
    max_size: int = MAX_METADATA_SIZE  # largest 'metadata_size' accepted (BEP 9: a DoS bound)
    window: int = 8  # metadata piece requests outstanding at once
    bind_ip: str | None = None  # local address to connect from
    encryption: str = "auto"  # "auto": plain then MSE; "plain"; "mse"
    egress: EgressPolicy = field(default_factory=EgressPolicy)  # loopback only unless widened


@dataclass(frozen=True, slots=True)
class MetadataResult:
    ip: str
    port: int
    info_hash: bytes  # the 20-byte id used in the handshake (v1, or truncated v2)
    outcome: str  # FETCHED or a failure (module doc)
    detail: str  # why, in words, per attempt
    encrypted: bool  # the last attempt ran over MSE RC4
    peer_id: bytes | None
    client: str | None
    listen_port: int | None
    metadata_size: int | None  # what the peer announced (BEP 9)
    info: bytes | None = field(repr=False)  # the verified bencoded info dict
    metainfo: Metainfo | None
    verified_as: str | None  # "sha1" (v1), "sha256" (v2), "sha256-truncated" (20-byte v2 id)
    exchange_sha256: str  # SHA-256 over the direction-tagged bytes of every attempt
    started: float  # UTC seconds
    ended: float

    @property
    def ok(self) -> bool:
        return self.outcome == FETCHED

    @property
    def info_sha1(self) -> str | None:
        if self.info is None:
            return None
        return hashlib.sha1(self.info, usedforsecurity=False).hexdigest()

    @property
    def info_sha256(self) -> str | None:
        return None if self.info is None else hashlib.sha256(self.info).hexdigest()


# --- the pure part: one connection --------------------------------------------------------------


class MetadataSession:
    """BEP 9 over one connection, sans-IO: `initiate()` gives our handshake, `receive()` takes
    the peer's bytes and returns ours. `done` once the info dict is verified (`info`) or the
    session failed (`error`); `receive` never raises, whatever the bytes."""

    def __init__(
        self,
        info_hash: bytes,
        peer_id: bytes,
        *,
        now: float,
        client: str = "peerwatch",
        max_size: int = MAX_METADATA_SIZE,
        window: int = 8,
        btmh: bytes | None = None,
    ) -> None:
        if len(info_hash) != 20:
            raise ValueError("the handshake infohash is 20 bytes (v1, or v2 truncated: BEP 52)")
        if btmh is not None and (len(btmh) != 32 or btmh[:20] != info_hash):
            raise ValueError("btmh must be the 32-byte v2 infohash whose first 20 bytes we use")
        if not 0 < max_size <= MAX_METADATA_SIZE or window < 1:
            raise ValueError(f"max_size must be 1..{MAX_METADATA_SIZE} and window positive")
        self.info_hash = info_hash
        self.btmh = btmh
        self.client = client
        self.max_size = max_size
        self.window = window
        self.conn = PeerConnection(info_hash, peer_id, now=now)
        self.remote: HandshakeReceived | None = None
        self.ext: ExtensionHandshake | None = None
        self.metadata_size: int | None = None
        self.assembler: MetadataAssembler | None = None
        self._requested: set[int] = set()
        self.info: bytes | None = None
        self.metainfo: Metainfo | None = None
        self.error: MetadataFetchError | None = None
        self.closed_before_handshake = False  # how peers that demand MSE answer a plain handshake

    @property
    def done(self) -> bool:
        return self.info is not None or self.error is not None

    def initiate(self) -> bytes:
        return self.conn.initiate()

    def receive(self, data: bytes, now: float) -> bytes:
        """Feed the peer's bytes; returns what to send back (possibly nothing)."""
        if self.done:
            return b""  # late bytes after the outcome change nothing
        out = bytearray()
        try:
            events = self.conn.receive(data, now)
        except PeerWireError as exc:
            # Events decoded before the fault still count (a handshake, say), then we stop.
            for ev in exc.events:
                self._on_event(ev, out)
                if self.done:
                    return bytes(out)
            self.fail("protocol-error", f"the peer broke the protocol: {exc}")
            return bytes(out)
        for ev in events:
            self._on_event(ev, out)
            if self.done:
                break
        return bytes(out)

    def closed(self, reason: str) -> None:
        """The connection ended before the outcome: record why."""
        if self.done:
            return
        if self.remote is None:
            self.closed_before_handshake = True
            self.fail("refused", f"{reason} before its handshake (infohash refused)")
        else:
            self.fail("closed", f"handshake accepted, then {reason} before the metadata")

    def timed_out(self, seconds: float) -> None:
        if self.done:
            return
        if self.remote is None:
            self.fail("timeout", f"no handshake within {seconds:g} s")
        else:
            got = 0 if self.assembler is None else self.assembler.piece_total
            got -= 0 if self.assembler is None else len(self.assembler.missing())
            self.fail("timeout", f"handshake accepted; {got} metadata piece(s) in {seconds:g} s")

    @property
    def verified_as(self) -> str | None:
        if self.info is None:
            return None
        if hashlib.sha1(self.info, usedforsecurity=False).digest() == self.info_hash:
            return "sha1"
        return "sha256" if self.btmh is not None else "sha256-truncated"

    # -- events -------------------------------------------------------------------------------

    def _on_event(self, ev: peer_wire.Event, out: bytearray) -> None:
        conn = self.conn
        if isinstance(ev, InfoHashMismatch):
            self.fail("refused", f"the peer answered for another infohash {ev.received.hex()}")
        elif isinstance(ev, HandshakeReceived):
            self.remote = ev
            if not conn.extensions_enabled:
                self.fail("no-metadata", "the peer does not speak BEP 10, so no BEP 9 metadata")
                return
            if conn.fast_enabled:
                out += conn.send_have_none()  # BEP 6: a piece set first; we hold nothing
            out += conn.send_extension_handshake(client=self.client)
        elif isinstance(ev, ExtensionHandshake):
            self.ext = ev
            if self.assembler is None:
                self._start(ev, out)
        elif isinstance(ev, MetadataPiece):
            self._piece(ev, out)
        elif isinstance(ev, MetadataReject) and ev.piece in self._requested:
            self.fail("rejected", f"the peer rejected metadata piece {ev.piece} (BEP 9)")
        elif isinstance(ev, MetadataRequest) and "ut_metadata" in conn.remote_extensions:
            # We serve nothing, metadata included: answer with a reject (BEP 9 msg_type 2).
            out += conn.send_metadata_reject(ev.piece)

    def _start(self, ev: ExtensionHandshake, out: bytearray) -> None:
        if "ut_metadata" not in self.conn.remote_extensions:
            self.fail("no-metadata", "the peer offers no BEP 9 metadata (no ut_metadata)")
            return
        # peer_wire drops a 'metadata_size' outside 1..MAX_METADATA_SIZE (it counts as absent).
        size = ev.metadata_size
        if size is None:
            self.fail("no-metadata", "the peer announced no usable metadata_size (BEP 9)")
            return
        self.metadata_size = size
        if size > self.max_size:
            self.fail("too-large", f"metadata_size {size} is over our {self.max_size}-byte limit")
            return
        try:
            self.assembler = MetadataAssembler(self.info_hash, size, btmh=self.btmh)
        except MetadataError as exc:  # pragma: no cover - the size was checked just above
            self.fail("too-large", str(exc))
            return
        self._request_more(out)

    def _request_more(self, out: bytearray) -> None:
        assert self.assembler is not None
        missing = self.assembler.missing()
        outstanding = sum(1 for i in missing if i in self._requested)
        for piece in missing:
            if outstanding >= self.window:
                break
            if piece not in self._requested:
                self._requested.add(piece)
                out += self.conn.request_metadata(piece)
                outstanding += 1

    def _piece(self, ev: MetadataPiece, out: bytearray) -> None:
        if self.assembler is None or ev.piece not in self._requested:
            return  # unasked-for data is ignored, not trusted
        try:
            self.assembler.add(ev)
        except MetadataError as exc:
            self.fail("bad-piece", f"metadata piece {ev.piece}: {exc}")
            return
        if not self.assembler.complete:
            self._request_more(out)
            return
        try:
            info = self.assembler.result()
        except MetadataError as exc:
            self.fail("hash-mismatch", f"the metadata from the peer: {exc}")
            return
        try:
            meta = metainfo_from_info(info)
        except MetainfoError as exc:
            # It hashes right, so this *is* the torrent's info dict, but not one we can read.
            self.fail("bad-metadata", f"the verified info dict is not a valid torrent: {exc}")
            return
        self.info, self.metainfo = info, meta

    def fail(self, outcome: str, detail: str) -> None:
        """End the session with a failure (the first outcome stands)."""
        if not self.done:
            self.error = MetadataFetchError(outcome, detail)


# --- the driver ---------------------------------------------------------------------------------


async def fetch_metadata(
    ip: str,
    port: int,
    info_hash: bytes,
    config: MetadataFetchConfig,
    *,
    btmh: bytes | None = None,
    clock: Callable[[], float] = time.time,
) -> MetadataResult:
    """The info dict of `info_hash` from `ip:port` alone, verified. Never raises for the peer's
    faults (they are outcomes); `EgressDeniedError` if `ip` is not an allowed destination."""
    config.egress.check(ip)
    started = clock()
    exchange = Exchange()
    modes = {"auto": [False, True], "plain": [False], "mse": [True]}[config.encryption]
    details: list[str] = []
    session: MetadataSession | None = None
    encrypted = False
    outcome, detail = "unreachable", "not tried"
    for use_mse in modes:
        session, outcome, detail = await _attempt(
            ip, port, info_hash, btmh, config, use_mse, exchange
        )
        encrypted = use_mse
        details.append(("MSE: " if use_mse else "plain: ") + detail)
        # Like peer_probe: MSE only when the peer hung up on a plain handshake.
        if session is None or not session.closed_before_handshake:
            break
    ext = session.ext if session is not None else None
    remote = session.remote if session is not None else None
    return MetadataResult(
        ip=ip,
        port=port,
        info_hash=info_hash,
        outcome=outcome,
        detail="; ".join(details),
        encrypted=encrypted,
        peer_id=remote.peer_id if remote else None,
        client=ext.client if ext else None,
        listen_port=ext.listen_port if ext else None,
        metadata_size=session.metadata_size if session is not None else None,
        info=session.info if session is not None else None,
        metainfo=session.metainfo if session is not None else None,
        verified_as=session.verified_as if session is not None else None,
        exchange_sha256=exchange.hexdigest(),
        started=started,
        ended=clock(),
    )


async def _attempt(
    ip: str,
    port: int,
    info_hash: bytes,
    btmh: bytes | None,
    config: MetadataFetchConfig,
    use_mse: bool,
    exchange: Exchange,
) -> tuple[MetadataSession | None, str, str]:
    try:
        reader, writer = await open_stream(
            ip, port, bind_ip=config.bind_ip, timeout=config.connect_timeout
        )
    except (TimeoutError, OSError) as exc:
        return None, "unreachable", f"TCP connect failed: {exc or type(exc).__name__}"
    loop = asyncio.get_running_loop()
    session = MetadataSession(
        info_hash,
        config.peer_id,
        now=loop.time(),
        client=config.client,
        max_size=config.max_size,
        window=config.window,
        btmh=btmh,
    )
    try:
        # `asyncio.timeout`, not `wait_for` (CPython gh-86296, see wire_stream.open_stream): the
        # limit bounds the whole conversation, however slowly the peer drips its bytes.
        async with asyncio.timeout(config.timeout):
            await _converse(reader, writer, session, info_hash, use_mse, exchange)
    except TimeoutError:
        session.timed_out(config.timeout)
    except OSError as exc:
        session.closed(f"connection error: {exc or type(exc).__name__}")
    finally:
        await close_stream(writer)
    if session.error is not None:
        return session, session.error.outcome, str(session.error)
    return session, FETCHED, f"{session.metadata_size} bytes verified ({session.verified_as})"


async def _converse(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    session: MetadataSession,
    info_hash: bytes,
    use_mse: bool,
    exchange: Exchange,
) -> None:
    loop = asyncio.get_running_loop()
    stream = WireStream(
        writer, exchange, info_hash=info_hash, handshake=session.initiate(), use_mse=use_mse
    )
    await writer.drain()
    pending = bytearray()  # what we must send once MSE is established
    while not session.done:
        data = await reader.read(READ_SIZE)
        if not data:
            session.closed("the peer closed the connection")
            return
        try:
            plain = stream.unwrap(data)
        except mse.MseError as exc:
            session.fail("protocol-error", f"MSE: {exc}")
            return
        if plain:
            pending += session.receive(plain, loop.time())
        if pending and stream.established:
            stream.send(bytes(pending))
            pending.clear()
        await writer.drain()
