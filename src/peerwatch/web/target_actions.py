"""The target page's workflow: claim, release, transfer and state changes of a lead, its history,
its requisition lines and the timeline of its observations (docs/webapp.md, docs/operations.md).

Every action is checked three times before the lead workflow runs it:
- the permission (`claim-targets`), by the route's dependency;
- the scope: the target is fetched by id and its unit checked against the actor's scope exactly as
  for a view (`ScopedTargets`), so another unit's target answers 404 "no such target", like a
  missing one, and the refusal is audited as `target.denied`;
- the unit: an investigator acts for its own unit only (claims for it; releases, transfers and
  changes only what its unit holds: the workflow refuses the rest with the holder's name). A
  coordinator acts nationally and names the unit of a claim.

An illegal move or a lead another unit holds is answered 409 with the workflow's sentence, which
names the legal moves or the holder. Every attempt, done or refused, is one audit entry
(`target.claim`, `target.release`, `target.transfer`, `target.state`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Form, Path
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from peerwatch.accounts.role import Permission, Role
from peerwatch.leads.requisition import CGNAT_NO_PORT, RequisitionLine, requisition_lines
from peerwatch.leads.targets import TargetSummary, possession_kind
from peerwatch.leads.workflow import OUTCOMES, HistoryEntry, Lead, LeadError
from peerwatch.web.auth import Identity, requires
from peerwatch.web.context import web_context
from peerwatch.web.pages import render
from peerwatch.web.scoped_targets import Actor, TargetView

if TYPE_CHECKING:
    from peerwatch.app import App

pages_router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)
api_router = APIRouter(prefix="/api/v1", tags=["leads"])

_Id = Annotated[int, Path(ge=1, le=2**63 - 1, description="Target id.")]
_UNIT = r"^[A-Za-z0-9._-]{1,100}$"
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid session or token."},
    403: {"description": "The role lacks the permission, or the CSRF token is missing."},
    404: {"description": "No such target, or outside the caller's scope (not told apart)."},
    409: {"description": "Refused by the lead workflow: illegal move, or another unit holds it."},
}
MOVES = ("in-investigation", "requisition-sent", "closed")  # the states `state` moves to
KINDS = ("possession", "claim", "negative")
KIND_COLOURS = {"possession": "#b30000", "claim": "#e38a00", "negative": "#8c8c8c"}


class LeadActions:
    """The lead workflow as the web app runs it: within the actor's scope, every attempt audited."""

    def __init__(self, app: App) -> None:
        self._app = app

    def check(self, request: Request, actor: Actor, target_id: int) -> TargetSummary:
        """The target when the actor's scope holds it; else TargetNotFoundError (404), audited
        `target.denied`. The one scope rule of `ScopedTargets` (its `_find`), not a copy."""
        return web_context(request).targets._find(actor, target_id)

    def units(self) -> list[str]:
        return [u.code for u in self._app.jurisdictions.list_units()]

    def lead(self, target_id: int) -> Lead:
        return self._app.leads.get(target_id)

    def history(self, target_id: int) -> list[HistoryEntry]:
        return self._app.leads.history(target_id)

    def requisition(self, target_id: int) -> list[RequisitionLine]:
        return requisition_lines(self._app.targets.observations(target_id))

    def run(
        self,
        request: Request,
        actor: Actor,
        target_id: int,
        action: str,
        *,
        unit: str | None = None,
        to_unit: str | None = None,
        state: str | None = None,
        outcome: str | None = None,
        note: str | None = None,
    ) -> Lead:
        """Do `action` for `actor` (after the scope check); LeadError when the workflow refuses.
        The audit entry is written either way."""
        self.check(request, actor, target_id)
        principal = actor.principal
        # An investigator acts for its unit, whatever the form says; a coordinator nationally.
        acting = principal.unit if principal.role is Role.INVESTIGATOR else None
        leads = self._app.leads
        detail: dict[str, Any] = {"note": note}
        try:
            before = leads.get(target_id)
            detail["from_state"], detail["from_unit"] = before.state.value, before.unit
            if action == "claim":
                claim_unit = acting or unit
                detail["unit"] = claim_unit
                if not claim_unit:
                    raise LeadError("a claim names the unit that takes the lead")
                lead = leads.claim(target_id, unit=claim_unit, actor=principal.name, note=note)
            elif action == "release":
                detail["unit"] = acting
                lead = leads.release(target_id, actor=principal.name, unit=acting, note=note)
            elif action == "transfer":
                detail["unit"], detail["to_unit"] = acting, to_unit
                if not to_unit:
                    raise LeadError("a transfer names the unit that receives the lead")
                lead = leads.transfer(
                    target_id, to_unit=to_unit, actor=principal.name, unit=acting, note=note
                )
            else:
                detail["unit"], detail["state"], detail["outcome"] = acting, state, outcome
                lead = leads.set_state(
                    target_id,
                    state or "",
                    actor=principal.name,
                    unit=acting,
                    outcome=outcome or None,
                    note=note,
                )
        except LeadError as exc:
            actor.audit(
                self._app.audit,
                f"target.{action}",
                f"target:{target_id}",
                {**detail, "ok": False, "refused": str(exc)},
            )
            raise
        actor.audit(
            self._app.audit,
            f"target.{action}",
            f"target:{target_id}",
            {**detail, "ok": True, "to_state": lead.state.value, "holder_unit": lead.unit},
        )
        return lead


