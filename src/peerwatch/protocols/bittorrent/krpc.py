"""KRPC message codec for the BitTorrent DHT (BEP 5), with BEP 32, 42, 43 and 51 fields.

Pure and total: `decode` takes one UDP payload and returns one frozen message, and on anything
that is not a valid KRPC message it raises `KrpcError` (never anything else), carrying the
transaction id when one could be read so a node can answer with a 203 error (BEP 5 "Errors").
`encode` turns a message back into bytes; it raises `ValueError` for a message *we* built wrong
(a programming error, not a peer's fault).

Hostile input is bounded before anything is built: the datagram size is capped (a UDP payload
on a 1500-byte MTU path), and every string the protocol gives a fixed or small size (ids, tokens,
transaction ids, compact entries) is checked against it.

Message shapes (BEP 5 "KRPC Protocol"): a dictionary with ``t`` (transaction id), ``y`` (``q``,
``r`` or ``e``), and for a query ``q`` (method) and ``a`` (arguments), for a response ``r``, for an
error ``e`` = ``[code, message]``. Optional top-level keys: ``v`` (client version, BEP 5),
``ip`` (the requester's compact address as the responder sees it, BEP 42) and ``ro`` (the
querying node is read-only, BEP 43).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import struct
from dataclasses import dataclass

from peerwatch.errors import ProtocolError
from peerwatch.protocols.bittorrent.bencode import bdecode, bencode

#: Largest datagram decoded or encoded: one UDP payload on a 1500-byte MTU path, rounded up.
MAX_DATAGRAM_SIZE = 1500
#: Longest transaction id accepted (BEP 5: "typically 2 characters"; clients use 2 to 8).
MAX_TRANSACTION_ID = 32
#: Longest token accepted (BEP 5 tokens are short opaque strings; clients use 4 to 20 bytes).
MAX_TOKEN = 64
#: Longest client version string ``v`` accepted (BEP 5: "two letter client identifier" + version).
MAX_VERSION = 32
#: Most entries in a BEP 32 ``want`` list (only ``n4`` and ``n6`` are defined).
MAX_WANT = 8
#: Most compact peers in ``values``; the datagram cap bounds it anyway (1500 / 8 bytes each).
MAX_VALUES = 200

NODE_ID_LEN = 20  # BEP 5: node ids and infohashes are 160-bit
COMPACT_NODE_V4 = 26  # BEP 5: 20-byte id + 4-byte IP + 2-byte port
COMPACT_NODE_V6 = 38  # BEP 32: 20-byte id + 16-byte IP + 2-byte port
COMPACT_PEER_V4 = 6  # BEP 5 "Compact IP-address/port info"
COMPACT_PEER_V6 = 18  # BEP 32

# BEP 5 "Errors": the four defined codes.
ERROR_GENERIC = 201
ERROR_SERVER = 202
ERROR_PROTOCOL = 203  # malformed packet, invalid arguments, or bad token
ERROR_METHOD_UNKNOWN = 204

Peer = tuple[str, int]


class KrpcError(ProtocolError):
    """The bytes are not a valid KRPC message.

    `transaction_id` is set when the message was a readable dictionary with a ``t`` string, so a
    node can still answer a broken query with error 203 (BEP 5); `field` names the offending key.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        transaction_id: bytes | None = None,
        is_query: bool = False,
    ) -> None:
        self.field = field
        self.reason = message
        self.transaction_id = transaction_id
        self.is_query = is_query
        super().__init__(f"{field}: {message}" if field else message)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A DHT node's contact: its 20-byte id and UDP address (BEP 5 "Compact node info")."""

    node_id: bytes
    ip: str
    port: int

    @property
    def addr(self) -> Peer:
        return (self.ip, self.port)


# --- queries (BEP 5 "DHT Queries", BEP 51) -------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    t: bytes
    node_id: bytes
    read_only: bool = False  # BEP 43 top-level 'ro'
    version: bytes | None = None  # BEP 5 top-level 'v'


@dataclass(frozen=True, slots=True, kw_only=True)
class FindNode:
    t: bytes
    node_id: bytes
    target: bytes
    want: tuple[bytes, ...] = ()  # BEP 32: b"n4" and/or b"n6"
    read_only: bool = False
    version: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GetPeers:
    t: bytes
    node_id: bytes
    info_hash: bytes
    want: tuple[bytes, ...] = ()
    read_only: bool = False
    version: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AnnouncePeer:
    t: bytes
    node_id: bytes
    info_hash: bytes
    port: int
    token: bytes
    implied_port: bool = False  # BEP 5: use the UDP source port instead of `port`
    read_only: bool = False
    version: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SampleInfohashes:
    """BEP 51 ``sample_infohashes``: a random sample of the infohashes a node stores."""

    t: bytes
    node_id: bytes
    target: bytes
    want: tuple[bytes, ...] = ()
    read_only: bool = False
    version: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class UnknownQuery:
    """A query whose method we do not implement; a node answers it with error 204 (BEP 5)."""

    t: bytes
    method: bytes
    node_id: bytes | None = None
    read_only: bool = False
    version: bytes | None = None


