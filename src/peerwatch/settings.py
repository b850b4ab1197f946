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
)


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    sensor_id: str

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
        )
