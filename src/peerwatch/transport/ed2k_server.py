"""Ask an eD2k server who shares a list of files: log in, GETSOURCES(_OBFU), FOUNDSOURCES.

The asyncio driver of `protocols.ed2k.server.ServerSession`. One TCP connection per server
(from `bind_ip`), one login with the sensor's user hash, then the source requests in batches of
at most 15 per write (aMule's frame size), each batch answered or timed out before the next.
The result holds, per file, the server's source list: its *claim* that these clients offered the
file (DESIGN.md: a claim, never possession). High-id sources carry their address; low-id
sources (firewalled, id < 2**24) are kept but have no address to dial. With the OBFU answer a
source that supports obfuscation comes with its crypt options and user hash, which is what the
probe needs to dial a peer that requires obfuscation.

With ``obfuscation=True`` the connection to the server is obfuscated first (aMule's
Diffie-Hellman "client <-> server" handshake, `server.ServerObfuscationInitiator`; our login goes
with our handshake answer, as aMule sends it); a server that does not take it hangs up, which is
the outcome (no plain retry: whoever asked for obfuscation asked for no plain bytes). The
source lists use the OBFU form whenever the server's IDCHANGE flags say it has it
(SRV_TCPFLG_TCPOBFUSCATION), obfuscated connection or not.

Every byte both ways is hashed, direction-tagged, into `exchange_sha256` (as `ed2k_probe`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from peerwatch.protocols.ed2k import server as s
from peerwatch.protocols.ed2k.obfuscation import ObfuscationError
from peerwatch.transport.wire_stream import READ_SIZE, Exchange, close_stream, open_stream


@dataclass(frozen=True, slots=True)
class Ed2kServerConfig:
    user_hash: bytes  # the sensor's user hash (the same one its probes send)
    name: str = "peerwatch"  # CT_NAME in the login
    tcp_port: int = 4662  # the port our login claims (nothing listens: expect a low id)
    connect_timeout: float = 5.0  # TCP connect
    timeout: float = 60.0  # the whole exchange with one server
    bind_ip: str | None = None  # local address to connect from
    obfuscation: bool = False  # obfuscate the server connection (DH handshake) before the login
    # login / answer timeouts, batch size
    session: s.SessionConfig = field(default_factory=s.SessionConfig)


@dataclass(frozen=True, slots=True)
class ServerSource:
    """One source a server listed for a file."""

    client_id: int
    ip: str | None  # None for a low id (no address: it cannot be dialled)
    port: int
    user_hash: bytes | None  # from the OBFU answer, when the source supports obfuscation
    crypt_options: int | None  # OBFU answers only: 0x01 supports, 0x02 requests, 0x04 requires

    @property
    def low_id(self) -> bool:
        return s.is_low_id(self.client_id)

    @property
    def requires_obfuscation(self) -> bool:
        return bool((self.crypt_options or 0) & s.CRYPT_REQUIRED)


@dataclass(frozen=True, slots=True)
class ServerFileResult:
    file_hash: bytes
    size: int | None
    answered: bool  # the server sent FOUNDSOURCES for it (else it stayed silent until timeout)
    obfuscated: bool  # the answer was FOUNDSOURCES_OBFU
    sources: tuple[ServerSource, ...]
    at: float  # UTC seconds when the answer (or the timeout) came


@dataclass(frozen=True, slots=True)
class Ed2kServerResult:
    host: str
    port: int
    # "answered" (logged in, every file asked), "refused", "unreachable", "timeout", "closed",
    # "protocol-error"
    outcome: str
    client_id: int | None  # the id the server gave us
    tcp_flags: int | None  # the server's TCP flags (IDCHANGE)
    server_name: str | None  # SERVERIDENT
    messages: tuple[str, ...]  # SERVERMESSAGE lines
    users: int | None  # SERVERSTATUS
    files_count: int | None
    files: tuple[ServerFileResult, ...]
    detail: str
    exchange_sha256: str
    started: float
    ended: float

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class _State:
    outcome: str = "timeout"
    detail: str = "no IDCHANGE"
    client_id: int | None = None
    tcp_flags: int | None = None
    server_name: str | None = None
    users: int | None = None
    files_count: int | None = None


async def query_server(
    host: str,
    port: int,
    files: Sequence[s.FileQuery],
    config: Ed2kServerConfig,
    *,
    clock: Callable[[], float] = time.time,
) -> Ed2kServerResult:
    """Log into `host:port` and ask for the sources of every file. Never raises for the
    server's faults: they are the outcome; answers received before a fault are kept."""
    started = clock()
    exchange = Exchange()
    st = _State()
    messages: list[str] = []
    answers: dict[bytes, ServerFileResult] = {}
    sizes = {f.file_hash: f.size for f in files}
    try:
        reader, writer = await open_stream(
            host, port, bind_ip=config.bind_ip, timeout=config.connect_timeout
        )
    except TimeoutError:
        st.outcome, st.detail = "unreachable", "TCP connect timed out"
    except ConnectionRefusedError:
        st.outcome, st.detail = "refused", "TCP connection refused"
    except OSError as exc:
        st.outcome, st.detail = "unreachable", f"TCP connect failed: {exc.strerror or exc}"
    else:
        session = s.ServerSession(
            s.LoginRequest.build(config.user_hash, name=config.name, tcp_port=config.tcp_port),
            config.session,
        )

        def take(events: Sequence[s.Event]) -> None:
            for e in events:
                if isinstance(e, s.LoggedIn):
                    st.client_id, st.tcp_flags = e.client_id, e.tcp_flags
                elif isinstance(e, s.MessageReceived):
                    messages.extend(e.lines)
                elif isinstance(e, s.IdentReceived):
                    st.server_name = e.name
                elif isinstance(e, s.StatusReceived):
                    st.users, st.files_count = e.users, e.files
                elif isinstance(e, s.SourcesFound):
                    answers[e.file_hash] = ServerFileResult(
                        e.file_hash,
                        sizes.get(e.file_hash),
                        True,
                        e.obfuscated,
                        tuple(_source(x) for x in e.sources),
                        clock(),
                    )
                elif isinstance(e, s.SourcesUnanswered):
                    for h in e.file_hashes:
                        answers[h] = ServerFileResult(h, sizes.get(h), False, False, (), clock())

        try:
            async with asyncio.timeout(config.timeout):
                crypt = s.ServerObfuscationInitiator(os.urandom) if config.obfuscation else None
                await _converse(reader, writer, session, files, exchange, st, take, crypt)
        except TimeoutError:
            st.outcome = "timeout"
            st.detail = (
                "no IDCHANGE in time"
                if st.client_id is None
                else f"answers for {len(answers)} of {len(files)} files in time"
            )
        except OSError as exc:  # a reset or a broken pipe: the server's doing, an outcome
            st.outcome = "closed"
            st.detail = f"the connection failed: {exc.strerror or exc}"
        finally:
            await close_stream(writer)
    ended = clock()
    results = tuple(
        answers.get(f.file_hash) or ServerFileResult(f.file_hash, f.size, False, False, (), ended)
        for f in files
    )
    return Ed2kServerResult(
        host=host,
        port=port,
        outcome=st.outcome,
        client_id=st.client_id,
        tcp_flags=st.tcp_flags,
        server_name=st.server_name,
        messages=tuple(messages),
        users=st.users,
        files_count=st.files_count,
        files=results,
        detail=st.detail,
        exchange_sha256=exchange.hexdigest(),
        started=started,
        ended=ended,
    )


