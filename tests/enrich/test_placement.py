"""Enricher.place: the one answer the leads consume, built by the app from what is configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerwatch.app import App
from peerwatch.enrich.geoip import GeoFacts, GeoIP
from peerwatch.enrich.placement import Enricher, Placement
from peerwatch.errors import InputError
from peerwatch.lab.geoip import LabGeoIP
from peerwatch.settings import Settings
from peerwatch.storage.database import sqlite_url

from .conftest import OVERSEAS


def test_nothing_configured_gives_an_empty_placement() -> None:
    p = Enricher().place("127.0.0.2")
    assert p == Placement(
        ip="127.0.0.2",
        country=None,
        subdivisions=(),
        city=None,
        latitude=None,
        longitude=None,
        accuracy_km=None,
        asn=None,
        organisation=None,
        flags=frozenset(),
        jurisdiction=None,
        jurisdiction_name=None,
        jurisdiction_method=None,
        unit=None,
        sources=(),
    )
    assert p.caveats() == ("No jurisdiction could be determined for this address.",)
    assert Enricher().place("100.64.3.4").flags == {"cgnat"}  # RFC 6598, known without lists


def test_addresses_are_canonical_and_cached(lab_geoip: LabGeoIP) -> None:
    calls: list[str] = []
    geo = GeoIP(lab_geoip.city, lab_geoip.asn)

    class Counting:
        def lookup(self, ip: str) -> GeoFacts:
            calls.append(ip)
            return geo.lookup(ip)

    e = Enricher(geo=Counting())
    a = e.place("2001:DB8:0:0::7")
    b = e.place("2001:db8::7")
    assert a is b and a.ip == "2001:db8::7" and calls == ["2001:db8::7"]
    assert e.place("::ffff:127.0.0.2").ip == "127.0.0.2"
    with pytest.raises(InputError, match="not an IP address"):
        e.place("localhost")


def test_caveats_for_cgnat_depend_on_the_source_port() -> None:
    p = Enricher().place("100.64.3.4")
    without = p.caveats()
    assert any("without the source port" in c and "cannot identify" in c for c in without)
    with_port = p.caveats(source_port=51413)
    assert any("needs the source port" in c for c in with_port)
    assert not any("cannot identify" in c for c in with_port)


def _app(tmp_path: Path, lab: LabGeoIP | None = None) -> App:
    settings = Settings(
        home=tmp_path,
        database_url=sqlite_url(tmp_path / "pw.db"),
        sensor_id="t",
        geoip_city=lab.city if lab else None,
        geoip_asn=lab.asn if lab else None,
    )
    return App(settings)


def test_app_enricher_combines_geoip_flags_jurisdictions_and_units(
    tmp_path: Path, lab_geoip: LabGeoIP
) -> None:
    setup = _app(tmp_path)
    setup.geoip_config.set(city=lab_geoip.city, asn=lab_geoip.asn)
    setup.jurisdictions.import_geojson(
        OVERSEAS, code_property="code", name_property="nom", country="FR"
    )
    units = tmp_path / "units.csv"
    units.write_text("unit,name,jurisdictions\nNORD,Brigade du Nord,59;62\nRE,Réunion,974\n")
    setup.jurisdictions.import_units(units)
    mobile = tmp_path / "mobile.txt"
    mobile.write_text("AS64506 Lab Mobile\n")
    setup.netflags.import_file(mobile, "mobile")
    setup.close()

    app = _app(tmp_path)  # a fresh process: everything comes from the database
    assert app.geoip is not None
    p = app.enricher.place("100.64.1.1")
    assert (p.country, p.subdivisions, p.asn, p.organisation) == (
        "FR",
        ("HDF", "59"),
        64506,
        "Lab Mobile",
    )
    assert p.flags == {"cgnat", "mobile"}
    assert (p.jurisdiction, p.jurisdiction_name, p.jurisdiction_method, p.unit) == (
        "59",
        "Nord",
        "polygon",
        "NORD",
    )
    assert p.jurisdiction_confidence == "certain"
    assert p.sources[:2] == ("GeoLite2-City built 2026-10-27", "GeoLite2-ASN built 2026-10-27")
    assert p.sources[2].startswith("mobile list v1 imported ")
    assert p.sources[3] == "jurisdictions v1 (fr-departements-with-overseas.geojson)"
    record = p.as_record()
    assert record["flags"] == ["cgnat", "mobile"] and record["subdivisions"] == ["HDF", "59"]
    assert any("Mobile network" in c for c in p.caveats())
    re = app.enricher.place("127.0.0.6")
    assert (re.country, re.jurisdiction, re.unit, re.flags) == ("RE", "974", "RE", frozenset())
    app.close()


def test_settings_override_the_recorded_databases(tmp_path: Path, lab_geoip: LabGeoIP) -> None:
    app = _app(tmp_path, lab_geoip)
    assert app.geoip_config.active() == {}
    p = app.enricher.place("127.0.0.4")
    assert (p.subdivisions, p.jurisdiction) == (("COR", "2A"), None)  # no map imported
    assert p.sources == ("GeoLite2-City built 2026-10-27", "GeoLite2-ASN built 2026-10-27")
    app.close()


def test_a_recorded_database_that_disappeared_is_a_clear_error(
    tmp_path: Path, lab_geoip: LabGeoIP
) -> None:
    copy = tmp_path / "City.mmdb"
    copy.write_bytes(lab_geoip.city.read_bytes())
    app = _app(tmp_path)
    app.geoip_config.set(city=copy)
    copy.unlink()
    with pytest.raises(InputError) as e:
        _app(tmp_path).enricher.place("127.0.0.2")
    assert str(copy) in str(e.value) and "no such file" in str(e.value)
