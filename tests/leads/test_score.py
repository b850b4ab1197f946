"""The score formula (docs/leads.md): each component by hand, caps, and what never counts."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from sqlalchemy import Engine, insert

from peerwatch.enrich.placement import Enricher, Placement
from peerwatch.leads.score import DAY_MS, MIB, ScoreConfig, ScoreFacts, components, score
from peerwatch.leads.targets import TargetStore, location_confidence, possession_kind
from peerwatch.storage.schema import targets
from peerwatch.watchlist.store import WatchlistStore

CFG = ScoreConfig()
T = 1_764_000_000_000 - 1_764_000_000_000 % DAY_MS  # a UTC midnight


def facts(**kw: int | None) -> ScoreFacts:
    base: dict[str, int | None] = {
        "possessed_items": 0,
        "max_severity": 0,
        "possessed_bytes": 0,
        "seeded_items": 0,
        "claimed_items": 0,
        "networks": 0,
        "first_ms": None,
        "last_ms": None,
    }
    base.update(kw)
    return ScoreFacts(**base)  # type: ignore[arg-type]


def points(f: ScoreFacts, as_of: int = T) -> dict[str, int]:
    return {c.name: c.points for c in components(f, as_of, CFG)}


def test_every_component_by_hand() -> None:
    f = facts(
        possessed_items=3,
        max_severity=2,
        possessed_bytes=5 * 1024 * MIB + 123,  # 5120 MiB: bit length 13
        seeded_items=2,
        claimed_items=4,
        networks=2,
        first_ms=T - 9 * DAY_MS + 5,
        last_ms=T - 2 * DAY_MS + 7,
    )
    assert points(f, T + 3_600_000) == {
        "items": 300,
        "severity": 300,
        "volume": 520,
        "days": 80,  # 8 calendar days, both ends counted
        "recency": 280,  # two days of silence
        "seeding": 200,
        "networks": 100,
        "claims": 40,
    }
    assert score(f, T + 3_600_000, CFG) == 1820
    assert [c.name for c in components(f, T, CFG)] == list(points(f))


def test_caps_and_floors() -> None:
    f = facts(
        possessed_items=25,
        max_severity=3,
        seeded_items=15,
        claimed_items=30,
        networks=1,
        first_ms=T - 100 * DAY_MS,
        last_ms=T - 45 * DAY_MS,
    )
    p = points(f)
    assert (p["items"], p["seeding"], p["claims"], p["days"]) == (2000, 1000, 200, 560)
    assert p["recency"] == 0  # 45 days silent: floored at 0, never negative
    assert points(dataclasses.replace(f, first_ms=T - 200 * DAY_MS))["days"] == 600


def test_volume_is_logarithmic_in_whole_mib() -> None:
    vol = [
        points(facts(possessed_items=1, possessed_bytes=b))["volume"]
        for b in (0, MIB - 1, MIB, 2 * MIB - 1, 2 * MIB, 1024 * MIB, 1 << 40)
    ]
    assert vol == [0, 0, 40, 40, 80, 440, 840]


def test_claims_and_severity_without_possession() -> None:
    # Severity is that of items *held*: claims alone never bring it, whatever the facts say.
    only_claims = facts(claimed_items=2, max_severity=3, first_ms=T, last_ms=T)
    assert {k: v for k, v in points(only_claims).items() if v} == {
        "claims": 20,
        "days": 10,
        "recency": 300,
    }
    assert score(facts(), T, CFG) == 0  # nothing positive at all: nothing


def test_more_evidence_never_lowers_the_score() -> None:
    base = facts(possessed_items=1, max_severity=1, possessed_bytes=MIB, first_ms=T, last_ms=T)
    for name, delta in itertools.product(
        ("possessed_items", "max_severity", "possessed_bytes", "seeded_items", "networks"),
        (1, 7, 1000),
    ):
        more = dataclasses.replace(base, **{name: getattr(base, name) + delta})
        assert score(more, T, CFG) >= score(base, T, CFG), name


@pytest.mark.parametrize(
    ("category", "severity"),
    [("1", 3), ("A", 3), (" b ", 2), ("2", 2), ("3", 1), ("c", 1), (None, 1), ("other", 1)],
)
def test_severity_of_categories(category: str | None, severity: int) -> None:
    assert CFG.severity_of(category) == severity


def test_severity_table_is_configurable() -> None:
    cfg = ScoreConfig(severity={"x": 3}, default_severity=0)
    assert (cfg.severity_of("X"), cfg.severity_of("1"), cfg.severity_of(None)) == (3, 0, 0)


@pytest.mark.parametrize(
    ("method", "outcome", "kind"),
    [
        ("bitfield", "possession", "possession"),
        ("piece-verified", "possession", "possession"),
        ("pex", "possession", "claim"),  # a peer list is a claim, whatever it says
        ("dht-get-peers", "claim", "claim"),
        ("connect", "refused", "negative"),
        ("connect", "unreachable", "negative"),
        ("handshake", "no-pieces", "negative"),
        ("single-source-download", None, "negative"),
    ],
)
def test_possession_kind(method: str, outcome: str | None, kind: str) -> None:
    assert possession_kind(method, outcome) == kind


def _place(flags: frozenset[str], jurisdiction: str | None, conf: str | None) -> Placement:
    return Placement(
        ip="127.0.0.1",
        country="FR",
        subdivisions=(),
        city=None,
        latitude=None,
        longitude=None,
        accuracy_km=None,
        asn=None,
        organisation=None,
        flags=flags,
        jurisdiction=jurisdiction,
        jurisdiction_name=None,
        jurisdiction_method=None if jurisdiction is None else "polygon",
        unit=None,
        sources=(),
        jurisdiction_confidence=conf,
    )


def test_flags_lower_location_confidence_only() -> None:
    assert location_confidence(None) == "none"
    assert location_confidence(_place(frozenset(), None, None)) == "none"
    assert location_confidence(_place(frozenset(), "75", "certain")) == "high"
    assert location_confidence(_place(frozenset(), "75", "uncertain")) == "medium"
    assert location_confidence(_place(frozenset({"cgnat"}), "75", "certain")) == "medium"
    assert location_confidence(_place(frozenset({"vpn", "mobile"}), "75", "certain")) == "low"
    assert location_confidence(_place(frozenset({"tor"}), "75", "certain")) == "low"


def test_fast_score_equals_the_sum_of_components() -> None:
    import random

    rng = random.Random(7)
    for _ in range(2000):
        first = T + rng.randrange(-90, 1) * DAY_MS + rng.randrange(DAY_MS)
        last = first + rng.randrange(0, 90 * DAY_MS)
        positive = rng.random() < 0.9
        f = facts(
            possessed_items=rng.randrange(0, 30),
            max_severity=rng.randrange(0, 4),
            possessed_bytes=rng.randrange(0, 1 << 42),
            seeded_items=rng.randrange(0, 15),
            claimed_items=rng.randrange(0, 30),
            networks=rng.randrange(0, 4),
            first_ms=first if positive else None,
            last_ms=last if positive else None,
        )
        as_of = last + rng.randrange(0, 60 * DAY_MS)
        assert score(f, as_of, CFG) == sum(c.points for c in components(f, as_of, CFG))


def test_sql_score_equals_python_score(engine: Engine) -> None:
    """`ranked` lets the database compute the score (score_sql): the same numbers as `score`."""
    import random

    rng = random.Random(11)
    rows = []
    expected: dict[int, int] = {}
    as_of = T + 5 * DAY_MS + 123
    for i in range(1, 301):
        positive = rng.random() < 0.9
        first = T - rng.randrange(0, 90 * DAY_MS)
        last = min(as_of, first + rng.randrange(0, 90 * DAY_MS))
        f = facts(
            possessed_items=rng.randrange(0, 30),
            max_severity=rng.randrange(0, 4),
            possessed_bytes=rng.randrange(0, 1 << 42),
            seeded_items=rng.randrange(0, 15),
            claimed_items=rng.randrange(0, 30),
            networks=rng.randrange(0, 4),
            first_ms=first if positive else None,
            last_ms=last if positive else None,
        )
        expected[i] = score(f, as_of, CFG)
        row = TargetStore.blank_target(i, T, None)
        row.update(
            observations=1,
            first_ms=first,
            last_ms=i,  # distinct, so the order is fully determined by score then last_ms
            possessed_items=f.possessed_items,
            max_severity=f.max_severity,
            possessed_bytes=f.possessed_bytes,
            possessed_mib_bits=(f.possessed_bytes // MIB).bit_length(),
            seeded_items=f.seeded_items,
            claimed_items=f.claimed_items,
            positive_networks=f.networks,
            positive_first_ms=f.first_ms,
            positive_last_ms=f.last_ms,
        )
        rows.append(row)
    with engine.begin() as conn:
        conn.execute(insert(targets), rows)
    store = TargetStore(engine, Enricher(), WatchlistStore(engine))
    ranked = store.ranked(as_of_ms=as_of)
    assert {t.id: t.score for t in ranked} == expected
    assert [t.id for t in ranked] == sorted(expected, key=lambda i: (-expected[i], -i))
