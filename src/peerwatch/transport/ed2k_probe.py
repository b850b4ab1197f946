"""Probe one eD2k peer (eMule/aMule) for one file over TCP: HELLO, file request, file status.

The asyncio driver of `protocols.ed2k.client.ClientConnection`, behind
`protocols.ed2k.obfuscation.ObfuscationInitiator` when the peer requires obfuscation. It turns an
address (from the command line, a server's or Kad's source list, another peer's source exchange)
into evidence or into a recorded negative result:

- FILESTATUS (alone or in a MULTIPACKETANSWER) on our file hash: the peer offers the file with the
  parts it lists (``possession``, completion from the part status);
- FILEREQANSNOFIL: the peer does not share it (``no-file``);
- anything else (refused, unreachable, timed out, broke the protocol) is said in words.

Obfuscation (aMule EncryptedStreamSocket.cpp) needs the peer's user hash *before* connecting: the
keys are derived from it. With ``obfuscation="auto"`` a peer whose user hash is known is asked
obfuscated first (a peer that supports obfuscation accepts it whether or not it requires it), and
plain when it hangs up on that; a peer whose user hash is unknown is asked plain only: one that
requires obfuscation hangs up on a plain HELLO, and the result says so.

Each request batch is written in one write (`ClientConnection.data_to_send` accumulates a
whole batch): aMule reads what one read gives it, and the HELLO waits for the end of the
obfuscation handshake (aMule drops a connection whose first read holds more than the handshake).
Everything sent and received, as it crossed the socket, is hashed direction-tagged into the
`exchange_sha256` of the result.

Source exchange (``source_exchange=True``, off by default): when the peer's HELLOANSWER
advertises SX2, OP_REQUESTSOURCES2 rides in the same one-write file request multipacket (aMule
answers it there; its stand-alone handler refuses our 19-byte request, ClientTCPSocket.cpp). aMule
sends its OP_ANSWERSOURCES2 *before* the MULTIPACKETANSWER (ClientTCPSocket.cpp OP_MULTIPACKET:
`SendPacket` inside the sub-request loop, the answer after it), so the sources are taken whenever
they come; when the file status comes first, the probe waits at most ``source_wait`` seconds
more for them. The possession outcome is settled before that wait and nothing in it can change
it: a peer that never answers (aMule sends nothing when it has no source to give,
KnownFile.cpp `CreateSrcInfoPacket` returns NULL) costs that wait and no more. The sources are a
claim of the peer's, kept in `Ed2kProbeResult.sources`; what happened to the request is said in
`sources_detail`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from peerwatch.protocols.ed2k import messages as m
from peerwatch.protocols.ed2k.client import (
    ClientConfig,
    ClientConnection,
    ClientError,
    ClientIdentity,
    Event,
    FileName,
    FileStatus,
    NoFile,
    PeerHello,
    SourcesReceived,
)
from peerwatch.protocols.ed2k.hashing import ed2k_part_count
from peerwatch.protocols.ed2k.obfuscation import ObfuscationError, ObfuscationInitiator
from peerwatch.transport.wire_stream import READ_SIZE, Exchange, close_stream, open_stream


@dataclass(frozen=True, slots=True)
class Ed2kProbeConfig:
    identity: ClientIdentity  # what our HELLO says: our stable user hash, name, ports
    connect_timeout: float = 5.0  # TCP connect
    timeout: float = 20.0  # whole attempt (handshakes, HELLO, file answer)
    bind_ip: str | None = None  # local address to probe from
    obfuscation: str = "auto"  # "auto" (see module doc), "plain" or "obfuscated"
    # ask the peer for its sources of the file (SX2) in the file request batch; off: the probe
    # is about this peer and this file (and asking costs up to `source_wait` per proven peer)
    source_exchange: bool = False
    source_wait: float = 2.0  # after the file status, seconds to wait for ANSWERSOURCES2
    max_sources: int = m.MAX_SOURCES  # sources kept from one probe (one answer holds <= 1024)
    # the client core's options; `request_sources` is set from `source_exchange`
    client: ClientConfig = field(default_factory=lambda: ClientConfig(request_sources=False))


@dataclass(frozen=True, slots=True)
class Ed2kProbeResult:
    ip: str
    port: int
    file_hash: bytes
    # "possession", "no-file", "file-name-only", "refused", "unreachable", "timeout",
    # "closed", "protocol-error", "not-tried" (obfuscation only, and no user hash known)
    outcome: str
    obfuscated: bool  # the answer that decided the outcome came over an obfuscated stream
    hello: PeerHello | None  # the peer's HELLOANSWER (user hash, client id, ports, software)
    file_name: str | None  # the name the peer shares the file under
    status: m.PartStatus | None  # the peer's parts of the file
    file_size: int | None  # the file's size, when known (for the part count)
    detail: str  # why, in words (what a defence expert reads)
    exchange_sha256: str  # SHA-256 over the direction-tagged bytes of every attempt
    started: float  # UTC seconds
    ended: float
    # source exchange: whether OP_REQUESTSOURCES2 was sent (the option was on and the peer's
    # HELLOANSWER advertised SX2), whether an ANSWERSOURCES2 came, the sources it listed (the
    # peer's claim), its SX version and what happened to the request, in words
    sources_requested: bool = False
    sources_answered: bool = False
    sources: tuple[m.Source, ...] = ()
    sources_version: int | None = None
    sources_detail: str = ""

    @property
    def completion_ppm(self) -> int | None:
        """Share of the file's parts the peer has (a complete file: 1,000,000)."""
        status = self.status
        if status is None:
            return None
        if status.complete:
            return 1_000_000
        total = ed2k_part_count(self.file_size) if self.file_size else status.part_count
        if total <= 0:
            return None
        return min(status.have_count, total) * 1_000_000 // total


