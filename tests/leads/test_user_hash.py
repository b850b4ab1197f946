"""The `user-hash` identity rule (issue 7): an eD2k client keeps its user hash across addresses and
ports, so the hash links its endpoints into one target, explained like every other link; two
hashes never share a target, whatever the address."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from peerwatch.evidence.record import Observation
from peerwatch.leads.identity import peer_key
from peerwatch.sensors.ed2k import NO_ADDRESS
from tests.leads.targets_support import DAY, T0, enricher, log, store

GEO = {
    "127.0.1.0/24": ("75", 64500),
    "127.0.4.0/24": ("69", 64502),  # another provider: address-change would not link across it
}
H1 = "0123456789ab0e00112233445566ff6f"
H2 = "fedcba9876540e00aabbccddeeff006f"
FILE = "ed2k:" + "31" * 16


def ed2k(
    at: int,
    ip: str,
    port: int,
    user_hash: str | None,
    *,
    client: str | None = "aMule 2.3.3",
    method: str = "file-status",
    outcome: str = "possession",
) -> Observation:
    return Observation(
        observed_ms=at,
        network="ed2k",
        method=method,
        content_key=FILE,
        ip=ip,
        port=port,
        client=client if user_hash is not None else None,
        peer_id=user_hash,
        completion_ppm=1_000_000 if outcome == "possession" else None,
        outcome=outcome,
        extra={"tcp_port": port},
    )


def test_peer_key_only_for_networks_with_stable_ids() -> None:
    assert peer_key("ed2k", H1.upper()) == H1
    assert peer_key("ed2k", "zz" * 16) is None
    assert peer_key("ed2k", H1[:30]) is None
    assert peer_key("ed2k", None) is None
    # A BitTorrent peer id is new for every session (BEP 20): never an identity.
    assert peer_key("bittorrent", H1) is None


def test_one_user_hash_across_address_port_and_provider_is_one_target(
    engine: Engine, tmp_path: Path
) -> None:
    ev = log(engine, tmp_path / "keys")
    ev.append(
        [
            ed2k(T0, "127.0.1.10", 4662, H1),
            # Next day: another provider, another port, a newer client: only the hash links it.
            ed2k(T0 + DAY, "127.0.4.20", 5555, H1, client="aMule 2.3.4"),
        ]
    )
    st = store(engine, enricher(GEO))
    stats = st.refresh()
    assert (stats.new_targets, stats.links) == (1, 2)
    (target,) = st.ranked(as_of_ms=T0 + DAY)
    assert target.ips == ("127.0.1.10", "127.0.4.20")
    links = st.explain(target.id).links
    assert [x.kind for x in links] == ["origin", "user-hash"]
    assert f"ed2k user hash {H1}" in links[1].reason
    assert "127.0.1.10 port 4662" in links[1].reason and "127.0.4.20 port 5555" in links[1].reason


def test_two_user_hashes_at_one_endpoint_are_two_targets(engine: Engine, tmp_path: Path) -> None:
    ev = log(engine, tmp_path / "keys")
    ev.append(
        [
            ed2k(T0, "127.0.1.10", 4662, H1),
            # The same address and port an hour later, another client: the address was
            # reassigned (or two users share it); the endpoint rule must not merge them.
            ed2k(T0 + 3_600_000, "127.0.1.10", 4662, H2),
            ed2k(T0 + 7_200_000, "127.0.1.10", 4662, H1),
        ]
    )
    st = store(engine, enricher(GEO))
    st.refresh()
    ranked = st.ranked(as_of_ms=T0 + DAY)
    assert len(ranked) == 2
    seen = sorted(
        (len(st.observations(t.id)), {o.client for o in st.observations(t.id)}) for t in ranked
    )
    # H1's two sightings together, H2's alone
    assert [n for n, _ in seen] == [1, 2]


def test_a_proven_hash_joins_its_target_not_the_anonymous_endpoint(
    engine: Engine, tmp_path: Path
) -> None:
    ev = log(engine, tmp_path / "keys")
    ev.append(
        [
            ed2k(T0, "127.0.1.10", 4662, H1),
            # A connect failure at a new endpoint: no HELLO, no hash, a target of its own.
            ed2k(
                T0 + DAY,
                "127.0.4.20",
                5555,
                None,
                method="connect",
                outcome="timeout",
            ),
            # Then the same endpoint answers with H1: it belongs with H1's target.
            ed2k(T0 + DAY + 60_000, "127.0.4.20", 5555, H1),
        ]
    )
    st = store(engine, enricher(GEO))
    st.refresh()
    ranked = {len(st.observations(t.id)): t for t in st.ranked(as_of_ms=T0 + DAY)}
    assert sorted(ranked) == [1, 2]
    h1 = ranked[2]
    assert h1.ips == ("127.0.1.10", "127.0.4.20")
    assert [x.kind for x in st.explain(h1.id).links] == ["origin", "user-hash"]


def test_a_hash_held_by_two_targets_after_a_split_links_to_neither(
    engine: Engine, tmp_path: Path
) -> None:
    ev = log(engine, tmp_path / "keys")
    ev.append([ed2k(T0, "127.0.1.10", 4662, H1), ed2k(T0 + DAY, "127.0.4.20", 5555, H1)])
    st = store(engine, enricher(GEO))
    st.refresh()
    (target,) = st.ranked(as_of_ms=T0 + DAY)
    # The investigator says the two are different people (a copied preferences file).
    st.split(target.id, ip="127.0.4.20", actor="test")
    # (another port too, so that no weaker rule, such as address-change, applies either)
    ev.append([ed2k(T0 + 2 * DAY, "127.0.1.77", 7777, H1)])
    st.refresh()
    ranked = st.ranked(as_of_ms=T0 + 2 * DAY)
    assert len(ranked) == 3
    newest = max(ranked, key=lambda t: t.last_ms)
    assert [x.kind for x in st.explain(newest.id).links] == ["origin"]


def test_server_claims_join_by_hash_and_low_ids_make_no_target(
    engine: Engine, tmp_path: Path
) -> None:
    def server_claim(at: int, ip: str, port: int | None, user_hash: str) -> Observation:
        return Observation(
            observed_ms=at,
            network="ed2k",
            method="server-sources",
            content_key=FILE,
            ip=ip,
            port=port,
            peer_id=user_hash,
            outcome="claim",
            extra={"server": "127.0.16.250:4661"},
        )

    ev = log(engine, tmp_path / "keys")
    ev.append(
        [
            # The server lists H1 at a high id, and a low-id client (no address: 0.0.0.0).
            server_claim(T0, "127.0.1.10", 4662, H1),
            server_claim(T0, NO_ADDRESS, None, H2),
            # The probe of the listed address proves H1 there.
            ed2k(T0 + 1_000, "127.0.1.10", 4662, H1),
        ]
    )
    st = store(engine, enricher(GEO))
    stats = st.refresh()
    assert stats.records == 3
    (target,) = st.ranked(as_of_ms=T0 + DAY)
    assert target.ips == ("127.0.1.10",)
    assert [o.method for o in st.observations(target.id)] == ["server-sources", "file-status"]
    assert st.pending() == 0  # the low-id claim is consumed, not left pending
