"""The score of a target: integer arithmetic, one component per fact, each shown (docs/leads.md).

The score orders the work; it decides nothing. Every component is a small integer formula over
facts of the target's observations, so that an investigator can recompute it by hand:

    items      100 x distinct watched items with evidence of possession (at most 20)
    severity   150 x the highest severity among those items (0..3, from the list categories)
    volume      40 x bit length of (possessed bytes // 1 MiB)   (possessed bytes: for each item,
                    its best completion x its size on the list)
    days        10 x days from first to last positive observation, both counted (at most 60)
    recency    300 - 10 x whole days since the last positive observation (never below 0)
    seeding    100 x items held complete, i.e. seeded (at most 10)
    networks   100 x (networks with a positive observation - 1)
    claims      10 x watched items only claimed, never evidenced held (at most 20)

A positive observation is one with outcome "possession" or "claim"; refusals, timeouts and other
negative results never add points. Claims (DHT, tracker, PEX lists) never count as possession.
Flags (Tor, VPN, hosting, CGNAT, mobile) lower the *location* confidence of a target and never its
score: the same behaviour behind a VPN is the same behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, case, literal

DAY_MS = 86_400_000
MIB = 1 << 20

#: Severity of a list category (case-insensitive); a watched item whose category is absent or not
#: in this table has `default_severity`. Lists differ; an installation can pass its own table.
DEFAULT_SEVERITY: Mapping[str, int] = {
    "1": 3,
    "a": 3,
    "2": 2,
    "b": 2,
    "3": 1,
    "c": 1,
}


@dataclass(frozen=True, slots=True)
class ScoreConfig:
    item_points: int = 100  # per distinct watched item evidenced held
    item_cap: int = 20  # items counted at most
    severity_points: int = 150  # per level of the highest severity held
    volume_points: int = 40  # per bit of (possessed MiB)
    day_points: int = 10  # per day of activity
    day_cap: int = 60  # days counted at most
    recency_points: int = 300  # for activity today, minus `recency_decay` per day of silence
    recency_decay: int = 10
    seed_points: int = 100  # per item held complete
    seed_cap: int = 10
    network_points: int = 100  # per network beyond the first
    claim_points: int = 10  # per watched item only claimed
    claim_cap: int = 20
    severity: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_SEVERITY))
    default_severity: int = 1  # a listed item with an unknown or missing category

    def severity_of(self, category: str | None) -> int:
        if category is None:
            return self.default_severity
        return self.severity.get(category.strip().lower(), self.default_severity)


@dataclass(frozen=True, slots=True)
class ScoreFacts:
    """What the score is computed from; kept per target by the target store."""

    possessed_items: int  # distinct watched items with a "possession" observation
    max_severity: int  # highest severity among them (0 when none)
    possessed_bytes: int  # sum over them of best completion x listed size (unknown size: 0)
    seeded_items: int  # possessed items at completion 1,000,000 ppm
    claimed_items: int  # watched items with claims but no possession
    networks: int  # networks with a positive observation
    first_ms: int | None  # first and last positive observation (None: none yet)
    last_ms: int | None


@dataclass(frozen=True, slots=True)
class ScoreComponent:
    name: str  # "items", "severity", ...
    value: int  # the fact measured (items, level, bytes, days, ...)
    points: int
    rule: str  # the formula, as printed in `target show` and docs/leads.md


def components(facts: ScoreFacts, as_of_ms: int, config: ScoreConfig) -> tuple[ScoreComponent, ...]:
    """Every component of the score, in a fixed order; the score is the sum of their points."""
    c = config
    items = min(facts.possessed_items, c.item_cap)
    mib = facts.possessed_bytes // MIB
    if facts.first_ms is not None and facts.last_ms is not None:
        days = (facts.last_ms // DAY_MS) - (facts.first_ms // DAY_MS) + 1
        silent = max(0, (as_of_ms // DAY_MS) - (facts.last_ms // DAY_MS))
        recency = max(0, c.recency_points - c.recency_decay * silent)
    else:
        days = silent = recency = 0
    return (
        ScoreComponent(
            "items",
            facts.possessed_items,
            c.item_points * items,
            f"{c.item_points} x distinct watched items held (at most {c.item_cap})",
        ),
        ScoreComponent(
            "severity",
            facts.max_severity,
            c.severity_points * facts.max_severity if facts.possessed_items else 0,
            f"{c.severity_points} x highest severity among items held (0..3)",
        ),
        ScoreComponent(
            "volume",
            facts.possessed_bytes,
            c.volume_points * mib.bit_length(),
            f"{c.volume_points} x bit length of (possessed bytes // 1 MiB)",
        ),
        ScoreComponent(
            "days",
            days,
            c.day_points * min(days, c.day_cap),
            f"{c.day_points} x days from first to last positive observation (at most {c.day_cap})",
        ),
        ScoreComponent(
            "recency",
            silent,
            recency,
            f"{c.recency_points} - {c.recency_decay} x days since the last positive observation "
            "(at least 0)",
        ),
        ScoreComponent(
            "seeding",
            facts.seeded_items,
            c.seed_points * min(facts.seeded_items, c.seed_cap),
            f"{c.seed_points} x items held complete (at most {c.seed_cap})",
        ),
        ScoreComponent(
            "networks",
            facts.networks,
            c.network_points * max(0, facts.networks - 1),
            f"{c.network_points} x (networks - 1)",
        ),
        ScoreComponent(
            "claims",
            facts.claimed_items,
            c.claim_points * min(facts.claimed_items, c.claim_cap),
            f"{c.claim_points} x watched items only claimed, never shown held "
            f"(at most {c.claim_cap})",
        ),
    )


def score(facts: ScoreFacts, as_of_ms: int, config: ScoreConfig) -> int:
    """The sum of the components' points, computed without building them (ranking computes it
    for every target; a test checks it equals the sum of `components`)."""
    c = config
    total = (
        c.item_points * min(facts.possessed_items, c.item_cap)
        + c.volume_points * (facts.possessed_bytes // MIB).bit_length()
        + c.seed_points * min(facts.seeded_items, c.seed_cap)
        + c.network_points * max(0, facts.networks - 1)
        + c.claim_points * min(facts.claimed_items, c.claim_cap)
    )
    if facts.possessed_items:
        total += c.severity_points * facts.max_severity
    if facts.first_ms is not None and facts.last_ms is not None:
        last_day = facts.last_ms // DAY_MS
        total += c.day_points * min(last_day - facts.first_ms // DAY_MS + 1, c.day_cap)
        silent = max(0, as_of_ms // DAY_MS - last_day)
        total += max(0, c.recency_points - c.recency_decay * silent)
    return total


def score_sql(t: Any, as_of_ms: int, config: ScoreConfig) -> ColumnElement[int]:
    """`score` as one SQL expression over the columns of `targets` (`t`), so that the database
    computes and sorts 10^5-10^6 scores. Integer arithmetic only; every operand is non-negative, so
    integer division is the same floor on SQLite and PostgreSQL. A test checks it against `score`
    on random facts."""
    c = config

    def least(x: Any, cap: int) -> ColumnElement[int]:
        return case((x > cap, literal(cap)), else_=x)

    def at_least_0(x: Any) -> ColumnElement[int]:
        return case((x < 0, literal(0)), else_=x)

    last_day = t.positive_last_ms // DAY_MS
    first_day = t.positive_first_ms // DAY_MS
    timed = case(
        (
            t.positive_last_ms.is_(None),
            literal(0),
        ),
        else_=c.day_points * least(last_day - first_day + 1, c.day_cap)
        + at_least_0(
            c.recency_points - c.recency_decay * at_least_0(literal(as_of_ms // DAY_MS) - last_day)
        ),
    )
    expr: ColumnElement[int] = (
        c.item_points * least(t.possessed_items, c.item_cap)
        + case((t.possessed_items > 0, c.severity_points * t.max_severity), else_=literal(0))
        + c.volume_points * t.possessed_mib_bits
        + c.seed_points * least(t.seeded_items, c.seed_cap)
        + c.network_points * at_least_0(t.positive_networks - 1)
        + c.claim_points * least(t.claimed_items, c.claim_cap)
        + timed
    )
    return expr
