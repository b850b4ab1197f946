"""Kad2 packets against a real amuled (Debian's aMule 2.3.3) on 127.0.18.1.

aMule's Kad runs only when switched on: with the lab's usual config (ConnectToKad=0) the daemon
drops every Kad packet (CKademlia::ProcessPacket does nothing without a running instance), which
the first test pins. The other tests start the lab with Kad on (lab/kad.py,
`AmuleLab(kad_ids=...)`: ConnectToKad=1, Autoconnect=1, an empty nodes.dat, and a
preferencesKad.dat holding a Kad id we chose) and check our codec against its answers:
BOOTSTRAP_RES (its id, TCP port, version 8, no contacts: aMule never takes loopback contacts),
HELLO_RES (Kad-form tags), KADEMLIA2_RES, and a source we publish coming back in SEARCH_RES with
the TAG_SOURCEIP that aMule itself wrote from our address. Finally `find_sources` runs end to end
against it.

Without amuled installed this skips with the reason locally; under CI (CI set) it fails.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from peerwatch.lab.amule import AmuleLab, amuled_available
from peerwatch.lab.kad import KAD_AMULE_NET
from peerwatch.protocols.ed2k.tags import Tag
from peerwatch.protocols.kad import packets as kp
from peerwatch.protocols.kad.packets import KadError
from peerwatch.transport.kad import KadSearchConfig, bootstrap_node, find_sources

TCP_BASE = 48620
# A Kad id whose four 32-bit chunks differ, so a chunk-order or byte-order slip shows.
KAD_ID = 0x0123_4567_89AB_CDEF_FEDC_BA98_7654_3210
OUR_ID = 0x5EED_0000_0000_0000_0000_0000_0000_0001
USER_HASH = hashlib.md5(b"peerwatch-kad-interop", usedforsecurity=False).digest()


def require_amuled() -> None:
    if amuled_available():
        return
    reason = "amuled not installed (Debian package amule-daemon)"
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI must run the interop tests)")
    pytest.skip(reason)


def _lab(folder: Path, kad_ids: dict[str, int] | None = None) -> AmuleLab:
    return AmuleLab(folder, peers=1, net=KAD_AMULE_NET, tcp_base=TCP_BASE, kad_ids=kad_ids)


KAD_OFF: dict[str, kp.KadMessage | None] = {}  # the Kad-off daemon's answer, kept by the fixture


@pytest.fixture(scope="module")
def kad_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AmuleLab]:
    """First the lab as it is (Kad off) for one bootstrap attempt, then, on the same subnet but
    never at the same time, the lab with Kad on for the other tests."""
    require_amuled()
    with _lab(Path(tmp_path_factory.mktemp("amule-kad-off"))) as off:
        peer = off.peers[0]
        udp = Udp(off.sensor_ip, (peer.ip, peer.udp_port))
        try:
            KAD_OFF["answer"] = udp.ask(kp.BootstrapReq(), kp.BootstrapRes, timeout=3.0)
        finally:
            udp.close()
    lab = _lab(Path(tmp_path_factory.mktemp("amule-kad")), kad_ids={"amule01": KAD_ID})
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()


class Udp:
    """A plain socket on the lab's sensor address, for one-packet exchanges."""

    def __init__(self, bind_ip: str, peer: tuple[str, int]) -> None:
        self.peer = peer
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((bind_ip, 0))

    def ask(self, msg: kp.KadMessage, want: type, timeout: float = 5.0) -> kp.KadMessage | None:
        self.sock.sendto(kp.encode_datagram(msg), self.peer)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                return None
            try:
                got = kp.decode_datagram(data)
            except KadError:
                continue
            if addr == self.peer and isinstance(got, want):
                return got
        return None

    def raw(self, seconds: float) -> list[bytes]:
        """Every datagram from the peer for `seconds`."""
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                break
            if addr == self.peer:
                out.append(data)
        return out

    def collect(self, msg: kp.KadMessage, seconds: float) -> list[kp.KadMessage]:
        """Send `msg`, then every valid Kad message from the peer for `seconds`."""
        self.sock.sendto(kp.encode_datagram(msg), self.peer)
        found = []
        for data in self.raw(seconds):
            try:
                found.append(kp.decode_datagram(data))
            except KadError:
                continue
        return found

    def close(self) -> None:
        self.sock.close()


