"""Kad source search against a simulated network of 30 nodes on 127.0.17.x (lab/kad.py).

Why simulated: aMule refuses loopback Kad contacts, so real amuled daemons never form a Kad
network here (tests/interop/test_kad_amuled.py checks the packet format against a real one).
"""

from __future__ import annotations

import hashlib
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerwatch.lab.kad import SENSOR_IP, SimKadNetwork, StoredSource, max_rate
from peerwatch.protocols.ed2k.tags import Tag
from peerwatch.protocols.kad import packets as kp
from peerwatch.protocols.kad.packets import KadContact
from peerwatch.transport.egress import EgressDeniedError
from peerwatch.transport.kad import (
    KadSearchConfig,
    SendBudget,
    bootstrap_node,
    find_sources,
)

# The simulated nodes share the test's event loop: a datagram is time-stamped when the loop gets to
# it, which on a loaded 2-core CI can be a good part of 100 ms late. Counting over 0.9 s at the
# receivers keeps such a delay from looking like a burst; the exact one-second semantics of the
# budget are pinned without any clock by the SendBudget tests below.
RECEIVED = 0.9


def _hash(text: str) -> bytes:
    return hashlib.md5(text.encode(), usedforsecurity=False).digest()


USER_A, USER_B, USER_C = _hash("user-a"), _hash("user-b"), _hash("user-c")
SIZE = 25_000_000


async def test_search_finds_published_sources_and_honours_rate_limit() -> None:
    async with SimKadNetwork(nodes=30, ghosts=2) as net:
        file_hash = _hash("benign-file-1")
        acks = [
            await net.publish_source(
                file_hash,
                ip="127.0.17.151",
                tcp_port=4662,
                udp_port=4672,
                user_hash=USER_A,
                file_size=SIZE,
                encryption=0x01,
            ),
            await net.publish_source(
                file_hash,
                ip="127.0.17.152",
                tcp_port=5662,
                udp_port=5672,
                user_hash=USER_B,
                file_size=SIZE,
                source_type=4,
                encryption=0x07,
            ),
            # same file hash, other size: a node filters it when we give the size
            await net.publish_source(
                file_hash,
                ip="127.0.17.153",
                tcp_port=6662,
                udp_port=6672,
                user_hash=USER_C,
                file_size=SIZE + 1,
            ),
        ]
        assert acks == [10, 10, 10]
        # another file's source must not show up
        await net.publish_source(
            _hash("other"),
            ip="127.0.17.154",
            tcp_port=7662,
            udp_port=7672,
            user_hash=_hash("user-d"),
        )
        result = await find_sources(net.bootstrap(2), file_hash, SIZE, bind_ip=SENSOR_IP)

        by_user = {s.user_hash: s for s in result.sources}
        assert set(by_user) == {USER_A, USER_B}
        a, b = by_user[USER_A], by_user[USER_B]
        assert (a.ip, a.tcp_port, a.udp_port, a.source_type) == ("127.0.17.151", 4662, 4672, 1)
        assert a.supports_crypt and not a.requires_crypt and not a.low_id
        assert (b.ip, b.tcp_port, b.udp_port, b.source_type) == ("127.0.17.152", 5662, 5672, 4)
        assert b.requires_crypt and b.crypt_options == 0x07
        storing = {(n.ip, n.port) for n in net.closest(kp.hash_to_id(file_hash))}
        assert {s.node for s in result.sources} <= storing
        assert {a.ip for a in result.node_answers if a.kind == "sources"} <= {i for i, _ in storing}
        # aMule asks for 2 contacts per KADEMLIA2_REQ in a file search, so the lookup may end
        # next to the 10 storing nodes rather than on all of them; several must be reached
        assert len(set(result.searched) & storing) >= 3
        assert result.contacts_queried >= 3
        assert result.malformed == 0
        assert len(result.exchange_digest) == 64
        assert result.packets_sent == sum(len(n.packets_from(SENSOR_IP)) for n in net.members)

        # politeness, measured at the receiving nodes: <= 5 packets in any 1 s per remote IP
        rates = [max_rate(n.packets_from(SENSOR_IP), RECEIVED) for n in net.members]
        assert max(rates) <= 5
        everyone = [r for n in net.members for r in n.packets_from(SENSOR_IP)]
        assert max_rate(everyone, RECEIVED) <= KadSearchConfig().global_rate


