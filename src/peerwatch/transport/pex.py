"""Collect BEP 11 peer exchange (ut_pex) from one peer: who it says is in the swarm.

We connect as `peer_probe` does (plaintext, then MSE when the peer hangs up on a plain handshake),
send our handshake and our BEP 10 extension handshake advertising `ut_pex`, then read what the peer
sends until it has sent `messages` ut_pex messages or `wait` seconds have passed. Everything sent
and received is hashed (direction-tagged, as for probes) so that each learned peer can be tied to
the raw exchange it came from. What a peer tells us is a *claim*, like a DHT or tracker peer list;
possession is proven only by probing the learned peers.

libtorrent sends its first ut_pex message (its full list of connected peers) on its first
one-second tick after our extension handshake, as long as it has another peer besides us, and a
difference every 60 s after that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from peerwatch.protocols.bittorrent import mse, peer_wire
from peerwatch.protocols.bittorrent.krpc import Peer
from peerwatch.protocols.bittorrent.peer_wire import (
    ExtensionHandshake,
    HandshakeReceived,
    InfoHashMismatch,
    PeerConnection,
    PeerWireError,
    PexPeers,
)
from peerwatch.transport.peer_probe import ProbeConfig
from peerwatch.transport.wire_stream import (
    READ_SIZE,
    Exchange,
    WireStream,
    close_stream,
    open_stream,
)

#: At most this many distinct peers are kept from one connection (a bound on what a hostile peer
#: can make us hold and probe); libtorrent sends at most 50 per message.
MAX_PEERS = 500
#: Keep-alive interval while we wait (peers drop connections silent for two minutes).
KEEPALIVE = 30.0


@dataclass(frozen=True, slots=True)
class PexResult:
    ip: str
    port: int
    info_hash: bytes
    # "pex" (at least one ut_pex message), "no-pex" (handshake accepted, none within the wait or
    # the peer does not offer ut_pex), "refused", "unreachable", "timeout", "protocol-error"
    outcome: str
    encrypted: bool
    peer_id: bytes | None
    client: str | None
    added: tuple[Peer, ...]  # IPv4 and IPv6 peers the peer named, in order, without repeats
    dropped: tuple[Peer, ...]
    messages: int  # ut_pex messages received
    first_after: float | None  # seconds from its handshake to its first ut_pex message
    detail: str
    exchange_sha256: str
    started: float
    ended: float

    @property
    def handshake_accepted(self) -> bool:
        return self.peer_id is not None


@dataclass
class _State:
    outcome: str = "refused"
    detail: str = ""
    encrypted: bool = False
    remote: HandshakeReceived | None = None
    ext: ExtensionHandshake | None = None
    added: dict[Peer, None] = field(default_factory=dict)
    dropped: dict[Peer, None] = field(default_factory=dict)
    messages: int = 0
    handshake_at: float | None = None
    first_after: float | None = None
    closed_before_handshake: bool = False


async def collect_pex(
    ip: str,
    port: int,
    info_hash: bytes,
    config: ProbeConfig,
    *,
    wait: float,
    messages: int = 1,
    clock: Callable[[], float] = time.time,
) -> PexResult:
    """Ask `ip:port` for its PEX list on `info_hash`. Never raises for the peer's faults."""
    started = clock()
    exchange = Exchange()
    modes = {"auto": [False, True], "plain": [False], "mse": [True]}[config.encryption]
    state = _State("unreachable", "not tried")
    details = []
    for use_mse in modes:
        state = await _attempt(ip, port, info_hash, config, use_mse, exchange, wait, messages)
        details.append(("MSE: " if use_mse else "plain: ") + state.detail)
        if not state.closed_before_handshake:
            break
    return PexResult(
        ip=ip,
        port=port,
        info_hash=info_hash,
        outcome=state.outcome,
        encrypted=state.encrypted,
        peer_id=state.remote.peer_id if state.remote else None,
        client=state.ext.client if state.ext else None,
        added=tuple(state.added),
        dropped=tuple(state.dropped),
        messages=state.messages,
        first_after=state.first_after,
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
    use_mse: bool,
    exchange: Exchange,
    wait: float,
    messages: int,
) -> _State:
    try:
        reader, writer = await open_stream(
            ip, port, bind_ip=config.bind_ip, timeout=config.connect_timeout
        )
    except (TimeoutError, OSError) as exc:
        return _State("unreachable", f"TCP connect failed: {exc or type(exc).__name__}")
    state = _State(encrypted=use_mse)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.timeout  # the handshake; then `wait` from the handshake
    try:
        await _converse(
            reader, writer, info_hash, config, use_mse, exchange, state, wait, messages, deadline
        )
    except OSError as exc:
        _closed(state, f"connection error: {exc or type(exc).__name__}")
    finally:
        await close_stream(writer)
    return state