# --- responses and errors ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """Any response: KRPC responses do not name their method, the transaction id does.

    Empty tuples mean the key was absent (or empty); `samples`, `interval` and `num` are None
    unless the key was present (BEP 51).
    """

    t: bytes
    node_id: bytes
    nodes: tuple[NodeInfo, ...] = ()  # BEP 5 compact IPv4 node info
    nodes6: tuple[NodeInfo, ...] = ()  # BEP 32 compact IPv6 node info
    values: tuple[Peer, ...] = ()  # BEP 5 compact peers (claims, not proof)
    token: bytes | None = None
    samples: tuple[bytes, ...] | None = None  # BEP 51
    interval: int | None = None  # BEP 51: seconds before the node should be sampled again
    num: int | None = None  # BEP 51: how many infohashes the node stores
    requester: Peer | None = None  # BEP 42 top-level 'ip': how the responder sees us
    version: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorMessage:
    """A KRPC error (BEP 5): ``e`` = [code, message]; 201-204 are defined."""

    t: bytes
    code: int
    message: str
    version: bytes | None = None


Query = Ping | FindNode | GetPeers | AnnouncePeer | SampleInfohashes | UnknownQuery
KrpcMessage = Query | Response | ErrorMessage

_METHODS: dict[type[object], bytes] = {
    Ping: b"ping",
    FindNode: b"find_node",
    GetPeers: b"get_peers",
    AnnouncePeer: b"announce_peer",
    SampleInfohashes: b"sample_infohashes",
}


def method_name(msg: Query) -> str:
    """The query's BEP 5 method name, e.g. "get_peers"."""
    raw = msg.method if isinstance(msg, UnknownQuery) else _METHODS[type(msg)]
    return raw.decode("ascii", errors="replace")


# --- compact formats ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def pack_ip(ip: str) -> bytes:
    """4 or 16 bytes in network order; ValueError for a string that is not an IP address.

    Cached: a node packs the same few thousand addresses (its routing table) again and again,
    and parsing them was a fifth of the time spent answering a query (docs/benchmarks.md)."""
    return ipaddress.ip_address(ip).packed


# C-level helpers for the compact formats: decoding the nodes of a reply one slice and one
# f-string at a time was the largest part of `decode` (docs/benchmarks.md). `inet_ntoa` is a pure
# function (no socket is opened) and gives the same dotted quad as `ipaddress`; IPv6 text still
# comes from `ipaddress` (RFC 5952 form, the same on every platform).
_ntoa = socket.inet_ntoa
_NODE_V4 = struct.Struct("!20s4sH")  # BEP 5 compact node info
_NODE_V6 = struct.Struct("!20s16sH")  # BEP 32 compact node info
_PEER_V4 = struct.Struct("!4sH")  # BEP 5 compact peer info


def unpack_ip(raw: bytes) -> str:
    if len(raw) == 4:
        return _ntoa(raw)
    return str(ipaddress.IPv6Address(raw))


def pack_peer(peer: Peer) -> bytes:
    """BEP 5 compact peer info: IP then port, both in network byte order (6 or 18 bytes)."""
    ip, port = peer
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} out of range")
    return pack_ip(ip) + port.to_bytes(2, "big")


def unpack_peer(raw: bytes) -> Peer:
    if len(raw) == COMPACT_PEER_V4:
        ip, port = _PEER_V4.unpack(raw)
        return (_ntoa(ip), port)
    return (unpack_ip(raw[:-2]), int.from_bytes(raw[-2:], "big"))


def pack_nodes(nodes: tuple[NodeInfo, ...], *, ipv6: bool) -> bytes:
    size = 16 if ipv6 else 4
    pack = (_NODE_V6 if ipv6 else _NODE_V4).pack
    parts: list[bytes] = []
    for n in nodes:
        node_id, port = n.node_id, n.port
        if len(node_id) != NODE_ID_LEN:
            raise ValueError(f"node_id must be {NODE_ID_LEN} bytes, not {len(node_id)}")
        ip = pack_ip(n.ip)
        if len(ip) != size:
            raise ValueError(f"{n.ip} does not belong in {'nodes6' if ipv6 else 'nodes'}")
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port {port} out of range")
        parts.append(pack(node_id, ip, port))
    return b"".join(parts)


