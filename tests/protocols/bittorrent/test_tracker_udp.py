"""BEP 15 UDP tracker client: golden packets built by hand with struct, a fake tracker in memory,
connection-id expiry, the retransmission schedule on a fake clock, and fuzzing of `receive`."""

from __future__ import annotations

import contextlib
import random
import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.errors import ProtocolError
from peerwatch.protocols.bittorrent.peer_address import PeerAddress
from peerwatch.protocols.bittorrent.tracker_http import (
    AnnounceEvent,
    AnnounceRequest,
    ScrapeStats,
    TrackerError,
)
from peerwatch.protocols.bittorrent.tracker_udp import (
    TRANSITIONS,
    Announced,
    ConnectionState,
    RequestFailed,
    RequestState,
    Scraped,
    TrackerErrorReceived,
    UdpTrackerClient,
    UdpTrackerConfig,
    UdpTrackerEvent,
)

MAGIC = 0x41727101980
IH1 = bytes(range(20))
IH2 = bytes(range(20, 40))
PEER_ID = b"-PW0001-000000000000"
CONN_ID = 0x1122334455667788


class ScriptedRandom:
    """getrandbits returns 0x1000_0001, 0x1000_0002, ... so transaction ids are known."""

    def __init__(self, start: int = 0x1000_0000) -> None:
        self.value = start

    def getrandbits(self, k: int, /) -> int:
        self.value += 1
        return self.value % (1 << k)


KEY = 0x1000_0001  # the first draw is the client's default key
TX2 = 0x1000_0002  # the first request's transaction id (drawn when it is queued)
TX1 = 0x1000_0003  # then the connect it triggers


def req(**kw: object) -> AnnounceRequest:
    base: dict[str, object] = {"info_hash": IH1, "peer_id": PEER_ID, "port": 6881}
    base.update(kw)
    return AnnounceRequest(**base)  # type: ignore[arg-type]


def client(**kw: object) -> UdpTrackerClient:
    return UdpTrackerClient(0.0, ScriptedRandom(), config=UdpTrackerConfig(**kw))  # type: ignore[arg-type]


def state(c: UdpTrackerClient) -> ConnectionState:
    """Read through a call so mypy does not narrow the property between steps."""
    return c.connection_state


def connect_reply(txid: int, conn_id: int = CONN_ID) -> bytes:
    return struct.pack(">IIQ", 0, txid, conn_id)


def announce_reply(txid: int, peers: bytes = b"", interval: int = 1800) -> bytes:
    return struct.pack(">IIIII", 1, txid, interval, 4, 2) + peers


def error_reply(txid: int, message: bytes) -> bytes:
    return struct.pack(">II", 3, txid) + message


@dataclass
class FakeTracker:
    """A BEP 15 tracker in memory: parses requests by hand and answers them (or stays silent)."""

    conn_id: int = CONN_ID
    peers: bytes = b"\x7f\x00\x00\x01\x1a\xe1"
    answer_connect: bool = True
    answer_requests: bool = True
    seen: list[tuple[int, int]] = field(default_factory=list)  # (action, txid)

    def handle(self, datagram: bytes) -> bytes | None:
        conn_or_magic, action, txid = struct.unpack_from(">QII", datagram)
        self.seen.append((action, txid))
        if action == 0:
            assert conn_or_magic == MAGIC
            assert len(datagram) == 16
            return connect_reply(txid, self.conn_id) if self.answer_connect else None
        if conn_or_magic != self.conn_id:
            return error_reply(txid, b"Connection ID missmatch.\x00")
        if not self.answer_requests:
            return None
        if action == 1:
            assert len(datagram) == 98
            return announce_reply(txid, self.peers)
        if action == 2:
            count = (len(datagram) - 16) // 20
            body = b"".join(struct.pack(">III", i + 1, 10 * i, 2 * i) for i in range(count))
            return struct.pack(">II", 2, txid) + body
        raise AssertionError(action)


def pump(c: UdpTrackerClient, tracker: FakeTracker, now: float) -> list[UdpTrackerEvent]:
    """Deliver every outgoing datagram to the tracker and its answers back, until quiet."""
    events: list[UdpTrackerEvent] = []
    while out := c.datagrams_to_send():
        for datagram in out:
            answer = tracker.handle(datagram)
            if answer is not None:
                events.extend(c.receive(answer, now))
    return events


# --- golden packets -----------------------------------------------------------------------------


