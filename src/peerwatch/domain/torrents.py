"""A watched torrent as the BitTorrent sensor needs it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WatchedTorrent:
    """One swarm to sweep.

    `wire_hash` is the 20-byte id used on the DHT, at trackers and in the handshake: the v1
    infohash, or for a v2-only torrent its SHA-256 infohash truncated to 20 bytes (BEP 52).
    `content_key` names it in the evidence log (`btih:<hex>` or `btmh:<full hex>`).
    """

    wire_hash: bytes
    content_key: str
    name: str | None = None
    trackers: tuple[str, ...] = ()
    piece_count: int | None = None  # known when the list gave the .torrent itself

    @classmethod
    def from_hashes(
        cls,
        btih: bytes | None,
        btmh: bytes | None,
        *,
        name: str | None = None,
        trackers: tuple[str, ...] = (),
        piece_count: int | None = None,
    ) -> WatchedTorrent:
        if btih is not None:
            return cls(btih, f"btih:{btih.hex()}", name, trackers, piece_count)
        if btmh is not None:
            return cls(btmh[:20], f"btmh:{btmh.hex()}", name, trackers, piece_count)
        raise ValueError("a watched torrent needs a v1 or a v2 infohash")
