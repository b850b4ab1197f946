"""Canonical encoding of observation records (format version 1)."""

from __future__ import annotations

import contextlib
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerwatch.errors import EvidenceError
from peerwatch.evidence import record
from peerwatch.evidence.record import Observation

GOLDEN_OBS = Observation(
    observed_ms=1764000000123,
    network="bittorrent",
    method="bitfield",
    content_key="btih:" + "ab" * 20,
    ip="::ffff:127.0.0.1",
    port=51413,
    clock_offset_ms=-3,
    client="Transmission 4.0.5",
    peer_id="2d5452343035302d" + "00" * 12,
    completion_ppm=1_000_000,
    outcome="possession",
    exchange_sha256="cd" * 32,
    extra={"listen_port": 51413, "é": "ü"},
)

# Frozen here on purpose: if this changes, old logs stop verifying (house rule 14).
GOLDEN_BYTES = (
    '{"client":"Transmission 4.0.5","clock_offset_ms":-3,"completion_ppm":1000000,'
    '"content_key":"btih:abababababababababababababababababababab",'
    '"exchange_sha256":"cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",'
    '"extra":{"listen_port":51413,"é":"ü"},"ip":"127.0.0.1","method":"bitfield",'
    '"network":"bittorrent","observed_ms":1764000000123,"outcome":"possession",'
    '"peer_id":"2d5452343035302d000000000000000000000000","port":51413,"sensor":"s1","seq":7,'
    '"v":1}'
).encode()


def test_golden_bytes() -> None:
    data = record.encode(GOLDEN_OBS, sensor="s1", seq=7)
    assert data == GOLDEN_BYTES
    assert hashlib.sha256(data).hexdigest() == hashlib.sha256(GOLDEN_BYTES).hexdigest()


def test_decode_round_trip_of_golden() -> None:
    decoded = record.decode(GOLDEN_BYTES)
    assert decoded.sensor == "s1" and decoded.seq == 7
    assert decoded.observation == GOLDEN_OBS


def test_ip_is_canonicalised() -> None:
    obs = Observation(0, "bittorrent", "pex", "btih:00", "2001:DB8:0:0::1", 1)
    assert obs.ip == "2001:db8::1"
    assert GOLDEN_OBS.ip == "127.0.0.1"  # given as ::ffff:127.0.0.1


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"ip": "not-an-ip"}, "not an IP address"),
        ({"port": 70000}, "out of range"),
        ({"completion_ppm": 1_000_001}, "completion_ppm"),
        ({"observed_ms": -1}, "non-negative"),
        ({"method": ""}, "method must not be empty"),
    ],
)
def test_invalid_observations_are_refused(changes: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "observed_ms": 1,
        "network": "bittorrent",
        "method": "pex",
        "content_key": "btih:00",
        "ip": "127.0.0.1",
        "port": 1,
    }
    fields.update(changes)
    with pytest.raises(EvidenceError, match=message):
        Observation(**fields)  # type: ignore[arg-type]


def test_floats_are_refused_anywhere() -> None:
    obs = Observation(
        1,
        "bittorrent",
        "pex",
        "btih:00",
        "127.0.0.1",
        1,
        extra={"x": [1.5]},  # type: ignore[list-item]  # the point of the test
    )
    with pytest.raises(EvidenceError, match=r"record\.extra\.x\[0\]: floats are not allowed"):
        record.encode(obs, sensor="s", seq=1)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b.replace(b'"v":1', b'"v":2'), "unknown record version"),
        (lambda b: b.replace(b'{"client"', b'{ "client"'), "not in canonical form"),
        (lambda b: b.replace(b'"seq":7,', b""), "missing"),
        (lambda b: b[:-1], "not UTF-8 JSON"),
        (lambda b: b.replace(b'"port":51413', b'"port":"51413"'), "must be an integer"),
        (lambda b: b.replace(b'"ip":"127.0.0.1"', b'"ip":"::ffff:7f00:1"'), "canonical"),
    ],
)
def test_non_canonical_records_are_rejected(mutate: object, message: str) -> None:
    assert callable(mutate)
    with pytest.raises(EvidenceError, match=message):
        record.decode(mutate(GOLDEN_BYTES))


_text = st.text(max_size=20)
_opt_int = st.none() | st.integers(min_value=-(2**40), max_value=2**40)
_ips = st.ip_addresses().map(str)
_extra_values = st.recursive(
    st.none() | st.booleans() | st.integers() | _text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_text, children, max_size=3),
    max_leaves=8,
)


@given(
    observed_ms=st.integers(min_value=0, max_value=2**50),
    ip=_ips,
    port=st.none() | st.integers(min_value=0, max_value=65535),
    client=st.none() | _text,
    completion=st.none() | st.integers(min_value=0, max_value=1_000_000),
    offset=_opt_int,
    extra=st.dictionaries(_text, _extra_values, max_size=4),
    seq=st.integers(min_value=1, max_value=2**53),
)
def test_round_trip_is_exact(
    observed_ms: int,
    ip: str,
    port: int | None,
    client: str | None,
    completion: int | None,
    offset: int | None,
    extra: dict[str, record.ExtraValue],
    seq: int,
) -> None:
    obs = Observation(
        observed_ms,
        "bittorrent",
        "handshake",
        "btih:00",
        ip,
        port,
        clock_offset_ms=offset,
        client=client,
        completion_ppm=completion,
        extra=extra,
    )
    data = record.encode(obs, sensor="sensor-a", seq=seq)
    decoded = record.decode(data)
    assert decoded.observation == obs
    assert record.encode(decoded.observation, sensor="sensor-a", seq=seq) == data


@given(st.binary(max_size=300))
def test_decode_never_raises_anything_else(data: bytes) -> None:
    with contextlib.suppress(EvidenceError):
        record.decode(data)
