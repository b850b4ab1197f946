"""Download parts of one file from ONE eD2k peer and check each part's MD4: the verify-peer driver.

The asyncio driver of `protocols.ed2k.client.ClientConnection` for a download, over one TCP
connection (obfuscated when the peer's user hash is known, with the same modes and fallback as
`transport.ed2k_probe`, whose config it takes). The exchange (aMule DownloadClient.cpp, the
downloading side; UploadQueue.cpp / UploadClient.cpp, the uploading side)::

    us:   HELLO                                   peer: HELLOANSWER
    us:   file request (OP_MULTIPACKET: name, status, AICH hash)
    peer: MULTIPACKETANSWER (name, FILESTATUS, AICHFILEHASHANS) or FILEREQANSNOFIL
    us:   HASHSETREQUEST (files of one part or more)  peer: HASHSETANSWER (checked: MD4 root)
    us:   STARTUPLOADREQ                          peer: QUEUERANKING (rank) ... ACCEPTUPLOADREQ
    us:   REQUESTPARTS, at most three blocks of at most 180 KiB (EMBLOCKSIZE), one write
    peer: SENDINGPART / COMPRESSEDPART ... (repeat the request until the part is whole)
    us:   OP_END_OF_DOWNLOAD, close

Each selected part (9,728,000 bytes, the last one shorter) is requested block after block and its
bytes are streamed, in file order, into MD4 (`hashing`) and, when the caller keeps content, into
its sink; when the part is whole the digest is compared with the hashset entry (or, for a file
below one part, which has no hashset, with the file hash itself). Memory is bounded: only the
bytes of the current part's outstanding blocks that arrived out of order are ever held (at most
two request windows of 540 KiB), never a whole part.

aMule gives an upload slot at once when one is free and nobody waits (UploadQueue.cpp
`AddClientToQueue`: "if possible start upload right away", at most one new slot a second);
otherwise it queues us and sends its rank (OP_QUEUERANKING). The wait for ACCEPTUPLOADREQ is
bounded (`accept_timeout`): a peer that never accepts gives outcome ``queued`` with its last rank.
aMule drops, silently, a block request that reaches past the end of its file or into a part it
does not have (UploadClient.cpp `AddReqBlock`), so the file size must be known and only held
parts are asked for. Parts that were selected but never checked are counted as not served.

Never raises for the peer's faults: they are outcomes. `EgressDeniedError` if `ip` is not allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

from peerwatch.protocols.ed2k import messages as m
from peerwatch.protocols.ed2k.client import (
    AichHash,
    ClientConnection,
    ClientError,
    Event,
    FileName,
    FileStatus,
    HashSet,
    NoFile,
    PartData,
    PeerHello,
    QueuePosition,
    UploadAccepted,
    UploadEnded,
)
from peerwatch.protocols.ed2k.hashing import (
    BLOCK_SIZE,
    data_part_count,
    ed2k_part_count,
    hashset_count,
    new_md4,
    part_range,
)
from peerwatch.protocols.ed2k.obfuscation import ObfuscationError, ObfuscationInitiator
from peerwatch.transport.ed2k_probe import Ed2kProbeConfig, obfuscation_modes
from peerwatch.transport.egress import EgressPolicy
from peerwatch.transport.wire_stream import READ_SIZE, Exchange, close_stream, open_stream

#: Blocks per OP_REQUESTPARTS (the packet always has three <start, end> pairs).
BLOCKS_PER_REQUEST = m.BLOCKS_PER_REQUEST


@dataclass(frozen=True, slots=True)
class Ed2kDownloadConfig:
    # identity, TCP connect timeout, bind address, obfuscation mode ("auto" / "plain" /
    # "obfuscated", as the probe); its `timeout` bounds the wait for each answer (HELLOANSWER,
    # file answer, hashset)
    probe: Ed2kProbeConfig
    accept_timeout: float = 60.0  # STARTUPLOADREQ -> ACCEPTUPLOADREQ, while queued
    stall_timeout: float = 30.0  # blocks requested, yet no byte for this long: give up
    block_size: int = BLOCK_SIZE  # bytes per requested block (aMule EMBLOCKSIZE, 180 KiB)
    egress: EgressPolicy = field(default_factory=EgressPolicy)  # loopback only unless widened

    def __post_init__(self) -> None:
        if not 0 < self.block_size <= BLOCK_SIZE:
            # aMule refuses a block above 3 * EMBLOCKSIZE and asks for EMBLOCKSIZE itself.
            raise ValueError(f"block size is 1..{BLOCK_SIZE} bytes")


@dataclass(frozen=True, slots=True)
class PartCheck:
    """One part downloaded from the peer and hashed: `ok` when it matched."""

    index: int
    ok: bool
    digest: bytes  # MD4 of the bytes received
    expected: bytes  # the hashset entry, or the file hash for a file below one part
    expected_from: str  # "hashset" or "file-hash"
    length: int
    compressed_bytes: int  # of those, how many came in COMPRESSEDPART packets
    at: float  # UTC seconds when it was checked


class PartSink(Protocol):
    """Where kept bytes go (only with --keep-content). `data` gets each part's bytes in file
    order before the part is checked; `part_done` says whether they hashed right."""

    def data(self, index: int, offset: int, data: bytes) -> None: ...

    def part_done(self, check: PartCheck) -> None: ...


@dataclass(frozen=True, slots=True)
class Ed2kDownloadResult:
    ip: str
    port: int
    file_hash: bytes
    file_size: int
    #: "complete" (every wanted part was served and checked), "incomplete" (it ended early:
    #: stalled, cancelled, closed or broke the protocol; `detail` says which), "queued" (no upload
    #: slot within the bounded wait), "no-parts" (the peer holds none of the selected parts),
    #: "no-file", "refused", "unreachable", "timeout", "closed", "protocol-error", "not-tried"
    outcome: str
    detail: str
    obfuscated: bool
    hello: PeerHello | None
    file_name: str | None
    status: m.PartStatus | None
    aich_hash: bytes | None  # the peer's AICH master hash (AICHFILEHASHANS), when it sent one
    hashset_verified: bool | None  # the hashset hashed to the file hash (None: no hashset needed)
    queue_rank: int | None  # the last queue rank the peer gave (OP_QUEUERANKING)
    upload_accepted: bool
    part_count: int  # data parts of the file
    parts_held: int | None  # of those, how many the peer's file status lists
    selected: int  # parts in the caller's selection
    wanted: int  # of those, the ones the peer holds: the ones requested
    not_held: int  # selected parts the peer does not hold: never requested
    parts: tuple[PartCheck, ...]
    exchange_sha256: str
    started: float
    ended: float

    @property
    def verified(self) -> int:
        return sum(p.ok for p in self.parts)

    @property
    def failed(self) -> int:
        return sum(not p.ok for p in self.parts)

    @property
    def not_served(self) -> int:
        return self.wanted - len(self.parts)

    @property
    def completion_ppm(self) -> int | None:
        """Share of the file's parts the peer's status lists (complete: 1,000,000)."""
        if self.status is None:
            return None
        if self.status.complete:
            return 1_000_000
        total = ed2k_part_count(self.file_size)
        return min(self.status.have_count, total) * 1_000_000 // total if total else None


def select_parts(size: int, status: m.PartStatus, limit: int | None) -> tuple[list[int], int, int]:
    """(parts to request, selected, not held): all data parts, or the first `limit` held."""
    total = data_part_count(size)
    held = [i for i in range(total) if status.has(i)]
    if limit is None:
        return held, total, total - len(held)
    selected = min(limit, total)
    wanted = held[:selected]
    return wanted, selected, selected - len(wanted)


class _EndError(Exception):
    """Ends the conversation with an outcome (never leaves this module)."""

    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail


class _Part:
    """The part being downloaded: its bytes go into MD4 (and the sink) in file order."""

    def __init__(self, index: int, start: int, end: int, expected: bytes, source: str) -> None:
        self.index = index
        self.start = start
        self.end = end
        self.expected = expected
        self.source = source
        self.hashed = start  # bytes before this offset went into the digest
        self.requested = start  # bytes before this offset were asked for
        self.block_ends: list[int] = []  # ends of the blocks asked for and not yet all in
        self.pending: dict[int, bytes] = {}  # out-of-order data, until the gap before it fills
        self.pending_bytes = 0
        self.compressed = 0
        self.md4 = new_md4()


class _Session:
    def __init__(
        self,
        ip: str,
        port: int,
        file_hash: bytes,
        size: int,
        config: Ed2kDownloadConfig,
        limit: int | None,
        sink: PartSink | None,
        clock: Callable[[], float],
        exchange: Exchange,
    ) -> None:
        self.ip, self.port, self.file_hash, self.size = ip, port, file_hash, size
        self.config = config
        self.limit = limit
        self.sink = sink
        self.clock = clock
        self.exchange = exchange
        self.checks: list[PartCheck] = []
        self.outcome = "not-tried"
        self.detail = "obfuscation was required but no user hash is known"
        self.obfuscated = False
        self.closed_early = False
        self.hello: PeerHello | None = None
        self.file_name: str | None = None
        self.status: m.PartStatus | None = None
        self.aich: bytes | None = None
        self.hashset: tuple[bytes, ...] | None = None
        self.hashset_verified: bool | None = None
        self.queue_rank: int | None = None
        self.accepted = False
        self.todo: list[int] = []
        self.selected = 0
        self.not_held = 0
        self.wanted = 0
        self.part: _Part | None = None
        self.phase = "hello"
        self.deadline = 0.0

    # --- one attempt over one TCP connection ----------------------------------------------------

    async def attempt(self, obfuscate_for: bytes | None) -> None:
        self._reset()
        self.obfuscated = obfuscate_for is not None
        probe = self.config.probe
        try:
            reader, writer = await open_stream(
                self.ip, self.port, bind_ip=probe.bind_ip, timeout=probe.connect_timeout
            )
        except TimeoutError:
            self.outcome, self.detail = "unreachable", "TCP connect timed out"
            return
        except ConnectionRefusedError:
            self.outcome, self.detail = "refused", "TCP connection refused"
            return
        except OSError as exc:
            self.outcome, self.detail = "unreachable", f"TCP connect failed: {exc.strerror or exc}"
            return
        try:
            await self._converse(reader, writer, obfuscate_for)
        except _EndError as end:
            self.outcome, self.detail = end.outcome, end.detail
        except OSError as exc:
            # A reset (ECONNRESET) or a write to a closed socket (EPIPE): the peer's doing,
            # recorded like a hang-up, as the probe does.
            self.closed_early = self.hello is None
            self.outcome = "incomplete" if self.accepted else "closed"
            self.detail = (
                f"the peer reset the connection (waiting for: {self.phase}; "
                f"{len(self.checks)} of {self.wanted} parts checked): {exc.strerror or exc}"
            )
        finally:
            self.part = None  # drop any bytes held
            await close_stream(writer)

    def _reset(self) -> None:
        self.checks.clear()
        self.closed_early = False
        self.hello = None
        self.file_name = None
        self.status = None
        self.aich = None
        self.hashset = None
        self.hashset_verified = None
        self.queue_rank = None
        self.accepted = False
        self.todo, self.selected, self.not_held, self.wanted = [], 0, 0, 0
        self.part = None
        self.phase = "hello"

    def _wait(self, phase: str, seconds: float) -> None:
        self.phase = phase
        self.deadline = time.monotonic() + seconds

    async def _converse(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        obfuscate_for: bytes | None,
    ) -> None:
        crypt: ObfuscationInitiator | None = None

        async def send(data: bytes) -> None:
            if not data:
                return
            wire = crypt.encrypt(data) if crypt is not None else data
            self.exchange.sent(wire)
            writer.write(wire)  # one write per batch: aMule reads what one read gives it
            await writer.drain()

        probe = self.config.probe
        self._wait("hello", probe.timeout)
        if obfuscate_for is not None:
            crypt = ObfuscationInitiator(obfuscate_for, os.urandom)
            first = crypt.start()
            self.exchange.sent(first)
            writer.write(first)
            await writer.drain()
        conn = ClientConnection(
            probe.identity,
            self.file_hash,
            time.monotonic(),
            file_size=self.size,
            config=probe.client,
        )
        conn.start(time.monotonic())
        hello_sent = False
        if crypt is None:
            # The HELLO waits for the end of the obfuscation handshake (see ed2k_probe).
            await send(conn.data_to_send())
            hello_sent = True
        while True:
            remaining = self.deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                async with asyncio.timeout(remaining):
                    data = await reader.read(READ_SIZE)
            except TimeoutError:
                self._timed_out()
            if not data:
                self._closed(crypt)
            self.exchange.received(data)
            if crypt is not None:
                try:
                    data = crypt.receive(data)
                except ObfuscationError as exc:
                    raise _EndError("protocol-error", f"obfuscation: {exc}") from None
                if not crypt.established:
                    continue
                if not hello_sent:
                    await send(conn.data_to_send())
                    hello_sent = True
                if not data:
                    continue
            try:
                events = conn.receive(data, time.monotonic())
            except ClientError as exc:
                self._note(exc.events)  # what came before the fault is still recorded
                raise _EndError(self._broken_outcome(), str(exc)) from None
            done = self._take(events, conn)
            await send(conn.data_to_send())
            if done:
                with contextlib.suppress(OSError):  # a courtesy: the result stands without it
                    await send(m.EndOfDownload(self.file_hash).encode())  # frees the slot
                raise _EndError(
                    "complete",
                    f"{len(self.checks)} of {self.wanted} requested parts checked: "
                    f"{sum(c.ok for c in self.checks)} verified",
                )

    def _broken_outcome(self) -> str:
        return "incomplete" if self.accepted else "protocol-error"

    def _timed_out(self) -> NoReturn:
        if self.phase == "hello":
            raise _EndError("timeout", "no HELLOANSWER in time")
        if self.phase == "file":
            raise _EndError("timeout", "HELLOANSWER, then no file status in time")
        if self.phase == "hashset":
            raise _EndError("timeout", "no HASHSETANSWER in time")
        if self.phase == "queue":
            rank = f"; last queue rank {self.queue_rank}" if self.queue_rank is not None else ""
            raise _EndError(
                "queued",
                f"no upload slot (ACCEPTUPLOADREQ) within {self.config.accept_timeout:g} s{rank}",
            )
        raise _EndError(
            "incomplete",
            f"stalled: no data for {self.config.stall_timeout:g} s after "
            f"{len(self.checks)} of {self.wanted} parts",
        )

    def _closed(self, crypt: ObfuscationInitiator | None) -> NoReturn:
        if self.hello is None:
            self.closed_early = True
            raise _EndError(
                "closed",
                "the peer closed the connection during the obfuscation handshake"
                if crypt is not None and not crypt.established
                else "the peer closed the connection before its HELLOANSWER",
            )
        if self.accepted:
            raise _EndError(
                "incomplete",
                f"the peer closed the connection after {len(self.checks)} of {self.wanted} parts",
            )
        raise _EndError("closed", f"the peer closed the connection (waiting for: {self.phase})")

    # --- events ---------------------------------------------------------------------------------

    def _take(self, events: Sequence[Event], conn: ClientConnection) -> bool:
        """Act on the peer's events; True when every wanted part has been checked."""
        probe = self.config.probe
        for ev in events:
            if isinstance(ev, PeerHello):
                self.hello = ev
                self._wait("file", probe.timeout)
            elif isinstance(ev, FileName):
                self.file_name = ev.name
            elif isinstance(ev, AichHash):
                self.aich = ev.aich_hash
            elif isinstance(ev, NoFile):
                raise _EndError("no-file", "the peer does not share the file (FILEREQANSNOFIL)")
            elif isinstance(ev, FileStatus):
                if self.status is None:
                    self.status = ev.status
                    self._file_found(conn)
                else:
                    self.status = ev.status
            elif isinstance(ev, HashSet):
                self.hashset = ev.part_hashes
                self.hashset_verified = True  # ClientConnection checked its MD4 root
                self._ask_upload(conn)
            elif isinstance(ev, QueuePosition):
                self.queue_rank = ev.rank
            elif isinstance(ev, UploadAccepted):
                if not self.accepted:
                    self.accepted = True
                    self._request(conn)
            elif isinstance(ev, UploadEnded):
                if self.accepted and (self.todo or self.part is not None):
                    raise _EndError(
                        "incomplete",
                        f"the peer ended the upload ({ev.reason}) after {len(self.checks)} "
                        f"of {self.wanted} parts",
                    )
            elif isinstance(ev, PartData):
                if self._data(ev):
                    return True
                self._request(conn)
        return False

    def _note(self, events: Sequence[Event]) -> None:
        """Record the facts in events that arrived with a fault (the connection is dead)."""
        for ev in events:
            if isinstance(ev, PeerHello):
                self.hello = ev
            elif isinstance(ev, FileName):
                self.file_name = ev.name
            elif isinstance(ev, AichHash):
                self.aich = ev.aich_hash
            elif isinstance(ev, FileStatus) and self.status is None:
                self.status = ev.status

    def _file_found(self, conn: ClientConnection) -> None:
        status = self.status
        assert status is not None
        self.todo, self.selected, self.not_held = select_parts(self.size, status, self.limit)
        self.wanted = len(self.todo)
        if not self.todo:
            raise _EndError(
                "no-parts", f"the peer holds none of the {self.selected} selected parts"
            )
        if hashset_count(self.size):
            conn.request_hashset(time.monotonic())
            self._wait("hashset", self.config.probe.timeout)
        else:
            self._ask_upload(conn)

    def _ask_upload(self, conn: ClientConnection) -> None:
        conn.start_upload(time.monotonic())
        self._wait("queue", self.config.accept_timeout)

    def _expected(self, index: int) -> tuple[bytes, str]:
        if self.hashset is None:
            return self.file_hash, "file-hash"  # below one part: the file hash is the part hash
        return self.hashset[index], "hashset"

    def _request(self, conn: ClientConnection) -> None:
        """Keep three blocks of the current part requested: ask for more as each one is in.

        aMule's own downloader keeps three blocks pending and asks for the next as one completes
        (DownloadClient.cpp `SendBlockRequests`); aMule 2.3.3 as uploader reads at most 100 KiB
        ahead per core tick (UploadClient.cpp `CreateNextBlockPackage`), so a request that waits
        for a whole batch leaves its queue empty and halves the rate."""
        part = self.part
        if part is None:
            if not self.todo:
                return
            index = self.todo.pop(0)
            start, end = part_range(self.size, index)
            expected, source = self._expected(index)
            part = self.part = _Part(index, start, end, expected, source)
        part.block_ends = [e for e in part.block_ends if e > part.hashed]
        ranges: list[tuple[int, int]] = []
        while part.requested < part.end and len(part.block_ends) < BLOCKS_PER_REQUEST:
            stop = min(part.requested + self.config.block_size, part.end)
            ranges.append((part.requested, stop))
            part.block_ends.append(stop)
            part.requested = stop
        if ranges:
            try:
                conn.request_parts(ranges, time.monotonic())  # one OP_REQUESTPARTS, one write
            except ValueError as exc:  # past 4 GiB, and the peer has no 64-bit offsets
                raise _EndError("incomplete", f"cannot ask for part {part.index}: {exc}") from None
            self._wait("download", self.config.stall_timeout)

    def _data(self, ev: PartData) -> bool:
        """Stream the bytes into the part's MD4; True when every wanted part is checked."""
        part = self.part
        if part is None or not part.start <= ev.offset < part.requested:
            # ClientConnection only lets through data inside blocks we asked for.
            raise _EndError("incomplete", f"data at {ev.offset} outside the current part")
        self._wait("download", self.config.stall_timeout)
        data, offset = ev.data, ev.offset
        if ev.compressed:
            part.compressed += len(data)
        if offset + len(data) <= part.hashed:
            return False  # a repeat of bytes already hashed
        if offset < part.hashed:
            data, offset = data[part.hashed - offset :], part.hashed
        if offset > part.hashed:
            if offset not in part.pending:
                part.pending_bytes += len(data)
                part.pending[offset] = data
            if part.pending_bytes > 2 * BLOCKS_PER_REQUEST * self.config.block_size:
                raise _EndError("protocol-error", "the peer sends overlapping out-of-order data")
            return False
        self._hash(part, data)
        while part.pending:
            first = min(part.pending)
            if first > part.hashed:
                break
            chunk = part.pending.pop(first)
            part.pending_bytes -= len(chunk)
            if first + len(chunk) > part.hashed:
                self._hash(part, chunk[part.hashed - first :])
        if part.hashed < part.end:
            return False
        digest = bytes(part.md4.digest())
        check = PartCheck(
            index=part.index,
            ok=digest == part.expected,
            digest=digest,
            expected=part.expected,
            expected_from=part.source,
            length=part.end - part.start,
            compressed_bytes=part.compressed,
            at=self.clock(),
        )
        self.checks.append(check)
        self.part = None  # the part's bytes are gone: hashed and discarded (or in the sink)
        if self.sink is not None:
            self.sink.part_done(check)
        return not self.todo

    def _hash(self, part: _Part, data: bytes) -> None:
        data = data[: part.end - part.hashed]
        part.md4.update(data)
        if self.sink is not None:
            self.sink.data(part.index, part.hashed, data)
        part.hashed += len(data)

    def result(self, detail: str, started: float) -> Ed2kDownloadResult:
        status = self.status
        return Ed2kDownloadResult(
            ip=self.ip,
            port=self.port,
            file_hash=self.file_hash,
            file_size=self.size,
            outcome=self.outcome,
            detail=detail,
            obfuscated=self.obfuscated,
            hello=self.hello,
            file_name=self.file_name,
            status=status,
            aich_hash=self.aich,
            hashset_verified=self.hashset_verified,
            queue_rank=self.queue_rank,
            upload_accepted=self.accepted,
            part_count=data_part_count(self.size),
            parts_held=(
                None
                if status is None
                else sum(status.has(i) for i in range(data_part_count(self.size)))
            ),
            selected=self.selected,
            wanted=self.wanted,
            not_held=self.not_held,
            parts=tuple(self.checks),
            exchange_sha256=self.exchange.hexdigest(),
            started=started,
            ended=self.clock(),
        )


