"""A small, realistic installation for the case package tests, on SQLite in a temporary --home.

Set up as an investigator would, with the CLI: a generated GeoIP pair (City + ASN .mmdb through the
real reader) placing loopback and CGNAT addresses in French départements, the shared département
boundaries imported as jurisdictions, units covering them, and a generated (benign) hash list.
Observations of three targets, recorded by two sensors through the real evidence log, interleave
in the chains, so that a target's bundle is a selection with gaps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from peerwatch.app import App
from peerwatch.cli.main import run
from peerwatch.evidence.keys import load_or_create
from peerwatch.evidence.log import EvidenceLog
from peerwatch.evidence.record import Observation
from peerwatch.lab.geoip import Placed, build_geoip
from peerwatch.settings import Settings
from tests.leads.targets_support import DAY, T0, claim, key, probe
from tests.shared_data import SIMPLIFIED_NAME, boundaries_path, require_boundaries

BOUNDARIES = boundaries_path(SIMPLIFIED_NAME)
AS_OF_MS = T0 + 2 * DAY
PARIS = "127.0.5.10"  # the main target: Paris, two items held, a claim, a second sensor
CGNAT = "100.64.1.7"  # carrier-grade NAT space (RFC 6598), placed in the Nord
RHONE = "127.0.8.40"  # claimed only, then refused

# (n, category, size): the generated list; item 4 is listed but never seen.
LIST = [(1, "1", 2 << 30), (2, "2", 700 << 20), (3, "3", 100 << 20), (4, "1", 1 << 20)]

# Sensor s1 records everything, interleaved; s2 sees the Paris peer once more.
S1 = [
    claim(T0 + 17, PARIS, 51413),
    claim(T0 + 20, RHONE, 6881, content=1),
    probe(T0 + 1_234, PARIS, 51413, "qBittorrent/4.6.0", content=1, peer_id="aa" * 20),
    probe(T0 + 1_500, CGNAT, 40123, "Transmission/4.0.5", content=3, ppm=250_000),
    probe(T0 + 2_345, PARIS, 51413, "qBittorrent/4.6.0", content=2, peer_id="aa" * 20),
    probe(T0 + 3_000, RHONE, 6881, None, outcome="refused", method="connect"),
    probe(T0 + DAY + 999, PARIS, 51413, "qBittorrent/4.6.0", content=1, peer_id="bb" * 20),
]
S2 = [
    probe(T0 + 5_007, PARIS, 51413, "qBittorrent/4.6.0", content=2, peer_id="aa" * 20),
    claim(T0 + 5_100, CGNAT, 40123, content=3),
]


@dataclass(frozen=True)
class Lab:
    home: Path
    tmp: Path

    def app(self) -> App:
        return App(Settings.resolve(home=self.home))

    def target_of(self, ip: str) -> int:
        app = self.app()
        try:
            app.targets.refresh()
            (target,) = [t for t in app.targets.ranked(as_of_ms=AS_OF_MS) if ip in t.ips]
            return target.id
        finally:
            app.close()


def pw(home: Path, *args: str) -> int:
    return run(["--home", str(home), *args])


@pytest.fixture
def lab(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Lab]:
    require_boundaries(SIMPLIFIED_NAME)
    home = tmp_path / "home"
    geo = build_geoip(
        tmp_path / "geo",
        [
            Placed("127.0.5.0/24", "75", asn=64500, organisation="Lab Paris"),
            Placed("127.0.8.0/24", "69", asn=64502, organisation="Lab Lyon"),
            Placed("100.64.1.0/24", "59", asn=64506, organisation="Lab Mobile"),
        ],
        boundaries=BOUNDARIES,
    )
    units = tmp_path / "units.csv"
    units.write_text(
        "unit,name,jurisdictions\nBRIGADE-PARIS,Brigade Paris,75;92;93;94\nSUD,Section Sud,13;69\n"
        "NORD,Section Nord,59;62\n"
    )
    lst = tmp_path / "cases.csv"
    lst.write_text(
        "btih,category,size\n" + "".join(f"{key(n)[5:]},{cat},{size}\n" for n, cat, size in LIST)
    )
    assert pw(home, "geoip", "set", "--city", str(geo.city), "--asn", str(geo.asn)) == 0
    assert (
        pw(
            home,
            "jurisdictions",
            "import",
            str(BOUNDARIES),
            "--code-property",
            "code",
            "--name-property",
            "nom",
        )
        == 0
    )
    assert pw(home, "units", "import", str(units)) == 0
    assert pw(home, "watchlist", "import", str(lst), "--list", "cases") == 0
    settings = Settings.resolve(home=home)
    app = App(settings)
    try:
        for sensor, observations in (("s1", S1), ("s2", S2)):
            sensor_log = EvidenceLog(app.engine, load_or_create(settings.keys_dir, sensor))
            sensor_log.append(list(observations))
    finally:
        app.close()
    capsys.readouterr()
    yield Lab(home, tmp_path)


def records_of(observations: list[Observation], ip: str) -> list[Observation]:
    return [o for o in observations if o.ip == ip]
