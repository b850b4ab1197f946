"""ed2k file links: ``ed2k://|file|NAME|SIZE|HASH|/`` with optional ``h=``, ``p=`` and sources.

Grammar as aMule's CED2KFileLink (src/ED2KLink.cpp) reads it: fields separated by ``|``; NAME is
percent-encoded; SIZE decimal, 1..256 GiB (MAX_FILE_SIZE); HASH 32 hex digits; then optional
fields, each its own ``|...|``: ``p=H1:H2:...`` the part hashes (hex), ``h=`` the AICH master hash
(32 base32 characters = 20 bytes), ``sources,ip:port,...``; the link ends with ``|/`` (sources may
also follow the ``/``, as eMule writes them). Unknown fields are ignored, as aMule does.

Unlike aMule, which keeps a ``p=`` list and checks it later, the part hashes are checked here:
their count must be the hashset count of SIZE and their MD4 must be HASH (`hashing`), so a list
cannot carry a part-hash set that contradicts its file hash.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from urllib.parse import quote, unquote

from peerwatch.protocols.ed2k.hashing import (
    MAX_FILE_SIZE,
    aich_from_base32,
    hashset_count,
    root_from_part_hashes,
)

MAX_LINK_LENGTH = 4 * 1024 * 1024  # a p= list of a 256 GiB file is ~930 KB; refuse more


class LinkError(ValueError):
    """A malformed ed2k link; `field` names the part (name, size, hash, p, h, link)."""

    def __init__(self, reason: str, field: str = "link") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclass(frozen=True, slots=True)
class Ed2kFileLink:
    name: str
    size: int
    file_hash: bytes
    aich_hash: bytes | None = None
    part_hashes: tuple[bytes, ...] = ()
    sources: tuple[str, ...] = ()

    def to_link(self) -> str:
        out = f"ed2k://|file|{quote(self.name, safe='')}|{self.size}|{self.file_hash.hex()}|"
        if self.part_hashes:
            out += "p=" + ":".join(h.hex() for h in self.part_hashes) + "|"
        if self.aich_hash is not None:
            out += "h=" + base64.b32encode(self.aich_hash).decode("ascii") + "|"
        return out + "/"


def _hash(text: str, field: str) -> bytes:
    s = text.strip()
    if len(s) != 32:
        raise LinkError(f"a hash is 32 hex digits, got {len(s)} characters", field)
    try:
        return binascii.unhexlify(s)
    except ValueError:  # binascii.Error, or non-ASCII characters
        raise LinkError(f"bad hex digit in {s!r}", field) from None


def parse_ed2k_link(link: str) -> Ed2kFileLink:
    text = link.strip()
    if len(text) > MAX_LINK_LENGTH:
        raise LinkError(f"link is longer than {MAX_LINK_LENGTH} characters")
    tokens = text.split("|")
    if len(tokens) < 6 or tokens[0].lower() != "ed2k://" or tokens[1].lower() != "file":
        raise LinkError("not an ed2k file link (ed2k://|file|NAME|SIZE|HASH|/)")
    if "/" not in (t.strip() for t in tokens[5:]):
        raise LinkError("an ed2k link ends with '|/'")
    name = unquote(tokens[2].strip(), errors="replace")
    size_text = tokens[3].strip()
    if not size_text.isascii() or not size_text.isdigit():
        raise LinkError(f"size {size_text!r} is not a byte count", "size")
    size = int(size_text)
    if not 0 < size <= MAX_FILE_SIZE:
        raise LinkError(f"size {size} is outside 1..{MAX_FILE_SIZE}", "size")
    file_hash = _hash(tokens[4], "hash")
    aich: bytes | None = None
    parts: tuple[bytes, ...] = ()
    sources: list[str] = []
    for raw in tokens[5:]:
        fld = raw.strip()
        low = fld.lower()
        if low.startswith("p="):
            parts = tuple(_hash(h, "p") for h in fld[2:].split(":"))
            expected = hashset_count(size)
            if len(parts) != expected:
                raise LinkError(f"{len(parts)} part hashes; a {size}-byte file has {expected}", "p")
            if root_from_part_hashes(parts) != file_hash:
                raise LinkError("the part hashes do not hash to the file hash", "p")
        elif low.startswith("h="):
            try:
                aich = aich_from_base32(fld[2:])
            except ValueError as exc:
                raise LinkError(str(exc), "h") from None
        elif low.startswith("sources,"):
            sources.extend(s.strip() for s in fld.split(",")[1:] if s.strip())
    return Ed2kFileLink(name, size, file_hash, aich, parts, tuple(sources))
