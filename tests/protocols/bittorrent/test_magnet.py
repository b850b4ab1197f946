"""Magnet URI parser: BEP 9 / BEP 52 forms, errors naming the parameter, and fuzzing."""

from __future__ import annotations

import base64
import contextlib
import os
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.protocols.bittorrent.magnet import MagnetError, parse_magnet

BTIH = bytes.fromhex("0123456789abcdef0123456789abcdef01234567")
BTMH = bytes(range(32))


def test_hex_btih_with_name_size_and_trackers() -> None:
    m = parse_magnet(
        f"magnet:?xt=urn:btih:{BTIH.hex()}&dn=holiday+photos%20%C3%A9t%C3%A9&xl=123456"
        "&tr=udp%3A%2F%2F127.0.0.1%3A6969&tr=http://127.0.0.1/announce&tr=udp%3A%2F%2F127.0.0.1%3A6969"
    )
    assert m.btih == BTIH
    assert m.btmh is None
    assert m.name == "holiday photos été"
    assert m.size == 123456
    assert m.trackers == ("udp://127.0.0.1:6969", "http://127.0.0.1/announce")


def test_base32_btih_equals_hex() -> None:
    b32 = base64.b32encode(BTIH).decode()
    assert parse_magnet(f"magnet:?xt=urn:btih:{b32}").btih == BTIH
    assert parse_magnet(f"magnet:?xt=urn:btih:{b32.lower()}").btih == BTIH


def test_btmh_and_hybrid() -> None:
    m = parse_magnet(f"magnet:?xt=urn:btmh:1220{BTMH.hex()}")
    assert (m.btih, m.btmh) == (None, BTMH)
    hyb = parse_magnet(
        f"magnet:?xt=urn:btih:{BTIH.hex().upper()}&xt=urn:btmh:1220{BTMH.hex()}&dn=x"
    )
    assert (hyb.btih, hyb.btmh, hyb.name) == (BTIH, BTMH, "x")


def test_numbered_parameters_case_and_other_networks() -> None:
    m = parse_magnet(
        f"  MAGNET:?XT.1=URN:BTIH:{BTIH.hex()}&xt.2=urn:ed2k:31d6cfe0d16ae931b73c59d7e0c089c0"
        "&tr.1=udp://127.0.0.1:1&tr.2=udp://127.0.0.1:2&x.pe=127.0.0.1:6881&ws=http://x/\n"
    )
    assert m.btih == BTIH
    assert m.trackers == ("udp://127.0.0.1:1", "udp://127.0.0.1:2")
    assert m.peers == ("127.0.0.1:6881",)
    assert m.other_xt == ("urn:ed2k:31d6cfe0d16ae931b73c59d7e0c089c0",)
    assert m.name is None and m.size is None


@pytest.mark.parametrize(
    ("uri", "field", "words"),
    [
        ("http://example.invalid/?xt=urn:btih:" + "0" * 40, None, "magnet:?"),
        ("magnet:?dn=nothing", "xt", "no 'urn:btih:'"),
        ("magnet:?xt=urn:sha1:" + "A" * 32, "xt", "no 'urn:btih:'"),
        ("magnet:?xt=urn:btih:" + "0" * 39, "xt", "40 hex"),
        ("magnet:?xt=urn:btih:" + "g" * 40, "xt", "40 hex"),
        ("magnet:?xt=urn:btih:" + "1" * 32, "xt", "base32"),  # '1' is not in the base32 alphabet
        ("magnet:?xt=urn:btmh:1114" + "0" * 64, "xt", "1220"),
        ("magnet:?xt=urn:btmh:1220" + "0" * 63, "xt", "64 hex"),
        ("magnet:?xt=urn:btih:" + "0" * 40 + "&xl=12kB", "xl", "byte count"),
        ("magnet:?xt=urn:btih:" + "0" * 40 + "&xl=-1", "xl", "byte count"),
        ("magnet:?xt=urn:btih:" + "0" * 40 + "&xt=urn:btih:" + "1" * 40, "xt", "two different"),
        ("magnet:?" + "&".join(["tr=x"] * 1001) + "&xt=urn:btih:" + "0" * 40, None, "fields"),
        ("magnet:?xt=urn:btih:" + "0" * 40 + "&dn=" + "a" * 70_000, None, "longer"),
    ],
)
def test_errors_name_the_parameter(uri: str, field: str | None, words: str) -> None:
    with pytest.raises(MagnetError, match=words) as err:
        parse_magnet(uri)
    assert err.value.field == field


@settings(max_examples=500)
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_magnet_error(text: str) -> None:
    for candidate in (text, "magnet:?" + text, "magnet:?xt=urn:btih:" + text):
        with contextlib.suppress(MagnetError):
            parse_magnet(candidate)


@settings(max_examples=200)
@given(
    st.binary(min_size=20, max_size=20),
    st.one_of(st.none(), st.binary(min_size=32, max_size=32)),
    st.text(max_size=40),
    st.integers(min_value=0, max_value=2**63),
    st.lists(st.text(min_size=1, max_size=30), max_size=4),
)
def test_round_trip(
    btih: bytes, btmh: bytes | None, name: str, size: int, trackers: list[str]
) -> None:
    uri = f"magnet:?xt=urn:btih:{btih.hex()}&dn={quote(name)}&xl={size}"
    if btmh is not None:
        uri += f"&xt=urn:btmh:1220{btmh.hex()}"
    uri += "".join(f"&tr={quote(t, safe='')}" for t in trackers)
    m = parse_magnet(uri)
    assert m.btih == btih
    assert m.btmh == btmh
    assert m.name == name
    assert m.size == size
    assert m.trackers == tuple(dict.fromkeys(trackers))


def test_random_btih_round_trip_base32() -> None:
    for _ in range(50):
        raw = os.urandom(20)
        assert parse_magnet("magnet:?xt=urn:btih:" + base64.b32encode(raw).decode()).btih == raw