@dataclass
class _Attempt:
    outcome: str
    detail: str
    obfuscated: bool = False
    hello: PeerHello | None = None
    file_name: str | None = None
    status: m.PartStatus | None = None
    closed_early: bool = False  # the peer hung up before its HELLOANSWER
    sources_requested: bool = False
    sources_answered: bool = False
    sources_done: bool = False  # nothing more to wait for (answered, or the stream is unusable)
    sources: list[m.Source] = field(default_factory=list)
    sources_detail: str = ""
    max_sources: int = m.MAX_SOURCES
    conn: ClientConnection | None = None  # kept for the wait for sources after the file status
    crypt: ObfuscationInitiator | None = None


def obfuscation_modes(config: Ed2kProbeConfig, user_hash: bytes | None) -> list[bool]:
    if config.obfuscation == "plain":
        return [False]
    if config.obfuscation == "obfuscated":
        return [True] if user_hash is not None else []
    if config.obfuscation != "auto":
        raise ValueError(f"unknown obfuscation mode {config.obfuscation!r}")
    return [True, False] if user_hash is not None else [False]


async def probe_ed2k(
    ip: str,
    port: int,
    file_hash: bytes,
    config: Ed2kProbeConfig,
    *,
    user_hash: bytes | None = None,
    file_size: int | None = None,
    clock: Callable[[], float] = time.time,
) -> Ed2kProbeResult:
    """Probe `ip:port` for `file_hash`. `user_hash` is the peer's, when known (obfuscation needs
    it). Never raises for the peer's faults: they are outcomes."""
    started = clock()
    exchange = Exchange()
    attempt = _Attempt("not-tried", "obfuscation was required but no user hash is known")
    details = []
    for obfuscated in obfuscation_modes(config, user_hash):
        attempt = await _attempt(
            ip, port, file_hash, config, file_size, user_hash if obfuscated else None, exchange
        )
        details.append(("obfuscated: " if obfuscated else "plain: ") + attempt.detail)
        # Fall back only when the peer hung up before answering our HELLO (how a peer that
        # does not take this kind of stream answers); one that answered is not asked twice.
        if not attempt.closed_early:
            break
    if attempt.closed_early and user_hash is None and not attempt.obfuscated:
        details.append("a peer that requires obfuscation hangs up like this: give its user hash")
    if not details:
        details.append(attempt.detail)
    return Ed2kProbeResult(
        ip=ip,
        port=port,
        file_hash=file_hash,
        outcome=attempt.outcome,
        obfuscated=attempt.obfuscated,
        hello=attempt.hello,
        file_name=attempt.file_name,
        status=attempt.status,
        file_size=file_size,
        detail="; ".join(details),
        exchange_sha256=exchange.hexdigest(),
        started=started,
        ended=clock(),
        sources_requested=attempt.sources_requested,
        sources_answered=attempt.sources_answered,
        sources=tuple(attempt.sources),
        sources_version=attempt.sources[0].version if attempt.sources else None,
        sources_detail=_sources_detail(attempt) if config.source_exchange else "",
    )