def test_connect_and_announce_golden_bytes() -> None:
    c = client()
    rid = c.announce(
        req(
            uploaded=1,
            downloaded=2,
            left=3,
            event=AnnounceEvent.STARTED,
            numwant=50,
            key=0xCAFEBABE,
            ip="192.0.2.7",
        ),
        now=0.0,
    )
    assert rid == 1
    assert state(c) is ConnectionState.CONNECTING
    # BEP 15 connect: int64 protocol_id, int32 action 0, int32 transaction_id.
    assert c.datagrams_to_send() == [bytes.fromhex("0000041727101980") + struct.pack(">II", 0, TX1)]
    assert c.datagrams_to_send() == []
    assert c.receive(connect_reply(TX1), now=1.0) == []
    assert state(c) is ConnectionState.CONNECTED
    (announce,) = c.datagrams_to_send()
    expected = (
        struct.pack(">Q", CONN_ID)
        + struct.pack(">i", 1)  # action
        + struct.pack(">i", TX2 - 2**32 if TX2 >= 2**31 else TX2)  # transaction_id
        + IH1
        + PEER_ID
        + struct.pack(">q", 2)  # downloaded
        + struct.pack(">q", 3)  # left
        + struct.pack(">q", 1)  # uploaded
        + struct.pack(">i", 2)  # event: started
        + bytes([192, 0, 2, 7])  # ip
        + struct.pack(">I", 0xCAFEBABE)  # key
        + struct.pack(">i", 50)  # num_want
        + struct.pack(">H", 6881)  # port
    )
    assert len(expected) == 98
    assert announce == expected
    peers = b"\x0a\x00\x00\x01\x1a\xe1\x0a\x00\x00\x02\x00\x50"
    events = c.receive(announce_reply(TX2, peers, interval=900), now=2.0)
    assert events == [
        Announced(
            rid,
            interval=900,
            leechers=4,
            seeders=2,
            peers=(PeerAddress("10.0.0.1", 6881), PeerAddress("10.0.0.2", 80)),
        )
    ]
    assert c.pending == 0
    assert c.next_timer() is None


def test_announce_defaults_golden() -> None:
    c = client()
    c.announce(req(), 0.0)
    c.datagrams_to_send()
    c.receive(connect_reply(TX1), 0.0)
    (announce,) = c.datagrams_to_send()
    tail = struct.unpack(">qqqiIIiH", announce[56:])
    # downloaded, left, uploaded, event none, ip 0, default key (first rng draw), num_want -1, port
    assert tail == (0, 0, 0, 0, 0, KEY, -1, 6881)


@pytest.mark.parametrize(
    ("event", "code"),
    [
        (AnnounceEvent.NONE, 0),
        (AnnounceEvent.COMPLETED, 1),
        (AnnounceEvent.STARTED, 2),
        (AnnounceEvent.STOPPED, 3),
    ],
)
def test_event_codes(event: AnnounceEvent, code: int) -> None:
    c = client()
    c.announce(req(event=event), 0.0)
    c.datagrams_to_send()
    c.receive(connect_reply(TX1), 0.0)
    (announce,) = c.datagrams_to_send()
    assert struct.unpack_from(">i", announce, 80) == (code,)


def test_ipv6_tracker_gets_18_byte_peers() -> None:
    c = client(address_family=6)
    rid = c.announce(req(), 0.0)
    c.datagrams_to_send()
    c.receive(connect_reply(TX1), 0.0)
    c.datagrams_to_send()
    peer = bytes.fromhex("20010db8000000000000000000000001") + b"\x1a\xe1"
    (event,) = c.receive(announce_reply(TX2, peer), 0.0)
    assert event == Announced(rid, 1800, 4, 2, (PeerAddress("2001:db8::1", 6881),))


def test_scrape_golden_bytes() -> None:
    c = client()
    rid = c.scrape([IH1, IH2], 0.0)
    c.datagrams_to_send()
    c.receive(connect_reply(TX1), 0.0)
    (scrape,) = c.datagrams_to_send()
    assert scrape == struct.pack(">QII", CONN_ID, 2, TX2) + IH1 + IH2
    reply = struct.pack(">IIIIIIII", 2, TX2, 5, 50, 10, 0, 1, 2)
    assert c.receive(reply, 0.0) == [
        Scraped(
            rid,
            {
                IH1: ScrapeStats(complete=5, downloaded=50, incomplete=10),
                IH2: ScrapeStats(complete=0, downloaded=1, incomplete=2),
            },
        )
    ]


