"""Lists of ed2k file links, one per line ('#' comments and blank lines allowed).

Each link becomes one item: hash `ed2k` (typed: a link names its hash kind, so there is no
md5|ed2k ambiguity), name and size from the link, attributes `aich` (the base32 AICH master hash
from ``h=``, or None) and `part_hashes` (hex MD4 part hashes from ``p=``, checked against the file
hash by `protocols.ed2k.link`). Location "line N". Server and serverlist links are not hash
records and are rejected as invalid.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import BinaryIO

from peerwatch.domain.hashes import Digest, HashKind
from peerwatch.errors import InputError
from peerwatch.protocols.ed2k.link import LinkError, parse_ed2k_link
from peerwatch.watchlist.formats.invalid import reject
from peerwatch.watchlist.item import InvalidHandler, ParsedItem


def parse(
    stream: BinaryIO,
    *,
    source: str,
    kind: HashKind | None = None,
    default_category: str | None = None,
    on_invalid: InvalidHandler | None = None,
) -> Iterator[ParsedItem]:
    """Yield one item per ed2k line. `kind` is ignored: a link names its hash kind."""
    del kind
    reader = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline=None)
    try:
        for lineno, raw in enumerate(reader, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            location = f"line {lineno}"
            try:
                link = parse_ed2k_link(line)
            except LinkError as exc:
                reject(
                    InputError(exc.reason, source=source, location=location, field=exc.field),
                    on_invalid,
                )
                continue
            aich = base64.b32encode(link.aich_hash).decode("ascii") if link.aich_hash else None
            yield ParsedItem(
                location=location,
                hashes=(Digest(HashKind.ED2K, link.file_hash),),
                category=default_category,
                name=link.name or None,
                size=link.size,
                attributes={"aich": aich, "part_hashes": [h.hex() for h in link.part_hashes]},
            )
    finally:
        reader.detach()  # the caller owns (and closes) the binary stream
