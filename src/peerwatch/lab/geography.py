"""Where the lab's peers are: a test GeoIP database and units for the lab's own addresses.

Every lab peer is placed in a French département by its index, from a fixed rotation:

    index % 6:   0 -> 75 Paris        1 -> 69 Rhône        2 -> 13 Bouches-du-Rhône
                 3 -> 33 Gironde      4 -> 971 Guadeloupe  5 -> 974 La Réunion

four metropolitan départements and two overseas ones. The rotation has six places and the roles
(`lab.swarm`) cycle every five, so peers of one role land in several départements. The IPv6 peer
(`Lab(ipv6=True)`, address `::1`) takes its place in the rotation by its index like any other.
Each département has its own documentation AS number (RFC 5398: 64496-64511), so the ASN database
is exercised too.

`write_geography` writes, for the peers of a lab, a City + ASN .mmdb pair (`lab.geoip`,
mmdb-writer, MaxMind's layout; test data, not real locations: each address is put at the point
of its département farthest from the border, accuracy 1 km, so the polygon placement is certain)
and a units CSV (`peerwatch units import` format, docs/enrichment.md) covering the rotation's
départements. Then:

    peerwatch geoip set --city LAB/geo/GeoLite2-City.mmdb --asn LAB/geo/GeoLite2-ASN.mmdb
    peerwatch jurisdictions import fr-departements-with-overseas.geojson \\
        --code-property code --name-property nom
    peerwatch units import LAB/geo/units.csv

The boundaries file (IGN Admin Express via france-geojson, Licence Ouverte) is not shipped with
the project: `shared_boundaries()` finds the copy next to the checkout when there is one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from peerwatch.lab.geoip import LabGeoIP

#: The départements peers are placed in, by index modulo its length (see the module docstring).
ROTATION: tuple[str, ...] = ("75", "69", "13", "33", "971", "974")
#: Overseas départements of the rotation (their GeoIP country is GP / RE, not FR).
OVERSEAS: frozenset[str] = frozenset({"971", "974"})
#: RFC 5398 documentation AS numbers, one per département of the rotation.
ASN: dict[str, int] = {d: 64500 + i for i, d in enumerate(ROTATION)}


@dataclass(frozen=True, slots=True)
class LabUnit:
    code: str
    name: str
    jurisdictions: tuple[str, ...]


#: Units covering the rotation (and a few neighbours, as a real unit would); made-up names.
UNITS: tuple[LabUnit, ...] = (
    LabUnit("LAB-PARIS", "Lab unit Paris and petite couronne", ("75", "92", "93", "94")),
    LabUnit("LAB-LYON", "Lab unit Lyon", ("69",)),
    LabUnit("LAB-SUD", "Lab unit South (Marseille, Bordeaux)", ("13", "33")),
    LabUnit("LAB-ANTILLES", "Lab unit Antilles, Guyane", ("971", "972", "973")),
    LabUnit("LAB-OCEAN-INDIEN", "Lab unit Indian Ocean", ("974", "976")),
    LabUnit("LAB-NATIONAL", "Lab national unit (takes cases by hand)", ()),
)


def departement_of(index: int) -> str:
    """The département the lab places peer number `index` in."""
    return ROTATION[index % len(ROTATION)]


def unit_of(departement: str) -> str | None:
    """The lab unit covering `departement`, if any."""
    for unit in UNITS:
        if departement in unit.jurisdictions:
            return unit.code
    return None


@dataclass(frozen=True, slots=True)
class LabGeography:
    geoip: LabGeoIP  # the City and ASN .mmdb files
    units_csv: Path
    placed: dict[str, str]  # peer address -> département code

    @property
    def city(self) -> Path:
        return self.geoip.city

    @property
    def asn(self) -> Path:
        return self.geoip.asn

    def unit(self, ip: str) -> str | None:
        """The unit a lead on this peer address must be routed to."""
        return unit_of(self.placed[ip])


def units_csv() -> str:
    """The lab's units in the `peerwatch units import` format."""
    lines = ["unit,name,jurisdictions", "# peerwatch lab units (made up) for lab.geography"]
    for u in UNITS:
        name = f'"{u.name}"' if "," in u.name else u.name
        lines.append(f"{u.code},{name},{';'.join(u.jurisdictions)}")
    return "\n".join(lines) + "\n"


class Locatable(Protocol):
    """What placement needs of a lab peer: its address and its number in the rotation."""

    @property
    def ip(self) -> str: ...

    @property
    def index(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Located:
    """A peer of another lab (aMule) placed in the same rotation."""

    ip: str
    index: int


def write_geography(peers: Iterable[Locatable], folder: Path, *, boundaries: Path) -> LabGeography:
    """Write `GeoLite2-City.mmdb`, `GeoLite2-ASN.mmdb` and `units.csv` into `folder`, placing
    each peer's address in `departement_of(peer.index)`."""
    # mmdb-writer (the lab and dev extras) only when a database is written: the CLI imports this
    # module for the demo, and a plain install has no mmdb-writer.
    from peerwatch.lab.geoip import Placed, build_geoip

    placed = {p.ip: departement_of(p.index) for p in peers}
    geoip = build_geoip(
        folder,
        [
            Placed(ip, d, asn=ASN[d], organisation=f"Lab Network {d}")
            for ip, d in sorted(placed.items())
        ],
        boundaries=boundaries,
    )
    path = folder / "units.csv"
    path.write_text(units_csv())
    return LabGeography(geoip, path, placed)


def shared_data_dirs() -> list[Path]:
    """Where the shared boundary files may be (DESIGN.md, "Shared data"), in order: the folder
    named by PEERWATCH_SHARED_DATA, ../shared/data next to this checkout, /work/shared/data. They
    are not copied into the project (their licence and size stay with their source)."""
    root = Path(__file__).resolve().parents[3]
    dirs = [root.parent / "shared" / "data", Path("/work/shared/data")]
    env = os.environ.get("PEERWATCH_SHARED_DATA")
    return ([Path(env)] if env else []) + dirs


def shared_boundaries(name: str = "fr-departements-with-overseas.geojson") -> Path | None:
    """The first shared boundaries file called `name` that exists, or None."""
    for folder in shared_data_dirs():
        if (folder / name).is_file():
            return folder / name
    return None
