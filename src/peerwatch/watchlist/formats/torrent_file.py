"""A .torrent file as a list: one item for the torrent and one per content file.

- The torrent item (location "torrent") carries the infohash(es): `btih` for v1 and hybrid
  torrents, `btmh` for v2 and hybrid (BEP 52), the torrent's name and total size, and attributes
  `trackers`, `piece_length`, `version` ("v1", "v2", "hybrid"), `file_count` and `private`.
- Each content file (BEP 47 padding files excluded) becomes an item located where the metainfo
  describes it ("info", "info.files[3]", "info.file tree[dir/file]"), named by its path joined with
  '/', with its size and the content hashes the torrent gives: BEP 47 `sha1` (SHA1) and `md5sum`
  (MD5). A file without such hashes is still an item: its name and size matter for discovery.
  File items carry `torrent_btih` / `torrent_btmh` (hex) so a match leads back to the torrent.
- A v2 file's 'pieces root' (the root of its SHA-256 merkle tree, BEP 52) is kept only as the
  attribute `pieces_root` (hex), not as a hash: it is neither the SHA-256 of the file nor an
  infohash, so matching it as either kind would be wrong.

A torrent that does not decode is always raised (nothing in it can be trusted).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from peerwatch.domain.hashes import Digest, HashKind
from peerwatch.errors import InputError
from peerwatch.protocols.bittorrent.metainfo import MAX_METAINFO_SIZE, MetainfoError, parse_metainfo
from peerwatch.watchlist.item import AttributeValue, InvalidHandler, ParsedItem


def parse(
    stream: BinaryIO,
    *,
    source: str,
    kind: HashKind | None = None,
    default_category: str | None = None,
    on_invalid: InvalidHandler | None = None,
) -> Iterator[ParsedItem]:
    """Yield the torrent item, then one item per file. `kind` and `on_invalid` do not apply."""
    del kind, on_invalid
    data = stream.read(MAX_METAINFO_SIZE + 1)
    try:
        meta = parse_metainfo(data)
    except MetainfoError as exc:
        raise InputError(
            f"not a valid torrent: {exc.reason}", source=source, location="torrent", field=exc.field
        ) from None
    hashes: list[Digest] = []
    links: dict[str, AttributeValue] = {}
    if meta.btih is not None:
        hashes.append(Digest(HashKind.BTIH, meta.btih))
        links["torrent_btih"] = meta.btih.hex()
    if meta.btmh is not None:
        hashes.append(Digest(HashKind.BTMH, meta.btmh))
        links["torrent_btmh"] = meta.btmh.hex()
    yield ParsedItem(
        location="torrent",
        hashes=tuple(hashes),
        category=default_category,
        name=meta.name,
        size=meta.total_size,
        attributes={
            "trackers": list(meta.trackers),
            "piece_length": meta.piece_length,
            "piece_count": meta.piece_count,
            "version": meta.version,
            "file_count": len(meta.files),
            "private": meta.private,
        },
    )
    for f in meta.files:
        file_hashes: list[Digest] = []
        if f.sha1 is not None:
            file_hashes.append(Digest(HashKind.SHA1, f.sha1))
        if f.md5 is not None:
            file_hashes.append(Digest(HashKind.MD5, f.md5))
        attributes = dict(links)
        if f.pieces_root is not None:
            attributes["pieces_root"] = f.pieces_root.hex()
        yield ParsedItem(
            location=f.location,
            hashes=tuple(file_hashes),
            category=default_category,
            name=f.path_str,
            size=f.length,
            attributes=attributes,
        )