async def _converse(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    info_hash: bytes,
    config: ProbeConfig,
    use_mse: bool,
    exchange: Exchange,
    state: _State,
    wait: float,
    messages: int,
    deadline: float,
) -> None:
    loop = asyncio.get_running_loop()
    conn = PeerConnection(info_hash, config.peer_id, now=loop.time())
    stream = WireStream(
        writer, exchange, info_hash=info_hash, handshake=conn.initiate(), use_mse=use_mse
    )
    send = stream.send
    await writer.drain()
    last_sent = loop.time()

    while True:
        now = loop.time()
        if now >= deadline:
            _timed_out(state, wait, config.timeout)
            return
        if state.remote is not None and now - last_sent >= KEEPALIVE:
            send(conn.send_keepalive())
            await writer.drain()
            last_sent = now
        step = min(deadline, last_sent + KEEPALIVE) - now
        try:
            async with asyncio.timeout(step):
                data = await reader.read(READ_SIZE)
        except TimeoutError:
            continue
        if not data:
            _closed(state, "the peer closed the connection")
            return
        try:
            data = stream.unwrap(data)
        except mse.MseError as exc:
            state.outcome, state.detail = "protocol-error", f"MSE: {exc}"
            return
        if not data:
            await writer.drain()
            continue
        try:
            events = conn.receive(data, loop.time())
        except PeerWireError as exc:
            _absorb(state, list(exc.events), loop.time())
            what = f"broke the protocol: {exc}"
            if state.messages:
                state.detail += f"; then {what}"
            else:
                state.outcome, state.detail = "protocol-error", what
            return
        had_remote = state.remote is not None
        if _absorb(state, events, loop.time()):
            return
        if not had_remote and state.remote is not None:
            state.outcome, state.detail = "no-pex", "handshake accepted; no ut_pex message"
            deadline = loop.time() + wait
            if not conn.extensions_enabled:
                state.detail = "handshake accepted; the peer does not support BEP 10 extensions"
                return
            send(conn.send_extension_handshake(client=config.client))
            last_sent = loop.time()
        if state.ext is not None and not state.ext.m.get("ut_pex") and not state.messages:
            state.detail = "handshake accepted; the peer does not offer ut_pex"
            return
        # An empty first message (sent before the peer had connections) is not the list we came
        # for: keep listening until one names peers or the wait runs out.
        if state.messages >= messages and state.added:
            return
        await writer.drain()


def _absorb(state: _State, events: list[peer_wire.Event], now: float) -> bool:
    """Fold events into the state; True when the conversation should end now."""
    for ev in events:
        if isinstance(ev, InfoHashMismatch):
            state.outcome = "refused"
            state.detail = f"the peer answered for another infohash {ev.received.hex()}"
            return True
        if isinstance(ev, HandshakeReceived):
            state.remote = ev
            state.handshake_at = now
        elif isinstance(ev, ExtensionHandshake):
            state.ext = ev
        elif isinstance(ev, PexPeers):
            state.messages += 1
            if state.first_after is None and state.handshake_at is not None:
                state.first_after = now - state.handshake_at
            for peer in (*ev.added, *ev.added6):
                if len(state.added) < MAX_PEERS:
                    state.added[peer] = None
            for peer in (*ev.dropped, *ev.dropped6):
                if len(state.dropped) < MAX_PEERS:
                    state.dropped[peer] = None
            state.outcome = "pex"
            state.detail = (
                f"handshake accepted; {state.messages} ut_pex message(s) naming "
                f"{len(state.added)} peer(s)"
            )
    return False


def _timed_out(state: _State, wait: float, handshake_timeout: float) -> None:
    if state.remote is None:
        state.outcome = "timeout"
        state.detail = f"no handshake within {handshake_timeout:g} s"
    elif not state.messages:
        state.detail = f"handshake accepted; no ut_pex message within {wait:g} s"


def _closed(state: _State, reason: str) -> None:
    if state.remote is None:
        state.closed_before_handshake = True
        state.outcome = "refused"
        state.detail = f"{reason} before its handshake (infohash refused)"
    elif state.messages:
        state.detail += f"; then {reason}"
    else:
        state.outcome = "no-pex"
        state.detail = f"handshake accepted, then {reason} without a ut_pex message"
