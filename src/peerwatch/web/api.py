"""The JSON API (OpenAPI at /api/openapi.json): the same stores, scopes and audit as the pages.

Authentication: `Authorization: Bearer <token>` (`peerwatch token add`), or the browser's session
cookie, in which case calls that change something also send `X-CSRF-Token`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from peerwatch.accounts import totp
from peerwatch.accounts.password import PasswordConfig
from peerwatch.accounts.role import PERMISSIONS, Permission
from peerwatch.accounts.store import MAX_NAME, NAME_PATTERN, UNIT_PATTERN, User
from peerwatch.audit.entry import AuditEntry
from peerwatch.leads.targets import TargetSummary
from peerwatch.web.auth import Identity, current_identity, requires
from peerwatch.web.context import web_context
from peerwatch.web.scoped_targets import MAX_LISTED, MAX_OFFSET, StateFilter, store_state

router = APIRouter(prefix="/api/v1", tags=["api"])

_Id = Annotated[int, Path(ge=1, le=2**63 - 1, description="Target id.")]
_Code = Annotated[str | None, Query(max_length=100, pattern=r"^[A-Za-z0-9._-]+$")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid session or token."},
    403: {"description": "The role lacks the permission, or the CSRF token is missing."},
}


class Problem(BaseModel):
    detail: str


class Me(BaseModel):
    name: str
    role: str
    unit: str | None
    units: list[str] | None = Field(description="Units whose data may be read; null: all.")
    permissions: list[str]


class Target(BaseModel):
    id: int
    label: str
    jurisdiction: str | None
    jurisdiction_name: str | None
    unit: str | None
    score: int
    first_ms: int
    last_ms: int
    ips: list[str]
    flags: list[str]
    networks: list[str]
    content_keys: list[str]

    @classmethod
    def of(cls, t: TargetSummary) -> Target:
        return cls(
            id=t.id,
            label=t.label,
            jurisdiction=t.jurisdiction,
            jurisdiction_name=t.jurisdiction_name,
            unit=t.unit,
            score=t.score,
            first_ms=t.first_ms,
            last_ms=t.last_ms,
            ips=list(t.ips),
            flags=sorted(t.flags),
            networks=list(t.networks),
            content_keys=list(t.content_keys),
        )


class TargetDetail(BaseModel):
    target: Target
    explanation: dict[str, Any] = Field(description="Score components, links and placement.")
    observations: list[dict[str, Any]]


class AuditItem(BaseModel):
    seq: int
    at_ms: int
    actor: str
    role: str | None
    unit: str | None
    address: str | None
    action: str
    object: str | None
    detail: dict[str, Any]
    link: str = Field(description="Hex SHA-256 chain link of this entry.")

    @classmethod
    def of(cls, e: AuditEntry) -> AuditItem:
        return cls(
            seq=e.seq,
            at_ms=e.at_ms,
            actor=e.actor,
            role=e.role,
            unit=e.unit,
            address=e.address,
            action=e.action,
            object=e.object,
            detail=dict(e.detail),
            link=e.link.hex(),
        )


class AuditProblemItem(BaseModel):
    seq: int
    kind: str
    message: str


class LastFullCheck(BaseModel):
    at_ms: int
    ok: bool
    checked: int = Field(description="Entries read.")
    head_seq: int


class AuditVerification(BaseModel):
    ok: bool
    checked: int = Field(description="Entries checked by this call.")
    head_seq: int
    head_link: str
    problems: list[AuditProblemItem]
    full: bool = Field(description="This call checked the whole chain.")
    since_seq: int = Field(description="Entries after this one were checked (0: all).")
    last_full: LastFullCheck | None = Field(
        description="The last full check of this server process; null before the first."
    )


class UserItem(BaseModel):
    name: str
    role: str
    unit: str | None
    totp: bool
    disabled: bool
    created_ms: int

    @classmethod
    def of(cls, u: User) -> UserItem:
        return cls(
            name=u.name,
            role=u.role.value,
            unit=u.unit,
            totp=u.totp,
            disabled=u.disabled,
            created_ms=u.created_ms,
        )


_NAME = f"^{NAME_PATTERN}$"
_UNIT = f"^{UNIT_PATTERN}$"
_MIN_PASSWORD = PasswordConfig().min_length


class NewInvestigator(BaseModel):
    """An investigator belongs to exactly one unit."""

    model_config = ConfigDict(strict=True)  # what the schema says, no coercion (0 is no bool)

    role: Literal["investigator"]
    name: str = Field(min_length=1, max_length=MAX_NAME, pattern=_NAME)
    unit: str = Field(min_length=1, max_length=MAX_NAME, pattern=_UNIT)
    password: str = Field(min_length=_MIN_PASSWORD, max_length=1000)
    totp: bool = False


class NewOtherUser(BaseModel):
    """Coordinators, auditors and admins have no unit."""

    model_config = ConfigDict(strict=True)

    role: Literal["coordinator", "auditor", "admin"]
    name: str = Field(min_length=1, max_length=MAX_NAME, pattern=_NAME)
    unit: None = None
    password: str = Field(min_length=_MIN_PASSWORD, max_length=1000)
    totp: bool = False


NewUser = Annotated[NewInvestigator | NewOtherUser, Field(discriminator="role")]


class CreatedUser(BaseModel):
    user: UserItem
    totp_uri: str | None = Field(description="otpauth:// URI to enrol the second factor (once).")


@router.get("/me", responses=_ERRORS)
def me(identity: Annotated[Identity, Depends(current_identity)]) -> Me:
    p = identity.principal
    units = p.scope.units
    return Me(
        name=p.name,
        role=p.role.value,
        unit=p.unit,
        units=None if units is None else sorted(units),
        permissions=sorted(x.value for x in PERMISSIONS[p.role]),
    )


_PAGE_HEADERS = {
    "X-Total-Count": {
        "description": "How many targets the filters select in the scope, on all pages.",
        "schema": {"type": "integer"},
    },
    "Link": {
        "description": 'RFC 8288 links to the previous and next pages (rel="prev", rel="next").',
        "schema": {"type": "string"},
    },
}


@router.get(
    "/targets",
    responses={**_ERRORS, 200: {"description": "One page of targets.", "headers": _PAGE_HEADERS}},
)
def targets(
    request: Request,
    response: Response,
    identity: Annotated[Identity, Depends(requires(Permission.READ_TARGETS))],
    jurisdiction: _Code = None,
    unit: _Code = None,
    state: Annotated[
        StateFilter,
        Query(description='Lead state: "open" (all but closed), "all", or one state.'),
    ] = "all",
    limit: Annotated[int, Query(ge=1, le=MAX_LISTED)] = MAX_LISTED,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Targets to skip.")] = 0,
) -> list[Target]:
    """Targets within the caller's scope, by score, one page at a time (each listing is
    audited). The order is total (score, latest observation, id), so walking `offset` by `limit`
    neither repeats nor skips a target while the data stay the same; `X-Total-Count` gives the
    number on all pages and `Link` the neighbouring pages."""
    page = web_context(request).targets.ranked(
        identity.actor,
        jurisdiction=jurisdiction,
        unit=unit,
        state=store_state(state),
        limit=limit,
        offset=offset,
    )
    response.headers["X-Total-Count"] = str(page.total)
    query = {
        k: v
        for k, v in {"jurisdiction": jurisdiction, "unit": unit, "state": state}.items()
        if v is not None
    }
    links = [
        f'<{request.url.path}?{urlencode({**query, "limit": limit, "offset": at})}>; rel="{rel}"'
        for rel, at in (("prev", page.previous_offset), ("next", page.next_offset))
        if at is not None
    ]
    if links:
        response.headers["Link"] = ", ".join(links)
    return [Target.of(r) for r in page.rows]


@router.get("/targets/{target_id}", responses={**_ERRORS, 404: {"model": Problem}})
def target(
    request: Request,
    target_id: _Id,
    identity: Annotated[Identity, Depends(requires(Permission.READ_TARGETS))],
) -> TargetDetail:
    """One target with its explanation and observations; 404 when absent or outside the scope."""
    view = web_context(request).targets.view(identity.actor, target_id)
    return TargetDetail(
        target=Target.of(view.summary),
        explanation=view.explanation,
        observations=view.observations,
    )


@router.get("/audit", responses=_ERRORS)
def audit_entries(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.READ_AUDIT))],
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> list[AuditItem]:
    """The newest audit entries first (reading them is itself audited)."""
    ctx = web_context(request)
    identity.actor.audit(ctx.audit, "audit.view", None, {"limit": limit})
    return [AuditItem.of(e) for e in ctx.audit.latest(limit)]


@router.get("/audit/verify", responses=_ERRORS)
def audit_verify(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.READ_AUDIT))],
    full: Annotated[
        bool, Query(description="Check the whole chain, not only the entries added since.")
    ] = False,
) -> AuditVerification:
    """Check the chain: the entries added since this server's last passing check (after
    confirming that check's head entry is unchanged), or all of them with `full=true`. The
    first problem is the entry changed, removed or moved."""
    ctx = web_context(request)
    status = ctx.chain.check(full=full)
    report = status.report
    identity.actor.audit(
        ctx.audit,
        "audit.verify",
        None,
        {"ok": report.ok, "checked": report.checked, "full": status.full},
    )
    last = status.last_full
    return AuditVerification(
        ok=report.ok,
        checked=report.checked,
        head_seq=report.head_seq,
        head_link=report.head_link.hex(),
        problems=[
            AuditProblemItem(seq=p.seq, kind=p.kind, message=p.message) for p in report.problems
        ],
        full=status.full,
        since_seq=status.since_seq,
        last_full=None
        if last is None
        else LastFullCheck(
            at_ms=last.at_ms, ok=last.ok, checked=last.checked, head_seq=last.head_seq
        ),
    )


@router.get("/users", responses=_ERRORS)
def list_users(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.MANAGE_USERS))],
) -> list[UserItem]:
    return [UserItem.of(u) for u in web_context(request).accounts.users()]


@router.post(
    "/users",
    status_code=201,
    responses={**_ERRORS, 400: {"model": Problem}, 409: {"model": Problem}},
)
def create_user(
    request: Request,
    body: NewUser,
    identity: Annotated[Identity, Depends(requires(Permission.MANAGE_USERS))],
) -> CreatedUser:
    """Add an account; 409 when the name is taken, 400 with the reason for another refusal."""
    ctx = web_context(request)
    user, secret = ctx.accounts.add_user(
        body.name, body.role, body.password, unit=body.unit, with_totp=body.totp
    )
    identity.actor.audit(
        ctx.audit,
        "user.add",
        f"user:{user.name}",
        {"role": user.role.value, "unit": user.unit, "totp": user.totp},
    )
    uri = None if secret is None else totp.provisioning_uri(secret, user.name)
    return CreatedUser(user=UserItem.of(user), totp_uri=uri)
