"""Appending to and reading the evidence log in the database.

The rows of `evidence_records` are the log. Verification (`verify.py`) trusts none of the query
columns: it re-derives everything from the canonical record bytes, the chain and the signatures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from peerwatch.errors import EvidenceError
from peerwatch.evidence import chain, record
from peerwatch.evidence.keys import SensorKey
from peerwatch.storage.database import writer
from peerwatch.storage.schema import evidence_records, sensors


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A row of the log as stored: the signed bytes and the chain values beside them."""

    sensor_id: str
    seq: int
    record: bytes
    link: bytes
    signature: bytes
    # Copies of record fields kept for querying; verification checks they agree with `record`.
    observed_ms: int
    network: str
    method: str
    content_key: str
    ip: str
    port: int | None


class EvidenceLog:
    """The append side of one sensor's chain. Every append is one transaction: acknowledged means
    committed (SQLite WAL with synchronous=FULL, or PostgreSQL), so `kill -9` after it loses
    nothing."""

    def __init__(
        self, engine: Engine, key: SensorKey, clock_ms: Callable[[], int] = now_ms
    ) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self._key = key
        self._clock_ms = clock_ms
        self._genesis = chain.genesis_link(key.sensor_id, key.public_raw)
        self._registered = False

    @property
    def sensor_id(self) -> str:
        return self._key.sensor_id

    def register(self) -> None:
        """Record the sensor and its public key; refuse a sensor id already bound to another key."""
        with self._writer.begin() as conn:
            row = conn.execute(
                select(sensors.c.public_key).where(sensors.c.id == self.sensor_id)
            ).first()
            if row is None:
                conn.execute(
                    insert(sensors).values(
                        id=self.sensor_id,
                        public_key=self._key.public_raw,
                        created_ms=self._clock_ms(),
                    )
                )
            elif bytes(row[0]) != self._key.public_raw:
                raise EvidenceError(
                    f"sensor {self.sensor_id!r} is registered with another public key; "
                    "a sensor's chain is signed by one key only (use another --sensor id)"
                )
        self._registered = True

    def append(self, observations: Sequence[record.Observation]) -> list[int]:
        """Append observations in order; return their sequence numbers once committed."""
        if not observations:
            return []
        if not self._registered:
            self.register()
        for attempt in range(3):
            try:
                return self._append_once(observations)
            except IntegrityError:
                # Another writer took the same sequence numbers (two processes with one sensor id):
                # re-read the head and try again.
                if attempt == 2:
                    raise EvidenceError(
                        f"sensor {self.sensor_id!r}: could not append, another writer keeps "
                        "taking the same sequence numbers"
                    ) from None
        raise AssertionError("unreachable")

    def _append_once(self, observations: Sequence[record.Observation]) -> list[int]:
        with self._writer.begin() as conn:
            head = conn.execute(
                select(evidence_records.c.seq, evidence_records.c.link)
                .where(evidence_records.c.sensor_id == self.sensor_id)
                .order_by(evidence_records.c.seq.desc())
                .limit(1)
            ).first()
            seq, link = (0, self._genesis) if head is None else (int(head[0]), bytes(head[1]))
            rows: list[dict[str, Any]] = []
            for obs in observations:
                seq += 1
                data = record.encode(obs, sensor=self.sensor_id, seq=seq)
                link = chain.next_link(link, data)
                rows.append(
                    {
                        "sensor_id": self.sensor_id,
                        "seq": seq,
                        "record": data,
                        "link": link,
                        "signature": self._key.sign(link),
                        "observed_ms": obs.observed_ms,
                        "network": obs.network,
                        "method": obs.method,
                        "content_key": obs.content_key,
                        "ip": obs.ip,
                        "port": obs.port,
                    }
                )
            conn.execute(insert(evidence_records), rows)
        return [int(r["seq"]) for r in rows]


@dataclass(frozen=True, slots=True)
class RecordFilter:
    sensor_id: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    ip: str | None = None
    content_key: str | None = None

    def clauses(self) -> list[ColumnElement[bool]]:
        c = evidence_records.c
        out: list[ColumnElement[bool]] = []
        if self.sensor_id is not None:
            out.append(c.sensor_id == self.sensor_id)
        if self.since_ms is not None:
            out.append(c.observed_ms >= self.since_ms)
        if self.until_ms is not None:
            out.append(c.observed_ms < self.until_ms)
        if self.ip is not None:
            out.append(c.ip == self.ip)
        if self.content_key is not None:
            out.append(c.content_key == self.content_key)
        return out

    @property
    def is_everything(self) -> bool:
        return self == RecordFilter(sensor_id=self.sensor_id)


def iter_records(
    engine: Engine, flt: RecordFilter | None = None, *, batch: int = 5000
) -> Iterator[StoredRecord]:
    """Rows in chain order (sensor, seq), streamed so that a large log needs little memory."""
    flt = flt or RecordFilter()
    c = evidence_records.c
    query = select(evidence_records).order_by(c.sensor_id, c.seq)
    clauses = flt.clauses()
    if clauses:
        query = query.where(and_(*clauses))
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
        for row in result:
            yield StoredRecord(
                sensor_id=row.sensor_id,
                seq=int(row.seq),
                record=_blob(row.record),
                link=_blob(row.link),
                signature=_blob(row.signature),
                observed_ms=int(row.observed_ms),
                network=row.network,
                method=row.method,
                content_key=row.content_key,
                ip=row.ip,
                port=row.port,
            )


def _blob(value: object) -> bytes:
    """Column bytes as stored. SQLite lets an edit turn a BLOB into TEXT; verification must report
    such a row as bad, not crash on it."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return repr(value).encode("utf-8")


def sensor_keys(engine: Engine) -> dict[str, bytes]:
    """Public keys as registered in the database (not trusted by themselves: see verify)."""
    with engine.connect() as conn:
        return {r.id: bytes(r.public_key) for r in conn.execute(select(sensors))}


def previous_link(engine: Engine, sensor_id: str, seq: int, public_key: bytes) -> bytes:
    """The link a record at `seq` continues from (genesis for seq 1)."""
    if seq == 1:
        return chain.genesis_link(sensor_id, public_key)
    c = evidence_records.c
    with engine.connect() as conn:
        row = conn.execute(
            select(c.link).where(and_(c.sensor_id == sensor_id, c.seq == seq - 1))
        ).first()
    if row is None:
        raise EvidenceError(f"sensor {sensor_id!r}: record {seq - 1} is missing")
    return bytes(row[0])
