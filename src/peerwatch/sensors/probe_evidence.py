"""What a peer probe puts in the evidence log: one observation per probe, possession or not.

Methods (docs/evidence.md): `bitfield` and `have-all` are evidence of possession (a handshake
accepted on the infohash plus the pieces the peer announced); `handshake` is a handshake accepted
with no piece announced; `connect` is a probe that got no accepted handshake (refused, unreachable,
timed out, or broke the protocol). Only the first two are ever recorded with outcome `possession`.
"""

from __future__ import annotations

from peerwatch.evidence.record import ExtraValue, Observation
from peerwatch.transport.peer_probe import ProbeResult

_METHOD = {"bitfield": "bitfield", "have_all": "have-all", "have_none": "handshake"}


def probe_observation(
    result: ProbeResult, *, content_key: str, clock_offset_ms: int | None = None
) -> Observation:
    if result.outcome == "possession":
        method = _METHOD[result.pieces_message or "bitfield"]
    elif result.handshake_accepted:
        method = "handshake"
    else:
        method = "connect"
    extra: dict[str, ExtraValue] = {
        "detail": result.detail,
        "encrypted": result.encrypted,
        "duration_ms": int((result.ended - result.started) * 1000),
    }
    if result.listen_port is not None:
        extra["listen_port"] = result.listen_port
    if result.have is not None:
        extra["pieces_announced"] = result.have
    if result.total is not None:
        extra["piece_count"] = result.total
    return Observation(
        observed_ms=int(result.started * 1000),
        network="bittorrent",
        method=method,
        content_key=content_key,
        ip=result.ip,
        port=result.port,
        clock_offset_ms=clock_offset_ms,
        client=result.client,
        peer_id=result.peer_id.hex() if result.peer_id else None,
        completion_ppm=result.completion_ppm,
        outcome=result.outcome,
        exchange_sha256=result.exchange_sha256,
        extra=extra,
    )
