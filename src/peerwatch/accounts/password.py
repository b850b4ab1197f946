"""Password hashes: argon2id (RFC 9106) through argon2-cffi, stored as PHC strings."""

from __future__ import annotations

from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


@dataclass(frozen=True)
class PasswordConfig:
    min_length: int = 12  # NIST SP 800-63B allows 8; investigators' accounts open case data
    time_cost: int = 3  # argon2 passes (argon2-cffi's default, RFC 9106 second recommendation)
    memory_kib: int = 65536  # argon2 memory (64 MiB)
    parallelism: int = 4


class Passwords:
    def __init__(self, config: PasswordConfig) -> None:
        self.config = config
        self._hasher = PasswordHasher(
            time_cost=config.time_cost,
            memory_cost=config.memory_kib,
            parallelism=config.parallelism,
        )
        # Checked against when the account does not exist, so that a wrong name costs the same
        # time as a wrong password and timing does not tell which names exist.
        self._dummy = self._hasher.hash("not a password of anyone")

    def policy_problem(self, password: str) -> str | None:
        # Length only (NIST SP 800-63B 5.1.1.2): any character, spaces included, is allowed.
        if len(password) < self.config.min_length:
            return f"the password must have at least {self.config.min_length} characters"
        return None

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)
