"""National operations in the web app: the planner, the list, one operation, dispatch and the
packages' downloads (docs/webapp.md, "Operations"; the operations themselves: docs/operations.md).

Who sees what:
- `plan-operations` (coordinators, national): preview filters, create (frozen), dispatch, and
  download every unit's package and the national summary.
- `read-operations` (coordinators and investigators): an operation only as far as the reader's
  scope goes. An investigator lists the operations that hold targets of its unit, sees only those
  targets and a summary computed from them, and downloads only its unit's package. An operation
  without a target of its unit answers 404 "no such operation", exactly like a missing one.

The scope goes into the query (`operation_targets.unit IN (...)`), as for targets; a row outside
the scope coming back anyway fails the request closed (500, nothing shown). A target's unit in an
operation is the one frozen at creation: the holding unit, else its jurisdiction's unit; targets no
unit covers (`_unassigned`) are national-only. Every view, preview, creation, dispatch, download
and refusal is one audit entry.
"""

from __future__ import annotations

import io
import json
import threading
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

from fastapi import APIRouter, Depends, FastAPI, Form, Query
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, func, select
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from peerwatch.accounts.role import Permission, Scope
from peerwatch.errors import InputError
from peerwatch.leads.operation import UNASSIGNED, Operation, OperationError, OperationFilters
from peerwatch.leads.workflow import iso_ms
from peerwatch.storage.schema import operation_targets, operations
from peerwatch.web.auth import Identity, requires
from peerwatch.web.pages import render
from peerwatch.web.scoped_targets import Actor, ScopeViolationError

if TYPE_CHECKING:
    from peerwatch.app import App

pages_router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)
api_router = APIRouter(prefix="/api/v1", tags=["operations"])

MAX_JURISDICTIONS = 200  # codes in one filter
_CODE = r"^[A-Za-z0-9._-]{1,100}$"
_FOLDER = r"^[A-Za-z0-9._-]{1,120}$"
_OpId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="Operation id.")]
_Folder = Annotated[
    str, PathParam(pattern=_FOLDER, description="A unit's package folder (from the dispatch).")
]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid session or token."},
    403: {"description": "The role lacks the permission, or the CSRF token is missing."},
}


class OperationNotFoundError(HTTPException):
    """No such operation, or none of its targets is in the reader's scope (not told apart): the
    app's HTTP error handler answers 404 for pages and API alike."""

    def __init__(self, op_id: int) -> None:
        super().__init__(404, "no such operation")
        self.op_id = op_id


# --- the scoped reads and the actions -----------------------------------------------------------


@dataclass(frozen=True)
class OperationRow:
    id: int
    name: str
    created_ms: int
    created_by: str
    targets: int  # targets within the reader's scope (all of them for national readers)
    dispatched: bool


@dataclass(frozen=True)
class OperationView:
    operation: Operation  # with only the targets within the reader's scope
    summary: dict[str, Any]  # of those targets (the national summary for national readers)
    national: bool
    packages: list[dict[str, Any]]  # {"unit", "folder", "targets"} the reader may download
    dispatched: bool