def test_scrape_reply_may_be_shorter_but_not_longer() -> None:
    c = client()
    rid = c.scrape([IH1, IH2], 0.0)
    c.datagrams_to_send()
    c.receive(connect_reply(TX1), 0.0)
    too_long = struct.pack(">II", 2, TX2) + struct.pack(">III", 1, 1, 1) * 3
    with pytest.raises(TrackerError, match="scrape reply"):
        c.receive(too_long, 0.0)
    with pytest.raises(TrackerError, match="scrape reply"):
        c.receive(struct.pack(">II", 2, TX2) + b"\x00" * 5, 0.0)
    reply = struct.pack(">IIIII", 2, TX2, 7, 8, 9)
    assert c.receive(reply, 0.0) == [Scraped(rid, {IH1: ScrapeStats(7, 8, 9)})]


def test_request_validation() -> None:
    c = client()
    with pytest.raises(ValueError, match=r"1\.\.74"):
        c.scrape([], 0.0)
    with pytest.raises(ValueError, match=r"1\.\.74"):
        c.scrape([IH1] * 75, 0.0)
    with pytest.raises(ValueError, match="20 bytes"):
        c.scrape([b"short"], 0.0)
    with pytest.raises(ValueError, match="IPv4"):
        c.announce(req(ip="2001:db8::1"), 0.0)
    assert c.pending == 0
    assert c.datagrams_to_send() == []


# --- fake tracker: connection reuse and expiry --------------------------------------------------


def test_fake_tracker_round_trip_and_shared_connect() -> None:
    tracker = FakeTracker()
    c = client()
    a = c.announce(req(), 0.0)
    b = c.announce(req(info_hash=IH2), 0.0)
    s = c.scrape([IH1, IH2], 0.0)
    events = pump(c, tracker, 0.5)
    assert [action for action, _ in tracker.seen] == [0, 1, 1, 2]  # one connect for all three
    assert sorted(type(e).__name__ + str(e.request_id) for e in events) == sorted(
        [f"Announced{a}", f"Announced{b}", f"Scraped{s}"]
    )
    scraped = next(e for e in events if isinstance(e, Scraped))
    assert scraped.stats == {IH1: ScrapeStats(1, 0, 0), IH2: ScrapeStats(2, 10, 2)}


def test_connection_id_reused_within_a_minute_then_renewed() -> None:
    tracker = FakeTracker()
    c = client()
    c.announce(req(), 0.0)
    pump(c, tracker, 0.0)
    assert [a for a, _ in tracker.seen] == [0, 1]
    c.announce(req(), 59.9)  # still valid: straight out
    pump(c, tracker, 59.9)
    assert [a for a, _ in tracker.seen] == [0, 1, 1]
    tracker.conn_id = 0xABCDEF
    rid = c.announce(req(), 60.0)  # BEP 15: one minute after receipt - connect again
    assert state(c) is ConnectionState.CONNECTING
    events = pump(c, tracker, 60.0)
    assert [a for a, _ in tracker.seen] == [0, 1, 1, 0, 1]
    assert [type(e) for e in events] == [Announced]
    assert events[0].request_id == rid


def test_expiry_counts_from_receipt_not_from_send() -> None:
    c = client()
    c.announce(req(), 0.0)
    c.datagrams_to_send()
    c.receive(connect_reply(TX1), 10.0)  # arrived 10 s after the connect was sent
    c.datagrams_to_send()
    c.announce(req(), 69.0)
    assert len(c.datagrams_to_send()[0]) == 98  # announce, no new connect
    c.announce(req(), 70.0)
    assert len(c.datagrams_to_send()[0]) == 16  # connect


# --- errors and unmatched datagrams -------------------------------------------------------------


def test_error_action_surfaces() -> None:
    c = client()
    rid = c.announce(req(), 0.0)
    c.datagrams_to_send()
    c.receive(connect_reply(TX1), 0.0)
    c.datagrams_to_send()
    events = c.receive(error_reply(TX2, b"torrent not registered"), 0.0)
    assert events == [TrackerErrorReceived(rid, "torrent not registered")]
    assert c.pending == 0


def test_error_on_connect_fails_waiting_requests() -> None:
    c = client()
    a = c.announce(req(), 0.0)
    b = c.scrape([IH1], 0.0)
    c.datagrams_to_send()
    events = c.receive(error_reply(TX1, b"go away \xff"), 0.0)
    assert events == [
        TrackerErrorReceived(a, "go away \ufffd"),
        TrackerErrorReceived(b, "go away \ufffd"),
    ]
    assert state(c) is ConnectionState.IDLE
    assert c.pending == 0
    assert c.next_timer() is None


