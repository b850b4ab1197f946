"""Sensor signing keys (Ed25519), made on first use and kept in the peerwatch home directory."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import nacl.bindings
import nacl.exceptions
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from peerwatch.errors import EvidenceError

# Below this many messages, starting threads costs more than it saves.
_PARALLEL_MIN = 512
T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class SensorKey:
    """A sensor's Ed25519 key.

    Key files are read and written with `cryptography` (PEM, PKCS#8); signatures are made with
    libsodium through PyNaCl, which signs about 2.3 times as fast on this project's machines and
    releases the GIL, so large batches are signed on every core (docs/evidence.md, benchmarks).
    Both implement RFC 8032 Ed25519: the signatures are the same bytes.
    """

    sensor_id: str
    private: Ed25519PrivateKey
    _secret: bytes = field(init=False, repr=False)  # libsodium's 64-byte form: seed || public

    def __post_init__(self) -> None:
        seed = self.private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        object.__setattr__(self, "_secret", seed + public_raw(self.private.public_key()))

    @property
    def public_raw(self) -> bytes:
        return self._secret[32:]

    def sign(self, message: bytes) -> bytes:
        return bytes(nacl.bindings.crypto_sign(message, self._secret)[:64])

    def sign_many(self, messages: Sequence[bytes]) -> list[bytes]:
        """Signatures of `messages`, in order; large batches are signed by several threads."""
        return _map_in_threads(self.sign, messages)

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def public_raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# Sensor ids name files and appear in tab-separated bundle files: keep them to a safe alphabet.
_SENSOR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_sensor_id(sensor_id: str) -> str:
    if not _SENSOR_ID.fullmatch(sensor_id):
        raise EvidenceError(
            f"sensor id {sensor_id!r}: use 1-100 letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit)"
        )
    return sensor_id


def key_path(keys_dir: Path, sensor_id: str) -> Path:
    return keys_dir / f"{check_sensor_id(sensor_id)}.ed25519.pem"


def load_or_create(keys_dir: Path, sensor_id: str) -> SensorKey:
    """Load the sensor's key, or make one. Creation is atomic: a crash leaves no half-written
    key."""
    path = key_path(keys_dir, sensor_id)
    if not path.exists():
        keys_dir.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            # link() fails if another process made the key meanwhile: then we use theirs.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise EvidenceError(f"{path}: not a readable Ed25519 private key: {exc}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise EvidenceError(f"{path}: not an Ed25519 private key")
    return SensorKey(sensor_id, private)


def load_public_pem(data: bytes, source: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise EvidenceError(f"{source}: not a readable public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise EvidenceError(f"{source}: not an Ed25519 public key")
    return key


def public_from_raw(raw: bytes) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise EvidenceError(f"not a raw Ed25519 public key: {exc}") from None


def _map_in_threads(fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """`[fn(x) for x in items]`, split over the cores when there are many items. Only for
    functions that spend their time in libsodium, which releases the GIL."""
    workers = min(os.cpu_count() or 1, 8)
    if len(items) < _PARALLEL_MIN or workers == 1:
        return [fn(x) for x in items]
    step = -(-len(items) // workers)
    chunks = [items[i : i + step] for i in range(0, len(items), step)]
    with ThreadPoolExecutor(workers) as pool:
        parts = pool.map(lambda chunk: [fn(x) for x in chunk], chunks)
        return [r for part in parts for r in part]


def signatures_ok(public_key: bytes, pairs: Sequence[tuple[bytes, bytes]]) -> list[bool]:
    """`signature_ok` for many (signature, message) pairs, on every core."""
    return _map_in_threads(lambda pair: signature_ok(public_key, pair[0], pair[1]), pairs)


def signature_ok(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """Check an Ed25519 signature (RFC 8032) with a raw 32-byte public key, using libsodium."""
    if len(signature) != 64:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return False
    return True
