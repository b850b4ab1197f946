"""TOTP secrets are sealed at rest (accounts/secret_box.py): the database alone gives no second
factor, a sealed secret opens only for its own account and key, and secrets stored before
sealing still work."""

from __future__ import annotations

import stat
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import Engine, select, update

from peerwatch.accounts.password import PasswordConfig
from peerwatch.accounts.secret_box import KEY_FILE, PREFIX, SecretBox, SecretBoxError
from peerwatch.accounts.store import AccountsConfig, AccountStore
from peerwatch.errors import InputError
from peerwatch.storage.schema import users

PASSWORD = "correct horse battery staple 42"  # noqa: S105  # the test accounts' password
FAST = AccountsConfig(passwords=PasswordConfig(time_cost=1, memory_kib=8, parallelism=1))


def _store(engine: Engine, keys: Path) -> AccountStore:
    return AccountStore(engine, FAST, secret_box=SecretBox.load_or_create(keys))


def _stored(engine: Engine, name: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(select(users.c.totp_secret).where(users.c.name == name)).scalar())


def test_the_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    box = SecretBox.load_or_create(tmp_path)
    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    sealed = box.seal("JBSWY3DPEHPK3PXP", "alice")
    assert SecretBox.load_or_create(tmp_path).open(sealed, "alice") == "JBSWY3DPEHPK3PXP"
    path.write_text("00" * 16 + "\n")
    with pytest.raises(SecretBoxError, match="32-byte key"):
        SecretBox.load_or_create(tmp_path)


def test_secrets_are_sealed_in_the_database_and_codes_still_work(
    engine: Engine, tmp_path: Path
) -> None:
    accounts = _store(engine, tmp_path / "keys")
    user, secret = accounts.add_user("alice", "investigator", PASSWORD, unit="U75", with_totp=True)
    assert secret is not None
    stored = _stored(engine, "alice")
    assert stored.startswith(PREFIX) and secret not in stored  # not in the clear
    assert accounts.check_totp(user, pyotp.TOTP(secret).at(accounts.now_ms() // 1000))
    # Another HOME's key does not open it: the database alone is not enough.
    other = _store(engine, tmp_path / "other-keys")
    with pytest.raises(SecretBoxError, match="does not open"):
        other.check_totp(user, "000000")


def test_a_sealed_secret_copied_to_another_account_does_not_open(
    engine: Engine, tmp_path: Path
) -> None:
    accounts = _store(engine, tmp_path / "keys")
    accounts.add_user("alice", "investigator", PASSWORD, unit="U75", with_totp=True)
    bob, _ = accounts.add_user("bob", "investigator", PASSWORD, unit="U13", with_totp=True)
    with engine.begin() as conn:
        conn.execute(
            update(users).where(users.c.name == "bob").values(totp_secret=_stored(engine, "alice"))
        )
    with pytest.raises(SecretBoxError, match="'bob'"):
        accounts.check_totp(bob, "000000")


def test_a_secret_stored_before_sealing_still_works(engine: Engine, tmp_path: Path) -> None:
    plain = AccountStore(engine, FAST)  # as before sealing existed
    user, secret = plain.add_user("carol", "coordinator", PASSWORD, with_totp=True)
    assert secret is not None and _stored(engine, "carol") == secret
    accounts = _store(engine, tmp_path / "keys")
    assert accounts.check_totp(user, pyotp.TOTP(secret).at(accounts.now_ms() // 1000))


def test_reset_totp_seals_a_new_secret_and_ends_sessions(engine: Engine, tmp_path: Path) -> None:
    accounts = _store(engine, tmp_path / "keys")
    user, old = accounts.add_user("dave", "investigator", PASSWORD, unit="U13", with_totp=True)
    assert old is not None
    token = accounts.open_session(user, stage="active", address=None)
    new = accounts.reset_totp("dave")
    assert new != old and _stored(engine, "dave").startswith(PREFIX)
    assert accounts.session(token) is None
    now = accounts.now_ms() // 1000
    assert not accounts.check_totp(user, pyotp.TOTP(old).at(now))
    assert accounts.check_totp(user, pyotp.TOTP(new).at(now))
    with pytest.raises(InputError, match="no user"):
        accounts.reset_totp("nobody")
