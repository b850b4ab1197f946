"""Users, sessions and API tokens in the database (tables of migration 0005).

Secrets are never stored as given: passwords as argon2id hashes, session and API tokens as their
SHA-256 (they are 256-bit random values, so a fast hash is enough and lookups stay indexed).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine, RowMapping, and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from peerwatch.accounts import totp
from peerwatch.accounts.login_limit import LoginLimitConfig, LoginLimiter
from peerwatch.accounts.password import PasswordConfig, Passwords
from peerwatch.accounts.role import Principal, Role, parse_role
from peerwatch.accounts.secret_box import SecretBox
from peerwatch.errors import InputError
from peerwatch.storage.database import writer
from peerwatch.storage.schema import api_tokens, users, web_sessions

#: User and token names, and unit codes (at most `MAX_NAME` characters); the API's schema uses
#: the same patterns.
NAME_PATTERN = r"[a-z0-9][a-z0-9._@-]*"
UNIT_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]*"
MAX_NAME = 100
_NAME = re.compile(NAME_PATTERN)
_UNIT = re.compile(UNIT_PATTERN)
TOKEN_PREFIX = "pwt_"  # noqa: S105  # a marker that says what a string is, not a secret


class AccountExistsError(InputError):
    """The user or token name is taken."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class AccountsConfig:
    passwords: PasswordConfig = field(default_factory=PasswordConfig)
    login_limit: LoginLimitConfig = field(default_factory=LoginLimitConfig)
    session_ms: int = 8 * 3_600_000  # a session lasts one working day, then sign in again
    # An unattended browser signs itself out: a session unused this long is over.
    idle_ms: int = 30 * 60_000
    # Last use is written at most this often (a page load is several requests).
    touch_ms: int = 60_000
    totp_pending_ms: int = 5 * 60_000  # time to enter the second factor after the password


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    role: Role
    unit: str | None
    totp: bool  # a second factor is required
    disabled: bool
    created_ms: int

    def principal(self) -> Principal:
        return Principal(self.name, self.role, self.unit, self.id)


@dataclass(frozen=True, slots=True)
class Session:
    user: User
    stage: str  # "totp": password given, second factor pending; "active": signed in
    expires_ms: int


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: int
    name: str
    role: Role
    unit: str | None
    created_ms: int
    revoked_ms: int | None


def check_role_unit(role: str, unit: str | None) -> tuple[Role, str | None]:
    """An investigator belongs to exactly one unit; no other role has one."""
    try:
        r = parse_role(role)
    except ValueError as exc:
        raise InputError(str(exc), field="role") from None
    if r is Role.INVESTIGATOR:
        if not unit:
            raise InputError("an investigator needs --unit (the unit code)", field="unit")
        if len(unit) > MAX_NAME or not _UNIT.fullmatch(unit):
            raise InputError(f"unit code {unit!r} is not valid", field="unit")
        return r, unit
    if unit:
        raise InputError(f"only investigators have a unit; a {r.value} has none", field="unit")
    return r, None


def is_name(text: str) -> bool:
    return len(text) <= MAX_NAME and _NAME.fullmatch(text) is not None


def check_name(name: str, what: str = "user") -> str:
    if len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise InputError(
            f"{what} name {name!r} must be 1-100 lowercase letters, digits or . _ @ - "
            "(starting with a letter or digit)",
            field="name",
        )
    return name


