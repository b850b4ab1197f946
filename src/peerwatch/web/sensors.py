"""Sensors' status in the web app: per sensor its key's fingerprint, its evidence chain's head and
how many observations it made lately, by method and outcome (docs/webapp.md, "Sensors").

Everything comes from the evidence log in the database: the `sensors` table (id, public key),
`evidence_records` (counted; the outcome is read from each record's signed canonical JSON by the
database itself) and `evidence_purged` (records purged under retention still count in the chain).
The page reloads itself every `REFRESH_S` seconds with the `Refresh` header (no script); each load
is one audit entry, like every other view.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, cast

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from sqlalchemy import Engine, Integer, Text, and_, func, literal_column, select
from sqlalchemy import cast as sa_cast
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement
from starlette.requests import Request
from starlette.responses import Response

from peerwatch.accounts.role import Permission
from peerwatch.leads.workflow import iso_ms
from peerwatch.storage.schema import evidence_purged, evidence_records, sensors
from peerwatch.web.auth import Identity, requires
from peerwatch.web.pages import render

if TYPE_CHECKING:
    from peerwatch.app import App

pages_router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)
api_router = APIRouter(prefix="/api/v1", tags=["sensors"])

REFRESH_S = 15  # the page's self-refresh period
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid session or token."},
    403: {"description": "The role lacks the permission."},
}


@dataclass
class SensorStatus:
    id: str
    fingerprint: str  # "sha256:" + hex SHA-256 of the raw Ed25519 public key
    registered_ms: int
    records: int  # stored in evidence_records
    purged: int  # purged under retention (hash kept in the chain)
    head_seq: int  # 0: no record yet
    head_link: str | None  # hex
    last_observed_ms: int | None
    last_hour: int = 0
    last_day: int = 0
    # (method, outcome) -> [last hour, last day]
    by_method: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "registered": iso_ms(self.registered_ms),
            "records": self.records,
            "purged": self.purged,
            "head_seq": self.head_seq,
            "head_link": self.head_link,
            "last_observed": iso_ms(self.last_observed_ms),
            "last_observed_ms": self.last_observed_ms,
            "last_hour": self.last_hour,
            "last_day": self.last_day,
            "by_method": [
                {"method": m, "outcome": o, "last_hour": h, "last_day": d}
                for (m, o), (h, d) in sorted(self.by_method.items())
            ],
        }


def _outcome(engine: Engine) -> ColumnElement[Any]:
    """The signed record's `outcome`, read by the database from the canonical JSON bytes."""
    record = evidence_records.c.record
    if engine.dialect.name == "postgresql":
        text = func.convert_from(record, literal_column("'UTF8'"))
        return func.jsonb_extract_path_text(sa_cast(text, JSONB), literal_column("'outcome'"))
    return func.json_extract(sa_cast(record, Text), literal_column("'$.outcome'"))


