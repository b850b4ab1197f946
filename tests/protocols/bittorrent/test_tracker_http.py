"""HTTP tracker codec: URL encoding (BEP 3), scrape URLs (BEP 48), reply bodies (BEP 3/7/23/24),
the request bytes and the incremental HTTP/1.1 response reader. Bytes in memory only."""

from __future__ import annotations

import contextlib
import itertools
import random
import string
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.errors import ProtocolError
from peerwatch.protocols.bittorrent.bencode import bencode
from peerwatch.protocols.bittorrent.peer_address import PeerAddress, PeerAddressError
from peerwatch.protocols.bittorrent.tracker_http import (
    AnnounceEvent,
    AnnounceRequest,
    AnnounceResponse,
    HttpResponse,
    HttpResponseParser,
    ScrapeStats,
    TrackerError,
    TrackerFailure,
    announce_url,
    http_request_bytes,
    parse_announce_response,
    parse_scrape_response,
    percent_encode,
    scrape_url,
)

BEP3_HASH = bytes.fromhex("123456789abcdef123456789abcdef123456789a")
PEER_ID = b"-PW0001-abcdefghijkl"
UNRESERVED = set((string.ascii_letters + string.digits + ".-_~").encode())


def reference_encode(data: bytes) -> str:
    """Independent BEP 3 encoder: unreserved bytes as themselves, the rest as %XX."""
    return "".join(chr(b) if b in UNRESERVED else f"%{b:02X}" for b in data)


def query_params(url: str) -> list[tuple[str, bytes]]:
    query = url.split("?", 1)[1]
    out = []
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        out.append((name, urllib.parse.unquote_to_bytes(value)))
    return out


def request(**kw: object) -> AnnounceRequest:
    base: dict[str, object] = {"info_hash": BEP3_HASH, "peer_id": PEER_ID, "port": 6881}
    base.update(kw)
    return AnnounceRequest(**base)  # type: ignore[arg-type]


# --- percent-encoding ---------------------------------------------------------------------------


def test_bep3_percent_encoding_vector() -> None:
    expected = "%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A"
    assert reference_encode(BEP3_HASH) == expected
    assert percent_encode(BEP3_HASH) == expected


def test_percent_encoding_every_byte() -> None:
    data = bytes(range(256))
    assert percent_encode(data) == reference_encode(data)
    assert percent_encode(b"a b/~") == "a%20b%2F~"


@given(st.binary(min_size=20, max_size=20), st.binary(min_size=20, max_size=20))
def test_announce_url_round_trip(info_hash: bytes, peer_id: bytes) -> None:
    url = announce_url("http://t.example/announce", request(info_hash=info_hash, peer_id=peer_id))
    params = dict(query_params(url))
    assert params["info_hash"] == info_hash
    assert params["peer_id"] == peer_id
    assert percent_encode(info_hash) == reference_encode(info_hash)


# --- announce URL -------------------------------------------------------------------------------


def test_announce_url_golden() -> None:
    url = announce_url("http://tracker.example:6969/announce", request(left=1000))
    assert url == (
        "http://tracker.example:6969/announce"
        "?info_hash=%124Vx%9A%BC%DE%F1%23Eg%89%AB%CD%EF%124Vx%9A"
        "&peer_id=-PW0001-abcdefghijkl"
        "&port=6881&uploaded=0&downloaded=0&left=1000&compact=1"
    )


def test_announce_url_optional_fields() -> None:
    url = announce_url(
        "https://t.example/announce",
        request(
            event=AnnounceEvent.STARTED,
            numwant=80,
            key=0xDEADBEEF,
            ip="2001:db8::1",
            tracker_id=b"id 1",
            compact=0,
        ),
    )
    params = query_params(url)
    assert [name for name, _ in params] == [
        "info_hash",
        "peer_id",
        "port",
        "uploaded",
        "downloaded",
        "left",
        "compact",
        "event",
        "numwant",
        "key",
        "ip",
        "trackerid",
    ]
    values = dict(params)
    assert values["compact"] == b"0"
    assert values["event"] == b"started"
    assert values["numwant"] == b"80"
    assert values["key"] == b"DEADBEEF"
    assert values["ip"] == b"2001:db8::1"
    assert values["trackerid"] == b"id 1"
    assert "id%201" in url


