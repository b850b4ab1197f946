"""Appending, verifying, and catching every kind of tampering; runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Engine, and_, delete, insert, select, update

from peerwatch.errors import EvidenceError
from peerwatch.evidence import chain, record
from peerwatch.evidence.keys import SensorKey, load_or_create
from peerwatch.evidence.log import EvidenceLog, iter_records, sensor_keys
from peerwatch.evidence.verify import ChainReport, Problem, verify_stored
from peerwatch.storage.schema import evidence_records, sensors
from tests.evidence.helpers import observation

N = 12


@pytest.fixture
def key(tmp_path: Path) -> SensorKey:
    return load_or_create(tmp_path / "keys", "sensor-a")


@pytest.fixture
def filled(engine: Engine, key: SensorKey) -> Engine:
    log = EvidenceLog(engine, key)
    assert log.append([observation(i) for i in range(5)]) == [1, 2, 3, 4, 5]
    assert log.append([observation(i) for i in range(5, N)]) == list(range(6, N + 1))
    return engine


def run_verify(
    engine: Engine, trusted: dict[str, Ed25519PublicKey]
) -> tuple[list[Problem], list[ChainReport]]:
    problems: list[Problem] = []
    reports: list[ChainReport] = []
    for item in verify_stored(iter_records(engine), trusted, sensor_keys(engine)):
        if isinstance(item, ChainReport):
            reports.append(item)
        else:
            problems.append(item)
    return problems, reports


def trusted_of(key: SensorKey) -> dict[str, Ed25519PublicKey]:
    return {key.sensor_id: key.private.public_key()}


def _row(engine: Engine, seq: int) -> dict[str, Any]:
    c = evidence_records.c
    with engine.connect() as conn:
        row = conn.execute(
            select(evidence_records).where(and_(c.sensor_id == "sensor-a", c.seq == seq))
        ).one()
    return dict(row._mapping)


def _set(engine: Engine, seq: int, **values: object) -> None:
    c = evidence_records.c
    with engine.begin() as conn:
        conn.execute(
            update(evidence_records)
            .where(and_(c.sensor_id == "sensor-a", c.seq == seq))
            .values(**values)
        )


def test_untouched_log_verifies(filled: Engine, key: SensorKey) -> None:
    problems, reports = run_verify(filled, trusted_of(key))
    assert problems == []
    assert len(reports) == 1
    assert (reports[0].checked, reports[0].first_seq, reports[0].last_seq) == (N, 1, N)
    assert reports[0].head_link == _row(filled, N)["link"]


def test_records_decode_to_what_was_appended(filled: Engine) -> None:
    rows = list(iter_records(filled))
    assert [r.seq for r in rows] == list(range(1, N + 1))
    assert [record.decode(r.record).observation for r in rows] == [observation(i) for i in range(N)]


def _edit_content(engine: Engine, key: SensorKey) -> None:
    data = bytes(_row(engine, 5)["record"])
    _set(engine, 5, record=data.replace(b'"ip":"127.0.0.5"', b'"ip":"127.0.0.99"'))


def _edit_and_relink(engine: Engine, key: SensorKey) -> None:
    # A careful forger recomputes the link too, but cannot sign without the key.
    data = bytes(_row(engine, 5)["record"]).replace(b"6885", b"6886")
    prev = bytes(_row(engine, 4)["link"])
    _set(engine, 5, record=data, link=chain.next_link(prev, data))


def _delete(engine: Engine, key: SensorKey) -> None:
    with engine.begin() as conn:
        c = evidence_records.c
        conn.execute(delete(evidence_records).where(and_(c.sensor_id == "sensor-a", c.seq == 5)))


def _insert(engine: Engine, key: SensorKey) -> None:
    # Shift records 5..N up by one and insert a forged record 5, signed by another key.
    rows = [_row(engine, s) for s in range(5, N + 1)]
    with engine.begin() as conn:
        c = evidence_records.c
        conn.execute(delete(evidence_records).where(and_(c.sensor_id == "sensor-a", c.seq >= 5)))
        for r in rows:
            conn.execute(insert(evidence_records).values({**r, "seq": int(r["seq"]) + 1}))
        forged = record.encode(observation(99), sensor="sensor-a", seq=5)
        link = chain.next_link(bytes(_row_conn(conn, 4)["link"]), forged)
        other = SensorKey("x", Ed25519PrivateKey.generate())
        conn.execute(
            insert(evidence_records).values(
                {**rows[0], "seq": 5, "record": forged, "link": link, "signature": other.sign(link)}
            )
        )


def _row_conn(conn: object, seq: int) -> dict[str, Any]:
    c = evidence_records.c
    row = conn.execute(  # type: ignore[attr-defined]
        select(evidence_records).where(and_(c.sensor_id == "sensor-a", c.seq == seq))
    ).one()
    return dict(row._mapping)


def _reorder(engine: Engine, key: SensorKey) -> None:
    a, b = _row(engine, 5), _row(engine, 6)
    swap = ("record", "link", "signature", "observed_ms", "method", "content_key", "ip", "port")
    _set(engine, 5, **{k: b[k] for k in swap})
    _set(engine, 6, **{k: a[k] for k in swap})


def _index_column(engine: Engine, key: SensorKey) -> None:
    _set(engine, 5, ip="127.0.0.200")


def _truncate_signature(engine: Engine, key: SensorKey) -> None:
    sig = bytes(_row(engine, 5)["signature"])
    _set(engine, 5, signature=sig[:-1] + bytes([sig[-1] ^ 1]))


@pytest.mark.parametrize(
    "tamper, first_seq, kind",
    [
        (_edit_content, 5, "chain"),
        (_edit_and_relink, 5, "signature"),
        (_delete, 5, "missing"),
        (_insert, 5, "signature"),
        (_reorder, 5, "out-of-place"),
        (_index_column, 5, "index"),
        (_truncate_signature, 5, "signature"),
    ],
    ids=["edit", "edit+relink", "delete", "insert", "reorder", "index-column", "signature-bit"],
)
def test_tampering_is_detected_and_named(
    filled: Engine,
    key: SensorKey,
    tamper: Callable[[Engine, SensorKey], None],
    first_seq: int,
    kind: str,
) -> None:
    tamper(filled, key)
    problems, _ = run_verify(filled, trusted_of(key))
    assert problems, "tampering went unnoticed"
    assert problems[0].seq == first_seq
    assert kind in {p.kind for p in problems if p.seq == first_seq}
    assert all(p.seq >= first_seq for p in problems)


def test_resigning_everything_with_another_key_is_detected(
    filled: Engine, key: SensorKey, tmp_path: Path
) -> None:
    forger = load_or_create(tmp_path / "forger", "sensor-a")
    link = chain.genesis_link("sensor-a", forger.public_raw)
    with filled.begin() as conn:
        for seq in range(1, N + 1):
            data = bytes(_row_conn(conn, seq)["record"])
            link = chain.next_link(link, data)
            c = evidence_records.c
            conn.execute(
                update(evidence_records)
                .where(and_(c.sensor_id == "sensor-a", c.seq == seq))
                .values(link=link, signature=forger.sign(link))
            )
        conn.execute(update(sensors).values(public_key=forger.public_raw))
    problems, _ = run_verify(filled, trusted_of(key))
    assert problems[0].kind == "key"
    record_problems = [p for p in problems if p.seq > 0]
    assert record_problems[0].seq == 1
    assert {"chain", "signature"} <= {p.kind for p in record_problems if p.seq == 1}
    # ...while the forger's own key would accept it: the trusted key is what decides.
    assert run_verify(filled, trusted_of(forger))[0] == []


def test_sensor_id_is_bound_to_one_key(filled: Engine, tmp_path: Path) -> None:
    other = load_or_create(tmp_path / "other", "sensor-a")
    with pytest.raises(EvidenceError, match="registered with another public key"):
        EvidenceLog(filled, other).append([observation(1)])


def test_two_sensors_have_separate_chains(engine: Engine, tmp_path: Path) -> None:
    a = load_or_create(tmp_path / "k", "a")
    b = load_or_create(tmp_path / "k", "b")
    assert EvidenceLog(engine, a).append([observation(1), observation(2)]) == [1, 2]
    assert EvidenceLog(engine, b).append([observation(3)]) == [1]
    assert EvidenceLog(engine, a).append([observation(4)]) == [3]
    problems, reports = run_verify(
        engine, {"a": a.private.public_key(), "b": b.private.public_key()}
    )
    assert problems == []
    assert [(r.sensor_id, r.checked) for r in reports] == [("a", 3), ("b", 1)]


def test_missing_trusted_key_is_a_problem(filled: Engine) -> None:
    problems, _ = run_verify(filled, {})
    assert [p.kind for p in problems] == ["key"]


def test_key_file_is_made_once_and_private(tmp_path: Path) -> None:
    k1 = load_or_create(tmp_path / "keys", "s")
    k2 = load_or_create(tmp_path / "keys", "s")
    assert k1.public_raw == k2.public_raw
    path = tmp_path / "keys" / "s.ed25519.pem"
    assert path.stat().st_mode & 0o777 == 0o600
    assert list((tmp_path / "keys").iterdir()) == [path]


@pytest.mark.parametrize("bad", ["", "a/b", "a\tb", "-x", "x" * 101])
def test_sensor_ids_are_checked(tmp_path: Path, bad: str) -> None:
    with pytest.raises(EvidenceError, match="sensor id"):
        load_or_create(tmp_path, bad)


def test_large_batches_sign_and_verify_in_parallel(sqlite_engine: Engine, key: SensorKey) -> None:
    """Above 512 records, signing and signature checks run on threads: same results, in order."""
    obs = [observation(i) for i in range(1500)]
    assert EvidenceLog(sqlite_engine, key).append(obs) == list(range(1, 1501))
    assert run_verify(sqlite_engine, trusted_of(key))[0] == []
    c = evidence_records.c
    with sqlite_engine.begin() as conn:
        sig = conn.execute(select(c.signature).where(c.seq == 1000)).scalar_one()
        conn.execute(
            update(evidence_records)
            .where(c.seq == 1000)
            .values(signature=bytes([sig[0] ^ 1]) + sig[1:])
        )
    problems, reports = run_verify(sqlite_engine, trusted_of(key))
    assert [(p.seq, p.kind) for p in problems] == [(1000, "signature")]
    assert reports[0].checked == 1500
