"""Metainfo decoder: known answers on generated torrents, every error path, and fuzzing."""

from __future__ import annotations

import copy
import hashlib
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.protocols.bittorrent.metainfo import (
    Metainfo,
    MetainfoError,
    parse_metainfo,
)
from tests.protocols.bittorrent.torrent_builder import (
    PIECE,
    Content,
    bencode,
    hybrid,
    infohashes,
    random_content,
    v1_multi,
    v1_single,
    v2,
)

Meta = dict[bytes, object]


def rng(seed: int = 7) -> random.Random:
    return random.Random(seed)


def info_of(meta: Meta) -> Meta:
    info = meta[b"info"]
    assert isinstance(info, dict)
    return info


# --- known answers ------------------------------------------------------------------------------


def test_v1_single_file_known_answer() -> None:
    content = Content(("sample.bin",), rng().randbytes(3 * PIECE + 5))
    meta = v1_single(content)
    btih, _ = infohashes(meta)
    m = parse_metainfo(bencode(meta))
    assert m.btih == btih
    assert m.btmh is None
    assert m.version == "v1"
    assert m.name == "sample.bin"
    assert m.piece_length == PIECE
    assert len(m.pieces) == 4 * 20
    assert m.total_size == 3 * PIECE + 5
    assert [(f.path, f.length, f.location) for f in m.files] == [
        (("sample.bin",), 3 * PIECE + 5, "info")
    ]
    assert m.files[0].sha1 is None and m.files[0].md5 is None and m.files[0].pieces_root is None
    assert m.trackers == ("http://127.0.0.1:6969/announce",)
    assert m.info_bytes == bencode(meta[b"info"])
    assert not m.private


def test_v1_single_file_bep47_hashes_and_private_flag() -> None:
    content = Content(("a.bin",), rng().randbytes(1000))
    meta = v1_single(
        content,
        name="a.bin",
        extra={b"sha1": content.sha1, b"md5sum": content.md5.hex().encode(), b"private": 1},
    )
    m = parse_metainfo(bencode(meta))
    assert m.files[0].sha1 == content.sha1
    assert m.files[0].md5 == content.md5
    assert m.private


@pytest.mark.parametrize("md5", ["hex", "raw"])
def test_v1_multi_file_with_padding_and_bep47(md5: str) -> None:
    files = random_content(rng(), [("d", "one.bin"), ("two.bin",), ("d", "e", "three.bin")])
    meta = v1_multi(files, pad=True, sha1=True, md5=md5)
    entries = info_of(meta)[b"files"]
    assert isinstance(entries, list)
    n_padding = sum(1 for e in entries if e.get(b"attr") == b"p")
    assert n_padding == 2  # the builder really did insert padding files
    btih, _ = infohashes(meta)
    m = parse_metainfo(bencode(meta))
    assert m.btih == btih and m.btmh is None
    assert [f.path for f in m.files] == [("sample", *f.path) for f in files]
    assert [f.length for f in m.files] == [len(f.data) for f in files]
    assert [f.sha1 for f in m.files] == [f.sha1 for f in files]
    assert [f.md5 for f in m.files] == [f.md5 for f in files]
    # locations index the real list, padding entries included
    assert [f.location for f in m.files] == ["info.files[0]", "info.files[2]", "info.files[4]"]
    assert m.total_size == sum(len(f.data) for f in files)
    assert m.files[1].path_str == "sample/two.bin"
    assert m.announce_list == (("http://127.0.0.1:6969/announce",), ("udp://127.0.0.1:6970",))
    assert m.trackers == ("http://127.0.0.1:6969/announce", "udp://127.0.0.1:6970")


