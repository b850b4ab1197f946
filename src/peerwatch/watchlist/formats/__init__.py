"""Hash-list formats: one module per format, each a pure streaming parser yielding `ParsedItem`s.

`parse_file` picks the parser (by name, or by `detect_format` from the file's first bytes) and
streams the file through it. Every parser follows the same error contract (see `InvalidHandler`):
a bad record raises `InputError` naming the source, the record ("line 7", "record 12") and the
field, unless `on_invalid` is given, in which case the record is reported to it and skipped.
Errors that leave the rest of the file unreadable are always raised.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from pathlib import Path

from peerwatch.domain.hashes import HashKind
from peerwatch.errors import InputError
from peerwatch.watchlist.formats import csv_list, ed2k_link, magnet_list, text, torrent_file, vics
from peerwatch.watchlist.item import InvalidHandler, ParsedItem

#: Format names accepted by `parse_file` (and the CLI's --format).
FORMATS: tuple[str, ...] = ("text", "csv", "vics", "torrent", "magnet", "ed2k")

#: How many bytes `parse_file` reads to detect a format.
DETECT_BYTES = 64 * 1024

_PARSERS = {
    "text": text.parse,
    "csv": csv_list.parse,
    "vics": vics.parse,
    "torrent": torrent_file.parse,
    "magnet": magnet_list.parse,
    "ed2k": ed2k_link.parse,
}


def detect_format(path: Path, head: bytes) -> str:
    """Guess a list's format from its first bytes (`path` only breaks a tie for .torrent files).

    - torrent: starts with b'd' and contains b'4:info' (the bencoded info key), or starts with
      b'd' and the file is named *.torrent (a long announce-list can push 'info' past `head`);
    - vics: JSON, i.e. the first non-blank character is '{' or '[';
    - magnet: the first non-blank, non-comment line starts with 'magnet:?';
    - ed2k: that line starts with 'ed2k://';
    - csv: that line contains a comma and names at least one known column;
    - text: anything else.
    """
    if head.startswith(b"d") and (b"4:info" in head or path.suffix.lower() == ".torrent"):
        return "torrent"
    body = head.removeprefix(codecs.BOM_UTF8).lstrip()
    if body[:1] in (b"{", b"["):
        return "vics"
    for raw in body.splitlines():
        line = raw.decode("utf-8", errors="replace").strip()
        if not line or line.startswith("#"):
            continue
        if line.lower().startswith("magnet:?"):
            return "magnet"
        if line.lower().startswith("ed2k://"):
            return "ed2k"
        if "," in line:
            cells = next(csv.reader(io.StringIO(line)), [])
            if any(c.strip().lower() in csv_list.COLUMNS for c in cells):
                return "csv"
        return "text"
    return "text"


def parse_file(
    path: Path,
    fmt: str | None,
    *,
    kind: HashKind | None,
    default_category: str | None,
    on_invalid: InvalidHandler | None,
) -> Iterator[ParsedItem]:
    """Stream the items of one list file. `fmt` None means detect it from the content.

    The format is checked and detected at call time (an unknown format or unreadable file raises
    `InputError` here); the file itself is read lazily as the iterator is consumed.
    `kind` forces the kind of hashes whose kind the format leaves open (text lists); formats that
    type their hashes (CSV columns, VICS fields, torrents, magnets) ignore it.
    """
    source = str(path)
    if fmt is not None and fmt not in _PARSERS:
        raise InputError(
            f"unknown format {fmt!r} (known: {', '.join(FORMATS)})", source=source, field="format"
        )
    try:
        with path.open("rb") as f:
            head = f.read(DETECT_BYTES)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror or exc}", source=source) from None
    if fmt is None:
        fmt = detect_format(path, head)
    parser = _PARSERS[fmt]

    def items() -> Iterator[ParsedItem]:
        try:
            stream = path.open("rb")
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror or exc}", source=source) from None
        with stream:
            yield from parser(
                stream,
                source=source,
                kind=kind,
                default_category=default_category,
                on_invalid=on_invalid,
            )

    return items()
