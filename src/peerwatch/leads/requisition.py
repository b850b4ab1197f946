"""Requisition lines: what a unit sends an Internet provider to identify a subscriber.

A provider identifies a subscriber from an address, the exact time and, behind carrier-grade NAT
(RFC 6598), the source port. One line per distinct (ip, port, second), UTC to the second in
ISO 8601 with `Z`, with the network's ASN and organisation. Lines evidenced by possession (a
handshake plus bitfield/have-all, or verified pieces: docs/evidence.md) come first; lines from
peer-list claims (DHT, tracker, PEX) follow and say so. An address flagged CGNAT or mobile whose
port is unknown gets a warning on its line: the provider probably cannot answer without it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from peerwatch.enrich.placement import Placement
from peerwatch.evidence.record import CLAIM_METHODS, POSSESSION_METHODS
from peerwatch.leads.workflow import iso_ms

CGNAT_NO_PORT = (
    "carrier-grade NAT or mobile network and no source port: the provider can probably not "
    "identify one subscriber from the address and time alone"
)
NO_NETWORK = "no ASN/organisation known for this address (GeoIP/ASN database not configured?)"


class ObservationLike(Protocol):
    """What a requisition needs of an observation (peerwatch.leads.targets.TargetObservation)."""

    @property
    def sensor_id(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def observed_ms(self) -> int: ...
    @property
    def method(self) -> str: ...
    @property
    def outcome(self) -> str | None: ...
    @property
    def content_key(self) -> str: ...
    @property
    def ip(self) -> str: ...
    @property
    def port(self) -> int | None: ...
    @property
    def placement(self) -> Placement | None: ...


@dataclass(frozen=True, slots=True)
class RequisitionLine:
    ip: str
    port: int | None
    time: str  # UTC, ISO 8601 to the second, e.g. 2026-11-25T20:14:07Z
    asn: int | None
    organisation: str | None
    basis: str  # "possession" or "claim"
    method: str  # the evidence method of the first observation in that second
    content_key: str
    evidence: str  # "SENSOR/SEQ" of that observation in the evidence log
    observations: int  # how many observations fell on this (ip, port, second)
    flags: tuple[str, ...]  # network flags of the address, sorted
    warnings: tuple[str, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "ip": self.ip,
            "port": self.port,
            "time": self.time,
            "asn": self.asn,
            "organisation": self.organisation,
            "basis": self.basis,
            "method": self.method,
            "content_key": self.content_key,
            "evidence": self.evidence,
            "observations": self.observations,
            "flags": list(self.flags),
            "warnings": list(self.warnings),
        }


CSV_COLUMNS = (
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


def basis_of(obs: ObservationLike) -> str | None:
    """`possession`, `claim`, or None for an observation that supports no requisition (a refused
    connection, a handshake without pieces, a failed piece)."""
    if obs.outcome == "possession" or (obs.outcome is None and obs.method in POSSESSION_METHODS):
        return "possession"
    if obs.outcome == "claim" or (obs.outcome is None and obs.method in CLAIM_METHODS):
        return "claim"
    return None


def requisition_lines(observations: Iterable[ObservationLike]) -> list[RequisitionLine]:
    """Lines for one target: possession first, then claims, each in time order."""
    groups: dict[tuple[str, int | None, int], list[ObservationLike]] = {}
    bases: dict[tuple[str, int | None, int], str] = {}
    for obs in observations:
        basis = basis_of(obs)
        if basis is None:
            continue
        key = (obs.ip, obs.port, obs.observed_ms // 1000)
        groups.setdefault(key, []).append(obs)
        # A second with both a claim and a possession is a possession line.
        if bases.get(key) != "possession":
            bases[key] = basis
    lines = [_line(groups[k], bases[k]) for k in groups]
    lines.sort(key=lambda ln: (ln.basis != "possession", ln.time, ln.ip, ln.port or -1))
    return lines


def _line(group: Sequence[ObservationLike], basis: str) -> RequisitionLine:
    ordered = sorted(group, key=lambda o: (basis_of(o) != basis, o.observed_ms, o.sensor_id, o.seq))
    first = ordered[0]
    placement = next((o.placement for o in ordered if o.placement is not None), None)
    flags = tuple(sorted(placement.flags)) if placement is not None else ()
    warnings: list[str] = []
    if first.port is None and {"cgnat", "mobile"} & set(flags):
        warnings.append(CGNAT_NO_PORT)
    if placement is None or placement.asn is None:
        warnings.append(NO_NETWORK)
    return RequisitionLine(
        ip=first.ip,
        port=first.port,
        time=iso_ms(first.observed_ms) or "",
        asn=placement.asn if placement is not None else None,
        organisation=placement.organisation if placement is not None else None,
        basis=basis,
        method=first.method,
        content_key=first.content_key,
        evidence=f"{first.sensor_id}/{first.seq}",
        observations=len(group),
        flags=flags,
        warnings=tuple(warnings),
    )


def lines_csv(
    rows: Iterable[tuple[Sequence[object], RequisitionLine]], prefix: Sequence[str] = ()
) -> str:
    """CSV of requisition lines, each row starting with its `prefix` columns (e.g. target_id)."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow([*prefix, *CSV_COLUMNS])
    for values, line in rows:
        out.writerow([*values, *_csv_values(line)])
    return buf.getvalue()


def _csv_values(line: RequisitionLine) -> list[object]:
    return [
        line.ip,
        "" if line.port is None else line.port,
        line.time,
        "" if line.asn is None else line.asn,
        line.organisation or "",
        line.basis,
        line.method,
        line.content_key,
        line.evidence,
        line.observations,
        " ".join(line.flags),
        " | ".join(line.warnings),
    ]
