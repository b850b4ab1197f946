"""eD2k single-source verification against `lab.ed2k_peer` on 127.0.19.x, a peer we control.

The lab peer answers the client protocol honestly (HELLOANSWER, MULTIPACKETANSWER, HASHSETANSWER,
ACCEPTUPLOADREQ, SENDINGPART or COMPRESSEDPART) but can lie about content (`corrupt_parts`), hold
only some parts, or never give an upload slot; it records every part request it received. The
content is seeded random bytes. (127.0.19.1-3 and .200/.250 are the aMule interop lab's; these
tests use .10 upwards and bind to .100.)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine

from peerwatch.app import App
from peerwatch.cli.main import run
from peerwatch.domain.hashes import HashKind
from peerwatch.errors import InputError
from peerwatch.evidence import record
from peerwatch.evidence.log import iter_records
from peerwatch.lab.ed2k_peer import LAB_USER_HASH, Ed2kLabPeer, SharedFile
from peerwatch.protocols.ed2k.client import ClientIdentity
from peerwatch.protocols.ed2k.hashing import BLOCK_SIZE, PART_SIZE
from peerwatch.protocols.ed2k.link import Ed2kFileLink
from peerwatch.sensors.ed2k_verify import (
    Ed2kTarget,
    Ed2kVerifyReport,
    Ed2kWanted,
    complete_wanted,
    parse_ed2k_file,
    parse_ed2k_target,
    verify_ed2k_peer,
)
from peerwatch.sensors.verify_peer import METHOD_PIECE, METHOD_SUMMARY
from peerwatch.settings import Settings
from peerwatch.transport.ed2k_download import Ed2kDownloadConfig, download_ed2k
from peerwatch.transport.ed2k_probe import Ed2kProbeConfig
from peerwatch.transport.egress import EgressDeniedError
from peerwatch.watchlist.store import WatchlistStore

BIND = "127.0.19.100"
SENSOR_HASH = bytes.fromhex("00112233445566778899aabbccddeeff")
CONFIG = Ed2kDownloadConfig(
    Ed2kProbeConfig(ClientIdentity(SENSOR_HASH), timeout=5.0, bind_ip=BIND),
    accept_timeout=5.0,
    stall_timeout=5.0,
)
_hosts = iter(range(10, 100))


def host() -> str:
    """A fresh address for each peer (a test never reuses another's)."""
    return f"127.0.19.{next(_hosts)}"


@pytest.fixture(scope="module")
def three_part() -> SharedFile:
    data = random.Random(19).randbytes(2 * PART_SIZE + 5_544_000)  # 25,000,000 bytes, 3 parts
    return SharedFile.of("three-part.bin", data)


@pytest.fixture(scope="module")
def small() -> SharedFile:
    return SharedFile.of("small.bin", random.Random(20).randbytes(300_000))


def wanted_of(f: SharedFile, *, aich: bool = True) -> Ed2kWanted:
    return Ed2kWanted(f.ed2k, f.size, f.name, f.aich if aich else None)


def verify(peer: Ed2kLabPeer, wanted: Ed2kWanted, **kw: object) -> Ed2kVerifyReport:
    async def go() -> Ed2kVerifyReport:
        async with peer:
            return await verify_ed2k_peer(
                Ed2kTarget(peer.host, peer.port, None),
                wanted,
                kw.pop("config", CONFIG),  # type: ignore[arg-type]
                **kw,  # type: ignore[arg-type]
            )

    return asyncio.run(go())


def pieces(report: Ed2kVerifyReport) -> list[record.Observation]:
    return [o for o in report.observations if o.method == METHOD_PIECE]


def summary(report: Ed2kVerifyReport) -> record.Observation:
    (s,) = [o for o in report.observations if o.method == METHOD_SUMMARY]
    return s


def check_requests(peer: Ed2kLabPeer, size: int) -> list[tuple[int, int]]:
    """Every request: 1-3 blocks of at most 180 KiB, none across a part boundary."""
    ranges = [r for batch in peer.requests for r in batch]
    assert all(1 <= len(batch) <= 3 for batch in peer.requests)
    for start, end in ranges:
        assert 0 < end - start <= BLOCK_SIZE
        assert start // PART_SIZE == (end - 1) // PART_SIZE
        assert end <= size
    return ranges


# --- the download -------------------------------------------------------------------------------


def test_every_part_of_a_three_part_file_is_verified(three_part: SharedFile) -> None:
    peer = Ed2kLabPeer(host(), [three_part])
    report = verify(peer, wanted_of(three_part))
    r = report.download
    assert (r.outcome, r.verified, r.failed, r.not_served) == ("complete", 3, 0, 0)
    assert (r.part_count, r.parts_held, r.selected, r.wanted, r.not_held) == (3, 3, 3, 3, 0)
    assert r.hashset_verified is True and r.upload_accepted is True
    assert report.aich == "match"
    ranges = check_requests(peer, three_part.size)
    assert sum(e - s for s, e in ranges) == three_part.size  # every byte asked for once
    assert peer.connections == 1 and peer.upload_requests == 1
    parts = pieces(report)
    assert [o.extra["part_index"] for o in parts] == [0, 1, 2]
    for o, expected in zip(parts, three_part.part_hashes, strict=False):
        assert o.outcome == "possession" and o.method in record.POSSESSION_METHODS
        assert o.network == "ed2k" and o.content_key == f"ed2k:{three_part.ed2k.hex()}"
        assert o.extra["hash_algorithm"] == "md4"
        assert o.extra["part_hash"] == o.extra["expected_hash"] == expected.hex()
        assert o.extra["expected_from"] == "hashset"
        assert o.peer_id == LAB_USER_HASH.hex()
        assert o.client == "compat 0xff 2.3.3"  # the lab peer does not name its software
        assert o.ip == peer.host and o.port == peer.port
        assert o.completion_ppm == 1_000_000
        assert o.extra["content_kept"] is False
    assert [o.extra["part_length"] for o in parts] == [PART_SIZE, PART_SIZE, 5_544_000]
    s = summary(report)
    assert s.outcome == "complete" and s.outcome != "possession"
    assert (s.extra["verified"], s.extra["failed"], s.extra["not_served"]) == (3, 0, 0)
    assert s.extra["hashset_verified"] is True
    assert s.extra["aich"] == "match"
    assert s.extra["aich_peer"] == base64.b32encode(three_part.aich or b"").decode()
    assert s.extra["file_name"] == "three-part.bin"
    assert s.extra["nick"] == "peerwatch-lab-ed2k"
    # All share the digest of the one exchange.
    assert len({o.exchange_sha256 for o in report.observations}) == 1


def test_a_corrupted_part_is_recorded_as_failed_and_not_possession(
    three_part: SharedFile,
) -> None:
    peer = Ed2kLabPeer(host(), [three_part], corrupt_parts={1})
    report = verify(peer, wanted_of(three_part))
    r = report.download
    assert (r.outcome, r.verified, r.failed) == ("complete", 2, 1)
    by_index = {o.extra["part_index"]: o for o in pieces(report)}
    assert by_index[0].outcome == by_index[2].outcome == "possession"
    bad = by_index[1]
    assert bad.outcome == "piece-failed" and bad.method == METHOD_PIECE
    assert bad.extra["expected_hash"] == three_part.part_hashes[1].hex()
    assert bad.extra["part_hash"] != bad.extra["expected_hash"]
    assert r.hashset_verified is True  # the hashset was honest; the content lied
    assert summary(report).extra["failed"] == 1
    assert not [o for o in report.observations if o.outcome == "possession" and o is bad]


def test_compressed_parts_are_inflated_and_verified(three_part: SharedFile) -> None:
    peer = Ed2kLabPeer(host(), [three_part], compress=True)
    report = verify(peer, wanted_of(three_part))
    r = report.download
    assert (r.outcome, r.verified, r.failed) == ("complete", 3, 0)
    assert [p.compressed_bytes for p in r.parts] == [p.length for p in r.parts]
    assert [o.extra["compressed_bytes"] for o in pieces(report)] == [
        PART_SIZE,
        PART_SIZE,
        5_544_000,
    ]


def test_blocks_served_out_of_order_are_reassembled_before_hashing(
    three_part: SharedFile,
) -> None:
    peer = Ed2kLabPeer(host(), [three_part], reverse=True, corrupt_parts={2})
    report = verify(peer, wanted_of(three_part))
    r = report.download
    assert (r.outcome, r.verified, r.failed) == ("complete", 2, 1)
    assert [p.ok for p in r.parts] == [True, True, False]
    assert any(len(batch) > 1 for batch in peer.requests)  # so some blocks did come reversed


def test_a_single_part_file_is_checked_against_the_file_hash(small: SharedFile) -> None:
    peer = Ed2kLabPeer(host(), [small])
    report = verify(peer, wanted_of(small))
    r = report.download
    assert (r.outcome, r.verified, r.part_count) == ("complete", 1, 1)
    assert r.hashset_verified is None  # no hashset below one part
    (o,) = pieces(report)
    assert o.extra["expected_from"] == "file-hash"
    assert o.extra["expected_hash"] == small.ed2k.hex() == o.extra["part_hash"]
    assert summary(report).extra["hashset_verified"] is None


def test_a_file_of_exactly_one_part_uses_the_hashset() -> None:
    exact = SharedFile.of("exact.bin", random.Random(21).randbytes(PART_SIZE))
    assert len(exact.part_hashes) == 2  # the part and the empty part (aMule's count)
    peer = Ed2kLabPeer(host(), [exact], corrupt_parts={0})
    report = verify(peer, wanted_of(exact))
    r = report.download
    assert (r.part_count, r.wanted, r.verified, r.failed) == (1, 1, 0, 1)
    assert r.hashset_verified is True
    (o,) = pieces(report)
    assert o.outcome == "piece-failed"
    assert o.extra["expected_hash"] == exact.part_hashes[0].hex()


def test_a_peer_that_never_accepts_the_upload_ends_after_a_bounded_wait(
    three_part: SharedFile,
) -> None:
    peer = Ed2kLabPeer(host(), [three_part], accept_upload=False, queue_rank=7)
    config = Ed2kDownloadConfig(CONFIG.probe, accept_timeout=1.0, stall_timeout=1.0)
    started = time.monotonic()
    report = verify(peer, wanted_of(three_part), config=config)
    assert time.monotonic() - started < 5
    r = report.download
    assert r.outcome == "queued"
    assert r.queue_rank == 7 and r.upload_accepted is False
    assert "no upload slot" in r.detail and "rank 7" in r.detail
    assert (r.verified, r.failed, r.not_served) == (0, 0, 3)
    assert pieces(report) == []
    s = summary(report)
    assert (s.outcome, s.extra["queue_rank"], s.extra["upload_accepted"]) == ("queued", 7, False)
    assert peer.requests == []  # nothing asked for without a slot


def test_a_peer_that_hangs_up_mid_download_leaves_the_rest_not_served(
    three_part: SharedFile,
) -> None:
    peer = Ed2kLabPeer(host(), [three_part], hang_up_after=PART_SIZE + 1)
    report = verify(peer, wanted_of(three_part))
    r = report.download
    assert r.outcome == "incomplete" and "1 of 3" in r.detail  # a hang-up or a reset
    assert (r.verified, r.failed, r.not_served) == (1, 0, 2)
    assert [o.outcome for o in pieces(report)] == ["possession"]
    assert summary(report).extra["not_served"] == 2


def test_parts_limit_and_parts_not_held(three_part: SharedFile) -> None:
    peer = Ed2kLabPeer(host(), [three_part], hold_parts={0, 2})
    report = verify(peer, wanted_of(three_part))
    r = report.download
    assert (r.parts_held, r.selected, r.not_held, r.wanted, r.verified) == (2, 3, 1, 2, 2)
    assert r.completion_ppm == 666_666
    ranges = check_requests(peer, three_part.size)
    assert {s // PART_SIZE for s, _ in ranges} == {0, 2}  # never the part it lacks

    peer = Ed2kLabPeer(host(), [three_part], hold_parts={0, 2})
    report = verify(peer, wanted_of(three_part), parts=1)
    r = report.download
    assert (r.selected, r.wanted, r.verified) == (1, 1, 1)
    assert [p.index for p in r.parts] == [0]
    assert {s // PART_SIZE for s, _ in check_requests(peer, three_part.size)} == {0}


def test_aich_mismatch_and_unknown(small: SharedFile) -> None:
    wrong = Ed2kWanted(small.ed2k, small.size, small.name, bytes(20))
    report = verify(Ed2kLabPeer(host(), [small]), wrong)
    assert report.aich == "mismatch" and summary(report).extra["aich"] == "mismatch"
    report = verify(Ed2kLabPeer(host(), [small]), wanted_of(small, aich=False))
    assert report.aich == "unknown"


def test_a_peer_without_the_file_answers_no_file(small: SharedFile, three_part: SharedFile) -> None:
    report = verify(Ed2kLabPeer(host(), [small]), wanted_of(three_part))
    assert report.download.outcome == "no-file"
    assert pieces(report) == []
    assert summary(report).outcome == "no-file"
    assert summary(report).peer_id == LAB_USER_HASH.hex()


def test_obfuscation_falls_back_to_plain_for_a_peer_without_it(small: SharedFile) -> None:
    peer = Ed2kLabPeer(host(), [small])  # hangs up on the obfuscated handshake (garbage to it)

    async def go() -> Ed2kVerifyReport:
        async with peer:
            return await verify_ed2k_peer(
                Ed2kTarget(peer.host, peer.port, LAB_USER_HASH), wanted_of(small), CONFIG
            )

    report = asyncio.run(go())
    r = report.download
    assert (r.outcome, r.obfuscated, r.verified) == ("complete", False, 1)
    assert r.detail.startswith("obfuscated: ") and "; plain: " in r.detail
    assert peer.connections == 2


def test_only_loopback_by_default(small: SharedFile) -> None:
    with pytest.raises(EgressDeniedError):
        asyncio.run(download_ed2k("192.0.2.1", 4662, small.ed2k, small.size, CONFIG))


def test_a_refused_connection_is_an_outcome(small: SharedFile) -> None:
    r = asyncio.run(download_ed2k(host(), 9, small.ed2k, small.size, CONFIG))
    assert r.outcome == "refused" and r.parts == () and r.hello is None


# --- content: hash and discard, or keep whole verified files ------------------------------------


def test_keep_content_writes_the_whole_file_only_when_every_part_verified(
    three_part: SharedFile, tmp_path: Path, sqlite_engine: Engine
) -> None:
    lst = tmp_path / "known.txt"
    lst.write_text(hashlib.sha256(three_part.data).hexdigest() + "\n")
    store = WatchlistStore(sqlite_engine)
    store.import_files([lst], list_name="known", kind=HashKind.SHA256)
    keep = tmp_path / "kept"
    report = verify(
        Ed2kLabPeer(host(), [three_part]),
        wanted_of(three_part),
        keep_content=keep,
        watchlist=store,
    )
    kept = report.kept
    assert kept is not None and report.not_kept is None
    assert kept.written == keep / three_part.ed2k.hex() / "three-part.bin"
    assert kept.written.read_bytes() == three_part.data
    assert kept.sha256 == hashlib.sha256(three_part.data).hexdigest()
    assert kept.sha1 == hashlib.sha1(three_part.data, usedforsecurity=False).hexdigest()
    assert [m.list_name for m in kept.matches] == ["known"]
    assert [p.name for p in keep.rglob("*") if p.is_file()] == ["three-part.bin"]
    for o in report.observations:
        assert o.extra["content_kept"] is True and o.extra["keep_content_dir"] == str(keep)
    file_kept = summary(report).extra["file_kept"]
    assert isinstance(file_kept, dict) and file_kept["watchlist_matches"] == ["known"]

    # A corrupted part, or only some parts: nothing is left, not even a .part file.
    for kw in ({"corrupt_parts": {2}}, {}):
        keep2 = tmp_path / f"kept-{len(kw)}"
        report = verify(
            Ed2kLabPeer(host(), [three_part], **kw),  # type: ignore[arg-type]
            wanted_of(three_part),
            keep_content=keep2,
            parts=None if kw else 2,
        )
        assert report.kept is None and report.not_kept is not None
        assert report.download.verified == 2
        assert [p for p in keep2.rglob("*") if p.is_file()] == []
        assert summary(report).extra["file_kept"] is None


def test_hash_and_discard_by_default_writes_nothing(
    small: SharedFile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    report = verify(Ed2kLabPeer(host(), [small]), wanted_of(small))
    assert report.download.verified == 1 and report.kept is None and report.not_kept is None
    assert list(tmp_path.iterdir()) == []


# --- parsing and the command line ---------------------------------------------------------------


def test_parse_targets_and_files(small: SharedFile) -> None:
    assert parse_ed2k_target("ed2k://127.0.19.5:4662") == Ed2kTarget("127.0.19.5", 4662, None)
    t = parse_ed2k_target(f"ed2k://{LAB_USER_HASH.hex()}@127.0.19.5:4662/")
    assert t.user_hash == LAB_USER_HASH
    for bad in ("ed2k://host.example:4662", "ed2k://127.0.0.1", "ed2k://abc@127.0.0.1:1"):
        with pytest.raises(InputError):
            parse_ed2k_target(bad)
    assert parse_ed2k_file(small.ed2k.hex()) == Ed2kWanted(small.ed2k)
    link = Ed2kFileLink("a b.bin", small.size, small.ed2k, small.aich).to_link()
    assert parse_ed2k_file(link) == Ed2kWanted(small.ed2k, small.size, "a b.bin", small.aich)
    with pytest.raises(InputError):
        parse_ed2k_file("1234")


def test_size_and_aich_come_from_the_watchlist(
    three_part: SharedFile, tmp_path: Path, sqlite_engine: Engine
) -> None:
    lst = tmp_path / "list.txt"
    link = Ed2kFileLink("w.bin", three_part.size, three_part.ed2k, three_part.aich)
    lst.write_text(link.to_link() + "\n")
    store = WatchlistStore(sqlite_engine)
    store.import_files([lst], list_name="ed2k-list")
    got = complete_wanted(Ed2kWanted(three_part.ed2k), store)
    assert got == Ed2kWanted(three_part.ed2k, three_part.size, "w.bin", three_part.aich)
    unknown = complete_wanted(Ed2kWanted(bytes(16)), store)
    assert unknown == Ed2kWanted(bytes(16))
    with pytest.raises(InputError, match="size is unknown"):
        asyncio.run(verify_ed2k_peer(Ed2kTarget(host(), 1, None), unknown, CONFIG))


@contextmanager
def serving(peer: Ed2kLabPeer) -> Iterator[Ed2kLabPeer]:
    """Run the peer in its own thread and loop (the command runs its own asyncio.run)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(peer.start(), loop).result(5)
    ready.set()
    try:
        yield peer
    finally:
        asyncio.run_coroutine_threadsafe(peer.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_cli_verify_peer_ed2k(three_part: SharedFile, tmp_path: Path) -> None:
    home = tmp_path / "home"
    link = Ed2kFileLink("three-part.bin", three_part.size, three_part.ed2k, three_part.aich)
    with serving(Ed2kLabPeer(host(), [three_part], corrupt_parts={0})) as peer:
        args = ["--home", str(home), "verify-peer", f"ed2k://{peer.endpoint}", link.to_link()]
        assert run([*args, "--bind", BIND, "--parts", "2"]) == 0  # 1 verified, 1 failed
    with serving(Ed2kLabPeer(host(), [three_part], corrupt_parts={0, 1, 2})) as peer:
        args = ["--home", str(home), "verify-peer", f"ed2k://{peer.endpoint}", link.to_link()]
        assert run(args) == 1  # nothing verified
    # A bare hash without a size anywhere is refused before any connection.
    assert run(["--home", str(home), "verify-peer", "ed2k://127.0.19.9:1", "00" * 16]) == 2
    assert run(["--home", str(home), "verify-peer", "ed2k://127.0.19.9:1", "xyz"]) == 2
    app = App(Settings.resolve(home=home))
    observations = [record.decode(r.record).observation for r in iter_records(app.engine)]
    got = [(o.method, o.outcome, o.extra.get("part_index")) for o in observations]
    assert got == [
        (METHOD_PIECE, "piece-failed", 0),
        (METHOD_PIECE, "possession", 1),
        (METHOD_SUMMARY, "complete", None),
        (METHOD_PIECE, "piece-failed", 0),
        (METHOD_PIECE, "piece-failed", 1),
        (METHOD_PIECE, "piece-failed", 2),
        (METHOD_SUMMARY, "complete", None),
    ]
    assert run(["--home", str(home), "evidence", "verify"]) == 0
