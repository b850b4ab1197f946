"""Observations for evidence tests: loopback addresses, benign content keys."""

from __future__ import annotations

from peerwatch.evidence.record import Observation


def observation(i: int, *, ip: str | None = None) -> Observation:
    return Observation(
        observed_ms=1_764_000_000_000 + i * 1000,
        network="bittorrent",
        method="bitfield" if i % 2 else "dht-get-peers",
        content_key=f"btih:{i:040x}",
        ip=ip or f"127.0.{i // 250}.{i % 250 + 1}",
        port=6881 + i % 100,
        client="libtorrent/2.0.11",
        peer_id=f"2d4c54323030302d{i:024x}",
        completion_ppm=(i * 37) % 1_000_001,
        outcome="possession" if i % 2 else "claim",
        exchange_sha256=f"{i:064x}",
        extra={"listen_port": 6881, "flags": ["utp", "enc"]},
    )
