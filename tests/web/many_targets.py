"""Many targets, cheaply: rows written straight into `targets`, as benchmarks/bench_leads.py
does, instead of thousands of signed observations through a refresh. The ranked list, its count,
the map and the lead-state filter read only `targets` and `lead_states`, so they see these rows
exactly as they would see refreshed ones.

Scores repeat on purpose (a few score facts, a few days), so that most positions are decided by
the tie-breaks (latest observation, then id): paging must still neither repeat nor skip a row.
"""

from __future__ import annotations

from sqlalchemy import Engine, insert

from peerwatch.leads.targets import TargetStore
from peerwatch.storage.database import writer
from peerwatch.storage.schema import targets
from tests.leads.targets_support import DAY, T0

FIRST_ID = 10_000  # above the ids of the site fixture's real targets

#: unit -> (jurisdiction, name): where the generated targets are routed.
PLACES = {"U75": ("75", "Paris"), "U13": ("13", "Bouches-du-Rhône")}


def add_targets(engine: Engine, n: int) -> dict[str, list[int]]:
    """Write `n` targets: 3 in 5 routed to U75 (75), 1 in 3 to U13 (13), the rest to no unit.
    Returns their ids by unit ("-" for none)."""
    rows = []
    by_unit: dict[str, list[int]] = {}
    for i in range(n):
        tid = FIRST_ID + i
        unit = "U75" if i % 15 < 9 else "U13" if i % 15 < 14 else None
        jur, name = PLACES[unit] if unit else (None, None)
        last = T0 - (i % 4) * DAY
        row = TargetStore.blank_target(tid, T0, None)
        row.update(
            first_ms=last - DAY,
            last_ms=last,
            observations=1 + i % 3,
            positive_first_ms=last - DAY,
            positive_last_ms=last,
            possessed_items=i % 3,
            max_severity=1 if i % 3 else 0,
            claimed_items=i % 2,
            positive_networks=1,
            networks="bittorrent",
            ips=f"127.{1 + i % 200}.{i // 200 % 250}.{1 + i % 250}",
            content_keys=f"btih:{i:040x}",
            place_ip=None,
            country="FR" if unit else None,
            jurisdiction=jur,
            jurisdiction_name=name,
            unit=unit,
            location_confidence="low" if unit else "none",
        )
        rows.append(row)
        by_unit.setdefault(unit or "-", []).append(tid)
    with writer(engine).begin() as conn:
        conn.execute(insert(targets), rows)
    return by_unit
