"""Writing a case package: one target's evidence bundle, case.json, case.pdf and manifest.json.

Everything is written in a temporary folder beside the output folder and renamed into place at the
end: a failure at any step (a record missing from the log, a bundle that does not verify, the PDF)
leaves no output folder at all, never a half-written one. docs/case-package.md describes the
package and how a third party checks it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

import peerwatch
from peerwatch.cases.document import CASE_VERSION, CaseInputs, case_document, content_digest
from peerwatch.cases.pdf import PdfConfig, write_pdf
from peerwatch.errors import EvidenceError, InputError
from peerwatch.evidence import record
from peerwatch.evidence.bundle import export_bundle, verify_bundle
from peerwatch.evidence.log import RecordFilter
from peerwatch.leads.requisition import lines_csv, requisition_lines
from peerwatch.leads.targets import TargetStore
from peerwatch.leads.workflow import LeadWorkflow
from peerwatch.watchlist.store import Match, WatchlistStore

PACKAGE_FORMAT = "peerwatch-case-package"
PACKAGE_VERSION = 1


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class CaseSources:
    """The components a case package is read from (the App's, or a test's)."""

    engine: Engine  # the evidence log's database
    targets: TargetStore
    watchlist: WatchlistStore
    leads: LeadWorkflow | None = None  # claims and their history; None: the lead is left out


@dataclass(frozen=True, slots=True)
class CaseConfig:
    pdf: PdfConfig = field(default_factory=PdfConfig)  # page size, observation rows shown


@dataclass(frozen=True, slots=True)
class CaseReport:
    """What was exported: for the command's output and for the audit log."""

    out: Path
    target_id: int
    label: str
    observations: int  # observations in case.json (= records in the bundle)
    sensors: tuple[str, ...]
    pdf_pages: int
    files: Mapping[str, str]  # every file but manifest.json, relative path -> SHA-256 (hex)
    manifest_sha256: str  # SHA-256 of manifest.json: one value that pins the whole package
    exported_ms: int

    def audit_detail(self) -> dict[str, str | int]:
        """The detail of a "case.export" audit entry."""
        return {
            "target": self.label,
            "observations": self.observations,
            "pdf_pages": self.pdf_pages,
            "manifest_sha256": self.manifest_sha256,
            "out": str(self.out),
        }


def export_case(
    sources: CaseSources,
    target_id: int,
    out: Path,
    *,
    as_of_ms: int | None = None,
    config: CaseConfig | None = None,
    clock_ms: Callable[[], int] = _now_ms,
    exported_by: str | None = None,
    on_export: Callable[[CaseReport], None] | None = None,
) -> CaseReport:
    """Write the case package of `target_id` to `out` (which must not exist, or be empty).

    `exported_by` names who exports it, in case.json and the PDF. `on_export(report)` is called
    once the package is complete and just before it is renamed into place: if it raises (the web
    app could not write its audit entry), nothing is exported.
    """
    config = config or CaseConfig()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("exists and is not an empty folder; choose a new folder", source=str(out))
    store = sources.targets
    explanation = store.explain(target_id, as_of_ms=as_of_ms)  # InputError for an unknown target
    observations = store.observations(target_id)
    label = explanation.summary.label
    exported_ms = clock_ms()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        keys = [(o.sensor_id, o.seq) for o in observations]
        evidence_dir = tmp / "evidence"
        export_bundle(
            sources.engine,
            evidence_dir,
            RecordFilter(),
            records=keys,
            describe={"target": label},
        )
        # Hand out nothing that does not verify: the same check the recipient will run.
        checked = verify_bundle(evidence_dir)
        if not checked.ok:
            raise EvidenceError(
                f"the evidence bundle of {label} does not verify: {checked.problems[0]}"
            )
        bundle_manifest = json.loads((evidence_dir / "manifest.json").read_text("utf-8"))
        records = _decoded(evidence_dir / "records.jsonl")
        leads = sources.leads
        doc = case_document(
            CaseInputs(
                explanation=explanation,
                observations=observations,
                records=records,
                matches=_matches(sources.watchlist, [o.content_key for o in observations]),
                lists=sources.watchlist.lists(),
                lead=None if leads is None else leads.get(target_id),
                history=() if leads is None else leads.history(target_id),
                bundle_sensors=bundle_manifest["sensors"],
                key_fingerprints=checked.key_fingerprints,
                exported_ms=exported_ms,
                exported_by=exported_by,
            )
        )
        case_json = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        (tmp / "case.json").write_bytes(case_json)
        (tmp / "requisition.csv").write_text(
            lines_csv(((), line) for line in requisition_lines(observations)), encoding="utf-8"
        )
        pages = write_pdf(
            doc,
            tmp / "case.pdf",
            case_json_sha256=hashlib.sha256(case_json).hexdigest(),
            config=config.pdf,
        )
        files = {
            p.relative_to(tmp).as_posix(): _sha256_file(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        manifest = {
            "format": PACKAGE_FORMAT,
            "version": PACKAGE_VERSION,
            "written_by": f"peerwatch {peerwatch.__version__}",
            "case_version": CASE_VERSION,
            "target": {"id": target_id, "label": label},
            "exported": doc["exported"],
            "exported_by": exported_by,
            "observations": len(observations),
            "files": files,
        }
        manifest_bytes = (json.dumps(manifest, indent=2) + "\n").encode("utf-8")
        (tmp / "manifest.json").write_bytes(manifest_bytes)
        for p in tmp.rglob("*"):
            if p.is_file():
                _fsync(p)
        report = CaseReport(
            out=out,
            target_id=target_id,
            label=label,
            observations=len(observations),
            sensors=tuple(sorted(bundle_manifest["sensors"])),
            pdf_pages=pages,
            files=files,
            manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
            exported_ms=exported_ms,
        )
        if on_export is not None:
            on_export(report)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _decoded(path: Path) -> dict[tuple[str, int], record.DecodedRecord]:
    out = {}
    with path.open("rb") as f:
        for line in f:
            rec = record.decode(line.rstrip(b"\n"))
            out[(rec.sensor, rec.seq)] = rec
    return out


def _matches(watchlist: WatchlistStore, content_keys: list[str]) -> dict[str, list[Match]]:
    out: dict[str, list[Match]] = {}
    for key in dict.fromkeys(content_keys):
        digest = content_digest(key)
        out[key] = [] if digest is None else watchlist.match([digest])
    return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def manifest_of(folder: Path) -> dict[str, Any]:
    """A case package's manifest.json; EvidenceError when it is not one this version reads."""
    path = folder / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvidenceError(f"{path}: cannot read the manifest: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != PACKAGE_FORMAT:
        raise EvidenceError(f"{path}: not a peerwatch case package")
    if manifest.get("version") != PACKAGE_VERSION:
        raise EvidenceError(
            f"{path}: case package version {manifest.get('version')!r}, this peerwatch knows "
            f"{PACKAGE_VERSION}"
        )
    return manifest
