"""One audit entry and its canonical bytes (format version 1, docs/webapp.md "Audit log").

    bytes(n)  = canonical JSON of {v, seq, at_ms, actor, role, unit, address, action, object,
                detail}: sorted keys, no whitespace, UTF-8, no floats (as evidence/record.py)
    link(0)   = SHA-256("peerwatch-audit-v1")
    link(n)   = SHA-256(link(n-1) || SHA-256(bytes(n)))   (evidence/chain.py's rule)

The database keeps the entry's fields as columns and the link beside them; verification rebuilds
the bytes from the columns, so an edit of any column breaks that entry's link.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from peerwatch.errors import PeerwatchError
from peerwatch.evidence import chain
from peerwatch.evidence.record import canonical_bytes

AUDIT_VERSION = 1
GENESIS_LINK = hashlib.sha256(b"peerwatch-audit-v1").digest()

#: JSON values allowed in `detail`: no floats, so the bytes are the same on every platform.
DetailValue = str | int | bool | None | list["DetailValue"] | dict[str, "DetailValue"]


class AuditError(PeerwatchError):
    """The audit log failed verification or an entry could not be written."""

    exit_code = 7


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at_ms: int  # UTC milliseconds
    actor: str  # user name, "token:<name>" or "cli:<os user>"
    role: str | None  # the actor's role when acting
    unit: str | None  # the actor's unit (investigators)
    address: str | None  # client address ("local" for the command line)
    action: str  # "target.view", "login.failed", "user.add", ...
    object: str | None  # what it was done to: "target:42", "user:alice"
    detail: Mapping[str, DetailValue] = field(default_factory=dict)
    link: bytes = b""  # as stored; empty before the entry is chained

    def record(self) -> dict[str, Any]:
        return {
            "v": AUDIT_VERSION,
            "seq": self.seq,
            "at_ms": self.at_ms,
            "actor": self.actor,
            "role": self.role,
            "unit": self.unit,
            "address": self.address,
            "action": self.action,
            "object": self.object,
            "detail": dict(self.detail),
        }

    def canonical(self) -> bytes:
        return canonical_bytes(self.record())

    def next_link(self, prev_link: bytes) -> bytes:
        return chain.next_link(prev_link, self.canonical())


def check_detail(value: object, path: str = "detail") -> None:
    """Refuse what canonical JSON cannot carry exactly: floats, non-string keys, other types."""
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, float):
        raise AuditError(f"{path}: floats are not allowed in audit entries (not exact)")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise AuditError(f"{path}: keys must be strings")
            check_detail(v, f"{path}.{k}")
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            check_detail(v, f"{path}[{i}]")
        return
    raise AuditError(f"{path}: {type(value).__name__} is not a JSON value")


def detail_text(detail: Mapping[str, DetailValue]) -> str:
    return canonical_bytes(dict(detail)).decode("utf-8")


def parse_detail(text: str) -> dict[str, DetailValue]:
    """The stored detail column back as an object; an edit that breaks it is reported, not
    raised past the verifier."""
    obj = json.loads(text)
    if not isinstance(obj, dict):
        raise ValueError("detail is not a JSON object")
    return obj