def test_v2_file_tree_known_answer() -> None:
    files = random_content(rng(3), [("z.bin",), ("dir", "b.bin"), ("dir", "a.bin")])
    files.append(Content(("empty.txt",), b""))
    meta = v2(files, name="tree")
    _, btmh = infohashes(meta)
    m = parse_metainfo(bencode(meta))
    assert m.btmh == btmh
    assert m.btih is None
    assert m.version == "v2"
    assert m.btmh_truncated == btmh[:20]
    assert m.pieces == b""
    # BEP 52: the tree is walked in byte order of path components
    assert [f.path for f in m.files] == [
        ("tree", "dir", "a.bin"),
        ("tree", "dir", "b.bin"),
        ("tree", "empty.txt"),
        ("tree", "z.bin"),
    ]
    by_path = {("tree", *f.path): f for f in files}
    for f in m.files:
        src = by_path[f.path]
        assert f.length == len(src.data)
        assert f.pieces_root == (src.pieces_root if src.data else None)
        assert f.sha1 is None
    assert m.files[0].location == "info.file tree[dir/a.bin]"


def test_v2_single_file_is_saved_under_its_own_name() -> None:
    files = random_content(rng(4), [("only.bin",)])
    m = parse_metainfo(bencode(v2(files, name="only.bin")))
    assert [f.path for f in m.files] == [("only.bin",)]


def test_hybrid_has_both_infohashes_and_merges_file_hashes() -> None:
    files = random_content(rng(5), [("b.bin",), ("a", "x.bin"), ("c.bin",)])
    meta = hybrid(files, name="hyb")
    btih, btmh = infohashes(meta)
    m = parse_metainfo(bencode(meta))
    assert (m.btih, m.btmh) == (btih, btmh)
    assert m.version == "hybrid"
    assert [f.path for f in m.files] == [("hyb", "a", "x.bin"), ("hyb", "b.bin"), ("hyb", "c.bin")]
    by_path = {("hyb", *f.path): f for f in files}
    for f in m.files:
        assert f.sha1 == by_path[f.path].sha1
        assert f.pieces_root == by_path[f.path].pieces_root
        assert f.location.startswith("info.files[")
    assert m.trackers == ("udp://127.0.0.1:6970",)


def test_infohash_is_over_the_raw_info_slice_not_a_reencoding() -> None:
    # Extra top-level keys before and after 'info' must not shift the slice.
    content = Content(("s.bin",), rng(6).randbytes(100))
    meta = v1_single(content)
    meta[b"comment"] = b"generated test torrent"
    meta[b"url-list"] = [b"http://127.0.0.1/x"]
    meta[b"creation date"] = 1_700_000_000
    raw = bencode(meta)
    info_raw = bencode(meta[b"info"])
    assert raw.count(info_raw) == 1
    m = parse_metainfo(raw)
    assert m.info_bytes == info_raw
    assert m.btih == hashlib.sha1(info_raw, usedforsecurity=False).digest()


def test_undecodable_name_falls_back_to_name_utf8() -> None:
    meta = v1_single(Content(("x",), b"abc"))
    info_of(meta)[b"name"] = b"caf\xe9"
    info_of(meta)[b"name.utf-8"] = "café".encode()
    assert parse_metainfo(bencode(meta)).name == "café"


# --- errors -------------------------------------------------------------------------------------


def _base() -> Meta:
    return v1_multi(random_content(rng(8), [("a",), ("b",)]), sha1=True)


def _v2base() -> Meta:
    return hybrid(random_content(rng(9), [("a",), ("b",)]))


def _set(path: list[bytes | int], value: object | None) -> Callable[[Meta], Meta]:
    """A mutation: set (or delete, for None) the value at `path` in a copy of the torrent."""

    def mutate(meta: Meta) -> Meta:
        meta = copy.deepcopy(meta)
        node: object = meta
        for step in path[:-1]:
            node = node[step]  # type: ignore[index]
        last = path[-1]
        if value is None:
            del node[last]  # type: ignore[attr-defined]
        else:
            node[last] = value  # type: ignore[index]
        return meta

    return mutate


