"""Source discovery through an eD2k server without real peers: the server transport and the
sensor against the in-process lab server (`lab.ed2k_server`) and in-process scripted peers on
127.0.16.x (real amuled peers logged into the lab server: tests/interop/test_ed2k_server_lab.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import cast

import pytest

from peerwatch.cli.main import run
from peerwatch.errors import ProtocolError
from peerwatch.evidence.log import EvidenceLog
from peerwatch.evidence.record import Observation
from peerwatch.lab.ed2k_server import DH768_P, PRIME_BYTES, LabEd2kServer, LabServerConfig
from peerwatch.protocols.bittorrent.mse import Rc4
from peerwatch.protocols.ed2k import messages as m
from peerwatch.protocols.ed2k import server as s
from peerwatch.protocols.ed2k.client import ClientIdentity
from peerwatch.protocols.ed2k.framing import PacketDecoder
from peerwatch.protocols.ed2k.obfuscation import MAGIC_SYNC
from peerwatch.sensors import ed2k as ed2k_sensor
from peerwatch.sensors.ed2k import (
    NO_ADDRESS,
    Ed2kFile,
    Ed2kPeer,
    Ed2kServer,
    Ed2kSweep,
    Ed2kSweepConfig,
    Ed2kSweepStats,
)
from peerwatch.transport.ed2k_probe import Ed2kProbeConfig
from peerwatch.transport.ed2k_server import Ed2kServerConfig, Ed2kServerResult, query_server
from peerwatch.transport.egress import EgressPolicy
from tests.protocols.ed2k.obfuscation_responder import Responder

SERVER_IP = "127.0.16.230"
SENSOR_IP = "127.0.16.231"
PEER_IP = "127.0.16.232"
CRYPT_PEER_IP = "127.0.16.233"
OTHER_CLIENT_IP = "127.0.16.234"
OURS = ClientIdentity(bytes.fromhex("5e45002233440e66778899aabbcc6f01"), supports_crypt=True)
PEER_HASH = bytes.fromhex("00112233440e66778899aabbccdd6fff")
CRYPT_PEER_HASH = bytes.fromhex("a0112233440e66778899aabbccdd6f0a")
FILE_HASH = bytes(range(16))
OTHER_HASH = bytes(range(16, 32))
SIZE = 25_000_000


def _config(**kw: object) -> Ed2kServerConfig:
    return Ed2kServerConfig(OURS.user_hash, bind_ip=SENSOR_IP, **kw)  # type: ignore[arg-type]


def _query(srv: LabEd2kServer, files: Sequence[s.FileQuery], **kw: object) -> Ed2kServerResult:
    return asyncio.run(_query_async(srv, files, **kw))


async def _query_async(
    srv: LabEd2kServer, files: Sequence[s.FileQuery], **kw: object
) -> Ed2kServerResult:
    return await query_server(srv.config.host, srv.port, files, _config(**kw))


def test_seeded_sources_come_back_with_user_hash_crypt_flags_and_low_ids() -> None:
    async def run() -> tuple[Ed2kServerResult, LabEd2kServer]:
        async with LabEd2kServer(LabServerConfig(host=SERVER_IP)) as srv:
            srv.seed_source(FILE_HASH, ip=PEER_IP, port=4662, user_hash=PEER_HASH, crypt_options=1)
            srv.seed_source(
                FILE_HASH, ip=CRYPT_PEER_IP, port=4663, user_hash=CRYPT_PEER_HASH, crypt_options=7
            )
            srv.seed_source(FILE_HASH, low_id=42, port=4664)
            files = [s.FileQuery(FILE_HASH, SIZE), s.FileQuery(OTHER_HASH, 1000)]
            return await _query_async(srv, files), srv

    result, srv = asyncio.run(run())
    assert result.outcome == "answered", result.detail
    assert result.client_id == s.ip_to_id(SENSOR_IP)  # the lab's high id: our address
    assert result.tcp_flags is not None and result.tcp_flags & s.SRV_TCPFLG_TCPOBFUSCATION
    assert result.server_name == "peerwatch lab server"
    assert any("server version" in line for line in result.messages)
    [login] = srv.logins
    assert login.ip == SENSOR_IP and login.login.user_hash == OURS.user_hash
    assert [r.obfuscated for _, r in srv.requests] == [True, True]  # GETSOURCES_OBFU
    assert [r.size for _, r in srv.requests] == [SIZE, 1000]
    first, second = result.files
    assert first.answered and first.obfuscated
    by_port = {x.port: x for x in first.sources}
    assert by_port[4662].ip == PEER_IP and by_port[4662].user_hash == PEER_HASH
    assert by_port[4662].crypt_options == 0x81 and not by_port[4662].requires_obfuscation
    assert by_port[4663].user_hash == CRYPT_PEER_HASH and by_port[4663].requires_obfuscation
    assert by_port[4664].low_id and by_port[4664].ip is None and by_port[4664].user_hash is None
    assert second.answered and second.sources == ()
    assert len(result.exchange_sha256) == 64


def test_a_silent_server_times_out_per_file() -> None:
    async def run() -> Ed2kServerResult:
        config = LabServerConfig(host=SERVER_IP, answer_empty=False)
        async with LabEd2kServer(config) as srv:
            srv.seed_source(FILE_HASH, ip=PEER_IP, port=4662)
            session = s.SessionConfig(answer_timeout=0.3)
            return await _query_async(
                srv, [s.FileQuery(FILE_HASH), s.FileQuery(OTHER_HASH)], session=session
            )

    result = asyncio.run(run())
    assert result.outcome == "answered"
    answered, silent = result.files
    assert answered.answered and [x.ip for x in answered.sources] == [PEER_IP]
    assert not silent.answered and silent.sources == ()


def test_refused_server_is_an_outcome_not_an_exception() -> None:
    async def run() -> Ed2kServerResult:
        srv = LabEd2kServer(LabServerConfig(host=SERVER_IP))
        await srv.start()
        await srv.stop()
        return await _query_async(srv, [s.FileQuery(FILE_HASH)])

    result = asyncio.run(run())
    assert result.outcome == "refused" and result.client_id is None
    assert [f.answered for f in result.files] == [False]


async def _client(
    srv: LabEd2kServer, login: s.LoginRequest, *messages: s.OfferFiles | s.SearchRequest
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, list[s.ServerMessageType]]:
    """A raw client: log in, send `messages`, return what the server said up to its ident."""
    reader, writer = await asyncio.open_connection(
        srv.config.host, srv.port, local_addr=(OTHER_CLIENT_IP, 0)
    )
    writer.write(login.encode() + b"".join(x.encode(pack=True) for x in messages))
    await writer.drain()
    decoder = s.server_decoder()
    got: list[s.ServerMessageType] = []
    while not any(isinstance(x, s.ServerIdent) for x in got):
        got += [s.decode(p) for p in decoder.feed(await reader.read(65536))]
    return reader, writer, got


def test_offered_files_become_sources_until_the_client_leaves() -> None:
    login = s.LoginRequest.build(
        PEER_HASH,
        tcp_port=4700,
        server_flags=s.SRVCAP_SUPPORTCRYPT | s.SRVCAP_REQUESTCRYPT | s.SRVCAP_REQUIRECRYPT,
    )
    offer = s.OfferFiles(
        (
            s.FileEntry.build(FILE_HASH, "benign-one.bin", SIZE, client_id=0xFBFBFBFB, port=0xFBFB),
            s.FileEntry.build(OTHER_HASH, "benign-two.bin", 1000),
        )
    )

    async def run() -> tuple[Ed2kServerResult, Ed2kServerResult, list[s.ServerMessageType]]:
        async with LabEd2kServer(LabServerConfig(host=SERVER_IP)) as srv:
            _reader, writer, got = await _client(srv, login, offer)
            assert await srv.wait_for_offers([FILE_HASH, OTHER_HASH], 1, 5.0)
            before = await _query_async(srv, [s.FileQuery(FILE_HASH, SIZE)])
            writer.close()
            await writer.wait_closed()
            for _ in range(50):
                if not srv.sources_of(FILE_HASH):
                    break
                await asyncio.sleep(0.02)
            after = await _query_async(srv, [s.FileQuery(FILE_HASH, SIZE)])
            return before, after, got

    before, after, got = asyncio.run(run())
    idchange = next(x for x in got if isinstance(x, s.IdChange))
    assert idchange.client_id == s.ip_to_id(OTHER_CLIENT_IP)
    [src] = before.files[0].sources
    # the login's port and id, never the markers of the offer; its crypt flags and user hash
    assert (src.ip, src.port) == (OTHER_CLIENT_IP, 4700)
    assert src.user_hash == PEER_HASH and src.crypt_options == 0x87
    assert after.files[0].sources == ()  # gone with its connection


def test_low_id_clients_and_keyword_search() -> None:
    login = s.LoginRequest.build(PEER_HASH, tcp_port=4701, server_flags=0)
    offer = s.OfferFiles((s.FileEntry.build(FILE_HASH, "Benign Holiday Video.bin", SIZE),))
    search = s.SearchRequest(s.keyword_query("holiday", "benign"))
    miss = s.SearchRequest(
        s.SearchBool(2, s.SearchKeyword(b"holiday"), s.SearchKeyword(b"video"))  # NOT
    )

    async def run() -> tuple[
        Ed2kServerResult, list[s.ServerMessageType], list[s.ServerMessageType]
    ]:
        config = LabServerConfig(host=SERVER_IP, low_id_ips=frozenset({OTHER_CLIENT_IP}))
        async with LabEd2kServer(config) as srv:
            reader, writer, got = await _client(srv, login, offer)
            assert await srv.wait_for_offers([FILE_HASH], 1, 5.0)
            writer.write(search.encode() + miss.encode())
            await writer.drain()
            decoder = s.server_decoder()
            answers: list[s.ServerMessageType] = []
            while len(answers) < 2:
                answers += [s.decode(p) for p in decoder.feed(await reader.read(65536))]
            result = await _query_async(srv, [s.FileQuery(FILE_HASH, SIZE)])
            writer.close()
            return result, got, answers

    result, got, answers = asyncio.run(run())
    idchange = next(x for x in got if isinstance(x, s.IdChange))
    assert idchange.low_id
    [src] = result.files[0].sources
    assert src.low_id and src.ip is None and src.port == 4701
    assert src.user_hash is None and src.crypt_options == 0  # it said it cannot obfuscate
    hit, nothing = answers
    assert isinstance(hit, s.SearchResult) and isinstance(nothing, s.SearchResult)
    [entry] = hit.files
    assert (entry.file_hash, entry.name, entry.size) == (
        FILE_HASH,
        "Benign Holiday Video.bin",
        SIZE,
    )
    assert nothing.files == ()


# --- the sensor ----------------------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
PEER = ClientIdentity(PEER_HASH, name="scripted", compat_client=0, version=(0, 50, 0))
CRYPT_PEER = ClientIdentity(
    CRYPT_PEER_HASH, name="crypt", compat_client=0, version=(0, 50, 0), supports_crypt=True
)


def _file_status_peer(asked: list[bytes]) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = PacketDecoder()
        msgs: list[m.Message] = []
        while not msgs:
            msgs += [m.decode(p) for p in decoder.feed(await reader.read(65536))]
        assert isinstance(msgs[0], m.Hello)
        writer.write(m.HelloAnswer(PEER.hello().body).encode())
        msgs = []
        while not msgs:
            msgs += [m.decode(p) for p in decoder.feed(await reader.read(65536))]
        assert isinstance(msgs[0], m.MultiPacket)
        asked.append(msgs[0].file_hash)
        writer.write(m.FileStatus(msgs[0].file_hash, m.PartStatus(0)).encode())
        await writer.drain()
        writer.close()

    return handle


def _crypt_required_peer(plain_refused: list[int]) -> Handler:
    """Requires obfuscation: hangs up on a plain HELLO, answers over the obfuscated stream."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.read(65536)
        if first[:1] == b"\xe3":
            plain_refused.append(1)
            writer.close()
            return
        responder = Responder(CRYPT_PEER_HASH)
        writer.write(responder.feed(first))
        decoder = PacketDecoder()
        seen = 0
        answered_hello = False
        while True:
            data = await reader.read(65536)
            if not data:
                break
            responder.feed(data)
            for p in decoder.feed(responder.payload[seen:]):
                msg = m.decode(p)
                if isinstance(msg, m.Hello) and not answered_hello:
                    answered_hello = True
                    hello = m.HelloAnswer(CRYPT_PEER.hello().body)
                    writer.write(responder.encrypt(hello.encode()))
                elif isinstance(msg, m.MultiPacket):
                    status = m.FileStatus(msg.file_hash, m.PartStatus(0))
                    writer.write(responder.encrypt(status.encode()))
            seen = len(responder.payload)
        writer.close()

    return handle