@pytest.mark.parametrize(
    ("base", "joined"),
    [
        ("http://t.example/announce", "http://t.example/announce?info_hash="),
        (
            "http://t.example/announce?passkey=abc",
            "http://t.example/announce?passkey=abc&info_hash=",
        ),
        ("http://t.example/announce?", "http://t.example/announce?info_hash="),
        ("http://t.example/a?k=v&", "http://t.example/a?k=v&info_hash="),
        ("http://t.example/announce#frag", "http://t.example/announce?info_hash="),
        ("HTTP://t.example/announce", "HTTP://t.example/announce?info_hash="),
    ],
)
def test_announce_url_existing_query(base: str, joined: str) -> None:
    assert announce_url(base, request()).startswith(joined)


@pytest.mark.parametrize(
    "bad",
    [
        "udp://t.example:80/announce",
        "http://t.example/announce\r\nX-Injected: 1",
        "http://t.example/ann ounce",
        "http://t.exämple/announce",
        "http:/t.example/announce",
        "",
        "http://t.example/" + "a" * 9000,
    ],
)
def test_unusable_tracker_urls(bad: str) -> None:
    with pytest.raises(TrackerError):
        announce_url(bad, request())


@pytest.mark.parametrize(
    "kw",
    [
        {"info_hash": b"x" * 32},
        {"peer_id": b"short"},
        {"port": 65536},
        {"left": -1},
        {"uploaded": 2**63},
        {"compact": 2},
        {"numwant": -1},
        {"key": 2**32},
        {"ip": "not an ip"},
    ],
)
def test_announce_request_validation(kw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        request(**kw)


# --- scrape URL (BEP 48) ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("announce", "scrape"),
    [
        ("http://example.com/announce", "http://example.com/scrape"),
        ("http://example.com/x/announce", "http://example.com/x/scrape"),
        ("http://example.com/announce.php", "http://example.com/scrape.php"),
        ("http://example.com/a", None),
        ("http://example.com/announce?x2%0644", "http://example.com/scrape?x2%0644"),
        ("http://example.com/announce?x=2/4", None),
        ("http://example.com/x%064announce", None),
    ],
)
def test_bep48_examples(announce: str, scrape: str | None) -> None:
    assert scrape_url(announce) == scrape


def test_scrape_url_with_hashes() -> None:
    h2 = bytes(range(20))
    url = scrape_url("http://t.example/announce?passkey=k", [BEP3_HASH, h2])
    assert url is not None
    assert url.startswith("http://t.example/scrape?passkey=k&info_hash=%124Vx")
    assert query_params(url) == [("passkey", b"k"), ("info_hash", BEP3_HASH), ("info_hash", h2)]
    with pytest.raises(ValueError, match="not 20"):
        scrape_url("http://t.example/announce", [b"short"])


# --- announce replies ---------------------------------------------------------------------------


def test_compact_reply() -> None:
    body = bencode(
        {
            b"interval": 1800,
            b"min interval": 900,
            b"complete": 3,
            b"incomplete": 7,
            b"peers": b"\x7f\x00\x00\x01\x1a\xe1\x0a\x00\x00\x02\x00\x00",
            b"peers6": bytes(15) + b"\x01\x1a\xe2",
            b"tracker id": b"T1",
            b"warning message": b"caf\xc3\xa9",
            b"external ip": b"\xc0\x00\x02\x01",
        }
    )
    assert parse_announce_response(body) == AnnounceResponse(
        interval=1800,
        min_interval=900,
        complete=3,
        incomplete=7,
        peers=(PeerAddress("127.0.0.1", 6881), PeerAddress("10.0.0.2", 0)),
        peers6=(PeerAddress("::1", 6882),),
        tracker_id=b"T1",
        warning="café",
        external_ip="192.0.2.1",
    )


def test_minimal_reply() -> None:
    reply = parse_announce_response(b"d8:intervali60ee")
    assert isinstance(reply, AnnounceResponse)
    assert reply.interval == 60
    assert reply.peers == reply.peers6 == ()
    assert reply.min_interval is None
    assert reply.complete is None
    assert reply.incomplete is None
    assert reply.tracker_id is None


def test_dict_reply_keeps_peer_ids() -> None:
    pid = b"-qB4500-" + b"z" * 12
    body = bencode(
        {
            b"interval": 60,
            b"peers": [
                {b"ip": b"10.0.0.9", b"peer id": pid, b"port": 51413},
                {b"ip": b"2001:db8::9", b"port": 6881},
                {b"ip": b"seed.example", b"port": 6881},
            ],
        }
    )
    reply = parse_announce_response(body)
    assert isinstance(reply, AnnounceResponse)
    assert reply.peers == (PeerAddress("10.0.0.9", 51413),)
    assert reply.peers6 == (PeerAddress("2001:db8::9", 6881),)
    assert reply.peer_ids == ((PeerAddress("10.0.0.9", 51413), pid),)
    assert reply.skipped_peers == 1


