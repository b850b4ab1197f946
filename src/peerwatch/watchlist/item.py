"""What every list-format parser yields: one record of a list, with where it came from."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from peerwatch.domain.hashes import Digest
from peerwatch.errors import InputError

#: JSON-safe attribute values kept with an item (format-specific fields such as VictimIdentified).
AttributeValue = str | int | bool | None | list[str]


@dataclass(frozen=True, slots=True)
class ParsedItem:
    """One record of a hash list.

    `location` names the record inside its source ("line 12", "record 3", "info.files[2]") so that
    every match can be traced back to the exact place it was listed.
    """

    location: str
    hashes: tuple[Digest, ...]
    category: str | None = None
    name: str | None = None
    size: int | None = None
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)


#: Called for each invalid record when the user asked to skip invalid records; when a parser has no
#: such callback it raises the InputError instead. Errors that leave the rest unreadable (truncated
#: JSON, a .torrent that is not bencode) are always raised.
InvalidHandler = Callable[[InputError], None]
