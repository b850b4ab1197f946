"""Root exceptions, one per layer (house rule 4).

The CLI maps each to a clear message and an exit code; a peer's fault is never one of ours.
"""

from __future__ import annotations


class PeerwatchError(Exception):
    """Root of every error peerwatch raises on purpose."""

    exit_code = 1


class InputError(PeerwatchError):
    """Bad user input: a file, line/record and field are named in the message."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        location: str | None = None,
        field: str | None = None,
    ) -> None:
        self.source = source
        self.location = location
        self.field = field
        self.reason = message
        parts = [p for p in (source, location) if p]
        where = ":".join(parts)
        prefix = f"{where}: " if where else ""
        fld = f"field {field!r}: " if field else ""
        super().__init__(f"{prefix}{fld}{message}")


class StorageError(PeerwatchError):
    """The database could not be reached or is not in the expected state."""

    exit_code = 3


class EvidenceError(PeerwatchError):
    """The evidence log or a bundle failed verification or could not be written."""

    exit_code = 4


class ProtocolError(PeerwatchError):
    """A remote peer sent bytes that break the protocol. Recorded as a fact, never a crash."""

    exit_code = 5
