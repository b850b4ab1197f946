"""Alerts per unit: a new lead in its jurisdiction, and a target it holds seen again.

A scan compares the targets with the leads and writes the alerts that are due; scanning again
writes nothing new until something new happened, because each alert has a key that is unique per
(unit, kind, target) in the database:

- `new-lead`: a target nobody holds, in a jurisdiction the unit covers (the unit the enrichment
  placed it with). Key: the lead's version, so a lead that is released is announced again.
- `claimed-seen-again`: observations of a held target made after the unit took it. Key: the
  claim time and the last observation covered; the next alert covers only later observations.

Alerts are acknowledged by a user of the unit; acknowledging is recorded (who, when) and idempotent.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from peerwatch.leads.operation import TargetLike, TargetSource
from peerwatch.leads.workflow import Lead, LeadError, LeadState, LeadWorkflow, iso_ms, now_ms
from peerwatch.storage.database import writer
from peerwatch.storage.schema import lead_alerts


class AlertKind(enum.StrEnum):
    NEW_LEAD = "new-lead"
    SEEN_AGAIN = "claimed-seen-again"


@dataclass(frozen=True, slots=True)
class Alert:
    id: int
    unit: str
    kind: AlertKind
    target_id: int
    created_ms: int
    first_ms: int | None  # the observations the alert is about (seen-again)
    last_ms: int | None
    observations: int
    detail: dict[str, Any]
    acknowledged_ms: int | None
    acknowledged_by: str | None

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "unit": self.unit,
            "kind": self.kind.value,
            "target_id": self.target_id,
            "created": iso_ms(self.created_ms),
            "first_observed": iso_ms(self.first_ms),
            "last_observed": iso_ms(self.last_ms),
            "observations": self.observations,
            "detail": self.detail,
            "acknowledged": iso_ms(self.acknowledged_ms),
            "acknowledged_by": self.acknowledged_by,
        }

    def sentence(self) -> str:
        d = self.detail
        if self.kind is AlertKind.NEW_LEAD:
            where = d.get("jurisdiction_name") or d.get("jurisdiction") or "?"
            return f"new lead {d.get('label')} in {where}, score {d.get('score')}"
        return (
            f"{d.get('label')}, held since {d.get('held_since')}, seen again: "
            f"{self.observations} observation(s) {iso_ms(self.first_ms)}..{iso_ms(self.last_ms)}"
            f" from {', '.join(d.get('ips', []))}"
        )


class Alerts:
    def __init__(
        self,
        engine: Engine,
        targets: TargetSource,
        workflow: LeadWorkflow,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self._targets = targets
        self._workflow = workflow
        self._clock_ms = clock_ms

    def scan(self, *, unit: str | None = None) -> list[Alert]:
        """Write the alerts that are due (for one unit, or all); return the ones written now."""
        leads = {lead.target_id: lead for lead in self._workflow.leads()}
        due: list[dict[str, Any]] = []
        for t in self._targets.ranked():
            lead = leads.get(t.id) or Lead(t.id, LeadState.NEW, None, None, None, None, None, 0)
            if lead.unit is None and lead.state is LeadState.NEW:
                if t.unit is not None and unit in (None, t.unit):
                    due.append(self._new_lead(t, lead))
            elif lead.state is not LeadState.CLOSED and unit in (None, lead.unit):
                row = self._seen_again(t, lead)
                if row is not None:
                    due.append(row)
        written: list[Alert] = []
        with self._writer.begin() as conn:
            for row in due:
                created = self._insert(conn, row)
                if created is not None:
                    written.append(created)
        return written

    def _new_lead(self, t: TargetLike, lead: Lead) -> dict[str, Any]:
        return {
            "unit": t.unit,
            "kind": AlertKind.NEW_LEAD.value,
            "target_id": t.id,
            "dedup": f"v{lead.version}",
            "first_ms": t.first_ms,
            "last_ms": t.last_ms,
            "observations": 0,
            "detail": _target_detail(t),
        }

    def _seen_again(self, t: TargetLike, lead: Lead) -> dict[str, Any] | None:
        if lead.unit is None or lead.since_ms is None:
            return None  # not held (cannot happen outside `new`, which is handled before)
        c = lead_alerts.c
        with self._engine.connect() as conn:
            covered = conn.execute(
                select(func.max(c.last_ms)).where(
                    and_(
                        c.unit == lead.unit,
                        c.kind == AlertKind.SEEN_AGAIN.value,
                        c.target_id == t.id,
                        c.dedup.like(f"{lead.since_ms}:%"),
                    )
                )
            ).scalar()
        after = lead.since_ms if covered is None else max(lead.since_ms, int(covered))
        fresh = [
            o for o in self._targets.observations(t.id, since_ms=after) if o.observed_ms > after
        ]
        if not fresh:
            return None
        first = min(o.observed_ms for o in fresh)
        last = max(o.observed_ms for o in fresh)
        detail = _target_detail(t)
        detail.update(
            {
                "held_since": iso_ms(lead.since_ms),
                "ips": sorted({o.ip for o in fresh}),
                "methods": sorted({o.method for o in fresh}),
                "evidence": [f"{o.sensor_id}/{o.seq}" for o in fresh[:20]],
            }
        )
        return {
            "unit": lead.unit,
            "kind": AlertKind.SEEN_AGAIN.value,
            "target_id": t.id,
            "dedup": f"{lead.since_ms}:{last}",
            "first_ms": first,
            "last_ms": last,
            "observations": len(fresh),
            "detail": detail,
        }

    def _insert(self, conn: Connection, row: dict[str, Any]) -> Alert | None:
        c = lead_alerts.c
        exists = conn.execute(
            select(c.id).where(
                and_(
                    c.unit == row["unit"],
                    c.kind == row["kind"],
                    c.target_id == row["target_id"],
                    c.dedup == row["dedup"],
                )
            )
        ).first()
        if exists is not None:
            return None
        values = {
            **row,
            "detail": json.dumps(row["detail"], sort_keys=True, ensure_ascii=False),
            "created_ms": self._clock_ms(),
        }
        try:
            # A savepoint: a concurrent scan that wrote the same alert first only skips this one.
            with conn.begin_nested():
                new_id = conn.execute(insert(lead_alerts).values(**values).returning(c.id))
                alert_id = int(new_id.scalar_one())
        except IntegrityError:
            return None
        return _alert_from(values, alert_id)

    def list(self, *, unit: str | None = None, include_acknowledged: bool = False) -> list[Alert]:
        c = lead_alerts.c
        query = select(lead_alerts).order_by(c.id)
        if unit is not None:
            query = query.where(c.unit == unit)
        if not include_acknowledged:
            query = query.where(c.acknowledged_ms.is_(None))
        with self._engine.connect() as conn:
            return [_alert_from(r._asdict(), int(r.id)) for r in conn.execute(query)]

    def acknowledge(self, alert_id: int, *, actor: str, unit: str | None = None) -> Alert:
        """Mark an alert as seen; acknowledging it again changes nothing (the first stays)."""
        if not actor.strip():
            raise LeadError("the acknowledging user (--by) must not be empty")
        c = lead_alerts.c
        with self._writer.begin() as conn:
            row = conn.execute(select(lead_alerts).where(c.id == alert_id)).first()
            if row is None:
                raise LeadError(f"no alert {alert_id}")
            if unit is not None and row.unit != unit:
                raise LeadError(f"alert {alert_id} is for unit {row.unit}, not {unit}")
            if row.acknowledged_ms is None:
                conn.execute(
                    update(lead_alerts)
                    .where(and_(c.id == alert_id, c.acknowledged_ms.is_(None)))
                    .values(acknowledged_ms=self._clock_ms(), acknowledged_by=actor)
                )
            row = conn.execute(select(lead_alerts).where(c.id == alert_id)).one()
        return _alert_from(row._asdict(), alert_id)


def _target_detail(t: TargetLike) -> dict[str, Any]:
    return {
        "label": t.label,
        "score": t.score,
        "jurisdiction": t.jurisdiction,
        "jurisdiction_name": t.jurisdiction_name,
        "last_seen": iso_ms(t.last_ms),
    }


def _alert_from(v: dict[str, Any], alert_id: int) -> Alert:
    detail = v["detail"]
    return Alert(
        id=alert_id,
        unit=v["unit"],
        kind=AlertKind(v["kind"]),
        target_id=int(v["target_id"]),
        created_ms=int(v["created_ms"]),
        first_ms=v["first_ms"],
        last_ms=v["last_ms"],
        observations=int(v["observations"]),
        detail=json.loads(detail) if isinstance(detail, str) else detail,
        acknowledged_ms=v.get("acknowledged_ms"),
        acknowledged_by=v.get("acknowledged_by"),
    )