def _actions(request: Request) -> LeadActions:
    found: LeadActions = request.app.state.lead_actions
    return found


# --- the timeline -------------------------------------------------------------------------------


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def timeline_svg(observations: Sequence[dict[str, Any]], *, bins: int = 48) -> Markup:
    """Observations over time as stacked bars per kind (possession, claim, negative): an inline
    SVG without script. Each bar's title gives its interval and counts."""
    times = [
        (int(o["observed_ms"]), possession_kind(o["method"], o.get("outcome")))
        for o in observations
    ]
    if not times:
        return Markup("")
    first, last = min(t for t, _k in times), max(t for t, _k in times)
    span = max(last - first, 1)
    n = 1 if last == first else bins
    counts = [dict.fromkeys(KINDS, 0) for _ in range(n)]
    for at, kind in times:
        i = min(int((at - first) * n / span), n - 1) if n > 1 else 0
        counts[i][kind] += 1
    width, height, left, bottom, top = 720.0, 180.0, 40.0, 30.0, 10.0
    plot_w, plot_h = width - left - 10, height - bottom - top
    peak = max(sum(c.values()) for c in counts)
    # One instant only: one narrow bar in the middle, not a bar across the whole axis.
    bar_w = plot_w / n if n > 1 else 12.0
    x0 = left if n > 1 else left + (plot_w - bar_w) / 2
    out = [
        f'<svg id="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} '
        f'{height:.0f}" width="{width:.0f}" height="{height:.0f}" role="img" '
        'aria-labelledby="timeline-title"><title id="timeline-title">Observations over time by '
        "kind</title>",
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#333" stroke-width="1"/>',
        f'<text x="{left - 4}" y="{top + 8}" font-size="10" text-anchor="end">{peak}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" font-size="10" text-anchor="end">0</text>',
    ]
    for i, c in enumerate(counts):
        total = sum(c.values())
        if not total:
            continue
        start = first + span * i // n
        end = first + span * (i + 1) // n if n > 1 else last
        y = top + plot_h
        tip = f"{_day(start)} to {_day(end)} UTC: " + ", ".join(f"{c[k]} {k}" for k in KINDS)
        parts = []
        for kind in KINDS:
            if not c[kind]:
                continue
            h = max(plot_h * c[kind] / peak, 1.0)
            y -= h
            parts.append(
                f'<rect x="{x0 + i * bar_w + 0.5:.1f}" y="{y:.1f}" '
                f'width="{max(bar_w - 1, 1):.1f}" height="{h:.1f}" fill="{KIND_COLOURS[kind]}"/>'
            )
        out.append(f"<g><title>{escape(tip)}</title>{''.join(parts)}</g>")
    out.append(
        f'<text x="{left}" y="{height - 12}" font-size="10">{escape(_day(first))} UTC</text>'
        f'<text x="{left + plot_w}" y="{height - 12}" font-size="10" text-anchor="end">'
        f"{escape(_day(last))} UTC</text>"
    )
    x = left + plot_w / 2 - 120
    for kind in KINDS:
        out.append(
            f'<rect x="{x:.0f}" y="{height - 21}" width="10" height="10" '
            f'fill="{KIND_COLOURS[kind]}"/><text x="{x + 13:.0f}" y="{height - 12}" '
            f'font-size="10">{kind}</text>'
        )
        x += 80
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704  # numbers, constants, escaped text


# --- the target page's panel --------------------------------------------------------------------


