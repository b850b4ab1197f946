"""Single-source download: fetch pieces of one torrent from one peer and check every one.

This is the strongest possession evidence BitTorrent offers (DESIGN.md, "Evidence principles"):
pieces downloaded from that single peer whose hashes equal the ones in the metainfo. The driver
opens exactly one address (plain first, MSE on a refusal, as `peer_probe` does, with the same
direction-tagged exchange digest), speaks BEP 3/6/10 through `PeerConnection`, fetches the info
dictionary over BEP 9 from the same connection when no .torrent was given, then asks for the
pieces the peer announced, 16 KiB blocks with a bounded pipeline.

Memory is bounded: a piece buffer is only created when its first block is queued, and blocks are
queued only to keep `pipeline` requests outstanding, so at most ``pipeline + 1`` pieces are held
at once. Each finished piece is hashed, handed to the caller's callback with its bytes, and
dropped: this module writes nothing anywhere (hash and discard is the default; keeping content
is the caller's explicit decision).

`PiecePlan` is the pure part: piece geometry and expected hashes from a `Metainfo`. v1 and hybrid
pieces are SHA-1 (BEP 3). v2-only pieces are SHA-256 merkle roots of 16 KiB blocks (BEP 52),
checked against the file's entry in 'piece layers' (itself checked against the file's pieces
root, since the layers are outside the info dict), or for a file of one piece against its pieces
root directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from peerwatch.protocols.bittorrent import mse, peer_wire
from peerwatch.protocols.bittorrent.bencode import bdecode
from peerwatch.protocols.bittorrent.metainfo import Metainfo, MetainfoError, parse_metainfo
from peerwatch.protocols.bittorrent.peer_wire import (
    BLOCK_SIZE,
    Bitfield,
    Choke,
    ExtensionHandshake,
    HandshakeReceived,
    Have,
    HaveAll,
    HaveNone,
    InfoHashMismatch,
    MetadataAssembler,
    MetadataError,
    MetadataPiece,
    MetadataReject,
    PeerConnection,
    PeerWireError,
    PieceBlock,
    Reject,
    Unchoke,
)
from peerwatch.transport.egress import EgressPolicy
from peerwatch.transport.peer_probe import BITFIELD_GRACE
from peerwatch.transport.wire_stream import (
    READ_SIZE,
    Exchange,
    WireStream,
    close_stream,
    open_stream,
)

MERKLE_BLOCK = 16 * 1024  # BEP 52: merkle leaves are SHA-256 of 16 KiB blocks
ZERO_HASH = bytes(32)  # BEP 52: leaves beyond the end of a file are zero
SHA1 = "sha1"
SHA256_MERKLE = "sha256-merkle"


# --- the pure part: what each piece is and what it must hash to -------------------------------


def merkle_root(leaves: Sequence[bytes], width: int, pad: bytes = ZERO_HASH) -> bytes:
    """Root of a binary SHA-256 tree over `leaves`, padded with `pad` to `width` leaves (a power
    of two). BEP 52: "the remaining leaf hashes beyond the end of the file required to construct
    upper layers of the merkle tree are set to zero"."""
    if width < 1 or width & (width - 1) or len(leaves) > width:
        raise ValueError(f"{len(leaves)} leaves do not fit a tree of width {width}")
    layer = list(leaves)
    pad_node = pad
    while width > 1:
        if len(layer) % 2:
            layer.append(pad_node)
        layer = [hashlib.sha256(layer[i] + layer[i + 1]).digest() for i in range(0, len(layer), 2)]
        pad_node = hashlib.sha256(pad_node + pad_node).digest()
        width //= 2
    return layer[0] if layer else pad_node


