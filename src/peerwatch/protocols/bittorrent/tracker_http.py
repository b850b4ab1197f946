"""HTTP tracker client codec: announce (BEP 3, compact peers BEP 23, IPv6 peers BEP 7) and scrape
(BEP 48), plus the few bytes of HTTP/1.1 (RFC 9112) needed to talk to a tracker without a client
library.

Sans-IO (house rule 1): `announce_url` / `scrape_url` build URLs, `http_request_bytes` builds the
GET request a transport writes to a socket, `HttpResponseParser` takes whatever bytes the socket
returned, and `parse_announce_response` / `parse_scrape_response` decode the bencoded body. No
socket, no clock, no DNS.

Everything the tracker sends is hostile until checked: the header block, the body, chunk sizes,
peer counts and bencode are all capped, and every malformed input raises `TrackerError` (a
`ProtocolError`) or, for peer lists, `PeerAddressError` (also a `ProtocolError`) — nothing else.
A well-formed "failure reason" reply is not an error: it is returned as a `TrackerFailure` value.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from peerwatch.errors import ProtocolError
from peerwatch.protocols.bittorrent.bencode import bdecode
from peerwatch.protocols.bittorrent.peer_address import (
    MAX_PEERS,
    PeerAddress,
    decode_compact_ipv4,
    decode_compact_ipv6,
    decode_peer_dicts,
)

#: Largest header block (status line + headers, or a chunked body's trailers) accepted.
MAX_HEADER_BYTES = 16 * 1024
#: Largest body accepted. An announce reply is a few KiB; a full scrape of a big tracker is more,
#: and is what this bounds.
MAX_BODY_BYTES = 4 * 1024 * 1024
#: Most torrents accepted in one scrape reply.
MAX_SCRAPE_FILES = 100_000
#: Sent in every request; trackers log it.
DEFAULT_USER_AGENT = "peerwatch/0.1"

_HASH_LEN = 20  # BEP 3 info_hash and peer_id; BEP 52: v2 uses the SHA-256 truncated to 20 bytes
_MAX_URL_LEN = 8 * 1024
_MAX_CHUNK_LINE = 1024
_MAX_CHUNK_HEX_DIGITS = 16
_UINT32_MAX = 0xFFFF_FFFF
_INT64_MAX = 2**63 - 1
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.6.2 token
_STATUS_RE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: ([^\r\n]*))?")
_URL_SAFE_RE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space: no header injection
_USER_AGENT_RE = re.compile(r"[\x20-\x7e]+")
_HEAD_END_RE = re.compile(rb"\r?\n\r?\n")
_DIGITS_RE = re.compile(r"[0-9]{1,18}")
_HEX_RE = re.compile(rb"[0-9A-Fa-f]{1,%d}" % _MAX_CHUNK_HEX_DIGITS)


class TrackerError(ProtocolError):
    """A tracker's reply (HTTP framing, bencode or fields) breaks the protocol, or a tracker URL
    taken from a torrent cannot be used."""


class AnnounceEvent(Enum):
    """BEP 3 'event'; the value is what goes in the HTTP query (BEP 15 numbers them 0-3)."""

    NONE = ""
    COMPLETED = "completed"
    STARTED = "started"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class AnnounceRequest:
    """What we tell a tracker (BEP 3; shared by HTTP and UDP, BEP 15).

    Invalid values are our own bug, so they raise ValueError, not a `ProtocolError`.
    """

    info_hash: bytes  # 20 bytes; for a v2 torrent the SHA-256 infohash truncated (BEP 52)
    peer_id: bytes  # 20 bytes
    port: int  # the port we claim to listen on
    uploaded: int = 0
    downloaded: int = 0
    left: int = 0
    event: AnnounceEvent = AnnounceEvent.NONE
    compact: int = 1  # BEP 23: ask for the compact peer list
    numwant: int | None = None  # None: let the tracker choose (BEP 3 default 50; UDP sends -1)
    key: int | None = None  # 32-bit; lets the tracker recognise us across IP changes
    ip: str | None = None  # the address we claim, when not the one the tracker sees
    tracker_id: bytes | None = None  # echo of a previous reply's 'tracker id' (BEP 3)

    def __post_init__(self) -> None:
        if len(self.info_hash) != _HASH_LEN:
            raise ValueError(f"info_hash is {len(self.info_hash)} bytes, not 20")
        if len(self.peer_id) != _HASH_LEN:
            raise ValueError(f"peer_id is {len(self.peer_id)} bytes, not 20")
        if not 0 <= self.port <= 0xFFFF:
            raise ValueError(f"port {self.port} is out of range")
        for name in ("uploaded", "downloaded", "left"):
            value = getattr(self, name)
            if not 0 <= value <= _INT64_MAX:  # BEP 15 carries them as int64
                raise ValueError(f"{name} {value} is out of range")
        if self.compact not in (0, 1):
            raise ValueError("compact is 0 or 1")
        if self.numwant is not None and not 0 <= self.numwant <= 0x7FFF_FFFF:
            raise ValueError(f"numwant {self.numwant} is out of range")
        if self.key is not None and not 0 <= self.key <= _UINT32_MAX:
            raise ValueError(f"key {self.key} is not a 32-bit value")
        if self.ip is not None:
            ipaddress.ip_address(self.ip)  # raises ValueError


@dataclass(frozen=True, slots=True)
class AnnounceResponse:
    """A successful announce reply (BEP 3, BEP 23, BEP 7)."""

    interval: int  # seconds until the next regular announce
    min_interval: int | None  # 'min interval': do not announce more often than this
    complete: int | None  # seeders
    incomplete: int | None  # leechers
    peers: tuple[PeerAddress, ...]  # 'peers' (compact IPv4, or the IPv4 entries of a dict list)
    peers6: tuple[PeerAddress, ...]  # 'peers6' (BEP 7), plus IPv6 entries of a dict list
    tracker_id: bytes | None  # to echo in later announces
    warning: str | None  # 'warning message'
    peer_ids: tuple[tuple[PeerAddress, bytes], ...] = ()  # non-compact lists only: who said what
    skipped_peers: int = 0  # unusable entries of a non-compact list
    external_ip: str | None = None  # BEP 24: the address the tracker saw us on


@dataclass(frozen=True, slots=True)
class TrackerFailure:
    """The tracker answered with 'failure reason' (BEP 3): a well-formed refusal."""

    reason: str


@dataclass(frozen=True, slots=True)
class ScrapeStats:
    """One torrent's counts in a scrape reply (BEP 48; BEP 15 action 2 carries the same three)."""

    complete: int  # seeders
    downloaded: int  # completed downloads ever reported
    incomplete: int  # leechers


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A complete HTTP/1.1 response; header names are lower-cased, in the order received."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The last value of header `name` (case-insensitive), or None."""
        wanted = name.lower()
        found = None
        for key, value in self.headers:
            if key == wanted:
                found = value
        return found