def unpack_nodes(raw: bytes, *, ipv6: bool, field: str = "r.nodes") -> tuple[NodeInfo, ...]:
    step = COMPACT_NODE_V6 if ipv6 else COMPACT_NODE_V4
    if len(raw) % step:
        raise KrpcError(f"length {len(raw)} is not a multiple of {step}", field=field)
    if ipv6:
        return tuple(
            [NodeInfo(i, str(ipaddress.IPv6Address(a)), p) for i, a, p in _NODE_V6.iter_unpack(raw)]
        )
    ntoa = _ntoa
    return tuple([NodeInfo(i, ntoa(a), p) for i, a, p in _NODE_V4.iter_unpack(raw)])


def _check_id(value: bytes, name: str) -> None:
    if len(value) != NODE_ID_LEN:
        raise ValueError(f"{name} must be {NODE_ID_LEN} bytes, not {len(value)}")


# --- encoding -----------------------------------------------------------------------------------


def encode(msg: KrpcMessage) -> bytes:
    """Bencode one message; ValueError if the message is ill-formed or over `MAX_DATAGRAM_SIZE`."""
    top: dict[bytes, object] = {b"t": msg.t}
    if msg.version is not None:
        top[b"v"] = msg.version
    if isinstance(msg, Response):
        _check_id(msg.node_id, "node_id")
        r: dict[bytes, object] = {b"id": msg.node_id}
        if msg.nodes:
            r[b"nodes"] = pack_nodes(msg.nodes, ipv6=False)
        if msg.nodes6:
            r[b"nodes6"] = pack_nodes(msg.nodes6, ipv6=True)
        if msg.values:
            r[b"values"] = [pack_peer(p) for p in msg.values]
        if msg.token is not None:
            r[b"token"] = msg.token
        if msg.samples is not None:
            for s in msg.samples:
                _check_id(s, "sample")
            r[b"samples"] = b"".join(msg.samples)
        if msg.interval is not None:
            r[b"interval"] = msg.interval
        if msg.num is not None:
            r[b"num"] = msg.num
        top[b"y"] = b"r"
        top[b"r"] = r
        if msg.requester is not None:
            top[b"ip"] = pack_peer(msg.requester)
    elif isinstance(msg, ErrorMessage):
        top[b"y"] = b"e"
        top[b"e"] = [msg.code, msg.message.encode("utf-8")]
    else:
        top[b"y"] = b"q"
        top[b"a"] = _query_args(msg)
        top[b"q"] = msg.method if isinstance(msg, UnknownQuery) else _METHODS[type(msg)]
        if msg.read_only:
            top[b"ro"] = 1
    data = bencode(top)
    if len(data) > MAX_DATAGRAM_SIZE:
        raise ValueError(f"encoded message is {len(data)} bytes, over {MAX_DATAGRAM_SIZE}")
    return data


def query_template(msg: Query) -> tuple[bytes, bytes]:
    """`(head, tail)` such that ``head + b"1:t" + b"%d:" % len(t) + t + tail`` is `encode` of
    `msg` with transaction id `t`, for any `t`: a node sends the same query to many nodes with
    only the id changing, and building and bencoding the message each time was a tenth of the
    time spent on a response (docs/benchmarks.md). Bencoded keys are sorted, so the keys before
    ``t`` (``a``, ``q``, ``ro``) make the head and those after it (``v``, ``y``) the tail."""
    data = encode(msg)  # validates the message once
    before: dict[bytes, object] = {b"a": _query_args(msg)}
    before[b"q"] = msg.method if isinstance(msg, UnknownQuery) else _METHODS[type(msg)]
    if msg.read_only:
        before[b"ro"] = 1
    after: dict[bytes, object] = {b"y": b"q"}
    if msg.version is not None:
        after[b"v"] = msg.version
    head, tail = bencode(before)[:-1], bencode(after)[1:]
    t = b"%d:" % len(msg.t) + msg.t
    if head + b"1:t" + t + tail != data:  # pragma: no cover - a bug here, not the peer's
        raise AssertionError("query template does not reproduce encode()")
    return head, tail


