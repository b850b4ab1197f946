"""Probe one peer for one infohash over TCP: handshake, extension handshake, bitfield.

This is the step that turns a *claim* (a DHT, tracker or PEX peer list) into evidence or into a
recorded negative result. It drives `PeerConnection` (BEP 3/6/10) and, when the peer refuses plain
connections, `MseInitiator` (MSE/PE with RC4): plaintext is tried first and MSE on a refusal, as
clients do. Everything the peer sent and everything we sent is hashed (direction-tagged) so the
observation carries a digest of the raw exchange.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from peerwatch.protocols.bittorrent import mse, peer_wire
from peerwatch.protocols.bittorrent.peer_wire import (
    Bitfield,
    ExtensionHandshake,
    HandshakeReceived,
    HaveAll,
    HaveNone,
    InfoHashMismatch,
    PeerConnection,
    PeerWireError,
)
from peerwatch.transport.wire_stream import (
    READ_SIZE,
    Exchange,
    WireStream,
    close_stream,
    open_stream,
)

#: How long a peer may stay silent after its handshake before we call its completion "none
#: announced": BEP 3 allows omitting the bitfield when a peer has no piece.
BITFIELD_GRACE = 2.0


@dataclass(frozen=True, slots=True)
class ProbeConfig:
    peer_id: bytes  # our 20-byte peer id
    client: str = "peerwatch"  # what our BEP 10 handshake says we are
    connect_timeout: float = 5.0  # TCP connect
    timeout: float = 15.0  # whole probe, per attempt
    bind_ip: str | None = None  # local address to probe from
    encryption: str = "auto"  # "auto": plain then MSE; "plain"; "mse"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ip: str
    port: int
    info_hash: bytes
    outcome: str  # "possession", "no-pieces", "refused", "unreachable", "timeout", "protocol-error"
    encrypted: bool  # the accepted handshake ran over MSE RC4
    peer_id: bytes | None
    client: str | None
    listen_port: int | None
    have: int | None  # pieces announced
    total: int | None  # pieces in the torrent, when known
    have_all: bool
    pieces_message: str | None  # how the pieces were announced: "bitfield", "have_all", "have_none"
    detail: str  # why, in words (what a defence expert reads)
    exchange_sha256: str  # SHA-256 over the direction-tagged bytes of every attempt
    started: float  # UTC seconds
    ended: float

    @property
    def handshake_accepted(self) -> bool:
        return self.peer_id is not None

    @property
    def completion_ppm(self) -> int | None:
        if self.have_all:
            return 1_000_000
        if self.have is None or not self.total:
            return None
        return self.have * 1_000_000 // self.total


@dataclass
class _Attempt:
    outcome: str
    detail: str
    encrypted: bool = False
    remote: HandshakeReceived | None = None
    ext: ExtensionHandshake | None = None
    have: int | None = None
    have_all: bool = False
    pieces_message: str | None = None
    closed_before_handshake: bool = False


async def probe(
    ip: str,
    port: int,
    info_hash: bytes,
    config: ProbeConfig,
    *,
    piece_count: int | None = None,
    clock: Callable[[], float] = time.time,
) -> ProbeResult:
    """Probe `ip:port` for `info_hash`. Never raises for the peer's faults: they are outcomes."""
    started = clock()
    exchange = Exchange()
    modes = {"auto": [False, True], "plain": [False], "mse": [True]}[config.encryption]
    attempt = _Attempt("unreachable", "not tried")
    details = []
    for use_mse in modes:
        attempt = await _attempt(ip, port, info_hash, config, piece_count, use_mse, exchange)
        details.append(("MSE: " if use_mse else "plain: ") + attempt.detail)
        # Retry with MSE only when the peer hung up on a plain handshake (how peers that require
        # encryption answer); a peer that answered, or was unreachable, is not asked twice.
        if not attempt.closed_before_handshake:
            break
    remote = attempt.remote
    return ProbeResult(
        ip=ip,
        port=port,
        info_hash=info_hash,
        outcome=attempt.outcome,
        encrypted=attempt.encrypted,
        peer_id=remote.peer_id if remote else None,
        client=attempt.ext.client if attempt.ext else None,
        listen_port=attempt.ext.listen_port if attempt.ext else None,
        have=attempt.have,
        total=piece_count,
        have_all=attempt.have_all,
        pieces_message=attempt.pieces_message,
        detail="; ".join(details),
        exchange_sha256=exchange.hexdigest(),
        started=started,
        ended=clock(),
    )