def next_power_of_two(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def block_hashes(data: bytes) -> list[bytes]:
    """BEP 52 leaves: SHA-256 of each 16 KiB block (the last may be shorter)."""
    return [
        hashlib.sha256(data[i : i + MERKLE_BLOCK]).digest()
        for i in range(0, len(data), MERKLE_BLOCK)
    ]


def pad_piece_hash(piece_length: int) -> bytes:
    """Hash of a piece-sized subtree of zero leaves: how a piece layer is padded up to the root."""
    return merkle_root([], piece_length // MERKLE_BLOCK)


@dataclass(frozen=True, slots=True)
class PieceCheck:
    """One piece: how long it is on the wire and what it must hash to."""

    index: int
    length: int  # bytes to request (v2: the file's bytes only, never the alignment padding)
    algorithm: str  # SHA1 or SHA256_MERKLE
    expected: bytes | None  # None: no hash known (v2 file without its piece layer): not fetched
    merkle_width: int = 0  # SHA256_MERKLE: leaves in this piece's tree (a power of two)

    def digest(self, data: bytes) -> bytes:
        if self.algorithm == SHA1:
            return hashlib.sha1(data, usedforsecurity=False).digest()  # BEP 3 piece hash
        return merkle_root(block_hashes(data), self.merkle_width)


@dataclass(frozen=True, slots=True)
class FileSpan:
    """Where a content file lies in the torrent's piece space (piece i starts at i * piece
    length); padding files are not listed."""

    path: tuple[str, ...]
    length: int
    offset: int


class PiecePlan:
    """Piece geometry and expected hashes of one torrent. Raises `MetainfoError` when the
    metainfo contradicts itself (a piece layer that does not hash to its pieces root)."""

    def __init__(self, meta: Metainfo) -> None:
        self.meta = meta
        self.piece_length = meta.piece_length
        self.count = meta.piece_count
        if meta.pieces:  # v1 or hybrid: SHA-1 pieces over the v1 layout (BEP 47 padding included)
            self.algorithm = SHA1
            self.files, total = _v1_layout(meta)
            last = total - (self.count - 1) * self.piece_length
            self._v2: list[PieceCheck] = []
            self._last = last
        else:
            self.algorithm = SHA256_MERKLE
            self.files, self._v2 = _v2_layout(meta)
            self._last = 0

    def check(self, index: int) -> PieceCheck:
        if not 0 <= index < self.count:
            raise IndexError(f"piece {index} of {self.count}")
        if self._v2:
            return self._v2[index]
        length = self._last if index == self.count - 1 else self.piece_length
        return PieceCheck(index, length, SHA1, self.meta.pieces[index * 20 : index * 20 + 20])

    def pieces_of(self, span: FileSpan) -> range:
        if span.length == 0:
            return range(0)
        first = span.offset // self.piece_length
        return range(first, (span.offset + span.length - 1) // self.piece_length + 1)


def _v1_layout(meta: Metainfo) -> tuple[tuple[FileSpan, ...], int]:
    """Offsets of the v1 files, counting BEP 47 padding files (which `Metainfo.files` omits)."""
    info = bdecode(meta.info_bytes)
    entries = info.get(b"files") if isinstance(info, dict) else None
    if not isinstance(entries, list):
        return (FileSpan(meta.files[0].path, meta.files[0].length, 0),), meta.files[0].length
    listed = iter(meta.files)
    spans: list[FileSpan] = []
    offset = 0
    for entry in entries:
        length = int(entry[b"length"])
        attr = entry.get(b"attr", b"")
        if b"p" not in attr:
            f = next(listed)
            spans.append(FileSpan(f.path, length, offset))
        offset += length
    return tuple(spans), offset


def _v2_layout(meta: Metainfo) -> tuple[tuple[FileSpan, ...], list[PieceCheck]]:
    """BEP 52: every non-empty file starts on a piece boundary, in file tree order."""
    pl = meta.piece_length
    spans: list[FileSpan] = []
    checks: list[PieceCheck] = []
    for f in meta.files:
        if f.length == 0 or f.pieces_root is None:
            continue
        first = len(checks)
        spans.append(FileSpan(f.path, f.length, first * pl))
        n = -(-f.length // pl)
        if n == 1:
            # BEP 52: no piece layer for a file of one piece; its pieces root is the tree over
            # its own blocks, padded to a power of two.
            width = next_power_of_two(-(-f.length // MERKLE_BLOCK))
            checks.append(PieceCheck(first, f.length, SHA256_MERKLE, f.pieces_root, width))
            continue
        layer = meta.piece_layer(f)
        if layer is not None:
            _check_layer(layer, n, pl, f.pieces_root, f.path_str)
        for j in range(n):
            length = min(pl, f.length - j * pl)
            expected = None if layer is None else layer[j * 32 : j * 32 + 32]
            checks.append(
                PieceCheck(first + j, length, SHA256_MERKLE, expected, pl // MERKLE_BLOCK)
            )
    return tuple(spans), checks


def _check_layer(layer: bytes, n: int, piece_length: int, root: bytes, path: str) -> None:
    if len(layer) != n * 32:
        raise MetainfoError(
            f"{len(layer) // 32} piece hashes for {n} pieces of {path!r}", field="piece layers"
        )
    hashes = [layer[i : i + 32] for i in range(0, len(layer), 32)]
    if merkle_root(hashes, next_power_of_two(n), pad_piece_hash(piece_length)) != root:
        raise MetainfoError(
            f"the piece layer of {path!r} does not hash to its pieces root", field="piece layers"
        )


def metainfo_from_info(info: bytes) -> Metainfo:
    """A `Metainfo` from a bare info dictionary (what BEP 9 delivers)."""
    return parse_metainfo(b"d4:info" + info + b"e")


# --- results -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DownloadConfig:
    peer_id: bytes  # our 20-byte peer id
    client: str = "peerwatch"  # what our BEP 10 handshake says we are
    connect_timeout: float = 5.0  # TCP connect
    handshake_timeout: float = 15.0  # handshake, piece set and BEP 9 metadata
    unchoke_timeout: float = 30.0  # interested -> unchoke (again after a choke)
    stall_timeout: float = 20.0  # unchoked, yet no block for this long: give up
    pipeline: int = 16  # outstanding 16 KiB block requests
    max_rejects: int = 3  # BEP 6 rejects of one piece before it counts as not served
    bind_ip: str | None = None  # local address to connect from
    encryption: str = "auto"  # "auto": plain then MSE; "plain"; "mse"
    egress: EgressPolicy = field(default_factory=EgressPolicy)  # loopback only unless widened


@dataclass(frozen=True, slots=True)
class PieceResult:
    """One piece downloaded from the peer and hashed: `ok` when it matched the metainfo."""

    index: int
    ok: bool
    algorithm: str
    digest: bytes  # what the received bytes hash to
    expected: bytes
    length: int
    at: float  # UTC seconds when it was checked


#: Called with each checked piece, its bytes (dropped once it returns) and the torrent's plan.
PieceCallback = Callable[[PieceResult, bytes, "PiecePlan"], None]


@dataclass(frozen=True, slots=True)
class DownloadResult:
    ip: str
    port: int
    info_hash: bytes  # the 20-byte hash used in the handshake
    #: why it ended: "complete" (every wanted piece was served and checked), "incomplete" (it
    #: ended early: stalled, choked, closed or broke the protocol; `detail` says which),
    #: "no-pieces", "no-metadata", "refused", "unreachable", "timeout", "protocol-error"
    outcome: str
    detail: str
    encrypted: bool
    peer_id: bytes | None
    client: str | None
    listen_port: int | None
    metainfo: Metainfo | None
    metadata_source: str | None  # "given" or "bep9"
    have: int | None  # pieces the peer announced
    total: int | None
    selected: int  # pieces asked for by the caller (within the torrent)
    wanted: int  # of those, the ones the peer announced and we can check: the ones requested
    not_held: int  # selected pieces the peer did not announce: never requested
    unverifiable: int  # selected pieces without a known hash (v2 without piece layers)
    not_served: int  # wanted but never checked: rejected too often, or the download ended first
    pieces: tuple[PieceResult, ...]
    connections: tuple[tuple[str, int], ...]  # every TCP connection opened, in order
    exchange_sha256: str
    started: float
    ended: float

    @property
    def verified(self) -> int:
        return sum(p.ok for p in self.pieces)

    @property
    def failed(self) -> int:
        return sum(not p.ok for p in self.pieces)

    @property
    def handshake_accepted(self) -> bool:
        return self.peer_id is not None

    @property
    def completion_ppm(self) -> int | None:
        if self.have is None or not self.total:
            return None
        return self.have * 1_000_000 // self.total


class DownloadError(PeerWireError):
    """Raised inside a session to end it with an outcome (never escapes `download`)."""


# --- the driver --------------------------------------------------------------------------------


async def download(
    ip: str,
    port: int,
    info_hash: bytes,
    config: DownloadConfig,
    on_piece: PieceCallback,
    *,
    metainfo: Metainfo | None = None,
    btmh: bytes | None = None,
    pieces: int | None = None,
    clock: Callable[[], float] = time.time,
) -> DownloadResult:
    """Download and check up to `pieces` pieces (None: all) that `ip:port` announces.

    `info_hash` is the 20-byte handshake hash (v1, or a v2 hash truncated per BEP 52); `btmh`,
    when known, is the full v2 hash that BEP 9 metadata must match too. Never raises for the
    peer's faults, and contacts no other address. `EgressDeniedError` if `ip` is not allowed.
    """
    config.egress.check(ip)
    if len(info_hash) != 20:
        raise ValueError("the handshake infohash is 20 bytes")
    session = _Session(ip, port, info_hash, config, on_piece, metainfo, btmh, pieces, clock)
    modes = {"auto": [False, True], "plain": [False], "mse": [True]}[config.encryption]
    details: list[str] = []
    for use_mse in modes:
        closed_early = await session.attempt(use_mse)
        details.append(("MSE: " if use_mse else "plain: ") + session.detail)
        # Like peer_probe: MSE only when the peer hung up on a plain handshake.
        if not closed_early:
            break
    return session.result("; ".join(details))


class _Session:
    def __init__(
        self,
        ip: str,
        port: int,
        info_hash: bytes,
        config: DownloadConfig,
        on_piece: PieceCallback,
        metainfo: Metainfo | None,
        btmh: bytes | None,
        limit: int | None,
        clock: Callable[[], float],
    ) -> None:
        self.ip, self.port, self.info_hash = ip, port, info_hash
        self.config = config
        self.on_piece = on_piece
        self.btmh = btmh
        self.limit = limit
        self.clock = clock
        self.started = clock()
        self.exchange = Exchange()
        self.connections: list[tuple[str, int]] = []
        self.results: list[PieceResult] = []
        self.metainfo = metainfo
        self.metadata_source = "given" if metainfo is not None else None
        self.plan = PiecePlan(metainfo) if metainfo is not None else None
        self.outcome = "unreachable"
        self.detail = "not tried"
        self.t_start = self.t_phase = 0.0
        self._reset(False)

    def _reset(self, use_mse: bool) -> None:
        self.encrypted = use_mse
        self.remote: HandshakeReceived | None = None
        self.ext: ExtensionHandshake | None = None
        self.have_all = False
        self.have_bits: set[int] = set()
        self.piece_set_known = False
        self.assembler: MetadataAssembler | None = None
        self.interested = False
        self.unchoked = False
        self.wanted: Iterator[int] | None = None
        self.counts = {"selected": 0, "wanted": 0, "not_held": 0, "unverifiable": 0}
        self.not_served = 0
        self.queue: deque[tuple[int, int]] = deque()
        self.outstanding: dict[tuple[int, int], int] = {}
        self.buffers: dict[int, bytearray] = {}
        self.pending: dict[int, set[int]] = {}
        self.rejects: dict[int, int] = {}
        self.done = False

    # -- one TCP connection -----------------------------------------------------------------

    async def attempt(self, use_mse: bool) -> bool:
        """One connection; True when the peer closed it before answering our handshake."""
        self._reset(use_mse)
        self.connections.append((self.ip, self.port))
        cfg = self.config
        try:
            reader, writer = await open_stream(
                self.ip, self.port, bind_ip=cfg.bind_ip, timeout=cfg.connect_timeout
            )
        except (TimeoutError, OSError) as exc:
            self.outcome, self.detail = "unreachable", f"TCP connect failed: {exc or 'timeout'}"
            return False
        try:
            return await self._converse(reader, writer, use_mse)
        finally:
            self._drop_buffers()
            await close_stream(writer)

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, use_mse: bool
    ) -> bool:
        loop = asyncio.get_running_loop()
        conn = PeerConnection(self.info_hash, self.config.peer_id, now=loop.time())
        self.conn = conn
        if self.plan is not None:
            conn.set_piece_count(self.plan.count)
        stream = WireStream(
            writer,
            self.exchange,
            info_hash=self.info_hash,
            handshake=conn.initiate(),
            use_mse=use_mse,
        )
        # Requests wait here until MSE is established, then go out in one write per pass.
        out = bytearray()

        def send(data: bytes) -> None:
            out.extend(data)

        self.send = send
        self.t_start = loop.time()
        self.t_phase = self.t_start
        while True:
            if out and stream.established:
                stream.send(bytes(out))
                out.clear()
            with contextlib.suppress(OSError):
                await writer.drain()
            if self.done:
                return False
            deadline, on_timeout = self._deadline()
            try:
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    data = await reader.read(READ_SIZE)
            except TimeoutError:
                if on_timeout():
                    return False
                continue
            except OSError as exc:
                return self._closed(f"connection error: {exc}")
            if not data:
                return self._closed("the peer closed the connection")
            try:
                data = stream.unwrap(data)
            except mse.MseError as exc:
                self._end("protocol-error", f"MSE: {exc}")
                return False
            if not data:
                continue
            try:
                events = conn.receive(data, loop.time())
            except PeerWireError as exc:
                for ev in exc.events:
                    self._on_event(ev, loop.time())
                self._end_fault(f"the peer broke the protocol: {exc}")
                return False
            try:
                for ev in events:
                    self._on_event(ev, loop.time())
                    if self.done:
                        break
                if not self.done:
                    self._pump(loop.time())
            except DownloadError as exc:
                self._end_fault(str(exc))

    # -- timers -----------------------------------------------------------------------------

    def _deadline(self) -> tuple[float, Callable[[], bool]]:
        cfg = self.config
        if self.remote is None:
            return self.t_start + cfg.handshake_timeout, lambda: self._end(
                "timeout", f"no handshake within {cfg.handshake_timeout:g} s"
            )
        if self.plan is None:
            return self.t_phase + cfg.handshake_timeout, lambda: self._end(
                "no-metadata", f"no verified metadata within {cfg.handshake_timeout:g} s"
            )
        if not self.piece_set_known:
            return self.t_phase + BITFIELD_GRACE, self._no_piece_set
        if not self.unchoked:
            return self.t_phase + cfg.unchoke_timeout, lambda: self._end(
                "incomplete" if self.results else "choked",
                f"not unchoked within {cfg.unchoke_timeout:g} s",
            )
        return self.t_phase + cfg.stall_timeout, lambda: self._end(
            "incomplete", f"no block for {cfg.stall_timeout:g} s"
        )

    def _no_piece_set(self) -> bool:
        # BEP 3: a peer with no piece may send no bitfield at all.
        self.piece_set_known = True
        self._start_download(self.t_phase + BITFIELD_GRACE)
        return self.done

    # -- events -----------------------------------------------------------------------------

    def _on_event(self, ev: peer_wire.Event, now: float) -> None:
        conn = self.conn
        if isinstance(ev, InfoHashMismatch):
            self._end("refused", f"the peer answered for another infohash {ev.received.hex()}")
        elif isinstance(ev, HandshakeReceived):
            self.remote = ev
            self.t_phase = now
            if conn.fast_enabled:
                self.send(conn.send_have_none())  # BEP 6: a piece set first; we have nothing
            if conn.extensions_enabled:
                self.send(conn.send_extension_handshake(client=self.config.client))
            elif self.plan is None:
                self._end("no-metadata", "the peer does not speak BEP 10, so no BEP 9 metadata")
        elif isinstance(ev, ExtensionHandshake):
            self.ext = ev
            if self.plan is None and self.assembler is None:
                self._ask_metadata()
        elif isinstance(ev, MetadataPiece):
            self._metadata_piece(ev, now)
        elif isinstance(ev, MetadataReject):
            self._end("no-metadata", f"the peer rejected metadata piece {ev.piece} (BEP 9)")
        elif isinstance(ev, Bitfield):
            self.have_bits = {
                i for i in range(len(ev.bits) * 8) if ev.bits[i // 8] & (0x80 >> (i % 8))
            }
            self._piece_set(now)
        elif isinstance(ev, HaveAll):
            self.have_all = True
            self._piece_set(now)
        elif isinstance(ev, HaveNone):
            self._piece_set(now)
        elif isinstance(ev, Have):
            self.have_bits.add(ev.index)
        elif isinstance(ev, Unchoke):
            if not self.unchoked:
                self.unchoked = True
                self.t_phase = now
        elif isinstance(ev, Choke):
            self._choked(now)
        elif isinstance(ev, PieceBlock):
            self._block(ev, now)
        elif isinstance(ev, Reject):
            self._reject(ev)

    def _ask_metadata(self) -> None:
        conn = self.conn
        size = conn.remote_metadata_size
        if "ut_metadata" not in conn.remote_extensions or size is None:
            self._end("no-metadata", "the peer offers no BEP 9 metadata (ut_metadata)")
            return
        try:
            self.assembler = MetadataAssembler(self.info_hash, size, btmh=self.btmh)
        except MetadataError as exc:
            self._end("no-metadata", str(exc))
            return
        for piece in self.assembler.missing():
            self.send(conn.request_metadata(piece))

    def _metadata_piece(self, ev: MetadataPiece, now: float) -> None:
        if self.assembler is None or self.plan is not None:
            return
        try:
            self.assembler.add(ev)
            if not self.assembler.complete:
                return
            info = self.assembler.result()
            meta = metainfo_from_info(info)
            plan = PiecePlan(meta)
        except (MetadataError, MetainfoError) as exc:
            self._end("no-metadata", f"metadata from the peer is unusable: {exc}")
            return
        try:
            self.conn.set_piece_count(plan.count)
        except PeerWireError as exc:
            self._end("protocol-error", f"its piece set does not fit the metadata: {exc}")
            return
        self.metainfo, self.plan, self.metadata_source = meta, plan, "bep9"
        self.t_phase = now
        if self.piece_set_known:
            self._start_download(now)

    def _piece_set(self, now: float) -> None:
        self.piece_set_known = True
        if self.plan is not None:
            self.t_phase = now
            self._start_download(now)

    def _start_download(self, now: float) -> None:
        """Decide which pieces to request: the selected ones the peer has and we can check."""
        plan = self.plan
        assert plan is not None
        if self.have_all:
            self.have_bits = set(range(plan.count))
        chosen: list[int] = []
        counts = self.counts
        for i in range(plan.count):
            if self.limit is not None and len(chosen) >= self.limit:
                break
            counts["selected"] += 1
            if i not in self.have_bits:
                counts["not_held"] += 1  # the peer's bitfield says it lacks it: never requested
            elif plan.check(i).expected is None:
                counts["unverifiable"] += 1
            else:
                chosen.append(i)
        counts["wanted"] = len(chosen)
        if not chosen:
            self._end("no-pieces", "the peer announced none of the selected pieces we can check")
            return
        self.wanted = iter(chosen)
        self.send(self.conn.send_interested())
        self.interested = True
        self.t_phase = now

    def _choked(self, now: float) -> None:
        # BEP 3: a choke drops every pending request; ask again once unchoked. (With BEP 6 the
        # peer also rejects them: those rejects then match nothing outstanding and are ignored.)
        if self.unchoked:
            self.unchoked = False
            self.t_phase = now
        for key in reversed(list(self.outstanding)):
            self.queue.appendleft(key)
        self.outstanding.clear()

    def _reject(self, ev: Reject) -> None:
        key = (ev.index, ev.begin)
        if self.outstanding.pop(key, None) is None:
            return
        n = self.rejects[ev.index] = self.rejects.get(ev.index, 0) + 1
        if n > self.config.max_rejects:
            self._abandon(ev.index)
        else:
            self.queue.append(key)

    def _abandon(self, index: int) -> None:
        self.not_served += 1
        self.buffers.pop(index, None)
        self.pending.pop(index, None)
        for key in [k for k in self.outstanding if k[0] == index]:
            del self.outstanding[key]

    def _block(self, ev: PieceBlock, now: float) -> None:
        pending = self.pending.get(ev.index)
        buf = self.buffers.get(ev.index)
        if pending is None or buf is None or ev.begin not in pending:
            return  # unrequested or already received (late after a choke): ignored
        expected = min(BLOCK_SIZE, len(buf) - ev.begin)
        if len(ev.data) != expected:
            raise DownloadError(
                f"block {ev.index}:{ev.begin} has {len(ev.data)} bytes, {expected} were requested"
            )
        self.t_phase = now
        buf[ev.begin : ev.begin + expected] = ev.data
        pending.discard(ev.begin)
        self.outstanding.pop((ev.index, ev.begin), None)
        if not pending:
            self._finish_piece(ev.index)

    def _finish_piece(self, index: int) -> None:
        assert self.plan is not None
        data = bytes(self.buffers.pop(index))
        del self.pending[index]
        check = self.plan.check(index)
        assert check.expected is not None
        digest = check.digest(data)
        result = PieceResult(
            index=index,
            ok=digest == check.expected,
            algorithm=check.algorithm,
            digest=digest,
            expected=check.expected,
            length=len(data),
            at=self.clock(),
        )
        self.results.append(result)
        self.on_piece(result, data, self.plan)  # the caller's only look at the bytes

    def _pump(self, now: float) -> None:
        """Keep `pipeline` requests outstanding; a piece is opened only when needed."""
        if self.done or not self.unchoked or self.wanted is None:
            return
        assert self.plan is not None
        while len(self.outstanding) < self.config.pipeline:
            if not self.queue:
                index = next(self.wanted, None)
                if index is None:
                    break
                length = self.plan.check(index).length
                self.buffers[index] = bytearray(length)
                begins = range(0, length, BLOCK_SIZE)
                self.pending[index] = set(begins)
                self.queue.extend((index, b) for b in begins)
                continue
            index, begin = self.queue.popleft()
            if begin not in self.pending.get(index, ()):
                continue  # already received, or the piece was abandoned
            length = min(BLOCK_SIZE, len(self.buffers[index]) - begin)
            self.outstanding[index, begin] = length
            self.send(self.conn.send_request(index, begin, length))
        if not self.outstanding and not self.queue and not self.buffers:
            self._end("complete", "every wanted piece was downloaded and checked")

    # -- endings ----------------------------------------------------------------------------

    def _end(self, outcome: str, detail: str) -> bool:
        if not self.done:
            self.outcome, self.detail, self.done = outcome, detail, True
        return True

    def _end_fault(self, detail: str) -> None:
        if self.remote is None:
            self._end("protocol-error", detail)
        else:
            self._end("incomplete" if self.wanted is not None else "protocol-error", detail)

    def _closed(self, reason: str) -> bool:
        if self.remote is None:
            self._end("refused", f"{reason} before its handshake (infohash refused)")
            return True
        self._end("incomplete" if self.wanted is not None else "protocol-error", reason)
        return False

    def _drop_buffers(self) -> None:
        # Pieces still in flight when the connection ends were never checked: not served.
        self.not_served += len(self.buffers)
        if self.wanted is not None:
            self.not_served += sum(1 for _ in self.wanted)
        self.buffers.clear()
        self.pending.clear()

    def result(self, detail: str) -> DownloadResult:
        plan = self.plan
        have: int | None = None
        if self.piece_set_known and plan is not None:
            have = plan.count if self.have_all else len(self.have_bits)
        return DownloadResult(
            ip=self.ip,
            port=self.port,
            info_hash=self.info_hash,
            outcome=self.outcome,
            detail=detail,
            encrypted=self.encrypted,
            peer_id=self.remote.peer_id if self.remote else None,
            client=self.ext.client if self.ext else None,
            listen_port=self.ext.listen_port if self.ext else None,
            metainfo=self.metainfo,
            metadata_source=self.metadata_source,
            have=have,
            total=plan.count if plan is not None else None,
            selected=self.counts["selected"],
            wanted=self.counts["wanted"],
            not_held=self.counts["not_held"],
            unverifiable=self.counts["unverifiable"],
            not_served=self.not_served,
            pieces=tuple(self.results),
            connections=tuple(self.connections),
            exchange_sha256=self.exchange.hexdigest(),
            started=self.started,
            ended=self.clock(),
        )
