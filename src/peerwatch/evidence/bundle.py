"""Evidence bundles: a folder a third party can verify without peerwatch's database (format 1)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, and_, select

import peerwatch
from peerwatch.errors import EvidenceError
from peerwatch.evidence import log
from peerwatch.evidence.keys import load_public_pem, public_from_raw, public_raw
from peerwatch.evidence.verify import ChainReport, ChainVerifier, Entry, Problem
from peerwatch.storage.schema import evidence_records

BUNDLE_FORMAT = "peerwatch-evidence-bundle"
BUNDLE_VERSION = 1
_HERE = Path(__file__).parent
_CHAIN_HEADER = "sensor\tseq\tprev_link\tlink\tsignature\n"
_CHOSEN_BATCH = 500  # seqs per IN (...) query


@dataclass
class SensorSummary:
    count: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    public_key_sha256: str = ""


@dataclass
class ExportResult:
    out: Path
    records: int
    sensors: dict[str, SensorSummary] = field(default_factory=dict)


def export_bundle(
    engine: Engine,
    out: Path,
    flt: log.RecordFilter,
    *,
    progress: Callable[[int], None] | None = None,
    records: Collection[tuple[str, int]] | None = None,
    describe: Mapping[str, str | int] | None = None,
) -> ExportResult:
    """Write a bundle of the selected records to `out` (which must not exist or be empty).

    `records`, when given, is the exact set of (sensor, seq) to export instead of `flt` (a case
    package holds one target's records: several addresses and content keys); every one must be in
    the log. `describe` adds what the selection is (e.g. the target) to the manifest's `selection`.

    The bundle is written in a temporary folder beside `out` and renamed into place at the end, so a
    failure leaves no half-written bundle.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise EvidenceError(f"{out}: exists and is not an empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    registered = log.sensor_keys(engine)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        summaries: dict[str, SensorSummary] = {}
        last: tuple[str, int, bytes] | None = None
        n = 0
        with (
            (tmp / "records.jsonl").open("wb") as rec_f,
            (tmp / "chain.tsv").open("w", encoding="ascii") as chain_f,
        ):
            chain_f.write(_CHAIN_HEADER)
            rows = (
                log.iter_records(engine, flt) if records is None else _iter_chosen(engine, records)
            )
            for row in rows:
                if last is not None and last[0] == row.sensor_id and last[1] == row.seq - 1:
                    prev = last[2]
                else:
                    prev = log.previous_link(
                        engine, row.sensor_id, row.seq, registered[row.sensor_id]
                    )
                rec_f.write(row.record + b"\n")
                chain_f.write(
                    f"{row.sensor_id}\t{row.seq}\t{prev.hex()}\t{row.link.hex()}\t"
                    f"{row.signature.hex()}\n"
                )
                s = summaries.setdefault(row.sensor_id, SensorSummary())
                s.count += 1
                s.first_seq = row.seq if s.first_seq is None else s.first_seq
                s.last_seq = row.seq
                last = (row.sensor_id, row.seq, row.link)
                n += 1
                if progress is not None and n % 1000 == 0:
                    progress(n)
        keys_dir = tmp / "keys"
        keys_dir.mkdir()
        for sensor_id, summary in summaries.items():
            key = public_from_raw(registered[sensor_id])
            pem = key.public_bytes(*_pem_format())
            (keys_dir / f"{sensor_id}.pem").write_bytes(pem)
            summary.public_key_sha256 = hashlib.sha256(public_raw(key)).hexdigest()
        (tmp / "README.md").write_bytes((_HERE / "bundle_readme.md").read_bytes())
        script = tmp / "verify.sh"
        script.write_bytes((_HERE / "verify_sh.txt").read_bytes())
        script.chmod(0o755)
        # Records purged under retention are not in the bundle (only their hashes remain): a
        # bundle of a chain with purged records is a selection, checked record by record.
        purged = 0 if records is not None else log.purged_count(engine, flt.sensor_id)
        if records is None:
            selection: dict[str, Any] = {k: v for k, v in asdict(flt).items() if v is not None}
        else:
            selection = {"records": len(records)}
        selection.update(describe or {})
        manifest: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "written_by": f"peerwatch {peerwatch.__version__}",
            "record_version": 1,
            "selection": selection,
            "complete": records is None and flt.is_everything and purged == 0,
            "records": n,
            "sensors": {k: asdict(v) for k, v in sorted(summaries.items())},
            "files": {
                str(p.relative_to(tmp)): _sha256_file(p)
                for p in sorted(tmp.rglob("*"))
                if p.is_file()
            },
        }
        if purged:
            manifest["purged_records"] = purged
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        for p in tmp.rglob("*"):
            if p.is_file():
                _fsync(p)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out, n, summaries)


