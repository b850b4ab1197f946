"""Targets on SQLite and PostgreSQL: identity rules, stable ids, split, routing and ranking."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, func, select

from peerwatch.errors import InputError
from peerwatch.storage.schema import target_observations
from peerwatch.watchlist.store import WatchlistStore
from tests.leads.targets_support import (
    DAY,
    SEED,
    T0,
    claim,
    enricher,
    key,
    log,
    probe,
    store,
)

GEO = {
    "127.0.1.0/24": ("75", 64500),  # Paris
    "127.0.2.0/24": ("13", 64500),  # Bouches-du-Rhône, same provider
    "127.0.3.0/24": ("971", 64501),  # Guadeloupe (overseas)
    "127.0.4.0/24": ("69", 64502),  # Rhône, another provider
    "2001:db8::/32": ("33", 64503),  # Gironde, IPv6
}


def watch(engine: Engine, tmp_path: Path, rows: list[tuple[int, str, int]]) -> None:
    """Import a benign list: (content number, category, size)."""
    path = tmp_path / "list.csv"
    lines = ["btih,category,size"] + [f"{key(n)[5:]},{c},{s}" for n, c, s in rows]
    path.write_text("\n".join(lines) + "\n")
    WatchlistStore(engine, clock_ms=lambda: T0).import_files([path], list_name="cases")


def test_address_change_with_stable_identity_is_one_target(engine: Engine, tmp_path: Path) -> None:
    ev = log(engine, tmp_path / "keys")
    ev.append(
        [
            claim(T0, "127.0.1.10", 51413),
            probe(T0 + 1_000, "127.0.1.10", 51413, "qBittorrent/4.6.0", peer_id="aa" * 20),
            # The provider gave a new address the next day; new session, new peer id.
            probe(T0 + DAY, "127.0.2.20", 51413, "qBittorrent/4.6.0", peer_id="bb" * 20),
            claim(T0 + DAY + 5, "127.0.2.20", 51413, content=2),
        ]
    )
    st = store(engine, enricher(GEO))
    stats = st.refresh()
    assert (stats.records, stats.new_targets, stats.links) == (4, 1, 2)
    (target,) = st.ranked(as_of_ms=T0 + DAY)
    assert target.ips == ("127.0.1.10", "127.0.2.20")
    # Routed by the latest address: the peer now lives in the 13.
    assert (target.jurisdiction, target.unit) == ("13", "U13")
    links = st.explain(target.id).links
    assert [x.kind for x in links] == ["origin", "address-change"]
    assert "moved from 127.0.1.10" in links[1].reason and "same ASN 64500" in links[1].reason
    assert [x.observations for x in links] == [2, 2]


def test_two_peers_behind_one_address_stay_two_targets(engine: Engine, tmp_path: Path) -> None:
    ev = log(engine, tmp_path / "keys")
    # The sweep's order: claims for both ports first, then the probes.
    ev.append(
        [
            claim(T0, "127.0.1.30", 6881),
            claim(T0, "127.0.1.30", 51413),
            probe(T0 + 10, "127.0.1.30", 6881, "Transmission/4.0.5"),
            probe(T0 + 20, "127.0.1.30", 51413, "qBittorrent/4.6.0"),
            probe(T0 + DAY, "127.0.1.30", 6881, "Transmission/4.0.5", content=2),
        ]
    )
    st = store(engine, enricher(GEO))
    assert st.refresh().new_targets == 2
    targets = sorted(st.ranked(as_of_ms=T0 + DAY), key=lambda t: t.id)
    assert [t.ips for t in targets] == [("127.0.1.30",), ("127.0.1.30",)]
    ports = [{o.port for o in st.observations(t.id)} for t in targets]
    clients = [{o.client for o in st.observations(t.id)} - {None} for t in targets]
    assert ports == [{6881}, {51413}]
    assert clients == [{"Transmission/4.0.5"}, {"qBittorrent/4.6.0"}]
    assert len(st.observations(targets[0].id)) == 3


def test_same_client_and_port_on_two_live_addresses_is_not_a_move(
    engine: Engine, tmp_path: Path
) -> None:
    """A default port and a common client are not an identity when two targets share them."""
    ev = log(engine, tmp_path / "keys")
    ev.append(
        [
            probe(T0, "127.0.1.40", 6881, "libtorrent/2.0.11"),
            probe(T0 + 1, "127.0.2.40", 6881, "libtorrent/2.0.11"),
            probe(T0 + DAY, "127.0.2.41", 6881, "libtorrent/2.0.11"),
            # Another provider: never linked by an address change.
            probe(T0 + DAY, "127.0.4.40", 7777, "Deluge/2.1.1"),
        ]
    )
    pre = log(engine, tmp_path / "keys", "s0")
    pre.append([probe(T0 - DAY, "127.0.1.41", 7777, "Deluge/2.1.1")])
    st = store(engine, enricher(GEO))
    assert st.refresh().new_targets == 5


def test_ipv6_privacy_addresses_in_one_slash64_are_one_target(
    engine: Engine, tmp_path: Path
) -> None:
    ev = log(engine, tmp_path / "keys")
    ev.append(
        [
            probe(T0, "2001:db8:1:2::10", 7000, "qBittorrent/4.6.0"),
            probe(T0 + DAY, "2001:db8:1:2:aaaa::99", 7000, "qBittorrent/4.6.0"),
            probe(T0 + DAY, "2001:db8:1:3::10", 7001, "Deluge/2.1.1"),
        ]
    )
    st = store(engine, enricher(GEO))
    assert st.refresh().new_targets == 2
    first = min(st.ranked(as_of_ms=T0 + DAY), key=lambda t: t.id)
    assert first.ips == ("2001:db8:1:2::10", "2001:db8:1:2:aaaa::99")
    assert first.jurisdiction == "33"
    (_, link) = st.explain(first.id).links
    assert link.kind == "ipv6-prefix" and "2001:db8:1:2::/64" in link.reason


def test_refresh_is_incremental_idempotent_and_ids_are_stable(
    engine: Engine, tmp_path: Path
) -> None:
    ev = log(engine, tmp_path / "keys")
    ev.append([probe(T0, "127.0.1.50", 6881, "A/1"), probe(T0, "127.0.3.50", 6881, "B/1")])
    st = store(engine, enricher(GEO))
    st.refresh()
    before = {t.ips: t.id for t in st.ranked()}
    assert st.refresh().records == 0 and st.pending() == 0
    ev.append([probe(T0 + 60_000, "127.0.3.50", 6881, "B/1"), claim(T0, "127.0.4.9", 1)])
    assert st.pending() == 2
    stats = st.refresh()
    assert (stats.records, stats.new_targets, stats.touched_targets) == (2, 1, 2)
    after = {t.ips: t.id for t in st.ranked()}
    assert {k: after[k] for k in before} == before
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(target_observations)).scalar() == 4


def test_split_moves_an_address_and_keeps_the_original_id(engine: Engine, tmp_path: Path) -> None:
    ev = log(engine, tmp_path / "keys")
    ev.append(
        [
            probe(T0, "127.0.1.60", 51413, "qBittorrent/4.6.0"),
            probe(T0 + DAY, "127.0.2.60", 51413, "qBittorrent/4.6.0"),
        ]
    )
    st = store(engine, enricher(GEO))
    st.refresh()
    (target,) = st.ranked()
    with pytest.raises(InputError, match=r"has no address 127\.0\.9\.9"):
        st.split(target.id, ip="127.0.9.9")
    new_id = st.split(target.id, ip="127.0.1.60")
    with pytest.raises(InputError, match="nothing would remain"):
        st.split(target.id, ip="127.0.2.60")
    assert new_id == max(t.id for t in st.ranked()) == target.id + 1
    assert st.get(target.id).ips == ("127.0.2.60",)
    assert st.get(new_id).ips == ("127.0.1.60",)
    assert st.get(new_id).jurisdiction == "75" and st.get(target.id).jurisdiction == "13"
    (moved,) = st.explain(new_id).links
    assert moved.kind == "split" and f"split from {target.label}" in moved.reason
    # New observations at the split-off endpoint follow it to its new target.
    ev.append([probe(T0 + DAY + 1, "127.0.1.60", 51413, "qBittorrent/4.6.0")])
    st.refresh()
    assert len(st.observations(new_id)) == 2 and len(st.observations(target.id)) == 1


def test_split_by_link_and_unknown_target(engine: Engine, tmp_path: Path) -> None:
    ev = log(engine, tmp_path / "keys")
    ev.append(
        [
            probe(T0, "127.0.1.70", 6881, "A/1"),
            probe(T0 + 1, "127.0.1.70", 6999, "A/1"),  # port change, same client
        ]
    )
    st = store(engine, enricher(GEO))
    st.refresh()
    (target,) = st.ranked()
    origin, port_change = st.explain(target.id).links
    assert (origin.kind, port_change.kind) == ("origin", "port-change")
    new_id = st.split(target.id, link_id=port_change.id, actor="inv. Martin")
    assert [o.port for o in st.observations(new_id)] == [6999]
    assert [o.port for o in st.observations(target.id)] == [6881]
    assert "by inv. Martin" in st.explain(new_id).links[0].reason
    with pytest.raises(InputError, match="no target T-000099"):
        st.get(99)
    with pytest.raises(InputError, match="exactly one"):
        st.split(target.id)


def test_scores_count_possession_not_claims_or_refusals(engine: Engine, tmp_path: Path) -> None:
    watch(engine, tmp_path, [(1, "1", 4 << 30), (2, "2", 1 << 20), (3, "3", 1 << 20)])
    ev = log(engine, tmp_path / "keys")
    ev.append(
        [
            # Holder: item 1 complete (4 GiB), item 2 half; seen on two days.
            probe(T0, "127.0.1.80", 6881, "A/1", content=1),
            probe(T0 + DAY, "127.0.1.80", 6881, "A/1", content=2, ppm=500_000),
            # Claimed only: three items, never proven; a claim method never counts as possession
            # even if a record says "possession".
            claim(T0, "127.0.3.80", 6881, content=1),
            claim(T0, "127.0.3.80", 6881, content=2),
            probe(T0, "127.0.3.80", 6881, None, content=3, method="pex"),
            # Refused: a negative result never raises a score.
            probe(T0, "127.0.4.80", 6881, None, outcome="refused", method="connect"),
            # Not on any list.
            probe(T0, "127.0.2.80", 6881, "B/1", content=9),
        ]
    )
    st = store(engine, enricher(GEO))
    st.refresh()
    as_of = T0 + DAY
    by_ip = {t.ips[0]: t for t in st.ranked(as_of_ms=as_of)}
    holder = st.explain(by_ip["127.0.1.80"].id, as_of_ms=as_of)
    points = {c.name: c.points for c in holder.components}
    # items 2 x 100; severity 3 x 150 (category "1"); volume: 4 GiB + 512 KiB held, 4096 MiB,
    # bit length 13 x 40; days 2 x 10; recency 300 (seen on the as-of day); seeding 1 x 100.
    assert points == {
        "items": 200,
        "severity": 450,
        "volume": 520,
        "days": 20,
        "recency": 300,
        "seeding": 100,
        "networks": 0,
        "claims": 0,
    }
    assert holder.summary.score == 1590 == sum(points.values())
    claimed = st.explain(by_ip["127.0.3.80"].id, as_of_ms=as_of)
    cpoints = {c.name: c.points for c in claimed.components if c.points}
    assert cpoints == {"claims": 30, "days": 10, "recency": 290}
    assert by_ip["127.0.4.80"].score == 0
    assert by_ip["127.0.2.80"].score == 0
    assert [t.ips[0] for t in st.ranked(as_of_ms=as_of)][:2] == ["127.0.1.80", "127.0.3.80"]


def test_a_list_imported_later_rescores_at_the_next_refresh(engine: Engine, tmp_path: Path) -> None:
    ev = log(engine, tmp_path / "keys")
    ev.append([probe(T0, "127.0.1.90", 6881, "A/1")])
    st = store(engine, enricher(GEO))
    st.refresh()
    assert st.ranked(as_of_ms=T0)[0].score == 0
    watch(engine, tmp_path, [(1, "b", 1 << 30)])
    st.refresh()
    # 100 item + 2 x 150 severity ("b") + 11 x 40 volume (1024 MiB) + 10 day + 300 + 100 seed
    assert st.ranked(as_of_ms=T0)[0].score == 100 + 300 + 440 + 10 + 300 + 100


def test_ranking_is_deterministic_and_filters_route(engine: Engine, tmp_path: Path) -> None:
    watch(engine, tmp_path, [(1, "1", 1 << 20)])
    ev = log(engine, tmp_path / "keys")
    # Same facts, same last time: the tie is broken by id, whatever the insertion order.
    ev.append(
        [
            probe(T0, "127.0.3.1", 6881, "A/1"),
            probe(T0, "127.0.1.1", 6881, "A/1"),
            probe(T0, "127.0.1.2", 6882, "B/1"),
            probe(T0 - DAY, "127.0.4.1", 6881, "C/1"),
        ]
    )
    st = store(engine, enricher(GEO))
    st.refresh()
    ranked = st.ranked(as_of_ms=T0)
    assert ranked == st.ranked(as_of_ms=T0)
    tied = [t for t in ranked if t.last_ms == T0]
    assert len({t.score for t in tied}) == 1
    assert [t.id for t in tied] == sorted(t.id for t in tied)
    assert ranked[-1].ips == ("127.0.4.1",)  # one day older: 10 fewer recency points
    assert ranked[-1].score == ranked[0].score - 10
    assert {t.ips[0] for t in st.ranked(jurisdiction="75")} == {"127.0.1.1", "127.0.1.2"}
    assert [t.ips[0] for t in st.ranked(unit="U971")] == ["127.0.3.1"]
    assert len(st.ranked(units=["U971", "U69"])) == 2
    assert st.ranked(jurisdiction="2A") == []


def test_placement_is_recorded_with_its_sources(engine: Engine, tmp_path: Path) -> None:
    ev = log(engine, tmp_path / "keys")
    ev.append([probe(T0, "127.0.3.7", 6881, "A/1"), probe(T0, "100.64.0.7", 6881, "B/1")])
    st = store(engine, enricher(GEO))
    st.refresh()
    by_ip = {t.ips[0]: t for t in st.ranked()}
    placed = st.explain(by_ip["127.0.3.7"].id).placement
    assert (placed.ip, placed.jurisdiction, placed.unit) == ("127.0.3.7", "971", "U971")
    assert placed.sources == ("test map v1",) and placed.placed_ms == T0
    assert placed.observed_ms == T0 and placed.confidence == "medium"
    cgnat = st.explain(by_ip["100.64.0.7"].id)
    assert cgnat.summary.flags == frozenset({"cgnat"})
    assert cgnat.placement.confidence == "none" and cgnat.summary.jurisdiction is None
    assert any("Carrier-grade NAT" in c for c in cgnat.placement.caveats)


def test_observations_since_and_placement(engine: Engine, tmp_path: Path) -> None:
    ev = log(engine, tmp_path / "keys")
    ev.append([probe(T0, "127.0.1.5", 6881, "A/1"), probe(T0 + DAY, "127.0.1.5", 6881, "A/1")])
    st = store(engine, enricher(GEO))
    st.refresh()
    (target,) = st.ranked()
    obs = st.observations(target.id, since_ms=T0 + 1)
    assert [(o.observed_ms, o.seq, o.completion_ppm) for o in obs] == [(T0 + DAY, 2, SEED)]
    assert obs[0].placement.jurisdiction == "75"


def test_flags_never_change_the_score(engine: Engine, tmp_path: Path) -> None:
    watch(engine, tmp_path, [(1, "1", 1 << 30)])
    ev = log(engine, tmp_path / "keys")
    ev.append([probe(T0, "127.0.1.9", 6881, "A/1"), probe(T0, "100.64.0.9", 6881, "A/1")])
    st = store(engine, enricher(GEO))
    st.refresh()
    plain, cgnat = sorted(st.ranked(as_of_ms=T0), key=lambda t: t.flags)
    assert (plain.flags, cgnat.flags) == (frozenset(), frozenset({"cgnat"}))
    assert plain.score == cgnat.score > 0
    assert st.explain(plain.id).placement.confidence == "medium"  # subdivision: uncertain
    assert st.explain(cgnat.id).placement.confidence == "none"  # placed nowhere


def test_rebuild_after_observations_are_deleted(engine: Engine, tmp_path: Path) -> None:
    """What retention relies on: deleting assigned observations, then rebuilding those targets."""
    watch(engine, tmp_path, [(1, "1", 1 << 30), (2, "2", 1 << 30)])
    ev = log(engine, tmp_path / "keys")
    ev.append(
        [
            probe(T0, "127.0.1.11", 51413, "A/1", content=1),
            probe(T0 + DAY, "127.0.2.11", 51413, "A/1", content=2),
            probe(T0, "127.0.4.11", 6881, "B/1", content=1),
        ]
    )
    st = store(engine, enricher(GEO))
    st.refresh()
    mover, other = sorted(st.ranked(as_of_ms=T0 + DAY), key=lambda t: t.id)
    assert mover.ips == ("127.0.1.11", "127.0.2.11") and mover.jurisdiction == "13"
    o = target_observations.c
    with engine.begin() as conn:
        conn.execute(delete(target_observations).where(o.seq.in_([2, 3])))
        st.rebuild_targets(conn, [mover.id, other.id])
    (left,) = st.ranked(as_of_ms=T0 + DAY)
    assert left.id == mover.id and left.ips == ("127.0.1.11",)
    assert left.jurisdiction == "75" and left.content_keys == (key(1),)
    assert [x.observations for x in st.links(left.id)] == [1]
    with pytest.raises(InputError, match="no target"):
        st.get(other.id)
