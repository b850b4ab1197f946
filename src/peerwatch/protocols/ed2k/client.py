"""eD2k client-to-client connection, connecting side, sans-IO: the probe and download core.

`ClientConnection` is what a sensor speaks to one eMule/aMule peer over one TCP connection (after
`obfuscation.ObfuscationInitiator` when the peer requires it). It takes received bytes and `now`
and returns small frozen events; outgoing bytes accumulate and are taken with ``data_to_send()``.
It opens no socket and reads no clock: `deadline` says by when the driver should give up waiting
for the answer the connection expects.

The exchange (aMule BaseClient.cpp / DownloadClient.cpp)::

    us:   HELLO (user hash, client id, ports, name/version/option tags)
    peer: HELLOANSWER                                   -> PeerHello
    us:   file request: OP_MULTIPACKET(_EXT) with REQUESTSOURCES2 (first), REQUESTFILENAME,
          SETREQFILEID, AICHFILEHASHREQ when the peer advertised multipacket; else stand-alone
          packets
    peer: REQFILENAMEANSWER / FILESTATUS (or one MULTIPACKETANSWER) -> FileName, FileStatus
          or FILEREQANSNOFIL                            -> NoFile
          ANSWERSOURCES2 (often zlib-packed)            -> SourcesReceived
    us:   request_hashset() -> HASHSETANSWER            -> HashSet (verified against the file hash)
          start_upload()    -> QUEUERANKING / ACCEPTUPLOADREQ -> QueuePosition / UploadAccepted
          request_parts()   -> SENDINGPART(_I64) / COMPRESSEDPART(_I64) -> PartData

Evidence (DESIGN.md): `FileName`/`FileStatus` on our file hash are the peer's claim to share the
file with the parts it lists (part count 0 = complete); `PartData` that hashes to the part hash,
from this one peer, proves possession. Every peer fault raises `ClientError` (an `Ed2kError`),
carrying the events decoded before it so that they are still recorded.

Memory is bounded by the framing caps (one packet of at most 2,000,000 bytes buffered, 50,000
bytes after inflation) and by the requested block sizes: a compressed block inflates to at most
the length we asked for.
"""

from __future__ import annotations

import enum
import zlib
from dataclasses import dataclass, field

from peerwatch.protocols.ed2k import messages as m
from peerwatch.protocols.ed2k.framing import (
    MAX_PACKET_SIZE,
    MAX_UNPACKED_SIZE,
    FramingError,
    PacketDecoder,
)
from peerwatch.protocols.ed2k.hashing import (
    ed2k_part_count,
    hashset_count,
    root_from_part_hashes,
)
from peerwatch.protocols.ed2k.tags import Tag, find
from peerwatch.protocols.ed2k.wire import HASH_SIZE, Ed2kError, text

# HELLO tag ids (aMule src/include/tags/ClientTags.h).
CT_NAME = 0x01
CT_PORT = 0x0F
CT_VERSION = 0x11
CT_MOD_VERSION = 0x55
CT_EMULE_UDPPORTS = 0xF9
CT_EMULE_MISCOPTIONS1 = 0xFA
CT_EMULE_VERSION = 0xFB
CT_EMULE_MISCOPTIONS2 = 0xFE

EDONKEY_VERSION = 0x3C  # EDONKEYVERSION, the CT_VERSION aMule sends
SO_COMPAT_UNKNOWN = 0xFF  # ClientSoftware.h SO_COMPAT_UNK: a compatible client, unnamed
MAX_REQUEST_LENGTH = (
    1 << 20
)  # longest block we ask for (aMule asks for 180 KiB blocks, EMBLOCKSIZE)