class _Log:
    def __init__(self) -> None:
        self.appended: list[Observation] = []

    def append(self, observations: Sequence[Observation]) -> list[int]:
        self.appended.extend(observations)
        return list(range(len(observations)))


def test_sweep_records_server_claims_and_probes_listed_sources() -> None:
    asked: list[bytes] = []
    plain_refused: list[int] = []

    async def run() -> tuple[Ed2kSweepStats, _Log, int, int]:
        peer = await asyncio.start_server(_file_status_peer(asked), PEER_IP, 0)
        crypt = await asyncio.start_server(_crypt_required_peer(plain_refused), CRYPT_PEER_IP, 0)
        peer_port = peer.sockets[0].getsockname()[1]
        crypt_port = crypt.sockets[0].getsockname()[1]
        log = _Log()
        async with peer, crypt, LabEd2kServer(LabServerConfig(host=SERVER_IP)) as srv:
            # the plain peer is listed for FILE_HASH only; the crypt peer requires obfuscation
            srv.seed_source(FILE_HASH, ip=PEER_IP, port=peer_port, user_hash=PEER_HASH)
            srv.seed_source(
                FILE_HASH,
                ip=CRYPT_PEER_IP,
                port=crypt_port,
                user_hash=CRYPT_PEER_HASH,
                crypt_options=s.CRYPT_SUPPORTED | s.CRYPT_REQUESTED | s.CRYPT_REQUIRED,
            )
            srv.seed_source(FILE_HASH, low_id=77, port=4665)
            srv.seed_source(OTHER_HASH, ip="192.0.2.7", port=4662)  # TEST-NET-1: never dialled
            sweep = Ed2kSweep(
                Ed2kSweepConfig(Ed2kProbeConfig(OURS, timeout=5.0, bind_ip=SENSOR_IP)),
                cast(EvidenceLog, log),
                EgressPolicy(),
            )
            stats = await sweep.sweep(
                [],
                [Ed2kFile(FILE_HASH, SIZE), Ed2kFile(OTHER_HASH, 1000)],
                [Ed2kServer(SERVER_IP, srv.port), Ed2kServer("192.0.2.8", 4661)],
            )
        return stats, log, peer_port, crypt_port

    stats, log, peer_port, crypt_port = asyncio.run(run())
    assert asked == [FILE_HASH]  # listed for one file, asked about that file only
    assert plain_refused == []  # the OBFU user hash let the probe obfuscate from the start
    assert stats.servers_asked == 1 and "192.0.2.8:4661" in stats.server_errors
    assert (stats.claims, stats.low_id_claims) == (4, 1)
    assert stats.refused_by_egress == 1  # the outside source (the server: a server error)
    assert stats.server_errors["192.0.2.8:4661"] == "outside the allowed networks"
    claims = [o for o in log.appended if o.method == "server-sources"]
    probes = [o for o in log.appended if o.method != "server-sources"]
    assert log.appended[: len(claims)] == claims  # claims first, then the probes
    assert all(o.outcome == "claim" and o.completion_ppm is None for o in claims)
    by_ip = {o.ip: o for o in claims}
    plain = by_ip[PEER_IP]
    assert plain.port == peer_port and plain.content_key == f"ed2k:{FILE_HASH.hex()}"
    # it did not say it supports obfuscation: the server gives no user hash for it
    assert plain.peer_id is None and plain.extra["user_hash"] is None
    assert plain.extra["crypt_options"] == 0
    assert plain.extra["server"] == f"{SERVER_IP}:{stats_port(claims)}"
    assert plain.extra["id_type"] == "high" and plain.extra["answer"] == "FOUNDSOURCES_OBFU"
    required = by_ip[CRYPT_PEER_IP]
    assert required.extra["requires_obfuscation"] is True
    assert required.extra["crypt_options"] == 0x87
    low = by_ip[NO_ADDRESS]
    assert low.port is None and low.extra["id_type"] == "low" and low.extra["client_id"] == 77
    assert low.extra["tcp_port"] == 4665
    assert by_ip["192.0.2.7"].content_key == f"ed2k:{OTHER_HASH.hex()}"  # recorded, not dialled
    assert sorted((o.ip, o.port, o.outcome) for o in probes) == sorted(
        [(PEER_IP, peer_port, "possession"), (CRYPT_PEER_IP, crypt_port, "possession")]
    )
    crypt_probe = next(o for o in probes if o.ip == CRYPT_PEER_IP)
    assert crypt_probe.extra["obfuscated"] is True and crypt_probe.peer_id == CRYPT_PEER_HASH.hex()
    assert stats.per_file == {
        f"ed2k:{FILE_HASH.hex()}": {(PEER_IP, peer_port), (CRYPT_PEER_IP, crypt_port)}
    }