def test_failure_reply() -> None:
    body = bencode({b"failure reason": b"unregistered torrent", b"interval": 5})
    assert parse_announce_response(body) == TrackerFailure("unregistered torrent")
    assert parse_scrape_response(body) == TrackerFailure("unregistered torrent")


def test_bad_external_ip_is_ignored() -> None:
    reply = parse_announce_response(bencode({b"interval": 1, b"external ip": b"abc"}))
    assert isinstance(reply, AnnounceResponse)
    assert reply.external_ip is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "bencode"),
        (b"d8:intervali60ee trailing", "bencode"),
        (b"d5:peers0:8:intervali60ee", "bencode"),  # unsorted keys: not canonical
        (b"li1ee", "dictionary"),
        (b"de", "'interval' is missing"),
        (b"d8:interval2:60e", "'interval'"),
        (b"d8:intervali-1ee", "'interval'"),
        (b"d8:intervali4294967296ee", "'interval'"),
        (b"d8:completei-5e8:intervali60ee", "'complete'"),
        (b"d8:intervali60e5:peers5:abcdee", "multiple of 6"),
        (b"d8:intervali60e6:peers66:abcdefe", "multiple of 18"),
        (b"d8:intervali60e6:peers6i1ee", "'peers6'"),
        (b"d8:intervali60e5:peersi1ee", "not a list"),
        (b"d8:intervali60e10:tracker idi1ee", "'tracker id'"),
        (b"d14:failure reasoni1ee", "'failure reason'"),
    ],
)
def test_malformed_announce_replies(body: bytes, message: str) -> None:
    with pytest.raises((TrackerError, PeerAddressError), match=message):
        parse_announce_response(body)


def test_body_cap() -> None:
    with pytest.raises(TrackerError, match="limit"):
        parse_announce_response(b"d8:intervali1e5:peers" + b"0" * (4 * 1024 * 1024))


def test_peer_cap_is_passed_through() -> None:
    body = bencode({b"interval": 1, b"peers": bytes(6 * 5)})
    with pytest.raises(PeerAddressError, match="limit"):
        parse_announce_response(body, max_peers=4)


# --- scrape replies -----------------------------------------------------------------------------


def test_scrape_reply() -> None:
    h2 = bytes(range(20))
    body = bencode(
        {
            b"files": {
                BEP3_HASH: {b"complete": 5, b"downloaded": 50, b"incomplete": 10, b"name": b"x"},
                h2: {b"complete": 0, b"downloaded": 0, b"incomplete": 1},
            },
            b"flags": {b"min_request_interval": 900},
        }
    )
    assert parse_scrape_response(body) == {
        BEP3_HASH: ScrapeStats(complete=5, downloaded=50, incomplete=10),
        h2: ScrapeStats(complete=0, downloaded=0, incomplete=1),
    }
    assert parse_scrape_response(b"d5:filesdee") == {}
    assert parse_scrape_response(b"de") == {}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (b"short", "'files'"),
        ({b"short": {}}, "20-byte"),
        ({BEP3_HASH: 1}, "not a dictionary"),
        ({BEP3_HASH: {b"complete": 1, b"incomplete": 1}}, "'downloaded' is missing"),
        ({BEP3_HASH: {b"complete": -1, b"downloaded": 0, b"incomplete": 1}}, "'complete'"),
    ],
)
def test_malformed_scrape_replies(files: object, message: str) -> None:
    with pytest.raises(TrackerError, match=message):
        parse_scrape_response(bencode({b"files": files}))


def test_scrape_file_cap() -> None:
    files = {
        bytes([i]) * 20: {b"complete": 0, b"downloaded": 0, b"incomplete": 0} for i in range(3)
    }
    with pytest.raises(TrackerError, match="limit"):
        parse_scrape_response(bencode({b"files": files}), max_files=2)


# --- request bytes ------------------------------------------------------------------------------


def test_request_bytes_golden() -> None:
    url = announce_url("http://tracker.example:6969/announce", request())
    host, port, raw = http_request_bytes(url, user_agent="peerwatch/test")
    assert (host, port) == ("tracker.example", 6969)
    target = url.removeprefix("http://tracker.example:6969")
    assert (
        raw
        == (
            f"GET {target} HTTP/1.1\r\n"
            "Host: tracker.example:6969\r\n"
            "User-Agent: peerwatch/test\r\n"
            "Accept-Encoding: identity\r\n"
            "Connection: close\r\n"
            "\r\n"
        ).encode()
    )


