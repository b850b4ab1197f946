"""Appending to and reading the evidence log in the database.

The rows of `evidence_records` are the log. Verification (`verify.py`) trusts none of the query
columns: it re-derives everything from the canonical record bytes, the chain and the signatures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from peerwatch.errors import EvidenceError
from peerwatch.evidence import chain, record
from peerwatch.evidence.keys import SensorKey
from peerwatch.storage.database import writer
from peerwatch.storage.schema import evidence_purged, evidence_records, sensors


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


@dataclass(frozen=True, slots=True)
class PurgedRecord:
    """What stays of a record purged under the retention rule (docs/evidence.md, "Retention"):
    its place, the SHA-256 of its canonical bytes, its link and its signature. That is all the
    chain needs: link(n) = SHA-256(link(n-1) || record_sha256), and the signature is over link(n).
    """

    sensor_id: str
    seq: int
    record_sha256: bytes
    link: bytes
    signature: bytes
    observed_ms: int
    purge_id: int


_COLUMNS = (
    "sensor_id",
    "seq",
    "record",
    "link",
    "signature",
    "observed_ms",
    "network",
    "method",
    "content_key",
    "ip",
    "port",
)


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
            first = seq + 1
            records: list[bytes] = []
            links: list[bytes] = []
            for obs in observations:
                seq += 1
                data = record.encode(obs, sensor=self.sensor_id, seq=seq)
                link = chain.next_link(link, data)
                records.append(data)
                links.append(link)
            # Links are a sequence, but once they are known each signature stands alone.
            signatures = self._key.sign_many(links)
            rows = [
                (
                    self.sensor_id,
                    first + i,
                    records[i],
                    links[i],
                    signatures[i],
                    obs.observed_ms,
                    obs.network,
                    obs.method,
                    obs.content_key,
                    obs.ip,
                    obs.port,
                )
                for i, obs in enumerate(observations)
            ]
            insert_rows(conn, rows)
        return list(range(first, seq + 1))


def insert_rows(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert evidence rows (values in `_COLUMNS` order) straight through the driver.

    SQLAlchemy's per-parameter processing cost as much as the database itself on this path
    (docs/benchmarks.md); the values are plain str, int and bytes, which every driver takes as is.
    On PostgreSQL, COPY on the transaction's own connection is several times faster than an
    executemany of INSERTs and just as atomic.
    """
    columns = ", ".join(_COLUMNS)
    if conn.dialect.name == "postgresql":
        driver = conn.connection.driver_connection
        assert driver is not None  # an open transaction always has its DBAPI connection
        with (
            driver.cursor() as cur,
            cur.copy(f"COPY evidence_records ({columns}) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        return
    marks = ", ".join(["?"] * len(_COLUMNS))  # sqlite3's paramstyle
    conn.exec_driver_sql(
        f"INSERT INTO evidence_records ({columns}) VALUES ({marks})",  # noqa: S608  # constants only
        rows,
    )


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


def iter_chain(
    engine: Engine, sensor_id: str | None = None, *, batch: int = 5000
) -> Iterator[StoredRecord | PurgedRecord]:
    """Every entry of the chains, sensor by sensor in seq order: stored records and, in their
    places, what stays of purged ones. This is what `evidence verify` reads; `iter_records`
    (bundles, targets, `observations`) yields stored records only."""
    if sensor_id is not None:
        chains = [sensor_id]
    else:
        with engine.connect() as conn:
            chains = sorted(
                set(conn.execute(select(evidence_records.c.sensor_id).distinct()).scalars())
                | set(conn.execute(select(evidence_purged.c.sensor_id).distinct()).scalars())
            )
    for sensor in chains:
        # Merged on seq within one sensor only: the database's collation orders sensor ids its
        # own way, which need not be Python's.
        purged = _iter_purged(engine, sensor)
        pending = next(purged, None)
        for row in iter_records(engine, RecordFilter(sensor_id=sensor), batch=batch):
            while pending is not None and pending.seq < row.seq:
                yield pending
                pending = next(purged, None)
            yield row
        while pending is not None:
            yield pending
            pending = next(purged, None)


def _iter_purged(engine: Engine, sensor_id: str | None) -> Iterator[PurgedRecord]:
    c = evidence_purged.c
    query = select(evidence_purged).order_by(c.sensor_id, c.seq)
    if sensor_id is not None:
        query = query.where(c.sensor_id == sensor_id)
    with engine.connect() as conn:
        for r in conn.execution_options(stream_results=True, yield_per=5000).execute(query):
            yield PurgedRecord(
                sensor_id=r.sensor_id,
                seq=int(r.seq),
                record_sha256=_blob(r.record_sha256),
                link=_blob(r.link),
                signature=_blob(r.signature),
                observed_ms=int(r.observed_ms),
                purge_id=int(r.purge_id),
            )


def purge_records(conn: Connection, keys: Sequence[tuple[str, int]], purge_id: int) -> int:
    """Replace records by what the chain needs of them (PurgedRecord), inside the caller's
    transaction; return how many were purged. The record bytes and their query columns (address,
    port, content key) leave the database; the chain keeps verifying."""
    c = evidence_records.c
    done = 0
    for start in range(0, len(keys), 500):
        chunk = list(keys[start : start + 500])
        where = tuple_(c.sensor_id, c.seq).in_(chunk)
        rows = conn.execute(
            select(c.sensor_id, c.seq, c.record, c.link, c.signature, c.observed_ms).where(where)
        ).all()
        if not rows:
            continue
        conn.execute(
            insert(evidence_purged),
            [
                {
                    "sensor_id": r.sensor_id,
                    "seq": r.seq,
                    "record_sha256": chain.record_hash(_blob(r.record)),
                    "link": _blob(r.link),
                    "signature": _blob(r.signature),
                    "observed_ms": r.observed_ms,
                    "purge_id": purge_id,
                }
                for r in rows
            ],
        )
        conn.execute(delete(evidence_records).where(where))
        done += len(rows)
    return done


def purged_count(engine: Engine, sensor_id: str | None = None) -> int:
    c = evidence_purged.c
    query = select(func.count()).select_from(evidence_purged)
    if sensor_id is not None:
        query = query.where(c.sensor_id == sensor_id)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def sensor_keys(engine: Engine) -> dict[str, bytes]:
    """Public keys as registered in the database (not trusted by themselves: see verify)."""
    with engine.connect() as conn:
        return {r.id: bytes(r.public_key) for r in conn.execute(select(sensors))}


def previous_link(engine: Engine, sensor_id: str, seq: int, public_key: bytes) -> bytes:
    """The link a record at `seq` continues from (genesis for seq 1)."""
    if seq == 1:
        return chain.genesis_link(sensor_id, public_key)
    c = evidence_records.c
    p = evidence_purged.c
    with engine.connect() as conn:
        row = conn.execute(
            select(c.link).where(and_(c.sensor_id == sensor_id, c.seq == seq - 1))
        ).first()
        if row is None:  # the record before was purged under retention: its link stays
            row = conn.execute(
                select(p.link).where(and_(p.sensor_id == sensor_id, p.seq == seq - 1))
            ).first()
    if row is None:
        raise EvidenceError(f"sensor {sensor_id!r}: record {seq - 1} is missing")
    return bytes(row[0])
