"""Observation records and their canonical encoding (format version 1, docs/evidence.md).

The canonical bytes are JSON with sorted keys, no whitespace, UTF-8, every field of the version
present (absent values are `null`), and no floating-point numbers anywhere: completion is in parts
per million and times are integer milliseconds, so the same record always gives the same bytes on
every platform.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from peerwatch.errors import EvidenceError

RECORD_VERSION = 1

#: JSON values allowed in `extra` (network-specific fields): no floats, so encoding is exact.
ExtraValue = str | int | bool | None | list["ExtraValue"] | dict[str, "ExtraValue"]

# Methods in use; a record with another method is still valid (new sensors add theirs), but these
# are
# the ones whose meaning is documented in docs/evidence.md.
# Peer lists: what a DHT node, tracker, PEX peer, eD2k server, Kad node or eD2k peer (source
# exchange) *says* about an address.
CLAIM_METHODS = frozenset(
    {
        "dht-get-peers",
        "tracker-announce",
        "tracker-scrape",
        "pex",
        "server-sources",
        "kad-sources",
        "source-exchange",
    }
)
POSSESSION_METHODS = frozenset({"bitfield", "have-all", "piece-verified", "file-status"})


@dataclass(frozen=True, slots=True)
class Observation:
    """One thing a sensor saw a remote peer do, as recorded in the evidence log."""

    observed_ms: int  # UTC, milliseconds since the Unix epoch, from the sensor's clock
    network: str  # "bittorrent", "ed2k", ...
    method: str  # how it was seen: "dht-get-peers", "handshake", "bitfield", "piece-verified", ...
    content_key: str  # what: "btih:<hex>", "btmh:<hex>", "ed2k:<hex>", ...
    ip: str  # remote address, canonical text form (IPv6 compressed)
    port: int | None  # remote source/listen port: without it a CGNAT address names no subscriber
    clock_offset_ms: int | None = None  # sensor clock minus reference clock, when estimated
    client: str | None = None  # client name/version as the peer announced it
    peer_id: str | None = None  # peer id / GUID / user hash, hex
    completion_ppm: int | None = None  # share of the content the peer has, 0..1_000_000
    outcome: str | None = None  # "possession", "claim", "refused", "unreachable", ...
    exchange_sha256: str | None = None  # SHA-256 (hex) of the raw protocol bytes of the exchange
    extra: Mapping[str, ExtraValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ip", canonical_ip(self.ip))
        for name in ("observed_ms", "port", "clock_offset_ms", "completion_ppm"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int):
                raise EvidenceError(f"observation {name} must be an integer, not {value!r}")
        if self.port is not None and not 0 <= self.port <= 65535:
            raise EvidenceError(f"observation port {self.port} is out of range")
        if self.completion_ppm is not None and not 0 <= self.completion_ppm <= 1_000_000:
            raise EvidenceError(f"completion_ppm {self.completion_ppm} is out of 0..1000000")
        if self.observed_ms < 0:
            raise EvidenceError("observed_ms must be a non-negative UTC millisecond time")
        for name in ("network", "method", "content_key"):
            if not getattr(self, name):
                raise EvidenceError(f"observation {name} must not be empty")


def canonical_ip(text: str) -> str:
    """RFC 5952 text form; an IPv4-mapped IPv6 address (a dual-stack socket's view of an IPv4 peer)
    is recorded as the IPv4 address it is. Python 3.13 changed how it prints mapped addresses, so
    leaving them mapped would make the canonical bytes depend on the Python version."""
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise EvidenceError(f"observation ip {text!r} is not an IP address") from None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _check_no_float(value: Any, path: str) -> None:
    if isinstance(value, float):
        raise EvidenceError(f"{path}: floats are not allowed in evidence records (not exact)")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise EvidenceError(f"{path}: keys must be strings")
            _check_no_float(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_no_float(v, f"{path}[{i}]")


def record_dict(obs: Observation, *, sensor: str, seq: int) -> dict[str, Any]:
    """The record as a JSON object, with its place in the sensor's chain."""
    return {
        "v": RECORD_VERSION,
        "sensor": sensor,
        "seq": seq,
        "observed_ms": obs.observed_ms,
        "clock_offset_ms": obs.clock_offset_ms,
        "network": obs.network,
        "method": obs.method,
        "content_key": obs.content_key,
        "ip": obs.ip,
        "port": obs.port,
        "client": obs.client,
        "peer_id": obs.peer_id,
        "completion_ppm": obs.completion_ppm,
        "outcome": obs.outcome,
        "exchange_sha256": obs.exchange_sha256,
        "extra": dict(obs.extra),
    }


_FIELDS_V1 = frozenset(
    record_dict(Observation(0, "n", "m", "k", "127.0.0.1", None), sensor="", seq=0)
)


def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    """The one byte string a record is hashed and signed as (the caller has excluded floats)."""
    return json.dumps(
        record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def encode(obs: Observation, *, sensor: str, seq: int) -> bytes:
    # The typed fields are checked by Observation; only `extra` can still hold a float.
    if obs.extra:
        _check_no_float(obs.extra, "record.extra")
    return canonical_bytes(record_dict(obs, sensor=sensor, seq=seq))


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    sensor: str
    seq: int
    observation: Observation


def decode(data: bytes) -> DecodedRecord:
    """Parse canonical record bytes; anything that is not exactly canonical is rejected."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvidenceError(f"record is not UTF-8 JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise EvidenceError("record is not a JSON object")
    version = obj.get("v")
    if version != RECORD_VERSION:
        raise EvidenceError(f"unknown record version {version!r} (this verifier knows 1)")
    if set(obj) != _FIELDS_V1:
        missing = sorted(_FIELDS_V1 - set(obj))
        unknown = sorted(set(obj) - _FIELDS_V1)
        raise EvidenceError(
            f"record fields differ from version 1: missing {missing}, extra {unknown}"
        )
    _check_no_float(obj, "record")
    if canonical_bytes(obj) != data:
        raise EvidenceError("record bytes are not in canonical form")
    try:
        obs = Observation(
            observed_ms=_int(obj, "observed_ms"),
            network=_str(obj, "network"),
            method=_str(obj, "method"),
            content_key=_str(obj, "content_key"),
            ip=_str(obj, "ip"),
            port=_opt_int(obj, "port"),
            clock_offset_ms=_opt_int(obj, "clock_offset_ms"),
            client=_opt_str(obj, "client"),
            peer_id=_opt_str(obj, "peer_id"),
            completion_ppm=_opt_int(obj, "completion_ppm"),
            outcome=_opt_str(obj, "outcome"),
            exchange_sha256=_opt_str(obj, "exchange_sha256"),
            extra=_dict(obj, "extra"),
        )
    except EvidenceError:
        raise
    if obs.ip != obj["ip"]:
        raise EvidenceError("record ip is not in canonical form")
    return DecodedRecord(_str(obj, "sensor"), _int(obj, "seq"), obs)


def _int(obj: dict[str, Any], key: str) -> int:
    v = obj[key]
    if not isinstance(v, int) or isinstance(v, bool):
        raise EvidenceError(f"record field {key!r} must be an integer")
    return v


def _opt_int(obj: dict[str, Any], key: str) -> int | None:
    return None if obj[key] is None else _int(obj, key)


def _str(obj: dict[str, Any], key: str) -> str:
    v = obj[key]
    if not isinstance(v, str):
        raise EvidenceError(f"record field {key!r} must be a string")
    return v


def _opt_str(obj: dict[str, Any], key: str) -> str | None:
    return None if obj[key] is None else _str(obj, key)


def _dict(obj: dict[str, Any], key: str) -> dict[str, ExtraValue]:
    v = obj[key]
    if not isinstance(v, dict):
        raise EvidenceError(f"record field {key!r} must be an object")
    return v
