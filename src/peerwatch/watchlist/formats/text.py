"""Plain text lists: one hash per line.

Each non-blank line that does not start with '#' is::

    HASH                  e.g. d41d8cd98f00b204e9800998ecf8427e
    HASH  NAME            as written by md5sum/sha1sum/sha256sum ('*NAME' in binary mode)
    KIND:HASH [NAME]      an explicit kind, e.g. sha1:da39a3ee... (as `Digest.__str__` writes)

HASH is 32 hex digits (MD5 or eD2k), 40 hex digits or 32 base32 characters (SHA-1 or v1 infohash)
or 64 hex digits (SHA-256 or v2 infohash). Without an explicit kind (the line's prefix or the
`kind` argument) the length decides and ambiguous lengths keep an "either" kind (see
`parse_hash`). Whatever follows the hash after whitespace becomes the item's `name` (a leading
'*' is dropped); text after a '#' there is a comment and ignored. Bytes that are not UTF-8 are
replaced (they can only occur in names; a hash with such bytes is rejected as malformed).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO

from peerwatch.domain.hashes import Digest, HashKind, HashParseError, parse_hash
from peerwatch.errors import InputError
from peerwatch.watchlist.formats.invalid import reject
from peerwatch.watchlist.item import InvalidHandler, ParsedItem

_KINDS = {k.value: k for k in HashKind}


def parse(
    stream: BinaryIO,
    *,
    source: str,
    kind: HashKind | None = None,
    default_category: str | None = None,
    on_invalid: InvalidHandler | None = None,
) -> Iterator[ParsedItem]:
    """Yield one item per hash line of a text list."""
    reader = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline=None)
    try:
        for lineno, raw in enumerate(reader, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            location = f"line {lineno}"
            token, *tail = line.split(None, 1)
            rest = tail[0] if tail else ""
            if rest.startswith("#"):
                rest = ""
            try:
                digest = parse_line_hash(token, kind)
            except HashParseError as exc:
                reject(
                    InputError(str(exc), source=source, location=location, field="hash"), on_invalid
                )
                continue
            yield ParsedItem(
                location=location,
                hashes=(digest,),
                category=default_category,
                name=rest.removeprefix("*") or None,
            )
    finally:
        reader.detach()  # the caller owns (and closes) the binary stream


def parse_line_hash(token: str, kind: HashKind | None) -> Digest:
    """Parse 'HASH' or 'KIND:HASH'; a kind written on the line must agree with `kind`."""
    prefix, sep, value = token.rpartition(":")
    if sep and prefix.lower() in _KINDS:
        line_kind = _KINDS[prefix.lower()]
        if kind is not None and kind != line_kind:
            raise HashParseError(f"the line says {line_kind.value} but the list is {kind.value}")
        return parse_hash(value, line_kind)
    return parse_hash(token, kind)
