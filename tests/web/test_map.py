"""The map: open leads per jurisdiction counted within the reader's scope (never another unit's),
grey and unnumbered outside it; points when no jurisdiction map is configured."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from peerwatch.enrich.placement import Placement
from peerwatch.web.map import OUT_OF_SCOPE, breaks_for, colour_of
from tests.shared_data import require_boundaries
from tests.web.conftest import Site


def _configure(site: Site, tmp_path: Path) -> None:
    """The shared départements (101) as the active map; U75 covers 75, U13 covers 13."""
    site.app.jurisdictions.import_geojson(
        require_boundaries(), code_property="code", name_property="nom", country="FR"
    )
    units = tmp_path / "units.csv"
    units.write_text("unit,name,jurisdictions\nU75,Paris,75\nU13,Sud,13\n", encoding="utf-8")
    site.app.jurisdictions.import_units(units)


def _by_code(answer: dict[str, object]) -> dict[str, dict[str, object]]:
    rows = answer["jurisdictions"]
    assert isinstance(rows, list)
    return {r["code"]: r for r in rows}


def test_counts_are_within_the_scope(site: Site, tmp_path: Path) -> None:
    _configure(site, tmp_path)
    coord = site.signed_in("coord").get("/api/v1/map").json()
    assert coord["mode"] == "jurisdictions" and len(coord["jurisdictions"]) == 101
    by = _by_code(coord)
    assert by["75"]["open_leads"] == 2 and by["13"]["open_leads"] == 1
    assert by["69"]["open_leads"] == 0  # nationally every jurisdiction is counted
    # Four targets: two in 75, one in 13, one placed nowhere (CGNAT).
    assert coord["open_leads"] == 4 and coord["without_jurisdiction"] == 1

    inv13 = site.signed_in("inv13").get("/api/v1/map").json()
    by = _by_code(inv13)
    assert by["13"] == {
        "code": "13",
        "name": "Bouches-du-Rhône",
        "unit": "U13",
        "in_scope": True,
        "open_leads": 1,
    }
    # Another unit's jurisdiction and the unassigned ones are not counted at all.
    assert by["75"]["open_leads"] is None and by["75"]["in_scope"] is False
    assert by["69"]["open_leads"] is None
    assert inv13["open_leads"] == 1 and inv13["without_jurisdiction"] == 0
    assert inv13["scope"] == ["U13"]


def test_closed_leads_are_not_open(site: Site, tmp_path: Path) -> None:
    _configure(site, tmp_path)
    first, second = site.targets["U75"]
    leads = site.app.leads
    leads.claim(first, unit="U75", actor="t")
    leads.set_state(first, "closed", actor="t", outcome="duplicate")
    leads.claim(second, unit="U75", actor="t")  # claimed is still open
    by = _by_code(site.signed_in("inv75").get("/api/v1/map").json())
    assert by["75"]["open_leads"] == 1


def test_page_draws_the_scope_only(site: Site, tmp_path: Path) -> None:
    _configure(site, tmp_path)
    page = site.signed_in("inv75").get("/map")
    assert page.status_code == 200
    html = page.text
    svg = re.search(r'<svg id="map".*?</svg>', html, re.S)
    assert svg is not None
    # 75 is a link with its count; 13 is grey, unlinked and unnumbered.
    assert re.search(r'<a href="/leads\?jurisdiction=75" data-code="75" data-open="2">', svg[0])
    grey = re.search(r'<g class="outside" data-code="13"><path d="[^"]+" fill="([^"]+)"', svg[0])
    assert grey is not None and grey[1] == OUT_OF_SCOPE
    assert 'jurisdiction=13"' not in html and "13 Bouches-du-Rhône: 1" not in html
    # Overseas départements are drawn in their own panels, and the SVG stays small.
    for code in ("971", "972", "973", "974", "976"):
        assert f'data-code="{code}"' in svg[0]
    assert len(svg[0]) < 400_000
    assert 'id="map-legend"' in html and "outside your scope" in html
    entry = site.app.audit.latest(1)[0]
    assert entry.action == "map.view" and entry.detail["open_leads"] == 2


def test_other_roles_get_no_map(site: Site) -> None:
    for name in ("auditor", "admin"):
        client = site.signed_in(name)
        assert client.get("/api/v1/map").status_code == 403
        assert client.get("/map").status_code == 403


def test_points_without_a_jurisdiction_map(site: Site) -> None:
    """No map configured: open leads are points at their GeoIP position (the test's stand-in
    GeoIP gives none, so a position is injected through the enricher)."""
    real = site.app.enricher

    class Positioned:
        def place(self, ip: str) -> Placement:
            return dataclasses.replace(real.place(ip), latitude=48.85, longitude=2.35)

    site.app.__dict__["enricher"] = Positioned()
    inv75 = site.signed_in("inv75")
    answer = inv75.get("/api/v1/map").json()
    assert answer["mode"] == "points"
    assert {p["target_id"] for p in answer["points"]} == set(site.targets["U75"])
    page = inv75.get("/map").text
    for tid in site.targets["U75"]:
        assert f'<a href="/leads/{tid}" data-target="{tid}">' in page
    for tid in site.targets["U13"] + site.targets["-"]:
        assert f"T-{tid:06d}" not in page
    coord = site.signed_in("coord").get("/api/v1/map").json()
    assert len(coord["points"]) == 4


@pytest.mark.parametrize(
    ("maximum", "classes"),
    [
        (0, [(0, 0), (1, None)]),
        (3, [(0, 0), (1, 1), (2, None)]),
        (7, [(0, 0), (1, 1), (2, 4), (5, None)]),
    ],
)
def test_legend_classes(maximum: int, classes: list[tuple[int, int | None]]) -> None:
    assert breaks_for(maximum) == classes
    got = breaks_for(maximum)
    assert colour_of(0, got) != colour_of(maximum or 1, got)
