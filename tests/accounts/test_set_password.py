"""`AccountStore.set_password` (the demo gives its account a new password at every run), on
SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from peerwatch.accounts.password import PasswordConfig
from peerwatch.accounts.store import AccountsConfig, AccountStore
from peerwatch.errors import InputError

OLD = "correct horse battery staple"  # test passwords
NEW = "another horse, another staple"


@pytest.fixture
def accounts(engine: Engine) -> AccountStore:
    fast = PasswordConfig(time_cost=1, memory_kib=8, parallelism=1)
    return AccountStore(engine, AccountsConfig(passwords=fast))


def test_new_password_replaces_the_old_and_ends_sessions(accounts: AccountStore) -> None:
    user, _ = accounts.add_user("demo", "coordinator", OLD, with_totp=False)
    token = accounts.open_session(user, stage="active", address="127.0.0.1")
    assert accounts.session(token) is not None
    with pytest.raises(InputError, match="at least 12 characters"):
        accounts.set_password("demo", "short")
    assert accounts.check_password("demo", OLD) is not None  # a refused password changes nothing
    accounts.set_password("demo", NEW)
    assert accounts.check_password("demo", OLD) is None
    assert accounts.check_password("demo", NEW) is not None
    assert accounts.session(token) is None  # a session opened with the old password is over
    with pytest.raises(InputError, match="no user 'nobody'"):
        accounts.set_password("nobody", NEW)