class ScopedOperations:
    """Operations as the web app reads them: within the reader's scope, every action audited."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._dispatch_lock = threading.Lock()  # one dispatch at a time writes HOME/operations

    @property
    def root(self) -> Path:
        return self._app.settings.home / "operations"

    def folder(self, op_id: int) -> Path:
        return self.root / str(op_id)

    def known_jurisdictions(self) -> list[str]:
        """Codes of the active jurisdiction map, offered by the planner."""
        return [j.code for j in self._app.jurisdictions.list_jurisdictions()]

    def dispatched(self, op_id: int) -> bool:
        return (self.folder(op_id) / "manifest.json").is_file()

    def listing(self, actor: Actor) -> list[OperationRow]:
        scope = actor.principal.scope
        o, t = operations.c, operation_targets.c
        rows: list[OperationRow] = []
        if scope.units is None:
            query = select(o.id, o.name, o.created_ms, o.created_by, o.target_count).order_by(
                o.id.desc()
            )
        elif scope.units:
            query = (
                select(o.id, o.name, o.created_ms, o.created_by, func.count())
                .join_from(operations, operation_targets, t.operation_id == o.id)
                .where(t.unit.in_(sorted(scope.units)))
                .group_by(o.id, o.name, o.created_ms, o.created_by)
                .order_by(o.id.desc())
            )
        else:
            query = None  # an empty scope reads nothing (never "no filter")
        if query is not None:
            with self._app.engine.connect() as conn:
                rows = [
                    OperationRow(
                        int(r[0]), r[1], int(r[2]), r[3], int(r[4]), self.dispatched(int(r[0]))
                    )
                    for r in conn.execute(query)
                ]
        actor.audit(self._app.audit, "operation.list", None, {"operations": [r.id for r in rows]})
        return rows

    def view(self, actor: Actor, op_id: int) -> OperationView:
        op = self._get(actor, op_id)
        national = actor.principal.scope.is_everything
        summary = self._app.operations.summary(op)
        packages = self._packages(actor, op_id)
        actor.audit(
            self._app.audit,
            "operation.view",
            f"operation:{op_id}",
            {"name": op.name, "targets": [s["id"] for s in op.targets]},
        )
        return OperationView(op, summary, national, packages, self.dispatched(op_id))

    def preview(self, actor: Actor, filters: OperationFilters) -> tuple[list[Any], dict[str, Any]]:
        """The targets the filters pick now, and their summary (nothing is written)."""
        _national(actor)
        snapshots = self._app.operations.select(filters)
        op = Operation(0, "(preview)", 0, actor.principal.name, filters.as_json(), snapshots)
        summary = self._app.operations.summary(op)
        actor.audit(
            self._app.audit,
            "operation.preview",
            None,
            {"filters": _audit_filters(filters), "targets": [s["id"] for s in snapshots]},
        )
        return snapshots, summary

    def create(self, actor: Actor, name: str, filters: OperationFilters) -> Operation:
        _national(actor)
        op = self._app.operations.create(name, filters, actor=actor.principal.name)
        actor.audit(
            self._app.audit,
            "operation.create",
            f"operation:{op.id}",
            {
                "name": op.name,
                "filters": _audit_filters(filters),
                "targets": [s["id"] for s in op.targets],
            },
        )
        return op

    def dispatch(self, actor: Actor, op_id: int) -> list[dict[str, Any]]:
        """Write the packages under HOME/operations/<id>/ (once: the output is deterministic, so a
        second dispatch keeps the first one's files) and return them."""
        _national(actor)
        self._get(actor, op_id)
        with self._dispatch_lock:
            again = self.dispatched(op_id)
            if not again:
                folder = self.folder(op_id)
                if folder.exists() and not any(folder.iterdir()):
                    folder.rmdir()
                self._app.operations.dispatch(op_id, folder)
        packages = self._packages(actor, op_id)
        actor.audit(
            self._app.audit,
            "operation.dispatch",
            f"operation:{op_id}",
            {"again": again, "units": [p["unit"] for p in packages]},
        )
        return packages

    def package(self, actor: Actor, op_id: int, folder: str) -> tuple[str, bytes]:
        """A unit's package as a zip file (name, bytes): its folder of the dispatch."""
        self._get(actor, op_id)
        chosen = next((p for p in self._packages(actor, op_id) if p["folder"] == folder), None)
        if chosen is None:
            self._deny(actor, op_id, "package-outside-scope-or-missing")
            raise OperationNotFoundError(op_id)
        source = self.folder(op_id) / "units" / folder
        data = _zip(source, f"operation-{op_id}-{folder}")
        actor.audit(
            self._app.audit,
            "operation.download",
            f"operation:{op_id}",
            {"unit": chosen["unit"], "file": f"units/{folder}", "bytes": len(data)},
        )
        return f"operation-{op_id}-{folder}.zip", data

    def national_summary(self, actor: Actor, op_id: int, fmt: str) -> bytes:
        _national(actor)
        self._get(actor, op_id)
        name = f"national-summary.{fmt}"
        path = self.folder(op_id) / name
        if not self.dispatched(op_id) or not path.is_file():
            raise HTTPException(409, "the operation was not dispatched yet")
        data = path.read_bytes()
        actor.audit(
            self._app.audit,
            "operation.download",
            f"operation:{op_id}",
            {"unit": None, "file": name, "bytes": len(data)},
        )
        return data

    def _packages(self, actor: Actor, op_id: int) -> list[dict[str, Any]]:
        manifest = self.folder(op_id) / "manifest.json"
        if not manifest.is_file():
            return []
        units = json.loads(manifest.read_text("utf-8"))["units"]
        scope = actor.principal.scope
        out = []
        for u in units:
            unit = None if u["unit"] == UNASSIGNED else str(u["unit"])
            if scope.allows(unit):
                folder = str(u["folder"]).removeprefix("units/")
                out.append({"unit": u["unit"], "folder": folder, "targets": int(u["targets"])})
        return out

    def _get(self, actor: Actor, op_id: int) -> Operation:
        """The operation with the targets in the reader's scope (the filter is in the query)."""
        scope = actor.principal.scope
        o = operations.c
        with self._app.engine.connect() as conn:
            row = conn.execute(select(operations).where(o.id == op_id)).first()
            snaps: list[dict[str, Any]] = []
            if row is not None and (scope.units is None or scope.units):
                for unit, text in self._target_rows(conn, op_id, scope.units):
                    snap = json.loads(text)
                    _check(scope, unit)
                    _check(scope, snap["unit"])
                    snaps.append(snap)
        if row is None or not snaps:
            self._deny(actor, op_id, "missing" if row is None else "outside-scope")
            raise OperationNotFoundError(op_id)
        snaps.sort(key=lambda s: (s["unit"] is None, s["unit"] or "", -s["score"], s["id"]))
        return Operation(
            int(row.id),
            row.name,
            int(row.created_ms),
            row.created_by,
            json.loads(row.filters),
            snaps,
        )

    def _target_rows(
        self, conn: Connection, op_id: int, units: frozenset[str] | None
    ) -> list[tuple[str | None, str]]:
        """(unit, snapshot JSON) of the operation's targets held by `units` (None: all)."""
        t = operation_targets.c
        query = select(t.unit, t.snapshot).where(t.operation_id == op_id)
        if units is not None:
            query = query.where(t.unit.in_(sorted(units)))
        return [(u, str(snap)) for u, snap in conn.execute(query)]

    def _deny(self, actor: Actor, op_id: int, reason: str) -> None:
        actor.audit(self._app.audit, "operation.denied", f"operation:{op_id}", {"reason": reason})


def _check(scope: Scope, unit: str | None) -> None:
    if not scope.allows(unit):
        raise ScopeViolationError(
            f"the operations query returned a target of unit {unit!r} outside the scope "
            f"({scope.describe()}); nothing was shown"
        )


def _national(actor: Actor) -> None:
    # The routes ask for plan-operations; this is the second lock on the door.
    if not actor.principal.scope.is_everything:
        raise ScopeViolationError("planning and dispatch are national: the scope is not")


def _audit_filters(filters: OperationFilters) -> dict[str, Any]:
    # Audit details hold no floating-point numbers: the web app only takes integer scores.
    score = filters.min_score
    return {
        "min_score": None if score is None else int(score),
        "seen_since": iso_ms(filters.since_ms),
        "category": filters.category,
        "jurisdictions": sorted(filters.jurisdictions),
        "include_closed": filters.include_closed,
    }


def _zip(folder: Path, prefix: str) -> bytes:
    """The folder's files in a zip with fixed times: the same package gives the same bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(f"{prefix}/{path.relative_to(folder).as_posix()}")
            info.date_time = (1980, 1, 1, 0, 0, 0)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, path.read_bytes())
    return buf.getvalue()


def scoped_operations(request: Request) -> ScopedOperations:
    return cast(ScopedOperations, request.app.state.operations)


def install(web: FastAPI, app: App) -> None:
    """Add the operations' pages and API to `web` (called by `create_app`)."""
    web.state.operations = ScopedOperations(app)
    web.include_router(pages_router)
    web.include_router(api_router)


# --- filters ------------------------------------------------------------------------------------


def parse_since(text: str | None) -> int | None:
    """A date (YYYY-MM-DD) or ISO 8601 time, UTC when no offset is given, to UTC milliseconds."""
    if text is None or not text.strip():
        return None
    try:
        dt = datetime.fromisoformat(text.strip())
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(dt.timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        raise InputError(f"seen since: {text!r} is not a date or an ISO 8601 time") from None


def parse_codes(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Jurisdiction codes from a comma- or space-separated text, or a list of codes."""
    if text is None:
        return ()
    parts = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    codes = sorted({p.strip() for p in parts if p.strip()})
    if len(codes) > MAX_JURISDICTIONS:
        raise InputError(f"at most {MAX_JURISDICTIONS} jurisdictions")
    for code in codes:
        if not _code_ok(code):
            raise InputError(f"jurisdiction {code!r}: letters, digits, '.', '_' and '-' only")
    return tuple(codes)


def _code_ok(code: str) -> bool:
    return 0 < len(code) <= 100 and all(c.isascii() and (c.isalnum() or c in "._-") for c in code)


def make_filters(
    min_score: int | None,
    since: str | None,
    category: str | None,
    jurisdictions: tuple[str, ...],
    include_closed: bool,
) -> OperationFilters:
    return OperationFilters(
        min_score=min_score,
        since_ms=parse_since(since),
        category=(category or "").strip() or None,
        jurisdictions=jurisdictions,
        include_closed=include_closed,
    )


# --- pages --------------------------------------------------------------------------------------

_Score = Annotated[int | None, Query(ge=0, le=1_000_000_000)]
_Text = Annotated[str | None, Query(max_length=100)]


@pages_router.get("/operations")
def operations_page(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.READ_OPERATIONS))],
) -> Response:
    rows = scoped_operations(request).listing(identity.actor)
    return render(
        request,
        "operations.html",
        {"rows": rows, "scope": identity.principal.scope.describe(), "iso": iso_ms},
        identity=identity,
    )


@pages_router.get("/operations/new")
def planner_page(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.PLAN_OPERATIONS))],
    min_score: _Score = None,
    since: _Text = None,
    category: _Text = None,
    jurisdictions: Annotated[str | None, Query(max_length=2000)] = None,
    include_closed: bool = False,
    preview: bool = False,
) -> Response:
    form = {
        "min_score": "" if min_score is None else min_score,
        "since": since or "",
        "category": category or "",
        "jurisdictions": jurisdictions or "",
        "include_closed": include_closed,
    }
    return _planner(request, identity, form, preview=preview)


def _planner(
    request: Request,
    identity: Identity,
    form: dict[str, Any],
    *,
    preview: bool,
    error: str | None = None,
    status: int = 200,
) -> Response:
    ops = scoped_operations(request)
    snapshots: list[Any] | None = None
    summary: dict[str, Any] | None = None
    if preview and error is None:
        try:
            filters = make_filters(
                form["min_score"] if form["min_score"] != "" else None,
                form["since"],
                form["category"],
                parse_codes(form["jurisdictions"]),
                bool(form["include_closed"]),
            )
            snapshots, summary = ops.preview(identity.actor, filters)
        except InputError as exc:
            error, status = str(exc), 400
    known = ops.known_jurisdictions()
    return render(
        request,
        "operation_new.html",
        {
            "form": form,
            "snapshots": snapshots,
            "summary": summary,
            "error": error,
            "known": known,
        },
        identity=identity,
        status=status,
    )


@pages_router.post("/operations")
def create_page(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.PLAN_OPERATIONS))],
    name: Annotated[str, Form(max_length=200)] = "",
    min_score: Annotated[str, Form(max_length=20)] = "",
    since: Annotated[str, Form(max_length=100)] = "",
    category: Annotated[str, Form(max_length=100)] = "",
    jurisdictions: Annotated[str, Form(max_length=2000)] = "",
    include_closed: Annotated[bool, Form()] = False,
) -> Response:
    form = {
        "min_score": min_score,
        "since": since,
        "category": category,
        "jurisdictions": jurisdictions,
        "include_closed": include_closed,
        "name": name,
    }
    try:
        score = int(min_score) if min_score.strip() else None
        if score is not None and score < 0:
            raise InputError("the minimum score is a whole number, 0 or more")
        filters = make_filters(score, since, category, parse_codes(jurisdictions), include_closed)
        op = scoped_operations(request).create(identity.actor, name.strip(), filters)
    except ValueError:
        return _planner(
            request,
            identity,
            form,
            preview=False,
            error="the minimum score is a whole number",
            status=400,
        )
    except InputError as exc:
        return _planner(request, identity, form, preview=False, error=str(exc), status=400)
    return RedirectResponse(f"/operations/{op.id}", status_code=303)


@pages_router.get("/operations/{operation_id}")
def operation_page(
    request: Request,
    operation_id: _OpId,
    identity: Annotated[Identity, Depends(requires(Permission.READ_OPERATIONS))],
) -> Response:
    view = scoped_operations(request).view(identity.actor, operation_id)
    return render(
        request,
        "operation.html",
        {"view": view, "may_plan": identity.principal.may(Permission.PLAN_OPERATIONS)},
        identity=identity,
    )


@pages_router.post("/operations/{operation_id}/dispatch")
def dispatch_page(
    request: Request,
    operation_id: _OpId,
    identity: Annotated[Identity, Depends(requires(Permission.PLAN_OPERATIONS))],
) -> Response:
    scoped_operations(request).dispatch(identity.actor, operation_id)
    return RedirectResponse(f"/operations/{operation_id}#packages", status_code=303)


# --- JSON API -----------------------------------------------------------------------------------


class Problem(BaseModel):
    detail: str


class OperationItem(BaseModel):
    id: int
    name: str
    created: str | None = Field(description="UTC, ISO 8601 to the second.")
    created_by: str
    targets: int = Field(description="Targets within the caller's scope.")
    dispatched: bool


class FilterBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    min_score: int | None = Field(default=None, ge=0, le=1_000_000_000)
    since: str | None = Field(
        default=None, max_length=40, description="Date or ISO 8601 time (UTC without offset)."
    )
    category: str | None = Field(default=None, max_length=100)
    jurisdictions: list[Annotated[str, Field(pattern=_CODE)]] = Field(
        default_factory=list, max_length=MAX_JURISDICTIONS
    )
    include_closed: bool = False

    def filters(self) -> OperationFilters:
        return make_filters(
            self.min_score,
            self.since,
            self.category,
            parse_codes(self.jurisdictions),
            self.include_closed,
        )


class NewOperation(FilterBody):
    name: str = Field(min_length=1, max_length=200)


class PackageItem(BaseModel):
    unit: str = Field(description="The unit code, or `_unassigned`.")
    folder: str
    targets: int
    download: str = Field(description="Path of the zip file.")


class OperationDetail(BaseModel):
    operation: dict[str, Any] = Field(description="id, name, created, created_by, filters.")
    headline: str = Field(description="Of the targets within the caller's scope.")
    national: bool = Field(description="True when the caller sees the whole operation.")
    by_jurisdiction: list[dict[str, Any]]
    by_unit: list[dict[str, Any]]
    targets: list[dict[str, Any]] = Field(description="Frozen snapshots (docs/operations.md).")
    dispatched: bool
    packages: list[PackageItem]


class PreviewTarget(BaseModel):
    id: int
    label: str
    score: int
    jurisdiction: str | None
    unit: str | None


class Preview(BaseModel):
    headline: str
    targets: list[PreviewTarget]
    by_jurisdiction: list[dict[str, Any]]
    by_unit: list[dict[str, Any]]
    without_jurisdiction: int


def _packages(op_id: int, packages: list[dict[str, Any]]) -> list[PackageItem]:
    return [
        PackageItem(
            unit=p["unit"],
            folder=p["folder"],
            targets=p["targets"],
            download=f"/api/v1/operations/{op_id}/packages/{p['folder']}",
        )
        for p in packages
    ]


def _detail(view: OperationView) -> OperationDetail:
    op, s = view.operation, view.summary
    return OperationDetail(
        operation=op.header(),
        headline=s["headline"],
        national=view.national,
        by_jurisdiction=s["by_jurisdiction"],
        by_unit=s["by_unit"],
        targets=op.targets,
        dispatched=view.dispatched,
        packages=_packages(op.id, view.packages),
    )


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    404: {"model": Problem, "description": "No such operation within the caller's scope."},
}


@api_router.get("/operations", responses=_ERRORS)
def list_operations(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.READ_OPERATIONS))],
) -> list[OperationItem]:
    """Operations holding targets in the caller's scope, newest first (audited)."""
    return [
        OperationItem(
            id=r.id,
            name=r.name,
            created=iso_ms(r.created_ms),
            created_by=r.created_by,
            targets=r.targets,
            dispatched=r.dispatched,
        )
        for r in scoped_operations(request).listing(identity.actor)
    ]


@api_router.get("/operations/preview", responses={**_ERRORS, 400: {"model": Problem}})
def preview_operation(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.PLAN_OPERATIONS))],
    min_score: _Score = None,
    since: Annotated[str | None, Query(max_length=40)] = None,
    category: _Text = None,
    jurisdiction: Annotated[
        list[Annotated[str, Query(pattern=_CODE)]] | None,
        Query(max_length=MAX_JURISDICTIONS),
    ] = None,
    include_closed: bool = False,
) -> Preview:
    """The leads the filters would freeze now, counted per jurisdiction and unit (audited)."""
    filters = make_filters(
        min_score, since, category, parse_codes(jurisdiction or []), include_closed
    )
    snapshots, summary = scoped_operations(request).preview(identity.actor, filters)
    return Preview(
        headline=summary["headline"],
        targets=[
            PreviewTarget(
                id=s["id"],
                label=s["label"],
                score=int(s["score"]),
                jurisdiction=s["jurisdiction"],
                unit=s["unit"],
            )
            for s in snapshots
        ],
        by_jurisdiction=summary["by_jurisdiction"],
        by_unit=summary["by_unit"],
        without_jurisdiction=summary["without_jurisdiction"],
    )


