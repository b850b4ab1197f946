"""Verification of a sensor's chain, shared by `evidence verify` (database) and `verify-bundle`.

Checks, for each record n in sequence order:
  1. the sequence continues (a gap is a deletion, unless the bundle says it holds a selection);
  2. the bytes are a canonical version-1 record whose own `sensor` and `seq` are this row's;
  3. link(n) = SHA-256(link(n-1) || SHA-256(record n)), with link(n-1) the previous stored link;
  4. the Ed25519 signature over link(n) verifies with the *trusted* public key;
  5. any query columns stored beside the record say what the record says.
A record purged under the retention rule keeps only the SHA-256 of its bytes, its link and its
signature: checks 3 and 4 still apply (the link is rebuilt from the hash), 2 and 5 cannot and are
counted as purged instead (docs/evidence.md, "Retention").
Comparing each link with the stored previous link, rather than with a recomputed chain, makes the
first problem point at the record that was changed instead of at every record after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from peerwatch.errors import EvidenceError
from peerwatch.evidence import chain, record
from peerwatch.evidence.keys import public_raw, signatures_ok
from peerwatch.evidence.log import PurgedRecord, StoredRecord

# Entries whose signatures are checked together (on every core).
_VERIFY_BATCH = 4096


@dataclass(frozen=True, slots=True)
class Problem:
    sensor_id: str
    seq: int
    kind: str  # "missing", "not-canonical", "out-of-place", "chain", "signature", "index", "key"
    message: str

    def __str__(self) -> str:
        return f"sensor {self.sensor_id!r} record {self.seq}: {self.message}"


@dataclass(frozen=True, slots=True)
class Entry:
    """What the verifier needs of one record; `prev_link` is given by bundles, derived otherwise."""

    seq: int
    record: bytes
    link: bytes
    signature: bytes
    prev_link: bytes | None = None
    stored: StoredRecord | None = None  # the database row, to check its query columns
    record_sha256: bytes | None = None  # set (and `record` empty) for a purged record


@dataclass
class ChainReport:
    sensor_id: str
    checked: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    head_link: bytes | None = None
    purged: int = 0  # records of which only the hash, link and signature remain (retention)


class ChainVerifier:
    """Feeds on one sensor's entries in ascending seq order and collects problems."""

    def __init__(
        self, sensor_id: str, trusted_key: Ed25519PublicKey, *, selection: bool = False
    ) -> None:
        self.sensor_id = sensor_id
        self._key = public_raw(trusted_key)
        self._genesis = chain.genesis_link(sensor_id, self._key)
        self._selection = selection  # a bundle of chosen records: gaps are expected
        self._last_seq = 0
        self._last_link: bytes | None = self._genesis
        self.report = ChainReport(sensor_id)

    def feed(self, entry: Entry) -> list[Problem]:
        return self.feed_many([entry])

    def feed_many(self, entries: Sequence[Entry]) -> list[Problem]:
        """Check consecutive entries; the signatures of a batch are checked on every core."""
        found = [self._check_structure(e) for e in entries]
        valid = signatures_ok(self._key, [(e.signature, e.link) for e in entries])
        problems: list[Problem] = []
        for entry, entry_problems, ok in zip(entries, found, valid, strict=True):
            problems.extend(entry_problems)
            if not ok:
                problems.append(
                    Problem(
                        self.sensor_id,
                        entry.seq,
                        "signature",
                        "signature does not verify with the trusted public key",
                    )
                )
        return problems

    def _check_structure(self, entry: Entry) -> list[Problem]:
        """Every check but the signature, in order (it moves the verifier along the chain)."""
        problems: list[Problem] = []

        def bad(kind: str, message: str) -> None:
            problems.append(Problem(self.sensor_id, entry.seq, kind, message))

        expected = self._last_seq + 1
        contiguous = entry.seq == expected
        if entry.seq < expected:
            bad("out-of-place", f"appears after record {self._last_seq} (duplicate or reordered)")
        elif entry.seq > expected and not self._selection:
            first, last = expected, entry.seq - 1
            span = str(first) if first == last else f"{first}..{last}"
            problems.append(
                Problem(self.sensor_id, first, "missing", f"record(s) {span} missing (deleted)")
            )

        # Which link this record must continue from.
        prev: bytes | None
        if entry.prev_link is not None:
            prev = entry.prev_link
            if contiguous and self._last_link is not None and prev != self._last_link:
                bad("chain", "its previous link is not the link of the record before it")
            if entry.seq == 1 and prev != self._genesis:
                bad("chain", "does not start from this sensor's genesis link (other key or sensor)")
        else:
            prev = self._last_link if contiguous and self._last_link is not None else None

        decoded: record.DecodedRecord | None = None
        if entry.record_sha256 is None:
            try:
                decoded = record.decode(entry.record)
            except EvidenceError as exc:
                bad("not-canonical", str(exc))
        if decoded is not None:
            if decoded.sensor != self.sensor_id or decoded.seq != entry.seq:
                bad(
                    "out-of-place",
                    f"the record says sensor {decoded.sensor!r} seq {decoded.seq} "
                    "(moved, reordered or inserted)",
                )
            if entry.stored is not None:
                self._check_index(entry.stored, decoded.observation, bad)

        if entry.record_sha256 is not None:
            link = None if prev is None else chain.link_from_hash(prev, entry.record_sha256)
        else:
            link = None if prev is None else chain.next_link(prev, entry.record)
        if link is not None and link != entry.link:
            bad(
                "chain", "its content does not match its chain link (edited, inserted or reordered)"
            )

        self._last_seq = max(self._last_seq, entry.seq)
        self._last_link = entry.link
        r = self.report
        r.checked += 1
        r.purged += entry.record_sha256 is not None
        r.first_seq = entry.seq if r.first_seq is None else r.first_seq
        r.last_seq = entry.seq
        r.head_link = entry.link
        return problems

    @staticmethod
    def _check_index(
        stored: StoredRecord, obs: record.Observation, bad: Callable[[str, str], None]
    ) -> None:
        for column, signed in (
            ("observed_ms", obs.observed_ms),
            ("network", obs.network),
            ("method", obs.method),
            ("content_key", obs.content_key),
            ("ip", obs.ip),
            ("port", obs.port),
        ):
            if getattr(stored, column) != signed:
                bad("index", f"stored column {column!r} differs from the signed record")