async def test_tight_budget_is_honoured_per_ip_and_globally() -> None:
    async with SimKadNetwork(nodes=30) as net:
        file_hash = _hash("benign-file-2")
        await net.publish_source(
            file_hash, ip="127.0.17.151", tcp_port=4662, udp_port=4672, user_hash=USER_A
        )
        config = KadSearchConfig(per_ip=1, global_rate=6, alpha=5)
        result = await find_sources(
            net.bootstrap(3), file_hash, None, bind_ip=SENSOR_IP, config=config
        )
        assert [s.user_hash for s in result.sources] == [USER_A]
        for node in net.members:
            assert max_rate(node.packets_from(SENSOR_IP), RECEIVED) <= 1
        everyone = [r for n in net.members for r in n.packets_from(SENSOR_IP)]
        assert len(everyone) > 6  # enough traffic for the global window to matter
        assert max_rate(everyone, RECEIVED) <= 6


async def test_ghost_next_to_the_target_is_tolerated() -> None:
    async with SimKadNetwork(nodes=30, ghosts=3) as net:
        ghost = net.ghost_nodes[0]
        file_hash = kp.id_to_hash(ghost.id ^ 0xFF)  # the ghost is the closest node to the file
        await net.publish_source(
            file_hash, ip="127.0.17.151", tcp_port=4662, udp_port=4672, user_hash=USER_A
        )
        config = KadSearchConfig(timeout=1.0, wanted=kp.KADEMLIA_FIND_NODE)
        result = await find_sources(
            net.bootstrap(1), file_hash, None, bind_ip=SENSOR_IP, config=config
        )
        assert (ghost.ip, ghost.port) in result.ghosts
        assert ghost.received, "the ghost was asked"
        assert [s.user_hash for s in result.sources] == [USER_A]
        answered = {(a.ip, a.port) for a in result.node_answers}
        assert not answered & set(result.ghosts)
        # asking for 11 contacts per request, the lookup converges exactly: the search goes to
        # the 10 live nodes closest to the file, never to a ghost
        closest = {(n.ip, n.port) for n in net.closest(kp.hash_to_id(file_hash))}
        assert set(result.searched) == closest


async def test_contacts_outside_the_egress_policy_are_never_contacted() -> None:
    async with SimKadNetwork(nodes=10) as net:
        outside = KadContact(net.members[0].id ^ 1, "192.0.2.7", 4672, 4662, 8)
        for node in net.members:
            node.table.add(outside)
        result = await find_sources(
            net.bootstrap(1),
            _hash("x"),
            None,
            bind_ip=SENSOR_IP,
            config=KadSearchConfig(timeout=0.5, linger=0.2),
        )
        assert result.denied >= 1
        assert ("192.0.2.7", 4672) not in result.ghosts
        with pytest.raises(EgressDeniedError):
            await find_sources([("192.0.2.7", 4672)], _hash("x"), None, bind_ip=SENSOR_IP)


async def test_bootstrap_node_answer_and_silence() -> None:
    async with SimKadNetwork(nodes=3, ghosts=1) as net:
        node = net.live[0]
        res = await bootstrap_node(node.ip, node.port, bind_ip=SENSOR_IP, timeout=1.0)
        assert res is not None and res.node_id == node.id
        assert {c.id for c in res.contacts} == {n.id for n in net.members if n is not node}
        ghost = net.ghost_nodes[0]
        assert await bootstrap_node(ghost.ip, ghost.port, bind_ip=SENSOR_IP, timeout=0.3) is None


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(0.0, 0.4)), min_size=1, max_size=80
    )
)
def test_send_budget_never_exceeds_its_windows(attempts: list[tuple[str, float]]) -> None:
    budget = SendBudget(per_ip=3, global_rate=5, window=1.0)
    now, sent = 0.0, []
    for ip, step in attempts:
        now += step
        if budget.take(ip, now):
            sent.append((ip, now))
    for ip0, t0 in sent:
        in_window = [(ip, t) for ip, t in sent if t0 <= t < t0 + 1.0]
        assert len(in_window) <= 5
        assert sum(1 for ip, _ in in_window if ip == ip0) <= 3


def test_send_budget_windows() -> None:
    budget = SendBudget(per_ip=2, global_rate=3, window=1.0)
    assert budget.take("a", 0.0) and budget.take("a", 0.1)
    assert not budget.take("a", 0.2)
    assert budget.wait("a", 0.2) == pytest.approx(0.8)
    assert budget.take("b", 0.3)
    assert not budget.take("c", 0.4)  # the global window is full
    assert budget.take("a", 1.0)  # the first packet left the window


