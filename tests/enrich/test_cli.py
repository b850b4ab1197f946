"""`peerwatch geoip|netflags|jurisdictions|units` end to end, in-process, on SQLite in --home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peerwatch.cli.main import run
from peerwatch.lab.geoip import LabGeoIP

from .conftest import OVERSEAS


def pw(home: Path, *args: str) -> int:
    return run(["--home", str(home), *args])


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for env in ("PEERWATCH_GEOIP_CITY", "PEERWATCH_GEOIP_ASN", "PEERWATCH_DATABASE_URL"):
        monkeypatch.delenv(env, raising=False)
    return tmp_path / "home"


def test_geoip_set_show_lookup(
    home: Path, lab_geoip: LabGeoIP, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pw(home, "geoip", "show") == 0
    assert "no GeoIP database" in capsys.readouterr().out
    assert pw(home, "geoip", "set", "--city", str(lab_geoip.city), "--asn", str(lab_geoip.asn)) == 0
    text = capsys.readouterr().out
    assert "city: GeoLite2-City built 2026-10-27" in text
    assert "asn: GeoLite2-ASN built 2026-10-27" in text
    assert pw(home, "geoip", "show", "--json") == 0
    shown = {r["role"]: r for r in json.loads(capsys.readouterr().out)}
    assert shown["city"]["built"] == "2026-10-27" and shown["city"]["present"] is True
    assert shown["asn"]["database_type"] == "GeoLite2-ASN" and shown["asn"]["from"] == "geoip set"
    assert pw(home, "geoip", "lookup", "2001:db8::7", "--json") == 0
    p = json.loads(capsys.readouterr().out)
    assert (p["country"], p["subdivisions"], p["asn"], p["jurisdiction"]) == (
        "FR",
        ["ARA", "69"],
        64505,
        None,
    )
    assert p["sources"] == ["GeoLite2-City built 2026-10-27", "GeoLite2-ASN built 2026-10-27"]
    assert "No jurisdiction could be determined for this address." in p["caveats"]
    assert pw(home, "geoip", "lookup", "127.0.0.2") == 0
    text = capsys.readouterr().out
    assert "Paris, IDF/75, FR" in text and "AS64500 Lab Paris" in text


def test_geoip_set_refuses_wrong_files_and_records_nothing(
    home: Path, lab_geoip: LabGeoIP, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pw(home, "geoip", "set", "--city", str(lab_geoip.asn)) == 2
    err = capsys.readouterr().err
    assert str(lab_geoip.asn) in err and "'GeoLite2-ASN'" in err and "City database" in err
    junk = tmp_path / "junk.mmdb"
    junk.write_text("hello")
    assert pw(home, "geoip", "set", "--city", str(lab_geoip.city), "--asn", str(junk)) == 2
    assert "not a MaxMind DB" in capsys.readouterr().err
    assert pw(home, "geoip", "show", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert pw(home, "geoip", "lookup", "not-an-ip") == 2
    assert "not an IP address" in capsys.readouterr().err


def test_netflags_import_list_and_flags_on_lookup(
    home: Path, lab_geoip: LabGeoIP, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hosting = tmp_path / "hosting.csv"
    hosting.write_text("asn,name\nAS64507,Lab Hosting\n")
    assert pw(home, "netflags", "import", "--kind", "hosting", str(hosting)) == 0
    assert "imported hosting list version 1: 1 entries" in capsys.readouterr().out
    assert pw(home, "netflags", "import", "--kind", "hosting", str(hosting)) == 0
    assert "nothing changed" in capsys.readouterr().out
    tor = tmp_path / "tor.txt"
    tor.write_text("127.0.0.2\nnot an address\n")
    assert pw(home, "netflags", "import", "--kind", "tor", str(tor)) == 2
    assert f"{tor}:line 2: expected an IP address" in capsys.readouterr().err
    assert pw(home, "netflags", "import", "--kind", "proxy", str(tor)) == 2
    capsys.readouterr()
    assert pw(home, "netflags", "list") == 0
    listed = capsys.readouterr().out
    assert "hosting" in listed and "tor" not in listed
    assert pw(home, "geoip", "set", "--city", str(lab_geoip.city), "--asn", str(lab_geoip.asn)) == 0
    capsys.readouterr()
    assert pw(home, "geoip", "lookup", "203.0.113.40", "--json") == 0
    p = json.loads(capsys.readouterr().out)
    assert p["flags"] == ["hosting"] and p["asn"] == 64507
    assert pw(home, "geoip", "lookup", "100.64.1.1", "--json") == 0
    p = json.loads(capsys.readouterr().out)
    assert p["flags"] == ["cgnat"]
    assert any("without the source port" in c for c in p["caveats"])


def test_jurisdictions_and_units_round_trip(
    home: Path, lab_geoip: LabGeoIP, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pw(home, "jurisdictions", "locate", "48.86", "2.34") == 2
    assert "no jurisdictions" in capsys.readouterr().err
    args = ["--code-property", "code", "--name-property", "nom", "--country", "FR"]
    assert pw(home, "jurisdictions", "import", str(OVERSEAS), *args) == 0
    assert "imported jurisdiction map version 1: 101 jurisdictions" in capsys.readouterr().out
    assert pw(home, "jurisdictions", "import", str(OVERSEAS), *args) == 0
    assert "nothing changed" in capsys.readouterr().out
    assert pw(home, "jurisdictions", "locate", "-21.1", "55.5", "--accuracy-km", "5") == 0
    assert "974 La Réunion" in capsys.readouterr().out
    assert pw(home, "jurisdictions", "locate", "0", "0") == 1
    assert "no jurisdiction holds" in capsys.readouterr().out

    units = tmp_path / "units.csv"
    units.write_text("unit,name,jurisdictions\nIDF,Brigade IDF,75;92;93;94\nRE,Réunion,974\n")
    assert pw(home, "units", "import", str(units)) == 0
    captured = capsys.readouterr()
    assert "imported units version 1: 2 units" in captured.out
    assert "no unit covers 01, 02," in captured.err and "and 76 more" in captured.err
    bad = tmp_path / "bad.csv"
    bad.write_text("unit,name,jurisdictions\nA,a,13\nB,b,13\n")
    assert pw(home, "units", "import", str(bad)) == 2
    err = capsys.readouterr().err
    assert f"{bad}:line 3: field 'jurisdictions'" in err and "already covered by unit 'A'" in err
    assert pw(home, "units", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out) == [
        {"unit": "IDF", "name": "Brigade IDF", "jurisdictions": ["75", "92", "93", "94"]},
        {"unit": "RE", "name": "Réunion", "jurisdictions": ["974"]},
    ]
    assert pw(home, "jurisdictions", "list", "--json") == 0
    rows = {r["code"]: r for r in json.loads(capsys.readouterr().out)}
    assert len(rows) == 101 and rows["92"]["unit"] == "IDF" and rows["13"]["unit"] is None

    assert pw(home, "geoip", "set", "--city", str(lab_geoip.city)) == 0
    capsys.readouterr()
    assert pw(home, "geoip", "lookup", "127.0.0.6", "--json") == 0
    p = json.loads(capsys.readouterr().out)
    assert (p["jurisdiction"], p["jurisdiction_method"], p["unit"]) == ("974", "polygon", "RE")
    assert pw(home, "geoip", "lookup", "127.0.0.9") == 0
    text = capsys.readouterr().out
    assert "92 Hauts-de-Seine (by polygon, uncertain" in text and "unit          IDF" in text
    assert "neighbouring jurisdiction is possible" in text