def verify_stored(
    rows: Iterable[StoredRecord | PurgedRecord],
    trusted: dict[str, Ed25519PublicKey],
    registered: dict[str, bytes],
) -> Iterator[Problem | ChainReport]:
    """Verify whole chains from the database; yields problems, then one report per sensor."""
    verifier: ChainVerifier | None = None
    untrusted: str | None = None
    pending: list[Entry] = []
    for row in rows:
        if row.sensor_id == untrusted:
            continue
        if verifier is not None and (
            verifier.sensor_id != row.sensor_id or len(pending) >= _VERIFY_BATCH
        ):
            yield from verifier.feed_many(pending)
            pending = []
        if verifier is None or verifier.sensor_id != row.sensor_id:
            if verifier is not None:
                yield verifier.report
            key = trusted.get(row.sensor_id)
            if key is None:
                yield Problem(row.sensor_id, row.seq, "key", "no trusted public key for sensor")
                verifier, untrusted = None, row.sensor_id
                continue
            reg = registered.get(row.sensor_id)
            if reg is not None and reg != public_raw(key):
                yield Problem(
                    row.sensor_id,
                    0,
                    "key",
                    "the public key registered in the database is not the trusted key",
                )
            verifier = ChainVerifier(row.sensor_id, key)
        if isinstance(row, PurgedRecord):
            entry = Entry(row.seq, b"", row.link, row.signature, record_sha256=row.record_sha256)
        else:
            entry = Entry(row.seq, row.record, row.link, row.signature, stored=row)
        pending.append(entry)
    if verifier is not None:
        yield from verifier.feed_many(pending)
        yield verifier.report