@pytest.mark.parametrize(
    ("url", "host", "port", "first_lines"),
    [
        ("http://t.example", "t.example", 80, b"GET / HTTP/1.1\r\nHost: t.example\r\n"),
        (
            "https://t.example/a?b=c#d",
            "t.example",
            443,
            b"GET /a?b=c HTTP/1.1\r\nHost: t.example\r\n",
        ),
        ("https://t.example:443/a", "t.example", 443, b"GET /a HTTP/1.1\r\nHost: t.example\r\n"),
        ("http://[::1]:6969/ann", "::1", 6969, b"GET /ann HTTP/1.1\r\nHost: [::1]:6969\r\n"),
        ("http://u:p@127.0.0.1/x", "127.0.0.1", 80, b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n"),
    ],
)
def test_request_bytes_variants(url: str, host: str, port: int, first_lines: bytes) -> None:
    got_host, got_port, raw = http_request_bytes(url)
    assert (got_host, got_port) == (host, port)
    assert raw.startswith(first_lines)
    assert b"Authorization" not in raw
    assert raw.endswith(b"Connection: close\r\n\r\n")


@pytest.mark.parametrize(
    "url", ["http://t.example:99999/a", "http://t.example:x/a", "http:///a", "http://t.example:0/"]
)
def test_request_bytes_bad_urls(url: str) -> None:
    with pytest.raises(TrackerError):
        http_request_bytes(url)


# --- HTTP response reader -----------------------------------------------------------------------


def feed_bytewise(raw: bytes, **kw: int) -> HttpResponse:
    parser = HttpResponseParser(**kw)
    result = None
    for i in range(len(raw)):
        got = parser.feed(raw[i : i + 1])
        if got is not None:
            assert i == len(raw) - 1 or parser.done
            result = result or got
    return result if result is not None else parser.feed_eof()


CL_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n"
    b"X-Two: a\r\nX-TWO: b\r\n\r\nd8:intervali60ee"
)


def test_content_length_byte_by_byte() -> None:
    resp = feed_bytewise(CL_RESPONSE)
    assert resp.status == 200
    assert resp.reason == "OK"
    assert resp.body == b"d8:intervali60ee"
    assert resp.header("content-type") == "text/plain"
    assert resp.header("x-two") == "b"
    assert resp.header("missing") is None
    assert ("x-two", "a") in resp.headers


def test_content_length_in_one_piece_ignores_trailing_bytes() -> None:
    parser = HttpResponseParser()
    resp = parser.feed(CL_RESPONSE + b"garbage after")
    assert resp is not None
    assert resp.body == b"d8:intervali60ee"
    assert parser.feed(b"more") is resp
    assert parser.feed_eof() is resp


CHUNKED_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nd8:in\r\n"
    b"0B;ext=1\r\ntervali60ee\r\n"
    b"0\r\nX-Trailer: t\r\n\r\n"
)


def test_chunked_byte_by_byte() -> None:
    resp = feed_bytewise(CHUNKED_RESPONSE)
    assert resp.body == b"d8:intervali60ee"
    assert resp.header("transfer-encoding") == "chunked"


@given(st.lists(st.integers(1, len(CHUNKED_RESPONSE) - 1), max_size=8))
def test_chunked_any_split(cuts: list[int]) -> None:
    parser = HttpResponseParser()
    bounds = [0, *sorted(set(cuts)), len(CHUNKED_RESPONSE)]
    result = None
    for a, b in itertools.pairwise(bounds):
        result = parser.feed(CHUNKED_RESPONSE[a:b])
    assert result is not None
    assert result.body == b"d8:intervali60ee"


def test_close_delimited_and_bare_lf() -> None:
    resp = feed_bytewise(b"HTTP/1.0 200 OK\nServer: x\n\nd8:intervali1ee")
    assert resp.body == b"d8:intervali1ee"
    assert resp.header("server") == "x"


def test_unknown_transfer_coding_reads_to_close() -> None:
    parser = HttpResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc") is None
    assert parser.feed_eof().body == b"abc"


