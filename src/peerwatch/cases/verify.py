"""Checking a case package without peerwatch's database (`peerwatch case verify DIR`).

1. every file listed in manifest.json is there with its SHA-256, and no other file is;
2. `evidence/` verifies as an evidence bundle (chain links, signatures, canonical records);
3. every observation in case.json is the signed record it names (`sensor/seq`): time, address,
   source port, method, content key, outcome, client and completion are the record's own, and
   the bundle holds no record the report does not show.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from peerwatch.cases.document import CASE_FORMAT, CASE_VERSION, iso_ms
from peerwatch.cases.export import manifest_of
from peerwatch.errors import EvidenceError
from peerwatch.evidence import record
from peerwatch.evidence.bundle import BundleReport, verify_bundle

# Fields of a case.json observation that must equal the signed record's.
_SIGNED_FIELDS = (
    "observed_ms",
    "network",
    "method",
    "content_key",
    "ip",
    "port",
    "client",
    "peer_id",
    "completion_ppm",
    "outcome",
    "exchange_sha256",
    "clock_offset_ms",
)


@dataclass
class CaseCheck:
    label: str
    observations: int = 0
    problems: list[str] = field(default_factory=list)
    bundle: BundleReport | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_case(folder: Path, trusted: dict[str, Ed25519PublicKey] | None = None) -> CaseCheck:
    manifest = manifest_of(folder)
    target = manifest.get("target") or {}
    check = CaseCheck(label=str(target.get("label", "?")))
    listed: dict[str, str] = manifest.get("files") or {}
    for name, digest in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            check.problems.append(f"{name}: listed in manifest.json but missing")
        elif _sha256(path) != digest:
            check.problems.append(f"{name}: SHA-256 differs from manifest.json (file changed)")
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_file() and name != "manifest.json" and name not in listed:
            check.problems.append(f"{name}: not listed in manifest.json (file added)")

    try:
        check.bundle = verify_bundle(folder / "evidence", trusted)
    except EvidenceError as exc:
        check.problems.append(f"evidence/: {exc}")
    else:
        check.problems.extend(f"evidence/: {p}" for p in check.bundle.problems)

    try:
        doc = json.loads((folder / "case.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        check.problems.append(f"case.json: cannot read: {exc}")
        return check
    if doc.get("format") != CASE_FORMAT or doc.get("version") != CASE_VERSION:
        check.problems.append(
            f"case.json: format {doc.get('format')!r} version {doc.get('version')!r}, "
            f"this peerwatch reads {CASE_FORMAT} version {CASE_VERSION}"
        )
        return check
    check.problems.extend(_observations_match(folder, doc, check))
    return check


def _observations_match(folder: Path, doc: dict[str, Any], check: CaseCheck) -> list[str]:
    problems: list[str] = []
    signed: dict[str, record.Observation] = {}
    try:
        with (folder / "evidence" / "records.jsonl").open("rb") as f:
            for n, line in enumerate(f, 1):
                try:
                    rec = record.decode(line.rstrip(b"\n"))
                except EvidenceError as exc:
                    problems.append(f"evidence/records.jsonl line {n}: {exc}")
                    continue
                signed[f"{rec.sensor}/{rec.seq}"] = rec.observation
    except OSError as exc:
        return [f"evidence/records.jsonl: {exc}"]
    shown = doc.get("observations") or []
    check.observations = len(shown)
    named = set()
    for o in shown:
        name = f"{o.get('sensor')}/{o.get('seq')}"
        named.add(name)
        obs = signed.get(name)
        if obs is None:
            problems.append(f"case.json observation {name}: no such record in the bundle")
            continue
        for key in _SIGNED_FIELDS:
            if o.get(key) != getattr(obs, key):
                problems.append(
                    f"case.json observation {name}: {key} {o.get(key)!r} differs from the "
                    f"signed record's {getattr(obs, key)!r}"
                )
        if o.get("observed") != iso_ms(obs.observed_ms):
            problems.append(f"case.json observation {name}: 'observed' is not the record's time")
    for name in sorted(set(signed) - named):
        problems.append(f"evidence record {name}: not among the report's observations")
    return problems


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
