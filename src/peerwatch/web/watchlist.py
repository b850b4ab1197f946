"""The watchlist in the web app: lists, versions, hash counts per kind and provenance, and the
admins' import of a list file with its progress (docs/webapp.md, "Watchlist").

Hashes and metadata only, and here not even hashes: the pages and the API show each list's
versions, counts and sources (file, SHA-256, size, format), never an item, a name or a hash.

An import runs in a background thread (one at a time: each is one database transaction that
replaces the list's active version atomically, docs/watchlist.md). The uploaded file is kept under
HOME/watchlist/uploads/<import id>/ because each version's provenance names its source file. The
progress page refreshes itself with `<meta http-equiv="refresh">` (no script); the API has the same
progress at GET /api/v1/watchlist/imports/{id}. Import jobs live in the server's memory: after a
restart an unfinished import is gone (nothing of it was written) and its progress unknown.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, cast

from fastapi import APIRouter, Depends, FastAPI, File, Form, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from peerwatch.accounts.role import Permission
from peerwatch.domain.hashes import HashKind
from peerwatch.errors import InputError
from peerwatch.leads.workflow import iso_ms
from peerwatch.storage.schema import list_versions, watch_lists
from peerwatch.watchlist.formats import FORMATS
from peerwatch.watchlist.store import DERIVED_LIST
from peerwatch.web.auth import Identity, requires
from peerwatch.web.pages import render
from peerwatch.web.scoped_targets import Actor

if TYPE_CHECKING:
    from peerwatch.app import App

pages_router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)
api_router = APIRouter(prefix="/api/v1", tags=["watchlist"])

MAX_UPLOAD = 2 * 1024**3  # bytes of one uploaded list file
MAX_SKIPPED_SHOWN = 200  # skipped records listed per import (all are counted)
_LIST_NAME = r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,99}$"
_JOB_ID = r"^[0-9a-f]{32}$"
_JobId = Annotated[str, PathParam(pattern=_JOB_ID, description="Import id.")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "No valid session or token."},
    403: {"description": "The role lacks the permission, or the CSRF token is missing."},
}


class ImportNotFoundError(HTTPException):
    def __init__(self) -> None:
        super().__init__(404, "no such import")


@dataclass
class ImportJob:
    id: str
    list_name: str
    filename: str  # as uploaded (sanitised)
    size: int
    fmt: str | None  # None: detected from the content
    kind: str | None
    category: str | None
    skip_invalid: bool
    actor: str
    started_ms: int
    state: str = "queued"  # queued, running, done, failed
    items: int = 0  # records read so far
    finished_ms: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None  # message, source, location, field
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "list": self.list_name,
            "file": self.filename,
            "size": self.size,
            "format": self.fmt or "auto",
            "kind": self.kind,
            "category": self.category,
            "skip_invalid": self.skip_invalid,
            "by": self.actor,
            "state": self.state,
            "items": self.items,
            "started": iso_ms(self.started_ms),
            "finished": iso_ms(self.finished_ms),
            "result": self.result,
            "error": self.error,
            "skipped": self.skipped,
        }


def _error(exc: InputError, filename: str) -> dict[str, Any]:
    source = Path(exc.source).name if exc.source else filename
    message = str(exc)
    if exc.source:
        message = message.replace(exc.source, source, 1)
    return {"message": message, "source": source, "location": exc.location, "field": exc.field}


class WatchlistImports:
    """The list store as the web app reads it, and the admins' imports."""

    def __init__(self, app: App, clock_ms: Any = None) -> None:
        self._app = app
        self._jobs: dict[str, ImportJob] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()  # guards _jobs and _threads
        self._one_at_a_time = threading.Lock()  # imports run one after the other
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)

    @property
    def uploads(self) -> Path:
        return self._app.settings.home / "watchlist" / "uploads"

    def overview(self, actor: Actor) -> dict[str, Any]:
        """Every list with all its versions (newest first), and active hashes per kind."""
        v, w = list_versions.c, watch_lists.c
        query = (
            select(
                w.name,
                v.version,
                v.imported_ms,
                v.item_count,
                v.hash_count,
                v.skipped_count,
                v.sources,
                v.default_category,
                v.active,
            )
            .join_from(watch_lists, list_versions, w.id == v.list_id)
            .order_by(w.name, v.version.desc())
        )
        lists: dict[str, dict[str, Any]] = {}
        with self._app.engine.connect() as conn:
            for r in conn.execute(query):
                entry = lists.setdefault(r.name, {"name": r.name, "active": None, "versions": []})
                if r.active:
                    entry["active"] = int(r.version)
                entry["versions"].append(
                    {
                        "version": int(r.version),
                        "imported": iso_ms(int(r.imported_ms)),
                        "items": int(r.item_count),
                        "hashes": int(r.hash_count),
                        "skipped": int(r.skipped_count),
                        "active": bool(r.active),
                        "category": r.default_category,
                        "sources": [_source(s) for s in json.loads(r.sources)],
                    }
                )
        kinds = dict(sorted(self._app.watchlist.kind_counts().items()))
        actor.audit(self._app.audit, "watchlist.view", None, {"lists": sorted(lists)})
        return {"lists": list(lists.values()), "kinds": kinds}

    def start(
        self,
        actor: Actor,
        upload: BinaryIO,
        filename: str,
        *,
        list_name: str,
        fmt: str | None,
        kind: str | None,
        category: str | None,
        skip_invalid: bool,
    ) -> ImportJob:
        list_name = list_name.strip()
        if not re.fullmatch(_LIST_NAME, list_name):
            raise InputError(
                "a list name is 1 to 100 letters, digits, spaces, '.', '_' or '-', starting "
                "with a letter or digit",
                field="list",
            )
        if list_name == DERIVED_LIST:
            raise InputError(f"the list {DERIVED_LIST!r} is written by discovery only")
        if fmt is not None and fmt not in FORMATS:
            raise InputError(f"unknown format {fmt!r} (known: auto, {', '.join(FORMATS)})")
        parsed_kind = None
        if kind is not None:
            try:
                parsed_kind = HashKind(kind)
            except ValueError:
                raise InputError(f"unknown hash kind {kind!r}") from None
        job_id = uuid.uuid4().hex
        safe = _safe_name(filename)
        folder = self.uploads / job_id
        folder.mkdir(parents=True)
        path = folder / safe
        size = _save(upload, path)
        job = ImportJob(
            job_id,
            list_name,
            safe,
            size,
            fmt,
            kind,
            category,
            skip_invalid,
            actor.principal.name,
            self._clock_ms(),
        )
        actor.audit(
            self._app.audit,
            "watchlist.import",
            f"watchlist-import:{job_id}",
            {"list": list_name, "file": safe, "size": size, "format": fmt or "auto"},
        )
        thread = threading.Thread(
            target=self._run,
            args=(job, path, parsed_kind, actor),
            name=f"watchlist-import-{job_id[:8]}",
            daemon=True,
        )
        with self._lock:
            self._jobs[job_id] = job
            self._threads.append(thread)
        thread.start()
        return job

    def _run(self, job: ImportJob, path: Path, kind: HashKind | None, actor: Actor) -> None:
        with self._one_at_a_time:
            job.state = "running"

            def progress(n: int) -> None:
                job.items = n

            try:
                result = self._app.watchlist.import_files(
                    [path],
                    list_name=job.list_name,
                    fmt=job.fmt,
                    kind=kind,
                    category=job.category,
                    skip_invalid=job.skip_invalid,
                    progress=progress,
                )
            except InputError as exc:
                job.error = _error(exc, job.filename)
                job.state = "failed"
            except Exception as exc:  # a failed import is reported, not lost
                job.error = {
                    "message": f"internal error: {type(exc).__name__}",
                    "source": job.filename,
                    "location": None,
                    "field": None,
                }
                job.state = "failed"
            else:
                job.items = result.items
                job.skipped = [_error(e, job.filename) for e in result.skipped][:MAX_SKIPPED_SHOWN]
                job.result = {
                    "version": result.version,
                    "items": result.items,
                    "hashes": result.hashes,
                    "unchanged": result.unchanged,
                    "skipped": len(result.skipped),
                    "replaced_version": result.replaced_version,
                }
                job.state = "done"
            if job.state == "failed" or (job.result is not None and job.result["unchanged"]):
                # No version names this upload as its source: it is not kept.
                path.unlink(missing_ok=True)
                path.parent.rmdir()
            job.finished_ms = self._clock_ms()
            detail: dict[str, Any] = {"list": job.list_name, "state": job.state}
            if job.result is not None:
                detail.update(job.result)
            if job.error is not None:
                detail["error"] = job.error["message"][:500]
            actor.audit(
                self._app.audit, "watchlist.import-finished", f"watchlist-import:{job.id}", detail
            )

    def job(self, actor: Actor, job_id: str) -> ImportJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise ImportNotFoundError()
        actor.audit(
            self._app.audit,
            "watchlist.import-view",
            f"watchlist-import:{job_id}",
            {"state": job.state, "items": job.items},
        )
        return job

    def wait_all(self, timeout_s: float = 60.0) -> None:
        """Wait for every import started (tests, shutdown)."""
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(timeout_s)