def test_kad_off_daemon_ignores_bootstrap(kad_lab: AmuleLab) -> None:
    assert "answer" in KAD_OFF
    assert KAD_OFF["answer"] is None  # ConnectToKad=0: no Kad instance, every Kad packet dropped


async def test_bootstrap_res_from_real_amuled(kad_lab: AmuleLab) -> None:
    peer = kad_lab.peers[0]
    res = await bootstrap_node(
        peer.ip, peer.udp_port, bind_ip=kad_lab.sensor_ip, timeout=3.0, attempts=10
    )
    assert res is not None, "amuled with Kad on did not answer KADEMLIA2_BOOTSTRAP_REQ"
    assert res.node_id == KAD_ID  # the id we wrote into preferencesKad.dat
    assert res.tcp_port == peer.tcp_port
    assert res.version == kp.KADEMLIA_VERSION == 8
    assert res.contacts == ()  # loopback contacts never enter aMule's routing table


def test_hello_req_and_kademlia2_req(kad_lab: AmuleLab) -> None:
    peer = kad_lab.peers[0]
    udp = Udp(kad_lab.sensor_ip, (peer.ip, peer.udp_port))
    try:
        # Kad id 0: aMule then answers a version-8 hello in plain UDP (SendMyDetails; with any
        # other id it obfuscates the answer with a key made from that id, which we do not do).
        # No TAG_SOURCEUPORT: aMule would answer to that port instead of ours (AddContact2).
        got = udp.collect(kp.HelloReq(0, 4662, 8, ()), seconds=3.0)
        hello = [m for m in got if isinstance(m, kp.HelloRes)]
        assert len(hello) == 1
        res = hello[0]
        assert (res.node_id, res.tcp_port, res.version) == (KAD_ID, peer.tcp_port, 8)
        # TAG_KADMISCOPTIONS as a Kad-form tag: bit 1, TCP firewalled (no eD2k server, no Kad)
        assert kp.tag_int(res.tags, kp.TAG_KADMISCOPTIONS) == 0x02
        # then aMule asks us to check its TCP port (FirewalledCheck), naming its user hash
        checks = [m for m in got if isinstance(m, kp.FirewalledReq2)]
        assert len(checks) == 1
        assert checks[0].user_hash == peer.user_hash
        assert checks[0].tcp_port == peer.tcp_port
        time.sleep(0.5)
        req = kp.KadReq(kp.KADEMLIA_FIND_NODE, OUR_ID, KAD_ID)
        answer = udp.ask(req, kp.KadRes)
        assert isinstance(answer, kp.KadRes)
        assert answer.target == OUR_ID and answer.contacts == ()
        time.sleep(0.5)
        # a KADEMLIA2_REQ naming another receiver id gets no answer (ProcessKademlia2Request)
        assert udp.ask(kp.KadReq(2, OUR_ID, KAD_ID ^ 1), kp.KadRes, timeout=1.5) is None
    finally:
        udp.close()


def test_hello_with_our_id_is_answered_obfuscated(kad_lab: AmuleLab) -> None:
    peer = kad_lab.peers[0]
    udp = Udp(kad_lab.sensor_ip, (peer.ip, peer.udp_port))
    try:
        time.sleep(1.0)
        udp.sock.sendto(kp.encode_datagram(kp.HelloReq(OUR_ID, 4662, 8, ())), udp.peer)
        raw = udp.raw(seconds=3.0)
        assert raw, "no answer to HELLO_REQ"
        # the HELLO_RES is the one datagram that is not plain Kad: Kad UDP obfuscation
        obfuscated = [
            d for d in raw if d[0] not in (kp.OP_KADEMLIAHEADER, kp.OP_KADEMLIAPACKEDPROT)
        ]
        assert len(obfuscated) == 1
        with pytest.raises(KadError):
            kp.decode_datagram(obfuscated[0])
    finally:
        udp.close()


