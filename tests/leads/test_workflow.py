"""The lead state machine and deconfliction, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from peerwatch.leads.workflow import (
    OUTCOMES,
    TRANSITIONS,
    ClaimConflictError,
    LeadError,
    LeadState,
    LeadWorkflow,
    WorkflowConfig,
)
from tests.leads.doubles import seed_targets

T0 = 1_764_000_000_000


def ticking(start: int = T0, step: int = 1000) -> Callable[[], int]:
    counter = itertools.count()
    return lambda: start + step * next(counter)


@pytest.fixture
def flow(engine: Engine) -> LeadWorkflow:
    seed_targets(engine, range(1, 120))
    return LeadWorkflow(engine, clock_ms=ticking())


def test_claim_shows_holder_and_since(flow: LeadWorkflow) -> None:
    assert flow.get(7).state is LeadState.NEW and flow.get(7).unit is None
    lead = flow.claim(7, unit="OFMIN", actor="alice")
    assert (lead.state, lead.unit, lead.holder) == (LeadState.CLAIMED, "OFMIN", "alice")
    again = flow.get(7)
    assert again == lead
    assert again.since_ms == T0
    assert again.as_json()["since"] == "2025-11-24T16:00:00Z"


def test_second_claim_is_refused_naming_the_holder(flow: LeadWorkflow) -> None:
    flow.claim(7, unit="OFMIN", actor="alice")
    with pytest.raises(ClaimConflictError) as exc:
        flow.claim(7, unit="BRI-75", actor="bob")
    message = str(exc.value)
    assert "held by unit OFMIN since 2025-11-24T16:00:00Z" in message
    assert "alice" in message
    assert flow.get(7).unit == "OFMIN"
    assert [h.action for h in flow.history(7)] == ["claim"]


def test_full_life_of_a_lead_and_its_history(flow: LeadWorkflow) -> None:
    flow.claim(3, unit="OFMIN", actor="alice", note="from operation")
    flow.set_state(3, "in-investigation", actor="alice", unit="OFMIN")
    flow.set_state(3, LeadState.REQUISITION_SENT, actor="alice")
    flow.set_state(3, "in-investigation", actor="carol")
    lead = flow.set_state(3, "closed", actor="alice", outcome="identified", note="done")
    assert (lead.state, lead.outcome, lead.unit) == (LeadState.CLOSED, "identified", "OFMIN")
    history = flow.history(3)
    assert [(h.from_state, h.to_state) for h in history] == [
        ("new", "claimed"),
        ("claimed", "in-investigation"),
        ("in-investigation", "requisition-sent"),
        ("requisition-sent", "in-investigation"),
        ("in-investigation", "closed"),
    ]
    assert [h.actor for h in history] == ["alice", "alice", "alice", "carol", "alice"]
    assert {h.unit for h in history} == {"OFMIN"}
    assert history[0].note == "from operation" and history[-1].outcome == "identified"
    assert [h.at_ms for h in history] == sorted(h.at_ms for h in history)
    with pytest.raises(LeadError, match=r"target 3 is closed: cannot release \(allowed: none"):
        flow.release(3, actor="alice")
    with pytest.raises(LeadError, match=r"target 3 is closed: cannot claim \(allowed: none"):
        flow.claim(3, unit="BRI-75", actor="bob")
    assert flow.get(3).state is LeadState.CLOSED


def test_release_returns_to_new_and_another_unit_may_claim(flow: LeadWorkflow) -> None:
    flow.claim(5, unit="OFMIN", actor="alice")
    with pytest.raises(ClaimConflictError, match="unit BRI-75 cannot release"):
        flow.release(5, actor="bob", unit="BRI-75")
    released = flow.release(5, actor="alice", unit="OFMIN")
    assert (released.state, released.unit, released.holder) == (LeadState.NEW, None, None)
    claimed = flow.claim(5, unit="BRI-75", actor="bob")
    assert claimed.unit == "BRI-75"
    assert [(h.action, h.from_unit, h.to_unit) for h in flow.history(5)] == [
        ("claim", None, "OFMIN"),
        ("release", "OFMIN", None),
        ("claim", None, "BRI-75"),
    ]


def test_transfer_moves_the_holder_and_restarts_since(flow: LeadWorkflow) -> None:
    first = flow.claim(9, unit="OFMIN", actor="alice")
    flow.set_state(9, "in-investigation", actor="alice")
    moved = flow.transfer(9, to_unit="BRI-75", actor="alice", unit="OFMIN", note="local case")
    assert (moved.state, moved.unit, moved.holder) == (LeadState.CLAIMED, "BRI-75", "alice")
    assert moved.since_ms is not None and first.since_ms is not None
    assert moved.since_ms > first.since_ms
    last = flow.history(9)[-1]
    assert (last.action, last.from_unit, last.to_unit, last.unit) == (
        "transfer",
        "OFMIN",
        "BRI-75",
        "OFMIN",
    )
    with pytest.raises(LeadError, match="already held by unit BRI-75"):
        flow.transfer(9, to_unit="BRI-75", actor="bob")
    with pytest.raises(ClaimConflictError, match="unit OFMIN cannot transfer"):
        flow.transfer(9, to_unit="SR-13", actor="alice", unit="OFMIN")


@pytest.mark.parametrize(
    ("setup", "call", "message"),
    [
        ([], lambda f: f.release(1, actor="a"), "target 1 is new: cannot release"),
        ([], lambda f: f.transfer(1, to_unit="X", actor="a"), "is new: cannot transfer"),
        (
            [],
            lambda f: f.set_state(1, "in-investigation", actor="a"),
            "is new: cannot state -> in-investigation (allowed: claim -> claimed)",
        ),
        (
            ["claim"],
            lambda f: f.set_state(1, "requisition-sent", actor="a"),
            "claimed: cannot state -> requisition-sent",
        ),
        (["claim"], lambda f: f.set_state(1, "closed", actor="a"), "needs an outcome"),
        (
            ["claim"],
            lambda f: f.set_state(1, "closed", actor="a", outcome="won"),
            "unknown outcome 'won'",
        ),
        (
            ["claim"],
            lambda f: f.set_state(1, "in-investigation", actor="a", outcome="identified"),
            "only given when closing",
        ),
        (["claim"], lambda f: f.set_state(1, "frozen", actor="a"), "unknown lead state 'frozen'"),
        ([], lambda f: f.claim(1, unit="U", actor="  "), "must not be empty"),
    ],
)
def test_illegal_moves_are_refused_and_change_nothing(
    flow: LeadWorkflow,
    setup: list[str],
    call: Callable[[LeadWorkflow], object],
    message: str,
) -> None:
    if setup:
        flow.claim(1, unit="OFMIN", actor="alice")
    before = (flow.get(1), flow.history(1))
    with pytest.raises(LeadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(flow)
    assert (flow.get(1), flow.history(1)) == before


def test_a_target_that_does_not_exist_is_refused_by_the_database(flow: LeadWorkflow) -> None:
    with pytest.raises(LeadError, match="no target 5000"):
        flow.claim(5000, unit="OFMIN", actor="alice")
    assert flow.history(5000) == []


def test_every_outcome_closes(flow: LeadWorkflow) -> None:
    for i, outcome in enumerate(OUTCOMES, start=100):
        flow.claim(i, unit="OFMIN", actor="alice")
        assert flow.set_state(i, "closed", actor="alice", outcome=outcome).outcome == outcome


def test_every_state_is_reachable_and_closed_is_final() -> None:
    reachable = {LeadState.NEW}
    for _ in range(len(LeadState)):
        reachable |= {t.target for t in TRANSITIONS if t.source in reachable}
    assert reachable == set(LeadState)
    assert not [t for t in TRANSITIONS if t.source is LeadState.CLOSED]


def test_unknown_unit_and_target_are_refused(engine: Engine) -> None:
    seed_targets(engine, [1, 12])
    flow = LeadWorkflow(
        engine,
        WorkflowConfig(unit_exists=lambda u: u in {"OFMIN"}, target_exists=lambda t: t < 10),
        clock_ms=ticking(),
    )
    with pytest.raises(LeadError, match="unknown unit 'NOPE'"):
        flow.claim(1, unit="NOPE", actor="alice")
    with pytest.raises(LeadError, match="no target 12"):
        flow.claim(12, unit="OFMIN", actor="alice")
    flow.claim(1, unit="OFMIN", actor="alice")
    with pytest.raises(LeadError, match="unknown unit 'NOPE'"):
        flow.transfer(1, to_unit="NOPE", actor="alice")
    assert flow.get(1).unit == "OFMIN"


def test_history_is_append_only_in_the_database(flow: LeadWorkflow, engine: Engine) -> None:
    flow.claim(4, unit="OFMIN", actor="alice")
    for statement in (
        "UPDATE lead_history SET actor = 'mallory'",
        "DELETE FROM lead_history",
    ):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    assert [h.actor for h in flow.history(4)] == ["alice"]


def _race(engine: Engine, target_id: int, units: list[str]) -> tuple[list[str], list[str]]:
    """Claim one target from one thread per unit, all at once; return winners and errors."""
    start = threading.Barrier(len(units))
    # On PostgreSQL both transactions are held just after reading the lead (the clock is read
    # there), so each has seen it unclaimed before either writes: the database must pick one.
    # SQLite serialises writers at BEGIN IMMEDIATE, so there the second reads after the first
    # commits; holding the first would only wait for the timeout.
    read_done = threading.Barrier(len(units), timeout=5)
    hold = engine.dialect.name == "postgresql"

    def clock() -> int:
        if hold:
            with contextlib.suppress(threading.BrokenBarrierError):
                read_done.wait()
        return T0

    winners: list[str] = []
    errors: list[str] = []

    def run(unit: str) -> None:
        flow = LeadWorkflow(engine, clock_ms=clock)
        start.wait()
        try:
            flow.claim(target_id, unit=unit, actor=f"user-{unit}")
            winners.append(unit)
        except ClaimConflictError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=run, args=(u,)) for u in units]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return winners, errors


def test_concurrent_claims_exactly_one_wins(engine: Engine) -> None:
    seed_targets(engine, [42])
    units = ["OFMIN", "BRI-75"]
    winners, errors = _race(engine, 42, units)
    assert len(winners) == 1, (winners, errors)
    assert len(errors) == 1 and f"held by unit {winners[0]}" in errors[0]
    flow = LeadWorkflow(engine, clock_ms=ticking())
    assert flow.get(42).unit == winners[0]
    assert [h.to_unit for h in flow.history(42)] == winners

    # Again once the row exists (released): now the race is on the row's version.
    flow.release(42, actor="x")
    winners2, errors2 = _race(engine, 42, units)
    assert len(winners2) == 1 and len(errors2) == 1, (winners2, errors2)
    assert flow.get(42).unit == winners2[0]
    assert [h.action for h in flow.history(42)] == ["claim", "release", "claim"]


def test_docs_state_table_is_the_transition_table() -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = doc.split("## States", 1)[1].split("\n\n", 2)[1]
    rows = [
        tuple(cell.strip() for cell in line.strip("|").split("|"))
        for line in section.splitlines()[2:]
    ]
    assert rows == [(t.action.value, t.source.value, t.target.value) for t in TRANSITIONS]
