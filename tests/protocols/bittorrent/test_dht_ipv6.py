"""BEP 32 (DHT extensions for IPv6): golden bytes written from the BEP's message formats, hybrid
``values`` lists, ``want``, separate routing tables per family, dual-stack pairing, and the
1024-octet reply cap. Sans-IO: no socket, no clock."""

from __future__ import annotations

import ipaddress
import random
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.protocols.bittorrent import krpc
from peerwatch.protocols.bittorrent.bencode import bencode
from peerwatch.protocols.bittorrent.dht import DhtConfig, DhtNode
from peerwatch.protocols.bittorrent.krpc import FindNode, GetPeers, NodeInfo, Peer, Response

ID_A = b"abcdefghij0123456789"
ID_M = b"mnopqrstuvwxyz123456"
OWN = b"\x00" * 20

# --- codec: golden bytes ------------------------------------------------------------------------

# BEP 32 "want": a list of strings, "n4" asks for "nodes", "n6" for "nodes6".
FIND_NODE_WANT_BOTH = (
    b"d1:ad2:id20:abcdefghij01234567896:target20:mnopqrstuvwxyz123456"
    b"4:wantl2:n42:n6ee1:q9:find_node1:t2:aa1:y1:qe"
)
# BEP 32 "nodes6": 20-byte id + 16-byte IPv6 address + 2-byte port per node (38 octets); "values"
# may mix 6-octet IPv4 and 18-octet IPv6 compact peers, and must be parsed either way.
V6 = bytes.fromhex("20010db8000000000000000000000001")  # 2001:db8::1
GET_PEERS_REPLY_V6 = (
    b"d1:rd2:id20:abcdefghij0123456789"
    b"6:nodes638:" + ID_M + V6 + b"\x1a\xe1"
    b"5:token8:aoeusnth"
    b"6:valuesl6:axje.u18:" + V6 + b"\xc8\xd5"
    b"ee1:t2:aa1:y1:re"
)


def test_golden_want_both_families() -> None:
    msg = FindNode(t=b"aa", node_id=ID_A, target=ID_M, want=(b"n4", b"n6"))
    assert krpc.decode(FIND_NODE_WANT_BOTH) == msg
    assert krpc.encode(msg) == FIND_NODE_WANT_BOTH


def test_golden_nodes6_and_hybrid_values() -> None:
    msg = krpc.decode(GET_PEERS_REPLY_V6)
    assert msg == Response(
        t=b"aa",
        node_id=ID_A,
        nodes6=(NodeInfo(ID_M, "2001:db8::1", 6881),),
        token=b"aoeusnth",
        values=(("97.120.106.101", 0x2E75), ("2001:db8::1", 51413)),
    )
    assert krpc.encode(msg) == GET_PEERS_REPLY_V6


def test_unknown_want_strings_are_kept_for_the_node_to_ignore() -> None:
    # BEP 32: "other strings may be present in the list, and must be silently ignored"
    data = FIND_NODE_WANT_BOTH.replace(b"4:wantl2:n42:n6e", b"4:wantl2:n63:n99e")
    msg = krpc.decode(data)
    assert isinstance(msg, FindNode) and msg.want == (b"n6", b"n99")


compact_peers = st.lists(
    st.one_of(
        st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF)).map(
            lambda t: (str(ipaddress.IPv4Address(t[0])), t[1])
        ),
        st.tuples(st.integers(0, 2**128 - 1), st.integers(0, 0xFFFF)).map(
            lambda t: (str(ipaddress.IPv6Address(t[0])), t[1])
        ),
    ),
    max_size=40,
)


@given(compact_peers)
@settings(max_examples=200, deadline=None)
def test_hybrid_values_built_independently_decode(peers: list[Peer]) -> None:
    """Values bencoded here from `ipaddress` + `struct` (not with our encoder) decode to the
    same peers, in order, whatever mix of families."""
    raw = [ipaddress.ip_address(ip).packed + struct.pack("!H", port) for ip, port in peers]
    data = bencode({b"t": b"x", b"y": b"r", b"r": {b"id": ID_A, b"values": raw}})
    msg = krpc.decode(data)
    assert isinstance(msg, Response) and msg.values == tuple(peers)
    assert krpc.decode(krpc.encode(msg)) == msg


# --- the node -----------------------------------------------------------------------------------


def _node(node_id: bytes = OWN, **cfg: object) -> DhtNode:
    # The per-IP send budget raised: these tests ask one node many things within a second.
    config = DhtConfig(per_ip_packets=1000, **cfg)  # type: ignore[arg-type]
    return DhtNode(node_id, 0.0, config=config, rng=random.Random(1))


def _teach(node: DhtNode, addrs: list[Peer], now: float = 0.0) -> list[NodeInfo]:
    """Ping each address and answer for it, so that it enters the node's routing table."""
    known = []
    for i, addr in enumerate(addrs):
        node.ping(addr, now)
        ((data, to),) = node.datagrams_to_send()
        assert to == addr
        q = krpc.decode(data)
        nid = bytes([0x80 | i]) + bytes([i]) * 19
        node.receive(krpc.encode(Response(t=q.t, node_id=nid)), addr, now)
        node.datagrams_to_send()
        known.append(NodeInfo(nid, *addr))
    return known


def _answer(node: DhtNode, query: krpc.Query, asker: Peer) -> Response:
    node.receive(krpc.encode(query), asker, 1.0)
    out = [krpc.decode(d) for d, a in node.datagrams_to_send() if a == asker]
    (resp,) = [m for m in out if isinstance(m, Response)]
    return resp


V4_NODES = [("127.0.12.1", 6881), ("127.0.12.2", 6881)]
V6_NODES = [("::1", 7001), ("::1", 7002)]
ASK4 = ("127.0.12.9", 6881)
ASK6 = ("::1", 7009)