def stats_port(claims: list[Observation]) -> int:
    return int(str(claims[0].extra["server"]).rsplit(":", 1)[1])


def test_given_peer_and_listed_source_are_probed_once_per_file() -> None:
    asked: list[bytes] = []

    async def run() -> Ed2kSweepStats:
        peer = await asyncio.start_server(_file_status_peer(asked), PEER_IP, 0)
        port = peer.sockets[0].getsockname()[1]
        async with peer, LabEd2kServer(LabServerConfig(host=SERVER_IP)) as srv:
            srv.seed_source(FILE_HASH, ip=PEER_IP, port=port, user_hash=PEER_HASH)
            sweep = Ed2kSweep(
                Ed2kSweepConfig(
                    Ed2kProbeConfig(OURS, timeout=5.0, bind_ip=SENSOR_IP, obfuscation="plain")
                ),
                cast(EvidenceLog, _Log()),
                EgressPolicy(),
            )
            return await sweep.sweep(
                [Ed2kPeer(PEER_IP, port)],
                [Ed2kFile(FILE_HASH, SIZE), Ed2kFile(OTHER_HASH, 1000)],
                [Ed2kServer(SERVER_IP, srv.port)],
            )

    stats = asyncio.run(run())
    # given: asked about both files; listed too: still once per file
    assert sorted(asked) == sorted([FILE_HASH, OTHER_HASH])
    assert stats.probes == 2 and stats.claims == 1