async def test_low_id_buddy_source_and_unusable_results() -> None:
    async with SimKadNetwork(nodes=12) as net:
        file_hash = _hash("benign-file-3")
        file_id = kp.hash_to_id(file_hash)
        low_id = (
            Tag.integer(kp.TAG_SOURCETYPE, 3),
            Tag.integer(kp.TAG_SOURCEIP, kp.ip_to_kad("127.0.17.160")),
            Tag.integer(kp.TAG_SOURCEPORT, 4662),
            Tag.integer(kp.TAG_SERVERIP, kp.ip_to_kad("127.0.17.161")),
            Tag.integer(kp.TAG_SERVERPORT, 4672),
            Tag.string(kp.TAG_BUDDYHASH, "00112233445566778899AABBCCDDEEFF"),
            Tag(kp.TAG_ENCRYPTION, 0x09, 0x01),
        )
        type_two = (  # "don't use this type" (CSearch::ProcessResultFile)
            Tag.integer(kp.TAG_SOURCETYPE, 2),
            Tag.integer(kp.TAG_SOURCEIP, kp.ip_to_kad("127.0.17.162")),
            Tag.integer(kp.TAG_SOURCEPORT, 4662),
        )
        outside = (  # a source outside the egress policy is not passed on
            Tag.integer(kp.TAG_SOURCETYPE, 1),
            Tag.integer(kp.TAG_SOURCEIP, kp.ip_to_kad("192.0.2.9")),
            Tag.integer(kp.TAG_SOURCEPORT, 4662),
        )
        for node in net.closest(file_id):
            node.sources[file_id] = {
                kp.hash_to_id(USER_A): StoredSource(kp.hash_to_id(USER_A), low_id, 0),
                kp.hash_to_id(USER_B): StoredSource(kp.hash_to_id(USER_B), type_two, 0),
                kp.hash_to_id(USER_C): StoredSource(kp.hash_to_id(USER_C), outside, 0),
            }
        result = await find_sources(
            net.bootstrap(1),
            file_hash,
            None,
            bind_ip=SENSOR_IP,
            config=KadSearchConfig(wanted=kp.KADEMLIA_FIND_NODE),
        )
        (source,) = result.sources
        assert source.user_hash == USER_A and source.low_id
        assert (source.ip, source.buddy_ip, source.buddy_port) == (
            "127.0.17.160",
            "127.0.17.161",
            4672,
        )
        assert source.buddy_hash == "00112233445566778899AABBCCDDEEFF"
        assert source.udp_port == 0  # no TAG_SOURCEUPORT given
        assert result.ignored >= 2 * len(result.searched)  # two unusable results per answer


async def test_hostile_nodes_do_not_break_the_search() -> None:
    async with SimKadNetwork(nodes=20) as net:
        file_hash = _hash("benign-file-4")
        await net.publish_source(
            file_hash, ip="127.0.17.151", tcp_port=4662, udp_port=4672, user_hash=USER_A
        )
        # the three nodes closest to the file (they store it too) turn hostile
        hostile = net.closest(kp.hash_to_id(file_hash), 3)
        assert net.live[0] not in hostile  # the bootstrap node stays honest
        flood = tuple(n.contact for n in net.live[:20])
        bomb = b"\xe5\x29" + zlib.compress(bytes(3_000_000))

        def garbage(msg: kp.KadMessage, ip: str, port: int) -> list[kp.KadMessage]:
            return [kp.UnknownKad(0x29, b"\x01\x02")]  # a truncated KADEMLIA2_RES

        def oversized(msg: kp.KadMessage, ip: str, port: int) -> list[kp.KadMessage]:
            if isinstance(msg, kp.KadReq):  # 20 contacts when 2 were asked for
                return [kp.KadRes(msg.target, flood)]
            return []

        hostile[0].handle = garbage  # type: ignore[method-assign]
        hostile[1].handle = oversized  # type: ignore[method-assign]
        original = hostile[2].datagram_received

        def bombing(data: bytes, addr: tuple[str | int, ...]) -> None:
            original(data, addr)
            assert hostile[2].transport is not None
            hostile[2].transport.sendto(bomb, (str(addr[0]), int(addr[1])))

        hostile[2].datagram_received = bombing  # type: ignore[method-assign]
        config = KadSearchConfig(wanted=kp.KADEMLIA_FIND_NODE, timeout=1.0)
        result = await find_sources(
            net.bootstrap(1), file_hash, None, bind_ip=SENSOR_IP, config=config
        )
        assert [s.user_hash for s in result.sources] == [USER_A]
        assert all(n.packets_from(SENSOR_IP) for n in hostile)  # all three were asked
        assert result.malformed >= 2  # the truncated answer and the zlib bomb
        answered = {(a.ip, a.port) for a in result.node_answers if a.kind == "contacts"}
        assert (hostile[0].ip, hostile[0].port) not in answered
        assert (hostile[1].ip, hostile[1].port) not in answered  # its oversized answer dropped
        assert {(hostile[0].ip, hostile[0].port), (hostile[1].ip, hostile[1].port)} <= set(
            result.ghosts
        )