def _query_args(msg: Query) -> dict[bytes, object]:
    a: dict[bytes, object] = {}
    if msg.node_id is not None:
        _check_id(msg.node_id, "node_id")
        a[b"id"] = msg.node_id
    if isinstance(msg, FindNode | SampleInfohashes):
        _check_id(msg.target, "target")
        a[b"target"] = msg.target
    elif isinstance(msg, GetPeers | AnnouncePeer):
        _check_id(msg.info_hash, "info_hash")
        a[b"info_hash"] = msg.info_hash
    if isinstance(msg, FindNode | GetPeers | SampleInfohashes) and msg.want:
        a[b"want"] = list(msg.want)
    if isinstance(msg, AnnouncePeer):
        if not 0 <= msg.port <= 0xFFFF:
            raise ValueError(f"port {msg.port} out of range")
        a[b"port"] = msg.port
        a[b"token"] = msg.token
        if msg.implied_port:
            a[b"implied_port"] = 1
    return a


# --- decoding -----------------------------------------------------------------------------------

_Dict = dict[bytes, object]


def decode(data: bytes) -> KrpcMessage:
    """Decode one datagram; raise `KrpcError` (and nothing else) if it is not valid KRPC."""
    if len(data) > MAX_DATAGRAM_SIZE:
        raise KrpcError(f"{len(data)} bytes is larger than the {MAX_DATAGRAM_SIZE}-byte limit")
    try:
        top = bdecode(bytes(data))
    except Exception as exc:  # the Rust decoder raises ValueError; a total decoder leaks nothing
        raise KrpcError(f"not valid canonical bencode: {exc}") from None
    if not isinstance(top, dict):
        raise KrpcError("top level is not a dictionary")
    t = top.get(b"t")
    if not isinstance(t, bytes):
        raise KrpcError("missing or not a string", field="t")
    y = top.get(b"y")
    try:
        if len(t) > MAX_TRANSACTION_ID:
            raise KrpcError(f"longer than {MAX_TRANSACTION_ID} bytes", field="t")
        version = _opt_bytes(top, b"v", "v", MAX_VERSION)
        if y == b"q":
            return _decode_query(top, t, version)
        if y == b"r":
            return _decode_response(top, t, version)
        if y == b"e":
            return _decode_error(top, t, version)
        raise KrpcError("not one of 'q', 'r', 'e'", field="y")
    except KrpcError as exc:
        if exc.transaction_id is None:
            exc.transaction_id = t
            exc.is_query = y == b"q"
        raise


def _opt_bytes(d: _Dict, key: bytes, field: str, max_len: int) -> bytes | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, bytes):
        raise KrpcError("not a string", field=field)
    if len(v) > max_len:
        raise KrpcError(f"longer than {max_len} bytes", field=field)
    return v


def _id(d: _Dict, key: bytes, field: str) -> bytes:
    v = d.get(key)
    if not isinstance(v, bytes):
        raise KrpcError("missing or not a string", field=field)
    if len(v) != NODE_ID_LEN:
        raise KrpcError(f"{len(v)} bytes, not {NODE_ID_LEN}", field=field)
    return v


def _int(d: _Dict, key: bytes, field: str, lo: int, hi: int) -> int | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, int):
        raise KrpcError("not an integer", field=field)
    if not lo <= v <= hi:
        raise KrpcError(f"{v} is outside {lo}..{hi}", field=field)
    return v


def _want(a: _Dict) -> tuple[bytes, ...]:
    v = a.get(b"want")
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(w, bytes) for w in v):
        raise KrpcError("not a list of strings", field="a.want")
    if len(v) > MAX_WANT:
        raise KrpcError(f"more than {MAX_WANT} entries", field="a.want")
    return tuple(w for w in v if isinstance(w, bytes))


def _decode_query(top: _Dict, t: bytes, version: bytes | None) -> Query:
    method = top.get(b"q")
    if not isinstance(method, bytes):
        raise KrpcError("missing or not a string", field="q")
    a = top.get(b"a")
    if not isinstance(a, dict):
        raise KrpcError("missing or not a dictionary", field="a")
    ro = _int(top, b"ro", "ro", 0, 1) == 1
    if method == b"ping":
        return Ping(t=t, node_id=_id(a, b"id", "a.id"), read_only=ro, version=version)
    if method == b"find_node":
        return FindNode(
            t=t,
            node_id=_id(a, b"id", "a.id"),
            target=_id(a, b"target", "a.target"),
            want=_want(a),
            read_only=ro,
            version=version,
        )
    if method == b"get_peers":
        return GetPeers(
            t=t,
            node_id=_id(a, b"id", "a.id"),
            info_hash=_id(a, b"info_hash", "a.info_hash"),
            want=_want(a),
            read_only=ro,
            version=version,
        )
    if method == b"announce_peer":
        implied = _int(a, b"implied_port", "a.implied_port", 0, 1) == 1
        port = _int(a, b"port", "a.port", 0, 0xFFFF)
        if port is None:
            if not implied:
                raise KrpcError("missing", field="a.port")
            port = 0
        token = _opt_bytes(a, b"token", "a.token", MAX_TOKEN)
        if token is None:
            raise KrpcError("missing", field="a.token")
        return AnnouncePeer(
            t=t,
            node_id=_id(a, b"id", "a.id"),
            info_hash=_id(a, b"info_hash", "a.info_hash"),
            port=port,
            token=token,
            implied_port=implied,
            read_only=ro,
            version=version,
        )
    if method == b"sample_infohashes":
        return SampleInfohashes(
            t=t,
            node_id=_id(a, b"id", "a.id"),
            target=_id(a, b"target", "a.target"),
            want=_want(a),
            read_only=ro,
            version=version,
        )
    if len(method) > 64:
        raise KrpcError("longer than 64 bytes", field="q")
    node_id = _id(a, b"id", "a.id") if b"id" in a else None
    return UnknownQuery(t=t, method=method, node_id=node_id, read_only=ro, version=version)


