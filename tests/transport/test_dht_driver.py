"""`DhtDriver` on loopback (127.0.12.x) against scripted DHT nodes: claims stream to the caller as
they arrive, before the lookup ends; a faulty callback does not stop the lookup."""

from __future__ import annotations

import asyncio

from peerwatch.protocols.bittorrent.dht import DhtConfig, PeersFound
from peerwatch.transport.dht_driver import DhtDriver
from peerwatch.transport.egress import EgressPolicy
from tests.transport.fake_dht import FakeDhtNode

HOST = "127.0.12.201"
INFO_HASH = bytes(range(20))
CLAIMED = (("127.0.12.210", 6881), ("127.0.12.211", 51413))
# A query unanswered for this long would end the lookup; the tests never wait for it, so a
# lookup that is still running when they look can only be held open by the silent node.
NEVER = 600.0


def test_get_peers_streams_claims_before_the_lookup_ends() -> None:
    async def run() -> None:
        release = asyncio.Event()
        talker = await FakeDhtNode.start(HOST, b"a" * 20, values=CLAIMED)
        silent = await FakeDhtNode.start(HOST, b"b" * 20, hold=release)
        driver = DhtDriver(
            (HOST, 0), EgressPolicy(), config=DhtConfig(query_timeout=NEVER), node_id=b"o" * 20
        )
        await driver.start()
        try:
            assert await driver.bootstrap([talker.addr, silent.addr]) == 2
            streamed: list[PeersFound] = []
            arrived = asyncio.Event()

            def on_peers(found: PeersFound) -> None:
                streamed.append(found)
                arrived.set()

            lookup = asyncio.create_task(driver.get_peers(INFO_HASH, NEVER, on_peers=on_peers))
            async with asyncio.timeout(30):  # a guard against a hang, not a speed assertion
                await arrived.wait()
            # The silent node has not answered, so the lookup cannot have ended: the claim came
            # while it ran.
            assert not lookup.done()
            assert silent.get_peers_received == 1
            assert [(f.peers, f.from_node.addr) for f in streamed] == [(CLAIMED, talker.addr)]
            release.set()
            async with asyncio.timeout(30):
                result = await lookup
            assert result.done is not None
            assert result.found == streamed  # the result still lists every claim
            assert result.peers == set(CLAIMED)
            assert driver.errors == 0
        finally:
            driver.close()
            talker.close()
            silent.close()

    asyncio.run(run())


def test_a_failing_callback_is_counted_and_the_lookup_goes_on() -> None:
    async def run() -> None:
        talker = await FakeDhtNode.start(HOST, b"a" * 20, values=CLAIMED)
        other = await FakeDhtNode.start(HOST, b"c" * 20, values=CLAIMED[:1])
        driver = DhtDriver((HOST, 0), EgressPolicy(), node_id=b"o" * 20)
        await driver.start()
        try:
            await driver.bootstrap([talker.addr, other.addr])

            def broken(_found: PeersFound) -> None:
                raise RuntimeError("the caller's bug")

            async with asyncio.timeout(30):
                result = await driver.get_peers(INFO_HASH, NEVER, on_peers=broken)
            assert result.done is not None
            assert {f.from_node.addr for f in result.found} == {talker.addr, other.addr}
            assert driver.errors == 2
            assert driver.last_error == "RuntimeError: the caller's bug"
        finally:
            driver.close()
            talker.close()
            other.close()

    asyncio.run(run())


def test_bootstrap_returns_once_the_table_holds_the_entry_nodes() -> None:
    async def run() -> None:
        nodes = [await FakeDhtNode.start(HOST, bytes([n]) * 20) for n in range(3)]
        driver = DhtDriver((HOST, 0), EgressPolicy(), node_id=b"o" * 20)
        await driver.start()
        try:
            assert await driver.bootstrap([n.addr for n in nodes], timeout=30) == 3
            assert {e.node.addr for e in driver.node.routing.entries(0.0)} == {
                n.addr for n in nodes
            }
        finally:
            driver.close()
            for n in nodes:
                n.close()

    asyncio.run(run())


def test_an_ipv6_driver_serves_the_ipv6_dht_on_loopback() -> None:
    """BEP 32 over a real socket on ::1: the driver's node takes the family of its address,
    queries with want n6, and reads 18-byte compact peers."""
    claimed6 = (("::1", 6881), ("2001:db8::7", 51413))

    async def run() -> None:
        talker = await FakeDhtNode.start("::1", b"a" * 20, values=claimed6)
        driver = DhtDriver(("::1", 0), EgressPolicy(), node_id=b"o" * 20)
        assert driver.node.config.ipv6
        await driver.start()
        try:
            assert await driver.bootstrap([talker.addr, ("127.0.12.1", 6881)], timeout=30) == 1
            async with asyncio.timeout(30):
                result = await driver.get_peers(INFO_HASH, NEVER)
            assert result.peers == set(claimed6)
            assert [f.from_node.addr for f in result.found] == [talker.addr]
        finally:
            driver.close()
            talker.close()

    asyncio.run(run())
