"""Login rate limiting, per account and per client address, persisted in `login_attempts`.

Persisted rather than in memory so that a restart or a second server process does not reset an
attacker's count. Failed passwords and failed second-factor codes both count.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, and_, delete, func, insert, select

from peerwatch.storage.database import writer
from peerwatch.storage.schema import login_attempts


@dataclass(frozen=True)
class LoginLimitConfig:
    per_account: int = 5  # failures of one account name (since its last success) per window
    per_address: int = 20  # failures from one client address per window, whatever the account
    window_ms: int = 15 * 60_000  # the window: 15 minutes


class LoginLimiter:
    def __init__(self, engine: Engine, config: LoginLimitConfig) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self.config = config

    def retry_after_ms(self, account: str, address: str, now_ms: int) -> int:
        """0 when a login attempt may be made now, else how long to wait."""
        c = login_attempts.c
        since = now_ms - self.config.window_ms
        with self._engine.connect() as conn:
            last_ok = conn.execute(
                select(func.max(c.at_ms)).where(and_(c.account == account, c.ok.is_(True)))
            ).scalar()
            account_since = max(since, int(last_ok) + 1) if last_ok is not None else since
            waits = []
            for clause, limit, start in (
                (c.account == account, self.config.per_account, account_since),
                (c.address == address, self.config.per_address, since),
            ):
                times = conn.execute(
                    select(c.at_ms)
                    .where(and_(clause, c.ok.is_(False), c.at_ms >= start))
                    .order_by(c.at_ms.desc())
                    .limit(limit)
                ).all()
                if len(times) >= limit:
                    # Free again when the oldest of the last `limit` failures leaves the window.
                    waits.append(int(times[-1][0]) + self.config.window_ms - now_ms)
        return max([0, *waits])

    def record(self, account: str, address: str, ok: bool, now_ms: int) -> None:
        c = login_attempts.c
        with self._writer.begin() as conn:
            conn.execute(
                insert(login_attempts).values(at_ms=now_ms, account=account, address=address, ok=ok)
            )
            # Attempts older than the window count for nothing; the audit log keeps the history.
            conn.execute(delete(login_attempts).where(c.at_ms < now_ms - self.config.window_ms))