# --- the lab server's obfuscated (DH) server connections ----------------------------------------


class _DhClient:
    """The client side of aMule's client <-> server obfuscation (EncryptedStreamSocket.cpp
    StartNegotiation / Negotiate ONS_BASIC_SERVER_*), test-only, to run the lab server's side."""

    def __init__(self, magic: int = MAGIC_SYNC) -> None:
        self.a = int.from_bytes(bytes(range(1, 17)), "big")
        self.magic = magic
        self.send: Rc4 | None = None
        self.recv: Rc4 | None = None

    def start(self) -> bytes:
        g_a = pow(2, self.a, DH768_P).to_bytes(PRIME_BYTES, "big")
        return b"\x11" + g_a + b"\x03" + b"pad"

    def answer(self, data: bytes, payload: bytes) -> tuple[bytes, bytes]:
        """The server's DH answer in, our magic + method + first payload out (aMule delays its
        answer until the first payload); returns (bytes to send, the server's decrypted header)."""
        g_b = int.from_bytes(data[:PRIME_BYTES], "big")
        secret = pow(g_b, self.a, DH768_P).to_bytes(PRIME_BYTES, "big")
        self.send = Rc4(hashlib.md5(secret + b"\x22", usedforsecurity=False).digest())
        self.recv = Rc4(hashlib.md5(secret + b"\xcb", usedforsecurity=False).digest())
        header = self.recv.crypt(data[PRIME_BYTES:])
        out = self.send.crypt(struct.pack("<IBB", self.magic, 0, 2) + b"xy" + payload)
        return out, header