def _iter_chosen(engine: Engine, keys: Collection[tuple[str, int]]) -> Iterator[log.StoredRecord]:
    """The records `keys` in chain order (sensor, seq); EvidenceError naming any not in the log
    (purged under retention, or never written)."""
    by_sensor: dict[str, list[int]] = {}
    for sensor_id, seq in set(keys):
        by_sensor.setdefault(sensor_id, []).append(seq)
    c = evidence_records.c
    for sensor_id in sorted(by_sensor):
        seqs = sorted(by_sensor[sensor_id])
        for start in range(0, len(seqs), _CHOSEN_BATCH):
            chunk = seqs[start : start + _CHOSEN_BATCH]
            query = (
                select(evidence_records)
                .where(and_(c.sensor_id == sensor_id, c.seq.in_(chunk)))
                .order_by(c.seq)
            )
            with engine.connect() as conn:
                rows = list(conn.execute(query))
            found = {int(r.seq) for r in rows}
            missing = [s for s in chunk if s not in found]
            if missing:
                shown = ", ".join(f"{sensor_id}/{s}" for s in missing[:5])
                raise EvidenceError(
                    f"record(s) {shown}{' ...' if len(missing) > 5 else ''} not in the evidence "
                    "log (purged under retention?)"
                )
            for r in rows:
                yield log.StoredRecord(
                    sensor_id=r.sensor_id,
                    seq=int(r.seq),
                    record=_column_bytes(r.record),
                    link=_column_bytes(r.link),
                    signature=_column_bytes(r.signature),
                    observed_ms=int(r.observed_ms),
                    network=r.network,
                    method=r.method,
                    content_key=r.content_key,
                    ip=r.ip,
                    port=r.port,
                )


def _column_bytes(value: object) -> bytes:
    # SQLite lets an edit turn a BLOB into TEXT: export it as is, verification reports it.
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return repr(value).encode("utf-8")


def _pem_format() -> tuple[Any, Any]:
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo


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


@dataclass
class BundleReport:
    problems: list[Problem | str]
    reports: list[ChainReport]
    complete: bool
    key_fingerprints: dict[str, str]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_bundle(folder: Path, trusted: dict[str, Ed25519PublicKey] | None = None) -> BundleReport:
    """Check a bundle: file digests, every record's chain link and signature, continuity.

    Without `trusted` keys the bundle's own keys are used: the report gives their fingerprints so
    the
    reader can compare them with the ones the sensor's operator published.
    """
    problems: list[Problem | str] = []
    manifest_path = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EvidenceError(f"{manifest_path}: cannot read manifest: {exc}") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise EvidenceError(f"{manifest_path}: not a peerwatch evidence bundle")
    if manifest.get("version") != BUNDLE_VERSION:
        raise EvidenceError(
            f"{manifest_path}: bundle version {manifest.get('version')!r}, this verifier knows 1"
        )
    for name, digest in sorted(manifest.get("files", {}).items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: listed in manifest.json but missing")
        elif _sha256_file(path) != digest:
            problems.append(f"{name}: SHA-256 differs from manifest.json (file changed)")

    keys: dict[str, Ed25519PublicKey] = dict(trusted or {})
    fingerprints: dict[str, str] = {}
    for pem in sorted((folder / "keys").glob("*.pem")):
        sensor_id = pem.name[: -len(".pem")]
        bundle_key = load_public_pem(pem.read_bytes(), str(pem))
        if sensor_id in keys and public_raw(keys[sensor_id]) != public_raw(bundle_key):
            problems.append(f"keys/{pem.name}: differs from the trusted key given")
        keys.setdefault(sensor_id, bundle_key)
    for sensor_id, key in keys.items():
        fingerprints[sensor_id] = hashlib.sha256(public_raw(key)).hexdigest()

    complete = bool(manifest.get("complete"))
    verifiers: dict[str, ChainVerifier] = {}
    count = 0
    for lineno, (rec, fields) in enumerate(_read_pairs(folder), start=1):
        count += 1
        if isinstance(fields, str):
            problems.append(f"chain.tsv line {lineno + 1}: {fields}")
            continue
        sensor_id, seq, prev, link_, sig = fields
        sensor_key = keys.get(sensor_id)
        if sensor_key is None:
            problems.append(f"record {sensor_id}/{seq}: no public key for sensor {sensor_id!r}")
            continue
        verifier = verifiers.setdefault(
            sensor_id, ChainVerifier(sensor_id, sensor_key, selection=not complete)
        )
        problems.extend(verifier.feed(Entry(seq, rec, link_, sig, prev_link=prev)))
    if count != manifest.get("records"):
        problems.append(f"manifest.json says {manifest.get('records')} records, found {count}")
    return BundleReport(problems, [v.report for v in verifiers.values()], complete, fingerprints)


_Fields = tuple[str, int, bytes, bytes, bytes]


def _read_pairs(folder: Path) -> Iterator[tuple[bytes, _Fields | str]]:
    try:
        rec_f = (folder / "records.jsonl").open("rb")
        chain_f = (folder / "chain.tsv").open("r", encoding="ascii")
    except OSError as exc:
        raise EvidenceError(f"{folder}: {exc}") from None
    with rec_f, chain_f:
        if chain_f.readline() != _CHAIN_HEADER:
            raise EvidenceError(f"{folder / 'chain.tsv'}: unexpected header line")
        while True:
            rec = rec_f.readline()
            line = chain_f.readline()
            if not rec and not line:
                return
            if not rec or not line:
                yield rec, "records.jsonl and chain.tsv have different numbers of lines"
                return
            yield rec.rstrip(b"\n"), _parse_chain_line(line)


def _parse_chain_line(line: str) -> _Fields | str:
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 5:
        return f"expected 5 tab-separated fields, got {len(parts)}"
    sensor_id, seq_s, prev, link_, sig = parts
    try:
        return sensor_id, int(seq_s), bytes.fromhex(prev), bytes.fromhex(link_), bytes.fromhex(sig)
    except ValueError:
        return "bad seq or hex field"
