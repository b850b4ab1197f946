"""National operations: leads picked across jurisdictions, frozen, and dispatched one package per
unit with a national summary (docs/operations.md, "Operation packages").

Creating an operation writes a snapshot of every selected target (its summary, its lead state and
its requisition lines) in one transaction; nothing reads the live targets again, so later scores,
observations or retention purges do not change what the operation holds or what it dispatches.
`dispatch` writes the packages into a temporary folder beside the destination and renames it into
place, so a failure leaves nothing half-written; the same operation always gives the same bytes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from peerwatch.domain.hashes import Digest, HashKind, HashParseError, parse_hash
from peerwatch.errors import InputError
from peerwatch.leads.requisition import ObservationLike, RequisitionLine, requisition_lines
from peerwatch.leads.workflow import LeadState, LeadWorkflow, iso_ms, now_ms
from peerwatch.storage.database import writer
from peerwatch.storage.schema import operation_targets, operations
from peerwatch.watchlist.store import WatchlistStore

OPERATION_FORMAT = "peerwatch-operation"
PACKAGE_FORMAT = "peerwatch-operation-package"
UNIT_PACKAGE_FORMAT = "peerwatch-unit-package"
FORMAT_VERSION = 1
UNASSIGNED = "_unassigned"  # folder of the targets no unit covers


class TargetLike(Protocol):
    """What an operation needs of a target (peerwatch.leads.targets.TargetSummary)."""

    @property
    def id(self) -> int: ...
    @property
    def label(self) -> str: ...
    @property
    def jurisdiction(self) -> str | None: ...
    @property
    def jurisdiction_name(self) -> str | None: ...
    @property
    def unit(self) -> str | None: ...
    @property
    def score(self) -> float: ...
    @property
    def first_ms(self) -> int: ...
    @property
    def last_ms(self) -> int: ...
    @property
    def ips(self) -> Iterable[str]: ...
    @property
    def flags(self) -> Iterable[str]: ...
    @property
    def networks(self) -> Iterable[str]: ...
    @property
    def content_keys(self) -> Iterable[str]: ...


class TargetSource(Protocol):
    """The targets store (peerwatch.leads.targets.TargetStore), as operations and alerts use it."""

    def ranked(self) -> Sequence[TargetLike]: ...

    def observations(
        self, target_id: int, /, *, since_ms: int | None = None
    ) -> Sequence[ObservationLike]: ...


class OperationError(InputError):
    """An operation could not be created, found or dispatched (the message says why)."""


@dataclass(frozen=True)
class OperationFilters:
    min_score: float | None = None  # keep targets scoring at least this
    since_ms: int | None = None  # keep targets last seen at or after this UTC time
    category: str | None = None  # keep targets with content in this watchlist category
    jurisdictions: tuple[str, ...] = ()  # keep targets in these jurisdictions (codes); () = all
    include_closed: bool = False  # closed leads are left out unless asked for

    def as_json(self) -> dict[str, object]:
        return {
            "min_score": self.min_score,
            "seen_since": iso_ms(self.since_ms),
            "category": self.category,
            "jurisdictions": sorted(self.jurisdictions),
            "include_closed": self.include_closed,
        }


@dataclass(frozen=True)
class OperationConfig:
    # Words for the national summary's headline, e.g. "80 targets in 53 départements".
    jurisdiction_singular: str = "département"
    jurisdiction_plural: str = "départements"


@dataclass(frozen=True)
class Operation:
    id: int
    name: str
    created_ms: int
    created_by: str
    filters: dict[str, Any]
    targets: list[dict[str, Any]] = field(default_factory=list)  # frozen snapshots, in order

    def header(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "created": iso_ms(self.created_ms),
            "created_by": self.created_by,
            "filters": self.filters,
        }


@dataclass(frozen=True)
class DispatchResult:
    out: Path
    units: dict[str, int]  # unit (or "_unassigned") -> targets in its package
    headline: str


def watchlist_categories(watchlist: WatchlistStore) -> Callable[[Iterable[str]], set[str]]:
    """The categories the active watchlists give the content keys (`btih:<hex>`, `btmh:<hex>`,
    ...); keys of another form, or not watched, have none."""

    def categories(keys: Iterable[str]) -> set[str]:
        digests: list[Digest] = []
        for key in keys:
            prefix, _, value = key.partition(":")
            try:
                digests.append(parse_hash(value, HashKind(prefix)))
            except (ValueError, HashParseError):
                continue
        return {m.category for m in watchlist.match(digests) if m.category}

    return categories


class Operations:
    def __init__(
        self,
        engine: Engine,
        targets: TargetSource,
        workflow: LeadWorkflow,
        *,
        categories: Callable[[Iterable[str]], set[str]] | None = None,
        config: OperationConfig | None = None,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self._targets = targets
        self._workflow = workflow
        self._categories = categories
        self._config = config or OperationConfig()
        self._clock_ms = clock_ms

    def select(self, filters: OperationFilters) -> list[dict[str, Any]]:
        """Snapshots of the targets the filters pick, ordered by unit, score (desc) and id."""
        if filters.category is not None and self._categories is None:
            raise OperationError("a category filter needs the watchlist's categories")
        wanted = set(filters.jurisdictions)
        picked: list[dict[str, Any]] = []
        for t in self._targets.ranked():
            if filters.min_score is not None and t.score < filters.min_score:
                continue
            if filters.since_ms is not None and t.last_ms < filters.since_ms:
                continue
            if wanted and t.jurisdiction not in wanted:
                continue
            keys = sorted(t.content_keys)
            categories = sorted(self._categories(keys)) if self._categories is not None else []
            if filters.category is not None and filters.category not in categories:
                continue
            lead = self._workflow.get(t.id)
            if lead.state is LeadState.CLOSED and not filters.include_closed:
                continue
            lines = requisition_lines(self._targets.observations(t.id))
            picked.append(_snapshot(t, keys, categories, lead.as_json(), lines))
        picked.sort(key=lambda s: (s["unit"] is None, s["unit"] or "", -s["score"], s["id"]))
        return picked

    def create(self, name: str, filters: OperationFilters, *, actor: str) -> Operation:
        if not name.strip():
            raise OperationError("an operation needs a name")
        if not actor.strip():
            raise OperationError("the acting user (--by) must not be empty")
        snapshots = self.select(filters)
        if not snapshots:
            raise OperationError(f"no lead matches the filters ({_describe(filters)})")
        created = self._clock_ms()
        try:
            with self._writer.begin() as conn:
                op_id = conn.execute(
                    insert(operations)
                    .values(
                        name=name,
                        created_ms=created,
                        created_by=actor,
                        filters=_compact(filters.as_json()),
                        target_count=len(snapshots),
                    )
                    .returning(operations.c.id)
                ).scalar_one()
                conn.execute(
                    insert(operation_targets),
                    [
                        {
                            "operation_id": op_id,
                            "target_id": s["id"],
                            "unit": s["unit"],
                            "jurisdiction": s["jurisdiction"],
                            "snapshot": _compact(s),
                        }
                        for s in snapshots
                    ],
                )
        except IntegrityError:
            raise OperationError(f"an operation named {name!r} already exists") from None
        return Operation(int(op_id), name, created, actor, filters.as_json(), snapshots)

    def list(self) -> list[Operation]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(operations).order_by(operations.c.id)).all()
        return [
            Operation(int(r.id), r.name, int(r.created_ms), r.created_by, json.loads(r.filters))
            for r in rows
        ]

    def get(self, ref: int | str) -> Operation:
        """An operation by id or by name, with its frozen targets."""
        c = operations.c
        where = c.id == int(ref) if isinstance(ref, int) or str(ref).isdigit() else c.name == ref
        with self._engine.connect() as conn:
            row = conn.execute(select(operations).where(where)).first()
            if row is None:
                raise OperationError(f"no operation {ref!r}")
            snaps = conn.execute(
                select(operation_targets.c.snapshot).where(
                    operation_targets.c.operation_id == row.id
                )
            ).scalars()
            targets = [json.loads(s) for s in snaps]
        targets.sort(key=lambda s: (s["unit"] is None, s["unit"] or "", -s["score"], s["id"]))
        return Operation(
            int(row.id),
            row.name,
            int(row.created_ms),
            row.created_by,
            json.loads(row.filters),
            targets,
        )

    def summary(self, op: Operation) -> dict[str, Any]:
        """The national summary: targets per jurisdiction and per unit, and the headline."""
        by_j: dict[str, dict[str, Any]] = {}
        by_unit: dict[str, int] = {}
        without = 0
        for s in op.targets:
            code = s["jurisdiction"]
            if code is None:
                without += 1
            else:
                j = by_j.setdefault(
                    code, {"code": code, "name": s["jurisdiction_name"], "targets": 0, "units": []}
                )
                j["targets"] += 1
                if s["unit"] is not None and s["unit"] not in j["units"]:
                    j["units"] = sorted([*j["units"], s["unit"]])
            key = s["unit"] if s["unit"] is not None else UNASSIGNED
            by_unit[key] = by_unit.get(key, 0) + 1
        n, m = len(op.targets), len(by_j)
        cfg = self._config
        noun = cfg.jurisdiction_singular if m == 1 else cfg.jurisdiction_plural
        return {
            "format": PACKAGE_FORMAT,
            "version": FORMAT_VERSION,
            "operation": op.header(),
            "headline": f"{n} target{'s' if n != 1 else ''} in {m} {noun}",
            "targets": n,
            "jurisdictions": m,
            "without_jurisdiction": without,
            "by_jurisdiction": [by_j[k] for k in sorted(by_j)],
            "by_unit": [{"unit": u, "targets": by_unit[u]} for u in sorted(by_unit)],
        }

    def show(self, ref: int | str) -> dict[str, Any]:
        """The operation as one JSON document (`operation show --format json`)."""
        op = self.get(ref)
        summary = self.summary(op)
        return {
            "format": OPERATION_FORMAT,
            "version": FORMAT_VERSION,
            "operation": op.header(),
            "headline": summary["headline"],
            "by_unit": summary["by_unit"],
            "targets": op.targets,
        }

    def dispatch(self, ref: int | str, out: Path) -> DispatchResult:
        op = self.get(ref)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise OperationError(f"{out}: exists and is not an empty folder")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            counts = self._write_packages(op, tmp)
            summary = self.summary(op)
            _write(tmp / "national-summary.json", _pretty(summary))
            _write(tmp / "national-summary.csv", _summary_csv(summary))
            files = {
                p.relative_to(tmp).as_posix(): _sha256(p)
                for p in sorted(tmp.rglob("*"))
                if p.is_file()
            }
            manifest = {
                "format": PACKAGE_FORMAT,
                "version": FORMAT_VERSION,
                "operation": op.header(),
                "headline": summary["headline"],
                "units": [{"unit": u, "folder": f, "targets": n} for u, (f, n) in counts.items()],
                "files": files,
            }
            _write(tmp / "manifest.json", _pretty(manifest))
            for p in tmp.rglob("*"):
                if p.is_file():
                    _fsync(p)
            if out.exists():
                out.rmdir()
            tmp.rename(out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return DispatchResult(out, {u: n for u, (_, n) in counts.items()}, str(summary["headline"]))

    def _write_packages(self, op: Operation, root: Path) -> dict[str, tuple[str, int]]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for s in op.targets:
            groups.setdefault(s["unit"] if s["unit"] is not None else UNASSIGNED, []).append(s)
        folders: dict[str, tuple[str, int]] = {}
        used: set[str] = set()
        for unit in sorted(groups):
            folder = _folder_name(unit, used)
            d = root / "units" / folder
            d.mkdir(parents=True)
            targets = groups[unit]
            doc = {
                "format": UNIT_PACKAGE_FORMAT,
                "version": FORMAT_VERSION,
                "operation": op.header(),
                "unit": None if unit == UNASSIGNED else unit,
                "targets": targets,
            }
            _write(d / "targets.json", _pretty(doc))
            _write(d / "targets.csv", _targets_csv(targets))
            _write(d / "requisitions.csv", _requisitions_csv(targets))
            files = {p.name: _sha256(p) for p in sorted(d.iterdir())}
            unit_manifest = {
                "format": UNIT_PACKAGE_FORMAT,
                "version": FORMAT_VERSION,
                "operation": op.header(),
                "unit": doc["unit"],
                "targets": len(targets),
                "files": files,
            }
            _write(d / "manifest.json", _pretty(unit_manifest))
            folders[unit] = (f"units/{folder}", len(targets))
        return folders


def _snapshot(
    t: TargetLike,
    keys: list[str],
    categories: list[str],
    lead: dict[str, object],
    lines: list[RequisitionLine],
) -> dict[str, Any]:
    # A lead someone holds goes to the holding unit; otherwise to the unit of its jurisdiction.
    unit = lead["unit"] if lead["unit"] is not None else t.unit
    warnings = sorted({w for ln in lines for w in ln.warnings})
    return {
        "id": t.id,
        "label": t.label,
        "score": t.score,
        "jurisdiction": t.jurisdiction,
        "jurisdiction_name": t.jurisdiction_name,
        "unit": unit,
        "first_seen": iso_ms(t.first_ms),
        "last_seen": iso_ms(t.last_ms),
        "ips": sorted(t.ips),
        "flags": sorted(t.flags),
        "networks": sorted(t.networks),
        "content_keys": keys,
        "categories": categories,
        "lead": lead,
        "requisition": [ln.as_json() for ln in lines],
        "warnings": warnings,
    }


_TARGET_COLUMNS = (
    "target_id",
    "label",
    "score",
    "jurisdiction",
    "jurisdiction_name",
    "unit",
    "first_seen",
    "last_seen",
    "ips",
    "flags",
    "content_keys",
    "categories",
    "lead_state",
    "lead_unit",
    "lead_since",
    "requisition_lines",
    "warnings",
)


def _targets_csv(targets: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_TARGET_COLUMNS)
    for s in targets:
        w.writerow(
            [
                s["id"],
                s["label"],
                s["score"],
                s["jurisdiction"] or "",
                s["jurisdiction_name"] or "",
                s["unit"] or "",
                s["first_seen"],
                s["last_seen"],
                " ".join(s["ips"]),
                " ".join(s["flags"]),
                " ".join(s["content_keys"]),
                " ".join(s["categories"]),
                s["lead"]["state"],
                s["lead"]["unit"] or "",
                s["lead"]["since"] or "",
                len(s["requisition"]),
                " | ".join(s["warnings"]),
            ]
        )
    return buf.getvalue()


REQUISITION_COLUMNS = (
    "target_id",
    "ip",
    "port",
    "time_utc",
    "asn",
    "organisation",
    "basis",
    "method",
    "content_key",
    "evidence",
    "observations",
    "flags",
    "warnings",
)


def _requisitions_csv(targets: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(REQUISITION_COLUMNS)
    for s in targets:
        for ln in s["requisition"]:
            w.writerow(
                [
                    s["id"],
                    ln["ip"],
                    "" if ln["port"] is None else ln["port"],
                    ln["time"],
                    "" if ln["asn"] is None else ln["asn"],
                    ln["organisation"] or "",
                    ln["basis"],
                    ln["method"],
                    ln["content_key"],
                    ln["evidence"],
                    ln["observations"],
                    " ".join(ln["flags"]),
                    " | ".join(ln["warnings"]),
                ]
            )
    return buf.getvalue()


def _summary_csv(summary: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("jurisdiction", "name", "targets", "units"))
    for j in summary["by_jurisdiction"]:
        w.writerow((j["code"], j["name"] or "", j["targets"], " ".join(j["units"])))
    if summary["without_jurisdiction"]:
        w.writerow(("", "(no jurisdiction)", summary["without_jurisdiction"], ""))
    return buf.getvalue()


def _folder_name(unit: str, used: set[str]) -> str:
    """A folder name from a unit code: safe characters only, unique within the package."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", unit).strip(".") or "unit"
    name, n = base, 1
    while name.lower() in used:
        n += 1
        name = f"{base}-{n}"
    used.add(name.lower())
    return name


def _describe(filters: OperationFilters) -> str:
    parts = []
    if filters.min_score is not None:
        parts.append(f"score at least {filters.min_score:g}")
    if filters.since_ms is not None:
        parts.append(f"seen since {iso_ms(filters.since_ms)}")
    if filters.category is not None:
        parts.append(f"category {filters.category!r}")
    if filters.jurisdictions:
        parts.append(f"jurisdictions {', '.join(sorted(filters.jurisdictions))}")
    parts.append("closed leads included" if filters.include_closed else "closed leads left out")
    return "; ".join(parts)


def _compact(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _pretty(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def _write(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8"))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