def _source(x: s.FoundSource) -> ServerSource:
    return ServerSource(x.client_id, x.ip, x.port, x.user_hash, x.crypt_options)


async def _converse(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    session: s.ServerSession,
    files: Sequence[s.FileQuery],
    exchange: Exchange,
    st: _State,
    take: Callable[[Sequence[s.Event]], None],
    crypt: s.ServerObfuscationInitiator | None,
) -> None:
    def flush() -> None:
        if crypt is not None and not crypt.established:
            return  # the login waits for the end of the handshake
        out = session.data_to_send()
        if out:
            wire = crypt.encrypt(out) if crypt is not None else out
            exchange.sent(wire)
            writer.write(wire)  # one write per batch: aMule sends a frame of requests at once

    session.start(time.monotonic())
    session.ask_sources(files, time.monotonic())  # held back until the IDCHANGE
    if crypt is not None:
        first = crypt.start()
        exchange.sent(first)
        writer.write(first)
    flush()
    await writer.drain()
    while True:
        if session.state is s.SessionState.CONNECTED and session.idle:
            st.outcome = "answered"
            st.detail = f"logged in with id {session.client_id}; asked about {len(files)} files"
            return
        deadline = session.deadline
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            async with asyncio.timeout(wait):
                data = await reader.read(READ_SIZE)
        except TimeoutError:
            if session.state is not s.SessionState.CONNECTED:
                st.outcome, st.detail = "timeout", "no IDCHANGE in time"
                return
            take(session.expire(time.monotonic()))
            flush()
            await writer.drain()
            continue
        if not data:
            st.outcome = "closed"
            st.detail = (
                "the server closed the connection during the obfuscation handshake"
                if crypt is not None and not crypt.established
                else "the server closed the connection before the IDCHANGE"
                if session.client_id is None
                else "the server closed the connection before answering every file"
            )
            return
        exchange.received(data)
        if crypt is not None:
            try:
                data = crypt.receive(data)
            except ObfuscationError as exc:
                st.outcome, st.detail = "protocol-error", f"obfuscation: {exc}"
                return
            if not data:
                flush()  # the handshake may just have ended: the login goes now
                await writer.drain()
                continue
        try:
            events = session.receive(data, time.monotonic())
        except s.ServerError as exc:
            take(exc.events)
            st.outcome, st.detail = "protocol-error", str(exc)
            return
        take(events)
        flush()
        await writer.drain()
