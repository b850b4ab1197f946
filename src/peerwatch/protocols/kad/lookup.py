"""An iterative Kad lookup (node lookup or source search) as a sans-IO state machine.

The shape follows aMule's CSearch (src/kademlia/kademlia/Search.cpp, Go / JumpStart /
ProcessResponse / StorePacket): ask the closest known contacts for contacts still closer to the
target with KADEMLIA2_REQ, at most `alpha` requests in flight, closest first; a contact that does
not answer within `timeout` is given up (a "ghost"), and the lookup converges when the `k`
closest contacts still standing have all answered. A source search then sends
KADEMLIA2_SEARCH_SOURCE_REQ to the `k` closest contacts that answered (aMule sends the search
packet to contacts that are close to the target once they stop giving closer contacts). Sources
come back as SEARCH_RES, which a node sends only when it holds some (CIndexed::
SendValidSourceResult sends nothing otherwise), so search requests are not waited for here: the
driver lingers for late answers after `done`.

Answers are screened as in CSearch::ProcessResponse: a KADEMLIA2_RES from a contact we did not
ask is ignored, an answer listing more contacts than we asked for is dropped whole ("most likely
a malicious answer"), and within an answer the sender's own address and repeated addresses are
skipped, as are more than two contacts from one public /24.

Inputs: `next_requests(now, allow)` (what to send now; `allow` lets the driver's politeness
budget hold a contact back without the machine knowing about clocks), `on_response(id, contacts,
now)`, `on_timeout(now)`. Outputs: `Request`s, `done`, `closest()`, counters; `next_deadline()`
says when a timeout is due.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from peerwatch.protocols.kad.packets import KADEMLIA_FIND_VALUE, KadContact
from peerwatch.protocols.kad.routing import K

ALPHA = 3  # parallel requests: eMule's and aMule 2.3.3's ALPHA_QUERY (Defines.h; later aMule: 5)
TIMEOUT = 3.0  # seconds a contact has to answer before it is given up
MAX_QUERIES = 100  # at most this many contacts asked in one lookup: a bound on our traffic
MAX_CANDIDATES = 1000  # at most this many contacts remembered in one lookup: a bound on memory


class Kind(enum.Enum):
    FIND = "find"  # KADEMLIA2_REQ
    SEARCH = "search"  # KADEMLIA2_SEARCH_SOURCE_REQ


class State(enum.Enum):
    NEW = "new"
    IN_FLIGHT = "in flight"
    ANSWERED = "answered"
    FAILED = "failed"  # gave no answer in time: a ghost


# One table of the states a candidate contact moves through (house rule 3).
TRANSITIONS: dict[tuple[State, str], State] = {
    (State.NEW, "send"): State.IN_FLIGHT,
    (State.IN_FLIGHT, "answer"): State.ANSWERED,
    (State.IN_FLIGHT, "timeout"): State.FAILED,
}


@dataclass(frozen=True, slots=True)
class Request:
    kind: Kind
    contact: KadContact


@dataclass
class _Candidate:
    contact: KadContact
    state: State = State.NEW
    sent_at: float = 0.0
    searched: bool = False


@dataclass
class Lookup:
    """One lookup for `target`. `search=True` makes it a source search."""

    target: int
    seeds: Iterable[KadContact]
    search: bool = False
    alpha: int = ALPHA
    k: int = K
    timeout: float = TIMEOUT
    wanted: int = KADEMLIA_FIND_VALUE  # contacts asked for in each KADEMLIA2_REQ
    max_queries: int = MAX_QUERIES
    own_id: int | None = None  # never ask ourselves
    answers: int = 0
    timeouts: int = 0
    dropped_answers: int = 0  # unsolicited or oversized KADEMLIA2_RES
    _cands: dict[int, _Candidate] = field(default_factory=dict, init=False, repr=False)
    _queries: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.alpha < 1 or self.k < 1 or self.timeout <= 0:
            raise ValueError("alpha and k must be at least 1 and the timeout positive")
        for c in self.seeds:
            self._remember(c)

    # -- inputs -----------------------------------------------------------------------------

    def next_requests(
        self, now: float, allow: Callable[[KadContact], bool] = lambda c: True
    ) -> list[Request]:
        """What to send now: KADEMLIA2_REQs to the closest new contacts (up to `alpha` in
        flight), and once the lookup has converged, the search requests of a source search."""
        self.on_timeout(now)
        out: list[Request] = []
        in_flight = sum(1 for c in self._cands.values() if c.state is State.IN_FLIGHT)
        for cand in self._frontier():
            if in_flight >= self.alpha or self._queries >= self.max_queries:
                break
            if cand.state is State.NEW and allow(cand.contact):
                self._move(cand, "send")
                cand.sent_at = now
                self._queries += 1
                in_flight += 1
                out.append(Request(Kind.FIND, cand.contact))
        if self.search and self.converged:
            for cand in self._answered()[: self.k]:
                if not cand.searched and allow(cand.contact):
                    cand.searched = True
                    out.append(Request(Kind.SEARCH, cand.contact))
        return out

    def on_response(self, contact_id: int, contacts: Iterable[KadContact], now: float) -> bool:
        """A KADEMLIA2_RES from `contact_id`. False when it is ignored (not asked, too long)."""
        cand = self._cands.get(contact_id)
        if cand is None or cand.state is not State.IN_FLIGHT:
            self.dropped_answers += 1
            return False
        listed = list(contacts)
        if len(listed) > self.wanted:
            self.dropped_answers += 1
            self._move(cand, "timeout")  # a node that breaks the protocol is not used further
            return False
        self._move(cand, "answer")
        self.answers += 1
        seen_ips = {cand.contact.ip}
        subnets: dict[str, int] = {}
        for c in listed:
            if c.ip in seen_ips:
                continue
            seen_ips.add(c.ip)
            if _is_public(c.ip):
                net = c.ip.rsplit(".", 1)[0]
                if subnets.get(net, 0) >= 2:
                    continue
                subnets[net] = subnets.get(net, 0) + 1
            self._remember(c)
        return True

    def on_timeout(self, now: float) -> list[KadContact]:
        """Give up the contacts whose request is older than `timeout`; they are returned."""
        gone = []
        for cand in self._cands.values():
            if cand.state is State.IN_FLIGHT and now - cand.sent_at >= self.timeout:
                self._move(cand, "timeout")
                self.timeouts += 1
                gone.append(cand.contact)
        return gone

    # -- outputs ----------------------------------------------------------------------------

    @property
    def converged(self) -> bool:
        """Nothing in flight and no new contact among the `k` closest still standing (or the
        query budget is spent): asking further cannot bring anything closer."""
        if any(c.state is State.IN_FLIGHT for c in self._cands.values()):
            return False
        if self._queries >= self.max_queries:
            return True
        return all(c.state is not State.NEW for c in self._frontier())

    @property
    def done(self) -> bool:
        """Converged, and for a source search every search request has gone out."""
        if not self.converged:
            return False
        if not self.search:
            return True
        return all(c.searched for c in self._answered()[: self.k])

    def next_deadline(self) -> float | None:
        sent = [c.sent_at for c in self._cands.values() if c.state is State.IN_FLIGHT]
        return min(sent) + self.timeout if sent else None

    def closest(self, n: int | None = None) -> list[KadContact]:
        """The contacts that answered, closest to the target first."""
        return [c.contact for c in self._answered()[: n or self.k]]

    def state_of(self, contact_id: int) -> State | None:
        cand = self._cands.get(contact_id)
        return cand.state if cand else None

    @property
    def queried(self) -> int:
        return self._queries

    def failed(self) -> list[KadContact]:
        return [c.contact for c in self._cands.values() if c.state is State.FAILED]

    def searched(self) -> list[KadContact]:
        return [c.contact for c in self._cands.values() if c.searched]

    # -- internals --------------------------------------------------------------------------

    def _remember(self, contact: KadContact) -> None:
        if contact.id == self.own_id or contact.id in self._cands:
            return
        if len(self._cands) >= MAX_CANDIDATES:
            return
        self._cands[contact.id] = _Candidate(contact)

    def _frontier(self) -> list[_Candidate]:
        """The `k` closest candidates that have not failed, closest first."""
        alive = [c for c in self._cands.values() if c.state is not State.FAILED]
        alive.sort(key=lambda c: c.contact.id ^ self.target)
        return alive[: self.k]

    def _answered(self) -> list[_Candidate]:
        found = [c for c in self._cands.values() if c.state is State.ANSWERED]
        found.sort(key=lambda c: c.contact.id ^ self.target)
        return found

    @staticmethod
    def _move(cand: _Candidate, event: str) -> None:
        nxt = TRANSITIONS.get((cand.state, event))
        if nxt is None:
            raise AssertionError(f"no transition from {cand.state} on {event}")
        cand.state = nxt


def _is_public(ip: str) -> bool:
    try:
        return ipaddress.IPv4Address(ip).is_global
    except ValueError:
        return False
