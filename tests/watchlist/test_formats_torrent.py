"""A .torrent file as a list: the torrent item and one item per file."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from peerwatch.domain.hashes import HashKind
from peerwatch.errors import InputError
from peerwatch.watchlist.formats import parse_file
from tests.protocols.bittorrent.torrent_builder import (
    bencode,
    hybrid,
    infohashes,
    random_content,
    v1_multi,
    v2,
)


def test_v1_torrent_items(tmp_path: Path) -> None:
    files = random_content(random.Random(1), [("a.bin",), ("d", "b.bin"), ("c.bin",)])
    meta = v1_multi(files, pad=True, sha1=True, md5="hex")
    btih, _ = infohashes(meta)
    path = tmp_path / "x.torrent"
    path.write_bytes(bencode(meta))
    items = list(parse_file(path, None, kind=None, default_category="c", on_invalid=None))
    assert len(items) == 4  # the torrent and three files; the padding files are not items
    t = items[0]
    assert t.location == "torrent"
    assert [(d.kind, d.value) for d in t.hashes] == [(HashKind.BTIH, btih)]
    assert (t.name, t.size, t.category) == ("sample", sum(len(f.data) for f in files), "c")
    assert t.attributes["version"] == "v1"
    assert t.attributes["piece_length"] == 16384
    assert t.attributes["file_count"] == 3
    assert t.attributes["trackers"] == ["http://127.0.0.1:6969/announce", "udp://127.0.0.1:6970"]
    for item, f in zip(items[1:], files, strict=True):
        assert item.name == "sample/" + "/".join(f.path)
        assert item.size == len(f.data)
        assert [(d.kind, d.value) for d in item.hashes] == [
            (HashKind.SHA1, f.sha1),
            (HashKind.MD5, f.md5),
        ]
        assert item.attributes == {"torrent_btih": btih.hex()}
    assert [i.location for i in items[1:]] == ["info.files[0]", "info.files[2]", "info.files[4]"]


def test_v2_and_hybrid_items(tmp_path: Path) -> None:
    files = random_content(random.Random(2), [("x.bin",), ("y", "z.bin")])
    for meta, version in ((v2(files), "v2"), (hybrid(files, sha1=False), "hybrid")):
        btih, btmh = infohashes(meta)
        path = tmp_path / f"{version}.torrent"
        path.write_bytes(bencode(meta))
        items = list(parse_file(path, "torrent", kind=None, default_category=None, on_invalid=None))
        assert len(items) == 3
        expected = [(HashKind.BTMH, btmh)]
        links = {"torrent_btmh": btmh.hex()}
        if version == "hybrid":
            expected.insert(0, (HashKind.BTIH, btih))
            links["torrent_btih"] = btih.hex()
        assert [(d.kind, d.value) for d in items[0].hashes] == expected
        assert items[0].attributes["version"] == version
        by_name = {"sample/" + "/".join(f.path): f for f in files}
        for item in items[1:]:
            assert item.name is not None
            f = by_name[item.name]
            assert item.hashes == ()  # no BEP 47 hashes: still an item (name + size)
            assert item.size == len(f.data)
            assert item.attributes == {**links, "pieces_root": f.pieces_root.hex()}


def test_broken_torrent_is_always_raised(tmp_path: Path) -> None:
    path = tmp_path / "bad.torrent"
    path.write_bytes(b"d4:infod4:name1:a12:piece lengthi0eee")
    with pytest.raises(InputError) as err:
        list(parse_file(path, "torrent", kind=None, default_category=None, on_invalid=print))
    assert (err.value.source, err.value.location) == (str(path), "torrent")
    assert err.value.field == "info.piece length"
    assert "not a valid torrent" in str(err.value)
