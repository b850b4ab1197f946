"""Settings: one declarative table (house rule 7). Each is documented in docs/settings.md; a test
fails when one is not.

Precedence: command-line option > environment variable > default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from peerwatch.errors import InputError


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "home",
        "PEERWATCH_HOME",
        "per-user data folder (platformdirs), e.g. ~/.local/share/peerwatch",
        "Folder holding the SQLite database and the sensors' signing keys.",
    ),
    Setting(
        "database_url",
        "PEERWATCH_DATABASE_URL",
        "sqlite:///HOME/peerwatch.db",
        "SQLAlchemy URL of the database; postgresql://user@host/db for PostgreSQL.",
    ),
    Setting(
        "sensor_id",
        "PEERWATCH_SENSOR_ID",
        "local",
        "Name of this sensor in the evidence log; each sensor id has its own key and chain.",
    ),
    Setting(
        "geoip_city",
        "PEERWATCH_GEOIP_CITY",
        "the file set with `peerwatch geoip set --city`, else none",
        "GeoIP City database (.mmdb: GeoIP2/GeoLite2-City, DBIP-City-Lite); overrides the "
        "database's setting.",
    ),
    Setting(
        "geoip_asn",
        "PEERWATCH_GEOIP_ASN",
        "the file set with `peerwatch geoip set --asn`, else none",
        "GeoIP ASN database (.mmdb: GeoLite2-ASN, DBIP-ASN-Lite); overrides the database's "
        "setting.",
    ),
    Setting(
        "retention_days",
        "PEERWATCH_RETENTION_DAYS",
        "180",
        "Days after which observations of targets never claimed (and in no operation) are "
        "purged by `peerwatch retention purge`.",
    ),
)


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    sensor_id: str
    geoip_city: Path | None = None  # City .mmdb overriding the one set with `peerwatch geoip set`
    geoip_asn: Path | None = None  # ASN .mmdb overriding the one set with `peerwatch geoip set`
    retention_days: int = 180  # purge never-claimed targets' observations older than this

    @property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @classmethod
    def resolve(
        cls,
        *,
        home: Path | None = None,
        database_url: str | None = None,
        sensor_id: str | None = None,
        geoip_city: Path | None = None,
        geoip_asn: Path | None = None,
        retention_days: int | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Settings:
        env = os.environ if environ is None else environ
        if home is None:
            home = Path(env.get("PEERWATCH_HOME") or platformdirs.user_data_dir("peerwatch"))
        home = home.expanduser()
        url = (
            database_url
            or env.get("PEERWATCH_DATABASE_URL")
            or f"sqlite:///{home / 'peerwatch.db'}"
        )
        return cls(
            home=home,
            database_url=url,
            sensor_id=sensor_id or env.get("PEERWATCH_SENSOR_ID") or "local",
            geoip_city=_path(geoip_city, env.get("PEERWATCH_GEOIP_CITY")),
            geoip_asn=_path(geoip_asn, env.get("PEERWATCH_GEOIP_ASN")),
            retention_days=_days(retention_days, env.get("PEERWATCH_RETENTION_DAYS")),
        )


def _path(given: Path | None, env_value: str | None) -> Path | None:
    if given is not None:
        return given.expanduser()
    return Path(env_value).expanduser() if env_value else None


def _days(given: int | None, env_value: str | None) -> int:
    if given is not None:
        return given
    if not env_value:
        return 180
    try:
        days = int(env_value)
    except ValueError:
        days = 0
    if days < 1:
        raise InputError(
            f"PEERWATCH_RETENTION_DAYS={env_value!r}: a whole number of days, at least 1"
        )
    return days
