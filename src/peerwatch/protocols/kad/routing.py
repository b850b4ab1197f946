"""A Kad routing table: contacts in k-buckets by XOR distance to our own id (sans-IO).

aMule keeps a binary tree of zones (src/kademlia/routing/RoutingZone.cpp, RoutingBin.cpp): a leaf
bin holds at most K = 10 contacts (src/kademlia/kademlia/Defines.h) and splits while it covers our
own id (or is within KBASE levels of it). We keep the classic Kademlia form of the same idea: one
bucket per length of the common prefix with our id (bucket i holds ids whose distance to us has
its highest set bit at 127 - i), K contacts each. For the sensor's short-lived searches this
gives the same answers to "the n closest contacts to a target" that matter for a lookup; aMule's
extra splitting near its own id (KBASE = 4) only matters to a long-running node.

A full bucket keeps its old contacts and refuses the new one, as aMule's CRoutingBin::AddContact
does (old contacts that still answer are the most reliable); `remove` lets the owner drop one
that stopped answering (CRoutingZone's expiry of contacts whose "type" reached 4).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from peerwatch.protocols.kad.packets import ID_BITS, KadContact

K = 10  # contacts per bucket, aMule's K (src/kademlia/kademlia/Defines.h)


def distance(a: int, b: int) -> int:
    """Kademlia's XOR metric on CUInt128 values (CUInt128::XOR): a smaller number is closer."""
    return a ^ b


def bucket_index(own_id: int, other: int) -> int:
    """The bucket of `other`: the length of its common prefix with `own_id` (0..127)."""
    d = own_id ^ other
    if d == 0:
        raise ValueError("our own id has no bucket")
    return ID_BITS - d.bit_length()


@dataclass
class RoutingTable:
    own_id: int
    k: int = K
    _buckets: list[list[KadContact]] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("k must be at least 1")
        self._buckets = [[] for _ in range(ID_BITS)]

    def add(self, contact: KadContact) -> bool:
        """Add or refresh a contact. False for our own id, or a new contact in a full bucket.

        A known id is refreshed in place (newest last); a known address that comes back with a
        different id replaces the old entry (aMule's CRoutingZone::Add checks ip and id)."""
        if contact.id == self.own_id:
            return False
        bucket = self._buckets[bucket_index(self.own_id, contact.id)]
        for i, old in enumerate(bucket):
            if old.id == contact.id:
                del bucket[i]
                bucket.append(contact)
                return True
        for old in self.contacts():
            if old.address == contact.address:
                self.remove(old.id)
                break
        if len(bucket) >= self.k:
            return False
        bucket.append(contact)
        return True

    def remove(self, kad_id: int) -> bool:
        if kad_id == self.own_id:
            return False
        bucket = self._buckets[bucket_index(self.own_id, kad_id)]
        for i, old in enumerate(bucket):
            if old.id == kad_id:
                del bucket[i]
                return True
        return False

    def get(self, kad_id: int) -> KadContact | None:
        if kad_id == self.own_id:
            return None
        for c in self._buckets[bucket_index(self.own_id, kad_id)]:
            if c.id == kad_id:
                return c
        return None

    def contacts(self) -> list[KadContact]:
        return [c for bucket in self._buckets for c in bucket]

    def closest(self, target: int, n: int, *, exclude: int | None = None) -> list[KadContact]:
        """The `n` contacts closest to `target` by XOR distance, closest first
        (CRoutingZone::GetClosestTo)."""
        found = [c for c in self.contacts() if c.id != exclude]
        found.sort(key=lambda c: c.id ^ target)
        return found[:n]

    def bucket_sizes(self) -> list[int]:
        return [len(b) for b in self._buckets]

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets)
