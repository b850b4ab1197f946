"""Magnet-link lists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from peerwatch.domain.hashes import HashKind
from peerwatch.errors import InputError
from peerwatch.watchlist.formats import parse_file


def test_one_item_per_magnet(tmp_path: Path) -> None:
    a, b, c = os.urandom(20), os.urandom(20), os.urandom(32)
    path = tmp_path / "links.txt"
    path.write_text(
        "# generated benign magnets\n"
        f"magnet:?xt=urn:btih:{a.hex()}&dn=first+name&xl=42&tr=udp://127.0.0.1:1&tr=udp://127.0.0.1:2\n"
        "\n"
        f"magnet:?xt=urn:btih:{b.hex()}&xt=urn:btmh:1220{c.hex()}\n"
    )
    items = list(parse_file(path, "magnet", kind=None, default_category="k", on_invalid=None))
    assert len(items) == 2
    first, second = items
    assert first.location == "line 2"
    assert [(d.kind, d.value) for d in first.hashes] == [(HashKind.BTIH, a)]
    assert (first.name, first.size, first.category) == ("first name", 42, "k")
    assert first.attributes["trackers"] == ["udp://127.0.0.1:1", "udp://127.0.0.1:2"]
    assert second.location == "line 4"
    assert [(d.kind, d.value) for d in second.hashes] == [(HashKind.BTIH, b), (HashKind.BTMH, c)]
    assert second.name is None and second.size is None
    assert second.attributes["trackers"] == []


def test_bad_lines(tmp_path: Path) -> None:
    good = f"magnet:?xt=urn:btih:{os.urandom(20).hex()}"
    path = tmp_path / "links.txt"
    path.write_text(f"{good}\nnot a magnet\n{good}&xl=big\n{good}\n")
    with pytest.raises(InputError) as err:
        list(parse_file(path, "magnet", kind=None, default_category=None, on_invalid=None))
    assert (err.value.source, err.value.location, err.value.field) == (
        str(path),
        "line 2",
        "magnet",
    )
    errors: list[InputError] = []
    items = list(
        parse_file(path, "magnet", kind=None, default_category=None, on_invalid=errors.append)
    )
    assert [i.location for i in items] == ["line 1", "line 4"]
    assert [(e.location, e.field) for e in errors] == [("line 2", "magnet"), ("line 3", "xl")]
    assert "byte count" in str(errors[1])
