"""KRPC codec: golden bytes from BEP 5, BEP 32/42/43/51 fields, round trips, and fuzzing."""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.protocols.bittorrent.bencode import bencode
from peerwatch.protocols.bittorrent.krpc import (
    MAX_DATAGRAM_SIZE,
    AnnouncePeer,
    ErrorMessage,
    FindNode,
    GetPeers,
    KrpcError,
    KrpcMessage,
    NodeInfo,
    Ping,
    Query,
    Response,
    SampleInfohashes,
    UnknownQuery,
    decode,
    encode,
    method_name,
    query_template,
)

CORPUS = Path(__file__).parent / "fuzz_corpus" / "krpc"

ID_A = b"abcdefghij0123456789"
ID_M = b"mnopqrstuvwxyz123456"

# --- golden bytes: the examples of BEP 5 "KRPC Protocol" / "DHT Queries" -------------------------

GOLDEN: list[tuple[bytes, KrpcMessage]] = [
    (
        b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe",
        Ping(t=b"aa", node_id=ID_A),
    ),
    (
        b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re",
        Response(t=b"aa", node_id=ID_M),
    ),
    (
        b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456e"
        b"1:q9:find_node1:t2:aa1:y1:qe",
        FindNode(t=b"aa", node_id=ID_A, target=ID_M),
    ),
    (
        b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456e"
        b"1:q9:get_peers1:t2:aa1:y1:qe",
        GetPeers(t=b"aa", node_id=ID_A, info_hash=ID_M),
    ),
    (
        # BEP 5 get_peers response with peers: "axje.u" and "idhtnm" are two compact peers
        b"d1:rd2:id20:abcdefghij01234567895:token8:aoeusnth6:valuesl6:axje.u6:idhtnmee"
        b"1:t2:aa1:y1:re",
        Response(
            t=b"aa",
            node_id=ID_A,
            token=b"aoeusnth",
            values=(("97.120.106.101", 0x2E75), ("105.100.104.116", 0x6E6D)),
        ),
    ),
    (
        b"d1:ad2:id20:abcdefghij012345678912:implied_porti1e9:info_hash20:mnopqrstuvwxyz123456"
        b"4:porti6881e5:token8:aoeusnthe1:q13:announce_peer1:t2:aa1:y1:qe",
        AnnouncePeer(
            t=b"aa", node_id=ID_A, info_hash=ID_M, port=6881, token=b"aoeusnth", implied_port=True
        ),
    ),
    (
        b"d1:eli201e23:A Generic Error Ocurrede1:t2:aa1:y1:ee",
        ErrorMessage(t=b"aa", code=201, message="A Generic Error Ocurred"),
    ),
]


@pytest.mark.parametrize(("data", "msg"), GOLDEN)
def test_golden_decode_and_encode(data: bytes, msg: KrpcMessage) -> None:
    assert decode(data) == msg
    assert encode(msg) == data


def test_bep5_get_peers_nodes_example_is_a_placeholder_and_rejected() -> None:
    # BEP 5 writes "nodes" as the 9-byte placeholder "def456...": not a multiple of 26 bytes.
    data = b"d1:rd2:id20:abcdefghij01234567895:nodes9:def456...5:token8:aoeusnthe1:t2:aa1:y1:re"
    with pytest.raises(KrpcError) as info:
        decode(data)
    assert info.value.field == "r.nodes"
    assert info.value.transaction_id == b"aa" and not info.value.is_query


def test_compact_nodes_v4_and_v6() -> None:
    n4 = NodeInfo(ID_M, "127.0.0.5", 6881)
    n6 = NodeInfo(ID_A, "2001:db8::1", 51413)
    msg = Response(t=b"x", node_id=ID_A, nodes=(n4,), nodes6=(n6,), token=b"tk")
    data = encode(msg)
    assert ID_M + bytes([127, 0, 0, 5]) + (6881).to_bytes(2, "big") in data  # 26 bytes, BEP 5
    assert b"6:nodes638:" in data  # 38 bytes, BEP 32
    assert decode(data) == msg


def test_bep51_sample_infohashes() -> None:
    q = SampleInfohashes(t=b"s", node_id=ID_A, target=ID_M)
    assert method_name(q) == "sample_infohashes"
    assert decode(encode(q)) == q
    r = Response(t=b"s", node_id=ID_A, samples=(ID_M, ID_A), interval=21600, num=2)
    data = encode(r)
    assert b"7:samples40:" + ID_M + ID_A in data
    assert decode(data) == r