ERROR_CASES: list[tuple[str, Callable[[], Meta], Callable[[Meta], Meta], str | None, str]] = [
    ("no info", _base, _set([b"info"], None), "info", "missing"),
    ("info is a list", _base, _set([b"info"], [1]), "info", "not a dictionary"),
    ("no name", _base, _set([b"info", b"name"], None), "info.name", "missing"),
    ("name int", _base, _set([b"info", b"name"], 5), "info.name", "not a byte string"),
    ("no piece length", _base, _set([b"info", b"piece length"], None), "info.piece length", ""),
    ("zero piece length", _base, _set([b"info", b"piece length"], 0), "info.piece length", ""),
    ("pieces not 20n", _base, _set([b"info", b"pieces"], b"x" * 21), "info.pieces", "multiple"),
    ("pieces count", _base, _set([b"info", b"pieces"], b"x" * 200), "info.pieces", "expected"),
    ("both", _base, _set([b"info", b"length"], 5), "info", "exactly one"),
    ("files str", _base, _set([b"info", b"files"], b"x"), "info.files", "not a list"),
    ("file not dict", _base, _set([b"info", b"files", 1], 7), "info.files[1]", "dictionary"),
    (
        "neg length",
        _base,
        _set([b"info", b"files", 0, b"length"], -1),
        "info.files[0].length",
        "negative",
    ),
    ("no path", _base, _set([b"info", b"files", 1, b"path"], None), "info.files[1].path", ""),
    ("empty path", _base, _set([b"info", b"files", 1, b"path"], []), "info.files[1].path", ""),
    (
        "sha1 size",
        _base,
        _set([b"info", b"files", 1, b"sha1"], b"x" * 19),
        "info.files[1].sha1",
        "20 bytes",
    ),
    (
        "md5 bad",
        _base,
        _set([b"info", b"files", 0, b"md5sum"], b"zz" * 16),
        "info.files[0].md5sum",
        "hex",
    ),
    ("announce-list", _base, _set([b"announce-list"], b"x"), "announce-list", "not a list"),
    ("tier", _base, _set([b"announce-list", 0], b"x"), "announce-list[0]", "tier"),
    ("meta version 3", _v2base, _set([b"info", b"meta version"], 3), "info.meta version", ""),
    (
        "v2 piece length",
        _v2base,
        _set([b"info", b"piece length"], 3 * PIECE),
        "info.piece length",
        "power of two",
    ),
    (
        "no pieces root",
        _v2base,
        _set([b"info", b"file tree", b"a", b"", b"pieces root"], None),
        "info.file tree[a].pieces root",
        "non-empty",
    ),
    (
        "pieces root size",
        _v2base,
        _set([b"info", b"file tree", b"a", b"", b"pieces root"], b"x" * 20),
        "info.file tree[a].pieces root",
        "32 bytes",
    ),
    (
        "hybrid disagree",
        _v2base,
        _set([b"info", b"file tree", b"b", b"", b"length"], 1),
        "info.files",
        "differs",
    ),
    (
        "file node sibling",
        _v2base,
        _set([b"info", b"file tree", b"a", b"z"], {b"": {b"length": 0}}),
        "info.file tree[a]",
        "sibling",
    ),
    ("tree empty", _v2base, _set([b"info", b"file tree"], {}), "info.file tree", "no files"),
]


@pytest.mark.parametrize(
    ("build", "mutate", "field", "words"),
    [c[1:] for c in ERROR_CASES],
    ids=[c[0] for c in ERROR_CASES],
)
def test_error_names_the_field(
    build: Callable[[], Meta], mutate: Callable[[Meta], Meta], field: str | None, words: str
) -> None:
    base = bencode(build())
    parse_metainfo(base)  # the unmutated torrent is valid, so the mutation is what fails
    with pytest.raises(MetainfoError) as err:
        parse_metainfo(bencode(mutate(build())))
    assert err.value.field is not None
    assert err.value.field.startswith(field or "")
    assert words in str(err.value)
    assert err.value.field in str(err.value)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "not a bencoded dictionary"),
        (b"l4:infoe", "not a bencoded dictionary"),
        (b"d4:infod4:name1:a", "truncated"),
        (b"d4:info5:abce", "truncated"),
        (b"di1e4:infoe", "not a string"),
        (b"d4:infoi1x2ee", "bad integer"),
        (b"d4:infod4:name1:ae", "truncated"),
        (b"d4:infodeee", "trailing"),
        (b"d4:infodeexx", "trailing"),
        (b"d4:infolxee", "unexpected byte"),
        (b"d1:z0:4:infodee", "canonical"),  # keys out of order: not canonical bencode
        (b"d4:info4:xxxxe", "not a dictionary"),
        (b"d4:infodee", "missing"),  # valid bencode, but an info dict without a name
        (b"d5:other0:e", "missing"),
        (b"d4:infod4:name01:aee", "canonical"),  # leading zero in a string length
    ],
)
def test_bad_bencode_is_a_metainfo_error(data: bytes, words: str) -> None:
    with pytest.raises(MetainfoError, match=words):
        parse_metainfo(data)


