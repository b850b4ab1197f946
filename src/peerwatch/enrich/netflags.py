"""Network flags: Tor exit nodes, VPN and hosting providers, CGNAT and mobile networks.

Lists are imported from files, one kind per list, versioned like the watchlist: an import either
becomes the new active version of its kind or changes nothing. Formats (docs/enrichment.md):

- addresses: one IP address or CIDR network per line (Tor's bulk exit list), or TorDNSEL
  `ExitAddress IP DATE` lines (other TorDNSEL lines are skipped);
- ASNs: `AS13335` or `13335` per line, optionally followed by a name (`,`, `;`, tab or spaces);
  a first line that names columns (`asn,name`) is a header.

`#` starts a comment; blank lines are skipped. Any other line is an error naming file and line.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, func, insert, select, update

from peerwatch.enrich.placement import FLAGS, builtin_flags
from peerwatch.errors import InputError
from peerwatch.storage.database import writer
from peerwatch.storage.schema import flag_entries, flag_lists

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_ASN = re.compile(r"^(?:AS)?(\d{1,10})$", re.IGNORECASE)
_HEADER_WORDS = {"asn", "as", "as_number", "asnumber", "ip", "address", "network", "cidr"}
_TORDNSEL_SKIP = ("ExitNode", "Published", "LastStatus")
_MAX_ASN = 2**32 - 1  # RFC 6793: four-octet AS numbers


@dataclass(frozen=True, slots=True)
class FlagEntry:
    line: int
    network: IPNetwork | None
    asn: int | None
    name: str | None


@dataclass(frozen=True, slots=True)
class FlagListInfo:
    kind: str
    version: int
    imported_ms: int
    source: str
    sha256: str
    entries: int

    @property
    def label(self) -> str:
        day = datetime.fromtimestamp(self.imported_ms / 1000, UTC).date().isoformat()
        return f"{self.kind} list v{self.version} imported {day} ({Path(self.source).name})"


@dataclass(frozen=True, slots=True)
class FlagImportResult:
    kind: str
    version: int
    entries: int
    unchanged: bool  # the same file was already the active version of this kind


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_TOKEN = re.compile(r"^([^\s,;]+)[\s,;]*(.*)$")


def _split(text: str) -> tuple[str, str | None]:
    """The first token of a line and the rest (a name, quotes removed), if any."""
    m = _TOKEN.match(text)
    if m is None:
        return text, None
    rest = m.group(2).strip().strip('"').strip()
    return m.group(1), rest or None


def parse_flag_list(path: Path, kind: str, data: bytes) -> list[FlagEntry]:
    """Parse a flag list. Tor lists hold addresses; the others hold ASNs and/or networks."""
    if kind not in FLAGS:
        raise InputError(f"unknown kind {kind!r}; one of {', '.join(FLAGS)}", field="kind")
    src = str(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", source=src) from None
    entries: list[FlagEntry] = []
    seen: set[object] = set()
    first = True
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"line {number}"
        head, name = _split(line)
        if head in _TORDNSEL_SKIP:
            continue
        if head == "ExitAddress" and name is not None:
            head, name = _split(name)
            name = None
        was_first, first = first, False
        asn_match = _ASN.match(head)
        if asn_match is not None:
            if kind == "tor":
                raise InputError(
                    f"{head!r} is an AS number; a Tor list holds exit addresses",
                    source=src,
                    location=where,
                )
            asn = int(asn_match.group(1))
            if not 0 < asn <= _MAX_ASN:
                raise InputError(f"AS number out of range: {asn}", source=src, location=where)
            if ("asn", asn) not in seen:
                seen.add(("asn", asn))
                entries.append(FlagEntry(number, None, asn, name))
            continue
        try:
            network = ipaddress.ip_network(head, strict=False)
        except ValueError:
            if was_first and head.lower().strip('"') in _HEADER_WORDS:
                continue  # a header row
            want = "an IP address" if kind == "tor" else "an AS number (AS13335) or IP network"
            raise InputError(f"expected {want}, got {head!r}", source=src, location=where) from None
        if ("net", network) not in seen:
            seen.add(("net", network))
            entries.append(FlagEntry(number, network, None, None if kind == "tor" else name))
    if not entries:
        raise InputError("no entries found", source=src)
    return entries


class NetFlagStore:
    """Imported flag lists in the database."""

    def __init__(self, engine: Engine, clock_ms: Callable[[], int] = _now_ms) -> None:
        self.engine = engine
        self._clock_ms = clock_ms

    def import_file(self, path: Path, kind: str) -> FlagImportResult:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read: {exc.strerror}", source=str(path)) from None
        entries = parse_flag_list(path, kind, data)  # everything is checked before any write
        digest = hashlib.sha256(data).hexdigest()
        with writer(self.engine).begin() as conn:
            active = conn.execute(
                select(flag_lists.c.id, flag_lists.c.version, flag_lists.c.sha256).where(
                    flag_lists.c.kind == kind, flag_lists.c.active
                )
            ).first()
            if active is not None and active.sha256 == digest:
                return FlagImportResult(kind, active.version, len(entries), unchanged=True)
            last = conn.execute(
                select(func.max(flag_lists.c.version)).where(flag_lists.c.kind == kind)
            ).scalar()
            version = int(last or 0) + 1
            conn.execute(
                update(flag_lists)
                .where(flag_lists.c.kind == kind, flag_lists.c.active)
                .values(active=False)
            )
            list_id = conn.execute(
                insert(flag_lists)
                .values(
                    kind=kind,
                    version=version,
                    imported_ms=self._clock_ms(),
                    source=str(path.resolve()),
                    sha256=digest,
                    entry_count=len(entries),
                    active=True,
                )
                .returning(flag_lists.c.id)
            ).scalar_one()
            conn.execute(
                insert(flag_entries),
                [
                    {
                        "list_id": list_id,
                        "line": e.line,
                        "network": str(e.network) if e.network is not None else None,
                        "asn": e.asn,
                        "name": e.name,
                    }
                    for e in entries
                ],
            )
        return FlagImportResult(kind, version, len(entries), unchanged=False)

    def lists(self) -> list[FlagListInfo]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(flag_lists).where(flag_lists.c.active).order_by(flag_lists.c.kind)
            ).all()
        return [
            FlagListInfo(r.kind, r.version, r.imported_ms, r.source, r.sha256, r.entry_count)
            for r in rows
        ]

    def snapshot(self) -> NetFlags:
        """The active lists, loaded into memory for lookups."""
        infos = self.lists()
        asns: dict[str, set[int]] = {k: set() for k in FLAGS}
        nets: dict[str, list[IPNetwork]] = {k: [] for k in FLAGS}
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(flag_lists.c.kind, flag_entries.c.network, flag_entries.c.asn)
                .join(flag_lists, flag_lists.c.id == flag_entries.c.list_id)
                .where(flag_lists.c.active)
            )
            for kind, network, asn in rows:
                if asn is not None:
                    asns[kind].add(int(asn))
                if network is not None:
                    nets[kind].append(ipaddress.ip_network(network))
        return NetFlags(asns, nets, tuple(i.label for i in infos))


class NetFlags:
    """Flag lookups over lists held in memory (plus the built-in CGNAT space, RFC 6598)."""

    def __init__(
        self,
        asns: dict[str, set[int]] | None = None,
        networks: dict[str, list[IPNetwork]] | None = None,
        labels: tuple[str, ...] = (),
    ) -> None:
        self._asns = asns or {}
        self._labels = labels
        # Single addresses (most of a Tor list) go in a set; real networks are scanned.
        self._hosts: dict[str, set[ipaddress.IPv4Address | ipaddress.IPv6Address]] = {}
        self._nets: dict[str, list[IPNetwork]] = {}
        for kind, nets in (networks or {}).items():
            hosts = {n.network_address for n in nets if n.num_addresses == 1}
            self._hosts[kind] = hosts
            self._nets[kind] = [n for n in nets if n.num_addresses > 1]

    def flags(self, ip: str, asn: int | None) -> frozenset[str]:
        out = set(builtin_flags(ip))
        addr = ipaddress.ip_address(ip)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        for kind in FLAGS:
            by_asn = asn is not None and asn in self._asns.get(kind, ())
            by_address = addr in self._hosts.get(kind, ()) or any(
                addr in n for n in self._nets.get(kind, ())
            )
            if by_asn or by_address:
                out.add(kind)
        return frozenset(out)

    def sources(self) -> tuple[str, ...]:
        return self._labels
