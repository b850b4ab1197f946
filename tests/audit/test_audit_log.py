"""The audit log on SQLite and PostgreSQL: the chain, the database's refusal to change it, and
detection of edits, deletions, reordering, truncation and rewriting by someone who gets around
that refusal (a database owner can drop a trigger)."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from peerwatch.audit.entry import AuditError
from peerwatch.audit.log import AuditLog


class Clock:
    def __init__(self) -> None:
        self.now = 1_764_000_000_000

    def __call__(self) -> int:
        self.now += 7
        return self.now


def _log(engine: Engine, n: int = 6) -> AuditLog:
    log = AuditLog(engine, clock_ms=Clock())
    for i in range(1, n + 1):
        log.append(
            actor=f"user{i % 3}",
            role="investigator",
            unit="U75",
            address="127.0.0.1",
            action="target.view",
            obj=f"target:{i}",
            detail={"label": f"T-{i:06d}", "observations": i, "tags": ["a", "ü"]},
        )
    return log


def _bypass(engine: Engine, *statements: str) -> None:
    """Change the table as an attacker with the database owner's rights would."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
            for sql in statements:
                conn.execute(text(sql))
            conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))
            for sql in statements:
                conn.execute(text(sql))


def test_links_follow_the_documented_formula(engine: Engine) -> None:
    log = _log(engine, 3)
    entries = list(log.iter_entries())
    assert [e.seq for e in entries] == [1, 2, 3]
    # Recomputed here from docs/webapp.md, without the code under test.
    link = hashlib.sha256(b"peerwatch-audit-v1").digest()
    for e in entries:
        record = {
            "v": 1,
            "seq": e.seq,
            "at_ms": e.at_ms,
            "actor": e.actor,
            "role": "investigator",
            "unit": "U75",
            "address": "127.0.0.1",
            "action": "target.view",
            "object": f"target:{e.seq}",
            "detail": {"label": f"T-{e.seq:06d}", "observations": e.seq, "tags": ["a", "ü"]},
        }
        data = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        link = hashlib.sha256(link + hashlib.sha256(data.encode()).digest()).digest()
        assert e.link == link
    report = log.verify()
    assert report.ok and report.checked == 3 and report.head_link == link
    assert log.head() == (3, link)


def test_the_database_refuses_update_and_delete(engine: Engine) -> None:
    _log(engine, 2)
    for sql in ("UPDATE audit_log SET actor = 'x' WHERE seq = 1", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(sql))
    assert _log_of(engine).verify().checked == 2


def _log_of(engine: Engine) -> AuditLog:
    return AuditLog(engine)


@pytest.mark.parametrize(
    ("sql", "seq", "kind"),
    [
        ("UPDATE audit_log SET actor = 'someone-else' WHERE seq = 3", 3, "chain"),
        ("UPDATE audit_log SET address = '10.0.0.1' WHERE seq = 4", 4, "chain"),
        ('UPDATE audit_log SET detail = \'{"label":"T-000099"}\' WHERE seq = 2', 2, "chain"),
        ("UPDATE audit_log SET detail = 'not json' WHERE seq = 5", 5, "unreadable"),
        ("UPDATE audit_log SET at_ms = at_ms - 1000 WHERE seq = 6", 6, "chain"),
        ("DELETE FROM audit_log WHERE seq = 3", 3, "missing"),
        ("DELETE FROM audit_log WHERE seq = 1", 1, "missing"),
    ],
)
def test_tampering_names_the_first_bad_entry(engine: Engine, sql: str, seq: int, kind: str) -> None:
    log = _log(engine)
    assert log.verify().ok
    _bypass(engine, sql)
    report = log.verify()
    assert not report.ok
    first = report.first_bad
    assert first is not None and (first.seq, first.kind) == (seq, kind), report.problems
    assert f"audit entry {seq}:" in str(first)


def test_sqlite_type_changing_edits_are_reported_not_raised(sqlite_engine: Engine) -> None:
    log = _log(sqlite_engine)
    _bypass(
        sqlite_engine,
        "UPDATE audit_log SET at_ms = 'yesterday' WHERE seq = 2",
        "UPDATE audit_log SET link = 'not bytes' WHERE seq = 4",
    )
    report = log.verify()
    # A changed link breaks its own entry and the next one, which chains from it.
    problems = [(p.seq, p.kind) for p in report.problems]
    assert problems == [(2, "unreadable"), (4, "chain"), (5, "chain")]
    assert report.checked == 6


def test_reordering_is_detected(engine: Engine) -> None:
    log = _log(engine)
    # Swap entries 2 and 4 whole (links included), keeping the sequence numbers in place.
    _bypass(
        engine,
        "UPDATE audit_log SET seq = -seq WHERE seq IN (2, 4)",
        "UPDATE audit_log SET seq = 4 WHERE seq = -2",
        "UPDATE audit_log SET seq = 2 WHERE seq = -4",
    )
    report = log.verify()
    assert [p.seq for p in report.problems][:1] == [2] and report.problems[0].kind == "chain"
    assert {p.seq for p in report.problems} >= {2, 4}


def test_truncation_and_rewriting_are_caught_by_an_anchor(engine: Engine) -> None:
    log = _log(engine)
    anchor = log.head()
    assert log.verify(anchor=anchor).ok
    # Removing the newest entries leaves a chain that is consistent on its own...
    _bypass(engine, "DELETE FROM audit_log WHERE seq >= 5")
    assert log.verify().ok
    # ...but not with the head noted earlier.
    report = log.verify(anchor=anchor)
    assert not report.ok and report.first_bad is not None
    assert (report.first_bad.seq, report.first_bad.kind) == (6, "anchor")


def test_a_rebuilt_chain_differs_from_the_anchor(engine: Engine) -> None:
    log = _log(engine, 3)
    anchor = log.head()
    # Rebuild: delete everything and append different entries (links consistent again).
    _bypass(engine, "DELETE FROM audit_log")
    for i in range(3):
        log.append(actor="forger", action="target.view", obj=f"target:{i}")
    assert log.verify().ok
    report = log.verify(anchor=anchor)
    assert report.first_bad is not None and report.first_bad.kind == "anchor"


def test_appends_refuse_floats_and_empty_actor(engine: Engine) -> None:
    log = AuditLog(engine)
    with pytest.raises(AuditError, match="floats"):
        log.append(actor="a", action="x", detail={"score": 1.5})  # type: ignore[dict-item]
    with pytest.raises(AuditError, match="actor"):
        log.append(actor="", action="x")
    assert log.head()[0] == 0


def test_concurrent_writers_never_fork_the_chain(engine: Engine) -> None:
    from concurrent.futures import ThreadPoolExecutor

    log = AuditLog(engine)

    def write(i: int) -> int:
        return log.append(actor=f"w{i}", action="test.write").seq

    with ThreadPoolExecutor(8) as pool:
        seqs = sorted(pool.map(write, range(40)))
    assert seqs == list(range(1, 41))
    assert log.verify().ok
