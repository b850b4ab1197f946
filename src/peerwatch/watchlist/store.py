"""The watchlist in the database: versioned lists of items with provenance, and hash lookup."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
