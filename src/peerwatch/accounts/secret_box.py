"""TOTP secrets sealed at rest: a copy of the database alone gives no second factor.

A TOTP secret must be readable to check codes, so it cannot be hashed like a password. It is
sealed with AES-256-GCM under a key that lives in ``HOME/keys/accounts-secret.key`` (created once,
mode 0600), never in the database, and bound to the account's name as associated data, so a
sealed secret copied into another account's row does not open. Stored form:
``aesgcm1:<base64 of 12-byte nonce + ciphertext + 16-byte tag>``.

A secret stored before sealing existed (plain base32, migration 0008 widened the column) is read
as it is; it is sealed the next time that account gets a new secret. Losing the key file makes
every sealed secret unreadable: an administrator then gives the accounts new secrets
(docs/webapp.md).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from peerwatch.errors import PeerwatchError

KEY_FILE = "accounts-secret.key"
PREFIX = "aesgcm1:"
_AAD = b"peerwatch totp secret for "


class SecretBoxError(PeerwatchError):
    """A sealed secret that does not open with this key (another key, or altered)."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the accounts key is 32 bytes")
        self._aead = AESGCM(key)

    @classmethod
    def load_or_create(cls, keys_dir: Path) -> SecretBox:
        path = keys_dir / KEY_FILE
        if path.exists():
            key = bytes.fromhex(path.read_text().strip())
            if len(key) != 32:
                raise SecretBoxError(f"{path} does not hold a 32-byte key (64 hex digits)")
            return cls(key)
        keys_dir.mkdir(parents=True, exist_ok=True)
        key = os.urandom(32)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key.hex() + "\n")
        tmp.replace(path)
        return cls(key)

    def seal(self, secret: str, account: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), _AAD + account.encode())
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, stored: str, account: str) -> str:
        """The secret of `account`; a value stored before sealing is returned as it is."""
        if not stored.startswith(PREFIX):
            return stored
        raw = base64.b64decode(stored[len(PREFIX) :])
        try:
            plain = self._aead.decrypt(raw[:12], raw[12:], _AAD + account.encode())
        except InvalidTag:
            raise SecretBoxError(
                f"the TOTP secret of {account!r} does not open with this key (another HOME's "
                "key, or the row was altered)"
            ) from None
        return plain.decode()