# --- URLs and the request -----------------------------------------------------------------------


def percent_encode(data: bytes) -> str:
    """BEP 3: every byte outside the RFC 3986 unreserved set (0-9 a-z A-Z . - _ ~) as %XX."""
    return urllib.parse.quote_from_bytes(data, safe="")


def announce_url(base_url: str, req: AnnounceRequest) -> str:
    """The full announce URL: `base_url` (which may already carry a query) plus BEP 3 parameters."""
    params = [
        ("info_hash", percent_encode(req.info_hash)),
        ("peer_id", percent_encode(req.peer_id)),
        ("port", str(req.port)),
        ("uploaded", str(req.uploaded)),
        ("downloaded", str(req.downloaded)),
        ("left", str(req.left)),
        ("compact", str(req.compact)),
    ]
    if req.event is not AnnounceEvent.NONE:
        params.append(("event", req.event.value))
    if req.numwant is not None:
        params.append(("numwant", str(req.numwant)))
    if req.key is not None:
        params.append(("key", f"{req.key:08X}"))  # the hex form libtorrent and others send
    if req.ip is not None:
        params.append(("ip", percent_encode(req.ip.encode("ascii"))))
    if req.tracker_id is not None:
        params.append(("trackerid", percent_encode(req.tracker_id)))
    return _append_query(_check_http_url(base_url), params)