def _source(s: dict[str, Any]) -> dict[str, Any]:
    """A version's source as shown: the file's name (not the server's path), digest, size."""
    path = str(s.get("path", ""))
    return {
        "file": Path(path).name or path,
        "sha256": s.get("sha256"),
        "size": s.get("size"),
        "format": s.get("format"),
    }


def _safe_name(filename: str) -> str:
    base = Path(filename.replace("\\", "/")).name
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")[:100]
    return base or "upload"


def _save(upload: BinaryIO, path: Path) -> int:
    size = 0
    with path.open("xb") as out:
        while chunk := upload.read(1 << 20):
            size += len(chunk)
            if size > MAX_UPLOAD:
                out.close()
                path.unlink()
                path.parent.rmdir()
                raise InputError(f"the file is larger than {MAX_UPLOAD} bytes")
            out.write(chunk)
    return size


def watchlist_imports(request: Request) -> WatchlistImports:
    return cast(WatchlistImports, request.app.state.watchlist_imports)


def install(web: FastAPI, app: App) -> None:
    """Add the watchlist's pages and API to `web` (called by `create_app`)."""
    web.state.watchlist_imports = WatchlistImports(app)
    web.include_router(pages_router)
    web.include_router(api_router)


def _option(value: str | None) -> str | None:
    value = (value or "").strip()
    return None if value in ("", "auto") else value


