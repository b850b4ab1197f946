"""Who is asking: a session cookie (browser) or a bearer token (scripts, sensors), and what they
may do. Routes declare the permission they need (`accounts/role.py`), never a role."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import Request

from peerwatch.accounts.role import Permission, Principal
from peerwatch.web.context import web_context
from peerwatch.web.scoped_targets import Actor
from peerwatch.web.security import CSRF_FIELD, CSRF_HEADER, client_address, same, session_csrf

_bearer = HTTPBearer(auto_error=False, description="An API token from `peerwatch token add`.")

_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class SignInRequiredError(Exception):
    """No valid session or token: pages send the browser to /login, the API answers 401."""


class ForbiddenError(Exception):
    """Signed in, but the role lacks the permission: 403."""


class CsrfError(Exception):
    """A state-changing request without the right CSRF token: 403."""


@dataclass(frozen=True, slots=True)
class Identity:
    principal: Principal
    via: str  # "session" or "token"
    session_token: str | None  # the cookie's token (binds the CSRF token)
    address: str

    @property
    def actor(self) -> Actor:
        return Actor(self.principal, self.address)

    @property
    def csrf(self) -> str:
        return session_csrf(self.session_token) if self.session_token else ""


def session_token(request: Request) -> str | None:
    return request.cookies.get(web_context(request).config.cookies.session_name) or None


def identify(request: Request, bearer: str | None) -> Identity | None:
    ctx = web_context(request)
    address = client_address(request)
    if bearer is not None:
        principal = ctx.accounts.token_principal(bearer)
        return None if principal is None else Identity(principal, "token", None, address)
    token = session_token(request)
    if token is None:
        return None
    session = ctx.accounts.session(token)
    if session is None or session.stage != "active":
        return None
    return Identity(session.user.principal(), "session", token, address)


def _bearer_value(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return None if credentials is None else credentials.credentials


def _identified(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    """Synchronous, so that FastAPI runs its database look-ups in the thread pool, off the event
    loop."""
    # Pages are for browsers and read the session cookie only; tokens are for the API.
    api = request.url.path.startswith("/api/")
    identity = identify(request, _bearer_value(credentials) if api else None)
    if identity is None:
        raise SignInRequiredError()
    return identity


async def current_identity(
    request: Request, identity: Annotated[Identity, Depends(_identified)]
) -> Identity:
    """The caller, with the CSRF token of a session's state-changing request checked (the form
    is read here, which needs the event loop)."""
    if request.method in _UNSAFE and identity.via == "session":
        await _check_session_csrf(request, identity)
    return identity


async def _check_session_csrf(request: Request, identity: Identity) -> None:
    given = request.headers.get(CSRF_HEADER)
    if given is None and not request.url.path.startswith("/api/"):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not same(given, identity.csrf):
        raise CsrfError()


def requires(permission: Permission) -> Callable[..., Awaitable[Identity]]:
    """A dependency: the caller's identity, when its role has `permission`."""

    async def dependency(identity: Annotated[Identity, Depends(current_identity)]) -> Identity:
        if not identity.principal.may(permission):
            raise ForbiddenError()
        return identity

    return dependency
