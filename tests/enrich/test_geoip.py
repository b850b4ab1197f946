"""GeoIP lookups over MaxMind-format files built with mmdb-writer, and the recorded config."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet  # type: ignore[import-untyped]  # no stubs published
from sqlalchemy import Engine, func, select

from peerwatch.enrich.geoip import GeoIP, GeoIPConfig
from peerwatch.errors import InputError
from peerwatch.lab.geoip import LabGeoIP
from peerwatch.storage.schema import geoip_databases

from .conftest import BUILT


def test_lookup_ipv4_loopback_gives_maxmind_fields(lab_geoip: LabGeoIP) -> None:
    geo = GeoIP(lab_geoip.city, lab_geoip.asn)
    f = geo.lookup("127.0.0.2")
    assert (f.country, f.subdivisions, f.city) == ("FR", ("IDF", "75"), "Paris")
    assert (f.asn, f.organisation, f.accuracy_km) == (64500, "Lab Paris", 1)
    assert f.latitude is not None and f.longitude is not None
    assert (round(f.latitude, 2), round(f.longitude, 2)) == (48.86, 2.34)
    geo.close()


def test_lookup_ipv6_and_ipv4_mapped(lab_geoip: LabGeoIP) -> None:
    geo = GeoIP(lab_geoip.city, lab_geoip.asn)
    v6 = geo.lookup("2001:DB8:0::7")
    assert (v6.country, v6.subdivisions, v6.asn) == ("FR", ("ARA", "69"), 64505)
    mapped = geo.lookup("::ffff:127.0.0.3")
    assert (mapped.subdivisions, mapped.asn, mapped.accuracy_km) == (("PAC", "13"), 64501, 5)
    in_net = geo.lookup("203.0.113.77")
    assert (in_net.subdivisions, in_net.organisation) == (("NAQ", "33"), "Lab Hosting")


def test_overseas_departement_has_its_own_country_code(lab_geoip: LabGeoIP) -> None:
    f = GeoIP(lab_geoip.city, lab_geoip.asn).lookup("127.0.0.5")
    assert (f.country, f.subdivisions, f.city) == ("GP", (), "Guadeloupe")
    assert f.latitude is not None and 15.8 < f.latitude < 16.6


def test_every_answer_carries_type_and_build_date(lab_geoip: LabGeoIP) -> None:
    geo = GeoIP(lab_geoip.city, lab_geoip.asn)
    f = geo.lookup("127.0.0.2")
    assert f.city_database is not None and f.asn_database is not None
    assert f.city_database.database_type == "GeoLite2-City"
    assert f.asn_database.database_type == "GeoLite2-ASN"
    assert f.city_database.built == BUILT == f.asn_database.built
    assert f.sources == ("GeoLite2-City built 2026-10-27", "GeoLite2-ASN built 2026-10-27")
    unknown = geo.lookup("192.0.2.1")  # not in the databases: nothing known, sources still said
    assert (unknown.country, unknown.asn, unknown.latitude) == (None, None, None)
    assert unknown.sources == f.sources


def test_city_only_and_asn_only(lab_geoip: LabGeoIP) -> None:
    city = GeoIP(city=lab_geoip.city).lookup("127.0.0.2")
    assert (city.country, city.asn, city.sources) == (
        "FR",
        None,
        ("GeoLite2-City built 2026-10-27",),
    )
    asn = GeoIP(asn=lab_geoip.asn).lookup("127.0.0.2")
    assert (asn.country, asn.asn, asn.organisation) == (None, 64500, "Lab Paris")


@pytest.mark.parametrize(
    ("database_type", "role"),
    [
        ("DBIP-City-Lite", "city"),
        ("DBIP-Country-Lite", "city"),
        ("GeoIP2-City", "city"),
        ("DBIP-ASN-Lite (compat=GeoLite2-ASN)", "asn"),
        ("GeoIP2-ISP", "asn"),
    ],
)
def test_other_vendors_types_are_recognised(tmp_path: Path, database_type: str, role: str) -> None:
    w = MMDBWriter(6, database_type, languages=["en"], description="t", ipv4_compatible=True)
    record = (
        {"country": {"iso_code": "FR"}, "subdivisions": [{"iso_code": "75"}]}
        if role == "city"
        else {"autonomous_system_number": 64510, "organization": "ISP org"}
    )
    w.insert_network(IPSet(["127.0.0.0/8"]), record)
    path = tmp_path / "db.mmdb"
    w.to_db_file(str(path))
    f = (
        GeoIP(city=path).lookup("127.0.0.1")
        if role == "city"
        else GeoIP(asn=path).lookup("127.0.0.1")
    )
    if role == "city":
        assert (f.country, f.subdivisions) == ("FR", ("75",))
    else:
        assert (f.asn, f.organisation) == (64510, "ISP org")
    with pytest.raises(InputError, match="is a"):
        GeoIP(asn=path) if role == "city" else GeoIP(city=path)


def test_ipv6_in_an_ipv4_only_database_is_unknown_not_an_error(tmp_path: Path) -> None:
    w = MMDBWriter(4, "GeoLite2-City", languages=["en"], description="t")
    w.insert_network(IPSet(["127.0.0.0/8"]), {"country": {"iso_code": "FR"}})
    path = tmp_path / "v4.mmdb"
    w.to_db_file(str(path))
    geo = GeoIP(city=path)
    assert geo.lookup("127.1.2.3").country == "FR"
    assert geo.lookup("2001:db8::1").country is None


def test_not_an_mmdb_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "GeoLite2-City.mmdb"
    bad.write_bytes(b"this is not a database\n" * 10)
    with pytest.raises(InputError) as e:
        GeoIP(city=bad)
    assert str(bad) in str(e.value) and "not a MaxMind DB" in str(e.value)
    with pytest.raises(InputError, match="no such file"):
        GeoIP(city=tmp_path / "absent.mmdb")


def test_wrong_type_is_refused(lab_geoip: LabGeoIP) -> None:
    with pytest.raises(InputError) as e:
        GeoIP(city=lab_geoip.asn)
    assert "'GeoLite2-ASN'" in str(e.value) and "City database" in str(e.value)
    assert e.value.field == "database_type" and e.value.source == str(lab_geoip.asn)
    with pytest.raises(InputError, match="ASN database"):
        GeoIP(asn=lab_geoip.city)


def test_bad_ip_is_input_error(lab_geoip: LabGeoIP) -> None:
    with pytest.raises(InputError, match="not an IP address"):
        GeoIP(lab_geoip.city).lookup("999.1.1.1")


def test_config_records_files_with_build_date_and_history(
    engine: Engine, lab_geoip: LabGeoIP
) -> None:
    config = GeoIPConfig(engine, clock_ms=lambda: 1_700_000_000_000)
    assert config.active() == {}
    done = config.set(city=lab_geoip.city, asn=lab_geoip.asn)
    assert [d.info.role for d in done] == ["city", "asn"]
    active = config.active()
    assert active["city"].info.path == str(lab_geoip.city.resolve())
    assert active["asn"].info.database_type == "GeoLite2-ASN"
    assert datetime.fromtimestamp(active["city"].info.build_epoch, UTC).date() == BUILT
    assert len(active["city"].sha256) == 64 and active["city"].size == lab_geoip.city.stat().st_size
    config.set(city=lab_geoip.city)  # again: a new active row, the old one kept
    with engine.connect() as conn:
        rows = conn.execute(
            select(geoip_databases.c.role, geoip_databases.c.active).order_by(geoip_databases.c.id)
        ).all()
    assert [tuple(r) for r in rows] == [("city", False), ("asn", True), ("city", True)]


def test_config_checks_both_files_before_writing(
    engine: Engine, lab_geoip: LabGeoIP, tmp_path: Path
) -> None:
    config = GeoIPConfig(engine)
    bad = tmp_path / "broken.mmdb"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match=r"broken\.mmdb"):
        config.set(city=lab_geoip.city, asn=bad)
    with pytest.raises(InputError, match="City database"):
        config.set(city=lab_geoip.asn)
    with pytest.raises(InputError, match="--city FILE and/or --asn FILE"):
        config.set()
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(geoip_databases)).scalar() == 0