def _file_near_node() -> bytes:
    # aMule stores a publish only within SEARCHTOLERANCE of its id (or from a LAN address):
    # a file id that shares the node's first 32 bits always qualifies.
    return kp.id_to_hash(KAD_ID ^ 0xBEEF)


def test_publish_then_search_returns_amules_own_source_ip(kad_lab: AmuleLab) -> None:
    peer = kad_lab.peers[0]
    udp = Udp(kad_lab.sensor_ip, (peer.ip, peer.udp_port))
    file_id = kp.hash_to_id(_file_near_node())
    try:
        tags = (
            Tag.integer(kp.TAG_SOURCETYPE, 1),
            Tag.integer(kp.TAG_SOURCEPORT, 4662),
            Tag(kp.TAG_SOURCEUPORT, 0x08, 4672),
            Tag.integer(kp.TAG_FILESIZE, 1_234_567),
            Tag(kp.TAG_ENCRYPTION, 0x09, 0x01),
        )
        publish = kp.PublishSourceReq(file_id, kp.hash_to_id(USER_HASH), tags)
        ack = udp.ask(publish, kp.PublishRes)
        assert isinstance(ack, kp.PublishRes) and ack.file_id == file_id
        time.sleep(0.5)
        found = udp.ask(kp.SearchSourceReq(file_id, 0, 1_234_567), kp.SearchRes)
        assert isinstance(found, kp.SearchRes)
        assert (found.sender_id, found.target) == (KAD_ID, file_id)
        (entry,) = found.results
        assert kp.id_to_hash(entry.answer) == USER_HASH
        # TAG_SOURCEIP is written by aMule from the address it saw: our IP byte order is its own
        assert kp.kad_to_ip(kp.tag_int(entry.tags, kp.TAG_SOURCEIP) or 0) == kad_lab.sensor_ip
        assert kp.tag_int(entry.tags, kp.TAG_SOURCEPORT) == 4662
        assert kp.tag_int(entry.tags, kp.TAG_SOURCEUPORT) == 4672
        time.sleep(0.5)
        # another size: aMule filters the source out and sends nothing
        assert udp.ask(kp.SearchSourceReq(file_id, 0, 7), kp.SearchRes, timeout=1.5) is None
    finally:
        udp.close()


async def test_find_sources_end_to_end(kad_lab: AmuleLab) -> None:
    # depends on the source published by the previous test (module order), published again here
    # if this test runs alone
    peer = kad_lab.peers[0]
    file_hash = _file_near_node()
    udp = Udp(kad_lab.sensor_ip, (peer.ip, peer.udp_port))
    try:
        tags = (Tag.integer(kp.TAG_SOURCETYPE, 1), Tag.integer(kp.TAG_SOURCEPORT, 4662))
        publish = kp.PublishSourceReq(kp.hash_to_id(file_hash), kp.hash_to_id(USER_HASH), tags)
        assert udp.ask(publish, kp.PublishRes) is not None
    finally:
        udp.close()
    time.sleep(1.0)
    config = KadSearchConfig(timeout=3.0, linger=2.0, duration=20.0)
    result = await find_sources(
        [(peer.ip, peer.udp_port)], file_hash, None, bind_ip=kad_lab.sensor_ip, config=config
    )
    assert [(s.ip, s.tcp_port, s.user_hash) for s in result.sources] == [
        (kad_lab.sensor_ip, 4662, USER_HASH)
    ]
    kinds = [a.kind for a in result.node_answers]
    assert kinds[0] == "bootstrap" and "contacts" in kinds and "sources" in kinds
    assert all(a.node_id == f"{KAD_ID:032x}" for a in result.node_answers)
    assert result.malformed == 0 and result.ghosts == ()
