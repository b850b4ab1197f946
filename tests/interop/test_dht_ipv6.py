"""BEP 32 against a real libtorrent DHT node on ::1 (IPv6 loopback), no lab needed.

libtorrent runs in this process with the lab's loopback-only settings on [::1]; a test helper
announces a made-up peer ([::1]:51413, nothing listens there) to it over IPv6 with a real token,
and our IPv6 `DhtDriver` must bootstrap from libtorrent (find_node with want n6) and read that
peer back from libtorrent's get_peers answer (an 18-byte compact peer).
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import cast

from peerwatch.protocols.bittorrent import krpc
from peerwatch.transport.dht_driver import DhtDriver
from peerwatch.transport.egress import EgressPolicy
from tests.interop.conftest import require_lab_tools

INFO_HASH = bytes(range(40, 60))
ANNOUNCED = ("::1", 51413)


def test_ipv6_lookup_against_libtorrent_on_ipv6_loopback() -> None:
    require_lab_tools(tracker=False)
    import libtorrent as lt

    from peerwatch.lab.peer_process import settings

    pack = settings({"name": "ipv6", "ip": "::1", "port": 0})
    pack["listen_interfaces"] = "[::1]:0"
    pack["outgoing_interfaces"] = ""
    session = lt.session(cast("lt.settings_pack", pack))
    try:
        deadline = time.monotonic() + 30
        while session.listen_port() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        lt_node = ("::1", session.listen_port())
        assert lt_node[1] != 0

        # The helper announces ANNOUNCED with the token libtorrent gave it (BEP 5), over IPv6.
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as helper:
            helper.bind(("::1", 0))
            helper.settimeout(10)
            ask = krpc.GetPeers(t=b"g1", node_id=b"h" * 20, info_hash=INFO_HASH)
            helper.sendto(krpc.encode(ask), lt_node)
            answer = krpc.decode(helper.recvfrom(2048)[0])
            assert isinstance(answer, krpc.Response) and answer.token is not None
            announce = krpc.AnnouncePeer(
                t=b"a1",
                node_id=b"h" * 20,
                info_hash=INFO_HASH,
                port=ANNOUNCED[1],
                token=answer.token,
            )
            helper.sendto(krpc.encode(announce), lt_node)
            ack = krpc.decode(helper.recvfrom(2048)[0])
            assert isinstance(ack, krpc.Response)

        async def lookup() -> None:
            driver = DhtDriver(("::1", 0), EgressPolicy(), node_id=b"o" * 20)
            assert driver.node.config.ipv6
            await driver.start()
            try:
                assert await driver.bootstrap([lt_node], timeout=30) == 1
                (entry,) = driver.node.routing.entries(time.monotonic())
                assert entry.node.addr == lt_node
                async with asyncio.timeout(60):  # a guard against a hang, not a speed check
                    result = await driver.get_peers(INFO_HASH, 30)
                assert result.done is not None
                assert ANNOUNCED in result.peers
                assert any(f.from_node.addr == lt_node for f in result.found)
                assert driver.errors == 0
            finally:
                driver.close()

        asyncio.run(lookup())
    finally:
        del session
