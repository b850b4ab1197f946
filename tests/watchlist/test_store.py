"""The watchlist in the database: versions, provenance, atomic failure, matching (both DBs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from peerwatch.domain.hashes import HashKind, parse_hash
from peerwatch.errors import InputError
from peerwatch.lab import content
from peerwatch.storage.schema import list_versions, watch_hashes, watch_items, watch_lists
from peerwatch.watchlist.index import MatchIndex
from peerwatch.watchlist.store import WatchlistStore


@pytest.fixture
def files(tmp_path: Path) -> list[content.BenignFile]:
    return content.make_files(tmp_path / "content", 5, seed=3, max_size=40_000)


@pytest.fixture
def lists(tmp_path: Path, files: list[content.BenignFile]) -> dict[str, Path]:
    d = tmp_path / "lists"
    d.mkdir()
    paths = {
        "vics": d / "vics.json",
        "csv": d / "list.csv",
        "torrent": d / "set.torrent",
    }
    paths["vics"].write_text(content.vics_v2(files[:3], category=1))
    paths["csv"].write_text(content.csv_list(files[2:], category="2"))
    paths["torrent"].write_bytes(content.torrent_v1(files[3:], "set"))
    return paths


def table_counts(engine: Engine) -> tuple[int, int, int, int]:
    with engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for t in (watch_lists, list_versions, watch_items, watch_hashes)
        )


def test_vics_csv_torrent_give_expected_counts(engine: Engine, lists: dict[str, Path]) -> None:
    store = WatchlistStore(engine)
    vics = store.import_files([lists["vics"]], list_name="vics")
    assert (vics.version, vics.items, vics.hashes) == (1, 3, 9)  # 3 media x MD5, SHA1, SHA256
    csv = store.import_files([lists["csv"]], list_name="csv")
    assert (csv.items, csv.hashes) == (3, 9)
    tor = store.import_files([lists["torrent"]], list_name="torrents")
    # the torrent (btih) + 2 files with BEP 47 sha1 each
    assert (tor.items, tor.hashes) == (3, 3)
    assert store.kind_counts() == {"md5": 6, "sha1": 8, "sha256": 6, "btih": 1}
    assert [(i.name, i.version, i.items, i.hashes) for i in store.lists()] == [
        ("csv", 1, 3, 9),
        ("torrents", 1, 3, 3),
        ("vics", 1, 3, 9),
    ]
    source = store.lists()[2].sources[0]
    assert source["format"] == "vics" and source["path"] == str(lists["vics"])


def test_reimport_is_idempotent(engine: Engine, lists: dict[str, Path]) -> None:
    store = WatchlistStore(engine)
    store.import_files([lists["vics"]], list_name="v")
    before = table_counts(engine)
    again = store.import_files([lists["vics"]], list_name="v")
    assert again.unchanged and again.version == 1 and again.items == 3
    assert table_counts(engine) == before


def test_new_version_replaces_atomically_and_keeps_provenance(
    engine: Engine, lists: dict[str, Path], files: list[content.BenignFile]
) -> None:
    store = WatchlistStore(engine)
    store.import_files([lists["vics"]], list_name="v")
    lists["vics"].write_text(content.vics_v2(files[3:], category=4))
    second = store.import_files([lists["vics"]], list_name="v")
    assert (second.version, second.replaced_version, second.items) == (2, 1, 2)
    assert store.lists()[0].version == 2
    old = parse_hash(files[0].sha1)
    new = parse_hash(files[4].sha1)
    assert store.match([old]) == []
    (m,) = store.match([new])
    assert (m.list_name, m.list_version, m.category) == ("v", 2, "4")
    assert m.location.startswith("record 2") and m.source == str(lists["vics"])
    with engine.connect() as conn:  # the old version is kept, inactive, for provenance
        assert conn.execute(select(func.count()).select_from(list_versions)).scalar_one() == 2


def test_broken_file_changes_nothing(engine: Engine, lists: dict[str, Path]) -> None:
    store = WatchlistStore(engine)
    store.import_files([lists["csv"]], list_name="csv")
    before = table_counts(engine)
    broken = lists["vics"].read_bytes()
    lists["vics"].write_bytes(broken[: len(broken) * 2 // 3])  # truncated JSON
    with pytest.raises(InputError, match="truncated or invalid JSON") as err:
        store.import_files([lists["vics"]], list_name="vics")
    assert err.value.source == str(lists["vics"])
    # A bad line after good ones, in a second file of the same import: nothing is written either.
    bad_csv = lists["csv"].parent / "bad.csv"
    bad_csv.write_text(lists["csv"].read_text() + "zz,,,,,\n")
    with pytest.raises(InputError) as err2:
        store.import_files([lists["torrent"], bad_csv], list_name="csv")
    assert err2.value.location == "line 5" and err2.value.field == "md5"
    assert table_counts(engine) == before
    assert store.lists()[0].version == 1


def test_skip_invalid_reports_every_record(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "h.txt"
    path.write_text("# list\n" + "a" * 40 + "\nnot-a-hash\n" + "b" * 64 + "\n" + "c" * 33 + "\n")
    store = WatchlistStore(engine)
    with pytest.raises(InputError, match="line 3"):
        store.import_files([path], list_name="h")
    result = store.import_files([path], list_name="h", skip_invalid=True)
    assert (result.items, result.hashes) == (2, 2)
    assert [e.location for e in result.skipped] == ["line 3", "line 5"]
    assert store.lists()[0].skipped == 2


def test_ambiguous_entries_match_as_both(engine: Engine, tmp_path: Path) -> None:
    value = "ab" * 20
    path = tmp_path / "either.txt"
    path.write_text(value + "\n")
    store = WatchlistStore(engine)
    store.import_files([path], list_name="either")
    assert store.kind_counts() == {"sha1|btih": 1}
    for kind in (HashKind.SHA1, HashKind.BTIH, None):
        (m,) = store.match([parse_hash(value, kind)])
        assert m.kind == "sha1|btih"
    # with --kind the entry is one kind only, and the other kind does not match
    store.import_files([path], list_name="either", kind=HashKind.SHA1)
    assert store.match([parse_hash(value, HashKind.BTIH)]) == []
    assert len(store.match([parse_hash(value, HashKind.SHA1)])) == 1


def test_remove_deletes_everything_of_the_list(engine: Engine, lists: dict[str, Path]) -> None:
    store = WatchlistStore(engine)
    store.import_files([lists["csv"]], list_name="keep")
    before = table_counts(engine)
    store.import_files([lists["vics"]], list_name="gone")
    store.import_files([lists["torrent"]], list_name="gone")
    assert store.remove("gone") is True
    assert store.remove("gone") is False
    assert table_counts(engine) == before


def test_index_from_store_matches_active_entries(
    engine: Engine, lists: dict[str, Path], files: list[content.BenignFile]
) -> None:
    store = WatchlistStore(engine)
    store.import_files([lists["vics"]], list_name="v")
    store.import_files([lists["torrent"]], list_name="t")
    calls: list[int] = []
    index = MatchIndex.from_rows(
        store.iter_active_hashes(), total=store.count_active_hashes(), progress=calls.append
    )
    assert len(index) == 9 + 3
    assert calls and calls[-1] == 12
    btih = content.infohash_v1(lists["torrent"].read_bytes())
    assert index.contains(HashKind.BTIH, bytes.fromhex(btih))
    assert index.contains(HashKind.MD5, bytes.fromhex(files[0].md5))
    assert not index.contains(HashKind.MD5, bytes.fromhex(files[4].md5))  # listed in csv only


def test_attributes_are_kept(engine: Engine, lists: dict[str, Path]) -> None:
    WatchlistStore(engine).import_files([lists["vics"]], list_name="v")
    with engine.connect() as conn:
        attrs = conn.execute(select(watch_items.c.attributes)).scalars().first()
    assert attrs is not None
    assert json.loads(attrs)["VictimIdentified"] is False


def test_watched_torrents_come_from_torrents_magnets_and_hash_lists(
    engine: Engine, lists: dict[str, Path], tmp_path: Path
) -> None:
    store = WatchlistStore(engine)
    store.import_files([lists["torrent"]], list_name="t")
    btih = content.infohash_v1(lists["torrent"].read_bytes())
    v2 = "cd" * 32
    text = tmp_path / "hashes.txt"
    text.write_text(f"btmh:{v2}\n{'ef' * 20}\n{btih}\n")
    store.import_files([text], list_name="h")
    store.import_files([lists["vics"]], list_name="v")  # file hashes only: not torrents
    torrents = {t.content_key: t for t in store.watched_torrents()}
    assert set(torrents) == {f"btih:{btih}", f"btmh:{v2}", f"btih:{'ef' * 20}"}
    from_file = torrents[f"btih:{btih}"]
    assert from_file.piece_count is not None and from_file.piece_count > 0  # richest kept
    assert from_file.name == "set"
    assert torrents[f"btmh:{v2}"].wire_hash == bytes.fromhex(v2)[:20]