@dataclass(frozen=True)
class TargetPanel:
    lead: Lead
    history: list[HistoryEntry]
    requisition: list[RequisitionLine]
    cgnat_lines: int  # lines with the carrier-grade NAT warning
    timeline: Markup
    kinds: dict[str, int]
    units: list[str]
    may_claim: bool
    may_export: bool
    coordinator: bool
    moves: tuple[str, ...]
    outcomes: tuple[str, ...]
    cases: list[dict[str, Any]]


def target_panel(request: Request, view: TargetView, identity: Identity) -> TargetPanel:
    """What target.html shows beyond the view: called from the template, after the page's route
    has checked the scope and audited the view."""
    actions = _actions(request)
    target_id = view.summary.id
    lines = actions.requisition(target_id)
    kinds = dict.fromkeys(KINDS, 0)
    for o in view.observations:
        kinds[possession_kind(o["method"], o.get("outcome"))] += 1
    principal = identity.principal
    cases_state = getattr(request.app.state, "cases", None)
    cases = [] if cases_state is None else cases_state.listing(view.summary.label)
    return TargetPanel(
        lead=actions.lead(target_id),
        history=actions.history(target_id),
        requisition=lines,
        cgnat_lines=sum(CGNAT_NO_PORT in ln.warnings for ln in lines),
        timeline=timeline_svg(view.observations),
        kinds=kinds,
        units=actions.units(),
        may_claim=principal.may(Permission.CLAIM_TARGETS),
        may_export=principal.may(Permission.EXPORT_CASES),
        coordinator=principal.role is Role.COORDINATOR,
        moves=MOVES,
        outcomes=OUTCOMES,
        cases=cases,
    )


# --- page routes (forms) ------------------------------------------------------------------------

_Note = Annotated[str, Form(max_length=2000)]
_UnitForm = Annotated[str, Form(max_length=100, pattern=r"^[A-Za-z0-9._-]{0,100}$")]


def _done(
    request: Request, identity: Identity, target_id: int, action: str, **kw: str | None
) -> Response:
    try:
        _actions(request).run(request, identity.actor, target_id, action, **kw)
    except LeadError as exc:
        return render(
            request,
            "lead_refused.html",
            {"target_id": target_id, "action": action, "message": str(exc)},
            identity=identity,
            status=409,
        )
    return RedirectResponse(f"/leads/{target_id}#lead", status_code=303)


@pages_router.post("/leads/{target_id}/claim")
def claim_form(
    request: Request,
    target_id: _Id,
    identity: Annotated[Identity, Depends(requires(Permission.CLAIM_TARGETS))],
    unit: _UnitForm = "",
    note: _Note = "",
) -> Response:
    return _done(request, identity, target_id, "claim", unit=unit or None, note=note or None)


@pages_router.post("/leads/{target_id}/release")
def release_form(
    request: Request,
    target_id: _Id,
    identity: Annotated[Identity, Depends(requires(Permission.CLAIM_TARGETS))],
    note: _Note = "",
) -> Response:
    return _done(request, identity, target_id, "release", note=note or None)


@pages_router.post("/leads/{target_id}/transfer")
def transfer_form(
    request: Request,
    target_id: _Id,
    identity: Annotated[Identity, Depends(requires(Permission.CLAIM_TARGETS))],
    to_unit: _UnitForm = "",
    note: _Note = "",
) -> Response:
    return _done(
        request, identity, target_id, "transfer", to_unit=to_unit or None, note=note or None
    )


@pages_router.post("/leads/{target_id}/state")
def state_form(
    request: Request,
    target_id: _Id,
    identity: Annotated[Identity, Depends(requires(Permission.CLAIM_TARGETS))],
    state: Annotated[str, Form(max_length=40)] = "",
    outcome: Annotated[str, Form(max_length=40)] = "",
    note: _Note = "",
) -> Response:
    return _done(
        request,
        identity,
        target_id,
        "state",
        state=state or None,
        outcome=outcome or None,
        note=note or None,
    )


# --- API ----------------------------------------------------------------------------------------


class LeadItem(BaseModel):
    target_id: int
    state: str
    unit: str | None
    holder: str | None
    since: str | None = Field(description="UTC, ISO 8601 to the second.")
    outcome: str | None
    updated: str | None

    @classmethod
    def of(cls, lead: Lead) -> LeadItem:
        return cls.model_validate(lead.as_json())


class HistoryItem(BaseModel):
    id: int
    at: str | None
    at_ms: int
    actor: str
    unit: str | None
    action: str
    from_state: str
    to_state: str
    from_unit: str | None
    to_unit: str | None
    outcome: str | None
    note: str | None


