"""Alerts: a new lead in a unit's jurisdiction, a claimed target seen again; idempotent; acked."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine

from peerwatch.leads.alerts import AlertKind, Alerts
from peerwatch.leads.workflow import LeadError, LeadWorkflow
from tests.leads.doubles import DAY, T0, FakeTargets, Obs, placement, seed_targets
from tests.leads.test_workflow import ticking


@pytest.fixture
def targets() -> FakeTargets:
    t = FakeTargets()
    t.add(1, [Obs("s1", 1, T0, "192.0.2.10", 51413, placement=placement("192.0.2.10"))])
    t.add(
        2,
        [Obs("s1", 2, T0, "198.51.100.7", 6881)],
        jurisdiction="59",
        unit="SR-59",
        score=70,
    )
    t.add(3, [Obs("s1", 3, T0, "203.0.113.5", 6881)], jurisdiction=None, unit=None)
    return t


@pytest.fixture
def flow(engine: Engine) -> LeadWorkflow:
    seed_targets(engine, range(1, 10))
    # Claims happen a day after the first observations.
    return LeadWorkflow(engine, clock_ms=ticking(T0 + DAY))


@pytest.fixture
def alerts(engine: Engine, targets: FakeTargets, flow: LeadWorkflow) -> Alerts:
    return Alerts(engine, targets, flow, clock_ms=ticking(T0 + 3 * DAY))


def test_new_leads_go_to_the_unit_of_their_jurisdiction_once(alerts: Alerts) -> None:
    written = alerts.scan()
    assert sorted((a.unit, a.kind, a.target_id) for a in written) == [
        ("BRI-75", AlertKind.NEW_LEAD, 1),
        ("SR-59", AlertKind.NEW_LEAD, 2),
    ]  # target 3 has no unit: nobody to alert
    assert alerts.scan() == []
    assert [a.target_id for a in alerts.list(unit="SR-59")] == [2]
    lille = alerts.list(unit="SR-59")[0]
    assert lille.detail["jurisdiction"] == "59" and "new lead T2" in lille.sentence()


def test_scan_for_one_unit_only_writes_its_alerts(alerts: Alerts) -> None:
    assert [a.unit for a in alerts.scan(unit="SR-59")] == ["SR-59"]
    assert [a.unit for a in alerts.scan()] == ["BRI-75"]


def test_claimed_target_seen_again_after_the_claim(
    alerts: Alerts, targets: FakeTargets, flow: LeadWorkflow
) -> None:
    alerts.scan()
    claim = flow.claim(1, unit="BRI-75", actor="alice")
    assert claim.since_ms is not None
    # Observations before the claim are not "again"; none after it yet.
    assert alerts.scan() == []
    targets.see(1, Obs("s1", 10, claim.since_ms + 5000, "192.0.2.10", 51413))
    targets.see(1, Obs("s1", 11, claim.since_ms + 9000, "192.0.2.12", 51413, method="pex"))
    (seen,) = alerts.scan()
    assert (seen.unit, seen.kind, seen.target_id, seen.observations) == (
        "BRI-75",
        AlertKind.SEEN_AGAIN,
        1,
        2,
    )
    assert (seen.first_ms, seen.last_ms) == (claim.since_ms + 5000, claim.since_ms + 9000)
    assert seen.detail["ips"] == ["192.0.2.10", "192.0.2.12"]
    assert seen.detail["evidence"] == ["s1/10", "s1/11"]
    assert alerts.scan() == []  # idempotent
    # A later observation: one new alert covering only it.
    targets.see(1, Obs("s1", 12, claim.since_ms + 20_000, "192.0.2.10", 51413))
    (later,) = alerts.scan()
    assert (later.observations, later.first_ms) == (1, claim.since_ms + 20_000)
    assert [a.kind for a in alerts.list(unit="BRI-75")] == [
        AlertKind.NEW_LEAD,
        AlertKind.SEEN_AGAIN,
        AlertKind.SEEN_AGAIN,
    ]


def test_transfer_restarts_seen_again_for_the_new_holder(
    alerts: Alerts, targets: FakeTargets, flow: LeadWorkflow
) -> None:
    flow.claim(2, unit="SR-59", actor="bob")
    moved = flow.transfer(2, to_unit="OFMIN", actor="bob")
    assert moved.since_ms is not None
    targets.see(2, Obs("s1", 20, moved.since_ms + 1000, "198.51.100.7", 6881))
    written = alerts.scan()
    assert [(a.unit, a.kind) for a in written if a.target_id == 2] == [
        ("OFMIN", AlertKind.SEEN_AGAIN)
    ]


def test_released_lead_is_announced_again_closed_is_silent(
    alerts: Alerts, targets: FakeTargets, flow: LeadWorkflow
) -> None:
    alerts.scan()
    flow.claim(2, unit="SR-59", actor="bob")
    flow.release(2, actor="bob")
    assert [(a.unit, a.target_id) for a in alerts.scan()] == [("SR-59", 2)]
    lead = flow.claim(2, unit="SR-59", actor="bob")
    flow.set_state(2, "closed", actor="bob", outcome="no-offence")
    assert lead.since_ms is not None
    targets.see(2, Obs("s1", 30, lead.since_ms + 1000, "198.51.100.7", 6881))
    assert alerts.scan() == []


def test_acknowledge(alerts: Alerts) -> None:
    alerts.scan()
    (paris,) = alerts.list(unit="BRI-75")
    with pytest.raises(LeadError, match="is for unit BRI-75, not SR-59"):
        alerts.acknowledge(paris.id, actor="carol", unit="SR-59")
    with pytest.raises(LeadError, match="no alert 999"):
        alerts.acknowledge(999, actor="carol")
    done = alerts.acknowledge(paris.id, actor="alice", unit="BRI-75")
    assert done.acknowledged_by == "alice" and done.acknowledged_ms is not None
    again = alerts.acknowledge(paris.id, actor="mallory")
    assert (again.acknowledged_by, again.acknowledged_ms) == ("alice", done.acknowledged_ms)
    assert alerts.list(unit="BRI-75") == []
    assert [a.id for a in alerts.list(unit="BRI-75", include_acknowledged=True)] == [paris.id]
    assert alerts.scan() == []  # acknowledged alerts are not raised again


def test_concurrent_scans_write_each_alert_once(
    engine: Engine, targets: FakeTargets, flow: LeadWorkflow
) -> None:
    start = threading.Barrier(4)
    written: list[int] = []
    failures: list[BaseException] = []

    def scan() -> None:
        scanner = Alerts(engine, targets, flow, clock_ms=ticking(T0 + 3 * DAY))
        start.wait()
        try:
            written.extend(a.id for a in scanner.scan())
        except BaseException as exc:  # collected: a thread's exception would be lost
            failures.append(exc)

    threads = [threading.Thread(target=scan) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert failures == []
    listed = Alerts(engine, targets, flow).list()
    assert sorted(written) == sorted(a.id for a in listed) and len(listed) == 2
