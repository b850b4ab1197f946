"""Announcing to the lab's real opentracker over HTTP and UDP; the egress guard refuses others."""

from __future__ import annotations

import asyncio

from peerwatch.lab.swarm import TRACKER_IP, TRACKER_PORT, Lab
from peerwatch.protocols.bittorrent.tracker_http import AnnounceRequest
from peerwatch.transport.egress import EgressPolicy
from peerwatch.transport.tracker_client import announce


def test_http_and_udp_announces_list_the_holders(lab: Lab) -> None:
    t = lab.torrents["watched-v1"]
    holders = {ip for (ip, name) in lab.expected() if name == "watched-v1"}
    req = AnnounceRequest(
        info_hash=bytes.fromhex(t.btih or ""), peer_id=b"-PW0001-trackertest0", port=6881, left=1
    )

    async def run() -> None:
        for scheme in ("http", "udp"):
            answer = await announce(
                f"{scheme}://{TRACKER_IP}:{TRACKER_PORT}/announce",
                req,
                EgressPolicy(),
                bind_ip="127.0.3.2",
            )
            assert answer.error is None, answer
            listed = {p.ip for p in answer.peers}
            assert holders <= listed, (scheme, holders, listed)
            assert answer.seeders is not None and answer.seeders >= 1

    asyncio.run(run())


def test_egress_policy_refuses_before_sending() -> None:
    policy = EgressPolicy()
    req = AnnounceRequest(info_hash=bytes(20), peer_id=b"-PW0001-trackertest0", port=6881)

    async def run() -> None:
        for url in ("http://192.0.2.1:6969/announce", "udp://198.51.100.7:6969/announce"):
            answer = await announce(url, req, policy, timeout=2)
            assert answer.error is not None and "outside the allowed networks" in answer.error

    asyncio.run(run())
    assert policy.denied == 2
    assert policy.allows("127.0.2.9") and policy.allows("::1") and policy.allows("::ffff:127.0.0.1")
    assert not policy.allows("10.0.0.1") and not policy.allows("tracker.example")