def test_wrong_transaction_ids_ignored_and_counted() -> None:
    c = client()
    rid = c.announce(req(), 0.0)
    c.datagrams_to_send()
    assert c.receive(connect_reply(0xDEAD), 0.0) == []  # not our connect
    assert c.unknown_transaction_ids == 1
    assert state(c) is ConnectionState.CONNECTING
    assert c.receive(b"\x00\x00\x00", 0.0) == []
    assert c.short_datagrams == 1
    c.receive(connect_reply(TX1), 0.0)
    c.datagrams_to_send()
    assert c.receive(connect_reply(TX1), 0.0) == []  # duplicate connect reply: stale id
    assert c.receive(announce_reply(0x0BAD), 0.0) == []
    assert c.unknown_transaction_ids == 3
    (event,) = c.receive(announce_reply(TX2), 0.0)
    assert isinstance(event, Announced)
    assert event.request_id == rid
    assert c.receive(announce_reply(TX2), 0.0) == []  # duplicate after completion
    assert c.unknown_transaction_ids == 4


@pytest.mark.parametrize(
    "reply",
    [
        struct.pack(">II", 1, TX1) + b"\x00" * 4,  # connect answered with announce action
        struct.pack(">II", 0, TX1) + b"\x00" * 4,  # too short for a connection id
    ],
)
def test_malformed_connect_reply_raises_and_changes_nothing(reply: bytes) -> None:
    c = client()
    c.announce(req(), 0.0)
    c.datagrams_to_send()
    with pytest.raises(TrackerError, match="connect reply"):
        c.receive(reply, 0.0)
    assert state(c) is ConnectionState.CONNECTING
    c.receive(connect_reply(TX1), 0.0)
    assert len(c.datagrams_to_send()) == 1


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (struct.pack(">II", 2, TX2), "action"),
        (struct.pack(">IIII", 1, TX2, 1, 1), "fewer than 20"),
        (announce_reply(TX2, b"\x01\x02\x03\x04\x05"), "multiple of 6"),
    ],
)
def test_malformed_announce_reply_leaves_request_pending(reply: bytes, message: str) -> None:
    c = client()
    rid = c.announce(req(), 0.0)
    c.datagrams_to_send()
    c.receive(connect_reply(TX1), 0.0)
    c.datagrams_to_send()
    with pytest.raises(TrackerError, match=message):
        c.receive(reply, 0.0)
    assert c.pending == 1
    (event,) = c.receive(announce_reply(TX2), 0.0)  # the real reply still lands
    assert isinstance(event, Announced)
    assert event.request_id == rid


def test_peer_cap() -> None:
    c = client(max_peers=1)
    c.announce(req(), 0.0)
    c.datagrams_to_send()
    c.receive(connect_reply(TX1), 0.0)
    with pytest.raises(TrackerError, match="limit"):
        c.receive(announce_reply(TX2, bytes(12)), 0.0)


# --- retransmission schedule (fake clock, no sleeping) ------------------------------------------


def drive(
    c: UdpTrackerClient, tracker: FakeTracker, until: float
) -> list[tuple[float, UdpTrackerEvent]]:
    """Run the client's timers on a fake clock; returns (time, event) pairs."""
    log: list[tuple[float, UdpTrackerEvent]] = []
    pump(c, tracker, 0.0)
    while (t := c.next_timer()) is not None and t <= until:
        log.extend((t, e) for e in c.on_timer(t))
        log.extend((t, e) for e in pump(c, tracker, t))
    return log


def test_connect_retransmission_schedule() -> None:
    tracker = FakeTracker(answer_connect=False)
    c = client()
    rid = c.announce(req(), 0.0)
    sent: list[float] = []
    now = 0.0
    sent.extend(now for _ in c.datagrams_to_send())
    events: list[UdpTrackerEvent] = []
    while (t := c.next_timer()) is not None:
        now = t
        events.extend(c.on_timer(now))
        sent.extend(now for d in c.datagrams_to_send() if tracker.handle(d) is None)
    # BEP 15: resend after 15 * 2^n seconds, n = 0..8: sends at 0, 15, 45, 105, ... 3825.
    assert sent == [15 * (2**n - 1) for n in range(9)]
    assert {txid for _, txid in tracker.seen} == {TX1}  # a retransmission keeps its id
    assert now == 15 * (2**9 - 1)  # 7665 s: the 9th send timed out
    assert events == [RequestFailed(rid, "no reply to connect after 9 attempts")]
    assert state(c) is ConnectionState.IDLE
    assert c.pending == 0


def test_retransmission_base_and_limit_are_configurable() -> None:
    tracker = FakeTracker(answer_connect=False)
    c = client(retransmit_base=0.5, max_retransmit_exponent=2)
    rid = c.announce(req(), 0.0)
    log = drive(c, tracker, until=1e9)
    assert log == [(3.5, RequestFailed(rid, "no reply to connect after 3 attempts"))]
    assert len(tracker.seen) == 3