async def _attempt(
    ip: str,
    port: int,
    info_hash: bytes,
    config: ProbeConfig,
    piece_count: int | None,
    use_mse: bool,
    exchange: Exchange,
) -> _Attempt:
    # Timeouts are `asyncio.timeout` blocks, not `asyncio.wait_for`: on Python 3.11, wait_for
    # drops a cancellation that arrives as the awaited operation completes (CPython gh-86296), so
    # a peer that keeps data coming could keep a cancelled or timed-out probe alive.
    try:
        reader, writer = await open_stream(
            ip, port, bind_ip=config.bind_ip, timeout=config.connect_timeout
        )
    except (TimeoutError, OSError) as exc:
        return _Attempt("unreachable", f"TCP connect failed: {exc or type(exc).__name__}")
    # The conversation fills `result` as it goes, so that what the peer said before a timeout or
    # a reset (its handshake, its pieces) is still recorded.
    result = _Attempt("refused", "", encrypted=use_mse)
    try:
        async with asyncio.timeout(config.timeout):
            return await _converse(
                reader, writer, info_hash, config, piece_count, use_mse, exchange, result
            )
    except TimeoutError:
        # The timeout bounds the whole conversation, however slowly the peer drips its bytes.
        waited = f"no complete answer within {config.timeout:g} s"
        if result.have is not None:
            result.detail += f"; then {waited}"
            return result
        result.outcome = "timeout"
        result.detail = f"handshake accepted; {waited}" if result.remote is not None else waited
        return result
    except OSError as exc:
        # A reset while we wrote (drain raises it), as a reset while we read: the peer closed.
        return _closed(result, f"connection error: {exc or type(exc).__name__}")
    finally:
        await close_stream(writer)


async def _converse(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    info_hash: bytes,
    config: ProbeConfig,
    piece_count: int | None,
    use_mse: bool,
    exchange: Exchange,
    result: _Attempt,
) -> _Attempt:
    loop = asyncio.get_running_loop()
    conn = PeerConnection(info_hash, config.peer_id, now=loop.time())
    if piece_count is not None:
        conn.set_piece_count(piece_count)
    stream = WireStream(
        writer, exchange, info_hash=info_hash, handshake=conn.initiate(), use_mse=use_mse
    )
    await writer.drain()

    answered_at: float | None = None
    while True:
        wait = None if answered_at is None else answered_at + BITFIELD_GRACE - loop.time()
        try:
            if wait is not None and wait <= 0:
                # Checked before reading: a read of buffered data never waits, so a peer that
                # keeps sending would otherwise never let the grace run out.
                raise TimeoutError
            async with asyncio.timeout(wait):
                data = await reader.read(READ_SIZE)
        except TimeoutError:
            if result.have is not None:
                return result  # pieces known; the client never named itself
            # Handshake accepted, no bitfield within the grace: no pieces announced (BEP 3).
            result.outcome, result.have = "no-pieces", 0
            result.detail = "handshake accepted; no bitfield or have_all announced"
            return result
        except OSError as exc:
            data = b""
            reason = f"connection error: {exc}"
        else:
            reason = "the peer closed the connection"
        if not data:
            return _closed(result, reason)
        try:
            data = stream.unwrap(data)
        except mse.MseError as exc:
            result.outcome, result.detail = "protocol-error", f"MSE: {exc}"
            return result
        if not data:
            await writer.drain()
            continue
        try:
            events = conn.receive(data, loop.time())
        except PeerWireError as exc:
            events = list(exc.events)
            _absorb(result, events, conn)
            if result.remote is not None and result.have is not None:
                result.detail += f"; then broke the protocol: {exc}"
                return result
            result.outcome, result.detail = "protocol-error", str(exc)
            return result
        if _absorb(result, events, conn):
            return result
        if result.remote is not None and answered_at is None:
            answered_at = loop.time()
            if conn.extensions_enabled:
                stream.send(conn.send_extension_handshake(client=config.client))
        await writer.drain()


def _closed(result: _Attempt, reason: str) -> _Attempt:
    """The connection ended (closed or reset) before the probe had all it came for."""
    if result.have is not None:
        return result
    if result.remote is None:
        result.closed_before_handshake = True
        result.detail = f"{reason} before its handshake (infohash refused)"
        return result
    result.outcome, result.have = "no-pieces", 0
    result.detail = f"handshake accepted, then {reason} without a bitfield"
    return result


def _absorb(result: _Attempt, events: list[peer_wire.Event], conn: PeerConnection) -> bool:
    """Fold events into the attempt; True when the probe has what it came for."""
    for ev in events:
        if isinstance(ev, InfoHashMismatch):
            result.outcome = "refused"
            result.detail = f"the peer answered for another infohash {ev.received.hex()}"
            return True
        if isinstance(ev, HandshakeReceived):
            result.remote = ev
        elif isinstance(ev, ExtensionHandshake):
            result.ext = ev
        elif isinstance(ev, Bitfield | HaveAll | HaveNone):
            result.have_all = isinstance(ev, HaveAll) or conn.is_seed
            result.have = conn.have_count
            result.pieces_message = {
                Bitfield: "bitfield",
                HaveAll: "have_all",
                HaveNone: "have_none",
            }[type(ev)]
            if isinstance(ev, HaveNone) or (isinstance(ev, Bitfield) and ev.have_count == 0):
                result.outcome = "no-pieces"
                result.detail = "handshake accepted; the peer announced no piece"
            else:
                result.outcome = "possession"
                kind = "have_all" if isinstance(ev, HaveAll) else f"bitfield of {ev.have_count}"
                result.detail = f"handshake accepted on this infohash and {kind} announced"
    # Done once the pieces are known and the client named itself (or never will: no BEP 10).
    return result.have is not None and (result.ext is not None or not conn.extensions_enabled)
