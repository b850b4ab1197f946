"""The identity rules: which target an observation belongs to, and the sentence that says why.

Pure logic over in-memory state (no database, no clock), so that every rule is tested alone. The
unit is the *endpoint*: a network, an address and a port. A BitTorrent peer id is made anew for
every session (BEP 20), so it never links anything; what stays is the listening endpoint and,
across a change of address, the client and its listen port. In order (docs/leads.md):

1. endpoint      the same address and port on the same network, seen within `window_ms`;
   user-hash     the same stable peer key (the eD2k user hash, `peer_key`) on the same network,
                 seen within `window_ms`, held by exactly one target, whatever the address;
2. ipv6-prefix   the same IPv6 /64 and port within `window_ms` (privacy addresses, RFC 8981,
                 change the interface half of the address, not the /64 a subscriber is given);
3. address       an observation without a port, at an address where exactly one target was
                 seen within `window_ms`;
4. port-change   the same address (or /64) and the same client within `window_ms`, another listen
                 port, and exactly one such target;
5. address-change the same client with the same listen port, at another address, after that
                 target went silent there (at least `move_min_gap_ms`, at most `relink_gap_ms`
                 before), exactly one such target, not seen at its old address since, and the
                 same ASN when both addresses' ASNs are known;
6. origin        otherwise, a new target.

An observation that carries a peer key never joins a target whose endpoints carry another key, by
any rule: two user hashes are two eD2k clients, even at one address and port.

Two different peers behind one address (NAT) have different ports, and differ in client too or
stay apart by rule 4's "exactly one": they stay two targets. A claim (DHT, tracker, PEX list) has no
client, so it joins a target only by endpoint (rules 1-3).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    window_ms: int = 7 * DAY_MS  # how long an endpoint or address stays the same peer's
    relink_gap_ms: int = 3 * DAY_MS  # longest silence across which a changed address is linked
    # Shortest silence at the old address before a new one counts as a move: two peers with the
    # same client and port seen in one sweep, moments apart, are two peers, not one that moved.
    move_min_gap_ms: int = 10 * 60_000
    same_asn: bool = True  # an address change links only within one ASN (when both are known)


# Networks whose peers keep one identity across sessions and addresses. eD2k: the user hash, made
# once by the client and kept in its preferences (aMule Preferences.cpp, `preferences.dat`) and sent
# in every HELLO. Not BitTorrent: its peer id is new for every session (BEP 20).
STABLE_PEER_ID_NETWORKS = frozenset({"ed2k"})


def peer_key(network: str, peer_id: object) -> str | None:
    """The stable identity an observation's `peer_id` gives on its network, or None."""
    if network not in STABLE_PEER_ID_NETWORKS or not isinstance(peer_id, str):
        return None
    key = peer_id.strip().lower()
    if len(key) != 32 or any(c not in "0123456789abcdef" for c in key):
        return None
    return key


