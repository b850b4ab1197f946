"""Format detection and dispatch."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from peerwatch.errors import InputError
from peerwatch.watchlist.formats import FORMATS, detect_format, parse_file
from tests.protocols.bittorrent.torrent_builder import bencode, random_content, v1_multi

H = os.urandom(16).hex()


@pytest.mark.parametrize(
    ("name", "head", "fmt"),
    [
        ("x.bin", bencode(v1_multi(random_content(random.Random(1), [("a",)]))), "torrent"),
        ("x.torrent", b"d8:announce" + b"x" * 100, "torrent"),
        ("x.bin", b"d8:announce" + b"x" * 100, "text"),
        ("x.json", b'\xef\xbb\xbf \n{"odata.metadata": "x", "value": []}', "vics"),
        ("x.json", b"[]", "vics"),
        ("x.csv", f"# c\n\nMD5, Name\n{H},a\n".encode(), "csv"),
        ("x.txt", f"{H}, a name with a comma\n".encode(), "text"),
        ("x.txt", f"# c\n{H}\n".encode(), "text"),
        ("x.txt", b"# c\n  magnet:?xt=urn:btih:" + b"0" * 40, "magnet"),
        ("x.txt", b"", "text"),
    ],
)
def test_detect_format(name: str, head: bytes, fmt: str) -> None:
    assert detect_format(Path(name), head) == fmt
    assert fmt in FORMATS


def test_parse_file_detects_and_dispatches(tmp_path: Path) -> None:
    path = tmp_path / "list"
    path.write_text(f"sha1,name\n{'ab' * 20},x\n")
    items = list(parse_file(path, None, kind=None, default_category=None, on_invalid=None))
    assert [(i.location, i.name) for i in items] == [("line 2", "x")]


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text(H)
    with pytest.raises(InputError, match="unknown format 'xml'") as err:
        parse_file(path, "xml", kind=None, default_category=None, on_invalid=None)
    assert err.value.field == "format"
    with pytest.raises(InputError, match="cannot read") as err:
        parse_file(
            tmp_path / "missing.txt", "text", kind=None, default_category=None, on_invalid=None
        )
    assert err.value.source == str(tmp_path / "missing.txt")
