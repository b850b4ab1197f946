"""What a real aMule (Debian amuled 2.3.3) answers to our source request (SX2), pinned.

Three amuled daemons on 127.0.26.1-3 (`lab.amule`: roles multi, exact, obfuscated; complete
files only, no server, no Kad, nobody downloading from them) are probed from the lab's sensor
address with ``source_exchange=True``: OP_REQUESTSOURCES2 rides in the file request multipacket,
as aMule only answers it there.

What aMule does: it advertises SX2 in its HELLOANSWER (so the request is sent), answers the file
request with possession as always, and sends *no* OP_ANSWERSOURCES2 at all, so the probe waits
its `source_wait` and records "no ANSWERSOURCES2". The reason, in aMule's code:

- ClientTCPSocket.cpp, OP_MULTIPACKET: the sub-requests are handled in order. Our
  OP_REQUESTFILENAME comes first and calls `ProcessExtendedInfo`, which clears the client's
  upload part status (`m_upPartStatus.clear()`) and returns at once because we advertise
  extended requests version 0. Then OP_REQUESTSOURCES2 (first ask: `bNeverAskedBefore`) calls
  `reqfile->CreateSrcInfoPacket(...)`.
- KnownFile.cpp `CKnownFile::CreateSrcInfoPacket` (a complete shared file): the upload list is
  not empty (`SetUploadFileID` just added us), the file matches, but
  ``rcvstatus.size() != GetPartCount()`` (0 against 1 or more: "Impossible situation: different
  partcounts") returns NULL, and a NULL packet is not sent. Even past that check, the only
  sources it lists are *other* high-id clients uploading from it or on its upload queue
  (`US_UPLOADING` / `US_ONUPLOADQUEUE`), and this lab has none. A second ask by the same client
  within SOURCECLIENTREASKS (40 min) is not even tried.

The second test shows it: with another client downloading from the peer, the same multipacket
with REQUESTSOURCES2 *first* gets an ANSWERSOURCES2 listing that client, while the client core's
order (REQUESTFILENAME, SETREQFILEID, REQUESTSOURCES2) gets nothing. So a complete-file aMule
source gives our probe no sources as long as the core asks in that order (with REQUESTSOURCES2
first it lists its other high-id downloaders, and the first test still gets nothing: there are
none). By aMule's code (not exercised here), an unfinished download
(`CPartFile::CreateSrcInfoPacket`, no part-count check while our part status is unknown) lists
the sources it downloads from. The sensor must therefore never depend on an answer: the first
test pins that the possession outcome, completion and identity are exactly what the probe
records without the option, and that the wait is bounded by `source_wait`.

Without amuled installed this skips with the reason locally; under CI (CI set) it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from peerwatch.lab.amule import AmuleLab, AmulePeer
from peerwatch.protocols.ed2k import messages as m
from peerwatch.protocols.ed2k.client import ClientConfig, ClientConnection, ClientIdentity
from peerwatch.protocols.ed2k.framing import PacketDecoder
from peerwatch.transport.ed2k_probe import Ed2kProbeConfig, Ed2kProbeResult, probe_ed2k
from tests.interop.test_ed2k_lab import require_amuled

NET = "127.0.26."
TCP_BASE = 51620
WAIT = 2.0
OURS = bytes.fromhex("5c26a0b1c20e0d0e0f10111213146f26")  # one user hash for the sensor address


@pytest.fixture(scope="module")
def amule_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AmuleLab]:
    require_amuled()
    lab = AmuleLab(Path(tmp_path_factory.mktemp("amule-sx")), peers=3, net=NET, tcp_base=TCP_BASE)
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()
    assert lab.running() == []


def _config(lab: AmuleLab, source_exchange: bool) -> Ed2kProbeConfig:
    return Ed2kProbeConfig(
        ClientIdentity(OURS, supports_crypt=True),
        connect_timeout=3.0,
        timeout=20.0,
        bind_ip=lab.sensor_ip,
        source_exchange=source_exchange,
        source_wait=WAIT,
    )


async def _probe_all(
    lab: AmuleLab, source_exchange: bool
) -> dict[tuple[str, str], Ed2kProbeResult]:
    config = _config(lab, source_exchange)

    async def one_peer(peer: AmulePeer) -> list[tuple[tuple[str, str], Ed2kProbeResult]]:
        out = []
        for key in peer.shares:  # one connection at a time per peer (aMule's thief check)
            f = lab.files[key]
            result = await probe_ed2k(
                peer.ip,
                peer.tcp_port,
                f.ed2k,
                config,
                user_hash=peer.user_hash,
                file_size=f.size,
            )
            out.append(((peer.name, key), result))
        return out

    batches = await asyncio.gather(*(one_peer(p) for p in lab.peers))
    return dict(pair for batch in batches for pair in batch)


def test_amuled_sends_no_source_answer_and_the_outcome_is_unchanged(amule_lab: AmuleLab) -> None:
    lab = amule_lab
    assert [p.role for p in lab.peers] == ["multi", "exact", "obfuscated"]
    # First ask of each (peer, file) with the option: aMule's `bNeverAskedBefore` holds for the
    # first, so the first answer (or its absence) is CreateSrcInfoPacket's, not the reask timer's.
    asked = asyncio.run(_probe_all(lab, source_exchange=True))
    plain = asyncio.run(_probe_all(lab, source_exchange=False))
    expected = {(p.name, k) for p in lab.peers for k in p.shares}
    assert set(asked) == set(plain) == expected
    for pair, result in asked.items():
        peer = next(p for p in lab.peers if p.name == pair[0])
        # aMule advertises SX2 in its HELLOANSWER, so the request was sent ...
        assert result.hello is not None and result.hello.supports_source_exchange2, pair
        assert result.sources_requested, pair
        # ... and it never answers it: no ANSWERSOURCES2, the probe waited its bound
        assert not result.sources_answered and result.sources == (), (pair, result)
        assert (
            result.sources_detail
            == f"asked; no ANSWERSOURCES2 within {WAIT:g} s of the file status"
        )
        took = result.ended - result.started
        assert WAIT <= took < WAIT + 5.0, (pair, took)
        # the possession outcome is exactly the one without the option
        without = plain[pair]
        assert result.outcome == without.outcome == "possession", (pair, result.detail)
        assert result.completion_ppm == without.completion_ppm == 1_000_000
        # auto mode: the user hash is known, so both went obfuscated (the wait runs decrypted)
        assert result.obfuscated and without.obfuscated
        assert result.hello.user_hash == peer.user_hash
        assert not without.sources_requested and without.sources_detail == ""
        assert without.ended - without.started < WAIT


# --- why: the order of the sub-requests ----------------------------------------------------------

DOWNLOADER_IP, DOWNLOADER = NET + "201", bytes.fromhex("7a26a0b1c20e0d0e0f10111213146f7a")
REORDERED_IP, REORDERED = NET + "202", bytes.fromhex("7b26a0b1c20e0d0e0f10111213146f7b")
PROBE_IP, PROBE = NET + "203", bytes.fromhex("7c26a0b1c20e0d0e0f10111213146f7c")


async def _session(
    peer: AmulePeer, bind: str, identity: ClientIdentity, batch: list[m.Message], wait: float
) -> tuple[asyncio.StreamWriter, list[m.Message]]:
    """HELLO, then `batch` in one write; what the peer sent within `wait` seconds of it. The
    connection is left open (the caller closes it)."""
    reader, writer = await asyncio.open_connection(peer.ip, peer.tcp_port, local_addr=(bind, 0))
    decoder = PacketDecoder()
    got: list[m.Message] = []

    async def read_for(seconds: float, until_hello: bool) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while data := await reader.read(65536):
                    got.extend(m.decode(p) for p in decoder.feed(data))
                    if until_hello and any(isinstance(x, m.HelloAnswer) for x in got):
                        return

    writer.write(identity.hello().encode())
    await writer.drain()
    await read_for(5.0, until_hello=True)
    assert any(isinstance(x, m.HelloAnswer) for x in got), got
    writer.write(b"".join(x.encode() for x in batch))
    await writer.drain()
    await read_for(wait, until_hello=False)
    return writer, got


def _client_asks_sources_first() -> bool:
    """Whether `ClientConnection` puts REQUESTSOURCES2 before REQUESTFILENAME in its multipacket
    (asked of the sans-IO core directly, against an SX2-advertising HELLOANSWER)."""
    conn = ClientConnection(
        ClientIdentity(PROBE), bytes(16), 0.0, config=ClientConfig(request_sources=True)
    )
    conn.start(0.0)
    conn.data_to_send()
    conn.receive(m.HelloAnswer(ClientIdentity(DOWNLOADER).hello().body).encode(), 0.0)
    [request] = [m.decode(p) for p in PacketDecoder().feed(conn.data_to_send())]
    assert isinstance(request, m.MultiPacket)
    ops = list(request.requests)
    return ops.index(m.EmuleOp.REQUESTSOURCES2) < ops.index(m.Op.REQUESTFILENAME)


def test_amuled_answers_only_a_source_request_that_comes_before_the_file_name_request(
    amule_lab: AmuleLab,
) -> None:
    """With another (high-id) client downloading from it, aMule lists that client, but only to a
    multipacket whose REQUESTSOURCES2 comes before REQUESTFILENAME: after it, our extended
    requests version 0 has cleared our upload part status and CreateSrcInfoPacket's part-count
    check returns NULL. Each asker is a fresh client (own address and user hash), so aMule's
    reask timer (SOURCECLIENTREASKS) plays no part."""
    lab = amule_lab
    peer = lab.peers[0]  # role multi: plain streams accepted
    f = lab.files["small-1"]
    # a client id that is the downloader's address (a high id, as a connected client has)
    downloader = ClientIdentity(
        DOWNLOADER, client_id=int.from_bytes(ipaddress.IPv4Address(DOWNLOADER_IP).packed, "little")
    )
    file_request = m.MultiPacket(f.ed2k, (m.Op.REQUESTFILENAME, m.Op.SETREQFILEID), f.size)
    sx_first = m.MultiPacket(
        f.ed2k,
        (m.EmuleOp.REQUESTSOURCES2, m.Op.REQUESTFILENAME, m.Op.SETREQFILEID),
        f.size,
    )

    async def main() -> tuple[list[m.Message], Ed2kProbeResult, list[m.Message]]:
        # the downloader asks for an upload slot and stays connected (US_UPLOADING / on queue)
        held, got = await _session(
            peer, DOWNLOADER_IP, downloader, [file_request, m.StartUploadReq(f.ed2k)], 2.0
        )
        try:
            config = dataclasses.replace(
                _config(lab, source_exchange=True),
                identity=ClientIdentity(PROBE, supports_crypt=True),
                bind_ip=PROBE_IP,
                obfuscation="plain",
            )
            ours = await probe_ed2k(peer.ip, peer.tcp_port, f.ed2k, config, file_size=f.size)
            other, answers = await _session(
                peer, REORDERED_IP, ClientIdentity(REORDERED), [sx_first], WAIT
            )
            other.close()
        finally:
            held.close()
        return got, ours, answers

    got, ours, answers = asyncio.run(main())
    assert any(isinstance(x, m.AcceptUploadReq | m.QueueRanking | m.QueueRank) for x in got), got
    # our probe: possession, and sources only if the client core asks for them first
    assert ours.outcome == "possession" and ours.sources_requested, ours.detail
    if _client_asks_sources_first():
        assert ours.sources_answered and len(ours.sources) == 1, ours.sources_detail
        assert ours.sources[0].ip == DOWNLOADER_IP and ours.sources[0].user_hash == DOWNLOADER
    else:  # (REQUESTFILENAME, SETREQFILEID, REQUESTSOURCES2): nothing, as explained above
        assert not ours.sources_answered and ours.sources == (), ours.sources_detail
    # the same request with REQUESTSOURCES2 first: ANSWERSOURCES2 (v4) listing the downloader,
    # sent before the MULTIPACKETANSWER (ClientTCPSocket.cpp sends it inside the loop)
    kinds = [type(x).__name__ for x in answers]
    assert kinds == ["HelloAnswer", "AnswerSources2", "MultiPacketAnswer"], kinds
    [answer] = [x for x in answers if isinstance(x, m.AnswerSources2)]
    assert answer.version == 4 and answer.file_hash == f.ed2k
    [source] = answer.sources
    assert source.ip == DOWNLOADER_IP and source.user_hash == DOWNLOADER
    assert source.crypt_options == 0 and not source.low_id