def test_bep42_ip_bep43_ro_bep32_want_and_version() -> None:
    r = Response(t=b"i", node_id=ID_A, requester=("127.0.0.9", 6881), version=b"PW01")
    data = encode(r)
    assert b"2:ip6:\x7f\x00\x00\x09\x1a\xe1" in data
    assert decode(data) == r
    q = FindNode(t=b"f", node_id=ID_A, target=ID_M, want=(b"n4", b"n6"), read_only=True)
    data = encode(q)
    assert b"2:roi1e" in data and b"4:wantl2:n42:n6e" in data
    assert decode(data) == q


def test_unknown_method_is_decoded_for_a_204_answer() -> None:
    data = b"d1:ad2:id20:abcdefghij0123456789e1:q4:vote1:t2:aa1:y1:qe"
    msg = decode(data)
    assert msg == UnknownQuery(t=b"aa", method=b"vote", node_id=ID_A)
    assert encode(msg) == data


def test_broken_query_keeps_its_transaction_id() -> None:
    with pytest.raises(KrpcError) as info:
        decode(b"d1:ad2:id3:abce1:q4:ping1:t2:zz1:y1:qe")
    assert info.value.transaction_id == b"zz" and info.value.is_query
    assert info.value.field == "a.id"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b"d1:t2:aa1:y1:xe", "y"),
        (b"d1:y1:qe", "t"),
        (b"d1:q4:ping1:t2:aa1:y1:qe", "a"),
        (b"d1:ad2:id20:abcdefghij0123456789e1:t2:aa1:y1:qe", "q"),
        (b"d1:t2:aa1:y1:re", "r"),
        (b"d1:eli201ee1:t2:aa1:y1:ee", "e"),
        (b"d1:rd2:id20:abcdefghij01234567897:samples3:abce1:t2:aa1:y1:re", "r.samples"),
        (b"d1:rd2:id20:abcdefghij01234567898:intervali-1ee1:t2:aa1:y1:re", "r.interval"),
        (b"d2:ip3:abc1:rd2:id20:abcdefghij0123456789e1:t2:aa1:y1:re", "ip"),
        (b"d1:t33:" + b"t" * 33 + b"1:y1:qe", "t"),
        (
            b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456"
            b"5:token1:xe1:q13:announce_peer1:t2:aa1:y1:qe",
            "a.port",
        ),
        (
            b"d1:ad2:id20:abcdefghij01234567899:info_hash20:mnopqrstuvwxyz123456"
            b"4:porti1ee1:q13:announce_peer1:t2:aa1:y1:qe",
            "a.token",
        ),
        (
            b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz1234564:wanti1ee"
            b"1:q9:find_node1:t2:aa1:y1:qe",
            "a.want",
        ),
    ],
)
def test_invalid_messages_name_the_field(data: bytes, field: str) -> None:
    with pytest.raises(KrpcError) as info:
        decode(data)
    assert info.value.field == field


def test_unknown_arguments_are_ignored() -> None:
    # BEP 5 forward compatibility: a ping carrying arguments it does not define still decodes
    data = b"d1:ad2:id20:abcdefghij01234567894:wanti1ee1:q4:ping1:t2:aa1:y1:qe"
    assert decode(data) == Ping(t=b"aa", node_id=ID_A)


def test_encode_refuses_what_we_built_wrong() -> None:
    with pytest.raises(ValueError, match="node_id"):
        encode(Ping(t=b"a", node_id=b"short"))
    with pytest.raises(ValueError, match="nodes6"):
        encode(Response(t=b"a", node_id=ID_A, nodes6=(NodeInfo(ID_M, "127.0.0.1", 1),)))
    with pytest.raises(ValueError, match="port"):
        encode(Response(t=b"a", node_id=ID_A, values=(("127.0.0.1", 70000),)))
    with pytest.raises(ValueError, match="over"):
        encode(Response(t=b"a", node_id=ID_A, values=(("127.0.0.1", 1),) * 200))


def test_datagram_size_cap() -> None:
    with pytest.raises(KrpcError, match="larger than"):
        decode(b"d" + b"0:" * MAX_DATAGRAM_SIZE)


# --- hypothesis round trips ---------------------------------------------------------------------

ids = st.binary(min_size=20, max_size=20)
tids = st.binary(min_size=1, max_size=8)
ports = st.integers(0, 0xFFFF)
ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
versions = st.none() | st.binary(min_size=0, max_size=4)
wants = st.lists(st.sampled_from([b"n4", b"n6"]), max_size=2).map(tuple)
peers = st.tuples(ipv4 | ipv6, ports)
nodes4 = st.lists(st.builds(NodeInfo, ids, ipv4, ports), max_size=8).map(tuple)
nodes6 = st.lists(st.builds(NodeInfo, ids, ipv6, ports), max_size=8).map(tuple)

