"""The one rule every format follows for a bad record (see `InvalidHandler`)."""

from __future__ import annotations

from peerwatch.errors import InputError
from peerwatch.watchlist.item import InvalidHandler


def reject(error: InputError, on_invalid: InvalidHandler | None) -> None:
    """Raise `error`, or report it to `on_invalid` so the caller skips the record and goes on."""
    if on_invalid is None:
        raise error
    on_invalid(error)
