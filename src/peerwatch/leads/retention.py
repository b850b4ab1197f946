"""Retention: observations of targets nobody claimed are purged after a period (docs/operations.md).

The rule: an evidence record older than `days` (default 180, setting `retention_days`) whose
target was never claimed and is in no operation is purged. Targets that were ever claimed (they
have a lead row, which is never deleted) and targets frozen into an operation keep everything.
Records not yet assigned to a target are kept: nobody can say yet whose they are.

Purging must not break the evidence chain (docs/evidence.md): the record's bytes and its query
columns (address, port, content key) are deleted, and its place, the SHA-256 of its bytes, its
link and its signature are kept in `evidence_purged`, so `evidence verify` still checks the whole
chain and reports those records as purged. The copy the targets keep of each record
(`target_observations`) is deleted with it. Every purge, with its rule, cut-off time and counts, is
appended to `retention_purges` (append-only in the database), all in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, insert, select, tuple_

from peerwatch.errors import InputError
from peerwatch.evidence.log import purge_records
from peerwatch.leads.workflow import iso_ms, now_ms
from peerwatch.storage.database import writer
from peerwatch.storage.schema import (
    evidence_records,
    lead_states,
    operation_targets,
    retention_purges,
    target_observations,
)

DAY_MS = 86_400_000

#: Told which evidence records (sensor, seq) a purge removes and the targets they belonged to,
#: inside its transaction (the target store rebuilds those targets' aggregates).
Forget = Callable[[Connection, Sequence[tuple[str, int]], Sequence[int]], None]
DEFAULT_DAYS = 180


@dataclass(frozen=True)
class RetentionConfig:
    days: int = DEFAULT_DAYS  # age after which observations of never-claimed targets are purged


@dataclass(frozen=True)
class PurgeResult:
    id: int | None  # None for a dry run (nothing written)
    at_ms: int
    actor: str
    rule: str
    days: int
    cutoff_ms: int
    records: int
    targets: int
    detail: dict[str, Any]
    dry_run: bool = False

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "at": iso_ms(self.at_ms),
            "actor": self.actor,
            "rule": self.rule,
            "days": self.days,
            "cutoff": iso_ms(self.cutoff_ms),
            "records": self.records,
            "targets": self.targets,
            "detail": self.detail,
            "dry_run": self.dry_run,
        }


def rule_text(days: int) -> str:
    return (
        f"observations older than {days} days of targets never claimed and in no operation "
        "are purged (record bytes, address and port deleted; hash, link and signature kept)"
    )


class Retention:
    def __init__(
        self,
        engine: Engine,
        config: RetentionConfig | None = None,
        clock_ms: Callable[[], int] = now_ms,
        *,
        forget: Forget | None = None,
    ) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self._config = config or RetentionConfig()
        self._clock_ms = clock_ms
        # Called with the purged records inside the purge's transaction, so that derived data
        # (the target store's aggregates) can drop them too; a failure there undoes the purge.
        self._forget = forget

    def purge(self, *, actor: str, days: int | None = None, dry_run: bool = False) -> PurgeResult:
        """Purge what the rule says (or, with `dry_run`, only count it); one transaction."""
        days = self._config.days if days is None else days
        if days < 1:
            raise InputError(f"the retention period must be at least 1 day, not {days}")
        if not actor.strip():
            raise InputError("the acting user (--by) must not be empty")
        at = self._clock_ms()
        cutoff = at - days * DAY_MS
        with self._writer.begin() as conn:
            if conn.dialect.name == "postgresql":
                # No claim and no operation may commit between choosing the records and purging
                # them: a target claimed or frozen now keeps its observations. (SQLite writers are
                # serialised already.)
                conn.exec_driver_sql("LOCK TABLE lead_states, operation_targets IN SHARE MODE")
            keys, targets = _due(conn, cutoff)
            detail = _detail(keys, targets)
            result = PurgeResult(
                None, at, actor, rule_text(days), days, cutoff, len(keys), len(targets), detail
            )
            if dry_run:
                return replace(result, dry_run=True)
            purge_id = conn.execute(
                insert(retention_purges)
                .values(
                    at_ms=at,
                    actor=actor,
                    rule=result.rule,
                    days=days,
                    cutoff_ms=cutoff,
                    records=len(keys),
                    targets=len(targets),
                    detail=json.dumps(detail, sort_keys=True),
                )
                .returning(retention_purges.c.id)
            ).scalar_one()
            purged = purge_records(conn, keys, int(purge_id))
            if purged != len(keys):
                # Impossible inside one transaction; never log a count that is not what was done.
                raise RuntimeError(f"purged {purged} records, expected {len(keys)}")
            t = target_observations.c
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                conn.execute(
                    delete(target_observations).where(tuple_(t.sensor_id, t.seq).in_(chunk))
                )
            if self._forget is not None:
                self._forget(conn, keys, targets)
        return replace(result, id=int(purge_id))

    def log(self) -> list[PurgeResult]:
        """Every purge so far, oldest first."""
        c = retention_purges.c
        with self._engine.connect() as conn:
            rows = conn.execute(select(retention_purges).order_by(c.id)).all()
        return [
            PurgeResult(
                int(r.id),
                int(r.at_ms),
                r.actor,
                r.rule,
                int(r.days),
                int(r.cutoff_ms),
                int(r.records),
                int(r.targets),
                json.loads(r.detail),
            )
            for r in rows
        ]


def _due(conn: Connection, cutoff: int) -> tuple[list[tuple[str, int]], list[int]]:
    """Evidence records to purge, and the targets they belong to."""
    t, e = target_observations.c, evidence_records.c
    kept = select(lead_states.c.target_id).union(select(operation_targets.c.target_id))
    rows = conn.execute(
        select(t.sensor_id, t.seq, t.target_id)
        .join(evidence_records, and_(e.sensor_id == t.sensor_id, e.seq == t.seq))
        .where(and_(t.observed_ms < cutoff, t.target_id.not_in(kept.scalar_subquery())))
        .order_by(t.sensor_id, t.seq)
    ).all()
    keys = [(r.sensor_id, int(r.seq)) for r in rows]
    return keys, sorted({int(r.target_id) for r in rows})


def _detail(keys: list[tuple[str, int]], targets: list[int]) -> dict[str, Any]:
    sensors: dict[str, dict[str, int]] = {}
    for sensor, seq in keys:
        s = sensors.setdefault(sensor, {"records": 0, "first_seq": seq, "last_seq": seq})
        s["records"] += 1
        s["last_seq"] = seq
    return {"sensors": sensors, "targets": targets}