def test_size_cap() -> None:
    raw = bencode(_base())
    assert parse_metainfo(raw, max_size=len(raw)).btih is not None
    with pytest.raises(MetainfoError, match="limit"):
        parse_metainfo(raw, max_size=len(raw) - 1)


def test_file_count_cap() -> None:
    raw = bencode(_base())
    assert len(parse_metainfo(raw, max_files=2).files) == 2
    with pytest.raises(MetainfoError, match="more than 1 files") as err:
        parse_metainfo(raw, max_files=1)
    assert err.value.field == "info.files"
    raw2 = bencode(_v2base())
    with pytest.raises(MetainfoError, match="more than 1 files"):
        parse_metainfo(raw2, max_files=1)


def test_deep_nesting_is_bounded() -> None:
    deep = b"d4:info" + b"l" * 100_000 + b"e" * 100_000 + b"e"
    with pytest.raises(MetainfoError, match="nesting"):
        parse_metainfo(deep)


# --- fuzzing: nothing but MetainfoError ---------------------------------------------------------


def _decode_or_error(data: bytes) -> Metainfo | None:
    try:
        return parse_metainfo(data)
    except MetainfoError:
        return None


@settings(max_examples=400)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_metainfo_error(data: bytes) -> None:
    _decode_or_error(data)
    _decode_or_error(b"d4:info" + data)


_bvalues = st.recursive(
    st.integers(min_value=-(2**70), max_value=2**70) | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=12), inner),
    max_leaves=30,
)
_keys = st.sampled_from(
    [
        *(b"name", b"piece length", b"pieces", b"length", b"files", b"meta version"),
        *(b"file tree", b"path", b"attr", b"sha1", b"md5sum", b"", b"pieces root", b"private"),
    ]
)


@settings(max_examples=400)
@given(st.dictionaries(_keys, _bvalues, max_size=8), st.dictionaries(_keys, _bvalues, max_size=3))
def test_structured_garbage_raises_only_metainfo_error(info: Meta, tree: Meta) -> None:
    if b"file tree" in info:
        info[b"file tree"] = {b"a": tree, b"b": {b"": tree}}
    info[b"meta version"] = info.get(b"meta version", 2) if len(info) % 2 else 2
    _decode_or_error(bencode({b"info": info}))


@settings(max_examples=300)
@given(st.data())
def test_mutated_valid_torrents_raise_only_metainfo_error(data: st.DataObject) -> None:
    raw = bytearray(bencode(_v2base()))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    _decode_or_error(bytes(raw))
    _decode_or_error(bytes(raw[:cut]))


def test_piece_count_matches_libtorrent_for_every_version(tmp_path: Path) -> None:
    """The wire piece count (what a bitfield counts) agrees with libtorrent's own count."""
    lt = pytest.importorskip("libtorrent")
    import os
    import warnings

    for version, flags in (
        ("v1", lt.create_torrent.v1_only),
        ("v2", lt.create_torrent.v2_only),
        ("hybrid", 0),
    ):
        folder = tmp_path / version / "content"
        folder.mkdir(parents=True)
        for i, size in enumerate((40_000, 1, 70_000)):
            (folder / f"f{i}").write_bytes(os.urandom(size))
        fs = lt.file_storage()
        lt.add_files(fs, str(folder))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ct = lt.create_torrent(fs, 16384, flags=flags)
        lt.set_piece_hashes(ct, str(folder.parent))
        data = lt.bencode(ct.generate())
        meta = parse_metainfo(data)
        assert meta.version == version
        assert meta.piece_count == lt.torrent_info(data).num_pieces(), version