# --- pages --------------------------------------------------------------------------------------


@pages_router.get("/watchlist")
def watchlist_page(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.READ_WATCHLIST))],
) -> Response:
    return _page(request, identity, error=None)


def _page(
    request: Request, identity: Identity, *, error: str | None, status: int = 200
) -> Response:
    data = watchlist_imports(request).overview(identity.actor)
    return render(
        request,
        "watchlist.html",
        {
            **data,
            "formats": FORMATS,
            "hash_kinds": [k.value for k in HashKind],
            "error": error,
            "may_import": identity.principal.may(Permission.MANAGE_WATCHLIST),
        },
        identity=identity,
        status=status,
    )


@pages_router.post("/watchlist/imports")
def import_page(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.MANAGE_WATCHLIST))],
    file: Annotated[UploadFile, File()],
    list_name: Annotated[str, Form(alias="list", max_length=200)],
    fmt: Annotated[str, Form(alias="format", max_length=20)] = "auto",
    kind: Annotated[str, Form(max_length=20)] = "",
    category: Annotated[str, Form(max_length=100)] = "",
    skip_invalid: Annotated[bool, Form()] = False,
) -> Response:
    try:
        job = watchlist_imports(request).start(
            identity.actor,
            file.file,
            file.filename or "upload",
            list_name=list_name,
            fmt=_option(fmt),
            kind=_option(kind),
            category=category.strip() or None,
            skip_invalid=skip_invalid,
        )
    except InputError as exc:
        return _page(request, identity, error=str(exc), status=400)
    return RedirectResponse(f"/watchlist/imports/{job.id}", status_code=303)


