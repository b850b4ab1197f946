"""The web app over a real App on SQLite and PostgreSQL, with real targets in two units.

Targets come from the real `TargetStore` fed by a real evidence log (tests/leads/targets_support:
the product's Enricher over a stand-in GeoIP table), so the scope tests exercise the real query.
Passwords use cheap argon2 parameters and the clock is the test's, so that expiry, rate limits
and TOTP steps can be reached without waiting.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from peerwatch.accounts.password import PasswordConfig
from peerwatch.accounts.store import AccountsConfig, AccountStore
from peerwatch.app import App
from peerwatch.audit.log import AuditLog
from peerwatch.settings import Settings
from peerwatch.web.context import WebConfig
from peerwatch.web.site import create_app
from tests.leads.targets_support import T0, enricher, log, probe, store

PASSWORD = "correct horse battery staple"  # noqa: S105  # the test accounts' password
FAST = AccountsConfig(passwords=PasswordConfig(time_cost=1, memory_kib=8, parallelism=1))

GEO = {
    "127.0.1.0/24": ("75", 64500),  # unit U75
    "127.0.2.0/24": ("13", 64500),  # unit U13
}

#: Every account of the tests: name -> (role, unit).
USERS = {
    "coord": ("coordinator", None),
    "inv75": ("investigator", "U75"),
    "inv13": ("investigator", "U13"),
    "auditor": ("auditor", None),
    "admin": ("admin", None),
}


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


@dataclass
class Site:
    app: App
    config: WebConfig
    clock: Clock
    targets: dict[str, list[int]] = field(default_factory=dict)  # unit ("-" unrouted) -> ids

    def client(self) -> TestClient:
        return TestClient(create_app(self.app, self.config))

    def signed_in(self, name: str) -> TestClient:
        client = self.client()
        response = login(client, name)
        assert response.status_code == 303 and response.headers["location"] == "/", response.text
        return client


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]*)"', html)
    assert match is not None, "the page has no CSRF field"
    return match.group(1)


def login(client: TestClient, name: str, password: str = PASSWORD) -> httpx.Response:
    page = client.get("/login")
    response: httpx.Response = client.post(
        "/login",
        data={"name": name, "password": password, "csrf": csrf_of(page.text)},
        follow_redirects=False,
    )
    return response


def make_app(engine: Engine, home: Path, clock: Clock) -> App:
    """The product's App with the test's database, clock and cheap password hashing injected
    in place of what the composition root would build (cached properties)."""
    app = App(Settings.resolve(home=home, environ={}))
    app.__dict__["engine"] = engine
    app.__dict__["accounts"] = AccountStore(engine, FAST, clock_ms=clock)
    app.__dict__["audit"] = AuditLog(engine, clock_ms=clock)
    return app


@pytest.fixture
def site(engine: Engine, tmp_path: Path) -> Iterator[Site]:
    clock = Clock(T0)
    app = make_app(engine, tmp_path / "home", clock)
    log(engine, tmp_path / "keys").append(
        [
            probe(T0 - 3_000, "127.0.1.10", 51413, "A/1"),
            probe(T0 - 2_000, "127.0.1.11", 51414, "B/1", content=2),
            probe(T0 - 1_000, "127.0.2.20", 6881, "C/1"),
            probe(T0 - 500, "100.64.0.7", 6881, "D/1"),  # CGNAT: placed nowhere, no unit
        ]
    )
    targets = store(engine, enricher(GEO))
    targets.refresh()
    app.__dict__["targets"] = targets
    for name, (role, unit) in USERS.items():
        app.accounts.add_user(name, role, PASSWORD, unit=unit, with_totp=False)
    s = Site(app, WebConfig(), clock)
    for t in targets.ranked():
        s.targets.setdefault(t.unit or "-", []).append(t.id)
    assert sorted(len(v) for v in s.targets.values()) == [1, 1, 2], s.targets
    yield s