def _sources_detail(attempt: _Attempt) -> str:
    if attempt.sources_detail:
        return attempt.sources_detail
    if attempt.sources_answered:
        return f"ANSWERSOURCES2 listed {len(attempt.sources)} source(s)"
    if attempt.hello is None:
        return "not asked: no HELLOANSWER"
    if not attempt.sources_requested:
        return "not asked: the peer's HELLOANSWER does not advertise source exchange 2"
    return "asked; no answer before the probe ended"


async def _attempt(
    ip: str,
    port: int,
    file_hash: bytes,
    config: Ed2kProbeConfig,
    file_size: int | None,
    obfuscate_for: bytes | None,
    exchange: Exchange,
) -> _Attempt:
    try:
        reader, writer = await open_stream(
            ip, port, bind_ip=config.bind_ip, timeout=config.connect_timeout
        )
    except TimeoutError:
        return _Attempt("unreachable", "TCP connect timed out")
    except ConnectionRefusedError:
        return _Attempt("refused", "TCP connection refused")
    except OSError as exc:
        return _Attempt("unreachable", f"TCP connect failed: {exc.strerror or exc}")
    attempt = _Attempt(
        "timeout",
        "no answer",
        obfuscated=obfuscate_for is not None,
        max_sources=config.max_sources,
    )
    try:
        try:
            async with asyncio.timeout(config.timeout):
                await _converse(
                    reader, writer, file_hash, config, file_size, obfuscate_for, exchange, attempt
                )
        except TimeoutError:
            attempt.outcome = "timeout"
            attempt.detail = _timeout_detail(attempt)
        except OSError as exc:
            # A reset (ECONNRESET) or a write to a closed socket (EPIPE) mid-conversation: the
            # peer's doing, recorded like a hang-up (TimeoutError is an OSError: caught above).
            attempt.outcome = "closed"
            attempt.closed_early = attempt.hello is None
            when = "before" if attempt.hello is None else "after"
            attempt.detail = (
                f"the peer reset the connection {when} its HELLOANSWER ({exc.strerror or exc})"
            )
        # The possession outcome is settled above; the wait for sources runs outside the
        # attempt's timeout, under its own, so that nothing in it can turn it into a timeout.
        if (
            attempt.outcome == "possession"
            and attempt.sources_requested
            and not attempt.sources_done
        ):
            await _await_sources(reader, config.source_wait, exchange, attempt)
    finally:
        await close_stream(writer)
    return attempt


async def _await_sources(
    reader: asyncio.StreamReader, wait: float, exchange: Exchange, attempt: _Attempt
) -> None:
    """Read until the peer's ANSWERSOURCES2 comes, for at most `wait` seconds. Only sources are
    taken from what comes now: the file status already decided the outcome."""
    conn, crypt = attempt.conn, attempt.crypt
    assert conn is not None
    try:
        async with asyncio.timeout(wait):
            while not attempt.sources_done:
                data = await reader.read(READ_SIZE)
                if not data:
                    attempt.sources_detail = (
                        "asked; the peer closed the connection without answering the source request"
                    )
                    return
                exchange.received(data)
                if crypt is not None:
                    data = crypt.receive(data)
                    if not data:
                        continue
                _take_sources(conn.receive(data, time.monotonic()), attempt)
    except TimeoutError:
        attempt.sources_detail = f"asked; no ANSWERSOURCES2 within {wait:g} s of the file status"
    except OSError as exc:
        attempt.sources_detail = (
            f"asked; the peer reset the connection without answering ({exc.strerror or exc})"
        )
    except ClientError as exc:
        _take_sources(exc.events, attempt)
        attempt.sources_detail = f"asked; the peer broke the protocol after its file status: {exc}"
    except ObfuscationError as exc:
        attempt.sources_detail = f"asked; obfuscation failed after the file status: {exc}"


def _timeout_detail(attempt: _Attempt) -> str:
    if attempt.hello is None:
        return "no HELLOANSWER in time"
    if attempt.file_name is not None:
        return f"file name {attempt.file_name!r} but no file status in time"
    return "HELLOANSWER, then no answer to the file request in time"


