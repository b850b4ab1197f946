"""`sense ed2k --source-exchange`: the peers' own source lists (SX2) feed the eD2k sensor (issue 7).

Lab peers (`lab.ed2k_peer.Ed2kLabPeer`, well-formed Python eD2k peers) on 127.0.26.x share one
benign generated file. Peer A lists, in its ANSWERSOURCES2, peer B (which shares the file and is
given to the sensor by nobody else), a low-id (firewalled) source and an address where nothing
listens. One sweep given only A must prove A and B, record three `source-exchange` claims (never
possession), never dial the low id and record the dead address as refused. A peer listing 1,000
fake sources cannot make the sweep unbounded, a chain of peers each listing the next stops at
the round bound, and a probe without the option sends no source request at all (checked on the
bytes the lab peer received).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import threading
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from peerwatch.cli.main import run
from peerwatch.evidence import record
from peerwatch.evidence.keys import load_or_create
from peerwatch.evidence.log import EvidenceLog, iter_records
from peerwatch.evidence.record import CLAIM_METHODS, Observation
from peerwatch.lab.ed2k_peer import Ed2kLabPeer, SharedFile
from peerwatch.protocols.ed2k import messages as m
from peerwatch.protocols.ed2k.client import ClientIdentity
from peerwatch.protocols.ed2k.framing import PacketDecoder, encode_packet
from peerwatch.sensors.ed2k import (
    NO_ADDRESS,
    Ed2kFile,
    Ed2kPeer,
    Ed2kSweep,
    Ed2kSweepConfig,
    Ed2kSweepStats,
)
from peerwatch.storage.database import make_engine, migrate, sqlite_url
from peerwatch.transport.ed2k_probe import Ed2kProbeConfig, Ed2kProbeResult, probe_ed2k
from peerwatch.transport.egress import EgressPolicy

NET = "127.0.26."
A_IP, B_IP = NET + "1", NET + "2"
DEAD = (NET + "3", 4662)  # nothing listens there
SENSOR_IP = NET + "200"
OURS = bytes.fromhex("26aa0123456e0e0e0e0e0e0e0e6f0e26")
HASH_A = bytes.fromhex("a1a1a1a1a10ea1a1a1a1a1a1a1a16fa1")
HASH_B = bytes.fromhex("b2b2b2b2b20eb2b2b2b2b2b2b2b26fb2")
DEAD_HASH = bytes.fromhex("dededededede0ededededede6fdedede")
LOW_HASH = bytes.fromhex("10101010100e101010101010106f1010")
LOW_ID = 0x00ABCD  # < 2**24: a firewalled client, no address
SERVER = (0x0A1A007F, 4661)  # 127.0.26.10 as aMule writes it (network order read little-endian)
FILE = SharedFile.of("benign-sx.bin", random.Random(26).randbytes(300_000))


def _source(ip: str, port: int, user_hash: bytes | None, crypt: int = 0) -> m.Source:
    # SX2 v3+ carries a high id in "hybrid" order: the address's bytes as a big-endian number
    return m.Source(int(ipaddress.IPv4Address(ip)), port, 0, 0, user_hash, crypt)


def _probe_config(**kw: Any) -> Ed2kProbeConfig:
    kw.setdefault("connect_timeout", 1.0)
    kw.setdefault("timeout", 5.0)
    return Ed2kProbeConfig(
        ClientIdentity(OURS, supports_crypt=True), bind_ip=SENSOR_IP, obfuscation="plain", **kw
    )


def _sent_by_us(peer: Ed2kLabPeer) -> list[m.Message]:
    return [m.decode(p) for p in PacketDecoder().feed(bytes(peer.received))]


async def _sweep(
    tmp_path: Path, peers: list[Ed2kPeer], config: Ed2kSweepConfig
) -> tuple[Ed2kSweepStats, list[Observation], float]:
    engine = make_engine(sqlite_url(tmp_path / "sx.db"))
    migrate(engine)
    log = EvidenceLog(engine, load_or_create(tmp_path / "keys", "sx-test"))
    started = time.monotonic()
    stats = await Ed2kSweep(config, log, EgressPolicy()).sweep(
        peers, [Ed2kFile(FILE.ed2k, FILE.size)]
    )
    elapsed = time.monotonic() - started
    found = [record.decode(row.record).observation for row in iter_records(engine)]
    return stats, found, elapsed


def test_one_sweep_given_only_a_proves_b_through_source_exchange(tmp_path: Path) -> None:
    async def main() -> tuple[Ed2kSweepStats, list[Observation], float, int, int]:
        async with Ed2kLabPeer(B_IP, [FILE], user_hash=HASH_B) as b:
            low = m.Source(LOW_ID, 4662, *SERVER, LOW_HASH, 0)
            sources = (_source(B_IP, b.port, HASH_B, 1), low, _source(*DEAD, DEAD_HASH, 0b111))
            async with Ed2kLabPeer(A_IP, [FILE], user_hash=HASH_A, sources=sources) as a:
                config = Ed2kSweepConfig(_probe_config(source_exchange=True, source_wait=2.0))
                got = await _sweep(tmp_path, [Ed2kPeer(A_IP, a.port)], config)
                return (*got, a.source_requests, b.source_requests)

    stats, found, elapsed, a_asked, b_asked = asyncio.run(main())
    a_port = next(o.port for o in found if o.ip == A_IP)
    b_port = next(o.port for o in found if o.ip == B_IP)
    key = f"ed2k:{FILE.ed2k.hex()}"
    assert stats.per_file == {key: {(A_IP, a_port), (B_IP, b_port)}}
    assert stats.proven == 2 and stats.probes == 3  # A, B, the dead address; never the low id
    assert stats.sx_claims == 3 and stats.claims == 3 and stats.low_id_claims == 1
    assert stats.sx_answers == 1 and stats.sx_rounds == 1 and stats.sx_new_peers == 2
    assert stats.sx_not_followed == 0 and stats.sx_unrecorded == 0
    assert a_asked == 1 and b_asked == 0  # B does not advertise SX2, so it is not asked
    # A answered with the file status, so there was no wait; nobody waited the 2 s for B either
    assert elapsed < 2.0

    assert "source-exchange" in CLAIM_METHODS
    claims = [o for o in found if o.method == "source-exchange"]
    assert {o.outcome for o in claims} == {"claim"}
    assert {o.content_key for o in claims} == {key}
    assert {(o.ip, o.port, o.peer_id) for o in claims} == {
        (B_IP, b_port, HASH_B.hex()),
        (NO_ADDRESS, None, LOW_HASH.hex()),
        (DEAD[0], DEAD[1], DEAD_HASH.hex()),
    }
    for o in claims:
        assert o.extra["told_by"] == f"{A_IP}:{a_port}"
        assert o.extra["told_by_user_hash"] == HASH_A.hex()
        assert o.extra["sx_version"] == 4 and o.extra["sources_in_answer"] == 3
    by_ip = {o.ip: o for o in claims}
    assert by_ip[NO_ADDRESS].extra["id_type"] == "low"
    assert by_ip[NO_ADDRESS].extra["client_id"] == LOW_ID
    assert by_ip[NO_ADDRESS].extra["server"] == f"{NET}10:4661"
    assert by_ip[B_IP].extra["id_type"] == "high" and by_ip[B_IP].extra["crypt_options"] == 1
    assert by_ip[DEAD[0]].extra["requires_obfuscation"] is True

    probes = [o for o in found if o.method != "source-exchange"]
    assert {(o.ip, o.method, o.outcome) for o in probes} == {
        (A_IP, "file-status", "possession"),
        (B_IP, "file-status", "possession"),
        (DEAD[0], "connect", "refused"),
    }
    by_probe = {o.ip: o for o in probes}
    assert by_probe[B_IP].peer_id == HASH_B.hex()
    assert by_probe[A_IP].extra["sources_listed"] == 3
    assert by_probe[B_IP].extra["sources_requested"] is False


def test_a_peer_listing_1000_fake_sources_cannot_make_the_sweep_unbounded(
    tmp_path: Path,
) -> None:
    # 1,000 distinct high-id addresses in our /24 where nothing listens, sent zlib-packed
    fakes = tuple(
        _source(f"{NET}{20 + i // 100}", 20_000 + i, bytes([i % 256]) * 16) for i in range(1000)
    )

    async def main() -> tuple[Ed2kSweepStats, list[Observation], float]:
        async with Ed2kLabPeer(
            A_IP, [FILE], user_hash=HASH_A, sources=fakes, pack_sources=True
        ) as liar:
            config = Ed2kSweepConfig(
                _probe_config(source_exchange=True, source_wait=2.0),
                sx_claims_per_answer=300,
                sx_new_peers=12,
            )
            return await _sweep(tmp_path, [Ed2kPeer(A_IP, liar.port)], config)

    stats, found, elapsed = asyncio.run(main())
    assert stats.sx_answers == 1
    assert stats.sx_claims == 300 and stats.sx_unrecorded == 700  # claims capped per answer
    assert len([o for o in found if o.method == "source-exchange"]) == 300
    assert stats.sx_new_peers == 12 and stats.probes == 1 + 12  # probes capped per sweep
    assert stats.sx_not_followed == 300 - 12
    refused = [o for o in found if o.method == "connect"]
    assert len(refused) == 12 and {o.outcome for o in refused} == {"refused"}
    assert stats.proven == 1
    assert elapsed < 10.0


def test_the_default_bounds_hold_too(tmp_path: Path) -> None:
    fakes = tuple(_source(f"{NET}{20 + i // 100}", 30_000 + i, bytes(16)) for i in range(1000))
    defaults = Ed2kSweepConfig(_probe_config())

    async def main() -> tuple[Ed2kSweepStats, list[Observation], float]:
        async with Ed2kLabPeer(A_IP, [FILE], user_hash=HASH_A, sources=fakes) as liar:
            config = Ed2kSweepConfig(_probe_config(source_exchange=True))
            return await _sweep(tmp_path, [Ed2kPeer(A_IP, liar.port)], config)

    stats, _, elapsed = asyncio.run(main())
    assert stats.sx_claims == defaults.sx_claims_per_answer == 501  # aMule's most per answer
    assert stats.sx_new_peers == defaults.sx_new_peers
    assert stats.probes == 1 + defaults.sx_new_peers
    assert elapsed < 20.0


def test_follow_up_rounds_stop_at_the_bound(tmp_path: Path) -> None:
    # a chain 1 -> 2 -> 3 -> 4: each lists the next; two follow-up rounds reach 3, never 4
    ips = [f"{NET}{31 + i}" for i in range(4)]
    hashes = [bytes([0x31 + i]) * 16 for i in range(4)]

    async def main() -> tuple[Ed2kSweepStats, list[Observation], float, list[int]]:
        async with AsyncExitStack() as stack:
            peers: list[Ed2kLabPeer] = []
            for i in reversed(range(4)):
                listed = (_source(ips[i + 1], peers[0].port, hashes[i + 1]),) if peers else ()
                peer = Ed2kLabPeer(ips[i], [FILE], user_hash=hashes[i], sources=listed)
                peers.insert(0, await stack.enter_async_context(peer))
            config = Ed2kSweepConfig(_probe_config(source_exchange=True), sx_rounds=2)
            got = await _sweep(tmp_path, [Ed2kPeer(ips[0], peers[0].port)], config)
            return (*got, [p.connections for p in peers])

    stats, found, _, connections = asyncio.run(main())
    assert connections == [1, 1, 1, 0]
    assert stats.sx_rounds == 2 and stats.proven == 3 and stats.sx_not_followed == 1
    assert {o.ip for o in found if o.method == "source-exchange"} == set(ips[1:])
    assert {o.ip for o in found if o.method == "file-status"} == set(ips[:3])


def _probe(peer: Ed2kLabPeer, **kw: Any) -> Ed2kProbeResult:
    return asyncio.run(
        probe_ed2k(peer.host, peer.port, FILE.ed2k, _probe_config(**kw), file_size=FILE.size)
    )


@contextmanager
def _peer_in_thread(**kw: Any) -> Iterator[Ed2kLabPeer]:
    """A lab peer served by its own event loop in a thread (the probe runs `asyncio.run`)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    peer = Ed2kLabPeer(A_IP, [FILE], user_hash=HASH_A, **kw)
    asyncio.run_coroutine_threadsafe(peer.start(), loop).result(5)
    try:
        yield peer
    finally:
        asyncio.run_coroutine_threadsafe(peer.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_a_probe_without_the_option_sends_no_source_request() -> None:
    sources = (_source(B_IP, 4662, HASH_B),)
    with _peer_in_thread(sources=sources) as peer:
        plain = _probe(peer)
        assert plain.outcome == "possession" and peer.source_requests == 0
        sent = _sent_by_us(peer)
        [request] = [x for x in sent if isinstance(x, m.MultiPacket)]
        assert m.EmuleOp.REQUESTSOURCES2 not in request.requests
        assert not any(isinstance(x, m.RequestSources2 | m.RequestSources) for x in sent)
        assert plain.sources == () and not plain.sources_requested and plain.sources_detail == ""

        peer.received.clear()
        asked = _probe(peer, source_exchange=True)
        [request] = [x for x in _sent_by_us(peer) if isinstance(x, m.MultiPacket)]
        assert m.EmuleOp.REQUESTSOURCES2 in request.requests  # in the one request batch
        assert request.sx2_version == 4 and peer.source_requests == 1
    assert asked.outcome == "possession" and asked.sources == sources
    assert asked.sources_requested and asked.sources_answered and asked.sources_version == 4
    assert asked.completion_ppm == plain.completion_ppm == 1_000_000


def test_a_peer_that_never_answers_costs_at_most_the_wait() -> None:
    with _peer_in_thread(sources=()) as peer:  # advertises SX2, has nothing to say (as aMule)
        result = _probe(peer, source_exchange=True, source_wait=0.6)
        assert peer.source_requests == 1
    assert result.outcome == "possession" and result.detail == "plain: file status: complete"
    assert result.sources_requested and not result.sources_answered and result.sources == ()
    assert "no ANSWERSOURCES2 within 0.6 s" in result.sources_detail
    assert 0.6 <= result.ended - result.started < 2.0


def test_a_peer_without_sx2_is_not_asked_and_costs_nothing() -> None:
    with _peer_in_thread() as peer:
        result = _probe(peer, source_exchange=True, source_wait=5.0)
        assert peer.source_requests == 0
        [request] = [x for x in _sent_by_us(peer) if isinstance(x, m.MultiPacket)]
        assert m.EmuleOp.REQUESTSOURCES2 not in request.requests
    assert result.outcome == "possession" and not result.sources_requested
    assert "does not advertise source exchange 2" in result.sources_detail
    assert result.ended - result.started < 2.0


def test_a_packed_answer_of_1000_sources_is_read_and_kept_within_the_cap() -> None:
    fakes = tuple(_source(f"{NET}{20 + i // 100}", 20_000 + i, bytes(16)) for i in range(1000))
    with _peer_in_thread(sources=fakes, pack_sources=True) as peer:
        full = _probe(peer, source_exchange=True)
        capped = _probe(peer, source_exchange=True, max_sources=10)
    answer = m.AnswerSources2(4, FILE.ed2k, fakes)
    # the lab peer did send it packed (0xD4): these sources compress
    assert encode_packet(answer.PROTOCOL, answer.OPCODE, answer.payload(), pack=True)[0] == 0xD4
    assert len(full.sources) == 1000 and full.sources == fakes
    assert capped.sources == fakes[:10] and capped.outcome == "possession"


def test_cli_source_exchange_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(tmp_path / "home")
    link = f"ed2k://|file|{FILE.name}|{FILE.size}|{FILE.ed2k.hex()}|/"
    low = m.Source(LOW_ID, 4662, *SERVER, LOW_HASH, 0)
    with _peer_in_thread(sources=(low, _source(*DEAD, DEAD_HASH))) as peer:
        args = ["--home", home, "sense", "ed2k", "--peer", peer.endpoint, "--ed2k", link]
        code = run([*args, "--bind", SENSOR_IP, "--source-exchange"])
    out = capsys.readouterr().out
    assert code == 0
    assert "possession proven for 1 peer(s)" in out
    assert (
        "source exchange: 1 peer answer(s), 2 claim(s) recorded; 1 new peer(s) probed in 1 "
        "follow-up round(s); 0 source(s) not followed" in out
    )
