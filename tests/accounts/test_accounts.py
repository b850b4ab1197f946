"""Accounts on SQLite and PostgreSQL: users, passwords, TOTP, sessions, tokens, rate limits,
roles and scopes."""

from __future__ import annotations

import hashlib

import pyotp
import pytest
from sqlalchemy import Engine, select

from peerwatch.accounts.login_limit import LoginLimitConfig
from peerwatch.accounts.password import PasswordConfig
from peerwatch.accounts.role import PERMISSIONS, Permission, Principal, Role, Scope
from peerwatch.accounts.store import AccountsConfig, AccountStore
from peerwatch.errors import InputError
from peerwatch.storage.schema import api_tokens, users, web_sessions

PASSWORD = "correct horse battery staple"  # noqa: S105  # the test accounts' password
T0 = 1_764_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def accounts(engine: Engine, clock: Clock) -> AccountStore:
    config = AccountsConfig(
        passwords=PasswordConfig(time_cost=1, memory_kib=8, parallelism=1),
        login_limit=LoginLimitConfig(per_account=3, per_address=5, window_ms=60_000),
    )
    return AccountStore(engine, config, clock_ms=clock)


def test_roles_units_and_names_are_checked(accounts: AccountStore) -> None:
    cases = [
        (("a", "investigator", PASSWORD), {}, "needs --unit"),
        (("a", "auditor", PASSWORD), {"unit": "U75"}, "only investigators have a unit"),
        (("a", "superuser", PASSWORD), {}, "unknown role 'superuser'"),
        (("a", "admin", "short"), {}, "at least 12 characters"),
        (("Bad Name", "admin", PASSWORD), {}, "lowercase"),
        (("a", "investigator", PASSWORD), {"unit": "U 75"}, "not valid"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(InputError, match=message):
            accounts.add_user(*args, with_totp=False, **kwargs)
    user, secret = accounts.add_user("a", "investigator", PASSWORD, unit="U75", with_totp=False)
    assert (user.role, user.unit, user.totp, secret) == (Role.INVESTIGATOR, "U75", False, None)
    with pytest.raises(InputError, match="already exists"):
        accounts.add_user("a", "admin", PASSWORD, with_totp=False)
    assert [u.name for u in accounts.users()] == ["a"]


def test_passwords_are_argon2id_hashes(engine: Engine, accounts: AccountStore) -> None:
    accounts.add_user("alice", "coordinator", PASSWORD, with_totp=False)
    with engine.connect() as conn:
        stored = conn.execute(select(users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert accounts.check_password("alice", PASSWORD) is not None
    assert accounts.check_password("alice", PASSWORD + "x") is None
    assert accounts.check_password("bob", PASSWORD) is None
    accounts.set_disabled("alice", True)
    assert accounts.check_password("alice", PASSWORD) is None


def test_totp_codes_are_accepted_once_within_one_step_of_drift(
    accounts: AccountStore, clock: Clock
) -> None:
    user, secret = accounts.add_user("t", "auditor", PASSWORD, with_totp=True)
    assert secret is not None and user.totp
    otp = pyotp.TOTP(secret)
    now_s = clock.now // 1000
    assert not accounts.check_totp(user, otp.at(now_s - 60))  # two steps old
    assert not accounts.check_totp(user, "12345")  # not six digits
    assert accounts.check_totp(user, otp.at(now_s - 30))  # one step of drift
    assert accounts.check_totp(user, otp.at(now_s))
    assert not accounts.check_totp(user, otp.at(now_s))  # replay
    assert not accounts.check_totp(user, otp.at(now_s - 30))  # older than the last used
    clock.now += 30_000
    assert accounts.check_totp(user, otp.at(clock.now // 1000))


def test_sessions_are_stored_hashed_and_expire(
    engine: Engine, accounts: AccountStore, clock: Clock
) -> None:
    user, _ = accounts.add_user("s", "coordinator", PASSWORD, with_totp=False)
    token = accounts.open_session(user, stage="active", address="127.0.0.1")
    with engine.connect() as conn:
        (digest,) = conn.execute(select(web_sessions.c.token_sha256)).scalars().all()
    assert bytes(digest) == hashlib.sha256(token.encode()).digest()
    session = accounts.session(token)
    assert session is not None and session.user.name == "s" and session.stage == "active"
    assert accounts.session(token + "x") is None
    clock.now += 8 * 3_600_000
    assert accounts.session(token) is None
    token = accounts.open_session(user, stage="totp", address=None)
    assert accounts.session(token) is not None
    accounts.close_session(token)
    assert accounts.session(token) is None


def test_an_idle_session_ends_and_use_keeps_it_alive(
    engine: Engine, accounts: AccountStore, clock: Clock
) -> None:
    user, _ = accounts.add_user("idle", "investigator", PASSWORD, with_totp=False, unit="U13")
    token = accounts.open_session(user, stage="active", address="127.0.0.1")
    # Used every 20 minutes for 6 hours: alive all along (idle limit 30 minutes).
    for _ in range(18):
        clock.now += 20 * 60_000
        assert accounts.session(token) is not None
    with engine.connect() as conn:
        seen = conn.execute(select(web_sessions.c.last_seen_ms)).scalar_one()
    assert seen == clock.now
    # Then left alone for 31 minutes: over, and using it again does not revive it.
    clock.now += 31 * 60_000
    assert accounts.session(token) is None
    # Two uses a few seconds apart write the last use once (at most once a minute).
    other = accounts.open_session(user, stage="active", address=None)
    clock.now += 5_000
    assert accounts.session(other) is not None
    with engine.connect() as conn:
        rows = {
            bytes(k): v
            for k, v in conn.execute(
                select(web_sessions.c.token_sha256, web_sessions.c.last_seen_ms)
            ).all()
        }
    assert rows[hashlib.sha256(other.encode()).digest()] == clock.now - 5_000


def test_api_tokens_are_hashed_scoped_and_revocable(engine: Engine, accounts: AccountStore) -> None:
    token, value = accounts.add_token("sensor-1", "investigator", unit="U13")
    assert value.startswith("pwt_") and len(value) > 40
    with engine.connect() as conn:
        stored = bytes(conn.execute(select(api_tokens.c.token_sha256)).scalar_one())
    assert stored == hashlib.sha256(value.encode()).digest()
    principal = accounts.token_principal(value)
    assert principal == Principal("token:sensor-1", Role.INVESTIGATOR, "U13", None)
    assert principal.scope == Scope.of({"U13"})
    assert accounts.token_principal(value[4:]) is None
    assert accounts.token_principal("pwt_" + "A" * 43) is None
    with pytest.raises(InputError, match="already exists"):
        accounts.add_token("sensor-1", "auditor")
    accounts.revoke_token("sensor-1")
    assert accounts.token_principal(value) is None
    with pytest.raises(InputError, match="no live token"):
        accounts.revoke_token("sensor-1")
    assert token.name == "sensor-1"


def test_login_limits_per_account_and_per_address(accounts: AccountStore, clock: Clock) -> None:
    limiter = accounts.limiter
    for _ in range(3):
        assert limiter.retry_after_ms("alice", "10.0.0.1", clock.now) == 0
        limiter.record("alice", "10.0.0.1", False, clock.now)
        clock.now += 1_000
    # Three failures in the minute: alice waits until the first leaves the window.
    assert limiter.retry_after_ms("alice", "10.0.0.2", clock.now) == 60_000 - 3_000
    assert limiter.retry_after_ms("bob", "10.0.0.2", clock.now) == 0
    # The address has 3 failures of its 5; two more on other names block every name from it.
    limiter.record("carol", "10.0.0.1", False, clock.now)
    limiter.record("dave", "10.0.0.1", False, clock.now)
    assert limiter.retry_after_ms("erin", "10.0.0.1", clock.now) > 0
    assert limiter.retry_after_ms("erin", "10.0.0.9", clock.now) == 0
    clock.now += 60_000
    assert limiter.retry_after_ms("alice", "10.0.0.1", clock.now) == 0


def test_a_success_clears_the_account_count(accounts: AccountStore, clock: Clock) -> None:
    limiter = accounts.limiter
    for _ in range(2):
        limiter.record("alice", "10.0.0.1", False, clock.now)
        clock.now += 1
    limiter.record("alice", "10.0.0.1", True, clock.now)
    clock.now += 1
    limiter.record("alice", "10.0.0.1", False, clock.now)
    assert limiter.retry_after_ms("alice", "10.0.0.7", clock.now) == 0


def test_scopes_by_role() -> None:
    assert Principal("c", Role.COORDINATOR, None).scope.is_everything
    inv = Principal("i", Role.INVESTIGATOR, "U75")
    assert inv.scope == Scope.of({"U75"})
    assert inv.scope.allows("U75") and not inv.scope.allows("U13")
    assert not inv.scope.allows(None)  # unrouted targets are national
    for role in (Role.AUDITOR, Role.ADMIN):
        scope = Principal("x", role, None).scope
        assert scope.units == frozenset() and not scope.allows("U75") and not scope.allows(None)
    assert PERMISSIONS[Role.AUDITOR] == {Permission.READ_AUDIT}
    assert not any(Permission.READ_TARGETS in PERMISSIONS[r] for r in (Role.AUDITOR, Role.ADMIN))