def address_key(ip: str) -> str:
    """The address as identity rules compare it: IPv4 as is, IPv6 as its /64."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _where(ip: str, port: int | None) -> str:
    return ip if port is None else f"{ip} port {port}"


def _hours(ms: int) -> str:
    if ms % DAY_MS == 0:
        return f"{ms // DAY_MS} days"
    return f"{ms / HOUR_MS:g} hours"


@dataclass(slots=True)
class LinkState:
    """One endpoint of one target, with the link that brought it in (a row of `target_links`)."""

    id: int
    target_id: int
    kind: str
    reason: str
    network: str
    ip: str
    port: int | None
    client: str | None
    asn: int | None
    first_ms: int
    last_ms: int
    sensor_id: str
    seq: int
    observations: int = 0
    positive_last_ms: int | None = None  # last "possession" or "claim" here
    dirty: bool = False  # changed since loaded
    new: bool = False  # not yet in the database
    address: str = ""  # address_key(ip), computed once
    peer_key: str | None = None  # the stable peer identity first seen here (eD2k user hash)

    def __post_init__(self) -> None:
        if not self.address:
            self.address = address_key(self.ip)


@dataclass(frozen=True, slots=True)
class Seen:
    """What the rules look at in one observation."""

    sensor_id: str
    seq: int
    observed_ms: int
    network: str
    ip: str
    port: int | None
    client: str | None
    asn: int | None
    peer_key: str | None = None  # peer_key(network, peer_id)


@dataclass(frozen=True, slots=True)
class Decision:
    """`target_id` None: a new target. `link` is the existing link (rule 1) or the new one's
    kind and reason (rules 2-6)."""

    target_id: int | None
    existing: LinkState | None
    kind: str
    reason: str


@dataclass
class Linker:
    """The identity state over the links loaded from the database, updated as observations are
    assigned in time order."""

    config: IdentityConfig
    _by_endpoint: dict[tuple[str, str, int | None], LinkState] = field(default_factory=dict)
    _by_address: dict[str, list[LinkState]] = field(default_factory=dict)
    _by_fingerprint: dict[tuple[str, str, int], list[LinkState]] = field(default_factory=dict)
    _by_target: dict[int, list[LinkState]] = field(default_factory=dict)
    _by_peer_key: dict[tuple[str, str], list[LinkState]] = field(default_factory=dict)
    _target_keys: dict[int, set[str]] = field(default_factory=dict)

    def load(self, links: Iterable[LinkState]) -> None:
        for link in sorted(links, key=lambda x: (x.last_ms, x.id)):
            self.add(link)

    def add(self, link: LinkState) -> None:
        self._by_endpoint[(link.network, link.ip, link.port)] = link
        self._by_address.setdefault(link.address, []).append(link)
        self._by_target.setdefault(link.target_id, []).append(link)
        if link.client is not None and link.port is not None:
            self._by_fingerprint.setdefault((link.network, link.client, link.port), []).append(link)
        if link.peer_key is not None:
            self._index_key(link)

    def _index_key(self, link: LinkState) -> None:
        assert link.peer_key is not None
        self._by_peer_key.setdefault((link.network, link.peer_key), []).append(link)
        self._target_keys.setdefault(link.target_id, set()).add(link.peer_key)

    def note_peer_key(self, link: LinkState, key: str) -> None:
        """A peer key first learned on an existing endpoint (a connect failure, then a HELLO)."""
        link.peer_key = key
        self._index_key(link)

    def _compatible(self, target_id: int, o: Seen) -> bool:
        """False when the observation's peer key differs from every key the target holds."""
        if o.peer_key is None:
            return True
        keys = self._target_keys.get(target_id)
        return not keys or o.peer_key in keys

    def note_client(self, link: LinkState, client: str) -> None:
        """A client first learned on an existing endpoint (a claim, then a probe)."""
        link.client = client
        if link.port is not None:
            self._by_fingerprint.setdefault((link.network, client, link.port), []).append(link)

    def decide(self, o: Seen) -> Decision:
        w = self.config.window_ms
        # 1. endpoint
        link = self._by_endpoint.get((o.network, o.ip, o.port))
        if link is not None and o.observed_ms - link.last_ms > w:
            link = None
        # user-hash: stronger than an endpoint, so tried first when the observation has a key.
        if o.peer_key is not None:
            held: dict[int, LinkState] = {}
            for x in self._by_peer_key.get((o.network, o.peer_key), ()):
                best = held.get(x.target_id)
                if abs(o.observed_ms - x.last_ms) <= w and (
                    best is None or x.last_ms > best.last_ms
                ):
                    held[x.target_id] = x
            if len(held) == 1:
                (x,) = held.values()
                if link is not None and link.target_id == x.target_id:
                    return Decision(link.target_id, link, link.kind, link.reason)
                return Decision(
                    x.target_id,
                    None,
                    "user-hash",
                    f"linked because the same {o.network} user hash {o.peer_key} was seen at "
                    f"{_where(x.ip, x.port)} ({iso(x.last_ms)}) and now at "
                    f"{_where(o.ip, o.port)}, within {_hours(w)} (a client keeps its user hash "
                    "across addresses)",
                )
        if link is not None and self._compatible(link.target_id, o):
            return Decision(link.target_id, link, link.kind, link.reason)
        addr = address_key(o.ip)
        near = [
            x
            for x in self._by_address.get(addr, ())
            if abs(o.observed_ms - x.last_ms) <= w and self._compatible(x.target_id, o)
        ]
        # 2. ipv6-prefix
        if ":" in o.ip and o.port is not None:
            same = {x.target_id: x for x in near if x.port == o.port and x.network == o.network}
            if len(same) == 1:
                (x,) = same.values()
                return Decision(
                    x.target_id,
                    None,
                    "ipv6-prefix",
                    f"linked because {o.ip} is in the same IPv6 /64 ({addr}) with the same port "
                    f"{o.port} as {x.ip}, seen {iso(x.last_ms)}, within "
                    f"{_hours(w)} (privacy addresses change inside a /64)",
                )
        targets = {x.target_id for x in near}
        # 3. address
        if o.port is None and len(targets) == 1:
            x = max(near, key=lambda y: y.last_ms)
            return Decision(
                x.target_id,
                None,
                "address",
                f"linked because {o.ip} (no port recorded) is the address where only this "
                f"target was seen within {_hours(w)} (last {iso(x.last_ms)})",
            )
        if o.client is None or o.port is None:
            return self._origin(o)
        # 4. port-change
        same_client = {x.target_id: x for x in near if x.client == o.client}
        if len(same_client) == 1:
            (x,) = same_client.values()
            return Decision(
                x.target_id,
                None,
                "port-change",
                f"linked because the same client {o.client!r} was seen at the same address "
                f"{x.ip} on port {x.port} ({iso(x.last_ms)}) and now on port {o.port}, within "
                f"{_hours(w)}",
            )
        # 5. address-change
        gap = self.config.relink_gap_ms
        moved: dict[int, LinkState] = {}
        for x in self._by_fingerprint.get((o.network, o.client, o.port), ()):
            silence = o.observed_ms - x.last_ms
            if x.address == addr or not self.config.move_min_gap_ms <= silence <= gap:
                continue
            if not self._compatible(x.target_id, o):
                continue
            if self.config.same_asn and None not in (x.asn, o.asn) and x.asn != o.asn:
                continue
            best = moved.get(x.target_id)
            if best is None or x.last_ms > best.last_ms:
                moved[x.target_id] = x
        # A target still being seen at its old address after this observation cannot have moved;
        # and a fingerprint shared by two targets is a default setting, not an identity.
        if len(moved) == 1:
            (x,) = moved.values()
            if not self._active_elsewhere(x.target_id, addr, o.observed_ms):
                asn = f", same ASN {o.asn}" if o.asn is not None and x.asn == o.asn else ""
                return Decision(
                    x.target_id,
                    None,
                    "address-change",
                    f"linked because the same client {o.client!r} with the same listen port "
                    f"{o.port} moved from {x.ip} (last seen {iso(x.last_ms)}) to {o.ip} "
                    f"({iso(o.observed_ms)}){asn}, within {_hours(gap)}, and no other target "
                    "has that client and port",
                )
        return self._origin(o)

    def _active_elsewhere(self, target_id: int, addr: str, at_ms: int) -> bool:
        return any(
            x.address != addr and x.last_ms > at_ms for x in self._by_target.get(target_id, ())
        )

    def _origin(self, o: Seen) -> Decision:
        port = "" if o.port is None else f" port {o.port}"
        client = "" if o.client is None else f", client {o.client!r}"
        return Decision(
            None,
            None,
            "origin",
            f"first seen at {o.ip}{port}{client} ({iso(o.observed_ms)}); no identity rule "
            "linked it to an earlier target",
        )
