"""Jurisdiction maps from GeoJSON, point-in-polygon and subdivision placement, and units."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from peerwatch.enrich.geoip import GeoFacts, GeoIP
from peerwatch.enrich.jurisdictions import JurisdictionMap, JurisdictionStore
from peerwatch.errors import InputError
from peerwatch.lab.geoip import LabGeoIP
from peerwatch.storage.schema import jurisdiction_maps, jurisdictions, unit_lists, units

from .conftest import OVERSEAS, SIMPLIFIED


@pytest.fixture(scope="module")
def france() -> JurisdictionMap:
    """The map as loaded from the database, without a database (same constructor)."""
    from shapely.geometry import shape  # type: ignore[import-untyped]

    from peerwatch.enrich.jurisdictions import Area, _polygonal

    doc = json.loads(OVERSEAS.read_bytes())
    areas = [
        Area(f["properties"]["code"], f["properties"]["nom"], _polygonal(shape(f["geometry"])))
        for f in doc["features"]
    ]
    return JurisdictionMap(areas, {"75": "BRIG-PARIS"}, country="FR", label="test map")


def _units(tmp_path: Path, text: str, name: str = "units.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _collection(features: list[dict[str, Any]]) -> bytes:
    return json.dumps({"type": "FeatureCollection", "features": features}).encode()


def _square(code: str, name: str, x: float, y: float, size: float = 1.0) -> dict[str, Any]:
    ring = [[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]
    return {
        "type": "Feature",
        "properties": {"id": code, "label": name},
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


@pytest.mark.parametrize(
    "ip,code,name",
    [
        ("127.0.0.2", "75", "Paris"),
        ("127.0.0.3", "13", "Bouches-du-Rhône"),
        ("127.0.0.4", "2A", "Corse-du-Sud"),
        ("127.0.0.5", "971", "Guadeloupe"),
        ("127.0.0.6", "974", "La Réunion"),
        ("2001:db8::7", "69", "Rhône"),
        ("203.0.113.9", "33", "Gironde"),
    ],
)
def test_polygon_placement_of_geoip_coordinates(
    france: JurisdictionMap, lab_geoip: LabGeoIP, ip: str, code: str, name: str
) -> None:
    geo = GeoIP(lab_geoip.city, lab_geoip.asn).lookup(ip)
    m = france.place(geo)
    assert m is not None
    assert (m.code, m.name, m.method, m.source) == (code, name, "polygon", "test map")
    # The lab puts each address at the point farthest from the border, radius 1 or 5 km.
    assert m.border_km is not None and m.border_km > (geo.accuracy_km or 0)
    assert m.confidence == "certain"
    assert m.unit == ("BRIG-PARIS" if code == "75" else None)


def test_border_within_accuracy_radius_is_uncertain(
    france: JurisdictionMap, lab_geoip: LabGeoIP
) -> None:
    geo = GeoIP(lab_geoip.city).lookup("127.0.0.9")  # 0.4 km inside 92, radius 20 km
    m = france.place(geo)
    assert m is not None and (m.code, m.method, m.confidence) == ("92", "polygon", "uncertain")
    assert m.border_km is not None and m.border_km < 1
    tight = france.locate(48.8465, 2.23, accuracy_km=0)
    assert tight is not None and tight.confidence == "certain"
    assert france.locate(48.8465, 2.23) is not None
    unknown_radius = france.locate(48.8465, 2.23)
    assert unknown_radius is not None and unknown_radius.confidence == "uncertain"


def test_country_centroid_does_not_pick_a_departement(
    france: JurisdictionMap, lab_geoip: LabGeoIP
) -> None:
    geo = GeoIP(lab_geoip.city).lookup("127.0.0.8")  # country only; (46, 2) lies in Creuse (23)
    assert (geo.country, geo.city, geo.subdivisions) == ("FR", None, ())
    loc = france.locate(46.0, 2.0)
    assert loc is not None and loc.code == "23"
    assert france.place(geo) is None


def test_points_outside_every_polygon(france: JurisdictionMap) -> None:
    assert france.locate(0.0, 0.0) is None  # Gulf of Guinea
    assert france.locate(47.0, -4.0) is None  # Atlantic, off Brittany


def test_fallback_to_the_most_specific_subdivision_code(france: JurisdictionMap) -> None:
    no_coordinates = GeoFacts(country="FR", subdivisions=("IDF", "93"), city="Saint-Denis")
    m = france.place(no_coordinates)
    assert m is not None
    assert (m.code, m.name, m.method, m.confidence, m.border_km) == (
        "93",
        "Seine-Saint-Denis",
        "subdivision",
        "uncertain",
        None,
    )
    iso_form = GeoFacts(country="FR", subdivisions=("FR-IDF", "FR-75"))
    m2 = france.place(iso_form)
    assert m2 is not None and (m2.code, m2.unit) == ("75", "BRIG-PARIS")
    # Coordinates outside every polygon (at sea) fall back too.
    at_sea = GeoFacts(
        country="FR", subdivisions=("BRE", "29"), city="x", latitude=47.0, longitude=-5.5
    )
    m3 = france.place(at_sea)
    assert m3 is not None and (m3.code, m3.method) == ("29", "subdivision")
    # The map is for France: a subdivision "75" of another country is not Paris.
    assert france.place(GeoFacts(country="DE", subdivisions=("75",))) is None
    assert france.place(GeoFacts(country="FR", subdivisions=("XXX",))) is None
    assert france.place(GeoFacts()) is None


def test_import_keeps_geometry_and_lists(engine: Engine) -> None:
    store = JurisdictionStore(engine)
    r = store.import_geojson(OVERSEAS, code_property="code", name_property="nom", country="fr")
    assert (r.version, r.features, r.unchanged) == (1, 101, False)
    again = store.import_geojson(OVERSEAS, code_property="code", name_property="nom", country="FR")
    assert again.unchanged and again.version == 1
    info = store.active_map()
    assert info is not None and (info.country, info.features, info.code_property) == (
        "FR",
        101,
        "code",
    )
    rows = store.list_jurisdictions()
    assert len(rows) == 101 and rows[0].code == "971" and rows[0].has_geometry
    fc = store.feature_collection()
    doc = json.loads(OVERSEAS.read_bytes())
    assert fc["features"][3]["geometry"] == doc["features"][3]["geometry"]
    assert fc["features"][3]["properties"]["code"] == doc["features"][3]["properties"]["code"]
    snap = store.snapshot()
    assert snap is not None
    m = snap.locate(-21.1, 55.5, 5)
    assert m is not None and (m.code, m.source) == (
        "974",
        "jurisdictions v1 (fr-departements-with-overseas.geojson)",
    )
    r2 = store.import_geojson(SIMPLIFIED, code_property="code", name_property="nom")
    assert (r2.version, r2.features) == (2, 96)
    snap2 = store.snapshot()
    assert snap2 is not None and snap2.locate(-21.1, 55.5) is None
    assert snap2.country is None


def test_code_only_features_place_by_subdivision(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "regions.geojson"
    path.write_bytes(
        _collection(
            [
                {
                    "type": "Feature",
                    "properties": {"id": "BY", "label": "Bayern"},
                    "geometry": None,
                },
                _square("BE", "Berlin", 13.0, 52.0),
            ]
        )
    )
    store = JurisdictionStore(engine)
    store.import_geojson(path, code_property="id", name_property="label", country="DE")
    snap = store.snapshot()
    assert snap is not None
    m = snap.place(
        GeoFacts(country="DE", subdivisions=("BY",), city="München", latitude=48.1, longitude=11.6)
    )
    assert m is not None and (m.code, m.method) == ("BY", "subdivision")
    m2 = snap.place(
        GeoFacts(country="DE", subdivisions=("BE",), city="Berlin", latitude=52.5, longitude=13.4)
    )
    assert m2 is not None and (m2.code, m2.method) == ("BE", "polygon")
    assert [r.has_geometry for r in store.list_jurisdictions()] == [False, True]


@pytest.mark.parametrize(
    ("doc", "location", "field", "words"),
    [
        (b"{not json", "line 1", None, "not JSON"),
        (b'{"type": "Feature"}', None, "type", "not a GeoJSON FeatureCollection"),
        (b'{"type": "FeatureCollection", "features": []}', None, "features", "no features"),
        (
            _collection(
                [_square("A", "a", 0, 0), {"type": "Feature", "properties": {"label": "b"}}]
            ),
            "features[1]",
            "id",
            "missing code property",
        ),
        (
            _collection([_square("A", "a", 0, 0), _square("B", "", 2, 0)]),
            "features[1]",
            "label",
            "missing name property",
        ),
        (
            _collection([_square("A", "a", 0, 0), _square("A", "again", 2, 0)]),
            "features[1]",
            "id",
            "already used by features[0]",
        ),
        (
            _collection(
                [
                    {
                        "type": "Feature",
                        "properties": {"id": "P", "label": "p"},
                        "geometry": {"type": "Point", "coordinates": [1, 2]},
                    }
                ]
            ),
            "features[0]",
            "geometry",
            "'Point'",
        ),
        (
            _collection([_square("A", "a", 600000, 6000000, 1000)]),
            "features[0]",
            "geometry",
            "not longitude/latitude",
        ),
    ],
)
def test_bad_geojson_names_file_feature_and_field_and_changes_nothing(
    engine: Engine,
    tmp_path: Path,
    doc: bytes,
    location: str | None,
    field: str | None,
    words: str,
) -> None:
    store = JurisdictionStore(engine)
    good = tmp_path / "good.geojson"
    good.write_bytes(_collection([_square("A", "a", 0, 0)]))
    store.import_geojson(good, code_property="id", name_property="label")
    path = tmp_path / "bad.geojson"
    path.write_bytes(doc)
    with pytest.raises(InputError) as e:
        store.import_geojson(path, code_property="id", name_property="label")
    assert (e.value.source, e.value.location, e.value.field) == (str(path), location, field)
    assert words in str(e.value)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(jurisdiction_maps)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(jurisdictions)).scalar() == 1
    assert [r.code for r in store.list_jurisdictions()] == ["A"]


def test_units_map_jurisdictions_to_exactly_one_unit(engine: Engine, tmp_path: Path) -> None:
    store = JurisdictionStore(engine)
    store.import_geojson(OVERSEAS, code_property="code", name_property="nom", country="FR")
    path = _units(
        tmp_path,
        "unit,name,jurisdictions\n"
        "# Paris and the petite couronne\n"
        "BRIG-PARIS,Brigade de Paris,75;92; 93 ;94\n"
        'BRIG-ANTILLES,"Antilles, Guyane",971;972;973\n'
        "OFMIN,Office mineurs (national),\n",
    )
    r = store.import_units(path)
    assert (r.version, r.units, r.unchanged) == (1, 3, False)
    assert len(r.uncovered) == 101 - 7 and "974" in r.uncovered and "75" not in r.uncovered
    assert store.import_units(path).unchanged
    assert [(u.code, u.name, u.jurisdictions) for u in store.list_units()] == [
        ("BRIG-PARIS", "Brigade de Paris", ("75", "92", "93", "94")),
        ("BRIG-ANTILLES", "Antilles, Guyane", ("971", "972", "973")),
        ("OFMIN", "Office mineurs (national)", ()),
    ]
    snap = store.snapshot()
    assert snap is not None
    m = snap.locate(16.1, -61.6)
    assert m is not None and (m.code, m.unit) == ("971", "BRIG-ANTILLES")
    by_code = {row.code: row.unit for row in store.list_jurisdictions()}
    assert (by_code["93"], by_code["974"]) == ("BRIG-PARIS", None)
    assert store.feature_collection()["features"][0]["properties"]["unit"] == "BRIG-ANTILLES"


@pytest.mark.parametrize(
    ("text", "location", "field", "words"),
    [
        ("unit,name\nA,a\n", "line 1", None, "header must be unit,name,jurisdictions"),
        (
            "unit,name,jurisdictions\nA,a,75\nB,b,92;75\n",
            "line 3",
            "jurisdictions",
            "'75' is already covered by unit 'A' (line 2)",
        ),
        (
            "unit,name,jurisdictions\nA,a,75\nB,b,99\n",
            "line 3",
            "jurisdictions",
            "unknown jurisdiction '99'",
        ),
        (
            "unit,name,jurisdictions\nA,a,75\nA,again,92\n",
            "line 3",
            "unit",
            "already defined on line 2",
        ),
        ("unit,name,jurisdictions\nA,a,75\n,b,92\n", "line 3", "unit", "empty unit code"),
        ("unit,name,jurisdictions\nA,,75\n", "line 2", "name", "empty unit name"),
        ("unit,name,jurisdictions\nA,a,75,extra\n", "line 2", None, "4 columns"),
        ("unit,name,jurisdictions\n", None, None, "no units"),
        ("", None, None, "empty file"),
    ],
)
def test_bad_units_file_names_the_line_and_changes_nothing(
    engine: Engine, tmp_path: Path, text: str, location: str | None, field: str | None, words: str
) -> None:
    store = JurisdictionStore(engine)
    store.import_geojson(SIMPLIFIED, code_property="code", name_property="nom")
    store.import_units(_units(tmp_path, "unit,name,jurisdictions\nOLD,Old unit,13\n", "old.csv"))
    path = _units(tmp_path, text)
    with pytest.raises(InputError) as e:
        store.import_units(path)
    assert (e.value.source, e.value.location, e.value.field) == (str(path), location, field)
    assert words in str(e.value)
    assert [(u.code, u.jurisdictions) for u in store.list_units()] == [("OLD", ("13",))]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(unit_lists)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(units)).scalar() == 1


def test_units_need_a_map_and_reimport_reports_orphans(engine: Engine, tmp_path: Path) -> None:
    store = JurisdictionStore(engine)
    path = _units(tmp_path, "unit,name,jurisdictions\nRE,Réunion,974\nP,Paris,75\n")
    with pytest.raises(InputError, match="no jurisdictions yet"):
        store.import_units(path)
    store.import_geojson(OVERSEAS, code_property="code", name_property="nom")
    store.import_units(path)
    r = store.import_geojson(SIMPLIFIED, code_property="code", name_property="nom")
    assert r.orphaned == ("974",)
    assert "75" not in r.uncovered and "13" in r.uncovered
    snap = store.snapshot()
    assert snap is not None
    m = snap.locate(48.86, 2.34)
    assert m is not None and m.unit == "P"
