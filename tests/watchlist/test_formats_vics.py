"""Project VIC VICS JSON (1.x and 2.0 layouts), streamed."""

from __future__ import annotations

import json
import random
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from peerwatch.domain.hashes import HashKind
from peerwatch.errors import InputError
from peerwatch.watchlist.formats import parse_file
from peerwatch.watchlist.item import ParsedItem

META_13 = "http://github.com/ICMEC/ProjectVic/DataModels/1.3.xml/$metadata#Media"
META_20 = "http://github.com/ICMEC/ProjectVic/DataModels/2.0.xml/$metadata#Cases"


def media(rng: random.Random, media_id: int, *, sha256: bool = False) -> dict[str, Any]:
    """One benign media record with random hashes (uppercase hex, as VICS exports write it)."""
    m: dict[str, Any] = {
        "MediaID": media_id,
        "Category": rng.randint(0, 3),
        "MD5": rng.randbytes(16).hex().upper(),
        "SHA1": rng.randbytes(20).hex().upper(),
        "MediaSize": rng.randint(0, 10**9),
        "VictimIdentified": rng.random() < 0.5,
        "OffenderIdentified": False,
        "IsDistributed": True,
        "Series": f"series-{rng.randint(1, 9)}",
        "DateUpdated": "2024-01-02T03:04:05Z",
        "MediaFiles": [{"FileName": "ignored.jpg", "FilePath": "x"}],
    }
    if sha256:
        m["SHA256"] = rng.randbytes(32).hex()
    return m


