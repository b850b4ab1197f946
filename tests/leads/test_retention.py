"""Retention: never-claimed targets' old observations are purged, the chain still verifies, the
purge is logged; claimed targets and targets in an operation keep everything."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, func, insert, select, text
from sqlalchemy.exc import DBAPIError

from peerwatch.errors import InputError
from peerwatch.evidence.bundle import export_bundle, verify_bundle
from peerwatch.evidence.keys import SensorKey, load_or_create
from peerwatch.evidence.log import (
    EvidenceLog,
    PurgedRecord,
    RecordFilter,
    iter_chain,
    iter_records,
    sensor_keys,
)
from peerwatch.evidence.record import Observation
from peerwatch.evidence.verify import ChainReport, Problem, verify_stored
from peerwatch.leads.retention import DAY_MS, Retention, RetentionConfig
from peerwatch.leads.workflow import LeadWorkflow
from peerwatch.storage.schema import (
    evidence_records,
    operation_targets,
    operations,
    target_observations,
)
from tests.leads.doubles import seed_targets

T0 = 1_764_000_000_000
NOW = T0 + 200 * DAY_MS
# seq -> (target, age in days); seq 9 is assigned to no target yet.
LAYOUT = {
    1: (1, 199),  # claimed target: kept
    2: (1, 10),
    3: (2, 199),  # never claimed: purged when older than the period
    4: (2, 190),
    5: (2, 10),  # recent: kept
    6: (3, 199),  # in an operation: kept
    7: (2, 181),
    8: (4, 100),  # never claimed, 100 days: purged only with --days < 100
    9: (None, 199),  # not assigned to any target: kept
}


@pytest.fixture
def key(tmp_path: Path) -> SensorKey:
    return load_or_create(tmp_path / "keys", "s1")


@pytest.fixture
def filled(engine: Engine, key: SensorKey) -> Engine:
    obs = [
        Observation(
            observed_ms=NOW - age * DAY_MS,
            network="bittorrent",
            method="bitfield",
            content_key="btih:" + f"{seq:040x}",
            ip=f"192.0.2.{seq}",
            port=6881,
            outcome="possession",
        )
        for seq, (_, age) in sorted(LAYOUT.items())
    ]
    EvidenceLog(engine, key).append(obs)
    seed_targets(engine, [1, 2, 3, 4])
    with engine.begin() as conn:
        for seq, (target, age) in LAYOUT.items():
            if target is None:
                continue
            conn.execute(
                insert(target_observations).values(
                    sensor_id="s1",
                    seq=seq,
                    target_id=target,
                    link_id=target,
                    observed_ms=NOW - age * DAY_MS,
                    network="bittorrent",
                    method="bitfield",
                    outcome="possession",
                    content_key="btih:" + f"{seq:040x}",
                    ip=f"192.0.2.{seq}",
                    port=6881,
                )
            )
        op_id = conn.execute(
            insert(operations)
            .values(name="op", created_ms=T0, created_by="lead", filters="{}", target_count=1)
            .returning(operations.c.id)
        ).scalar_one()
        conn.execute(
            insert(operation_targets).values(operation_id=op_id, target_id=3, snapshot="{}")
        )
    LeadWorkflow(engine).claim(1, unit="OFMIN", actor="alice")
    return engine


def _verify(engine: Engine, key: SensorKey) -> tuple[list[Problem], list[ChainReport]]:
    problems: list[Problem] = []
    reports: list[ChainReport] = []
    for item in verify_stored(
        iter_chain(engine), {"s1": key.private.public_key()}, sensor_keys(engine)
    ):
        (reports if isinstance(item, ChainReport) else problems).append(item)  # type: ignore[arg-type]
    return problems, reports


def _stored_seqs(engine: Engine) -> list[int]:
    return [r.seq for r in iter_records(engine)]


def test_purge_keeps_claimed_operation_recent_and_unassigned(
    filled: Engine, key: SensorKey
) -> None:
    retention = Retention(filled, clock_ms=lambda: NOW)
    dry = retention.purge(actor="dpo", dry_run=True)
    assert (dry.dry_run, dry.id, dry.records, dry.targets) == (True, None, 3, 1)
    assert _stored_seqs(filled) == list(range(1, 10)) and retention.log() == []

    done = retention.purge(actor="dpo")
    assert (done.records, done.targets, done.days) == (3, 1, 180)
    assert done.detail == {
        "sensors": {"s1": {"records": 3, "first_seq": 3, "last_seq": 7}},
        "targets": [2],
    }
    assert _stored_seqs(filled) == [1, 2, 5, 6, 8, 9]
    with filled.connect() as conn:
        ips = set(conn.execute(select(evidence_records.c.ip)).scalars())
        copies = sorted(conn.execute(select(target_observations.c.seq)).scalars())
    assert {"192.0.2.3", "192.0.2.4", "192.0.2.7"}.isdisjoint(ips)
    assert copies == [1, 2, 5, 6, 8]

    (logged,) = retention.log()
    assert (logged.id, logged.actor, logged.records, logged.cutoff_ms) == (
        done.id,
        "dpo",
        3,
        NOW - 180 * DAY_MS,
    )
    assert "never claimed" in logged.rule and "180 days" in logged.rule
    assert logged.as_json()["at"] == "2026-06-12T16:00:00Z"

    # Nothing more is due: a second purge purges nothing but is logged too.
    assert retention.purge(actor="dpo").records == 0
    assert [p.records for p in retention.log()] == [3, 0]


def test_chain_still_verifies_and_shows_the_purged_records(filled: Engine, key: SensorKey) -> None:
    Retention(filled, clock_ms=lambda: NOW).purge(actor="dpo")
    entries = list(iter_chain(filled))
    assert [e.seq for e in entries] == list(range(1, 10))
    assert [e.seq for e in entries if isinstance(e, PurgedRecord)] == [3, 4, 7]
    problems, reports = _verify(filled, key)
    assert problems == []
    assert (reports[0].checked, reports[0].purged, reports[0].last_seq) == (9, 3, 9)


def test_tampering_with_a_purged_record_is_caught(filled: Engine, key: SensorKey) -> None:
    Retention(filled, clock_ms=lambda: NOW).purge(actor="dpo")
    # The table is append-only: even its owner cannot edit it without dropping the trigger.
    with pytest.raises(DBAPIError, match="append-only"), filled.begin() as conn:
        conn.execute(text("UPDATE evidence_purged SET record_sha256 = signature"))
    with filled.begin() as conn:
        for name in ("evidence_purged_no_update", "evidence_purged_append_only"):
            conn.execute(
                text(
                    f"DROP TRIGGER IF EXISTS {name}"
                    + (" ON evidence_purged" if conn.dialect.name == "postgresql" else "")
                )
            )
        conn.execute(text("UPDATE evidence_purged SET record_sha256 = link WHERE seq = 4"))
    problems, _ = _verify(filled, key)
    assert [(p.seq, p.kind) for p in problems] == [(4, "chain")]


def test_shorter_period_and_configured_default(filled: Engine) -> None:
    assert (
        Retention(filled, RetentionConfig(days=99), clock_ms=lambda: NOW)
        .purge(actor="dpo", dry_run=True)
        .records
        == 4
    )
    assert Retention(filled, clock_ms=lambda: NOW).purge(actor="dpo", days=99).records == 4
    assert _stored_seqs(filled) == [1, 2, 5, 6, 9]
    with pytest.raises(InputError, match="at least 1 day"):
        Retention(filled, clock_ms=lambda: NOW).purge(actor="dpo", days=0)


def test_purge_log_is_append_only(filled: Engine) -> None:
    Retention(filled, clock_ms=lambda: NOW).purge(actor="dpo")
    for statement in ("UPDATE retention_purges SET records = 0", "DELETE FROM retention_purges"):
        with pytest.raises(DBAPIError, match="append-only"), filled.begin() as conn:
            conn.execute(text(statement))
    with filled.connect() as conn:
        assert conn.execute(text("SELECT records FROM retention_purges")).scalar_one() == 3


def test_bundle_after_purge_is_a_selection_that_verifies(
    filled: Engine, key: SensorKey, tmp_path: Path
) -> None:
    Retention(filled, clock_ms=lambda: NOW).purge(actor="dpo")
    out = tmp_path / "bundle"
    assert export_bundle(filled, out, RecordFilter()).records == 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["purged_records"] == 3
    report = verify_bundle(out, {"s1": key.private.public_key()})
    assert report.ok, report.problems
    with filled.connect() as conn:
        assert conn.execute(select(func.count()).select_from(evidence_records)).scalar() == 6


def test_a_failed_purge_changes_nothing(
    filled: Engine, key: SensorKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    from peerwatch.evidence.log import purge_records as real
    from peerwatch.leads import retention as retention_module

    def half_then_fail(conn: Connection, keys: Sequence[tuple[str, int]], purge_id: int) -> int:
        real(conn, keys[:1], purge_id)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(retention_module, "purge_records", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        Retention(filled, clock_ms=lambda: NOW).purge(actor="dpo")
    assert _stored_seqs(filled) == list(range(1, 10))
    assert Retention(filled).log() == []
    assert not [e for e in iter_chain(filled) if isinstance(e, PurgedRecord)]
    with filled.connect() as conn:
        assert conn.execute(select(func.count()).select_from(target_observations)).scalar() == 8


def test_chains_of_several_sensors_verify_after_a_purge(engine: Engine, tmp_path: Path) -> None:
    keys = {s: load_or_create(tmp_path / "keys", s) for s in ("b-sensor", "a", "B", "ab")}
    seqs: dict[str, list[int]] = {}
    for n, (sensor, k) in enumerate(keys.items()):
        obs = [
            Observation(
                NOW - (190 - i) * DAY_MS,
                "bittorrent",
                "pex",
                f"btih:{n:040x}",
                f"192.0.2.{10 * n + i}",
                6881,
                outcome="claim",
            )
            for i in range(4)
        ]
        seqs[sensor] = EvidenceLog(engine, k).append(obs)
    seed_targets(engine, [7])
    with engine.begin() as conn:
        for sensor, numbers in seqs.items():
            for seq in numbers[1::2]:  # records 2 and 4 of every sensor: 189 and 187 days old
                conn.execute(
                    insert(target_observations).values(
                        sensor_id=sensor,
                        seq=seq,
                        target_id=7,
                        link_id=7,
                        observed_ms=NOW - (190 - seq + 1) * DAY_MS,
                        network="bittorrent",
                        method="pex",
                        outcome="claim",
                        content_key="btih:" + "0" * 40,
                        ip="192.0.2.1",
                        port=6881,
                    )
                )
    assert Retention(engine, clock_ms=lambda: NOW).purge(actor="dpo").records == 8
    problems: list[Problem] = []
    reports: list[ChainReport] = []
    trusted = {s: k.private.public_key() for s, k in keys.items()}
    for item in verify_stored(iter_chain(engine), trusted, sensor_keys(engine)):
        if isinstance(item, ChainReport):
            reports.append(item)
        else:
            problems.append(item)
    assert problems == []
    assert sorted((r.sensor_id, r.checked, r.purged) for r in reports) == sorted(
        (s, 4, 2) for s in keys
    )


def test_derived_data_is_told_inside_the_transaction(filled: Engine) -> None:
    told: list[list[tuple[str, int]]] = []

    def forget(conn: Connection, keys: Sequence[tuple[str, int]], targets: Sequence[int]) -> None:
        # Inside the purge's transaction: the records are already gone from the log.
        left = conn.execute(select(evidence_records.c.seq)).scalars().all()
        assert set(left).isdisjoint(seq for _, seq in keys)
        told.append(list(keys))
        assert list(targets) == sorted(set(targets)) and targets

    Retention(filled, clock_ms=lambda: NOW, forget=forget).purge(actor="dpo")
    assert told == [[("s1", 3), ("s1", 4), ("s1", 7)]]

    def refuse(conn: Connection, keys: Sequence[tuple[str, int]], targets: Sequence[int]) -> None:
        raise RuntimeError("target store could not forget")

    with pytest.raises(RuntimeError, match="could not forget"):
        Retention(filled, clock_ms=lambda: NOW, forget=refuse).purge(actor="dpo", days=99)
    assert _stored_seqs(filled) == [1, 2, 5, 6, 8, 9]  # the second purge left nothing behind
    assert [p.records for p in Retention(filled).log()] == [3]
