"""The case export button and the case packages' downloads (docs/webapp.md, docs/case-package.md).

`POST /leads/{id}/export` (and `POST /api/v1/targets/{id}/export`) runs the same function as
`peerwatch case export` into HOME/cases/<label>-<UTC time>/. Its audit entry (`case.export`, with
`CaseReport.audit_detail()`: the manifest's SHA-256 pins the package) is written by `on_export`,
after the package is complete and before it is renamed into place: an export that cannot be
audited does not happen.

A case folder belongs to its target, named by the folder's own manifest.json (which only this
app writes). Every download fetches that target through the same scope check as a view: another
unit's package answers 404 "no such case", exactly like a missing one, and every download and
refusal is one audit entry (`case.download`, `case.denied`, with `target.denied` for a package
outside the scope).
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from peerwatch.accounts.role import Permission
from peerwatch.cases.export import CaseReport, CaseSources, export_case, manifest_of
from peerwatch.errors import PeerwatchError
from peerwatch.leads.targets import target_label
from peerwatch.web.auth import Identity, requires
from peerwatch.web.context import web_context
from peerwatch.web.scoped_targets import Actor, TargetNotFoundError

if TYPE_CHECKING:
    from peerwatch.app import App

pages_router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)
api_router = APIRouter(prefix="/api/v1", tags=["cases"])

_NAME = r"^T-[0-9]{6,19}-[0-9]{8}T[0-9]{9}Z$"
_FILE = r"^(case\.pdf|case\.json|T-[0-9]{6,19}-[0-9]{8}T[0-9]{9}Z\.zip)$"
_Id = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="Target id.")]
_Name = Annotated[str, PathParam(pattern=_NAME, description="A case package's folder name.")]
_File = Annotated[
    str, PathParam(pattern=_FILE, description="case.pdf, case.json, or NAME.zip (all of it).")
]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid session or token."},
    403: {"description": "The role lacks the permission, or the CSRF token is missing."},
    404: {"description": "No such target or case, or outside the caller's scope."},
}
_MEDIA = {"case.pdf": "application/pdf", "case.json": "application/json"}


class CaseNotFoundError(HTTPException):
    """No such case package, or not one the reader may see (not told apart): 404."""

    def __init__(self) -> None:
        super().__init__(404, "no such case")


@dataclass(frozen=True)
class CaseListing:
    name: str
    exported: str | None
    exported_by: str | None
    manifest_sha256: str


class ScopedCases:
    """Case packages under HOME/cases, written and read within the actor's scope."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._lock = threading.Lock()  # one export at a time picks its folder name

    @property
    def root(self) -> Path:
        return self._app.settings.home / "cases"

    def export(self, request: Request, actor: Actor, target_id: int) -> CaseReport:
        """Write the package (scope checked first: 404 outside it) and audit it."""
        summary = web_context(request).targets._find(actor, target_id)  # the one scope rule
        audit = self._app.audit
        app = self._app

        def on_export(report: CaseReport) -> None:
            actor.audit(audit, "case.export", f"target:{target_id}", report.audit_detail())

        with self._lock:
            stamp = datetime.now(UTC)
            name = f"{summary.label}-{stamp:%Y%m%dT%H%M%S}{stamp.microsecond // 1000:03d}Z"
            out = self.root / name
            while out.exists():  # two exports within one millisecond
                stamp = datetime.now(UTC)
                name = f"{summary.label}-{stamp:%Y%m%dT%H%M%S}{stamp.microsecond // 1000:03d}Z"
                out = self.root / name
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            return export_case(
                CaseSources(app.engine, app.targets, app.watchlist, app.leads),
                target_id,
                out,
                exported_by=actor.principal.name,
                on_export=on_export,
            )

    def listing(self, label: str) -> list[dict[str, Any]]:
        """The packages of one target (by its label), newest first. Called by the target page,
        after its scope check."""
        if not self.root.is_dir():
            return []
        out = []
        for folder in sorted(self.root.glob(f"{label}-*"), reverse=True):
            if not folder.is_dir() or not re.match(_NAME, folder.name):
                continue
            try:
                manifest = manifest_of(folder)
                digest = _sha256(folder / "manifest.json")
            except (PeerwatchError, OSError):
                continue
            out.append(
                {
                    "name": folder.name,
                    "exported": manifest.get("exported"),
                    "exported_by": manifest.get("exported_by"),
                    "manifest_sha256": digest,
                }
            )
        return out

    def open(self, request: Request, actor: Actor, name: str, file: str) -> Path:
        """The folder of package `name` when its target is in the actor's scope; audited."""
        folder = self.root / name
        target_id: int | None = None
        try:
            manifest = manifest_of(folder)
            target_id = int(manifest["target"]["id"])
        except (PeerwatchError, OSError, KeyError, TypeError, ValueError):
            target_id = None
        if target_id is None or not name.startswith(f"{target_label(target_id)}-"):
            actor.audit(
                self._app.audit, "case.denied", f"case:{name}", {"file": file, "reason": "missing"}
            )
            raise CaseNotFoundError()
        try:
            web_context(request).targets._find(actor, target_id)  # audits target.denied
        except TargetNotFoundError:
            actor.audit(
                self._app.audit,
                "case.denied",
                f"case:{name}",
                {"file": file, "reason": "outside-scope"},
            )
            raise CaseNotFoundError() from None
        actor.audit(
            self._app.audit,
            "case.download",
            f"target:{target_id}",
            {"case": name, "file": file},
        )
        return folder


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _zip(folder: Path) -> bytes:
    """The whole package, every file under a top folder of its name (built per download: a
    file added to the package folder would be reported by `case verify`)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, f"{folder.name}/{p.relative_to(folder).as_posix()}")
    return buf.getvalue()


def _cases(request: Request) -> ScopedCases:
    found: ScopedCases = request.app.state.cases
    return found


def _download(request: Request, identity: Identity, name: str, file: str) -> Response:
    if file.endswith(".zip") and file != f"{name}.zip":
        raise CaseNotFoundError()
    folder = _cases(request).open(request, identity.actor, name, file)
    headers = {"Content-Disposition": f'attachment; filename="{file}"'}
    if file.endswith(".zip"):
        return Response(_zip(folder), media_type="application/zip", headers=headers)
    return FileResponse(folder / file, media_type=_MEDIA[file], headers=headers)


class CaseFile(BaseModel):
    name: str
    url: str


class CaseExported(BaseModel):
    case: str = Field(description="The package's folder name under HOME/cases.")
    target_id: int
    label: str
    observations: int
    pdf_pages: int
    manifest_sha256: str = Field(description="SHA-256 of manifest.json: pins the whole package.")
    downloads: list[CaseFile]


def _downloads(name: str, prefix: str) -> list[CaseFile]:
    return [
        CaseFile(name=f, url=f"{prefix}/cases/{name}/{f}")
        for f in ("case.pdf", "case.json", f"{name}.zip")
    ]


@pages_router.post("/leads/{target_id}/export")
def export_page(
    request: Request,
    target_id: _Id,
    identity: Annotated[Identity, Depends(requires(Permission.EXPORT_CASES))],
) -> Response:
    _cases(request).export(request, identity.actor, target_id)
    return RedirectResponse(f"/leads/{target_id}#case", status_code=303)


@pages_router.get("/cases/{name}/{file}")
def download_page(
    request: Request,
    name: _Name,
    file: _File,
    identity: Annotated[Identity, Depends(requires(Permission.EXPORT_CASES))],
) -> Response:
    return _download(request, identity, name, file)


@api_router.post("/targets/{target_id}/export", status_code=201, responses=_ERRORS)
def export_api(
    request: Request,
    target_id: _Id,
    identity: Annotated[Identity, Depends(requires(Permission.EXPORT_CASES))],
) -> CaseExported:
    """Write the target's case package (as `peerwatch case export`); audited `case.export`."""
    report = _cases(request).export(request, identity.actor, target_id)
    name = report.out.name
    return CaseExported(
        case=name,
        target_id=report.target_id,
        label=report.label,
        observations=report.observations,
        pdf_pages=report.pdf_pages,
        manifest_sha256=report.manifest_sha256,
        downloads=_downloads(name, "/api/v1"),
    )


@api_router.get(
    "/cases/{name}/{file}",
    responses={
        **_ERRORS,
        200: {
            "content": {
                "application/pdf": {},
                "application/json": {},
                "application/zip": {},
            },
            "description": "The file.",
        },
    },
    response_class=Response,
)
def download_api(
    request: Request,
    name: _Name,
    file: _File,
    identity: Annotated[Identity, Depends(requires(Permission.EXPORT_CASES))],
) -> Response:
    """One file of a case package, or the whole package as a zip; 404 outside the scope."""
    return _download(request, identity, name, file)


def install(web: FastAPI, app: App) -> None:
    """Add the case export and downloads to `web` (called by `create_app`)."""
    web.state.cases = ScopedCases(app)
    web.include_router(pages_router)
    web.include_router(api_router)