class SensorsStatus:
    def __init__(self, app: App, clock_ms: Callable[[], int] | None = None) -> None:
        self._app = app
        self.clock_ms: Callable[[], int] = clock_ms or (lambda: time.time_ns() // 1_000_000)

    def status(self) -> tuple[int, list[SensorStatus]]:
        engine = self._app.engine
        now = self.clock_ms()
        r, p = evidence_records.c, evidence_purged.c
        out: dict[str, SensorStatus] = {}
        with engine.connect() as conn:
            for sid, key, created in conn.execute(
                select(sensors.c.id, sensors.c.public_key, sensors.c.created_ms).order_by(
                    sensors.c.id
                )
            ):
                out[sid] = SensorStatus(
                    sid,
                    "sha256:" + hashlib.sha256(bytes(key)).hexdigest(),
                    int(created),
                    0,
                    0,
                    0,
                    None,
                    None,
                )
            stored = select(
                r.sensor_id, func.count(), func.max(r.seq), func.max(r.observed_ms)
            ).group_by(r.sensor_id)
            for sid, n, top, last in conn.execute(stored):
                s = out.get(sid)
                if s is not None:
                    s.records, s.head_seq, s.last_observed_ms = int(n), int(top), int(last)
            purged = select(p.sensor_id, func.count(), func.max(p.seq)).group_by(p.sensor_id)
            for sid, n, top in conn.execute(purged):
                s = out.get(sid)
                if s is not None:
                    s.purged = int(n)
                    s.head_seq = max(s.head_seq, int(top))
            for s in out.values():
                if s.head_seq:
                    link = conn.execute(
                        select(r.link).where(and_(r.sensor_id == s.id, r.seq == s.head_seq))
                    ).scalar()
                    if link is None:
                        link = conn.execute(
                            select(p.link).where(and_(p.sensor_id == s.id, p.seq == s.head_seq))
                        ).scalar()
                    s.head_link = None if link is None else bytes(link).hex()
            outcome = _outcome(engine).label("outcome")
            hour = func.sum(sa_cast(r.observed_ms >= now - HOUR_MS, Integer)).label("hour")
            recent = (
                select(r.sensor_id, r.method, outcome, hour, func.count())
                .where(r.observed_ms >= now - DAY_MS)
                .group_by(r.sensor_id, r.method, outcome)
            )
            for sid, method, out_value, in_hour, in_day in conn.execute(recent):
                s = out.get(sid)
                if s is None:
                    continue
                counts = [int(in_hour or 0), int(in_day)]
                s.by_method[(str(method), str(out_value or "-"))] = counts
                s.last_hour += counts[0]
                s.last_day += counts[1]
        return now, list(out.values())


def sensors_status(request: Request) -> SensorsStatus:
    return cast(SensorsStatus, request.app.state.sensors_status)


def install(web: FastAPI, app: App) -> None:
    """Add the sensors' page and API to `web` (called by `create_app`)."""
    web.state.sensors_status = SensorsStatus(app)
    web.include_router(pages_router)
    web.include_router(api_router)


def _audit(identity: Identity, request: Request, rows: list[SensorStatus]) -> None:
    identity.actor.audit(
        request.app.state.peerwatch.audit, "sensors.view", None, {"sensors": [s.id for s in rows]}
    )


@pages_router.get("/sensors")
def sensors_page(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.READ_SENSORS))],
) -> Response:
    now, rows = sensors_status(request).status()
    _audit(identity, request, rows)
    response = render(
        request,
        "sensors.html",
        {"rows": [s.as_json() for s in rows], "now": iso_ms(now), "refresh": REFRESH_S},
        identity=identity,
    )
    response.headers["Refresh"] = str(REFRESH_S)  # live counts without script
    return response


class MethodCount(BaseModel):
    method: str
    outcome: str
    last_hour: int
    last_day: int


class SensorItem(BaseModel):
    id: str
    fingerprint: str = Field(description="sha256: and the hex SHA-256 of the raw public key.")
    registered: str | None
    records: int = Field(description="Records stored.")
    purged: int = Field(description="Records purged under retention (their hash stays).")
    head_seq: int = Field(description="Sequence number of the chain's head; 0 when empty.")
    head_link: str | None = Field(description="Hex link of the head.")
    last_observed: str | None
    last_observed_ms: int | None
    last_hour: int
    last_day: int
    by_method: list[MethodCount]


class Sensors(BaseModel):
    now: str | None = Field(description="The server's time the counts are relative to.")
    sensors: list[SensorItem]


@api_router.get("/sensors", responses=_ERRORS)
def get_sensors(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.READ_SENSORS))],
) -> Sensors:
    """Every sensor: key fingerprint, chain head, records, observations in the last hour and day
    by method and outcome (audited)."""
    now, rows = sensors_status(request).status()
    _audit(identity, request, rows)
    return Sensors(now=iso_ms(now), sensors=[SensorItem.model_validate(s.as_json()) for s in rows])
