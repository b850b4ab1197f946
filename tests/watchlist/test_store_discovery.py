"""What discovery needs of the watchlist (both databases): matching a torrent's files against the
active lists, and derived entries as new versions of their own list, swept like any torrent.

All content is benign generated random bytes."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from sqlalchemy import Engine

from peerwatch.domain.hashes import Digest, HashKind
from peerwatch.lab import content
from peerwatch.watchlist.store import (
    DERIVED_LIST,
    DerivedEntry,
    FileKey,
    WatchlistStore,
)
from tests.protocols.bittorrent.torrent_builder import bencode, random_content, v2


@pytest.fixture
def files(tmp_path: Path) -> list[content.BenignFile]:
    return content.make_files(tmp_path / "content", 5, seed=7, max_size=40_000)


@pytest.fixture
def store(engine: Engine, tmp_path: Path, files: list[content.BenignFile]) -> WatchlistStore:
    """Lists: a CSV of files 0-1 (md5, sha1, sha256, size, name), a v1 .torrent of files 3-4
    (BEP 47 sha1 per file), and a v2 .torrent (pieces roots kept as attributes)."""
    store = WatchlistStore(engine)
    (tmp_path / "cases.csv").write_text(content.csv_list(files[:2], category="A"))
    (tmp_path / "set.torrent").write_bytes(content.torrent_v1(files[3:], "set"))
    store.import_files([tmp_path / "cases.csv"], list_name="cases")
    store.import_files([tmp_path / "set.torrent"], list_name="set")
    return store


def v2_list(tmp_path: Path, store: WatchlistStore) -> tuple[bytes, int]:
    """Import a v2 .torrent of one benign file; returns that file's pieces root and size."""
    (only,) = random_content(random.Random(8), [("clip.bin",)])
    (tmp_path / "v2.torrent").write_bytes(bencode(v2([only], name="clip.bin")))
    store.import_files([tmp_path / "v2.torrent"], list_name="v2")
    return only.pieces_root, len(only.data)


def test_each_kind_of_file_match(
    store: WatchlistStore, files: list[content.BenignFile], tmp_path: Path
) -> None:
    root, root_size = v2_list(tmp_path, store)
    f = files
    keys = [
        # BEP 47 sha1 of a CSV file, under another name: a hash match only
        FileKey(0, "pack/renamed-a.bin", f[0].size, sha1=bytes.fromhex(f[0].sha1)),
        # md5 of the other CSV file
        FileKey(1, "pack/renamed-b.bin", f[1].size, md5=bytes.fromhex(f[1].md5)),
        # v2 pieces root of the watched v2 torrent's file, under another name
        FileKey(2, "pack/clip-copy.bin", root_size, pieces_root=root),
        # exact name and size of a file of the watched .torrent ("set/<name>")
        FileKey(3, f"set/{f[3].path.name}", f[3].size),
        # the basename and size of a CSV entry (its name is the bare file name)
        FileKey(4, f"other/{f[1].path.name}", f[1].size),
        # nothing known: a random sha1, a name with the wrong size, an unknown root
        FileKey(5, f"x/{f[0].path.name}", f[0].size + 1, sha1=b"\x01" * 20, pieces_root=b"\2" * 32),
    ]
    got = {(m.file_index, m.how, m.list_name) for m in store.match_files(keys)}
    assert got == {
        (0, "sha1", "cases"),
        (1, "md5", "cases"),
        (2, "pieces-root", "v2"),
        (3, "name-size", "set"),
        (4, "name-size", "cases"),
    }
    m = next(m for m in store.match_files(keys[:1]))
    assert (m.list_version, m.location, m.category, m.name, m.size) == (
        1,
        "line 2",
        "A",
        f[0].path.name,
        f[0].size,
    )
    assert m.source.endswith("cases.csv") and m.item_id > 0


def test_bep47_sha1_of_a_watched_torrent_file_matches(
    store: WatchlistStore, files: list[content.BenignFile]
) -> None:
    key = FileKey(0, "elsewhere.bin", files[4].size, sha1=bytes.fromhex(files[4].sha1))
    (m,) = store.match_files([key])
    assert (m.how, m.list_name, m.location) == ("sha1", "set", "info.files[1]")


