"""Small stand-ins for the targets store and its records (peerwatch.leads.targets), so that the
workflow, alerts, operations and requisitions are tested on their own. Addresses are loopback or
documentation ranges (RFC 5737, RFC 6598 for CGNAT); content keys are made-up hex."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from sqlalchemy import Engine, insert

from peerwatch.enrich.placement import Placement
from peerwatch.leads.targets import TargetStore
from peerwatch.storage.schema import targets as targets_table

T0 = 1_764_000_000_000  # 2025-11-24T16:00:00Z
DAY = 86_400_000


def placement(
    ip: str,
    *,
    jurisdiction: str | None = "75",
    unit: str | None = "BRI-75",
    asn: int | None = 64500,
    organisation: str | None = "Example Telecom",
    flags: frozenset[str] = frozenset(),
) -> Placement:
    return Placement(
        ip=ip,
        country="FR",
        subdivisions=(),
        city=None,
        latitude=None,
        longitude=None,
        accuracy_km=None,
        asn=asn,
        organisation=organisation,
        flags=flags,
        jurisdiction=jurisdiction,
        jurisdiction_name=None if jurisdiction is None else f"Département {jurisdiction}",
        jurisdiction_method="polygon" if jurisdiction else None,
        unit=unit,
        sources=("test",),
    )


@dataclass(frozen=True)
class Obs:
    sensor_id: str
    seq: int
    observed_ms: int
    ip: str
    port: int | None
    method: str = "bitfield"
    outcome: str | None = "possession"
    content_key: str = "btih:" + "ab" * 20
    network: str = "bittorrent"
    client: str | None = "Test/1.0"
    completion_ppm: int | None = 1_000_000
    placement: Placement | None = None


@dataclass(frozen=True)
class Summary:
    id: int
    label: str
    jurisdiction: str | None
    jurisdiction_name: str | None
    unit: str | None
    score: float
    first_ms: int
    last_ms: int
    ips: tuple[str, ...]
    flags: frozenset[str]
    networks: tuple[str, ...]
    content_keys: tuple[str, ...]


@dataclass
class FakeTargets:
    """Targets by id with their observations; `ranked` and `observations` as the real store."""

    summaries: dict[int, Summary] = field(default_factory=dict)
    obs: dict[int, list[Obs]] = field(default_factory=dict)

    def add(
        self,
        target_id: int,
        observations: list[Obs],
        *,
        score: float = 50.0,
        jurisdiction: str | None = "75",
        unit: str | None = "BRI-75",
        flags: frozenset[str] = frozenset(),
    ) -> Summary:
        s = Summary(
            id=target_id,
            label=f"T{target_id}",
            jurisdiction=jurisdiction,
            jurisdiction_name=None if jurisdiction is None else f"Département {jurisdiction}",
            unit=unit,
            score=score,
            first_ms=min(o.observed_ms for o in observations),
            last_ms=max(o.observed_ms for o in observations),
            ips=tuple(sorted({o.ip for o in observations})),
            flags=flags,
            networks=("bittorrent",),
            content_keys=tuple(sorted({o.content_key for o in observations})),
        )
        self.summaries[target_id] = s
        self.obs[target_id] = list(observations)
        return s

    def rescore(self, target_id: int, score: float) -> None:
        self.summaries[target_id] = replace(self.summaries[target_id], score=score)

    def see(self, target_id: int, o: Obs) -> None:
        self.obs[target_id].append(o)
        s = self.summaries[target_id]
        self.summaries[target_id] = replace(s, last_ms=max(s.last_ms, o.observed_ms))

    def ranked(
        self,
        jurisdiction: str | None = None,
        unit: str | None = None,
        units: object = None,
    ) -> list[Summary]:
        out = [
            s
            for s in self.summaries.values()
            if (jurisdiction is None or s.jurisdiction == jurisdiction)
            and (unit is None or s.unit == unit)
        ]
        return sorted(out, key=lambda s: (-s.score, s.id))

    def get(self, target_id: int) -> Summary | None:
        return self.summaries.get(target_id)

    def observations(self, target_id: int, *, since_ms: int | None = None) -> list[Obs]:
        return [
            o for o in self.obs.get(target_id, []) if since_ms is None or o.observed_ms >= since_ms
        ]


def seed_targets(engine: Engine, ids: Iterable[int]) -> None:
    """Rows in `targets` for the ids a test uses (leads refer to targets by foreign key)."""
    # The store's own blank row, so these stay in step with the targets table's columns.
    rows = [{**TargetStore.blank_target(i, T0, None), "first_ms": T0, "last_ms": T0} for i in ids]
    with engine.begin() as conn:
        conn.execute(insert(targets_table), rows)
