"""CSV lists: a header row naming the columns, then one record per row.

Columns (case-insensitive, surrounding spaces ignored, any order):

    md5, sha1, sha256, ed2k   content hashes of those kinds
    btih, btmh                BitTorrent v1 / v2 infohashes
    infohash                  either: 40 hex or 32 base32 is v1 (btih), 64 hex is v2 (btmh)
    category, name, size      metadata (size in bytes, a non-negative integer)

Every row needs at least one hash; empty cells are skipped. A column with an empty header (a
trailing comma) is ignored; any other unknown column is an error, because a misspelt hash column
would otherwise silently drop hashes. Lines starting with '#' (before or after the header) and blank
lines are skipped. Locations are physical line numbers (a quoted cell may span lines; the record's
first line is named). Bytes that are not UTF-8 are replaced. Streams: one row in memory at a time.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from typing import BinaryIO

from peerwatch.domain.hashes import Digest, HashKind, HashParseError, parse_hash
from peerwatch.errors import InputError
from peerwatch.watchlist.formats.invalid import reject
from peerwatch.watchlist.item import InvalidHandler, ParsedItem

#: Hash columns and the kind each holds (None: decided by length, see `infohash`).
HASH_COLUMNS: dict[str, HashKind | None] = {
    "md5": HashKind.MD5,
    "sha1": HashKind.SHA1,
    "sha256": HashKind.SHA256,
    "ed2k": HashKind.ED2K,
    "btih": HashKind.BTIH,
    "btmh": HashKind.BTMH,
    "infohash": None,
}
META_COLUMNS = ("category", "name", "size")
#: Every column name a CSV list may use.
COLUMNS = frozenset((*HASH_COLUMNS, *META_COLUMNS))

_SIZE_RE = re.compile(r"[0-9]{1,20}")
_INFOHASH_KINDS = {20: HashKind.BTIH, 32: HashKind.BTMH}


def parse(
    stream: BinaryIO,
    *,
    source: str,
    kind: HashKind | None = None,
    default_category: str | None = None,
    on_invalid: InvalidHandler | None = None,
) -> Iterator[ParsedItem]:
    """Yield one item per data row of a CSV list. `kind` is ignored: columns name the kinds."""
    del kind
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
    reader = csv.reader(text)
    try:
        header: list[str] | None = None
        while True:
            first_line = reader.line_num + 1
            try:
                row = next(reader, None)
            except csv.Error as exc:
                # The reader cannot resynchronise after a malformed record: always raised.
                raise InputError(
                    f"unreadable CSV: {exc}", source=source, location=f"line {first_line}"
                ) from None
            if row is None:
                break
            if not any(c.strip() for c in row) or row[0].lstrip().startswith("#"):
                continue
            location = f"line {first_line}"
            if header is None:
                header = _header(row, source, location)
                continue
            try:
                item = _item(row, header, location, default_category)
            except InputError as exc:
                reject(
                    InputError(exc.reason, source=source, location=location, field=exc.field),
                    on_invalid,
                )
                continue
            yield item
    finally:
        text.detach()  # the caller owns (and closes) the binary stream


def _header(row: list[str], source: str, location: str) -> list[str]:
    """Validate the header. Its errors make the whole file unreadable, so they are always raised."""
    names = [c.strip().lower() for c in row]
    seen: set[str] = set()
    for name in names:
        if not name:
            continue
        if name not in COLUMNS:
            raise InputError(
                f"unknown column {name!r} (known: {', '.join(sorted(COLUMNS))})",
                source=source,
                location=location,
                field=name,
            )
        if name in seen:
            raise InputError("column named twice", source=source, location=location, field=name)
        seen.add(name)
    if not seen & HASH_COLUMNS.keys():
        raise InputError(
            f"no hash column (one of {', '.join(HASH_COLUMNS)})",
            source=source,
            location=location,
            field="header",
        )
    return names


def _item(
    row: list[str], header: list[str], location: str, default_category: str | None
) -> ParsedItem:
    """Build one item; raises InputError (field set, source/location filled in by the caller)."""
    extra = [c for c in row[len(header) :] if c.strip()]
    if extra:
        raise InputError(
            f"{len(row)} cells but the header names {len(header)} columns", field="columns"
        )
    hashes: list[Digest] = []
    category: str | None = None
    name: str | None = None
    size: int | None = None
    for column, cell in zip(header, row, strict=False):
        value = cell.strip()
        if not column or not value:
            continue
        if column in HASH_COLUMNS:
            hashes.append(_digest(column, value))
        elif column == "size":
            if not _SIZE_RE.fullmatch(value):
                raise InputError(f"not a byte count: {value[:40]!r}", field="size")
            size = int(value)
        elif column == "category":
            category = value
        else:
            name = value
    if not hashes:
        raise InputError(
            f"no hash in any of the columns {', '.join(c for c in header if c in HASH_COLUMNS)}",
            field="hash",
        )
    return ParsedItem(
        location=location,
        hashes=tuple(hashes),
        category=category if category is not None else default_category,
        name=name,
        size=size,
    )


def _digest(column: str, value: str) -> Digest:
    kind = HASH_COLUMNS[column]
    try:
        digest = parse_hash(value, kind)
    except HashParseError as exc:
        raise InputError(str(exc), field=column) from None
    if kind is None:
        infohash_kind = _INFOHASH_KINDS.get(len(digest.value))
        if infohash_kind is None:
            raise InputError(
                "an infohash is 40 hex digits or 32 base32 characters (v1) or 64 hex digits (v2)",
                field=column,
            )
        digest = Digest(infohash_kind, digest.value)
    return digest