def write_json(tmp_path: Path, doc: object, name: str = "vics.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc, indent=1))
    return path


def parse(path: Path, errors: list[InputError] | None = None) -> list[ParsedItem]:
    handler = None if errors is None else errors.append
    return list(parse_file(path, None, kind=None, default_category="dflt", on_invalid=handler))


def check(item: ParsedItem, m: dict[str, Any], number: int) -> None:
    assert item.location == f"record {number} (MediaID {m['MediaID']})"
    expected = [(HashKind.MD5, m["MD5"]), (HashKind.SHA1, m["SHA1"])]
    if "SHA256" in m:
        expected.append((HashKind.SHA256, m["SHA256"]))
    assert [(d.kind, d.hex) for d in item.hashes] == [(k, v.lower()) for k, v in expected]
    assert item.category == str(m["Category"])
    assert item.size == m["MediaSize"]
    assert item.attributes == {
        "MediaID": m["MediaID"],
        "VictimIdentified": m["VictimIdentified"],
        "OffenderIdentified": False,
        "IsDistributed": True,
        "Series": m["Series"],
    }


def test_vics_13_media_in_value(tmp_path: Path) -> None:
    rng = random.Random(13)
    records = [media(rng, 100 + i, sha256=i % 2 == 0) for i in range(7)]
    items = parse(write_json(tmp_path, {"odata.metadata": META_13, "value": records}))
    assert len(items) == 7
    for n, (item, m) in enumerate(zip(items, records, strict=True), 1):
        check(item, m, n)


def test_vics_20_cases_with_media(tmp_path: Path) -> None:
    rng = random.Random(20)
    cases: list[dict[str, Any]] = [
        {"CaseID": "c1", "Media": [media(rng, i) for i in range(3)], "SourceID": 5},
        {"CaseID": "c2", "Media": []},
        {"Media": [media(rng, 10 + i, sha256=True) for i in range(4)], "CaseNumber": "n"},
    ]
    items = parse(write_json(tmp_path, {"@odata.context": META_20, "value": cases}))
    flat = [m for c in cases for m in c["Media"]]
    assert len(items) == 7
    for n, (item, m) in enumerate(zip(items, flat, strict=True), 1):
        check(item, m, n)


def test_mixed_layouts_top_level_array_and_lenient_values(tmp_path: Path) -> None:
    rng = random.Random(3)
    direct = media(rng, 1)
    case = {"Media": [media(rng, 2)], "MD5": rng.randbytes(16).hex(), "Name": "case-level"}
    sparse = {
        "md5": "",
        "Sha1": None,
        "SHA256": rng.randbytes(32).hex(),
        "Category": "CAT-X",
        "MediaSize": "12",
        "FileName": "a.jpg",
        "VictimIdentified": "TRUE",
    }
    for doc in ({"value": [direct, case, sparse]}, [direct, case, sparse]):
        items = parse(write_json(tmp_path, doc))
        assert [i.location for i in items] == [
            "record 1 (MediaID 1)",
            "record 2 (MediaID 2)",  # the case's media stream out first...
            "record 3",  # ...then the case itself, as it carries an MD5
            "record 4",
        ]
        assert items[2].name == "case-level"
        assert [(d.kind, d.hex) for d in items[3].hashes] == [(HashKind.SHA256, sparse["SHA256"])]
        assert (items[3].category, items[3].size, items[3].name) == ("CAT-X", 12, "a.jpg")
        assert items[3].attributes == {"VictimIdentified": True}
        assert items[0].category == str(direct["Category"])
        assert items[3].category != "dflt"


BAD_RECORDS: list[tuple[object, str, str]] = [
    ({"MediaID": 7, "Category": 1}, "MD5", "no MD5, SHA1 or SHA256"),
    ({"MediaID": 7, "SHA1": "ab" * 19}, "SHA1", "length 38"),
    ({"MediaID": 7, "MD5": "xy" * 15 + "01"}, "MD5", "bad hex digit"),
    ({"MediaID": 7, "MD5": 12345}, "MD5", "not a string"),
    ({"MediaID": 7, "MD5": "ab" * 16, "MediaSize": "big"}, "MediaSize", "byte count"),
    ({"MediaID": 7, "MD5": "ab" * 16, "MediaSize": -1}, "MediaSize", "byte count"),
    ({"MediaID": 7, "MD5": "ab" * 16, "Category": True}, "Category", "not a category"),
    ({"MediaID": 7, "MD5": "ab" * 16, "Category": [1]}, "Category", "not a category"),
]


@pytest.mark.parametrize(("bad", "field", "words"), BAD_RECORDS)
def test_bad_record_names_file_record_and_field(
    tmp_path: Path, bad: object, field: str, words: str
) -> None:
    rng = random.Random(1)
    path = write_json(tmp_path, {"value": [{"Media": [media(rng, 1), bad, media(rng, 3)]}]})
    with pytest.raises(InputError) as err:
        parse(path)
    assert (err.value.source, err.value.location) == (str(path), "record 2 (MediaID 7)")
    assert err.value.field == field
    assert words in str(err.value)


def test_on_invalid_skips_and_reports_every_bad_record(tmp_path: Path) -> None:
    rng = random.Random(2)
    good = [media(rng, i) for i in range(3)]
    value = [good[0], {"MediaID": 50}, "not an object", good[1], {"Media": [7, good[2]]}]
    errors: list[InputError] = []
    items = parse(write_json(tmp_path, {"value": value}), errors)
    assert [i.hashes[0].hex for i in items] == [g["MD5"].lower() for g in good]
    assert [i.location for i in items] == [
        "record 1 (MediaID 0)",
        "record 4 (MediaID 1)",
        "record 6 (MediaID 2)",
    ]
    assert [(e.location, e.field) for e in errors] == [
        ("record 2 (MediaID 50)", "MD5"),
        ("record 3", "Media"),
        ("record 5", "Media"),
    ]


@pytest.mark.parametrize("layout", ["1.3", "2.0"])
def test_truncated_file_is_always_raised_with_the_record_reached(
    tmp_path: Path, layout: str
) -> None:
    rng = random.Random(4)
    records = [media(rng, i) for i in range(10)]
    doc = {"value": records} if layout == "1.3" else {"value": [{"Media": records}]}
    text = json.dumps(doc)
    cut = text.index('"MediaID": 6,')  # inside the 7th record
    path = tmp_path / "cut.json"
    path.write_text(text[:cut])
    seen: list[ParsedItem] = []
    errors: list[InputError] = []
    it = parse_file(path, "vics", kind=None, default_category=None, on_invalid=errors.append)
    with pytest.raises(InputError) as err:
        for item in it:
            seen.append(item)
    assert len(seen) == 6  # everything before the cut was delivered
    assert errors == []  # not an invalid record: the file itself is broken
    assert (err.value.source, err.value.location) == (str(path), "record 7")
    assert "truncated or invalid JSON" in str(err.value)


@pytest.mark.parametrize(
    ("content", "location"),
    [
        (b"", "record 1"),
        (b'{"value": [}', "record 1"),
        (b'{"value": []} trailing', "record 1"),
        (b'\xff\xfe{"value": []}', "record 1"),
        (b'{"value": [{"MD5": "' + b"a" * 32 + b'"},,]}', "record 2"),
    ],
)
def test_invalid_json(tmp_path: Path, content: bytes, location: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match="truncated or invalid JSON") as err:
        list(parse_file(path, "vics", kind=None, default_category=None, on_invalid=print))
    assert err.value.location == location


@pytest.mark.parametrize("doc", [{"values": []}, {"value": {}}, 5, "x"])
def test_not_a_vics_layout(tmp_path: Path, doc: object) -> None:
    path = write_json(tmp_path, doc)
    with pytest.raises(InputError, match="not a VICS export") as err:
        list(parse_file(path, "vics", kind=None, default_category=None, on_invalid=None))
    assert err.value.field == "value"


def write_big_vics(path: Path, target_bytes: int) -> int:
    """Write a 2.0 file of about `target_bytes` without holding it in memory; return its records."""
    rng = random.Random(50)
    count = 0
    with path.open("w") as f:
        f.write(f'{{"odata.metadata": "{META_20}", "value": [{{"CaseID": "big", "Media": [')
        while f.tell() < target_bytes:
            batch = [media(rng, count + i, sha256=True) for i in range(1000)]
            f.write(("," if count else "") + ",".join(json.dumps(m) for m in batch))
            count += len(batch)
        f.write("]}]}")
    return count


@pytest.mark.slow
def test_streaming_50_mb_in_constant_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    expected = write_big_vics(path, 50 * 1024 * 1024)
    assert path.stat().st_size > 50 * 1024 * 1024
    n = 0
    last = None
    start = time.monotonic()
    tracemalloc.start()
    try:
        for item in parse_file(path, None, kind=None, default_category=None, on_invalid=None):
            n += 1
            last = item
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.monotonic() - start
    assert n == expected
    assert last is not None and len(last.hashes) == 3
    assert peak < 20 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB for a 50 MiB file"
    assert elapsed < 300
