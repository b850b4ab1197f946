"""Single-source verification against a fake seeder on 127.0.4.1 that we control byte for byte.

The fake seeder speaks just enough peer wire (BEP 3/6/9/10) to serve a benign random torrent; it
can lack pieces, corrupt one, choke mid-way, reject requests or never unchoke, and it counts its
connections and the requests it received. v2 piece checks are cross-checked against torrents
made by libtorrent (an independent BEP 52 implementation) when it is installed.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import Engine

from peerwatch.domain.hashes import HashKind
from peerwatch.errors import InputError
from peerwatch.evidence.keys import load_or_create
from peerwatch.evidence.log import EvidenceLog, iter_records, sensor_keys
from peerwatch.evidence.verify import ChainReport, verify_stored
from peerwatch.protocols.bittorrent.bencode import bdecode, bencode
from peerwatch.protocols.bittorrent.metainfo import Metainfo, MetainfoError, parse_metainfo
from peerwatch.protocols.bittorrent.peer_wire import OUR_EXTENSIONS
from peerwatch.sensors.verify_peer import (
    METHOD_PIECE,
    METHOD_SUMMARY,
    TorrentId,
    VerifyReport,
    load_torrent,
    parse_infohash,
    parse_target,
    verify_peer,
)
from peerwatch.transport.egress import EgressDeniedError
from peerwatch.transport.piece_download import (
    SHA1,
    SHA256_MERKLE,
    DownloadConfig,
    DownloadResult,
    PiecePlan,
    PieceResult,
    download,
    merkle_root,
)
from peerwatch.watchlist.store import WatchlistStore

HOST = "127.0.4.1"
PIECE = 16 * 1024
CONFIG = DownloadConfig(
    peer_id=b"-PW0010-unittest0000",
    handshake_timeout=5.0,
    unchoke_timeout=3.0,
    stall_timeout=3.0,
)
_SEEDER_ID = b"-FK0001-" + b"fakeseeder00"
_THEIR_METADATA_ID = 3  # what the fake seeder announces for ut_metadata


# --- benign content and torrents ---------------------------------------------------------------


@dataclass
class FakeTorrent:
    raw: bytes  # the .torrent
    meta: Metainfo
    files: dict[tuple[str, ...], bytes]
    wire_pieces: list[bytes]  # what piece i is on the wire

    @property
    def wire_hash(self) -> bytes:
        h = self.meta.btih or self.meta.btmh_truncated
        assert h is not None
        return h


def v1_torrent(sizes: list[int], *, seed: int = 7, piece: int = PIECE) -> FakeTorrent:
    rng = random.Random(seed)
    contents = [rng.randbytes(n) for n in sizes]
    blob = b"".join(contents)
    info = {
        b"files": [
            {b"length": len(c), b"path": [f"file-{i}.bin".encode()]} for i, c in enumerate(contents)
        ],
        b"name": b"fake-v1",
        b"piece length": piece,
        b"pieces": b"".join(
            hashlib.sha1(blob[i : i + piece], usedforsecurity=False).digest()
            for i in range(0, len(blob), piece)
        ),
    }
    raw = bencode({b"info": info})
    files: dict[tuple[str, ...], bytes] = {
        ("fake-v1", f"file-{i}.bin"): c for i, c in enumerate(contents)
    }
    wire = [blob[i : i + piece] for i in range(0, len(blob), piece)]
    return FakeTorrent(raw, parse_metainfo(raw), files, wire)


def lt_v2_torrent(tmp: Path, sizes: list[int], piece: int) -> FakeTorrent:
    """A v2-only torrent made by libtorrent from benign random files."""
    lt = pytest.importorskip("libtorrent")
    import warnings

    rng = random.Random(11)
    folder = tmp / "src" / "fake-v2"
    folder.mkdir(parents=True)
    files: dict[tuple[str, ...], bytes] = {}
    for i, n in enumerate(sizes):
        data = rng.randbytes(n)
        (folder / f"f{i}.bin").write_bytes(data)
        files["fake-v2", f"f{i}.bin"] = data
    fs = lt.file_storage()
    with warnings.catch_warnings():
        # libtorrent 2.1 deprecates building from a file_storage; the lab does the same.
        warnings.simplefilter("ignore", DeprecationWarning)
        lt.add_files(fs, str(folder))
        ct = lt.create_torrent(fs, piece, flags=lt.create_torrent.v2_only)
    lt.set_piece_hashes(ct, str(folder.parent))
    raw = lt.bencode(ct.generate())
    meta = parse_metainfo(raw)
    wire: list[bytes] = []
    for f in meta.files:
        data = files["fake-v2", f.path[-1]]  # a one-file torrent is saved under its own name
        wire += [data[i : i + piece] for i in range(0, len(data), piece)]
    return FakeTorrent(raw, meta, files, wire)


# --- the fake seeder ---------------------------------------------------------------------------


def _frame(mid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">IB", 1 + len(payload), mid) + payload


@dataclass
class FakeSeeder:
    torrent: FakeTorrent
    have: set[int] | None = None  # None: every piece
    corrupt: set[int] = field(default_factory=set)
    serve_metadata: bool = True
    unchoke: bool = True
    choke_after: int | None = None  # choke once after this many blocks, unchoke 0.2 s later
    reject: set[int] = field(default_factory=set)  # pieces whose every request is rejected
    connections: int = 0
    requests: list[tuple[int, int, int]] = field(default_factory=list)
    blocks_sent: int = 0
    port: int = 0
    _server: asyncio.Server | None = None

    async def __aenter__(self) -> FakeSeeder:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self._session(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        t = self.torrent
        hs = await reader.readexactly(68)
        if hs[28:48] != t.wire_hash:
            return
        reserved = bytearray(8)
        reserved[5] |= 0x10  # BEP 10
        reserved[7] |= 0x04  # BEP 6
        writer.write(b"\x13BitTorrent protocol" + bytes(reserved) + t.wire_hash + _SEEDER_ID)
        ext: dict[bytes, object] = {b"m": {b"ut_metadata": _THEIR_METADATA_ID}, b"v": b"fake 1.0"}
        if self.serve_metadata:
            ext[b"metadata_size"] = len(t.meta.info_bytes)
        writer.write(_frame(20, b"\x00" + bencode(ext)))
        n = len(t.wire_pieces)
        have = set(range(n)) if self.have is None else self.have
        bits = bytearray((n + 7) // 8)
        for i in have:
            bits[i // 8] |= 0x80 >> (i % 8)
        writer.write(_frame(5, bytes(bits)))
        await writer.drain()
        while True:
            (length,) = struct.unpack(">I", await reader.readexactly(4))
            if length == 0:
                continue
            body = await reader.readexactly(length)
            mid, payload = body[0], body[1:]
            if mid == 2 and self.unchoke:  # interested
                writer.write(_frame(1))
            elif mid == 6:  # request
                index, begin, size = struct.unpack(">III", payload)
                self.requests.append((index, begin, size))
                if index in self.reject or index not in have:
                    writer.write(_frame(0x10, payload))  # BEP 6 reject
                else:
                    data = bytearray(t.wire_pieces[index][begin : begin + size])
                    if index in self.corrupt and begin == 0:
                        data[0] ^= 0xFF
                    writer.write(_frame(7, struct.pack(">II", index, begin) + bytes(data)))
                    self.blocks_sent += 1
                    if self.choke_after is not None and self.blocks_sent == self.choke_after:
                        writer.write(_frame(0))  # choke: pending requests are dropped
                        await writer.drain()
                        await asyncio.sleep(0.2)
                        writer.write(_frame(1))
            elif mid == 20 and payload[0] == _THEIR_METADATA_ID:
                d = bdecode(payload[1:])
                piece = d[b"piece"]
                info = t.meta.info_bytes
                our_id = OUR_EXTENSIONS["ut_metadata"]
                if not self.serve_metadata:
                    reply = bencode({b"msg_type": 2, b"piece": piece})
                else:
                    chunk = info[piece * PIECE : (piece + 1) * PIECE]
                    head = {b"msg_type": 1, b"piece": piece, b"total_size": len(info)}
                    reply = bencode(head) + chunk
                writer.write(_frame(20, bytes([our_id]) + reply))
            await writer.drain()


def _run(
    torrent: FakeTorrent, seeder: FakeSeeder, *, give_torrent: bool = False, **kw: object
) -> tuple[list[tuple[PieceResult, bytes]], DownloadResult]:
    seen: list[tuple[PieceResult, bytes]] = []

    async def go() -> DownloadResult:
        async with seeder:
            return await download(
                HOST,
                seeder.port,
                torrent.wire_hash,
                CONFIG,
                lambda r, data, _plan: seen.append((r, data)),
                metainfo=torrent.meta if give_torrent else None,
                **kw,  # type: ignore[arg-type]
            )

    return seen, asyncio.run(go())


# --- tests: the pure part ----------------------------------------------------------------------


def test_merkle_root_pads_with_zero_leaves() -> None:
    a, b, c = (hashlib.sha256(x).digest() for x in (b"a", b"b", b"c"))
    z = bytes(32)
    h = hashlib.sha256
    assert merkle_root([a], 1) == a
    assert merkle_root([a, b], 2) == h(a + b).digest()
    assert merkle_root([a, b, c], 4) == h(h(a + b).digest() + h(c + z).digest()).digest()
    zz = h(z + z).digest()
    assert merkle_root([a], 4) == h(h(a + z).digest() + zz).digest()
    with pytest.raises(ValueError):
        merkle_root([a, b, c], 2)


def test_v1_plan_geometry() -> None:
    t = v1_torrent([40_000, 25_000, 70_001])
    plan = PiecePlan(t.meta)
    assert plan.count == len(t.wire_pieces) == 9
    assert [plan.check(i).length for i in range(plan.count)] == [len(p) for p in t.wire_pieces]
    assert all(plan.check(i).algorithm == SHA1 for i in range(plan.count))
    assert [s.offset for s in plan.files] == [0, 40_000, 65_000]
    assert plan.pieces_of(plan.files[1]) == range(2, 4)


def test_piece_layers_accessor_and_v2_checks_agree_with_libtorrent(tmp_path: Path) -> None:
    # 64 KiB pieces: a 20,000-byte file is one piece (2 blocks), 40,000 bytes one piece of 3
    # blocks (tree padded to 4 leaves), 200,000 bytes four pieces, the last one short.
    t = lt_v2_torrent(tmp_path, [20_000, 40_000, 200_000], 64 * 1024)
    assert t.meta.version == "v2"
    by_len = {f.length: f for f in t.meta.files}
    assert t.meta.piece_layer(by_len[20_000]) is None  # BEP 52: one piece, no layer
    assert t.meta.piece_layer(by_len[40_000]) is None
    layer = t.meta.piece_layer(by_len[200_000])
    assert layer is not None and len(layer) == 4 * 32
    plan = PiecePlan(t.meta)
    assert plan.count == t.meta.piece_count == len(t.wire_pieces) == 6
    for i, data in enumerate(t.wire_pieces):
        check = plan.check(i)
        assert check.algorithm == SHA256_MERKLE
        assert check.length == len(data)
        assert check.digest(data) == check.expected, i
        assert check.digest(data[:-1] + bytes([data[-1] ^ 1])) != check.expected


def test_a_piece_layer_that_does_not_hash_to_its_root_is_refused(tmp_path: Path) -> None:
    t = lt_v2_torrent(tmp_path, [200_000], 64 * 1024)
    root = bdecode(t.raw)
    (key,) = root[b"piece layers"]
    layer = bytearray(root[b"piece layers"][key])
    layer[0] ^= 1
    root[b"piece layers"][key] = bytes(layer)
    with pytest.raises(MetainfoError, match="does not hash to its pieces root"):
        PiecePlan(parse_metainfo(bencode(root)))


def test_piece_layers_shape_is_checked() -> None:
    t = v1_torrent([1000])
    assert t.meta.piece_layers == {}
    v2info = {
        b"file tree": {b"a": {b"": {b"length": 40_000, b"pieces root": bytes(32)}}},
        b"meta version": 2,
        b"name": b"x",
        b"piece length": PIECE,
    }
    bads: list[object] = [[], {b"short": b"x" * 32}, {bytes(32): b"x" * 31}, {bytes(32): 5}]
    for bad in bads:
        with pytest.raises(MetainfoError, match="piece layers"):
            parse_metainfo(bencode({b"info": v2info, b"piece layers": bad}))
    ok = parse_metainfo(bencode({b"info": v2info, b"piece layers": {bytes(32): b"y" * 96}}))
    assert ok.piece_layers == {bytes(32): b"y" * 96}


def test_parse_target_and_infohash() -> None:
    assert parse_target("127.0.4.1:6881") == ("127.0.4.1", 6881)
    assert parse_target("[::1]:80") == ("::1", 80)
    for bad in ("127.0.4.1", "host:80", "127.0.0.1:0", "127.0.0.1:70000"):
        with pytest.raises(InputError):
            parse_target(bad)
    v1 = "ab" * 20
    assert parse_infohash(v1) == TorrentId(bytes.fromhex(v1), None)
    assert parse_infohash("btih:" + v1) == TorrentId(bytes.fromhex(v1), None)
    v2 = "cd" * 32
    assert parse_infohash(v2) == TorrentId(bytes.fromhex(v2)[:20], bytes.fromhex(v2))
    for bad in ("xyz", "ab" * 16, "btmh:" + v1):
        with pytest.raises(InputError):
            parse_infohash(bad)


def test_load_torrent_checks_the_infohash(tmp_path: Path) -> None:
    t = v1_torrent([30_000])
    path = tmp_path / "t.torrent"
    path.write_bytes(t.raw)
    assert load_torrent(path, TorrentId(t.wire_hash, None)).btih == t.wire_hash
    with pytest.raises(InputError, match="not the one given"):
        load_torrent(path, TorrentId(bytes(20), None))
    path.write_bytes(b"garbage")
    with pytest.raises(InputError):
        load_torrent(path, TorrentId(t.wire_hash, None))


# --- tests: downloading from the fake seeder ---------------------------------------------------


def test_all_pieces_over_bep9_metadata_from_the_one_peer() -> None:
    t = v1_torrent([40_000, 25_000, 70_001])
    seeder = FakeSeeder(t)
    seen, res = _run(t, seeder)
    assert res.outcome == "complete", res.detail
    assert res.metadata_source == "bep9" and res.metainfo is not None
    assert res.metainfo.btih == t.wire_hash
    assert res.verified == 9 and res.failed == 0 and res.not_held == 0
    assert sorted(r.index for r, _ in seen) == list(range(9))
    assert all(data == t.wire_pieces[r.index] for r, data in seen)
    assert res.connections == ((HOST, seeder.port),)
    assert seeder.connections == 1
    assert res.client == "fake 1.0" and res.peer_id == _SEEDER_ID
    assert not res.encrypted


def test_a_corrupted_piece_is_recorded_as_failing_and_the_rest_continues(
    tmp_path: Path, sqlite_engine: Engine
) -> None:
    t = v1_torrent([40_000, 25_000, 70_001])
    seeder = FakeSeeder(t, corrupt={4})

    async def go() -> VerifyReport:
        async with seeder:
            return await verify_peer(
                HOST,
                seeder.port,
                TorrentId(t.wire_hash, None),
                CONFIG,
                metainfo=t.meta,
            )

    report = asyncio.run(go())
    r = report.download
    assert r.outcome == "complete", r.detail
    assert r.verified == 8 and r.failed == 1
    (bad,) = [p for p in r.pieces if not p.ok]
    assert bad.index == 4 and bad.algorithm == SHA1 and bad.digest != bad.expected
    pieces = [o for o in report.observations if o.method == METHOD_PIECE]
    assert len(pieces) == 9
    failed = [o for o in pieces if o.outcome == "piece-failed"]
    assert len(failed) == 1 and failed[0].extra["piece_index"] == 4
    assert failed[0].extra["piece_hash"] != failed[0].extra["expected_hash"]
    ok = [o for o in pieces if o.outcome == "possession"]
    assert len(ok) == 8
    for o in ok:
        assert o.extra["hash_algorithm"] == "sha1"
        assert o.extra["piece_hash"] == o.extra["expected_hash"]
        assert o.extra["content_kept"] is False
        assert o.content_key == f"btih:{t.wire_hash.hex()}"
        assert o.ip == HOST and o.port == seeder.port
    (summary,) = [o for o in report.observations if o.method == METHOD_SUMMARY]
    assert summary.outcome == "complete" and summary.extra["failed"] == 1
    # They go into the signed log and verify.
    key = load_or_create(tmp_path / "keys", "unit")
    EvidenceLog(sqlite_engine, key).append(report.observations)
    items = list(
        verify_stored(
            iter_records(sqlite_engine),
            {"unit": key.private.public_key()},
            sensor_keys(sqlite_engine),
        )
    )
    assert [x for x in items if not isinstance(x, ChainReport)] == []


def test_pieces_the_peer_lacks_are_never_requested() -> None:
    t = v1_torrent([40_000, 25_000, 70_001])
    seeder = FakeSeeder(t, have={0, 2, 3, 8})
    _seen, res = _run(t, seeder, give_torrent=True)
    assert res.outcome == "complete"
    assert res.have == 4 and res.total == 9
    assert res.verified == 4 and res.not_held == 5
    assert {i for i, _b, _n in seeder.requests} == {0, 2, 3, 8}
    assert res.completion_ppm == 4 * 1_000_000 // 9


def test_pieces_limit_and_pipeline_bound() -> None:
    t = v1_torrent([300_000])  # 19 pieces
    seeder = FakeSeeder(t)
    _seen, res = _run(t, seeder, give_torrent=True, pieces=5)
    assert res.outcome == "complete" and res.verified == 5 and res.selected == 5
    assert {i for i, _b, _n in seeder.requests} == set(range(5))


def test_choke_mid_download_then_unchoke_re_requests() -> None:
    t = v1_torrent([300_000])
    seeder = FakeSeeder(t, choke_after=3)
    _seen, res = _run(t, seeder, give_torrent=True)
    assert res.outcome == "complete", res.detail
    assert res.verified == 19 and res.failed == 0


def test_rejected_piece_counts_as_not_served() -> None:
    t = v1_torrent([100_000])  # 7 pieces
    seeder = FakeSeeder(t, reject={2})
    _seen, res = _run(t, seeder, give_torrent=True)
    assert res.outcome == "complete", res.detail
    assert res.verified == 6 and res.not_served == 1 and res.failed == 0


def test_a_peer_that_never_unchokes_ends_cleanly() -> None:
    t = v1_torrent([40_000])
    seeder = FakeSeeder(t, unchoke=False)
    _seen, res = _run(t, seeder, give_torrent=True)
    assert res.outcome == "choked" and res.verified == 0
    assert res.handshake_accepted and res.have == 3


def test_no_metadata_from_the_peer() -> None:
    t = v1_torrent([40_000])
    seeder = FakeSeeder(t, serve_metadata=False)
    _seen, res = _run(t, seeder)
    assert res.outcome == "no-metadata" and res.verified == 0


def test_wrong_infohash_is_refused_and_nothing_else_is_contacted() -> None:
    t = v1_torrent([40_000])
    seeder = FakeSeeder(t)

    async def go() -> DownloadResult:
        async with seeder:
            return await download(
                HOST, seeder.port, bytes(20), CONFIG, lambda *_: None, metainfo=None
            )

    res = asyncio.run(go())
    assert res.outcome == "refused" and not res.handshake_accepted
    # The plain attempt was hung up on, so MSE was tried: both to the same one address.
    assert set(res.connections) == {(HOST, seeder.port)}
    assert seeder.connections == len(res.connections) == 2


def test_only_loopback_by_default() -> None:
    with pytest.raises(EgressDeniedError):
        asyncio.run(download("192.0.2.1", 6881, bytes(20), CONFIG, lambda *_: None))


def test_v2_download_checks_merkle_pieces(tmp_path: Path) -> None:
    t = lt_v2_torrent(tmp_path, [20_000, 40_000, 200_000], 64 * 1024)
    seeder = FakeSeeder(t, corrupt={5})
    seen, res = _run(t, seeder, give_torrent=True)
    assert res.outcome == "complete", res.detail
    assert res.verified == 5 and res.failed == 1
    assert all(r.algorithm == SHA256_MERKLE for r, _ in seen)
    # Pieces are requested at their real length, never past the end of a file.
    assert max(b + n for i, b, n in seeder.requests if i == 0) == 20_000


# --- keeping content ---------------------------------------------------------------------------


@pytest.fixture
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    yield cwd


def test_hash_and_discard_by_default_writes_nothing(empty_cwd: Path, tmp_path: Path) -> None:
    t = v1_torrent([40_000, 25_000])
    seeder = FakeSeeder(t)
    before = sorted(tmp_path.rglob("*"))

    async def go() -> VerifyReport:
        async with seeder:
            return await verify_peer(HOST, seeder.port, TorrentId(t.wire_hash, None), CONFIG)

    report = asyncio.run(go())
    assert report.download.verified == 4  # 65,000 bytes in 16 KiB pieces
    assert report.kept == () and report.not_kept == ()
    assert sorted(tmp_path.rglob("*")) == before
    assert list(empty_cwd.iterdir()) == []


def test_keep_content_writes_verified_files_and_reports_watchlist_matches(
    tmp_path: Path, sqlite_engine: Engine
) -> None:
    t = v1_torrent([40_000, 25_000, 70_001])
    seeder = FakeSeeder(t, corrupt={7})  # piece 7 lies in the third file only
    watched = t.files["fake-v1", "file-1.bin"]
    lst = tmp_path / "known.txt"
    lst.write_text(hashlib.sha256(watched).hexdigest() + "\n")
    store = WatchlistStore(sqlite_engine)
    store.import_files([lst], list_name="known", kind=HashKind.SHA256)
    keep = tmp_path / "kept"

    async def go() -> VerifyReport:
        async with seeder:
            return await verify_peer(
                HOST,
                seeder.port,
                TorrentId(t.wire_hash, None),
                CONFIG,
                keep_content=keep,
                watchlist=store,
            )

    report = asyncio.run(go())
    kept = {f.torrent_path: f for f in report.kept}
    assert set(kept) == {"fake-v1/file-0.bin", "fake-v1/file-1.bin"}
    assert report.not_kept == ("fake-v1/file-2.bin",)
    for path, data in t.files.items():
        f = kept.get("/".join(path))
        if f is None:
            continue
        assert f.written.read_bytes() == data
        assert f.sha256 == hashlib.sha256(data).hexdigest()
        assert f.md5 == hashlib.md5(data, usedforsecurity=False).hexdigest()
    assert [m.list_name for m in kept["fake-v1/file-1.bin"].matches] == ["known"]
    assert kept["fake-v1/file-0.bin"].matches == ()
    assert [m.list_name for m in report.matches] == ["known"]
    # Only whole verified files are left: no partial file of the failed one, no .part files.
    written = sorted(p.name for p in keep.rglob("*") if p.is_file())
    assert written == ["file-0.bin", "file-1.bin"]
    # The decision is logged.
    for o in report.observations:
        assert o.extra["content_kept"] is True
        assert o.extra["keep_content_dir"] == str(keep)
    (summary,) = [o for o in report.observations if o.method == METHOD_SUMMARY]
    files = summary.extra["files_kept"]
    assert isinstance(files, list) and len(files) == 2
    assert summary.extra["files_not_kept"] == ["fake-v1/file-2.bin"]