messages: st.SearchStrategy[KrpcMessage] = st.one_of(
    st.builds(Ping, t=tids, node_id=ids, read_only=st.booleans(), version=versions),
    st.builds(FindNode, t=tids, node_id=ids, target=ids, want=wants, read_only=st.booleans()),
    st.builds(GetPeers, t=tids, node_id=ids, info_hash=ids, want=wants, version=versions),
    st.builds(
        AnnouncePeer,
        t=tids,
        node_id=ids,
        info_hash=ids,
        port=ports,
        token=st.binary(max_size=20),
        implied_port=st.booleans(),
    ),
    st.builds(SampleInfohashes, t=tids, node_id=ids, target=ids, want=wants),
    st.builds(
        UnknownQuery,
        t=tids,
        method=st.binary(min_size=1, max_size=12).filter(
            lambda m: (
                m
                not in (b"ping", b"find_node", b"get_peers", b"announce_peer", b"sample_infohashes")
            )
        ),
        node_id=st.none() | ids,
    ),
    st.builds(
        Response,
        t=tids,
        node_id=ids,
        nodes=nodes4,
        nodes6=nodes6,
        values=st.lists(peers, max_size=20).map(tuple),
        token=st.none() | st.binary(max_size=20),
        samples=st.none() | st.lists(ids, max_size=8).map(tuple),
        interval=st.none() | st.integers(0, 21600),
        num=st.none() | st.integers(0, 2**40),
        requester=st.none() | peers,
        version=versions,
    ),
    st.builds(
        ErrorMessage,
        t=tids,
        code=st.sampled_from([201, 202, 203, 204]) | st.integers(-1000, 1000),
        message=st.text(max_size=40),
    ),
)


@given(messages)
@settings(max_examples=300, deadline=None)
def test_round_trip(msg: KrpcMessage) -> None:
    assert decode(encode(msg)) == msg


# --- fuzzing: decode never raises anything but KrpcError ------------------------------------------


def _decode_total(data: bytes) -> None:
    with contextlib.suppress(KrpcError):
        decode(data)


@given(st.binary(max_size=300))
@settings(max_examples=400, deadline=None)
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _decode_total(data)


bencodable = st.recursive(
    st.integers(-(2**70), 2**70) | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    b"t",
                    b"y",
                    b"q",
                    b"a",
                    b"r",
                    b"e",
                    b"id",
                    b"nodes",
                    b"values",
                    b"token",
                    b"ip",
                    b"ro",
                    b"v",
                    b"port",
                    b"want",
                    b"samples",
                    b"target",
                    b"info_hash",
                    b"x",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@given(
    st.dictionaries(st.sampled_from([b"t", b"y", b"q", b"a", b"r", b"e", b"ip", b"ro"]), bencodable)
)
@settings(max_examples=400, deadline=None)
def test_fuzz_structured_dictionaries(top: dict[bytes, object]) -> None:
    _decode_total(bencode(top))


@given(st.sampled_from([g for g, _ in GOLDEN]), st.data())
@settings(max_examples=300, deadline=None)
def test_fuzz_mutated_golden(data: bytes, draw: st.DataObject) -> None:
    buf = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4))):
        i = draw.draw(st.integers(0, len(buf) - 1))
        buf[i] = draw.draw(st.integers(0, 255))
    cut = draw.draw(st.integers(0, len(buf)))
    _decode_total(bytes(buf[:cut]))
    _decode_total(bytes(buf))


def test_fuzz_corpus() -> None:
    files = sorted(CORPUS.glob("*.bin"))
    assert len(files) >= 10
    for path in files:
        data = path.read_bytes()
        if path.name.startswith("valid_"):
            decode(data)
        else:
            with pytest.raises(KrpcError):
                decode(data)


queries = st.one_of(
    st.builds(Ping, t=tids, node_id=ids, read_only=st.booleans(), version=versions),
    st.builds(
        FindNode,
        t=tids,
        node_id=ids,
        target=ids,
        want=wants,
        read_only=st.booleans(),
        version=versions,
    ),
    st.builds(
        GetPeers,
        t=tids,
        node_id=ids,
        info_hash=ids,
        want=wants,
        read_only=st.booleans(),
        version=versions,
    ),
    st.builds(SampleInfohashes, t=tids, node_id=ids, target=ids, want=wants, version=versions),
)


@given(queries, tids)
@settings(max_examples=300, deadline=None)
def test_query_template_is_encode_for_any_transaction_id(msg: Query, t: bytes) -> None:
    head, tail = query_template(msg)
    assert head + b"1:t" + str(len(t)).encode() + b":" + t + tail == encode(replace(msg, t=t))