def test_obfuscated_login_through_the_dh_handshake() -> None:
    dh = _DhClient()
    login = s.LoginRequest.build(CRYPT_PEER_HASH, tcp_port=4702)

    async def run() -> tuple[list[s.ServerMessageType], bytes, LabEd2kServer]:
        async with LabEd2kServer(LabServerConfig(host=SERVER_IP)) as srv:
            reader, writer = await asyncio.open_connection(
                srv.config.host, srv.port, local_addr=(OTHER_CLIENT_IP, 0)
            )
            writer.write(dh.start())
            data = b""
            while len(data) < PRIME_BYTES + 7:
                data += await reader.read(65536)
            out, header = dh.answer(data, login.encode())
            writer.write(out)
            decoder = s.server_decoder()
            got: list[s.ServerMessageType] = []
            while not any(isinstance(x, s.ServerIdent) for x in got):
                chunk = await reader.read(65536)
                assert chunk
                assert dh.recv is not None
                got += [s.decode(p) for p in decoder.feed(dh.recv.crypt(chunk))]
            writer.close()
            return got, header, srv

    got, header, srv = asyncio.run(run())
    assert struct.unpack("<IBBB", header) == (MAGIC_SYNC, 0, 0, 0)
    assert any(isinstance(x, s.IdChange) for x in got)
    [record] = srv.logins
    assert record.obfuscated and record.login.user_hash == CRYPT_PEER_HASH