@api_router.post("/operations", status_code=201, responses={**_ERRORS, 400: {"model": Problem}})
def create_operation(
    request: Request,
    body: NewOperation,
    identity: Annotated[Identity, Depends(requires(Permission.PLAN_OPERATIONS))],
) -> OperationDetail:
    """Freeze the leads the filters pick into a new operation; 400 when none matches or the name
    is taken."""
    ops = scoped_operations(request)
    op = ops.create(identity.actor, body.name.strip(), body.filters())
    return _detail(ops.view(identity.actor, op.id))


@api_router.get("/operations/{operation_id}", responses=_NOT_FOUND)
def get_operation(
    request: Request,
    operation_id: _OpId,
    identity: Annotated[Identity, Depends(requires(Permission.READ_OPERATIONS))],
) -> OperationDetail:
    """The operation as far as the caller's scope goes; 404 when none of it is (audited)."""
    return _detail(scoped_operations(request).view(identity.actor, operation_id))


@api_router.post("/operations/{operation_id}/dispatch", responses=_NOT_FOUND)
def dispatch_operation(
    request: Request,
    operation_id: _OpId,
    identity: Annotated[Identity, Depends(requires(Permission.PLAN_OPERATIONS))],
) -> list[PackageItem]:
    """Write the per-unit packages under HOME/operations/ID/ (once) and list them."""
    packages = scoped_operations(request).dispatch(identity.actor, operation_id)
    return _packages(operation_id, packages)


