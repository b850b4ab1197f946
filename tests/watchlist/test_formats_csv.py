"""CSV hash lists."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from peerwatch.domain.hashes import HashKind
from peerwatch.errors import InputError
from peerwatch.watchlist.formats import parse_file
from peerwatch.watchlist.item import ParsedItem


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "list.csv"
    path.write_bytes(text.encode())
    return path


def parse(path: Path, on_invalid: list[InputError] | None = None) -> list[ParsedItem]:
    handler = None if on_invalid is None else on_invalid.append
    return list(parse_file(path, "csv", kind=None, default_category="dflt", on_invalid=handler))


def test_all_columns_case_insensitive_any_order(tmp_path: Path) -> None:
    md5, sha1, sha256, ed2k = os.urandom(16), os.urandom(20), os.urandom(32), os.urandom(16)
    v1, v2, btih, btmh = os.urandom(20), os.urandom(32), os.urandom(20), os.urandom(32)
    path = write(
        tmp_path,
        "# exported by a generator\n"
        " Name , MD5,sha1,SHA256,ed2k,InfoHash,btih,btmh,Category,size\n"
        f'"a, quoted\nname",{md5.hex()},{sha1.hex()},{sha256.hex()},{ed2k.hex()},'
        f"{v1.hex()},{btih.hex()},{btmh.hex()},1,1024\n"
        "\n"
        f",,,,,{base64.b32encode(v1).decode()},,,,\n"
        f"plain,,,,,{v2.hex().upper()},,,,\n",
    )
    items = parse(path)
    assert len(items) == 3
    first = items[0]
    assert first.location == "line 3"
    assert first.name == "a, quoted\nname"
    assert first.category == "1"
    assert first.size == 1024
    assert [(d.kind, d.value) for d in first.hashes] == [
        (HashKind.MD5, md5),
        (HashKind.SHA1, sha1),
        (HashKind.SHA256, sha256),
        (HashKind.ED2K, ed2k),
        (HashKind.BTIH, v1),
        (HashKind.BTIH, btih),
        (HashKind.BTMH, btmh),
    ]
    assert items[1].location == "line 6"  # the quoted newline made record 1 two lines long
    assert [(d.kind, d.value) for d in items[1].hashes] == [(HashKind.BTIH, v1)]
    assert (items[1].category, items[1].name, items[1].size) == ("dflt", None, None)
    assert [(d.kind, d.value) for d in items[2].hashes] == [(HashKind.BTMH, v2)]
    assert items[2].location == "line 7"


def test_unknown_column_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, f"md5,shaa1\n{'0' * 32},\n")
    with pytest.raises(InputError) as err:
        parse(path, [])  # header errors are raised even when skipping invalid records
    assert (err.value.source, err.value.location, err.value.field) == (str(path), "line 1", "shaa1")
    assert "unknown column 'shaa1'" in str(err.value)


@pytest.mark.parametrize(
    ("header", "field", "words"),
    [("md5,MD5", "md5", "twice"), ("name,size", "header", "no hash column")],
)
def test_bad_header(tmp_path: Path, header: str, field: str, words: str) -> None:
    path = write(tmp_path, f"{header}\n")
    with pytest.raises(InputError, match=words) as err:
        parse(path)
    assert (err.value.location, err.value.field) == ("line 1", field)


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        (",,x,12", "hash", "no hash in any of the columns md5, sha1"),
        (f"{'0' * 32},{'1' * 40},x,12kB", "size", "byte count"),
        (f"{'0' * 32},{'1' * 40},x,-3", "size", "byte count"),
        (f"{'0' * 31},,x,1", "md5", "length 31"),
        (f"{'0' * 32},{'g' * 40},x,1", "sha1", "bad hex"),
        (f"{'0' * 32},,x,1,extra", "columns", "5 cells"),
    ],
)
def test_bad_rows_name_line_and_field(tmp_path: Path, row: str, field: str, words: str) -> None:
    # 'md5' first: a row with an empty md5 and a bad sha1 still reports the sha1 column.
    path = write(tmp_path, f"md5,sha1,name,size\n{'a' * 32},,ok,1\n{row}\n")
    with pytest.raises(InputError) as err:
        parse(path)
    assert (err.value.source, err.value.location, err.value.field) == (str(path), "line 3", field)
    assert words in str(err.value)


def test_on_invalid_skips_and_reports_every_bad_row(tmp_path: Path) -> None:
    good = [os.urandom(16).hex() for _ in range(3)]
    path = write(
        tmp_path,
        f"md5,size\n{good[0]},1\nbad,2\n{good[1]},x\n# comment\n,5\n{good[2]},3\n",
    )
    errors: list[InputError] = []
    items = parse(path, errors)
    assert [i.hashes[0].hex for i in items] == [good[0], good[2]]
    assert [i.location for i in items] == ["line 2", "line 7"]
    assert [(e.location, e.field) for e in errors] == [
        ("line 3", "md5"),
        ("line 4", "size"),
        ("line 6", "hash"),
    ]
