"""Plain text hash lists."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from peerwatch.domain.hashes import HashKind
from peerwatch.errors import InputError
from peerwatch.watchlist.formats import parse_file


def write(tmp_path: Path, text: str, name: str = "list.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def test_kinds_by_length_comments_names_and_locations(tmp_path: Path) -> None:
    md5, sha1, sha256 = os.urandom(16), os.urandom(20), os.urandom(32)
    b32 = os.urandom(20)
    path = write(
        tmp_path,
        "\ufeff# generated benign test list\n"
        f"{md5.hex()}\n"
        "\n"
        f"  {sha1.hex().upper()}  holiday/photo 1.jpg\r\n"
        f"{sha256.hex()} *binary-mode name.bin\n"
        f"{base64.b32encode(b32).decode()}\t# a comment, not a name\n"
        f"sha1:{sha1.hex()}\n"
        f"BTIH:{b32.hex()}\n",
    )
    items = list(parse_file(path, "text", kind=None, default_category="cat-a", on_invalid=None))
    assert [(i.location, i.hashes[0].kind, i.hashes[0].value) for i in items] == [
        ("line 2", HashKind.MD5_OR_ED2K, md5),
        ("line 4", HashKind.SHA1_OR_BTIH, sha1),
        ("line 5", HashKind.SHA256_OR_BTMH, sha256),
        ("line 6", HashKind.SHA1_OR_BTIH, b32),
        ("line 7", HashKind.SHA1, sha1),
        ("line 8", HashKind.BTIH, b32),
    ]
    assert [i.name for i in items] == [
        None,
        "holiday/photo 1.jpg",
        "binary-mode name.bin",
        None,
        None,
        None,
    ]
    assert all(i.category == "cat-a" and len(i.hashes) == 1 for i in items)


def test_explicit_kind(tmp_path: Path) -> None:
    values = [os.urandom(16).hex() for _ in range(5)]
    path = write(tmp_path, "\n".join(values))
    items = list(
        parse_file(path, "text", kind=HashKind.ED2K, default_category=None, on_invalid=None)
    )
    assert [i.hashes[0].kind for i in items] == [HashKind.ED2K] * 5
    assert [i.hashes[0].hex for i in items] == values


@pytest.mark.parametrize(
    ("line", "kind", "reason"),
    [
        ("abc123", None, "length 6 is not a hash length"),
        ("z" * 40, None, "bad hex digit"),
        ("0" * 31, None, "length 31"),
        ("0" * 40, HashKind.MD5, "a md5 hash is 16 bytes"),
        ("md5:" + "0" * 32, HashKind.SHA1, "the line says md5"),
    ],
)
def test_errors_name_file_line_and_field(
    tmp_path: Path, line: str, kind: HashKind | None, reason: str
) -> None:
    valid = "0" * (2 * kind.digest_size if kind else 32)  # line 2 is fine, line 3 is not
    path = write(tmp_path, f"# header\n{valid}\n{line}\n")
    it = parse_file(path, "text", kind=kind, default_category=None, on_invalid=None)
    with pytest.raises(InputError) as err:
        list(it)
    assert err.value.source == str(path)
    assert err.value.location == "line 3"
    assert err.value.field == "hash"
    assert reason in str(err.value)
    assert str(err.value).startswith(f"{path}:line 3: field 'hash': ")


def test_on_invalid_skips_and_reports_every_bad_line(tmp_path: Path) -> None:
    good = [os.urandom(20).hex() for _ in range(4)]
    path = write(tmp_path, f"{good[0]}\nnope\n{good[1]}\n{'f' * 33}\n{good[2]}\n\n{good[3]}\nxx\n")
    errors: list[InputError] = []
    items = list(
        parse_file(path, "text", kind=None, default_category=None, on_invalid=errors.append)
    )
    assert [i.hashes[0].hex for i in items] == good
    assert [e.location for e in errors] == ["line 2", "line 4", "line 8"]
    assert all(e.field == "hash" and e.source == str(path) for e in errors)