class AccountStore:
    def __init__(
        self,
        engine: Engine,
        config: AccountsConfig | None = None,
        clock_ms: Callable[[], int] = now_ms,
        secret_box: SecretBox | None = None,
    ) -> None:
        """`secret_box` seals TOTP secrets at rest (the app passes the box of HOME/keys); without
        it they are stored as they are (tests)."""
        self.config = config or AccountsConfig()
        self._secrets = secret_box
        self._engine = engine
        self._writer = writer(engine)
        self._clock_ms = clock_ms
        self.passwords = Passwords(self.config.passwords)
        self.limiter = LoginLimiter(engine, self.config.login_limit)

    def now_ms(self) -> int:
        return self._clock_ms()

    # --- users ---

    def add_user(
        self, name: str, role: str, password: str, *, unit: str | None = None, with_totp: bool
    ) -> tuple[User, str | None]:
        """Create an account; return it and its TOTP secret (when asked for) to show once."""
        check_name(name)
        r, unit = check_role_unit(role, unit)
        problem = self.passwords.policy_problem(password)
        if problem:
            raise InputError(problem, field="password")
        secret = totp.new_secret() if with_totp else None
        try:
            with self._writer.begin() as conn:
                conn.execute(
                    insert(users).values(
                        name=name,
                        role=r.value,
                        unit=unit,
                        password_hash=self.passwords.hash(password),
                        totp_secret=(
                            self._secrets.seal(secret, name)
                            if secret is not None and self._secrets is not None
                            else secret
                        ),
                        totp_last_step=None,
                        disabled=False,
                        created_ms=self._clock_ms(),
                    )
                )
        except IntegrityError:
            raise AccountExistsError(f"user {name!r} already exists", field="name") from None
        user = self.user(name)
        assert user is not None  # just inserted in a committed transaction
        return user, secret

    def users(self) -> list[User]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(users).order_by(users.c.name)).all()
        return [_user(r._mapping) for r in rows]

    def user(self, name: str) -> User | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).first()
        return None if row is None else _user(row._mapping)

    def set_disabled(self, name: str, disabled: bool) -> None:
        with self._writer.begin() as conn:
            done = conn.execute(
                update(users).where(users.c.name == name).values(disabled=disabled)
            ).rowcount
            if not done:
                raise InputError(f"no user {name!r}", field="name")
            if disabled:
                ids = select(users.c.id).where(users.c.name == name).scalar_subquery()
                conn.execute(delete(web_sessions).where(web_sessions.c.user_id == ids))

    def reset_totp(self, name: str) -> str:
        """Give an account a new TOTP secret (lost phone, lost key file); returns it to show once.
        Its sessions end now and the old secret's codes stop working."""
        secret = totp.new_secret()
        stored = self._secrets.seal(secret, name) if self._secrets is not None else secret
        with self._writer.begin() as conn:
            done = conn.execute(
                update(users)
                .where(users.c.name == name)
                .values(totp_secret=stored, totp_last_step=None)
            ).rowcount
            if not done:
                raise InputError(f"no user {name!r}", field="name")
            ids = select(users.c.id).where(users.c.name == name).scalar_subquery()
            conn.execute(delete(web_sessions).where(web_sessions.c.user_id == ids))
        return secret

    def set_password(self, name: str, password: str) -> None:
        """Replace an account's password (same policy as a new one); its sessions end now."""
        problem = self.passwords.policy_problem(password)
        if problem:
            raise InputError(problem, field="password")
        with self._writer.begin() as conn:
            done = conn.execute(
                update(users)
                .where(users.c.name == name)
                .values(password_hash=self.passwords.hash(password))
            ).rowcount
            if not done:
                raise InputError(f"no user {name!r}", field="name")
            ids = select(users.c.id).where(users.c.name == name).scalar_subquery()
            conn.execute(delete(web_sessions).where(web_sessions.c.user_id == ids))

    def check_password(self, name: str, password: str) -> User | None:
        """The user when the password is right and the account enabled. Takes the same time for
        an unknown name as for a wrong password."""
        with self._engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).first()
        stored = None if row is None else str(row._mapping["password_hash"])
        if not self.passwords.verify(stored, password) or row is None:
            return None
        user = _user(row._mapping)
        if user.disabled:
            return None
        if stored is not None and self.passwords.needs_rehash(stored):
            with self._writer.begin() as conn:
                conn.execute(
                    update(users)
                    .where(users.c.id == user.id)
                    .values(password_hash=self.passwords.hash(password))
                )
        return user

    def check_totp(self, user: User, code: str) -> bool:
        """Accept a code once (the step is recorded in the same compare-and-set)."""
        with self._writer.begin() as conn:
            row = conn.execute(
                select(users.c.totp_secret, users.c.totp_last_step).where(users.c.id == user.id)
            ).first()
            if row is None or row[0] is None:
                return False
            last = None if row[1] is None else int(row[1])
            secret = str(row[0])
            if self._secrets is not None:
                secret = self._secrets.open(secret, user.name)
            step = totp.accepted_step(secret, code, self._clock_ms(), last)
            if step is None:
                return False
            last_clause = (
                users.c.totp_last_step.is_(None) if last is None else users.c.totp_last_step == last
            )
            done = conn.execute(
                update(users)
                .where(and_(users.c.id == user.id, last_clause))
                .values(totp_last_step=step)
            ).rowcount
        return bool(done)

    # --- sessions ---

    def open_session(self, user: User, *, stage: str, address: str | None) -> str:
        """A new session token (for the cookie); only its digest is stored."""
        token = secrets.token_urlsafe(32)
        now = self._clock_ms()
        ttl = self.config.totp_pending_ms if stage == "totp" else self.config.session_ms
        with self._writer.begin() as conn:
            conn.execute(delete(web_sessions).where(web_sessions.c.expires_ms < now))
            conn.execute(
                insert(web_sessions).values(
                    token_sha256=token_digest(token),
                    user_id=user.id,
                    stage=stage,
                    created_ms=now,
                    expires_ms=now + ttl,
                    last_seen_ms=now,
                    address=address[:64] if address else None,
                )
            )
        return token

    def session(self, token: str) -> Session | None:
        """The live session of a cookie token, or None (unknown, expired, idle for longer than
        `idle_ms`, or account disabled). Using a live session keeps it from going idle."""
        s = web_sessions.c
        digest = token_digest(token)
        with self._engine.connect() as conn:
            row = conn.execute(
                select(
                    users,
                    s.stage,
                    s.expires_ms,
                    s.created_ms.label("session_created_ms"),
                    s.last_seen_ms.label("session_seen_ms"),
                )
                .join(web_sessions, s.user_id == users.c.id)
                .where(s.token_sha256 == digest)
            ).first()
        if row is None:
            return None
        m = row._mapping
        user = _user(m)
        now = self._clock_ms()
        seen = int(
            m["session_seen_ms"] if m["session_seen_ms"] is not None else m["session_created_ms"]
        )
        if int(m["expires_ms"]) <= now or user.disabled or now - seen > self.config.idle_ms:
            return None
        if now - seen >= self.config.touch_ms:
            with self._writer.begin() as conn:
                conn.execute(
                    update(web_sessions).where(s.token_sha256 == digest).values(last_seen_ms=now)
                )
        return Session(user, str(m["stage"]), int(m["expires_ms"]))

    def close_session(self, token: str) -> None:
        with self._writer.begin() as conn:
            conn.execute(
                delete(web_sessions).where(web_sessions.c.token_sha256 == token_digest(token))
            )

    # --- API tokens ---

    def add_token(self, name: str, role: str, *, unit: str | None = None) -> tuple[ApiToken, str]:
        """Create a named token; return it and its secret value (shown once, stored hashed)."""
        check_name(name, "token")
        r, unit = check_role_unit(role, unit)
        value = TOKEN_PREFIX + secrets.token_urlsafe(32)
        try:
            with self._writer.begin() as conn:
                conn.execute(
                    insert(api_tokens).values(
                        name=name,
                        token_sha256=token_digest(value),
                        role=r.value,
                        unit=unit,
                        created_ms=self._clock_ms(),
                        revoked_ms=None,
                    )
                )
        except IntegrityError:
            raise AccountExistsError(f"token {name!r} already exists", field="name") from None
        (token,) = [t for t in self.tokens() if t.name == name]
        return token, value

    def tokens(self) -> list[ApiToken]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(api_tokens).order_by(api_tokens.c.name)).all()
        return [
            ApiToken(
                id=int(m["id"]),
                name=str(m["name"]),
                role=Role(m["role"]),
                unit=m["unit"],
                created_ms=int(m["created_ms"]),
                revoked_ms=None if m["revoked_ms"] is None else int(m["revoked_ms"]),
            )
            for m in (r._mapping for r in rows)
        ]

    def revoke_token(self, name: str) -> None:
        with self._writer.begin() as conn:
            done = conn.execute(
                update(api_tokens)
                .where(and_(api_tokens.c.name == name, api_tokens.c.revoked_ms.is_(None)))
                .values(revoked_ms=self._clock_ms())
            ).rowcount
        if not done:
            raise InputError(f"no live token {name!r}", field="name")

    def token_principal(self, value: str) -> Principal | None:
        if not value.startswith(TOKEN_PREFIX):
            return None
        t = api_tokens.c
        with self._engine.connect() as conn:
            row = conn.execute(
                select(t.name, t.role, t.unit).where(
                    and_(t.token_sha256 == token_digest(value), t.revoked_ms.is_(None))
                )
            ).first()
        if row is None:
            return None
        return Principal(f"token:{row[0]}", Role(row[1]), row[2], None)


def _user(m: RowMapping) -> User:
    return User(
        id=int(m["id"]),
        name=str(m["name"]),
        role=Role(m["role"]),
        unit=m["unit"],
        totp=m["totp_secret"] is not None,
        disabled=bool(m["disabled"]),
        created_ms=int(m["created_ms"]),
    )