class RequisitionItem(BaseModel):
    ip: str
    port: int | None
    time: str
    asn: int | None
    organisation: str | None
    basis: str
    method: str
    content_key: str
    evidence: str
    observations: int
    flags: list[str]
    warnings: list[str]


class Workflow(BaseModel):
    lead: LeadItem
    history: list[HistoryItem]
    requisition: list[RequisitionItem]


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    note: str | None = Field(default=None, max_length=2000)


class ClaimBody(_Body):
    unit: str | None = Field(
        default=None,
        pattern=_UNIT,
        description="The claiming unit (coordinators); an investigator claims for its own.",
    )


class ReleaseBody(_Body):
    pass


class TransferBody(_Body):
    to_unit: str = Field(pattern=_UNIT)


class StateBody(_Body):
    state: Literal["in-investigation", "requisition-sent", "closed"]
    outcome: (
        Literal["identified", "not-identified", "no-offence", "isp-no-data", "duplicate", "other"]
        | None
    ) = Field(default=None, description="Required when closing, refused otherwise.")


class Changed(BaseModel):
    lead: LeadItem


def _api_run(
    request: Request, identity: Identity, target_id: int, action: str, **kw: str | None
) -> Changed:
    try:
        lead = _actions(request).run(request, identity.actor, target_id, action, **kw)
    except LeadError as exc:
        raise HTTPException(409, str(exc)) from None
    return Changed(lead=LeadItem.of(lead))


@api_router.get("/targets/{target_id}/lead", responses=_ERRORS)
def workflow_api(
    request: Request,
    target_id: _Id,
    identity: Annotated[Identity, Depends(requires(Permission.READ_TARGETS))],
) -> Workflow:
    """The lead's state, its history and the requisition lines (audited as a view)."""
    actions = _actions(request)
    summary = actions.check(request, identity.actor, target_id)
    lines = actions.requisition(target_id)
    identity.actor.audit(
        web_context(request).audit,
        "target.view",
        f"target:{target_id}",
        {"label": summary.label, "part": "lead", "requisition_lines": len(lines)},
    )
    return Workflow(
        lead=LeadItem.of(actions.lead(target_id)),
        history=[HistoryItem.model_validate(h.as_json()) for h in actions.history(target_id)],
        requisition=[RequisitionItem.model_validate(ln.as_json()) for ln in lines],
    )


@api_router.post("/targets/{target_id}/claim", responses=_ERRORS)
def claim_api(
    request: Request,
    target_id: _Id,
    body: ClaimBody,
    identity: Annotated[Identity, Depends(requires(Permission.CLAIM_TARGETS))],
) -> Changed:
    """Claim the lead: for the caller's unit (investigator) or `unit` (coordinator)."""
    return _api_run(request, identity, target_id, "claim", unit=body.unit, note=body.note)


@api_router.post("/targets/{target_id}/release", responses=_ERRORS)
def release_api(
    request: Request,
    target_id: _Id,
    body: ReleaseBody,
    identity: Annotated[Identity, Depends(requires(Permission.CLAIM_TARGETS))],
) -> Changed:
    """Give the lead back (state new); an investigator only what its unit holds."""
    return _api_run(request, identity, target_id, "release", note=body.note)


@api_router.post("/targets/{target_id}/transfer", responses=_ERRORS)
def transfer_api(
    request: Request,
    target_id: _Id,
    body: TransferBody,
    identity: Annotated[Identity, Depends(requires(Permission.CLAIM_TARGETS))],
) -> Changed:
    """Hand the lead to `to_unit`, which holds it as claimed from now on."""
    return _api_run(request, identity, target_id, "transfer", to_unit=body.to_unit, note=body.note)


@api_router.post("/targets/{target_id}/state", responses=_ERRORS)
def state_api(
    request: Request,
    target_id: _Id,
    body: StateBody,
    identity: Annotated[Identity, Depends(requires(Permission.CLAIM_TARGETS))],
) -> Changed:
    """Move the lead along the investigation; `closed` needs an outcome."""
    return _api_run(
        request,
        identity,
        target_id,
        "state",
        state=body.state,
        outcome=body.outcome,
        note=body.note,
    )


def install(web: FastAPI, app: App) -> None:
    """Add the lead actions and the target page's panel to `web` (called by `create_app`)."""
    web.state.lead_actions = LeadActions(app)
    web.state.peerwatch.templates.env.globals["target_panel"] = target_panel
    web.include_router(pages_router)
    web.include_router(api_router)