def scrape_url(announce_url: str, info_hashes: Iterable[bytes] = ()) -> str | None:
    """The scrape URL for a tracker (BEP 48), or None when its announce URL does not follow the
    convention: the text after the *last* '/' of the whole URL must start with 'announce', which
    becomes 'scrape'. No `info_hashes` asks for a full scrape."""
    base = _check_http_url(announce_url)
    slash = base.rfind("/")
    if slash < 0 or not base.startswith("announce", slash + 1):
        return None
    scrape = base[: slash + 1] + "scrape" + base[slash + 1 + len("announce") :]
    params = []
    for info_hash in info_hashes:
        if len(info_hash) != _HASH_LEN:
            raise ValueError(f"info_hash is {len(info_hash)} bytes, not 20")
        params.append(("info_hash", percent_encode(info_hash)))
    return _append_query(scrape, params)


def http_request_bytes(url: str, *, user_agent: str = DEFAULT_USER_AGENT) -> tuple[str, int, bytes]:
    """(host, port, request) for a GET of `url`: the transport connects to host:port (over TLS
    when the URL is https) and writes the request. The URL's path and query are sent as given
    (they are already percent-encoded); a fragment and any user:password are dropped."""
    url = _check_http_url(url)
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise TrackerError(f"unusable tracker URL {url!r}: {exc}") from None
    if not host:
        raise TrackerError(f"tracker URL {url!r} has no host")
    default_port = 443 if parts.scheme == "https" else 80
    if port is None:
        port = default_port
    if port == 0:
        raise TrackerError(f"tracker URL {url!r} has port 0")
    host_text = f"[{host}]" if ":" in host else host
    host_header = host_text if port == default_port else f"{host_text}:{port}"
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    if not _USER_AGENT_RE.fullmatch(user_agent):
        raise ValueError("user agent must be printable ASCII")
    request = (
        f"GET {target} HTTP/1.1\r\n"
        f"Host: {host_header}\r\n"
        f"User-Agent: {user_agent}\r\n"
        "Accept-Encoding: identity\r\n"  # no gzip: the parser does not inflate
        "Connection: close\r\n"
        "\r\n"
    )
    return host, port, request.encode("ascii")


def _check_http_url(url: str) -> str:
    """A tracker URL comes from a torrent or magnet link, i.e. from strangers: it must be an
    http(s) URL of printable ASCII with no spaces (which also rules out CR/LF header injection)."""
    if len(url) > _MAX_URL_LEN or not _URL_SAFE_RE.fullmatch(url):
        raise TrackerError(f"unusable tracker URL {url[:200]!r}")
    scheme = url.split(":", 1)[0].lower()
    if scheme not in ("http", "https") or not url[len(scheme) :].startswith("://"):
        raise TrackerError(f"not an http(s) tracker URL: {url[:200]!r}")
    return url.split("#", 1)[0]


def _append_query(url: str, params: list[tuple[str, str]]) -> str:
    if not params:
        return url
    query = "&".join(f"{name}={value}" for name, value in params)
    if "?" not in url:
        return f"{url}?{query}"
    if url.endswith(("?", "&")):
        return url + query
    return f"{url}&{query}"


# --- bencoded bodies ----------------------------------------------------------------------------


def parse_announce_response(
    body: bytes, *, max_peers: int = MAX_PEERS
) -> AnnounceResponse | TrackerFailure:
    """Decode an announce reply body; raise `TrackerError`/`PeerAddressError` if it is malformed."""
    root = _decode_dict(body)
    failure = _failure(root)
    if failure is not None:
        return failure
    interval = _required_uint(root, b"interval")
    peers: list[PeerAddress] = []
    peers6: list[PeerAddress] = []
    peer_ids: list[tuple[PeerAddress, bytes]] = []
    skipped = 0
    raw_peers = root.get(b"peers", b"")
    if isinstance(raw_peers, bytes):
        peers.extend(decode_compact_ipv4(raw_peers, max_peers=max_peers))  # BEP 23
    else:
        dict_peers = decode_peer_dicts(raw_peers, max_peers=max_peers)  # BEP 3
        skipped = dict_peers.skipped
        for entry in dict_peers.peers:
            (peers6 if entry.address.family == 6 else peers).append(entry.address)
            if entry.peer_id is not None:
                peer_ids.append((entry.address, entry.peer_id))
    raw_peers6 = root.get(b"peers6", b"")
    if not isinstance(raw_peers6, bytes):
        raise TrackerError("'peers6' is not a byte string")
    peers6.extend(decode_compact_ipv6(raw_peers6, max_peers=max_peers))  # BEP 7
    return AnnounceResponse(
        interval=interval,
        min_interval=_uint(root, b"min interval"),
        complete=_uint(root, b"complete"),
        incomplete=_uint(root, b"incomplete"),
        peers=tuple(peers),
        peers6=tuple(peers6),
        tracker_id=_bytes(root, b"tracker id"),
        warning=_text(root, b"warning message"),
        peer_ids=tuple(peer_ids),
        skipped_peers=skipped,
        external_ip=_external_ip(root),
    )


