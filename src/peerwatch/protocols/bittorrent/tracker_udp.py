"""UDP tracker client (BEP 15) as a sans-IO state machine.

One `UdpTrackerClient` talks to one tracker address. The caller (a transport) pumps it:

* `announce(req, now)` / `scrape(info_hashes, now)` queue a request and return its id;
* `datagrams_to_send()` hands over the datagrams to write to the tracker;
* `receive(datagram, now)` takes a datagram read from the tracker and returns events;
* `next_timer()` says when `on_timer(now)` must next be called (retransmissions).

The client never reads a clock, never touches a socket and draws transaction ids from the `rng`
it is given (house rule 1).

Protocol (BEP 15): a request needs a connection id, obtained by a *connect* exchange (magic
protocol id 0x41727101980, action 0) and usable for one minute after it was received; after that
the client connects again. Requests are announce (action 1), scrape (action 2); the tracker can
answer any of them with error (action 3). Every request carries a random 32-bit transaction id
that the reply must echo; datagrams too short to carry one, or with an id we are not waiting for,
are ignored and counted (`short_datagrams`, `unknown_transaction_ids`) — spoofed and late
duplicates are normal on UDP. A datagram that matches a pending request but is malformed raises
`TrackerError` and leaves the request pending (it will be retransmitted), so a forged reply cannot
cancel a real one.

Retransmission (BEP 15): "If a response is not received after 15 * 2 ^ n seconds, the client
should retransmit the request, where n starts at 0 and is increased up to 8 (3840 seconds) after
every retransmission." So each request is sent at most 9 times; after the 9th goes unanswered it
fails with `RequestFailed`. A connect has its own n (shared by every request waiting on it). When
a request times out after its connection id has expired, it goes back to waiting for a fresh
connect instead of being resent with a stale id.

All state transitions of both machines (the connection and each request) are in `TRANSITIONS`
(house rule 3); `_move` is the only place that changes a state.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal, Protocol, TypeVar, cast

from peerwatch.protocols.bittorrent.peer_address import (
    MAX_PEERS,
    PeerAddress,
    PeerAddressError,
    decode_compact_ipv4,
    decode_compact_ipv6,
)
from peerwatch.protocols.bittorrent.tracker_http import (
    AnnounceEvent,
    AnnounceRequest,
    ScrapeStats,
    TrackerError,
)

PROTOCOL_ID = 0x41727101980  # BEP 15: magic constant in every connect request
ACTION_CONNECT = 0
ACTION_ANNOUNCE = 1
ACTION_SCRAPE = 2
ACTION_ERROR = 3
#: BEP 15: "Up to about 74 torrents can be scraped at once" (a full scrape is not possible).
MAX_SCRAPE_HASHES = 74

_HEADER = struct.Struct(">QII")  # connection id (or protocol id), action, transaction id
_REPLY_HEADER = struct.Struct(">II")  # action, transaction id
_CONNECT_REPLY = struct.Struct(">IIQ")  # action, transaction id, connection id
_ANNOUNCE_BODY = struct.Struct(">20s20sqqqIIIiH")  # BEP 15 announce, after the 16-byte header
_ANNOUNCE_REPLY = struct.Struct(">IIIII")  # action, transaction id, interval, leechers, seeders
_SCRAPE_ENTRY = struct.Struct(">III")  # seeders, completed, leechers
# BEP 15 event codes: 0 none, 1 completed, 2 started, 3 stopped.
_EVENT_CODE = {
    AnnounceEvent.NONE: 0,
    AnnounceEvent.COMPLETED: 1,
    AnnounceEvent.STARTED: 2,
    AnnounceEvent.STOPPED: 3,
}


class RandomSource(Protocol):
    """What the client needs from its random number generator (`random.Random` fits)."""

    def getrandbits(self, k: int, /) -> int: ...


@dataclass(frozen=True, slots=True)
class UdpTrackerConfig:
    retransmit_base: float = 15.0  # BEP 15: the timeout is retransmit_base * 2^n seconds
    max_retransmit_exponent: int = 8  # BEP 15: n grows up to 8 (3840 s); then the request fails
    connection_id_lifetime: float = 60.0  # BEP 15: a connection id may be used for one minute
    address_family: Literal[4, 6] = 4  # how the tracker is reached: 6-byte or 18-byte peers
    max_peers: int = MAX_PEERS  # most peers accepted in one announce reply


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Announced:
    request_id: int
    interval: int  # seconds until the next regular announce
    leechers: int
    seeders: int
    peers: tuple[PeerAddress, ...]


@dataclass(frozen=True, slots=True)
class Scraped:
    request_id: int
    stats: dict[bytes, ScrapeStats]  # infohash -> counts, for the hashes the tracker answered


@dataclass(frozen=True, slots=True)
class TrackerErrorReceived:
    request_id: int
    message: str  # the tracker's error text (action 3)


@dataclass(frozen=True, slots=True)
class RequestFailed:
    request_id: int
    reason: str  # why we gave up (no reply after every retransmission)


UdpTrackerEvent = Announced | Scraped | TrackerErrorReceived | RequestFailed


# --- state machines -----------------------------------------------------------------------------


class ConnectionState(Enum):
    IDLE = "idle"  # no usable connection id
    CONNECTING = "connecting"  # connect request in flight
    CONNECTED = "connected"  # connection id held (valid until it expires)


class RequestState(Enum):
    WAITING = "waiting"  # needs a connection id before it can be sent
    SENT = "sent"  # sent with a valid connection id; awaiting the reply
    DONE = "done"  # answered, refused or given up


class Trigger(Enum):
    NEED_CONNECTION = "need-connection"  # a request is waiting and no connection id is valid
    CONNECT_REPLY = "connect-reply"  # the tracker gave us a connection id
    TIMEOUT = "timeout"  # no reply in time; retransmit (connect) or resend (request)
    TIMEOUT_EXPIRED = "timeout-expired"  # request timed out and its connection id expired
    EXPIRED = "expired"  # the connection id is more than a minute old
    CONNECTION_READY = "connection-ready"  # a valid connection id exists: send
    REPLY = "reply"  # the request's reply arrived (also a late one while waiting again)
    ERROR = "error"  # the tracker answered with action 3
    GIVE_UP = "give-up"  # retransmissions exhausted


State = ConnectionState | RequestState

#: Every allowed transition of the connection and of a request. Anything else is a bug.
TRANSITIONS: dict[tuple[State, Trigger], State] = {
    (ConnectionState.IDLE, Trigger.NEED_CONNECTION): ConnectionState.CONNECTING,
    (ConnectionState.CONNECTING, Trigger.CONNECT_REPLY): ConnectionState.CONNECTED,
    (ConnectionState.CONNECTING, Trigger.TIMEOUT): ConnectionState.CONNECTING,
    (ConnectionState.CONNECTING, Trigger.ERROR): ConnectionState.IDLE,
    (ConnectionState.CONNECTING, Trigger.GIVE_UP): ConnectionState.IDLE,
    (ConnectionState.CONNECTED, Trigger.EXPIRED): ConnectionState.IDLE,
    (RequestState.WAITING, Trigger.CONNECTION_READY): RequestState.SENT,
    (RequestState.WAITING, Trigger.REPLY): RequestState.DONE,
    (RequestState.WAITING, Trigger.ERROR): RequestState.DONE,
    (RequestState.WAITING, Trigger.GIVE_UP): RequestState.DONE,
    (RequestState.SENT, Trigger.TIMEOUT): RequestState.SENT,
    (RequestState.SENT, Trigger.TIMEOUT_EXPIRED): RequestState.WAITING,
    (RequestState.SENT, Trigger.REPLY): RequestState.DONE,
    (RequestState.SENT, Trigger.ERROR): RequestState.DONE,
    (RequestState.SENT, Trigger.GIVE_UP): RequestState.DONE,
}


_S = TypeVar("_S", ConnectionState, RequestState)


def _move(state: _S, trigger: Trigger) -> _S:
    """The one place a state changes: look the transition up in `TRANSITIONS`."""
    try:
        return cast(_S, TRANSITIONS[(state, trigger)])
    except KeyError:  # pragma: no cover - a bug in this module, never the tracker's doing
        raise AssertionError(f"no transition from {state} on {trigger}") from None


@dataclass(slots=True)
class _Request:
    request_id: int
    action: int  # ACTION_ANNOUNCE or ACTION_SCRAPE
    body: bytes  # what follows the 16-byte header
    info_hashes: tuple[bytes, ...]  # scrape: in the order sent (replies are in the same order)
    transaction_id: int
    state: RequestState = RequestState.WAITING
    attempt: int = 0  # BEP 15 'n' for this request
    deadline: float | None = None  # when the current send times out (SENT only)


# --- the client ---------------------------------------------------------------------------------


class UdpTrackerClient:
    """BEP 15 client for one tracker; see the module docstring for the protocol."""

    def __init__(
        self, now: float, rng: RandomSource, *, config: UdpTrackerConfig | None = None
    ) -> None:
        self._config = config if config is not None else UdpTrackerConfig()
        self._rng = rng
        self._now = now
        self._key = rng.getrandbits(32)  # BEP 15 'key' when the request sets none
        self._conn_state = ConnectionState.IDLE
        self._connection_id = 0
        self._connection_expires = 0.0
        self._connect_txid: int | None = None
        self._connect_attempt = 0
        self._connect_deadline: float | None = None
        self._requests: dict[int, _Request] = {}  # request id -> live (not DONE) request
        self._by_txid: dict[int, int] = {}  # transaction id -> request id
        self._next_request_id = 1
        self._outbox: list[bytes] = []
        #: Datagrams shorter than the 8 bytes of action + transaction id.
        self.short_datagrams = 0
        #: Datagrams whose transaction id matches nothing we are waiting for.
        self.unknown_transaction_ids = 0

    # --- public API ---

    @property
    def connection_state(self) -> ConnectionState:
        return self._conn_state

    @property
    def pending(self) -> int:
        """Requests not yet answered, refused or given up."""
        return len(self._requests)

    def announce(self, req: AnnounceRequest, now: float) -> int:
        """Queue a BEP 15 announce (action 1); returns its request id."""
        if req.ip is None:
            ip = 0
        else:
            addr = ipaddress.ip_address(req.ip)
            if addr.version != 4:
                raise ValueError("a BEP 15 announce can only carry an IPv4 'ip'")
            ip = int(addr)
        body = _ANNOUNCE_BODY.pack(
            req.info_hash,
            req.peer_id,
            req.downloaded,
            req.left,
            req.uploaded,
            _EVENT_CODE[req.event],
            ip,
            self._key if req.key is None else req.key,
            -1 if req.numwant is None else req.numwant,  # -1: the tracker's default
            req.port,
        )
        return self._queue(ACTION_ANNOUNCE, body, (), now)

    def scrape(self, info_hashes: Sequence[bytes], now: float) -> int:
        """Queue a BEP 15 scrape (action 2) of 1..74 infohashes; returns its request id."""
        hashes = tuple(bytes(h) for h in info_hashes)
        if not 1 <= len(hashes) <= MAX_SCRAPE_HASHES:
            raise ValueError(f"a UDP scrape takes 1..{MAX_SCRAPE_HASHES} infohashes")
        if any(len(h) != 20 for h in hashes):
            raise ValueError("infohashes are 20 bytes")
        return self._queue(ACTION_SCRAPE, b"".join(hashes), hashes, now)

    def datagrams_to_send(self) -> list[bytes]:
        """Datagrams to write to the tracker, oldest first; the outbox is emptied."""
        out, self._outbox = self._outbox, []
        return out

    def next_timer(self) -> float | None:
        """When `on_timer` must next be called, or None when nothing is in flight."""
        deadlines = [r.deadline for r in self._requests.values() if r.deadline is not None]
        if self._connect_deadline is not None:
            deadlines.append(self._connect_deadline)
        return min(deadlines, default=None)

    def on_timer(self, now: float) -> list[UdpTrackerEvent]:
        """Retransmit what timed out (BEP 15 schedule) and fail what ran out of retries."""
        self._now = now
        events: list[UdpTrackerEvent] = []
        if self._connect_deadline is not None and now >= self._connect_deadline:
            events.extend(self._connect_timed_out(now))
        for request in list(self._requests.values()):
            if request.deadline is not None and now >= request.deadline:
                events.extend(self._request_timed_out(request, now))
        self._dispatch(now)
        return events

    def receive(self, datagram: bytes, now: float) -> list[UdpTrackerEvent]:
        """Take one datagram from the tracker. Unmatched ones are counted and ignored; a matched
        but malformed one raises `TrackerError` and changes nothing."""
        self._now = now
        data = bytes(datagram)
        if len(data) < _REPLY_HEADER.size:
            self.short_datagrams += 1
            return []
        action, txid = _REPLY_HEADER.unpack_from(data)
        if txid == self._connect_txid:
            return self._connect_reply(action, data, now)
        request_id = self._by_txid.get(txid)
        if request_id is None:
            self.unknown_transaction_ids += 1
            return []
        return self._request_reply(self._requests[request_id], action, data, now)

    # --- connection ---

    def _connection_valid(self, now: float) -> bool:
        if self._conn_state is ConnectionState.CONNECTED and now >= self._connection_expires:
            self._conn_state = _move(self._conn_state, Trigger.EXPIRED)
        return self._conn_state is ConnectionState.CONNECTED

    def _dispatch(self, now: float) -> None:
        """Send every waiting request if the connection id is valid, else make sure a connect is
        under way."""
        waiting = [r for r in self._requests.values() if r.state is RequestState.WAITING]
        if not waiting:
            return
        if self._connection_valid(now):
            for request in waiting:
                request.state = _move(request.state, Trigger.CONNECTION_READY)
                self._send(request, now)
        elif self._conn_state is ConnectionState.IDLE:
            self._conn_state = _move(self._conn_state, Trigger.NEED_CONNECTION)
            self._connect_txid = txid = self._new_txid()
            self._connect_attempt = 0
            self._send_connect(txid, now)

    def _send_connect(self, txid: int, now: float) -> None:
        self._outbox.append(_HEADER.pack(PROTOCOL_ID, ACTION_CONNECT, txid))
        self._connect_deadline = now + self._timeout(self._connect_attempt)

    def _connect_timed_out(self, now: float) -> list[UdpTrackerEvent]:
        waiting = [r for r in self._requests.values() if r.state is RequestState.WAITING]
        self._connect_attempt += 1
        txid = self._connect_txid
        if (
            waiting
            and txid is not None
            and self._connect_attempt <= self._config.max_retransmit_exponent
        ):
            self._conn_state = _move(self._conn_state, Trigger.TIMEOUT)
            self._send_connect(txid, now)  # same transaction id: a late reply still counts
            return []
        self._conn_state = _move(self._conn_state, Trigger.GIVE_UP)
        self._clear_connect()
        reason = f"no reply to connect after {self._connect_attempt} attempts"
        return [
            self._finish(r, Trigger.GIVE_UP, RequestFailed(r.request_id, reason)) for r in waiting
        ]

    def _connect_reply(self, action: int, data: bytes, now: float) -> list[UdpTrackerEvent]:
        if action == ACTION_ERROR:
            message = _error_text(data)
            self._conn_state = _move(self._conn_state, Trigger.ERROR)
            self._clear_connect()
            waiting = [r for r in self._requests.values() if r.state is RequestState.WAITING]
            return [
                self._finish(r, Trigger.ERROR, TrackerErrorReceived(r.request_id, message))
                for r in waiting
            ]
        if action != ACTION_CONNECT or len(data) < _CONNECT_REPLY.size:
            raise TrackerError(f"bad connect reply: action {action}, {len(data)} bytes")
        _, _, self._connection_id = _CONNECT_REPLY.unpack_from(data)
        # BEP 15: usable "until one minute after it has received it" - counted from receipt.
        self._connection_expires = now + self._config.connection_id_lifetime
        self._conn_state = _move(self._conn_state, Trigger.CONNECT_REPLY)
        self._clear_connect()
        self._dispatch(now)
        return []

    def _clear_connect(self) -> None:
        self._connect_txid = None
        self._connect_deadline = None

    # --- requests ---

    def _queue(self, action: int, body: bytes, hashes: tuple[bytes, ...], now: float) -> int:
        self._now = now
        request_id = self._next_request_id
        self._next_request_id += 1
        request = _Request(request_id, action, body, hashes, self._new_txid())
        self._requests[request_id] = request
        self._by_txid[request.transaction_id] = request_id
        self._dispatch(now)
        return request_id

    def _send(self, request: _Request, now: float) -> None:
        header = _HEADER.pack(self._connection_id, request.action, request.transaction_id)
        self._outbox.append(header + request.body)
        request.deadline = now + self._timeout(request.attempt)

    def _request_timed_out(self, request: _Request, now: float) -> list[UdpTrackerEvent]:
        request.attempt += 1
        if request.attempt > self._config.max_retransmit_exponent:
            reason = f"no reply after {request.attempt} attempts"
            return [
                self._finish(request, Trigger.GIVE_UP, RequestFailed(request.request_id, reason))
            ]
        if self._connection_valid(now):
            request.state = _move(request.state, Trigger.TIMEOUT)
            self._send(request, now)  # same transaction id: a late reply still counts
        else:
            request.state = _move(request.state, Trigger.TIMEOUT_EXPIRED)
            request.deadline = None  # the connect's timer runs until it is resent
        return []

    def _request_reply(
        self, request: _Request, action: int, data: bytes, now: float
    ) -> list[UdpTrackerEvent]:
        event: UdpTrackerEvent
        if action == ACTION_ERROR:
            event = TrackerErrorReceived(request.request_id, _error_text(data))
            return [self._finish(request, Trigger.ERROR, event)]
        if action != request.action:
            raise TrackerError(f"reply action {action} to a request with action {request.action}")
        if action == ACTION_ANNOUNCE:
            event = self._announce_reply(request, data)
        else:
            event = self._scrape_reply(request, data)
        return [self._finish(request, Trigger.REPLY, event)]

    def _announce_reply(self, request: _Request, data: bytes) -> Announced:
        if len(data) < _ANNOUNCE_REPLY.size:
            raise TrackerError(f"announce reply is {len(data)} bytes, fewer than 20")
        _, _, interval, leechers, seeders = _ANNOUNCE_REPLY.unpack_from(data)
        compact = data[_ANNOUNCE_REPLY.size :]
        try:
            if self._config.address_family == 6:
                peers = decode_compact_ipv6(compact, max_peers=self._config.max_peers)
            else:
                peers = decode_compact_ipv4(compact, max_peers=self._config.max_peers)
        except PeerAddressError as exc:
            raise TrackerError(f"announce reply: {exc}") from None
        return Announced(request.request_id, interval, leechers, seeders, peers)

    def _scrape_reply(self, request: _Request, data: bytes) -> Scraped:
        count, rest = divmod(len(data) - _REPLY_HEADER.size, _SCRAPE_ENTRY.size)
        if rest or count > len(request.info_hashes):
            raise TrackerError(
                f"scrape reply is {len(data)} bytes for {len(request.info_hashes)} infohashes"
            )
        stats = {}
        for i in range(count):
            seeders, completed, leechers = _SCRAPE_ENTRY.unpack_from(
                data, _REPLY_HEADER.size + i * _SCRAPE_ENTRY.size
            )
            stats[request.info_hashes[i]] = ScrapeStats(seeders, completed, leechers)
        return Scraped(request.request_id, stats)

    def _finish(
        self, request: _Request, trigger: Trigger, event: UdpTrackerEvent
    ) -> UdpTrackerEvent:
        request.state = _move(request.state, trigger)
        request.deadline = None
        del self._requests[request.request_id]
        del self._by_txid[request.transaction_id]
        return event

    # --- small pieces ---

    def _timeout(self, attempt: int) -> float:
        return float(self._config.retransmit_base * 2**attempt)  # BEP 15: 15 * 2^n seconds

    def _new_txid(self) -> int:
        while True:
            txid = self._rng.getrandbits(32)
            if txid != self._connect_txid and txid not in self._by_txid:
                return txid


def _error_text(data: bytes) -> str:
    return data[_REPLY_HEADER.size :].decode("utf-8", errors="replace")
