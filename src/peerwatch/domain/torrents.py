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
    other_hashes: tuple[bytes, ...] = ()  # a hybrid's truncated v2 hash: peers may use either

    @property
    def lookup_hashes(self) -> tuple[bytes, ...]:
        """Every 20-byte id the swarm may be found under on the DHT and at trackers (BEP 52: a
        hybrid torrent's peers announce the v1 hash, the truncated v2 hash, or both)."""
        return (self.wire_hash, *self.other_hashes)

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
            other = (btmh[:20],) if btmh is not None else ()
            return cls(btih, f"btih:{btih.hex()}", name, trackers, piece_count, other)
        if btmh is not None:
            return cls(btmh[:20], f"btmh:{btmh.hex()}", name, trackers, piece_count)
        raise ValueError("a watched torrent needs a v1 or a v2 infohash")