@pages_router.get("/watchlist/imports/{import_id}")
def import_progress_page(
    request: Request,
    import_id: _JobId,
    identity: Annotated[Identity, Depends(requires(Permission.MANAGE_WATCHLIST))],
) -> Response:
    job = watchlist_imports(request).job(identity.actor, import_id)
    response = render(request, "watchlist_import.html", {"job": job.as_json()}, identity=identity)
    if job.state in ("queued", "running"):
        # The browser reloads the page by itself while the import runs: no script needed.
        response.headers["Refresh"] = "2"
    return response


# --- JSON API -----------------------------------------------------------------------------------


class Problem(BaseModel):
    detail: str


class SourceItem(BaseModel):
    file: str
    sha256: str | None
    size: int | None
    format: str | None


class VersionItem(BaseModel):
    version: int
    imported: str | None
    items: int
    hashes: int
    skipped: int
    active: bool
    category: str | None
    sources: list[SourceItem]


class ListItem(BaseModel):
    name: str
    active: int | None = Field(description="The active (matched) version.")
    versions: list[VersionItem] = Field(description="Newest first.")


class Watchlist(BaseModel):
    lists: list[ListItem]
    kinds: dict[str, int] = Field(description="Hashes of the active versions per stored kind.")


class ImportProblem(BaseModel):
    message: str
    source: str | None
    location: str | None
    field: str | None


class ImportResultItem(BaseModel):
    version: int
    items: int
    hashes: int
    unchanged: bool
    skipped: int
    replaced_version: int | None


class ImportItem(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    list_name: str = Field(alias="list", description="The list imported into.")
    file: str
    size: int
    format: str
    kind: str | None
    category: str | None
    skip_invalid: bool
    by: str
    state: str = Field(description="queued, running, done or failed.")
    items: int = Field(description="Records read so far.")
    started: str | None
    finished: str | None
    result: ImportResultItem | None
    error: ImportProblem | None = Field(description="What stopped the import: file, line, field.")
    skipped: list[ImportProblem]


@api_router.get("/watchlist", responses=_ERRORS)
def get_watchlist(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.READ_WATCHLIST))],
) -> Watchlist:
    """Lists, their versions and provenance, and hash counts per kind; never an item (audited)."""
    return Watchlist.model_validate(watchlist_imports(request).overview(identity.actor))


@api_router.post(
    "/watchlist/imports", status_code=202, responses={**_ERRORS, 400: {"model": Problem}}
)
def start_import(
    request: Request,
    identity: Annotated[Identity, Depends(requires(Permission.MANAGE_WATCHLIST))],
    file: Annotated[UploadFile, File(description="The list file.")],
    list_name: Annotated[str, Form(alias="list", pattern=_LIST_NAME)],
    fmt: Annotated[
        str, Form(alias="format", description=f"auto or one of {', '.join(FORMATS)}.")
    ] = "auto",
    kind: Annotated[str | None, Form(max_length=20)] = None,
    category: Annotated[str | None, Form(max_length=100)] = None,
    skip_invalid: Annotated[bool, Form()] = False,
) -> ImportItem:
    """Start importing a list file as a new version of `list`; poll the answer's id."""
    job = watchlist_imports(request).start(
        identity.actor,
        file.file,
        file.filename or "upload",
        list_name=list_name,
        fmt=_option(fmt),
        kind=_option(kind),
        category=(category or "").strip() or None,
        skip_invalid=skip_invalid,
    )
    return ImportItem.model_validate(job.as_json())


@api_router.get(
    "/watchlist/imports/{import_id}",
    responses={**_ERRORS, 404: {"model": Problem}},
)
def get_import(
    request: Request,
    import_id: _JobId,
    identity: Annotated[Identity, Depends(requires(Permission.MANAGE_WATCHLIST))],
) -> ImportItem:
    """An import's progress, result, or the error that stopped it (file, line, field)."""
    job = watchlist_imports(request).job(identity.actor, import_id)
    return ImportItem.model_validate(job.as_json())