def _decode_response(top: _Dict, t: bytes, version: bytes | None) -> Response:
    r = top.get(b"r")
    if not isinstance(r, dict):
        raise KrpcError("missing or not a dictionary", field="r")
    nodes = _opt_bytes(r, b"nodes", "r.nodes", MAX_DATAGRAM_SIZE)
    nodes6 = _opt_bytes(r, b"nodes6", "r.nodes6", MAX_DATAGRAM_SIZE)
    samples_raw = _opt_bytes(r, b"samples", "r.samples", MAX_DATAGRAM_SIZE)
    samples: tuple[bytes, ...] | None = None
    if samples_raw is not None:
        if len(samples_raw) % NODE_ID_LEN:
            raise KrpcError(f"length {len(samples_raw)} is not a multiple of 20", field="r.samples")
        samples = tuple(samples_raw[i : i + 20] for i in range(0, len(samples_raw), 20))
    requester: Peer | None = None
    ip_raw = top.get(b"ip")
    if ip_raw is not None:
        if not isinstance(ip_raw, bytes) or len(ip_raw) not in (COMPACT_PEER_V4, COMPACT_PEER_V6):
            raise KrpcError("not a 6- or 18-byte compact address", field="ip")
        requester = unpack_peer(ip_raw)
    return Response(
        t=t,
        node_id=_id(r, b"id", "r.id"),
        nodes=() if nodes is None else unpack_nodes(nodes, ipv6=False, field="r.nodes"),
        nodes6=() if nodes6 is None else unpack_nodes(nodes6, ipv6=True, field="r.nodes6"),
        values=_values(r),
        token=_opt_bytes(r, b"token", "r.token", MAX_TOKEN),
        samples=samples,
        interval=_int(r, b"interval", "r.interval", 0, 2**31 - 1),
        num=_int(r, b"num", "r.num", 0, 2**63 - 1),
        requester=requester,
        version=version,
    )


def _values(r: _Dict) -> tuple[Peer, ...]:
    v = r.get(b"values")
    if v is None:
        return ()
    if not isinstance(v, list):
        raise KrpcError("not a list", field="r.values")
    if len(v) > MAX_VALUES:
        raise KrpcError(f"more than {MAX_VALUES} peers", field="r.values")
    peers: list[Peer] = []
    unpack, ntoa = _PEER_V4.unpack, _ntoa
    for i, raw in enumerate(v):
        if isinstance(raw, bytes):
            n = len(raw)
            if n == COMPACT_PEER_V4:  # the common case, inlined: this loop is hot
                ip, port = unpack(raw)
                peers.append((ntoa(ip), port))
                continue
            if n == COMPACT_PEER_V6:  # BEP 32: 18-byte compact peers in the same list
                peers.append(unpack_peer(raw))
                continue
        raise KrpcError("not a 6- or 18-byte compact peer", field=f"r.values[{i}]")
    return tuple(peers)


def _decode_error(top: _Dict, t: bytes, version: bytes | None) -> ErrorMessage:
    e = top.get(b"e")
    if not isinstance(e, list) or len(e) != 2:
        raise KrpcError("not a [code, message] list", field="e")
    code, message = e
    if not isinstance(code, int) or not isinstance(message, bytes):
        raise KrpcError("not a [code, message] list", field="e")
    if not -(2**31) <= code < 2**31:
        raise KrpcError(f"code {code} out of range", field="e")
    return ErrorMessage(
        t=t, code=code, message=message.decode("utf-8", errors="replace"), version=version
    )