def test_a_pieces_root_listed_as_btmh_matches(store: WatchlistStore, tmp_path: Path) -> None:
    root = bytes(range(32))
    (tmp_path / "roots.txt").write_text(f"btmh:{root.hex()}\n{bytes(range(1, 33)).hex()}\n")
    store.import_files([tmp_path / "roots.txt"], list_name="roots")
    keys = [
        FileKey(0, "a.bin", 100, pieces_root=root),  # listed as btmh
        FileKey(1, "b.bin", 100, pieces_root=bytes(range(1, 33))),  # listed as sha256|btmh
        FileKey(2, "c.bin", 100, sha1=root[:20]),  # a sha1 is never compared with btmh values
    ]
    got = [(m.file_index, m.how, m.location) for m in store.match_files(keys)]
    assert got == [(0, "pieces-root", "line 1"), (1, "pieces-root", "line 2")]


def test_empty_files_inactive_versions_and_the_derived_list_never_match(
    store: WatchlistStore, files: list[content.BenignFile], tmp_path: Path
) -> None:
    assert store.match_files([FileKey(0, files[0].path.name, 0)]) == []
    sha1 = bytes.fromhex(files[0].sha1)
    assert store.match_files([FileKey(0, "a", files[0].size, sha1=sha1)]) != []
    # A new version of 'cases' without file 0: the old version is kept, but no longer matched.
    (tmp_path / "cases.csv").write_text(content.csv_list(files[1:2], category="A"))
    store.import_files([tmp_path / "cases.csv"], list_name="cases")
    assert store.match_files([FileKey(0, "a", files[0].size, sha1=sha1)]) == []
    # A derived entry named like a file, with its size, is not a source of further matches.
    store.add_derived(entry(b"\x05" * 20, name="lonely.bin", size=1234))
    assert store.match_files([FileKey(0, "lonely.bin", 1234)]) == []


def entry(btih: bytes | None, btmh: bytes | None = None, **kw: object) -> DerivedEntry:
    attributes: dict[str, object] = {
        "trackers": [],
        "piece_count": 3,
        "piece_length": 16384,
        "version": "v1",
        "derived_from": [{"item_id": 1, "list": "cases", "list_version": 1, "how": "sha1"}],
        "evidence": {"sensor": "s1", "seq": 9},
    }
    return DerivedEntry(
        btih=btih,
        btmh=btmh,
        name=str(kw.get("name", "found")),
        size=int(str(kw.get("size", 40_000))),
        category="A",
        attributes=attributes,
    )


def test_derived_entries_are_versions_of_their_own_list_and_are_swept(
    store: WatchlistStore,
) -> None:
    first = store.add_derived(entry(b"\x11" * 20))
    assert (first.list_name, first.version, first.items, first.hashes) == (DERIVED_LIST, 1, 1, 1)
    assert not first.unchanged
    second = store.add_derived(entry(b"\x22" * 20, b"\x33" * 32))  # a hybrid
    assert (second.version, second.items, second.hashes, second.replaced_version) == (2, 2, 3, 1)
    again = store.add_derived(entry(b"\x22" * 20))  # already on the active version
    assert again.unchanged and again.version == 2
    derived = next(i for i in store.lists() if i.name == DERIVED_LIST)
    assert (derived.version, derived.items, derived.hashes) == (2, 2, 3)
    assert [s["format"] for s in derived.sources] == ["carried over", "derived"]
    assert derived.sources[1]["evidence"] == {"sensor": "s1", "seq": 9}
    # Swept like any other watched torrent: both are in watched_torrents, with their details.
    torrents = {t.content_key: t for t in store.watched_torrents()}
    assert f"btih:{'11' * 20}" in torrents
    hybrid = torrents[f"btih:{'22' * 20}"]
    assert hybrid.lookup_hashes == (b"\x22" * 20, b"\x33" * 20)
    assert hybrid.piece_count == 3 and hybrid.name == "found"
    # Found by hash like any entry, located by its content key.
    (match,) = store.match([Digest(HashKind.BTIH, b"\x11" * 20)])
    assert match.list_name == DERIVED_LIST and match.location == f"btih:{'11' * 20}"


def test_derived_provenance_is_kept_as_json(store: WatchlistStore, engine: Engine) -> None:
    from sqlalchemy import select

    from peerwatch.storage.schema import watch_items

    store.add_derived(entry(None, b"\x44" * 32))
    with engine.connect() as conn:
        (attrs,) = conn.execute(
            select(watch_items.c.attributes).where(watch_items.c.location == f"btmh:{'44' * 32}")
        ).one()
    kept = json.loads(attrs)
    assert kept["derived_from"][0]["list"] == "cases"
    assert kept["evidence"] == {"sensor": "s1", "seq": 9}
    with pytest.raises(ValueError):
        store.add_derived(entry(None, None))