async def download_ed2k(
    ip: str,
    port: int,
    file_hash: bytes,
    file_size: int,
    config: Ed2kDownloadConfig,
    *,
    user_hash: bytes | None = None,
    parts: int | None = None,
    sink: PartSink | None = None,
    clock: Callable[[], float] = time.time,
) -> Ed2kDownloadResult:
    """Download and check all data parts (`parts` None) or the first `parts` parts the peer holds
    of `file_hash` (`file_size` bytes) from `ip:port` only. `user_hash` is the peer's, when known
    (obfuscation needs it). Never raises for the peer's faults."""
    config.egress.check(ip)
    if len(file_hash) != 16:
        raise ValueError("an eD2k file hash is 16 bytes")
    if file_size <= 0:
        raise ValueError("the file size must be known and positive")
    if parts is not None and parts < 1:
        raise ValueError("parts is at least 1 (or None for all)")
    started = clock()
    exchange = Exchange()
    session = _Session(ip, port, file_hash, file_size, config, parts, sink, clock, exchange)
    details: list[str] = []
    for obfuscated in obfuscation_modes(config.probe, user_hash):
        await session.attempt(user_hash if obfuscated else None)
        details.append(("obfuscated: " if obfuscated else "plain: ") + session.detail)
        # Like the probe: plain only when the peer hung up on the obfuscated handshake.
        if not session.closed_early:
            break
    if session.closed_early and user_hash is None and not session.obfuscated:
        details.append("a peer that requires obfuscation hangs up like this: give its user hash")
    if not details:
        details.append(session.detail)
    return session.result("; ".join(details), started)