def test_request_retransmission_reconnects_after_expiry() -> None:
    tracker = FakeTracker(answer_requests=False)
    c = client()
    rid = c.announce(req(), 0.0)
    times: list[tuple[float, int]] = []

    def flush(now: float) -> None:
        for d in c.datagrams_to_send():
            action = struct.unpack_from(">I", d, 8)[0]
            times.append((now, action))
            answer = tracker.handle(d)
            if answer is not None:
                c.receive(answer, now)

    flush(0.0)
    flush(0.0)
    events: list[UdpTrackerEvent] = []
    while (t := c.next_timer()) is not None:
        events.extend(c.on_timer(t))
        flush(t)
        flush(t)
    announces = [t for t, action in times if action == 1]
    connects = [t for t, action in times if action == 0]
    assert announces == [15 * (2**n - 1) for n in range(9)]
    # The id from t=0 is valid until 60: resent directly at 15 and 45, reconnect before each later
    # resend (each connect is answered at once, so each id expires before the next timeout).
    assert connects == [0.0, 105.0, 225.0, 465.0, 945.0, 1905.0, 3825.0]
    assert {txid for action, txid in tracker.seen if action == 1} == {TX2}
    assert events == [RequestFailed(rid, "no reply after 9 attempts")]


def test_late_reply_while_waiting_for_reconnect_is_accepted() -> None:
    c = client()
    rid = c.announce(req(), 0.0)
    c.datagrams_to_send()
    c.receive(connect_reply(TX1), 0.0)
    c.datagrams_to_send()
    for t in (15.0, 45.0, 105.0):
        c.on_timer(t)
    assert state(c) is ConnectionState.CONNECTING  # expired at 60, reconnecting
    assert [len(d) for d in c.datagrams_to_send()] == [98, 98, 16]
    (event,) = c.receive(announce_reply(TX2), 106.0)  # the first send's answer, finally
    assert isinstance(event, Announced)
    assert event.request_id == rid
    assert c.pending == 0
    # The connect is still in flight but nobody waits on it: it lapses quietly.
    assert c.on_timer(120.0) == []
    assert state(c) is ConnectionState.IDLE
    assert c.next_timer() is None


def test_next_timer_and_on_timer_before_deadline() -> None:
    c = client()
    assert c.next_timer() is None
    assert c.on_timer(100.0) == []
    c.announce(req(), 100.0)
    assert c.next_timer() == 115.0
    c.datagrams_to_send()
    assert c.on_timer(114.0) == []
    assert c.datagrams_to_send() == []


# --- transition table ---------------------------------------------------------------------------


def test_transition_table_is_closed() -> None:
    for (state, _), target in TRANSITIONS.items():
        assert type(state) is type(target)
    reachable_request = {t for (s, _), t in TRANSITIONS.items() if isinstance(s, RequestState)}
    assert reachable_request == set(RequestState)
    assert {t for (s, _), t in TRANSITIONS.items() if isinstance(s, ConnectionState)} == set(
        ConnectionState
    )


# --- fuzz ---------------------------------------------------------------------------------------


def fresh_pending_client() -> UdpTrackerClient:
    """Transaction ids: announce ..02, its connect ..03, scrape ..04 (both sent on ..03's id);
    after that id expired, an announce ..05 waiting on a new connect ..06."""
    c = client()
    c.announce(req(), 0.0)
    c.scrape([IH1, IH2], 0.0)
    c.datagrams_to_send()
    c.receive(connect_reply(0x1000_0003), 0.0)
    c.datagrams_to_send()
    c.announce(req(), 70.0)
    return c


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_fuzz_receive_arbitrary_bytes(data: bytes) -> None:
    c = fresh_pending_client()
    with contextlib.suppress(ProtocolError):
        c.receive(data, 1.0)


@settings(max_examples=500)
@given(
    st.integers(0, 5),
    st.sampled_from([0x1000_0002, 0x1000_0003, 0x1000_0004, 0x1000_0005, 0x1000_0006]),
    st.binary(max_size=100),
    st.randoms(use_true_random=False),
)
def test_fuzz_receive_matching_transaction_ids(
    action: int, txid: int, tail: bytes, rnd: random.Random
) -> None:
    c = fresh_pending_client()
    with contextlib.suppress(ProtocolError):
        c.receive(struct.pack(">II", action, txid) + tail, 1.0)
    # Whatever happened, the machine still runs its timers without error.
    for _ in range(3):
        t = c.next_timer()
        if t is None:
            break
        c.on_timer(t + rnd.random())
        c.datagrams_to_send()