def test_a_wrong_obfuscation_magic_closes_the_connection() -> None:
    dh = _DhClient(magic=0x12345678)

    async def run() -> tuple[bytes, LabEd2kServer]:
        async with LabEd2kServer(LabServerConfig(host=SERVER_IP)) as srv:
            reader, writer = await asyncio.open_connection(
                srv.config.host, srv.port, local_addr=(OTHER_CLIENT_IP, 0)
            )
            writer.write(dh.start())
            data = b""
            while len(data) < PRIME_BYTES + 7:
                data += await reader.read(65536)
            writer.write(dh.answer(data, b"")[0])
            rest = await reader.read(65536)  # the server hangs up
            writer.close()
            return rest, srv

    rest, srv = asyncio.run(run())
    assert rest == b"" and srv.logins == []
    assert any("magic" in fault for fault in srv.faults)


def test_a_server_reset_is_an_outcome() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)  # the login
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # an RST, not a FIN

    async def run() -> Ed2kServerResult:
        server = await asyncio.start_server(reset, SERVER_IP, 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await query_server(SERVER_IP, port, [s.FileQuery(FILE_HASH)], _config())

    result = asyncio.run(run())
    assert result.outcome == "closed" and result.client_id is None
    assert "reset" in result.detail.lower(), result.detail
    assert [f.answered for f in result.files] == [False]


def test_one_failing_server_does_not_lose_the_others_claims(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = query_server

    async def flaky(host: str, port: int, *args: object, **kw: object) -> Ed2kServerResult:
        if port == 1:
            raise RuntimeError("a bug of ours")
        return await real(host, port, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(ed2k_sensor, "query_server", flaky)
    log = _Log()

    async def run() -> Ed2kSweepStats:
        async with LabEd2kServer(LabServerConfig(host=SERVER_IP)) as srv:
            srv.seed_source(FILE_HASH, low_id=5, port=4662)
            sweep = Ed2kSweep(
                Ed2kSweepConfig(Ed2kProbeConfig(OURS, timeout=5.0, bind_ip=SENSOR_IP)),
                cast(EvidenceLog, log),
                EgressPolicy(),
            )
            return await sweep.sweep(
                [],
                [Ed2kFile(FILE_HASH)],
                [Ed2kServer(SERVER_IP, 1), Ed2kServer(SERVER_IP, srv.port)],
            )

    stats = asyncio.run(run())
    assert stats.server_errors == {f"{SERVER_IP}:1": "RuntimeError: a bug of ours"}
    assert stats.claims == 1 and stats.low_id_claims == 1 and stats.probes == 0
    [claim] = log.appended
    assert (claim.method, claim.ip, claim.port) == ("server-sources", NO_ADDRESS, None)


def test_obfuscated_server_connection_end_to_end() -> None:
    async def run() -> tuple[Ed2kServerResult, LabEd2kServer]:
        async with LabEd2kServer(LabServerConfig(host=SERVER_IP)) as srv:
            srv.seed_source(FILE_HASH, ip=PEER_IP, port=4662, user_hash=PEER_HASH, crypt_options=1)
            result = await _query_async(srv, [s.FileQuery(FILE_HASH, SIZE)], obfuscation=True)
            return result, srv

    result, srv = asyncio.run(run())
    assert result.outcome == "answered", result.detail
    [record] = srv.logins
    assert record.obfuscated and record.login.user_hash == OURS.user_hash
    [src] = result.files[0].sources
    assert (src.ip, src.user_hash) == (PEER_IP, PEER_HASH)


def test_a_server_without_obfuscation_hangs_up_on_it() -> None:
    async def run() -> tuple[Ed2kServerResult, LabEd2kServer]:
        config = LabServerConfig(host=SERVER_IP, obfuscation=False)
        async with LabEd2kServer(config) as srv:
            result = await _query_async(srv, [s.FileQuery(FILE_HASH)], obfuscation=True)
            return result, srv

    result, srv = asyncio.run(run())
    assert result.outcome == "closed" and "obfuscation handshake" in result.detail
    assert srv.logins == [] and any("obfuscation is off" in f for f in srv.faults)


def test_initiator_refuses_a_wrong_magic() -> None:
    rng = iter(range(1, 10_000))
    initiator = s.ServerObfuscationInitiator(lambda n: bytes(next(rng) % 256 for _ in range(n)))
    first = initiator.start()
    assert first[0] not in (0xE3, 0xC5, 0xD4) and len(first) >= 1 + PRIME_BYTES + 1
    g_b = pow(2, 12345, DH768_P)
    shared = pow(int.from_bytes(first[1 : 1 + PRIME_BYTES], "big"), 12345, DH768_P)
    send = Rc4(s.dh_stream_key(shared, 203))
    answer = g_b.to_bytes(PRIME_BYTES, "big") + send.crypt(struct.pack("<IBBB", 0xDEAD, 0, 0, 0))
    with pytest.raises(ProtocolError, match="magic"):
        initiator.receive(answer)


def test_obfuscated_mode_obfuscates_the_server_connection_too() -> None:
    async def run() -> tuple[Ed2kSweepStats, LabEd2kServer]:
        async with LabEd2kServer(LabServerConfig(host=SERVER_IP)) as srv:
            srv.seed_source(FILE_HASH, low_id=9, port=4662)
            probe = Ed2kProbeConfig(OURS, timeout=5.0, bind_ip=SENSOR_IP, obfuscation="obfuscated")
            sweep = Ed2kSweep(Ed2kSweepConfig(probe), cast(EvidenceLog, _Log()), EgressPolicy())
            stats = await sweep.sweep([], [Ed2kFile(FILE_HASH)], [Ed2kServer(SERVER_IP, srv.port)])
            return stats, srv

    stats, srv = asyncio.run(run())
    assert stats.claims == 1 and stats.server_errors == {}
    assert [x.obfuscated for x in srv.logins] == [True]


# --- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ed2k", "00" * 16], "at least one --peer, --server or --kad-node"),
        (["--server", "127.0.16.230", "--ed2k", "00" * 16], "HOST:PORT"),
        (["--server", "127.0.16.230:0", "--ed2k", "00" * 16], "out of range"),
    ],
)
def test_cli_server_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = run(["--home", str(tmp_path / "home"), "sense", "ed2k", *args])
    captured = capsys.readouterr()
    assert code != 0
    assert message in captured.out + captured.err


def test_cli_server_outside_loopback_is_not_contacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "home")
    code = run(["--home", home, "sense", "ed2k", "--server", "192.0.2.9:4661", "--ed2k", "00" * 16])
    out = capsys.readouterr().out
    assert code == 0
    assert "servers: 0 asked; Kad: 0 source search(es); 0 source claim(s)" in out
    assert "server 192.0.2.9:4661" in out and "outside the allowed networks" in out
    assert "peer(s) outside" not in out  # no peer was refused: the server was
