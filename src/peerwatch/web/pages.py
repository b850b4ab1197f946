"""The investigators' pages: thin routes that parse, call the stores and render (house rule 8).

Plain HTML forms, no script: nothing is loaded from anywhere but this server (CSP default-src
'self'). Every POST form carries the CSRF token (security.py).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Path, Query
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.requests import Request
from starlette.responses import Response

from peerwatch.accounts import totp
from peerwatch.accounts.role import PERMISSIONS, Permission, Role
from peerwatch.accounts.store import User
from peerwatch.errors import InputError
from peerwatch.web.auth import CsrfError, Identity, identify, requires, session_token
from peerwatch.web.context import WebContext, web_context
from peerwatch.web.login import LoginFlow
from peerwatch.web.scoped_targets import (
    MAX_LISTED,
    MAX_OFFSET,
    PAGE_SIZE,
    STATE_FILTERS,
    StateFilter,
    store_state,
)
from peerwatch.web.security import CSRF_FIELD, new_login_csrf, same, session_csrf

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)

_Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
_Code = Annotated[str | None, Query(max_length=100, pattern=r"^[A-Za-z0-9._-]*$")]


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    identity: Identity | None = None,
    status: int = 200,
) -> Response:
    ctx = web_context(request)
    values = {"identity": identity, "csrf": identity.csrf if identity else "", **context}
    return ctx.templates.TemplateResponse(request, name, values, status_code=status)


def _login_form(
    request: Request, *, error: str | None = None, status: int = 200, name: str = ""
) -> Response:
    ctx = web_context(request)
    cookie = ctx.config.cookies
    token = request.cookies.get(cookie.login_name) or new_login_csrf()
    response = render(
        request, "login.html", {"error": error, "name": name, "csrf": token}, status=status
    )
    cookie.set(response, cookie.login_name, token, max_age_s=3600)
    return response


def _login_csrf_ok(request: Request, given: str) -> bool:
    cookie = web_context(request).config.cookies
    return same(given, request.cookies.get(cookie.login_name))


@router.get("/")
def home(request: Request) -> Response:
    identity = identify(request, None)
    if identity is None:
        return RedirectResponse("/login", status_code=303)
    allowed = PERMISSIONS[identity.principal.role]
    if Permission.READ_TARGETS in allowed:
        return RedirectResponse("/leads", status_code=303)
    if Permission.READ_AUDIT in allowed:
        return RedirectResponse("/audit", status_code=303)
    return RedirectResponse("/admin/users", status_code=303)


@router.get("/login")
def login_page(request: Request) -> Response:
    return _login_form(request)


@router.post("/login")
def login(
    request: Request,
    name: Annotated[str, Form(max_length=200)],
    password: Annotated[str, Form(max_length=1000)],
    csrf: Annotated[str, Form(alias=CSRF_FIELD, max_length=200)] = "",
) -> Response:
    if not _login_csrf_ok(request, csrf):
        raise CsrfError()
    flow = LoginFlow(request)
    outcome = flow.password(name, password)
    if outcome.retry_after_s:
        response = _login_form(
            request,
            error=f"Too many failed sign-ins. Try again in {outcome.retry_after_s} s.",
            status=429,
        )
        response.headers["Retry-After"] = str(outcome.retry_after_s)
        return response
    if outcome.token is None:
        return _login_form(request, error="Wrong name or password.", status=401, name=name)
    return flow.redirect_with_session(outcome.token, "/login/totp" if outcome.pending else "/")


@router.get("/login/totp")
def totp_page(request: Request) -> Response:
    token = session_token(request)
    session = None if token is None else web_context(request).accounts.session(token)
    if token is None or session is None or session.stage != "totp":
        return RedirectResponse("/login", status_code=303)
    return render(request, "totp.html", {"csrf": session_csrf(token), "error": None})


@router.post("/login/totp")
def totp_submit(
    request: Request,
    code: Annotated[str, Form(max_length=20)],
    csrf: Annotated[str, Form(alias=CSRF_FIELD, max_length=200)] = "",
) -> Response:
    token = session_token(request)
    if token is None or not same(csrf, session_csrf(token)):
        raise CsrfError()
    flow = LoginFlow(request)
    outcome = flow.second_factor(token, code)
    if outcome.retry_after_s:
        response = render(
            request,
            "totp.html",
            {
                "csrf": session_csrf(token),
                "error": f"Too many failed codes. Try again in {outcome.retry_after_s} s.",
            },
            status=429,
        )
        response.headers["Retry-After"] = str(outcome.retry_after_s)
        return response
    if outcome.restart:
        return RedirectResponse("/login", status_code=303)
    if outcome.token is None:
        return render(
            request,
            "totp.html",
            {"csrf": session_csrf(token), "error": "Wrong or already used code."},
            status=401,
        )
    return flow.redirect_with_session(outcome.token, "/")


@router.post("/logout")
def logout(
    request: Request,
    csrf: Annotated[str, Form(alias=CSRF_FIELD, max_length=200)] = "",
) -> Response:
    token = session_token(request)
    if token is None or not same(csrf, session_csrf(token)):
        raise CsrfError()
    return LoginFlow(request).logout(token)


@router.get("/leads")
def leads(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.READ_TARGETS))],
    jurisdiction: _Code = None,
    unit: _Code = None,
    # Open leads unless asked otherwise: the work to do, and what the map counts, so that a
    # jurisdiction's number on the map is the length of the list its link opens.
    state: StateFilter = "open",
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LISTED)] = PAGE_SIZE,
) -> Response:
    ctx = web_context(request)
    filters = {"jurisdiction": jurisdiction or "", "unit": unit or "", "state": state}
    page = ctx.targets.ranked(
        identity.actor,
        jurisdiction=jurisdiction or None,
        unit=unit or None,
        state=store_state(state),
        limit=limit,
        offset=offset,
    )

    def url(**changes: Any) -> str:
        return leads_url(**{**filters, "limit": limit, "offset": 0, **changes})

    return render(
        request,
        "leads.html",
        {
            "page": page,
            "rows": page.rows,
            "scope": identity.principal.scope.describe(),
            **filters,
            "limit": limit,
            "page_size": PAGE_SIZE,
            "previous_url": None
            if page.previous_offset is None
            else url(offset=page.previous_offset),
            "next_url": None if page.next_offset is None else url(offset=page.next_offset),
            "state_links": [(s, url(state=s)) for s in STATE_FILTERS],
        },
        identity=identity,
    )


def leads_url(*, jurisdiction: str, unit: str, state: str, limit: int, offset: int) -> str:
    """The list's address with these filters; defaults are left out, so that the map's
    `/leads?jurisdiction=XX` is the address of the same list."""
    query = {
        "jurisdiction": jurisdiction,
        "unit": unit,
        "state": "" if state == "open" else state,
        "offset": str(offset) if offset else "",
        "limit": "" if limit == PAGE_SIZE else str(limit),
    }
    given = {k: v for k, v in query.items() if v}
    return "/leads" + ("?" + urlencode(given) if given else "")


@router.get("/leads/{target_id}")
def target_page(
    request: Request,
    target_id: _Id,
    identity: Annotated[Identity, Depends(requires(Permission.READ_TARGETS))],
) -> Response:
    view = web_context(request).targets.view(identity.actor, target_id)
    return render(request, "target.html", {"view": view}, identity=identity)


@router.get("/admin/users")
def users_page(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.MANAGE_USERS))],
) -> Response:
    return _users(request, identity, created=None, uri=None, error=None)


def _users(
    request: Request,
    identity: Identity,
    *,
    created: User | None,
    uri: str | None,
    error: str | None,
    status: int = 200,
) -> Response:
    ctx: WebContext = web_context(request)
    return render(
        request,
        "users.html",
        {
            "users": ctx.accounts.users(),
            "roles": [r.value for r in Role],
            "created": created,
            "totp_uri": uri,
            "error": error,
        },
        identity=identity,
        status=status,
    )


@router.post("/admin/users")
def add_user(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.MANAGE_USERS))],
    name: Annotated[str, Form(max_length=100)],
    role: Annotated[str, Form(max_length=20)],
    password: Annotated[str, Form(max_length=1000)],
    unit: Annotated[str, Form(max_length=100)] = "",
    with_totp: Annotated[bool, Form(alias="totp")] = False,
) -> Response:
    ctx = web_context(request)
    try:
        user, secret = ctx.accounts.add_user(
            name, role, password, unit=unit or None, with_totp=with_totp
        )
    except InputError as exc:
        return _users(request, identity, created=None, uri=None, error=str(exc), status=400)
    identity.actor.audit(
        ctx.audit,
        "user.add",
        f"user:{user.name}",
        {"role": user.role.value, "unit": user.unit, "totp": user.totp},
    )
    uri = None if secret is None else totp.provisioning_uri(secret, user.name)
    return _users(request, identity, created=user, uri=uri, error=None)


@router.get("/audit")
def audit_page(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.READ_AUDIT))],
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
    full: Annotated[bool, Query(description="Verify the whole chain, not only what is new.")] = (
        False
    ),
) -> Response:
    ctx = web_context(request)
    identity.actor.audit(ctx.audit, "audit.view", None, {"limit": limit, "full": full})
    # Only the entries added since this app's last passing check are verified on a load; the
    # whole chain when asked (audit_check.py).
    status = ctx.chain.check(full=full)
    return render(
        request,
        "audit.html",
        {
            "entries": ctx.audit.latest(limit),
            "report": status.report,
            "status": status,
            "limit": limit,
        },
        identity=identity,
    )
