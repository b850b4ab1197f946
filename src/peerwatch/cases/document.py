"""`case.json`: everything a case package says about one target, as one versioned JSON document.

The document is built from the *signed* records of the target (the bundle written beside it), not
from the derived target tables: each observation in it is the record of the same `sensor`/`seq` in
`evidence/records.jsonl`, and `peerwatch case verify` checks that they agree. The PDF is rendered
from this same document, so the two never say different things. docs/case-package.md documents
every field; fields are only ever added, and `version` changes when one changes meaning or goes.

Never any content: hashes, list provenance and network metadata only. The names of listed items
are left out too (a name on a hash list can describe the material); the list, its version, source
file and location inside it let an authorised reader find the entry in the list itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import peerwatch
from peerwatch.domain.hashes import Digest, HashKind
from peerwatch.enrich.placement import Placement
from peerwatch.errors import EvidenceError
from peerwatch.evidence.record import CLAIM_METHODS, DecodedRecord
from peerwatch.leads.requisition import requisition_lines
from peerwatch.leads.targets import TargetExplanation, TargetObservation, possession_kind
from peerwatch.leads.workflow import HistoryEntry, Lead
from peerwatch.watchlist.store import ListInfo, Match

CASE_FORMAT = "peerwatch-case"
CASE_VERSION = 1


def iso_ms(ms: int | None) -> str | None:
    """UTC ISO 8601 with milliseconds and `Z`: 2025-11-24T16:00:01.250Z (integer arithmetic)."""
    if ms is None:
        return None
    seconds, millis = divmod(ms, 1000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{millis:03d}Z"


def completion_text(ppm: int | None) -> str | None:
    """ "100.0%" from parts per million, without floating point."""
    if ppm is None:
        return None
    tenths = (ppm + 500) // 1000
    return f"{tenths // 10}.{tenths % 10}%"


def content_digest(content_key: str) -> Digest | None:
    """ "btih:<hex>" -> the digest the watchlist is matched with; None for another form."""
    prefix, _, hexa = content_key.partition(":")
    try:
        return Digest(HashKind(prefix), bytes.fromhex(hexa))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class CaseInputs:
    """What the document is made of; `export.py` gathers it."""

    explanation: TargetExplanation
    observations: Sequence[TargetObservation]  # from the target store (placement, time order)
    records: Mapping[tuple[str, int], DecodedRecord]  # the signed records, by (sensor, seq)
    matches: Mapping[str, Sequence[Match]]  # watchlist entries per content key
    lists: Sequence[ListInfo]  # active list versions (their source files and SHA-256)
    lead: Lead | None
    history: Sequence[HistoryEntry]
    bundle_sensors: Mapping[str, Mapping[str, Any]]  # manifest.json "sensors" of the bundle
    key_fingerprints: Mapping[str, str]  # sensor -> SHA-256 of its raw public key
    exported_ms: int
    exported_by: str | None = None  # who exported it ("cli:alice", a web user), for the record


def case_document(inp: CaseInputs) -> dict[str, Any]:
    """The case.json object (docs/case-package.md, "case.json")."""
    ex = inp.explanation
    s, p = ex.summary, ex.placement
    observations = [_observation(i, o, inp.records) for i, o in enumerate(inp.observations, 1)]
    matches = _hash_matches(inp, observations)
    refs = {m["content_key"]: m["ref"] for m in matches}
    for o in observations:
        o["item"] = refs[o["content_key"]]
    placements = _placements(inp.observations)
    counts = {"possession": 0, "claim": 0, "negative": 0}
    for o in observations:
        counts[o["evidence"]] += 1
    return {
        "format": CASE_FORMAT,
        "version": CASE_VERSION,
        "written_by": f"peerwatch {peerwatch.__version__}",
        "exported": iso_ms(inp.exported_ms),
        "exported_ms": inp.exported_ms,
        "exported_by": inp.exported_by,
        "as_of": iso_ms(ex.as_of_ms),
        "target": {
            "id": s.id,
            "label": s.label,
            "score": s.score,
            "jurisdiction": None
            if s.jurisdiction is None
            else {
                "code": s.jurisdiction,
                "name": s.jurisdiction_name,
                "method": p.jurisdiction_method,
            },
            "unit": s.unit,
            "first_seen": iso_ms(s.first_ms),
            "last_seen": iso_ms(s.last_ms),
            "ips": list(s.ips),
            "networks": list(s.networks),
            "content_keys": list(s.content_keys),
            "flags": sorted(s.flags),
            "observations": counts,
        },
        "score": {
            "total": s.score,
            "as_of": iso_ms(ex.as_of_ms),
            "components": [
                {"name": c.name, "value": c.value, "points": c.points, "rule": c.rule}
                for c in ex.components
            ],
        },
        "location": {
            "ip": p.ip,
            "seen": iso_ms(p.observed_ms),
            "placed": iso_ms(p.placed_ms),
            "country": p.country,
            "jurisdiction": p.jurisdiction,
            "jurisdiction_name": p.jurisdiction_name,
            "jurisdiction_method": p.jurisdiction_method,
            "unit": p.unit,
            "confidence": p.confidence,
            "flags": sorted(p.flags),
            "sources": list(p.sources),
            "caveats": list(p.caveats),
        },
        "placements": placements,
        "identity_links": [
            {
                "id": x.id,
                "kind": x.kind,
                "reason": x.reason,
                "ip": x.ip,
                "port": x.port,
                "since": iso_ms(x.created_ms),
                "first_record": f"{x.sensor_id}/{x.seq}",
                "observations": x.observations,
            }
            for x in ex.links
        ],
        "observations": observations,
        "hash_matches": matches,
        "requisition": [line.as_json() for line in requisition_lines(inp.observations)],
        "lead": None if inp.lead is None else inp.lead.as_json(),
        "lead_history": [h.as_json() for h in inp.history],
        "caveats": _caveats(ex, inp.observations, observations),
        "evidence": {
            "bundle": "evidence/",
            "records": len(observations),
            "sensors": {
                k: {**dict(v), "public_key_sha256": inp.key_fingerprints.get(k, "")}
                for k, v in sorted(inp.bundle_sensors.items())
            },
        },
    }


def _observation(
    n: int, o: TargetObservation, records: Mapping[tuple[str, int], DecodedRecord]
) -> dict[str, Any]:
    rec = records.get((o.sensor_id, o.seq))
    if rec is None:
        raise EvidenceError(f"record {o.sensor_id}/{o.seq} of the target is not in the bundle")
    r = rec.observation
    # The target tables are derived copies; the signed record is the truth, and they must agree.
    if (r.observed_ms, r.ip, r.port, r.method, r.content_key) != (
        o.observed_ms,
        o.ip,
        o.port,
        o.method,
        o.content_key,
    ):
        raise EvidenceError(
            f"record {o.sensor_id}/{o.seq}: the target tables disagree with the signed record "
            "(run `peerwatch evidence verify`)"
        )
    return {
        "n": n,
        "record": f"{o.sensor_id}/{o.seq}",
        "sensor": o.sensor_id,
        "seq": o.seq,
        "observed": iso_ms(r.observed_ms),
        "observed_ms": r.observed_ms,
        "clock_offset_ms": r.clock_offset_ms,
        "network": r.network,
        "method": r.method,
        "outcome": r.outcome,
        "evidence": possession_kind(r.method, r.outcome),
        "content_key": r.content_key,
        "ip": r.ip,
        "port": r.port,
        "client": r.client,
        "peer_id": r.peer_id,
        "completion_ppm": r.completion_ppm,
        "completion": completion_text(r.completion_ppm),
        "exchange_sha256": r.exchange_sha256,
        "jurisdiction": o.placement.jurisdiction,
        "flags": sorted(o.placement.flags),
    }


def _placements(observations: Iterable[TargetObservation]) -> list[dict[str, Any]]:
    """One entry per address: where the current databases put it, and its caveats (with the port
    seen there, which decides the carrier-grade NAT caveat)."""
    by_ip: dict[str, tuple[Placement, set[int]]] = {}
    for o in observations:
        place, ports = by_ip.setdefault(o.ip, (o.placement, set()))
        if o.port is not None:
            ports.add(o.port)
    out = []
    for ip, (place, ports) in by_ip.items():
        d = place.as_record()
        d["ip"] = ip
        d["ports"] = sorted(ports)
        d["caveats"] = list(place.caveats(source_port=min(ports) if ports else None))
        out.append(d)
    return out


def _hash_matches(inp: CaseInputs, observations: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Per content key of the target: how it was seen, and every active list entry holding it
    (list, version, source file with its SHA-256, location in it, category, size)."""
    sources = {(info.name, str(src.get("path"))): src for info in inp.lists for src in info.sources}
    keys: dict[str, list[Mapping[str, Any]]] = {}
    for o in observations:
        keys.setdefault(o["content_key"], []).append(o)
    out = []
    for ref, (content_key, seen) in enumerate(keys.items(), 1):
        digest = content_digest(content_key)
        entries = []
        for m in inp.matches.get(content_key, ()):
            src = sources.get((m.list_name, m.source), {})
            entries.append(
                {
                    "list": m.list_name,
                    "list_version": m.list_version,
                    "list_imported": iso_ms(m.imported_ms),
                    "kind_listed": m.kind,
                    "source": m.source,
                    "source_sha256": src.get("sha256"),
                    "source_format": src.get("format"),
                    "location": m.location,
                    "category": m.category,
                    "size": m.size,
                }
            )
        times = [int(o["observed_ms"]) for o in seen]
        best = max(
            (
                o["completion_ppm"]
                for o in seen
                if o["evidence"] == "possession" and o["completion_ppm"] is not None
            ),
            default=None,
        )
        out.append(
            {
                "ref": f"C{ref}",
                "content_key": content_key,
                "hash": None if digest is None else digest.hex,
                "hash_kind": None if digest is None else digest.kind.value,
                "observations": len(seen),
                "possession": sum(o["evidence"] == "possession" for o in seen),
                "claims": sum(o["evidence"] == "claim" for o in seen),
                "first_seen": iso_ms(min(times)),
                "last_seen": iso_ms(max(times)),
                "best_completion_ppm": best,
                "best_completion": completion_text(best),
                "matches": entries,
            }
        )
    return out


