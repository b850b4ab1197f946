"""Lists of magnet links, one per line ('#' comments and blank lines allowed).

Each link becomes one item: hashes `btih` (v1) and/or `btmh` (v2, BEP 52), name from `dn`, size
from `xl`, attribute `trackers` from the `tr` parameters. Location "line N".
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO

from peerwatch.domain.hashes import Digest, HashKind
from peerwatch.errors import InputError
from peerwatch.protocols.bittorrent.magnet import MagnetError, parse_magnet
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
    """Yield one item per magnet line. `kind` is ignored: a magnet names its hash kinds."""
    del kind
    reader = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline=None)
    try:
        for lineno, raw in enumerate(reader, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            location = f"line {lineno}"
            try:
                magnet = parse_magnet(line)
            except MagnetError as exc:
                reject(
                    InputError(
                        exc.reason, source=source, location=location, field=exc.field or "magnet"
                    ),
                    on_invalid,
                )
                continue
            hashes: list[Digest] = []
            if magnet.btih is not None:
                hashes.append(Digest(HashKind.BTIH, magnet.btih))
            if magnet.btmh is not None:
                hashes.append(Digest(HashKind.BTMH, magnet.btmh))
            yield ParsedItem(
                location=location,
                hashes=tuple(hashes),
                category=default_category,
                name=magnet.name or None,
                size=magnet.size,
                attributes={"trackers": list(magnet.trackers)},
            )
    finally:
        reader.detach()  # the caller owns (and closes) the binary stream
