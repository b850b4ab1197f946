"""The watchlist in the database: versioned lists of items with provenance, and hash lookup."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, update
from sqlalchemy.sql.selectable import Join

from peerwatch.domain.hashes import Digest, HashKind
from peerwatch.domain.torrents import WatchedTorrent
from peerwatch.errors import InputError
from peerwatch.storage.database import writer
from peerwatch.storage.schema import list_versions, watch_hashes, watch_items, watch_lists
from peerwatch.watchlist.formats import detect_format, parse_file
from peerwatch.watchlist.item import ParsedItem

_BATCH = 5000
#: The list discovery adds derived entries to. Its entries are never matched against discovered
#: files: a derived entry must trace back to an entry an investigator imported, not to another
#: guess (a chain of name-and-size matches would drift from what was listed).
DERIVED_LIST = "derived"


@dataclass
class ImportResult:
    list_name: str
    version: int
    items: int
    hashes: int
    unchanged: bool = False  # the same sources and options were already the active version
    skipped: list[InputError] = field(default_factory=list)
    replaced_version: int | None = None


@dataclass(frozen=True)
class ListInfo:
    name: str
    version: int
    imported_ms: int
    items: int
    hashes: int
    skipped: int
    sources: list[dict[str, object]]
    default_category: str | None


@dataclass(frozen=True, slots=True)
class Ed2kEntry:
    size: int | None
    name: str | None
    aich: str | None  # base32, as in the link


@dataclass(frozen=True)
class Match:
    query: Digest
    kind: str  # the kind as stored (may be ambiguous, e.g. "sha1|btih")
    list_name: str
    list_version: int
    imported_ms: int
    source: str
    location: str
    category: str | None
    name: str | None
    size: int | None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _file_sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=str(path)) from None
    return h.hexdigest(), size


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(4096)


class WatchlistStore:
    def __init__(self, engine: Engine, clock_ms: Callable[[], int] = _now_ms) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self._clock_ms = clock_ms

    def import_files(
        self,
        paths: Sequence[Path],
        *,
        list_name: str,
        fmt: str | None = None,
        kind: HashKind | None = None,
        category: str | None = None,
        skip_invalid: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """Import `paths` as a new version of `list_name`, replacing its active version atomically.

        All of it is one transaction: on any error nothing of this import is written. Importing the
        same files with the same options again changes nothing.
        """
        sources: list[dict[str, object]] = []
        fp = hashlib.sha256(json.dumps([fmt, kind.value if kind else None, category]).encode())
        for path in paths:
            digest, size = _file_sha256(path)
            detected = fmt or detect_format(path, _head(path))
            sources.append({"path": str(path), "sha256": digest, "size": size, "format": detected})
            fp.update(digest.encode())
        fingerprint = fp.hexdigest()
        skipped: list[InputError] = []
        on_invalid = skipped.append if skip_invalid else None

        with self._writer.begin() as conn:
            list_id, active = self._list_and_active(conn, list_name)
            if active is not None and active[1] == fingerprint:
                count_items, count_hashes = active[2], active[3]
                return ImportResult(list_name, active[0], count_items, count_hashes, True)
            if list_id is None:
                list_id = conn.execute(
                    insert(watch_lists)
                    .values(name=list_name, created_ms=self._clock_ms())
                    .returning(watch_lists.c.id)
                ).scalar_one()
            last = conn.execute(
                select(func.max(list_versions.c.version)).where(list_versions.c.list_id == list_id)
            ).scalar()
            version = (last or 0) + 1
            version_id = conn.execute(
                insert(list_versions)
                .values(
                    list_id=list_id,
                    version=version,
                    imported_ms=self._clock_ms(),
                    fingerprint=fingerprint,
                    sources=json.dumps(sources),
                    default_category=category,
                    item_count=0,
                    hash_count=0,
                    skipped_count=0,
                    active=False,
                )
                .returning(list_versions.c.id)
            ).scalar_one()
            n_items = n_hashes = 0
            for src in sources:
                path = Path(str(src["path"]))
                items = parse_file(
                    path,
                    str(src["format"]),
                    kind=kind,
                    default_category=category,
                    on_invalid=on_invalid,
                )
                for batch in _batched(items, _BATCH):
                    n_hashes += self._insert_batch(conn, version_id, str(path), batch)
                    n_items += len(batch)
                    if progress is not None:
                        progress(n_items)
            conn.execute(
                update(list_versions).where(list_versions.c.list_id == list_id).values(active=False)
            )
            conn.execute(
                update(list_versions)
                .where(list_versions.c.id == version_id)
                .values(
                    active=True,
                    item_count=n_items,
                    hash_count=n_hashes,
                    skipped_count=len(skipped),
                )
            )
        return ImportResult(
            list_name,
            version,
            n_items,
            n_hashes,
            skipped=skipped,
            replaced_version=None if active is None else active[0],
        )

    @staticmethod
    def _list_and_active(
        conn: Connection, list_name: str
    ) -> tuple[int | None, tuple[int, str, int, int] | None]:
        row = conn.execute(select(watch_lists.c.id).where(watch_lists.c.name == list_name)).first()
        if row is None:
            return None, None
        v = list_versions.c
        act = conn.execute(
            select(v.version, v.fingerprint, v.item_count, v.hash_count).where(
                and_(v.list_id == row[0], v.active)
            )
        ).first()
        active = None if act is None else (int(act[0]), str(act[1]), int(act[2]), int(act[3]))
        return int(row[0]), active

    @staticmethod
    def _insert_batch(
        conn: Connection, version_id: int, source: str, batch: list[ParsedItem]
    ) -> int:
        ids = (
            conn.execute(
                insert(watch_items).returning(watch_items.c.id, sort_by_parameter_order=True),
                [
                    {
                        "version_id": version_id,
                        "source": source,
                        "location": it.location,
                        "category": it.category,
                        "name": it.name,
                        "size": it.size,
                        "attributes": json.dumps(dict(it.attributes), sort_keys=True)
                        if it.attributes
                        else None,
                    }
                    for it in batch
                ],
            )
            .scalars()
            .all()
        )
        hash_rows = [
            {"item_id": item_id, "kind": d.kind.value, "value": d.value}
            for item_id, it in zip(ids, batch, strict=True)
            for d in it.hashes
        ]
        if hash_rows:
            conn.execute(insert(watch_hashes), hash_rows)
        return len(hash_rows)

    def lists(self) -> list[ListInfo]:
        v, w = list_versions.c, watch_lists.c
        query = (
            select(
                w.name,
                v.version,
                v.imported_ms,
                v.item_count,
                v.hash_count,
                v.skipped_count,
                v.sources,
                v.default_category,
            )
            .join_from(watch_lists, list_versions, w.id == v.list_id)
            .where(v.active)
            .order_by(w.name)
        )
        with self._engine.connect() as conn:
            return [
                ListInfo(
                    r.name,
                    r.version,
                    r.imported_ms,
                    r.item_count,
                    r.hash_count,
                    r.skipped_count,
                    json.loads(r.sources),
                    r.default_category,
                )
                for r in conn.execute(query)
            ]

    def remove(self, list_name: str) -> bool:
        """Remove a list with all its versions. Returns False when there was no such list."""
        with self._writer.begin() as conn:
            row = conn.execute(
                select(watch_lists.c.id).where(watch_lists.c.name == list_name)
            ).first()
            if row is None:
                return False
            # Delete children explicitly: SQLite enforces ON DELETE CASCADE only with the pragma,
            # and this keeps the order obvious on every database.
            versions = select(list_versions.c.id).where(list_versions.c.list_id == row[0])
            items = select(watch_items.c.id).where(watch_items.c.version_id.in_(versions))
            conn.execute(delete(watch_hashes).where(watch_hashes.c.item_id.in_(items)))
            conn.execute(delete(watch_items).where(watch_items.c.version_id.in_(versions)))
            conn.execute(delete(list_versions).where(list_versions.c.list_id == row[0]))
            conn.execute(delete(watch_lists).where(watch_lists.c.id == row[0]))
        return True

    def kind_counts(self) -> dict[str, int]:
        """Hashes of active versions per stored kind."""
        query = (
            select(watch_hashes.c.kind, func.count())
            .select_from(self._active_hashes())
            .group_by(watch_hashes.c.kind)
        )
        with self._engine.connect() as conn:
            return {str(k): int(n) for k, n in conn.execute(query)}

    @staticmethod
    def _active_hashes() -> Join:
        return watch_hashes.join(watch_items, watch_items.c.id == watch_hashes.c.item_id).join(
            list_versions,
            and_(list_versions.c.id == watch_items.c.version_id, list_versions.c.active),
        )

    def match(self, digests: Iterable[Digest]) -> list[Match]:
        """Every active list entry for each digest. An ambiguous stored kind matches its members,
        and an ambiguous query matches every member kind."""
        out: list[Match] = []
        h, i, v, w = watch_hashes.c, watch_items.c, list_versions.c, watch_lists.c
        with self._engine.connect() as conn:
            for d in digests:
                kinds = {k.value for k in _compatible_kinds(d.kind)}
                query = (
                    select(
                        h.kind,
                        w.name,
                        v.version,
                        v.imported_ms,
                        i.source,
                        i.location,
                        i.category,
                        i.name.label("item_name"),
                        i.size,
                    )
                    .select_from(
                        watch_hashes.join(watch_items, i.id == h.item_id)
                        .join(list_versions, and_(v.id == i.version_id, v.active))
                        .join(watch_lists, w.id == v.list_id)
                    )
                    .where(and_(h.value == d.value, h.kind.in_(kinds)))
                    .order_by(w.name, i.id)
                )
                for r in conn.execute(query):
                    out.append(
                        Match(
                            d,
                            r.kind,
                            r.name,
                            r.version,
                            r.imported_ms,
                            r.source,
                            r.location,
                            r.category,
                            r.item_name,
                            r.size,
                        )
                    )
        return out

    def ed2k_entry(self, file_hash: bytes) -> Ed2kEntry:
        """What the active lists say of one eD2k file: its size, name and AICH master hash
        (`aich` attribute of an ed2k link's `h=`), each from the first entry that gives it."""
        h, i = watch_hashes.c, watch_items.c
        query = (
            select(i.size, i.name, i.attributes)
            .select_from(self._active_hashes())
            .where(
                and_(
                    h.value == file_hash,
                    h.kind.in_((HashKind.ED2K.value, HashKind.MD5_OR_ED2K.value)),
                )
            )
            .order_by(i.size.is_(None), i.id)
        )
        size: int | None = None
        name: str | None = None
        aich: str | None = None
        with self._engine.connect() as conn:
            for row in conn.execute(query):
                size = size if size is not None else row.size
                name = name if name is not None else row.name
                if aich is None and row.attributes:
                    value = json.loads(row.attributes).get("aich")
                    aich = value if isinstance(value, str) else None
        return Ed2kEntry(size, name, aich)

    def watched_torrents(self) -> list[WatchedTorrent]:
        """Every torrent the active lists watch, once each: from .torrent files (with trackers and
        piece count), magnet links and infohash lists (ambiguous 40/64-hex values included, since
        they are matched as infohashes too)."""
        h, i = watch_hashes.c, watch_items.c
        query = (
            select(i.id, i.name, i.attributes, h.kind, h.value)
            .select_from(self._active_hashes())
            .where(h.kind.in_([k.value for k in _TORRENT_KINDS]))
            .order_by(i.id)
        )
        items: dict[int, dict[str, object]] = {}
        with self._engine.connect() as conn:
            for item_id, name, attributes, kind, value in conn.execute(query):
                entry = items.setdefault(
                    item_id, {"name": name, "attributes": attributes, "btih": None, "btmh": None}
                )
                slot = "btih" if kind in (HashKind.BTIH, HashKind.SHA1_OR_BTIH) else "btmh"
                entry[slot] = bytes(value)
        out: dict[bytes, WatchedTorrent] = {}
        for entry in items.values():
            attrs = json.loads(str(entry["attributes"])) if entry["attributes"] else {}
            trackers = tuple(t for t in attrs.get("trackers", []) if isinstance(t, str))
            count = attrs.get("piece_count")
            torrent = WatchedTorrent.from_hashes(
                entry["btih"] if isinstance(entry["btih"], bytes) else None,
                entry["btmh"] if isinstance(entry["btmh"], bytes) else None,
                name=entry["name"] if isinstance(entry["name"], str) else None,
                trackers=trackers,
                piece_count=count if isinstance(count, int) else None,
            )
            known = out.get(torrent.wire_hash)
            # The same torrent on several lists: keep the richest description.
            if known is None or (known.piece_count is None and torrent.piece_count is not None):
                out[torrent.wire_hash] = torrent
        return list(out.values())

    def match_files(self, files: Sequence[FileKey]) -> list[FileMatch]:
        """Watch items the files of a torrent match (see the module function)."""
        return match_files(self._engine, files)

    def add_derived(self, entry: DerivedEntry, *, list_name: str = DERIVED_LIST) -> ImportResult:
        """Put a torrent found by discovery on the derived list (see the module function)."""
        return add_derived(self._engine, entry, list_name=list_name, clock_ms=self._clock_ms)

    def count_active_hashes(self) -> int:
        query = select(func.count()).select_from(self._active_hashes())
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def iter_active_hashes(self, batch: int = 50_000) -> Iterator[tuple[str, bytes]]:
        """(kind, digest) of every active entry, streamed: what the match index is built from."""
        query = select(watch_hashes.c.kind, watch_hashes.c.value).select_from(self._active_hashes())
        with self._engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
            for kind, value in result:
                yield str(kind), bytes(value)


_TORRENT_KINDS = (HashKind.BTIH, HashKind.BTMH, HashKind.SHA1_OR_BTIH, HashKind.SHA256_OR_BTMH)


# --- discovery: matching a torrent's files, and derived entries ---------------------------------
#
# Discovery (sensors/discovery.py) fetches the info dict of torrents that are not on the
# watchlist and asks which of their files the watchlist knows; a torrent with such a file becomes
# a *derived entry* on its own list, so that it is swept like any other watched torrent.

_SHA1_KINDS = (HashKind.SHA1.value, HashKind.SHA1_OR_BTIH.value)
_MD5_KINDS = (HashKind.MD5.value, HashKind.MD5_OR_ED2K.value)
#: A 32-byte value listed as `btmh` (domain/hashes.py says such entries may be v2 pieces roots)
#: or as an undecided `sha256|btmh` is compared with pieces roots too: a root equal to some other
#: file's SHA-256 or to an infohash would be a 2**-256 accident, so this adds no false match.
_ROOT_KINDS = (HashKind.BTMH.value, HashKind.SHA256_OR_BTMH.value)
_IN_CHUNK = 500  # values per IN (...) clause: well under every database's parameter limit


@dataclass(frozen=True)
class FileKey:
    """One file of a torrent, as discovery matches it (from the verified info dict)."""

    index: int  # position in the torrent's file list (padding files not counted)
    path: str  # the path joined with '/', starting with the torrent's name for multi-file ones
    size: int
    sha1: bytes | None = None  # BEP 47 'sha1'
    md5: bytes | None = None  # 'md5sum'
    pieces_root: bytes | None = None  # BEP 52 'pieces root'

    @property
    def basename(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class FileMatch:
    """A watch item that a torrent's file matches, and how."""

    file_index: int
    file_path: str
    file_size: int
    how: str  # "sha1", "md5" (BEP 47), "pieces-root" (BEP 52), "name-size" (exact)
    item_id: int
    list_name: str
    list_version: int
    source: str
    location: str
    category: str | None
    name: str | None
    size: int | None


@dataclass(frozen=True)
class DerivedEntry:
    """A torrent found by discovery, with why it is watched (`attributes`: JSON-safe values)."""

    btih: bytes | None
    btmh: bytes | None
    name: str
    size: int
    category: str | None
    attributes: dict[str, object]

    @property
    def content_key(self) -> str:
        return WatchedTorrent.from_hashes(self.btih, self.btmh).content_key


def match_files(
    engine: Engine, files: Sequence[FileKey], *, exclude_lists: Sequence[str] = (DERIVED_LIST,)
) -> list[FileMatch]:
    """Active watch items that `files` match: BEP 47 SHA-1/MD5 against file hashes of those kinds
    (ambiguous `sha1|btih` / `md5|ed2k` entries included, as everywhere), a v2 'pieces root'
    against the `pieces_root` attribute of .torrent file items (where the .torrent format keeps
    roots, see docs/watchlist.md) and against `btmh` / `sha256|btmh` values (`_ROOT_KINDS`), and
    an exact (name, size) against items that have both: the name equal to the file's path or to
    its last component. Empty files match nothing (every empty file has the same hashes).
    Ordered by file, then item."""
    files = [f for f in files if f.size > 0]
    h, i, v, w = watch_hashes.c, watch_items.c, list_versions.c, watch_lists.c
    joined = watch_items.join(list_versions, and_(v.id == i.version_id, v.active)).join(
        watch_lists, w.id == v.list_id
    )
    item_cols = (i.id, i.source, i.location, i.category, i.name, i.size, v.version, w.name)
    found: dict[tuple[int, int, str], FileMatch] = {}

    def add(f: FileKey, how: str, row: Any) -> None:
        found.setdefault(
            (f.index, int(row[0]), how),
            FileMatch(
                f.index,
                f.path,
                f.size,
                how,
                int(row[0]),
                str(row[7]),
                int(row[6]),
                str(row[1]),
                str(row[2]),
                row[3],
                row[4],
                row[5],
            ),
        )

    by_sha1: dict[bytes, list[FileKey]] = {}
    by_md5: dict[bytes, list[FileKey]] = {}
    by_root: dict[bytes, list[FileKey]] = {}
    by_size: dict[int, list[FileKey]] = {}
    for f in files:
        if f.sha1 is not None:
            by_sha1.setdefault(f.sha1, []).append(f)
        if f.md5 is not None:
            by_md5.setdefault(f.md5, []).append(f)
        if f.pieces_root is not None:
            by_root.setdefault(f.pieces_root, []).append(f)
        by_size.setdefault(f.size, []).append(f)
    values = list({*by_sha1, *by_md5, *by_root})
    sizes = list(by_size)
    with engine.connect() as conn:
        for chunk in _chunks(values):
            query = (
                select(h.kind, h.value, *item_cols)
                .select_from(watch_hashes.join(joined, i.id == h.item_id))
                .where(
                    and_(
                        h.value.in_(chunk),
                        h.kind.in_((*_SHA1_KINDS, *_MD5_KINDS, *_ROOT_KINDS)),
                        w.name.not_in(exclude_lists),
                    )
                )
            )
            for row in conn.execute(query):
                kind, value, rest = str(row[0]), bytes(row[1]), row[2:]
                if kind in _SHA1_KINDS:
                    table, how = by_sha1, "sha1"
                elif kind in _MD5_KINDS:
                    table, how = by_md5, "md5"
                else:
                    table, how = by_root, "pieces-root"
                for f in table.get(value, []):
                    add(f, how, rest)
        # No index on size or name (the schema is not ours to change here): one pass over the
        # active items per chunk of sizes; see docs/bittorrent.md, Discovery.
        for size_chunk in _chunks(sizes):
            by_item = (
                select(*item_cols, i.attributes)
                .select_from(joined)
                .where(and_(i.size.in_(size_chunk), w.name.not_in(exclude_lists)))
            )
            for item in conn.execute(by_item):
                root = _pieces_root(item[8])
                for f in by_size.get(int(item[5]), []):
                    if root is not None and f.pieces_root == root:
                        add(f, "pieces-root", item)
                    if item[4] is not None and item[4] in (f.path, f.basename):
                        add(f, "name-size", item)
    return sorted(found.values(), key=lambda m: (m.file_index, m.item_id, m.how))


def add_derived(
    engine: Engine,
    entry: DerivedEntry,
    *,
    list_name: str = DERIVED_LIST,
    source: str = "peerwatch discovery",
    clock_ms: Callable[[], int] = _now_ms,
) -> ImportResult:
    """Add `entry` to `list_name` as a new version (the active version's items, copied, plus
    this one), activated atomically like an import. A torrent already on the active version
    changes nothing (`unchanged`)."""
    if entry.btih is None and entry.btmh is None:
        raise ValueError("a derived entry needs a v1 or a v2 infohash")
    key = entry.content_key
    hashes = [
        (kind, value)
        for kind, value in ((HashKind.BTIH, entry.btih), (HashKind.BTMH, entry.btmh))
        if value is not None
    ]
    i, h, v = watch_items.c, watch_hashes.c, list_versions.c
    with writer(engine).begin() as conn:
        list_id, active = WatchlistStore._list_and_active(conn, list_name)
        old_items: list[Any] = []
        old_hashes: dict[int, list[tuple[str, bytes]]] = {}
        if active is not None:
            assert list_id is not None
            old_version_id = conn.execute(
                select(v.id).where(and_(v.list_id == list_id, v.active))
            ).scalar_one()
            old_items = list(
                conn.execute(
                    select(i.id, i.source, i.location, i.category, i.name, i.size, i.attributes)
                    .where(i.version_id == old_version_id)
                    .order_by(i.id)
                )
            )
            for item_id, kind, value in conn.execute(
                select(h.item_id, h.kind, h.value).where(h.item_id.in_([r[0] for r in old_items]))
            ):
                old_hashes.setdefault(int(item_id), []).append((str(kind), bytes(value)))
            held = {(k, val) for pairs in old_hashes.values() for k, val in pairs}
            if any((kind.value, value) in held for kind, value in hashes):
                return ImportResult(list_name, active[0], active[2], active[3], True)
        if list_id is None:
            list_id = conn.execute(
                insert(watch_lists)
                .values(name=list_name, created_ms=clock_ms())
                .returning(watch_lists.c.id)
            ).scalar_one()
        last = conn.execute(select(func.max(v.version)).where(v.list_id == list_id)).scalar()
        version = (last or 0) + 1
        previous = None if active is None else active[1]
        fingerprint = hashlib.sha256(json.dumps(["derived", previous, key]).encode()).hexdigest()
        sources: list[dict[str, object]] = []
        if active is not None:
            sources.append({"path": f"{list_name} version {active[0]}", "format": "carried over"})
        sources.append(
            {
                "path": f"{source}: {key}",
                "format": "derived",
                "evidence": entry.attributes.get("evidence"),
            }
        )
        version_id = conn.execute(
            insert(list_versions)
            .values(
                list_id=list_id,
                version=version,
                imported_ms=clock_ms(),
                fingerprint=fingerprint,
                sources=json.dumps(sources),
                default_category=None,
                item_count=0,
                hash_count=0,
                skipped_count=0,
                active=False,
            )
            .returning(v.id)
        ).scalar_one()
        rows = [
            {
                "version_id": version_id,
                "source": r[1],
                "location": r[2],
                "category": r[3],
                "name": r[4],
                "size": r[5],
                "attributes": r[6],
            }
            for r in old_items
        ]
        rows.append(
            {
                "version_id": version_id,
                "source": source,
                "location": key,
                "category": entry.category,
                "name": entry.name,
                "size": entry.size,
                "attributes": json.dumps(entry.attributes, sort_keys=True),
            }
        )
        new_ids = (
            conn.execute(insert(watch_items).returning(i.id, sort_by_parameter_order=True), rows)
            .scalars()
            .all()
        )
        hash_rows = [
            {"item_id": new_id, "kind": kind, "value": value}
            for new_id, old in zip(new_ids, old_items, strict=False)
            for kind, value in old_hashes.get(int(old[0]), [])
        ]
        hash_rows += [{"item_id": new_ids[-1], "kind": k.value, "value": val} for k, val in hashes]
        conn.execute(insert(watch_hashes), hash_rows)
        conn.execute(update(list_versions).where(v.list_id == list_id).values(active=False))
        conn.execute(
            update(list_versions)
            .where(v.id == version_id)
            .values(active=True, item_count=len(rows), hash_count=len(hash_rows))
        )
    return ImportResult(
        list_name,
        version,
        len(rows),
        len(hash_rows),
        replaced_version=None if active is None else active[0],
    )


def _pieces_root(attributes: object) -> bytes | None:
    if not isinstance(attributes, str) or "pieces_root" not in attributes:
        return None
    value = json.loads(attributes).get("pieces_root")
    if not isinstance(value, str) or len(value) != 64:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def _chunks(values: Sequence[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield list(values[start : start + _IN_CHUNK])


def _compatible_kinds(kind: HashKind) -> set[HashKind]:
    """Stored kinds that a query of `kind` should find."""
    members = set(kind.members)
    out = set(members)
    for k in HashKind:
        if k.is_ambiguous and members & set(k.members):
            out.add(k)
    return out


def _batched(items: Iterable[ParsedItem], n: int) -> Iterator[list[ParsedItem]]:
    batch: list[ParsedItem] = []
    for it in items:
        batch.append(it)
        if len(batch) >= n:
            yield batch
            batch = []
    if batch:
        yield batch
