"""The eD2k sensor without real peers: user hash file, observations, the probe driver against an
in-process scripted peer on 127.0.0.1 (real aMule peers: tests/interop/test_ed2k_lab.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import cast

import pytest

from peerwatch.evidence.log import EvidenceLog
from peerwatch.evidence.record import POSSESSION_METHODS, Observation
from peerwatch.protocols.ed2k import messages as m
from peerwatch.protocols.ed2k.client import ClientIdentity
from peerwatch.protocols.ed2k.framing import PacketDecoder
from peerwatch.sensors.ed2k import (
    USER_HASH_FILE,
    Ed2kFile,
    Ed2kPeer,
    Ed2kSweep,
    Ed2kSweepConfig,
    Ed2kSweepStats,
    load_user_hash,
    result_observation,
)
from peerwatch.transport.ed2k_probe import Ed2kProbeConfig, Ed2kProbeResult, probe_ed2k
from peerwatch.transport.egress import EgressPolicy

PEER_HASH = bytes.fromhex("00112233440e66778899aabbccdd6fff")
FILE_HASH = bytes(range(16))
SIZE = 25_000_000  # 3 eD2k parts
OURS = ClientIdentity(bytes(16), supports_crypt=True)
PEER = ClientIdentity(
    PEER_HASH,
    name="scripted",
    tcp_port=4662,
    udp_port=4672,
    client_id=0x7F000001,
    compat_client=0,
    version=(0, 50, 0),
)


def test_user_hash_is_created_once_and_kept(tmp_path: Path) -> None:
    first = load_user_hash(tmp_path / "keys")
    assert len(first) == 16 and first[5] == 14 and first[14] == 111
    assert load_user_hash(tmp_path / "keys") == first
    assert (tmp_path / "keys" / USER_HASH_FILE).read_text().strip() == first.hex()
    other = load_user_hash(tmp_path / "other")
    assert other != first


Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_packet(reader: asyncio.StreamReader, decoder: PacketDecoder) -> m.Message:
    while True:
        packets = decoder.feed(await reader.read(65536))
        if packets:
            return m.decode(packets[0])


def _scripted(answer: m.Message | None) -> Answer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = PacketDecoder()
        hello = await _read_packet(reader, decoder)
        assert isinstance(hello, m.Hello) and hello.body.user_hash == OURS.user_hash
        writer.write(m.HelloAnswer(PEER.hello().body).encode())
        await writer.drain()
        request = await _read_packet(reader, decoder)
        assert isinstance(request, m.MultiPacket) and request.file_hash == FILE_HASH
        if answer is not None:
            writer.write(answer.encode())
            await writer.drain()
        writer.close()

    return handle


def _probe(handle: Answer) -> Ed2kProbeResult:
    async def run() -> Ed2kProbeResult:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            config = Ed2kProbeConfig(OURS, timeout=5.0, bind_ip="127.0.0.1")
            return await probe_ed2k("127.0.0.1", port, FILE_HASH, config, file_size=SIZE)

    return asyncio.run(run())


def test_partial_file_status_is_possession_with_completion() -> None:
    status = m.PartStatus.from_parts([True, False, True])
    result = _probe(_scripted(m.FileStatus(FILE_HASH, status)))
    assert result.outcome == "possession"
    assert result.completion_ppm == 666_666  # 2 of 3 parts
    obs = result_observation(result)
    assert obs.method == "file-status" and obs.method in POSSESSION_METHODS
    assert obs.outcome == "possession"
    assert obs.content_key == f"ed2k:{FILE_HASH.hex()}"
    assert obs.peer_id == PEER_HASH.hex()
    assert obs.client == "eMule 0.50.0"
    assert obs.completion_ppm == 666_666
    assert obs.extra["client_id"] == 0x7F000001 and obs.extra["id_type"] == "high"
    assert obs.extra["tcp_port"] == 4662 and obs.extra["udp_port"] == 4672
    assert obs.extra["part_count"] == 3 and obs.extra["parts_held"] == 2
    assert obs.extra["obfuscated"] is False
    assert obs.exchange_sha256 is not None and len(obs.exchange_sha256) == 64


def test_no_file_answer_is_recorded_and_is_not_possession() -> None:
    result = _probe(_scripted(m.FileReqAnsNoFil(FILE_HASH)))
    obs = result_observation(result)
    assert (obs.method, obs.outcome) == ("no-file", "no-file")
    assert obs.method not in POSSESSION_METHODS
    assert obs.completion_ppm is None
    assert obs.peer_id == PEER_HASH.hex()


def test_hang_up_after_hello_is_a_hello_observation() -> None:
    obs = result_observation(_probe(_scripted(None)))
    assert (obs.method, obs.outcome) == ("hello", "closed")
    assert obs.completion_ppm is None


def test_wrong_part_count_is_a_protocol_error_not_possession() -> None:
    bad = m.FileStatus(FILE_HASH, m.PartStatus.from_parts([True] * 5))
    obs = result_observation(_probe(_scripted(bad)))
    assert (obs.method, obs.outcome) == ("hello", "protocol-error")
    assert "5 parts" in str(obs.extra["detail"])


def test_refused_connection_is_a_connect_observation() -> None:
    async def run() -> Ed2kProbeResult:
        server = await asyncio.start_server(_scripted(None), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        config = Ed2kProbeConfig(OURS, timeout=5.0, bind_ip="127.0.0.1")
        return await probe_ed2k("127.0.0.1", port, FILE_HASH, config)

    obs = result_observation(asyncio.run(run()))
    assert (obs.method, obs.outcome) == ("connect", "refused")
    assert obs.peer_id is None and obs.client is None


def test_obfuscated_mode_without_user_hash_does_not_connect() -> None:
    config = Ed2kProbeConfig(OURS, obfuscation="obfuscated")
    result = asyncio.run(probe_ed2k("127.0.0.1", 9, FILE_HASH, config))
    assert result.outcome == "not-tried" and result.hello is None
    assert "no user hash" in result.detail


@pytest.mark.parametrize("mode", ["sometimes"])
def test_unknown_obfuscation_mode_is_refused(mode: str) -> None:
    with pytest.raises(ValueError, match="obfuscation mode"):
        asyncio.run(probe_ed2k("127.0.0.1", 9, FILE_HASH, Ed2kProbeConfig(OURS, obfuscation=mode)))


class _Log:
    """Stands in for the evidence log: keeps what the sweep appends."""

    def __init__(self) -> None:
        self.appended: list[Observation] = []

    def append(self, observations: Sequence[Observation]) -> list[int]:
        self.appended.extend(observations)
        return list(range(len(observations)))


def test_sweep_asks_each_address_once_and_respects_egress() -> None:
    status = m.PartStatus(0)
    asked: list[int] = []

    async def run() -> tuple[Ed2kSweepStats, _Log, int]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            asked.append(1)
            await _scripted(m.FileStatus(FILE_HASH, status))(reader, writer)

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        log = _Log()
        async with server:
            sweep = Ed2kSweep(
                Ed2kSweepConfig(Ed2kProbeConfig(OURS, timeout=5.0, bind_ip="127.0.0.1")),
                cast(EvidenceLog, log),
                EgressPolicy(),
            )
            peers = [
                Ed2kPeer("127.0.0.1", port),
                Ed2kPeer("127.0.0.1", port),  # the same address twice: asked once
                Ed2kPeer("192.0.2.1", 4662),  # TEST-NET-1, outside loopback: never contacted
            ]
            stats = await sweep.sweep(peers, [Ed2kFile(FILE_HASH, SIZE)])
        return stats, log, port

    stats, log, port = asyncio.run(run())
    assert len(asked) == 1
    assert stats.refused_by_egress == 1
    assert (stats.probes, stats.proven, stats.observations) == (1, 1, 1)
    assert stats.per_file == {f"ed2k:{FILE_HASH.hex()}": {("127.0.0.1", port)}}
    [obs] = log.appended
    assert (obs.method, obs.outcome, obs.completion_ppm) == ("file-status", "possession", 1_000_000)