def test_no_body_statuses_and_interim() -> None:
    parser = HttpResponseParser()
    resp = parser.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    assert resp is not None
    assert (resp.status, resp.body) == (204, b"")
    resp = HttpResponseParser().feed(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    assert resp is not None
    assert (resp.status, resp.reason, resp.body) == (404, "Not Found", b"")
    resp = HttpResponseParser().feed(b"HTTP/1.1 200\r\nContent-Length: 2\r\n\r\nok")
    assert resp is not None
    assert (resp.status, resp.reason) == (200, "")


def test_header_cap() -> None:
    big = b"HTTP/1.1 200 OK\r\nX: " + b"a" * 17000 + b"\r\n\r\n"
    with pytest.raises(TrackerError, match="header block"):
        HttpResponseParser().feed(big)
    parser = HttpResponseParser()
    with pytest.raises(TrackerError, match="header block"):
        for i in range(len(big)):
            parser.feed(big[i : i + 1])
    assert feed_bytewise(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", max_header_bytes=64)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nabcdef\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 11,
    ],
)
def test_body_cap_all_framings(raw: bytes) -> None:
    with pytest.raises(TrackerError, match="limit"):
        HttpResponseParser(max_body_bytes=10).feed(raw)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"ICY 200 OK\r\n\r\n", "status line"),
        (b"HTTP/2 200 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "header line"),
        (b"HTTP/1.1 200 OK\r\nA: 1\r\n folded\r\n\r\n", "header line"),
        (b"HTTP/1.1 200 OK\r\nBad Name: 1\r\n\r\n", "header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "conflicting"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", "CRLF"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", "transfer coding"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 2000, "line longer"),
    ],
)
def test_malformed_http(raw: bytes, message: str) -> None:
    with pytest.raises(TrackerError, match=message):
        HttpResponseParser().feed(raw)


def test_parser_stays_broken_after_an_error() -> None:
    parser = HttpResponseParser()
    with pytest.raises(TrackerError, match="status line"):
        parser.feed(b"ICY 200 OK\r\n\r\n")
    with pytest.raises(TrackerError, match="status line"):
        parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(TrackerError, match="status line"):
        parser.feed_eof()


def test_duplicate_equal_content_length_is_fine() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"
    resp = HttpResponseParser().feed(raw)
    assert resp is not None
    assert resp.body == b"ok"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n",
    ],
)
def test_truncated_responses(raw: bytes) -> None:
    parser = HttpResponseParser()
    parser.feed(raw)
    with pytest.raises(TrackerError, match="closed before"):
        parser.feed_eof()


def test_end_to_end_in_memory() -> None:
    """Request bytes out, canned tracker bytes in, peers out: the whole HTTP path in memory."""
    url = announce_url("http://127.0.0.1:6969/announce", request(event=AnnounceEvent.STARTED))
    host, port, raw = http_request_bytes(url)
    assert (host, port) == ("127.0.0.1", 6969)
    assert b"&event=started" in raw
    body = bencode({b"interval": 1800, b"peers": b"\x7f\x00\x00\x02\x1a\xe1"})
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    wire += b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    resp = feed_bytewise(wire)
    reply = parse_announce_response(resp.body)
    assert isinstance(reply, AnnounceResponse)
    assert reply.peers == (PeerAddress("127.0.0.2", 6881),)


# --- fuzz ---------------------------------------------------------------------------------------

bencode_values = st.recursive(
    st.integers(-(2**40), 2**40) | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    b"interval",
                    b"peers",
                    b"peers6",
                    b"files",
                    b"complete",
                    b"incomplete",
                    b"downloaded",
                    b"failure reason",
                    b"ip",
                    b"port",
                    BEP3_HASH,
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=16,
)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_fuzz_parsers_raw_bytes(data: bytes) -> None:
    for parse in (parse_announce_response, parse_scrape_response):
        with contextlib.suppress(ProtocolError):
            parse(data)


@settings(max_examples=400)
@given(
    st.dictionaries(st.sampled_from([b"interval", b"peers", b"peers6", b"files"]), bencode_values)
)
def test_fuzz_parsers_structured(root: dict[bytes, object]) -> None:
    body = bencode(root)
    for parse in (parse_announce_response, parse_scrape_response):
        with contextlib.suppress(ProtocolError):
            parse(body)


http_pieces = st.sampled_from(
    [
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.0 100 Continue\r\n",
        b"Content-Length: 3\r\n",
        b"Content-Length: zz\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"\r\n",
        b"\n",
        b"3\r\nabc\r\n",
        b"0\r\n",
        b"ffffffffffffffff\r\n",
        b":",
        b"abc",
    ]
)


@settings(max_examples=400)
@given(st.lists(http_pieces | st.binary(max_size=20), max_size=12), st.randoms())
def test_fuzz_http_parser(pieces: list[bytes], rnd: random.Random) -> None:
    raw = b"".join(pieces)
    parser = HttpResponseParser(max_header_bytes=256, max_body_bytes=1024)
    try:
        pos = 0
        while pos < len(raw):
            step = rnd.randint(1, 8)
            parser.feed(raw[pos : pos + step])
            pos += step
        parser.feed_eof()
    except ProtocolError:
        pass