class ClientError(Ed2kError):
    """The peer broke the client protocol. `events` holds what was decoded before the fault."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.events: tuple[Event, ...] = ()


# --- our identity -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """What we say about ourselves in HELLO. Bits follow aMule SendHelloTypePacket."""

    user_hash: bytes  # our 16-byte user hash
    name: str = "peerwatch"  # CT_NAME
    tcp_port: int = 4662  # the port we claim to listen on (4662 is the eD2k default)
    client_id: int = 0  # 0: not connected to a server or Kad (aMule CamuleApp::GetID)
    udp_port: int = 0  # CT_EMULE_UDPPORTS low 16 bits; 0 = no UDP
    compat_client: int = SO_COMPAT_UNKNOWN  # CT_EMULE_VERSION bits 31..24
    version: tuple[int, int, int] = (0, 1, 0)  # CT_EMULE_VERSION major/minor/update
    supports_crypt: bool = False  # CT_EMULE_MISCOPTIONS2 bit 7

    def __post_init__(self) -> None:
        if len(self.user_hash) != HASH_SIZE:
            raise ValueError("user hash is 16 bytes")

    def tags(self) -> tuple[Tag, ...]:
        major, minor, update = self.version
        # make_full_ed2k_version: major << 17 | minor << 10 | update << 7
        emule_version = self.compat_client << 24 | major << 17 | minor << 10 | update << 7
        misc1 = (
            1 << 29  # AICH version 1: lets the peer answer AICHFILEHASHREQ
            | 1 << 28  # unicode
            | 1 << 20  # data compression version 1: we inflate COMPRESSEDPART
            | 3 << 12  # source exchange 1 version 3
            | 1 << 2  # "no view shared files": we share nothing
            | 1 << 1  # multipacket
        )  # extended requests 0: our REQUESTFILENAME carries no part status of our own
        misc2 = (
            1 << 10  # source exchange 2
            | int(self.supports_crypt) << 7
            | 1 << 5  # extended multipacket (hash + size)
            | 1 << 4  # large files (64-bit offsets)
        )
        return (
            Tag.string(CT_NAME, self.name),
            Tag.uint32(CT_VERSION, EDONKEY_VERSION),
            Tag.uint32(CT_EMULE_UDPPORTS, self.udp_port & 0xFFFF),
            Tag.uint32(CT_EMULE_VERSION, emule_version),
            Tag.uint32(CT_EMULE_MISCOPTIONS1, misc1),
            Tag.uint32(CT_EMULE_MISCOPTIONS2, misc2),
        )

    def hello(self) -> m.Hello:
        return m.Hello(m.HelloBody(self.user_hash, self.client_id, self.tcp_port, self.tags()))


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerHello:
    """HELLOANSWER, interpreted (aMule ProcessHelloTypePacket). `body` is the packet as sent."""

    user_hash: bytes
    client_id: int
    tcp_port: int
    udp_port: int | None
    kad_port: int | None
    name: str | None
    version: int | None  # CT_VERSION, or the eMule version without the compat byte
    compat_client: int | None  # CT_EMULE_VERSION bits 31..24 (0 eMule, 3 aMule, ...)
    emule_version: tuple[int, int, int] | None  # major, minor, update
    mod_version: str | None
    server_ip: int
    server_port: int
    aich_version: int
    supports_multipacket: bool
    supports_ext_multipacket: bool
    supports_source_exchange2: bool
    supports_large_files: bool
    supports_crypt: bool
    requests_crypt: bool
    requires_crypt: bool
    body: m.HelloBody = field(repr=False)

    @property
    def is_emule_compatible(self) -> bool:
        """CT_EMULE_VERSION was sent (aMule's bIsMule)."""
        return self.compat_client is not None


@dataclass(frozen=True, slots=True)
class PeerEmuleInfo:
    version: int
    protocol_version: int
    tags: tuple[Tag, ...]


@dataclass(frozen=True, slots=True)
class FileName:
    """The peer shares our file under this name (REQFILENAMEANSWER)."""

    file_hash: bytes
    name: str
    raw_name: bytes


@dataclass(frozen=True, slots=True)
class FileStatus:
    """The peer's parts of our file (FILESTATUS). `complete` when the part count is 0."""

    file_hash: bytes
    status: m.PartStatus

    @property
    def complete(self) -> bool:
        return self.status.complete


@dataclass(frozen=True, slots=True)
class NoFile:
    """FILEREQANSNOFIL: the peer does not share our file."""

    file_hash: bytes


@dataclass(frozen=True, slots=True)
class AichHash:
    file_hash: bytes
    aich_hash: bytes  # 20-byte AICH master hash


@dataclass(frozen=True, slots=True)
class SourcesReceived:
    """ANSWERSOURCES2: other peers this one says have the file (a claim, not evidence)."""

    file_hash: bytes
    sources: tuple[m.Source, ...]


@dataclass(frozen=True, slots=True)
class HashSet:
    """HASHSETANSWER, checked: the part hashes hash to the file hash and their count fits."""

    file_hash: bytes
    part_hashes: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class QueuePosition:
    rank: int


@dataclass(frozen=True, slots=True)
class UploadAccepted:
    pass


@dataclass(frozen=True, slots=True)
class UploadEnded:
    """CANCELTRANSFER or OUTOFPARTREQS from the peer."""

    reason: str


@dataclass(frozen=True, slots=True)
class PartData:
    """Bytes of our file at `offset`, within a block we requested."""

    offset: int
    data: bytes
    compressed: bool  # it came in COMPRESSEDPART packets


@dataclass(frozen=True, slots=True)
class Unhandled:
    """A message that needs no action (kept for the record)."""

    message: m.Message


Event = (
    PeerHello
    | PeerEmuleInfo
    | FileName
    | FileStatus
    | NoFile
    | AichHash
    | SourcesReceived
    | HashSet
    | QueuePosition
    | UploadAccepted
    | UploadEnded
    | PartData
    | Unhandled
)


# --- state machine ------------------------------------------------------------------------------


class State(enum.Enum):
    NEW = "new"
    AWAITING_HELLO_ANSWER = "awaiting hello answer"
    AWAITING_FILE_ANSWER = "awaiting file answer"
    FILE_FOUND = "file found"  # the peer answered with the file's name or status
    NO_FILE = "no file"
    FAILED = "failed"


class _Input(enum.Enum):
    START = "start"
    HELLO_ANSWER = "hello answer"
    FILE_FOUND = "file found"
    NO_FILE = "no file"
    ERROR = "error"


#: Every state transition, in one place (house rule 3). Anything else the peer does is checked in
#: place (parts only after a request, a hashset only when asked) and does not move the state.
TRANSITIONS: dict[tuple[State, _Input], State] = {
    (State.NEW, _Input.START): State.AWAITING_HELLO_ANSWER,
    (State.AWAITING_HELLO_ANSWER, _Input.HELLO_ANSWER): State.AWAITING_FILE_ANSWER,
    (State.AWAITING_FILE_ANSWER, _Input.FILE_FOUND): State.FILE_FOUND,
    (State.AWAITING_FILE_ANSWER, _Input.NO_FILE): State.NO_FILE,
    (State.FILE_FOUND, _Input.FILE_FOUND): State.FILE_FOUND,
    (State.FILE_FOUND, _Input.NO_FILE): State.NO_FILE,
    **{(s, _Input.ERROR): State.FAILED for s in State if s is not State.FAILED},
}


@dataclass(slots=True)
class _Block:
    start: int
    end: int  # exclusive
    next: int  # first offset not yet received (plain parts arrive in order)
    inflater: zlib._Decompress | None = None
    packed_in: int = 0


@dataclass(frozen=True, slots=True)
class ClientConfig:
    answer_timeout: float = 40.0  # seconds to wait for an answer (aMule CONNECTION_TIMEOUT 40 s)
    request_sources: bool = True  # ask for the peer's sources (REQUESTSOURCES2) with the file
    request_aich: bool = True  # ask for the AICH master hash when the peer supports AICH
    max_packet_size: int = MAX_PACKET_SIZE
    max_unpacked_size: int = MAX_UNPACKED_SIZE


class ClientConnection:
    """One connection to one peer about one file (`file_hash`, and `file_size` when known)."""

    def __init__(
        self,
        identity: ClientIdentity,
        file_hash: bytes,
        now: float,
        *,
        file_size: int | None = None,
        config: ClientConfig | None = None,
    ) -> None:
        if len(file_hash) != HASH_SIZE:
            raise ValueError("file hash is 16 bytes")
        self.identity = identity
        self.file_hash = bytes(file_hash)
        self.file_size = file_size
        self.config = config or ClientConfig()
        self._decoder = PacketDecoder(
            max_packet_size=self.config.max_packet_size,
            max_unpacked_size=self.config.max_unpacked_size,
        )
        self._state = State.NEW
        self._out = bytearray()
        self._blocks: list[_Block] = []
        self._hashset_requested = False
        self._waiting_since: float | None = None
        self.peer: PeerHello | None = None
        self.last_received_at = now

    @property
    def state(self) -> State:
        return self._state

    @property
    def deadline(self) -> float | None:
        """When the driver should give up on the answer we wait for (None: nothing pending)."""
        if self._waiting_since is None:
            return None
        return self._waiting_since + self.config.answer_timeout

    def _go(self, what: _Input) -> None:
        self._state = TRANSITIONS[(self._state, what)]

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _send(self, msg: m.Message) -> None:
        self._out += msg.encode()

    # --- what the driver asks ---------------------------------------------------------------

    def start(self, now: float) -> None:
        """Queue our HELLO."""
        if self._state is not State.NEW:
            raise RuntimeError("start() was already called")
        self._go(_Input.START)
        self._send(self.identity.hello())
        self._waiting_since = now

    def request_hashset(self, now: float) -> None:
        self._require_file()
        self._send(m.HashSetRequest(self.file_hash))
        self._hashset_requested = True
        self._waiting_since = now

    def start_upload(self, now: float) -> None:
        """Ask to be queued for an upload slot (OP_STARTUPLOADREQ)."""
        self._require_file()
        self._send(m.StartUploadReq(self.file_hash))
        self._waiting_since = now

    def request_parts(self, ranges: list[tuple[int, int]], now: float) -> None:
        """Ask for up to three [start, end) blocks (OP_REQUESTPARTS, or _I64 past 4 GiB)."""
        self._require_file()
        if not 1 <= len(ranges) <= m.BLOCKS_PER_REQUEST:
            raise ValueError("one to three ranges per request")
        for start, end in ranges:
            if not 0 <= start < end or end - start > MAX_REQUEST_LENGTH:
                raise ValueError(f"bad range [{start}, {end})")
            if self.file_size is not None and end > self.file_size:
                raise ValueError(f"range [{start}, {end}) is past the end of the file")
        padded = tuple(ranges) + ((0, 0),) * (m.BLOCKS_PER_REQUEST - len(ranges))
        large = any(end > 0xFFFFFFFF for _, end in ranges)
        if large and self.peer is not None and not self.peer.supports_large_files:
            raise ValueError("the peer does not support 64-bit offsets")
        self._send(
            m.RequestParts64(self.file_hash, padded)
            if large
            else m.RequestParts(self.file_hash, padded)
        )
        self._blocks.extend(_Block(s, e, s) for s, e in ranges)
        self._waiting_since = now

    def _require_file(self) -> None:
        if self._state is not State.FILE_FOUND:
            raise RuntimeError(f"the peer has not offered the file (state {self._state.value})")

    # --- what the peer sends ----------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> list[Event]:
        if self._state is State.FAILED:
            raise ClientError("the connection already failed")
        if self._state is State.NEW:
            raise RuntimeError("call start() before receive()")
        self.last_received_at = now
        events: list[Event] = []
        try:
            fault: FramingError | None = None
            try:
                packets = self._decoder.feed(data)
            except FramingError as exc:  # handle what came before the bad bytes, then fail
                packets, fault = list(exc.packets), exc
            for packet in packets:
                self._handle(m.decode(packet), events, now)
            if fault is not None:
                raise fault
        except Ed2kError as exc:
            self._go(_Input.ERROR)
            self._waiting_since = None
            error = exc if isinstance(exc, ClientError) else ClientError(str(exc))
            error.events = tuple(events)
            raise error from None
        return events

    def _check_file(self, file_hash: bytes, what: str) -> None:
        if file_hash != self.file_hash:
            raise ClientError(f"{what} for file {file_hash.hex()}, not {self.file_hash.hex()}")

    def _handle(self, msg: m.Message, events: list[Event], now: float) -> None:
        if self._state is State.AWAITING_HELLO_ANSWER:
            if isinstance(msg, m.HelloAnswer):
                self.peer = _peer_hello(msg.body)
                events.append(self.peer)
                self._go(_Input.HELLO_ANSWER)
                self._send_file_request()
                self._waiting_since = now
            elif isinstance(msg, m.EmuleInfo):
                events.append(PeerEmuleInfo(msg.version, msg.protocol_version, msg.tags))
            elif isinstance(msg, m.Unknown):
                events.append(Unhandled(msg))  # an extension we do not model: keep, go on
            else:
                # aMule ClientTCPSocket: "Asks for something without saying hello".
                raise ClientError(f"{type(msg).__name__} before the hello answer")
            return
        if isinstance(msg, m.ReqFileNameAnswer):
            self._check_file(msg.file_hash, "file name")
            self._found(events, FileName(msg.file_hash, text(msg.name), msg.name))
        elif isinstance(msg, m.FileStatus):
            self._check_file(msg.file_hash, "file status")
            self._found(events, self._status(msg.status))
        elif isinstance(msg, m.MultiPacketAnswer):
            self._check_file(msg.file_hash, "multipacket answer")
            if msg.name is not None:
                self._found(events, FileName(msg.file_hash, text(msg.name), msg.name))
            if msg.status is not None:
                self._found(events, self._status(msg.status))
            if msg.aich_hash is not None:
                events.append(AichHash(msg.file_hash, msg.aich_hash))
        elif isinstance(msg, m.FileReqAnsNoFil):
            self._check_file(msg.file_hash, "no-file answer")
            events.append(NoFile(msg.file_hash))
            self._go(_Input.NO_FILE)
            self._waiting_since = None
        elif isinstance(msg, m.AichFileHashAns):
            self._check_file(msg.file_hash, "AICH hash")
            events.append(AichHash(msg.file_hash, msg.aich_hash))
        elif isinstance(msg, m.AnswerSources2):
            self._check_file(msg.file_hash, "sources")
            events.append(SourcesReceived(msg.file_hash, msg.sources))
        elif isinstance(msg, m.HashSetAnswer):
            events.append(self._hashset(msg))
            self._waiting_since = None
        elif isinstance(msg, m.QueueRanking | m.QueueRank):
            events.append(QueuePosition(msg.rank))
            self._waiting_since = None
        elif isinstance(msg, m.AcceptUploadReq):
            events.append(UploadAccepted())
            self._waiting_since = None
        elif isinstance(msg, m.CancelTransfer | m.OutOfPartReqs):
            events.append(UploadEnded(type(msg).__name__))
            self._blocks.clear()
            self._waiting_since = None
        elif isinstance(msg, m.SendingPart):
            self._check_file(msg.file_hash, "part")
            events.append(self._plain_part(msg))
            self._waiting_since = now if self._blocks else None
        elif isinstance(msg, m.CompressedPart):
            self._check_file(msg.file_hash, "compressed part")
            events.extend(self._compressed_part(msg))
            self._waiting_since = now if self._blocks else None
        else:
            events.append(Unhandled(msg))

    def _found(self, events: list[Event], event: FileName | FileStatus) -> None:
        events.append(event)
        self._go(_Input.FILE_FOUND)
        self._waiting_since = None

    def _status(self, status: m.PartStatus) -> FileStatus:
        if self.file_size is not None and status.part_count not in (
            0,
            ed2k_part_count(self.file_size),
        ):
            # aMule ProcessFileStatus throws on a wrong part count too.
            raise ClientError(
                f"file status has {status.part_count} parts; a {self.file_size}-byte file has "
                f"{ed2k_part_count(self.file_size)}"
            )
        return FileStatus(self.file_hash, status)

    def _hashset(self, msg: m.HashSetAnswer) -> HashSet:
        self._check_file(msg.file_hash, "hashset")
        if not self._hashset_requested:
            raise ClientError("unsolicited hashset")  # aMule ProcessHashSet refuses it too
        self._hashset_requested = False
        hashes = msg.part_hashes
        if self.file_size is not None and len(hashes) != hashset_count(self.file_size):
            raise ClientError(
                f"hashset has {len(hashes)} hashes; a {self.file_size}-byte file has "
                f"{hashset_count(self.file_size)}"
            )
        if len(hashes) == 1 or (
            len(hashes) >= 2 and root_from_part_hashes(hashes) != msg.file_hash
        ):
            raise ClientError("hashset does not hash to the file hash")
        return HashSet(msg.file_hash, hashes)

    def _block_for(self, start: int, end: int) -> _Block:
        for block in self._blocks:
            if block.start <= start and end <= block.end:
                return block
        raise ClientError(f"data [{start}, {end}) is outside every requested block")

    def _finish(self, block: _Block) -> None:
        if block.next >= block.end:
            self._blocks.remove(block)

    def _plain_part(self, msg: m.SendingPart) -> PartData:
        block = self._block_for(msg.start, msg.end)
        if block.inflater is not None:
            raise ClientError("plain data inside a compressed block")
        block.next = max(block.next, msg.end)
        self._finish(block)
        return PartData(msg.start, msg.data, compressed=False)

    def _compressed_part(self, msg: m.CompressedPart) -> list[PartData]:
        block = next((b for b in self._blocks if b.start == msg.start), None)
        if block is None:
            raise ClientError(f"compressed data for unrequested block at {msg.start}")
        if block.inflater is None:
            if block.next != block.start:
                raise ClientError("compressed data inside a plain block")
            block.inflater = zlib.decompressobj()
        block.packed_in += len(msg.data)
        if block.packed_in > msg.packed_size:
            raise ClientError("more compressed bytes than the stream's announced size")
        room = block.end - block.next
        try:
            out = block.inflater.decompress(msg.data, room + 1)
        except zlib.error as exc:
            raise ClientError(f"compressed part is not a valid zlib stream: {exc}") from None
        if len(out) > room:
            raise ClientError(
                f"compressed part inflates past the {block.end - block.start} bytes asked"
            )
        if block.packed_in == msg.packed_size and not block.inflater.eof:
            raise ClientError("compressed part stream ends early")
        offset = block.next
        block.next += len(out)
        if block.inflater.eof and block.next < block.end:
            # aMule compresses each requested block whole (CreatePackedPackets): a short stream
            # is a short block.
            raise ClientError("compressed part stream ended before the block did")
        self._finish(block)
        return [PartData(offset, out, compressed=True)] if out else []

    def _send_file_request(self) -> None:
        peer = self.peer
        assert peer is not None
        sx2 = self.config.request_sources and peer.supports_source_exchange2
        aich = self.config.request_aich and peer.aich_version > 0
        if peer.supports_multipacket:
            # REQUESTSOURCES2 first: aMule handles the sub-requests in order, and our
            # REQUESTFILENAME (extended requests version 0) clears our upload part status
            # (UploadClient.cpp ProcessExtendedInfo), after which CKnownFile::CreateSrcInfoPacket
            # fails its part-count check and a complete file's sources are never sent.
            ops: list[int] = [m.EmuleOp.REQUESTSOURCES2] if sx2 else []
            ops += [m.Op.REQUESTFILENAME, m.Op.SETREQFILEID]
            if aich:
                ops.append(m.EmuleOp.AICHFILEHASHREQ)
            size = self.file_size if peer.supports_ext_multipacket else None
            self._send(m.MultiPacket(self.file_hash, tuple(ops), size))
            return
        self._send(m.RequestFileName(self.file_hash))
        self._send(m.SetReqFileId(self.file_hash))
        if sx2:
            self._send(m.RequestSources2(self.file_hash))
        if aich:
            self._send(m.AichFileHashReq(self.file_hash))


def _peer_hello(body: m.HelloBody) -> PeerHello:
    """Read the HELLO tags the way aMule ProcessHelloTypePacket does (unknown tags ignored)."""

    def integer(tag_id: int) -> int | None:
        tag = find(body.tags, tag_id)
        return tag.as_int() if tag is not None else None

    name_tag = find(body.tags, CT_NAME)
    raw_name = name_tag.as_bytes() if name_tag is not None else None
    mod_tag = find(body.tags, CT_MOD_VERSION)
    mod: str | None = None
    if mod_tag is not None:
        mod_raw = mod_tag.as_bytes()
        mod = text(mod_raw) if mod_raw is not None else f"ModID={mod_tag.as_int()}"
    tcp_port = integer(CT_PORT)
    ports = integer(CT_EMULE_UDPPORTS)
    misc1 = integer(CT_EMULE_MISCOPTIONS1) or 0
    misc2 = integer(CT_EMULE_MISCOPTIONS2) or 0
    emule = integer(CT_EMULE_VERSION)
    version = integer(CT_VERSION)
    compat: int | None = None
    emule_version: tuple[int, int, int] | None = None
    if emule is not None:
        compat = emule >> 24 & 0xFF
        version = emule & 0x00FFFFFF
        emule_version = (version >> 17 & 0x7F, version >> 10 & 0x7F, version >> 7 & 0x07)
    supports_crypt = bool(misc2 >> 7 & 1)
    requests_crypt = supports_crypt and bool(misc2 >> 8 & 1)  # aMule masks them the same way
    return PeerHello(
        user_hash=body.user_hash,
        client_id=body.client_id,
        tcp_port=tcp_port if tcp_port is not None else body.tcp_port,
        udp_port=ports & 0xFFFF if ports is not None else None,
        kad_port=ports >> 16 & 0xFFFF if ports is not None else None,
        name=text(raw_name) if raw_name is not None else None,
        version=version,
        compat_client=compat,
        emule_version=emule_version,
        mod_version=mod,
        server_ip=body.server_ip,
        server_port=body.server_port,
        aich_version=misc1 >> 29 & 0x07,
        supports_multipacket=bool(misc1 >> 1 & 1),
        supports_ext_multipacket=bool(misc2 >> 5 & 1),
        supports_source_exchange2=bool(misc2 >> 10 & 1),
        supports_large_files=bool(misc2 >> 4 & 1),
        supports_crypt=supports_crypt,
        requests_crypt=requests_crypt,
        requires_crypt=requests_crypt and bool(misc2 >> 9 & 1),
        body=body,
    )