def test_want_selects_families_and_a_single_stack_node_has_only_its_own() -> None:
    node = _node()
    v4 = _teach(node, V4_NODES)
    no_want = _answer(node, FindNode(t=b"1", node_id=ID_A, target=ID_M), ASK4)
    assert set(no_want.nodes) == set(v4) and no_want.nodes6 == ()
    only6 = _answer(node, FindNode(t=b"2", node_id=ID_A, target=ID_M, want=(b"n6",)), ASK4)
    assert only6.nodes == () and only6.nodes6 == ()  # nothing of that family to give
    both = _answer(node, FindNode(t=b"3", node_id=ID_A, target=ID_M, want=(b"n4", b"n6")), ASK4)
    assert set(both.nodes) == set(v4) and both.nodes6 == ()


def test_paired_dual_stack_nodes_answer_want_from_each_other_s_table() -> None:
    node4, node6 = _node(ID_M), _node(ID_M, ipv6=True)  # BEP 32: one id for both is advised
    node4.pair(node6)
    v4, v6 = _teach(node4, V4_NODES), _teach(node6, V6_NODES)
    assert len(node4.routing) == 2 and len(node6.routing) == 2  # tables stay apart
    want_both = (b"n4", b"n6")
    over4 = _answer(node4, FindNode(t=b"1", node_id=ID_A, target=ID_A, want=want_both), ASK4)
    assert set(over4.nodes) == set(v4) and set(over4.nodes6) == set(v6)
    over6 = _answer(node6, GetPeers(t=b"2", node_id=ID_A, info_hash=ID_A, want=want_both), ASK6)
    assert set(over6.nodes) == set(v4) and set(over6.nodes6) == set(v6)
    default6 = _answer(node6, FindNode(t=b"3", node_id=ID_A, target=ID_A), ASK6)
    assert default6.nodes == () and set(default6.nodes6) == set(v6)


def test_nodes_of_the_other_family_are_neither_learned_nor_asked() -> None:
    node = _node(ipv6=True)
    # a query over IPv4 reaching an IPv6 node: answered, not learned, not pinged back
    node.receive(krpc.encode(krpc.Ping(t=b"p", node_id=ID_A)), ASK4, 0.0)
    out = node.datagrams_to_send()
    assert [a for _, a in out] == [ASK4] and isinstance(krpc.decode(out[0][0]), Response)
    assert len(node.routing) == 0
    # bootstrap skips IPv4 entry points; a lookup only follows nodes6
    node.bootstrap([V4_NODES[0], V6_NODES[0]], 0.0)
    ((data, to),) = node.datagrams_to_send()
    assert to == V6_NODES[0]
    q = krpc.decode(data)
    assert isinstance(q, FindNode) and q.want == (b"n6",)  # BEP 32: asks for its own family
    reply = Response(
        t=q.t,
        node_id=ID_M,
        nodes=(NodeInfo(b"4" * 20, "127.0.12.5", 6881),),
        nodes6=(NodeInfo(b"6" * 20, "::1", 7005),),
    )
    node.receive(krpc.encode(reply), V6_NODES[0], 0.1)
    asked = [a for _, a in node.datagrams_to_send()]
    assert asked == [("::1", 7005)]


def test_values_hold_the_asker_s_family_and_want_adds_nodes() -> None:
    node = _node()
    _teach(node, V4_NODES)
    ih = b"i" * 20
    got = _answer(node, GetPeers(t=b"1", node_id=ID_A, info_hash=ih), ASK4)
    assert got.token is not None
    for port in range(6000, 6003):
        ann = krpc.AnnouncePeer(t=b"a", node_id=ID_A, info_hash=ih, port=port, token=got.token)
        node.receive(krpc.encode(ann), ASK4, 1.0)
    node.datagrams_to_send()
    plain = _answer(node, GetPeers(t=b"2", node_id=ID_A, info_hash=ih), ASK4)
    assert len(plain.values) == 3 and plain.nodes == ()  # BEP 5: values instead of nodes
    wanted = _answer(node, GetPeers(t=b"3", node_id=ID_A, info_hash=ih, want=(b"n4",)), ASK4)
    assert len(wanted.values) == 3 and len(wanted.nodes) == 2  # BEP 32: and the nodes
    # asked over IPv6 (as a dual-stack socket would show it), no IPv4 peer is returned
    over6 = _answer(node, GetPeers(t=b"4", node_id=ID_A, info_hash=ih), ASK6)
    assert over6.values == ()


def test_replies_stay_within_1024_octets() -> None:
    node = _node(ipv6=True)
    _teach(node, V6_NODES)
    ih = b"j" * 20
    for i in range(60):  # more announcers than fit: 50 sampled, then trimmed to the cap
        announcer = (f"2001:db8::{i + 1:x}", 6881)
        got = _answer(node, GetPeers(t=b"1", node_id=ID_A, info_hash=ih), announcer)
        assert got.token is not None  # BEP 5: bound to the announcer's IP
        ann = krpc.AnnouncePeer(t=b"a", node_id=ID_A, info_hash=ih, port=6881, token=got.token)
        node.receive(krpc.encode(ann), announcer, 1.0)
        node.datagrams_to_send()
    assert len(node.stored_peers(ih, 1.0)) == 60
    for want in ((), (b"n6",)):
        node.receive(krpc.encode(GetPeers(t=b"2", node_id=ID_A, info_hash=ih, want=want)), ASK6, 2)
        ((data, _),) = node.datagrams_to_send()
        assert len(data) <= 1024
        msg = krpc.decode(data)
        assert isinstance(msg, Response) and 0 < len(msg.values) < 50
        assert all(":" in ip for ip, _ in msg.values)
        assert len(msg.nodes6) == (2 if want else 0)
