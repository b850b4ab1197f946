"""The iterative lookup against a scripted network: closest-first, alpha, ghosts, screening."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.protocols.kad.lookup import TRANSITIONS, Kind, Lookup, State
from peerwatch.protocols.kad.packets import KadContact
from peerwatch.protocols.kad.routing import RoutingTable


class Scripted:
    """A network as data: node id -> its routing table; `ghosts` never answer."""

    def __init__(self, n: int, ghosts: int, seed: int) -> None:
        rng = random.Random(seed)
        self.contacts = [
            KadContact(rng.getrandbits(128), f"127.0.17.{i + 1}", 4672, 4662, 8)
            for i in range(n + ghosts)
        ]
        self.ghosts = {c.id for c in self.contacts[n:]}
        self.tables = {}
        for c in self.contacts:
            table = RoutingTable(c.id)
            for other in self.contacts:
                table.add(other)
            self.tables[c.id] = table

    def run(self, lookup: Lookup, wanted: int) -> tuple[int, list[Kind]]:
        """Drive the lookup to the end; returns the most requests seen in flight, and kinds."""
        now, most, kinds = 0.0, 0, []
        pending: list[KadContact] = []
        for _ in range(10_000):
            reqs = lookup.next_requests(now)
            kinds += [r.kind for r in reqs]
            pending += [r.contact for r in reqs if r.kind is Kind.FIND]
            most = max(most, len(pending))
            if lookup.done:
                break
            if pending:
                c = pending.pop(0)
                if c.id not in self.ghosts:
                    lookup.on_response(c.id, self.tables[c.id].closest(lookup.target, wanted), now)
                else:
                    pending.append(c)  # it stays in flight until its timeout
            now += 0.5
            for gone in lookup.on_timeout(now):
                pending.remove(gone)
        return most, kinds


def test_transition_table() -> None:
    assert TRANSITIONS == {
        (State.NEW, "send"): State.IN_FLIGHT,
        (State.IN_FLIGHT, "answer"): State.ANSWERED,
        (State.IN_FLIGHT, "timeout"): State.FAILED,
    }


def test_docs_state_table_matches_the_code() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "kad.md").read_text()
    section = doc.split("(`lookup.TRANSITIONS`", 1)[1].split("\n\n", 2)[1]
    rows = [
        tuple(c.strip() for c in line.strip("|").split("|")) for line in section.splitlines()[2:]
    ]
    assert rows == [(s.value, i, t.value) for (s, i), t in TRANSITIONS.items()]


@given(st.integers(0, 10_000), st.integers(0, 5))
@settings(max_examples=40, deadline=None)
def test_finds_the_true_closest_despite_ghosts(seed: int, ghosts: int) -> None:
    net = Scripted(40, ghosts, seed)
    rng = random.Random(seed + 1)
    target = rng.getrandbits(128)
    seeds = [net.contacts[0]]
    # each answer lists 16 contacts, enough to reach past up to 5 ghosts among the closest
    # (with 11, a ghost-crowded neighbourhood can hide the 10th live node from every answer)
    lookup = Lookup(target, seeds, search=True, alpha=3, k=10, timeout=3.0, wanted=16)
    most, kinds = net.run(lookup, wanted=16)
    assert lookup.done
    assert most <= 3  # never more than alpha in flight
    live = [c for c in net.contacts if c.id not in net.ghosts]
    truth = sorted(live, key=lambda c: c.id ^ target)[:10]
    assert lookup.closest(10) == truth
    # every ghost that was asked is failed, none answered
    for c in lookup.failed():
        assert c.id in net.ghosts
    assert lookup.timeouts == len(lookup.failed())
    # the search requests go to exactly the 10 closest that answered
    assert sorted(c.id for c in lookup.searched()) == sorted(c.id for c in truth)
    assert kinds.count(Kind.SEARCH) == 10


def test_ghost_closest_to_target_is_given_up_after_timeout() -> None:
    net = Scripted(20, 1, seed=3)
    ghost = net.contacts[-1]
    target = ghost.id ^ 1  # the ghost is the closest node to the target
    lookup = Lookup(target, [net.contacts[0]], alpha=2, k=5, timeout=3.0, wanted=5)
    net.run(lookup, wanted=5)
    assert lookup.state_of(ghost.id) is State.FAILED
    assert ghost not in lookup.closest()
    assert lookup.done and not lookup.search


def test_unsolicited_and_oversized_answers_are_dropped() -> None:
    a = KadContact(1, "127.0.17.1", 4672, 4662, 8)
    b = KadContact(2, "127.0.17.2", 4672, 4662, 8)
    lookup = Lookup(0, [a, b], alpha=1, wanted=2)
    assert lookup.on_response(b.id, [], 0.0) is False  # never asked
    (req,) = lookup.next_requests(0.0)
    assert req.contact == a and req.kind is Kind.FIND
    many = [KadContact(10 + i, f"127.0.17.{10 + i}", 4672, 4662, 8) for i in range(3)]
    assert lookup.on_response(a.id, many, 0.1) is False  # 3 contacts when we asked for 2
    assert lookup.dropped_answers == 2
    assert lookup.state_of(10) is None  # nothing from the oversized answer was taken


def test_answer_screening_skips_sender_ip_and_repeats() -> None:
    a = KadContact(1, "127.0.17.1", 4672, 4662, 8)
    lookup = Lookup(0, [a], alpha=1, wanted=11)
    lookup.next_requests(0.0)
    listed = [
        KadContact(5, "127.0.17.1", 4673, 4662, 8),  # the sender's own address
        KadContact(6, "127.0.17.6", 4672, 4662, 8),
        KadContact(7, "127.0.17.6", 4673, 4662, 8),  # repeated address
        KadContact(8, "8.8.8.1", 4672, 4662, 8),
        KadContact(9, "8.8.8.2", 4672, 4662, 8),
        KadContact(11, "8.8.8.3", 4672, 4662, 8),  # third of one public /24
    ]
    assert lookup.on_response(1, listed, 0.1)
    assert [lookup.state_of(i) for i in (5, 6, 7, 8, 9, 11)] == [
        None,
        State.NEW,
        None,
        State.NEW,
        State.NEW,
        None,
    ]


def test_allow_holds_contacts_back_and_deadline() -> None:
    cs = [KadContact(i + 1, f"127.0.17.{i + 1}", 4672, 4662, 8) for i in range(5)]
    lookup = Lookup(0, cs, alpha=3, timeout=2.0)
    assert lookup.next_requests(0.0, allow=lambda c: False) == []
    assert lookup.next_deadline() is None
    reqs = lookup.next_requests(1.0, allow=lambda c: c.id != 1)
    assert [r.contact.id for r in reqs] == [2, 3, 4]  # closest first, 1 held back
    assert lookup.next_deadline() == 3.0
    assert lookup.on_timeout(2.9) == []
    assert len(lookup.on_timeout(3.0)) == 3
    assert not lookup.done  # contact 1 and 5 are still new
