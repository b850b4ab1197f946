"""The composition root (house rule 6): the one place that builds components and wires them."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from sqlalchemy import Engine

from peerwatch.accounts.secret_box import SecretBox
from peerwatch.accounts.store import AccountStore
from peerwatch.audit.log import AuditLog
from peerwatch.enrich.geoip import GeoIP, GeoIPConfig
from peerwatch.enrich.jurisdictions import JurisdictionStore
from peerwatch.enrich.netflags import NetFlagStore
from peerwatch.enrich.placement import Enricher
from peerwatch.evidence.keys import SensorKey, load_or_create
from peerwatch.evidence.log import EvidenceLog
from peerwatch.leads.alerts import Alerts
from peerwatch.leads.operation import Operations, watchlist_categories
from peerwatch.leads.retention import Retention, RetentionConfig
from peerwatch.leads.targets import TargetStore
from peerwatch.leads.workflow import LeadWorkflow, WorkflowConfig
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

    @cached_property
    def geoip_config(self) -> GeoIPConfig:
        return GeoIPConfig(self.engine)

    @cached_property
    def netflags(self) -> NetFlagStore:
        return NetFlagStore(self.engine)

    @cached_property
    def jurisdictions(self) -> JurisdictionStore:
        return JurisdictionStore(self.engine)

    @cached_property
    def geoip(self) -> GeoIP | None:
        """The GeoIP databases: the settings' paths, else those set with `peerwatch geoip set`."""
        configured = self.geoip_config.active()
        city = self.settings.geoip_city or (
            Path(configured["city"].info.path) if "city" in configured else None
        )
        asn = self.settings.geoip_asn or (
            Path(configured["asn"].info.path) if "asn" in configured else None
        )
        if city is None and asn is None:
            return None
        return GeoIP(city, asn)

    @cached_property
    def enricher(self) -> Enricher:
        """Places IP addresses: GeoIP, network flags, jurisdiction, unit (docs/enrichment.md)."""
        return Enricher(
            geo=self.geoip,
            netflags=self.netflags.snapshot(),
            jurisdictions=self.jurisdictions.snapshot(),
        )

    @cached_property
    def targets(self) -> TargetStore:
        """Observations grouped into targets, placed and scored (docs/leads.md)."""
        return TargetStore(self.engine, self.enricher, self.watchlist)

    @cached_property
    def leads(self) -> LeadWorkflow:
        """Claims, transfers and states of leads, with their history (docs/operations.md)."""
        units = self.jurisdictions

        def unit_exists(code: str) -> bool:
            known = {u.code for u in units.list_units()}
            # Before any units are imported, claims name units freely.
            return not known or code in known

        return LeadWorkflow(self.engine, WorkflowConfig(unit_exists=unit_exists))

    @cached_property
    def alerts(self) -> Alerts:
        """New leads per unit and held targets seen again (docs/operations.md)."""
        return Alerts(self.engine, self.targets, self.leads)

    @cached_property
    def operations(self) -> Operations:
        """National operations: frozen leads, dispatched per unit (docs/operations.md)."""
        return Operations(
            self.engine,
            self.targets,
            self.leads,
            categories=watchlist_categories(self.watchlist),
        )

    @cached_property
    def retention(self) -> Retention:
        """Purges old observations of unclaimed targets; the chain stays (docs/operations.md)."""
        targets = self.targets
        return Retention(
            self.engine,
            RetentionConfig(days=self.settings.retention_days),
            # The targets' links, items and summaries must forget the purged addresses too.
            forget=lambda conn, _keys, ids: targets.rebuild_targets(conn, ids),
        )

    @cached_property
    def accounts(self) -> AccountStore:
        """Users, sessions, API tokens and login rate limits of the web app (docs/webapp.md)."""
        box = SecretBox.load_or_create(self.settings.keys_dir)  # TOTP secrets sealed at rest
        return AccountStore(self.engine, secret_box=box)

    @cached_property
    def audit(self) -> AuditLog:
        """The hash-chained audit log: views, exports, claims, logins (docs/webapp.md)."""
        return AuditLog(self.engine)

    def close(self) -> None:
        geoip = self.__dict__.get("geoip")
        if geoip is not None:
            geoip.close()
        if "engine" in self.__dict__:
            self.engine.dispose()