CLAIM_CAVEAT = (
    "DHT, tracker and PEX peer lists are claims that a peer has the content, made by other "
    "parties; only an accepted handshake with a bitfield/have-all, or pieces verified from that "
    "single peer, evidence possession."
)
NO_POSSESSION_CAVEAT = (
    "No observation of this target evidences possession: it rests on claims (peer lists) and "
    "negative results only."
)
CLOCK_CAVEAT = (
    "Times are from the sensor's clock (UTC); where the record gives clock_offset_ms, the "
    "sensor's clock differed from its reference clock by that much."
)
GEOIP_CAVEAT = (
    "Locations come from GeoIP databases as of their build dates (see the sources); an address "
    "can move between providers and places after that."
)


def _caveats(
    ex: TargetExplanation,
    targets: Sequence[TargetObservation],
    observations: Sequence[Mapping[str, Any]],
) -> list[str]:
    out: list[str] = []
    if not any(o["evidence"] == "possession" for o in observations):
        out.append(NO_POSSESSION_CAVEAT)
    out.extend(c for c in ex.placement.caveats if c not in out)
    for o in targets:
        for c in o.placement.caveats(source_port=o.port):
            if c not in out:
                out.append(c)
    if any(o["method"] in CLAIM_METHODS or o["evidence"] == "claim" for o in observations):
        out.append(CLAIM_CAVEAT)
    if any(o["port"] is None for o in observations):
        out.append(
            "Some observations have no source port: behind carrier-grade NAT the provider may "
            "not be able to identify a subscriber from them."
        )
    out.append(CLOCK_CAVEAT)
    out.append(GEOIP_CAVEAT)
    return out
