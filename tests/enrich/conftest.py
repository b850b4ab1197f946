"""Fixtures for enrichment: a small City + ASN GeoIP pair and the shared département boundaries."""

from __future__ import annotations

from datetime import date

import pytest

from peerwatch.lab.geoip import LabGeoIP, Placed, build_geoip
from tests.shared_data import OVERSEAS_NAME, SIMPLIFIED_NAME, boundaries_path

OVERSEAS = boundaries_path(OVERSEAS_NAME)
SIMPLIFIED = boundaries_path(SIMPLIFIED_NAME)
BUILT = date(2026, 10, 27)

# Where the test databases put each address: loopback (what the lab and demo use), documentation
# ranges (RFC 5737, RFC 3849), CGNAT space (RFC 6598).
PLACES = (
    Placed("127.0.0.2", "75", asn=64500, organisation="Lab Paris"),
    Placed("127.0.0.3", "13", asn=64501, organisation="Lab Marseille", accuracy_km=5),
    Placed("127.0.0.4", "2A", asn=64502, organisation="Lab Ajaccio"),
    Placed("127.0.0.5", "971", asn=64503, organisation="Lab Guadeloupe"),
    Placed("127.0.0.6", "974", asn=64504, organisation="Lab Réunion"),
    Placed("2001:db8::7", "69", asn=64505, organisation="Lab Lyon v6"),
    # A country-only record: MaxMind gives the country's centroid with a 1000 km radius.
    Placed("127.0.0.8", None, latitude=46.0, longitude=2.0, accuracy_km=1000),
    # Coordinates 0.4 km from the Paris / Hauts-de-Seine border with a 20 km radius.
    Placed("127.0.0.9", "92", latitude=48.8465, longitude=2.23, accuracy_km=20),
    Placed("100.64.1.1", "59", asn=64506, organisation="Lab Mobile"),
    Placed("203.0.113.0/24", "33", asn=64507, organisation="Lab Hosting"),
)


@pytest.fixture(scope="session")
def lab_geoip(tmp_path_factory: pytest.TempPathFactory) -> LabGeoIP:
    return build_geoip(tmp_path_factory.mktemp("geoip"), PLACES, boundaries=OVERSEAS, built=BUILT)