def parse_scrape_response(
    body: bytes, *, max_files: int = MAX_SCRAPE_FILES
) -> dict[bytes, ScrapeStats] | TrackerFailure:
    """Decode a scrape reply body (BEP 48): infohash -> counts, or the tracker's refusal."""
    root = _decode_dict(body)
    failure = _failure(root)
    if failure is not None:
        return failure
    files = root.get(b"files", {})
    if not isinstance(files, dict):
        raise TrackerError("'files' is not a dictionary")
    if len(files) > max_files:
        raise TrackerError(f"{len(files)} torrents is more than the {max_files}-torrent limit")
    stats: dict[bytes, ScrapeStats] = {}
    for info_hash, entry in files.items():
        if len(info_hash) != _HASH_LEN:
            raise TrackerError(f"scrape key is {len(info_hash)} bytes, not a 20-byte infohash")
        if not isinstance(entry, dict):
            raise TrackerError(f"scrape entry for {info_hash.hex()} is not a dictionary")
        stats[info_hash] = ScrapeStats(
            complete=_required_uint(entry, b"complete"),
            downloaded=_required_uint(entry, b"downloaded"),
            incomplete=_required_uint(entry, b"incomplete"),
        )
    return stats


def _decode_dict(body: bytes) -> dict[bytes, object]:
    if len(body) > MAX_BODY_BYTES:
        raise TrackerError(f"{len(body)}-byte body is larger than the {MAX_BODY_BYTES}-byte limit")
    try:
        root = bdecode(bytes(body))
    except Exception as exc:  # fastbencode raises ValueError and others; a total decoder leaks none
        raise TrackerError(f"not valid canonical bencode: {exc}") from None
    if not isinstance(root, dict):
        raise TrackerError("reply is not a bencoded dictionary")
    return root


def _failure(root: dict[bytes, object]) -> TrackerFailure | None:
    if b"failure reason" not in root:
        return None
    reason = _text(root, b"failure reason")
    return TrackerFailure(reason if reason is not None else "")


def _required_uint(root: dict[bytes, object], key: bytes) -> int:
    value = _uint(root, key)
    if value is None:
        raise TrackerError(f"{key.decode()!r} is missing")
    return value


def _uint(root: dict[bytes, object], key: bytes) -> int | None:
    value = root.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or not 0 <= value <= _UINT32_MAX:
        raise TrackerError(f"{key.decode()!r} is not an integer in 0..2^32-1")
    return value


def _bytes(root: dict[bytes, object], key: bytes) -> bytes | None:
    value = root.get(key)
    if value is None:
        return None
    if not isinstance(value, bytes):
        raise TrackerError(f"{key.decode()!r} is not a byte string")
    return value


def _text(root: dict[bytes, object], key: bytes) -> str | None:
    value = _bytes(root, key)
    return None if value is None else value.decode("utf-8", errors="replace")


def _external_ip(root: dict[bytes, object]) -> str | None:
    value = root.get(b"external ip")  # BEP 24: 4 or 16 raw bytes
    if isinstance(value, bytes) and len(value) in (4, 16):
        return str(ipaddress.ip_address(value))
    return None  # absent or malformed: it is advisory, so a bad one is ignored


# --- HTTP/1.1 response reader -------------------------------------------------------------------


class _Phase(Enum):
    HEAD = "head"  # reading the status line and headers
    BODY_LENGTH = "body-length"  # Content-Length body
    BODY_CLOSE = "body-close"  # body delimited by the connection closing
    CHUNK_SIZE = "chunk-size"  # RFC 9112 7.1: chunk-size line
    CHUNK_DATA = "chunk-data"
    CHUNK_DATA_END = "chunk-data-end"  # the CRLF after a chunk's data
    TRAILERS = "trailers"  # after the last (0) chunk
    DONE = "done"


