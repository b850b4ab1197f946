"""`create_app`: the FastAPI application of one peerwatch installation (docs/webapp.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

import peerwatch
from peerwatch.accounts.store import AccountExistsError
from peerwatch.errors import InputError
from peerwatch.web import api, pages, target_actions
from peerwatch.web import cases as case_pages
from peerwatch.web import map as map_pages
from peerwatch.web import operations as operation_pages
from peerwatch.web import sensors as sensor_pages
from peerwatch.web import watchlist as watchlist_pages
from peerwatch.web.audit_check import AuditChainCheck
from peerwatch.web.auth import CsrfError, ForbiddenError, SignInRequiredError
from peerwatch.web.context import WebConfig, WebContext
from peerwatch.web.scoped_targets import (
    ScopedTargets,
    ScopeViolationError,
    TargetNotFoundError,
    TargetReader,
)
from peerwatch.web.security import SecurityHeaders

if TYPE_CHECKING:
    from peerwatch.app import App

_HERE = Path(__file__).parent


def create_app(
    app: App, config: WebConfig | None = None, *, targets: TargetReader | None = None
) -> FastAPI:
    """The web app over `app`'s stores. `targets` replaces `app.targets` (a test that the web
    layer fails closed on a store that ignores the scope)."""
    config = config or WebConfig()
    reader: TargetReader = targets if targets is not None else app.targets
    templates = Jinja2Templates(directory=_HERE / "templates")
    # Times are shown as UTC ISO 8601 to the millisecond, the form of the evidence and the case
    # package (the stored value stays integer milliseconds).
    templates.env.filters["utc"] = iso_utc_ms
    web = FastAPI(
        title="peerwatch",
        version=peerwatch.__version__,
        description="Investigators' API: targets within the caller's scope, the audit log, "
        "accounts. Hashes and metadata only.",
        openapi_url="/api/openapi.json",
        # The interactive docs pages load their scripts from a CDN: nothing here may.
        docs_url=None,
        redoc_url=None,
    )
    web.state.peerwatch = WebContext(
        accounts=app.accounts,
        audit=app.audit,
        targets=ScopedTargets(reader, app.audit),
        config=config,
        templates=templates,
        chain=AuditChainCheck(app.audit),
    )
    web.add_middleware(SecurityHeaders)
    web.mount("/static", StaticFiles(directory=_HERE / "static"), name="static")
    web.include_router(pages.router)
    web.include_router(api.router)
    operation_pages.install(web, app)
    map_pages.install(web, app)
    target_actions.install(web, app)
    case_pages.install(web, app)
    sensor_pages.install(web, app)
    watchlist_pages.install(web, app)
    _handle_errors(web)
    return web


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _problem(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    if _is_api(request):
        return JSONResponse({"detail": message}, status_code=status, headers=headers)
    return pages.render(
        request, "error.html", {"status": status, "message": message}, status=status
    )


def iso_utc_ms(ms: int | None) -> str:
    if ms is None:
        return "-"
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def api_routes(web: FastAPI) -> list[APIRoute]:
    """Every route of the app, whichever module's router added it (FastAPI wraps an included
    router; its routes are reached through `original_router`)."""
    found: list[APIRoute] = []
    stack: list[Any] = list(web.router.routes)
    while stack:
        route = stack.pop()
        inner = getattr(route, "original_router", None)
        if inner is not None:
            stack.extend(inner.routes)
        elif isinstance(route, APIRoute):
            found.append(route)
    return found


def _allowed_methods(web: FastAPI, path: str) -> list[str]:
    methods: set[str] = set()
    for route in api_routes(web):
        if route.path_regex.match(path):
            methods |= route.methods or set()
    return sorted(methods)


def _handle_errors(web: FastAPI) -> None:
    async def sign_in(request: Request, exc: Exception) -> Response:
        if _is_api(request):
            return JSONResponse(
                {"detail": "sign in or send a bearer token"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return RedirectResponse("/login", status_code=303)

    async def forbidden(request: Request, exc: Exception) -> Response:
        return _problem(request, 403, "your role may not do this")

    async def csrf(request: Request, exc: Exception) -> Response:
        return _problem(request, 403, "missing or wrong CSRF token: reload the page and try again")

    async def not_found(request: Request, exc: Exception) -> Response:
        return _problem(request, 404, "no such target")

    async def violation(request: Request, exc: Exception) -> Response:
        return _problem(request, 500, "internal error: the data was withheld")

    async def bad_input(request: Request, exc: Exception) -> Response:
        return _problem(request, 400, str(exc))

    async def taken(request: Request, exc: Exception) -> Response:
        return _problem(request, 409, str(exc))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the methods of the first route that matched the path; a path
            # served by two routes (GET and POST /api/v1/users) has both (RFC 9110 15.5.6).
            headers["Allow"] = ", ".join(_allowed_methods(request.app, request.url.path))
        return _problem(request, exc.status_code, str(exc.detail), headers)

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        if _is_api(request):
            return JSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)
        return _problem(request, 422, "the request's fields are not valid")

    web.add_exception_handler(SignInRequiredError, sign_in)
    web.add_exception_handler(ForbiddenError, forbidden)
    web.add_exception_handler(CsrfError, csrf)
    web.add_exception_handler(TargetNotFoundError, not_found)
    web.add_exception_handler(ScopeViolationError, violation)
    web.add_exception_handler(InputError, bad_input)
    web.add_exception_handler(AccountExistsError, taken)
    web.add_exception_handler(HTTPException, http_error)
    web.add_exception_handler(RequestValidationError, invalid)