@api_router.get(
    "/operations/{operation_id}/packages/{folder}",
    responses={
        **_NOT_FOUND,
        200: {"content": {"application/zip": {}}, "description": "The unit's package."},
    },
    response_class=Response,
)
def download_package(
    request: Request,
    operation_id: _OpId,
    folder: _Folder,
    identity: Annotated[Identity, Depends(requires(Permission.READ_OPERATIONS))],
) -> Response:
    """One unit's package (zip); only the caller's own unit's for an investigator (audited)."""
    name, data = scoped_operations(request).package(identity.actor, operation_id, folder)
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@api_router.get(
    "/operations/{operation_id}/national-summary/{fmt}",
    responses={
        **_NOT_FOUND,
        409: {"model": Problem, "description": "Not dispatched yet."},
        200: {
            "content": {"application/json": {}, "text/csv": {}},
            "description": "The national summary.",
        },
    },
    response_class=Response,
)
def download_summary(
    request: Request,
    operation_id: _OpId,
    fmt: Annotated[str, PathParam(pattern="^(json|csv)$")],
    identity: Annotated[Identity, Depends(requires(Permission.PLAN_OPERATIONS))],
) -> Response:
    """The national summary of a dispatched operation (coordinators; audited)."""
    data = scoped_operations(request).national_summary(identity.actor, operation_id, fmt)
    media = "application/json" if fmt == "json" else "text/csv; charset=utf-8"
    return Response(
        data,
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="operation-{operation_id}-'
            f'national-summary.{fmt}"'
        },
    )


__all__ = ["OperationError", "ScopedOperations", "api_router", "install", "pages_router"]