class HttpResponseParser:
    """Reads one HTTP/1.1 response from bytes fed in any split (even one byte at a time).

    `feed` returns the `HttpResponse` once it is complete (and None before); `feed_eof` tells the
    parser the connection closed, which completes a close-delimited body and is an error anywhere
    else. Bodies are framed by Content-Length, chunked transfer coding (RFC 9112 7.1) or the
    connection closing (RFC 9112 6.3); 1xx interim responses are skipped. Bytes after the
    response are ignored (we always send Connection: close).
    """

    def __init__(
        self, *, max_header_bytes: int = MAX_HEADER_BYTES, max_body_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self._max_header = max_header_bytes
        self._max_body = max_body_bytes
        self._buf = bytearray()
        self._scan_from = 0  # where to resume looking for the end of a line / header block
        self._phase = _Phase.HEAD
        self._status = 0
        self._reason = ""
        self._headers: tuple[tuple[str, str], ...] = ()
        self._body = bytearray()
        self._remaining = 0  # bytes left in a Content-Length body or the current chunk
        self._trailer_bytes = 0
        self._response: HttpResponse | None = None
        self._error: TrackerError | None = None  # once broken, every later call raises it again

    @property
    def done(self) -> bool:
        return self._phase is _Phase.DONE

    def feed(self, data: bytes) -> HttpResponse | None:
        if self._error is not None:
            raise self._error
        if self._phase is _Phase.DONE:
            return self._response
        self._buf += data
        try:
            while self._step():
                pass
        except TrackerError as exc:
            self._error = exc
            raise
        return self._response

    def feed_eof(self) -> HttpResponse:
        """The peer closed the connection: return the response, or raise if it is incomplete."""
        if self._error is not None:
            raise self._error
        if self._phase is _Phase.BODY_CLOSE:
            self._finish()
        if self._response is None:
            raise TrackerError(
                f"connection closed before the response was complete ({self._phase.value})"
            )
        return self._response

    # One step of the state machine; True if it made progress and should run again.
    def _step(self) -> bool:
        phase = self._phase
        if phase is _Phase.HEAD:
            return self._read_head()
        if phase is _Phase.BODY_LENGTH:
            take = min(self._remaining, len(self._buf))
            self._take_body(take)
            self._remaining -= take
            if self._remaining == 0:
                self._finish()
            return False
        if phase is _Phase.BODY_CLOSE:
            self._take_body(len(self._buf))
            return False
        if phase is _Phase.CHUNK_SIZE:
            return self._read_chunk_size()
        if phase is _Phase.CHUNK_DATA:
            take = min(self._remaining, len(self._buf))
            self._take_body(take)
            self._remaining -= take
            if self._remaining == 0:
                self._phase = _Phase.CHUNK_DATA_END
                return True
            return False
        if phase is _Phase.CHUNK_DATA_END:
            line = self._line(_MAX_CHUNK_LINE)
            if line is None:
                return False
            if line:
                raise TrackerError("chunk data is not followed by CRLF")
            self._phase = _Phase.CHUNK_SIZE
            return True
        if phase is _Phase.TRAILERS:
            return self._read_trailer()
        return False  # DONE

    def _take_body(self, n: int) -> None:
        if len(self._body) + n > self._max_body:
            raise TrackerError(f"body is larger than the {self._max_body}-byte limit")
        self._body += self._buf[:n]
        del self._buf[:n]

    def _line(self, limit: int) -> bytes | None:
        """Pop one line (LF, optionally preceded by CR) off the buffer, or None if not complete."""
        end = self._buf.find(b"\n", self._scan_from)
        if end < 0:
            self._scan_from = len(self._buf)
            if len(self._buf) > limit:
                raise TrackerError(f"line longer than {limit} bytes")
            return None
        if end > limit:
            raise TrackerError(f"line longer than {limit} bytes")
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        self._scan_from = 0
        return line[:-1] if line.endswith(b"\r") else line

    def _read_head(self) -> bool:
        # Find the blank line ending the header block; resume the search where the last one ended.
        start = max(0, self._scan_from - 3)
        match = _HEAD_END_RE.search(self._buf, start)
        if match is None:
            self._scan_from = len(self._buf)
            if len(self._buf) > self._max_header:
                raise TrackerError(f"header block is larger than the {self._max_header}-byte limit")
            return False
        if match.end() > self._max_header:
            raise TrackerError(f"header block is larger than the {self._max_header}-byte limit")
        head = bytes(self._buf[: match.start()])
        del self._buf[: match.end()]
        self._scan_from = 0
        lines = head.replace(b"\r\n", b"\n").split(b"\n")
        status_match = _STATUS_RE.fullmatch(lines[0])
        if status_match is None:
            raise TrackerError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
        status = int(status_match.group(1))
        headers = tuple(_header(line) for line in lines[1:])
        if 100 <= status < 200:
            return True  # interim response (e.g. 100 Continue): the real one follows
        self._status = status
        self._reason = (status_match.group(2) or b"").decode("latin-1")
        self._headers = headers
        self._choose_framing(status, headers)
        return True

    def _choose_framing(self, status: int, headers: tuple[tuple[str, str], ...]) -> None:
        # RFC 9112 6.3: no body for 204/304; Transfer-Encoding beats Content-Length; otherwise
        # Content-Length; otherwise the body runs to the end of the connection.
        if status in (204, 304):
            self._finish()
            return
        codings = [
            c.strip().lower()
            for name, value in headers
            if name == "transfer-encoding"
            for c in value.split(",")
            if c.strip()
        ]
        if codings:
            if codings[-1] == "chunked":
                if len(codings) > 1:
                    raise TrackerError(f"unsupported transfer coding {', '.join(codings)}")
                self._phase = _Phase.CHUNK_SIZE
            else:
                self._phase = _Phase.BODY_CLOSE
            return
        lengths = {
            v.strip()
            for name, value in headers
            if name == "content-length"
            for v in value.split(",")
        }
        if not lengths:
            self._phase = _Phase.BODY_CLOSE
            return
        if len(lengths) != 1:
            raise TrackerError(f"conflicting Content-Length values {sorted(lengths)}")
        text = lengths.pop()
        if not _DIGITS_RE.fullmatch(text):
            raise TrackerError(f"bad Content-Length {text[:40]!r}")
        length = int(text)
        if length > self._max_body:
            raise TrackerError(
                f"Content-Length {length} is larger than the {self._max_body}-byte limit"
            )
        self._remaining = length
        if length == 0:
            self._finish()
        else:
            self._phase = _Phase.BODY_LENGTH

    def _read_chunk_size(self) -> bool:
        line = self._line(_MAX_CHUNK_LINE)
        if line is None:
            return False
        size_text = line.split(b";", 1)[0].strip()  # chunk extensions are ignored
        if not _HEX_RE.fullmatch(size_text):
            raise TrackerError(f"bad chunk size line {line[:40]!r}")
        size = int(size_text, 16)
        if size == 0:
            self._phase = _Phase.TRAILERS
            return True
        if len(self._body) + size > self._max_body:
            raise TrackerError(f"body is larger than the {self._max_body}-byte limit")
        self._remaining = size
        self._phase = _Phase.CHUNK_DATA
        return True

    def _read_trailer(self) -> bool:
        line = self._line(self._max_header)
        if line is None:
            return False
        self._trailer_bytes += len(line) + 2
        if self._trailer_bytes > self._max_header:
            raise TrackerError(f"trailers are larger than the {self._max_header}-byte limit")
        if not line:
            self._finish()
            return False
        _header(line)  # validated, then dropped: nothing a tracker says there matters to us
        return True

    def _finish(self) -> None:
        self._phase = _Phase.DONE
        self._response = HttpResponse(self._status, self._reason, self._headers, bytes(self._body))
        self._buf.clear()


def _header(line: bytes) -> tuple[str, str]:
    name, sep, value = line.partition(b":")
    text_name = name.decode("latin-1")
    if not sep or not _TOKEN_RE.fullmatch(text_name):
        # Also rejects obsolete line folding (RFC 9112 5.2), which a tracker has no reason to use.
        raise TrackerError(f"malformed header line {line[:80]!r}")
    return text_name.lower(), value.strip(b" \t").decode("latin-1")
