"""The composition root (house rule 6): the one place that builds components and wires them."""

from __future__ import annotations

from functools import cached_property

from sqlalchemy import Engine

from peerwatch.evidence.keys import SensorKey, load_or_create
from peerwatch.evidence.log import EvidenceLog
from peerwatch.settings import Settings
from peerwatch.storage.database import make_engine, migrate
from peerwatch.watchlist.store import WatchlistStore


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def engine(self) -> Engine:
        if self.settings.database_url.startswith("sqlite"):
            self.settings.home.mkdir(parents=True, exist_ok=True)
        engine = make_engine(self.settings.database_url)
        migrate(engine)
        return engine

    @cached_property
    def watchlist(self) -> WatchlistStore:
        return WatchlistStore(self.engine)

    @cached_property
    def sensor_key(self) -> SensorKey:
        return load_or_create(self.settings.keys_dir, self.settings.sensor_id)

    @cached_property
    def evidence(self) -> EvidenceLog:
        return EvidenceLog(self.engine, self.sensor_key)

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()