async def _converse(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    file_hash: bytes,
    config: Ed2kProbeConfig,
    file_size: int | None,
    obfuscate_for: bytes | None,
    exchange: Exchange,
    attempt: _Attempt,
) -> None:
    crypt: ObfuscationInitiator | None = None

    def send(data: bytes) -> None:
        wire = crypt.encrypt(data) if crypt is not None else data
        exchange.sent(wire)
        writer.write(wire)  # one write per batch (see module doc)

    if obfuscate_for is not None:
        crypt = ObfuscationInitiator(obfuscate_for, os.urandom)
        first = crypt.start()
        exchange.sent(first)
        writer.write(first)
        await writer.drain()
    client = dataclasses.replace(config.client, request_sources=config.source_exchange)
    conn = ClientConnection(
        config.identity, file_hash, time.monotonic(), file_size=file_size, config=client
    )
    attempt.conn, attempt.crypt = conn, crypt
    conn.start(time.monotonic())
    hello_sent = False
    if crypt is None:
        send(conn.data_to_send())
        hello_sent = True
        await writer.drain()
    while True:
        data = await reader.read(READ_SIZE)
        if not data:
            attempt.outcome = "closed"
            if attempt.hello is None:
                attempt.closed_early = True
                attempt.detail = (
                    "the peer closed the connection during the obfuscation handshake"
                    if crypt is not None and not crypt.established
                    else "the peer closed the connection before its HELLOANSWER"
                )
            else:
                attempt.detail = "the peer closed the connection after its HELLOANSWER"
            return
        exchange.received(data)
        if crypt is not None:
            try:
                data = crypt.receive(data)
            except ObfuscationError as exc:
                attempt.outcome, attempt.detail = "protocol-error", f"obfuscation: {exc}"
                return
            if not crypt.established:
                continue
            if not hello_sent:
                send(conn.data_to_send())
                hello_sent = True
                await writer.drain()
            if not data:
                continue
        try:
            events = conn.receive(data, time.monotonic())
        except ClientError as exc:
            _take(exc.events, attempt)
            if attempt.status is not None and attempt.sources_requested:
                # The fault came after the file status in the same read (the events decoded
                # before a fault are kept): it is in the source answer or after it, and the
                # file status stands as it would have without the source request.
                attempt.sources_done = True
                attempt.sources_detail = (
                    f"asked; the peer broke the protocol after its file status: {exc}"
                )
                _possession(attempt)
                return
            attempt.outcome, attempt.detail = "protocol-error", str(exc)
            return
        _take(events, attempt)
        if attempt.hello is not None:
            # what `ClientConnection._send_file_request` does: SX2 only to a peer that says so
            attempt.sources_requested = (
                client.request_sources and attempt.hello.supports_source_exchange2
            )
        out = conn.data_to_send()
        if out:
            send(out)
            await writer.drain()
        if attempt.status is not None:
            _possession(attempt)
            return
        if any(isinstance(e, NoFile) for e in events):
            attempt.outcome = "no-file"
            attempt.detail = "the peer answered that it does not share the file (FILEREQANSNOFIL)"
            return
        if attempt.file_name is not None:
            attempt.outcome = "file-name-only"


def _possession(attempt: _Attempt) -> None:
    attempt.outcome = "possession"
    parts = attempt.status
    assert parts is not None
    attempt.detail = (
        "file status: complete"
        if parts.complete
        else f"file status: {parts.have_count} of {parts.part_count} parts"
    )


def _take(events: Sequence[Event], attempt: _Attempt) -> None:
    for event in events:
        if isinstance(event, PeerHello):
            attempt.hello = event
        elif isinstance(event, FileName):
            attempt.file_name = event.name
        elif isinstance(event, FileStatus):
            attempt.status = event.status
    _take_sources(events, attempt)


def _take_sources(events: Sequence[Event], attempt: _Attempt) -> None:
    for event in events:
        if isinstance(event, SourcesReceived):
            # One answer per request: the first ends the wait. A peer sending more is kept to
            # `max_sources` in all (memory stays bounded whatever it sends).
            attempt.sources_answered = attempt.sources_done = True
            room = attempt.max_sources - len(attempt.sources)
            attempt.sources.extend(event.sources[: max(room, 0)])
