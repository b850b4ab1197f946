"""Kad2 packets: golden bytes (CUInt128 byte order, IPs, tags), round trips and totality."""

from __future__ import annotations

import contextlib
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peerwatch.errors import ProtocolError
from peerwatch.lab.amule import lab_user_hash
from peerwatch.protocols.ed2k.tags import Tag, TagType, encode_tag
from peerwatch.protocols.ed2k.wire import Reader
from peerwatch.protocols.kad import packets as kp
from peerwatch.protocols.kad.packets import KadContact, KadError

HASH = bytes(range(16))  # 00 01 02 ... 0f
# CUInt128::SetValueBE then CFileDataIO::WriteUInt128: each 4-byte chunk little-endian.
HASH_ON_WIRE = bytes.fromhex("03020100070605040b0a09080f0e0d0c")


def test_uint128_byte_order_golden() -> None:
    kad_id = kp.hash_to_id(HASH)
    assert kad_id == 0x000102030405060708090A0B0C0D0E0F  # chunk 0 is the most significant
    assert kp.encode_id(kad_id) == HASH_ON_WIRE
    assert kp.id_to_hash(kad_id) == HASH  # CUInt128::ToByteArray gives the hash back
    assert kp.read_id(Reader(HASH_ON_WIRE)) == kad_id
    # one set bit: the most significant bit of the id is bit 7 of wire byte 3
    assert kp.encode_id(1 << 127) == bytes([0, 0, 0, 0x80]) + bytes(12)
    assert kp.encode_id(1) == bytes(12) + bytes([1, 0, 0, 0])


def test_xor_distance_golden() -> None:
    a = kp.hash_to_id(bytes.fromhex("ffffffff000000000000000000000000"))
    b = kp.hash_to_id(bytes.fromhex("0fffffff000000000000000000000001"))
    assert a ^ b == 0xF0000000_00000000_00000000_00000001
    # the distance's first chunk is what aMule compares to SEARCHTOLERANCE (Get32BitChunk(0))
    assert (a ^ b) >> 96 == 0xF0000000


def test_ip_is_host_order_little_endian() -> None:
    assert kp.ip_to_kad("1.2.3.4") == 0x01020304
    contact = KadContact(kp.hash_to_id(HASH), "1.2.3.4", 4672, 4662, 8)
    assert contact.encode() == HASH_ON_WIRE + bytes.fromhex("040302014012361208")
    assert kp.read_contact(Reader(contact.encode())) == contact


def test_kad_tag_is_not_the_compact_ed2k_form() -> None:
    tag = Tag.integer(kp.TAG_SOURCEPORT, 4662)
    assert encode_tag(tag) == bytes.fromhex("88fd3612")  # eD2k: 0x80 | type, 1-byte id
    assert kp.encode_kad_tag(tag) == bytes.fromhex("080100fd3612")  # Kad: <type><len 2><name>
    ip_tag = Tag.integer(kp.TAG_SOURCEIP, kp.ip_to_kad("1.2.3.4"))
    assert kp.encode_kad_tag(ip_tag) == bytes.fromhex("030100fe04030201")
    assert kp.read_kad_tag(Reader(bytes.fromhex("020200414202006162"))) == Tag(
        b"AB", TagType.STRING, b"ab"
    )


def test_compact_or_ed2k_only_tag_types_are_refused() -> None:
    for raw in ("88fd3612", "110100ff61", "07010002000000aaaa"):  # compact; STR1; BLOB
        with pytest.raises(KadError):
            kp.decode_datagram(b"\xe4\x44" + HASH_ON_WIRE * 2 + b"\x01" + bytes.fromhex(raw))


def test_golden_requests() -> None:
    file_id = kp.hash_to_id(HASH)
    assert kp.encode_datagram(kp.BootstrapReq()) == b"\xe4\x01"
    req = kp.KadReq(kp.KADEMLIA_FIND_VALUE, file_id, 1)
    assert kp.encode_datagram(req) == b"\xe4\x21\x02" + HASH_ON_WIRE + bytes(12) + b"\x01\0\0\0"
    search = kp.SearchSourceReq(file_id, 0, 9_728_000)
    assert kp.encode_datagram(search) == (
        b"\xe4\x34" + HASH_ON_WIRE + b"\0\0" + struct.pack("<Q", 9_728_000)
    )


def test_real_amuled_bootstrap_res_golden() -> None:
    # Captured from Debian's amuled 2.3.3 (Kad on, no contacts) on 127.0.18.1, TCP port 48620.
    wire = bytes.fromhex("e409a18354ed87a03113478cef93f71c21f8ecbd080000")
    msg = kp.decode_datagram(wire)
    assert isinstance(msg, kp.BootstrapRes)
    assert msg.node_id == 0xED5483A1_1331A087_93EF8C47_F8211CF7
    assert (msg.tcp_port, msg.version, msg.contacts) == (48620, 8, ())
    assert kp.encode_datagram(msg) == wire


def test_search_res_golden_and_source_tags() -> None:
    user = bytes.fromhex("00112233445566778899aabbccddeeff")
    tags = (
        Tag.integer(kp.TAG_SOURCEIP, kp.ip_to_kad("127.0.17.151")),
        Tag.integer(kp.TAG_SOURCETYPE, 1),
        Tag.integer(kp.TAG_SOURCEPORT, 4662),
        Tag(kp.TAG_SOURCEUPORT, TagType.UINT16, 4672),
        Tag(kp.TAG_ENCRYPTION, TagType.UINT8, 0x03),
    )
    msg = kp.SearchRes(5, kp.hash_to_id(HASH), (kp.SearchEntry(kp.hash_to_id(user), tags),))
    wire = kp.encode_datagram(msg)
    assert wire[:2] == b"\xe4\x3b"
    assert wire[2:18] == kp.encode_id(5)
    assert wire[18:34] == HASH_ON_WIRE
    assert wire[34:36] == b"\x01\x00"
    assert wire[36:52] == bytes.fromhex("3322110077665544bbaa9988ffeeddcc")
    assert wire[52] == 5  # one-byte tag count
    assert kp.decode_datagram(wire) == msg
    assert kp.tag_int(tags, kp.TAG_SOURCEPORT) == 4662


def test_large_packet_is_packed_like_amule() -> None:
    contacts = tuple(KadContact(i + 1, f"127.0.17.{i + 1}", 4672, 4662, 8) for i in range(20))
    msg = kp.BootstrapRes(7, 4662, 8, contacts)
    wire = kp.encode_datagram(msg)
    assert wire[0] == kp.OP_KADEMLIAPACKEDPROT  # over 200 bytes and compressible
    assert zlib.decompress(wire[2:]) == msg.encode()
    assert kp.decode_datagram(wire) == msg
    assert kp.encode_datagram(kp.Ping(), pack=True)[0] == kp.OP_KADEMLIAPACKEDPROT
    assert kp.decode_datagram(kp.encode_datagram(kp.Ping(), pack=True)) == kp.Ping()


def test_zlib_bomb_is_refused() -> None:
    bomb = zlib.compress(bytes(5_000_000))
    with pytest.raises(KadError, match="unpack"):
        kp.decode_datagram(b"\xe5\x09" + bomb)


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"\xe4",
        b"\xe3\x01",  # eD2k protocol byte
        b"\xe4\x09" + bytes(18) + b"\x01\x00",  # BOOTSTRAP_RES announcing a contact it lacks
        b"\xe4\x09" + bytes(18) + b"\xff\xff" + bytes(25),  # huge contact count
        b"\xe4\x29" + bytes(16) + b"\x02" + bytes(25),  # KADEMLIA2_RES: 2 announced, 1 sent
        b"\xe4\x3b" + bytes(32) + b"\xff\xff" + bytes(17),  # SEARCH_RES count over the bytes
        b"\xe4\x3b" + bytes(32) + b"\x01\x00" + bytes(16) + b"\xff",  # 255 tags in 0 bytes
        b"\xe4\x11" + bytes(16) + b"\x36\x12\x00\x00",  # HELLO with version 0
        b"\xe4\x01\x00",  # BOOTSTRAP_REQ with trailing bytes
        b"\xe5\x01not zlib",
        b"\xe4\x61\x01",  # PONG short
    ],
)
def test_malformed_is_kad_error(wire: bytes) -> None:
    with pytest.raises(KadError):
        kp.decode_datagram(wire)


def test_kad_error_is_a_protocol_error() -> None:
    assert issubclass(KadError, ProtocolError)


def test_unknown_opcode_is_kept() -> None:
    assert kp.decode_datagram(b"\xe4\x62abc") == kp.UnknownKad(0x62, b"abc")


def test_real_amuled_firewalled2_req_golden() -> None:
    # Sent by Debian's amuled 2.3.3 after our HELLO_REQ. Its user hash is the lab's
    # lab_user_hash(7, 0) = 0a91569c..., with eMule's marks at bytes 5 (14) and 14 (111): the
    # CUInt128 of an MD4 hash really is big-endian chunks, each written little-endian.
    wire = bytes.fromhex("e453ecbd9c56910a84a40eba8afea9ac8a6f701301")
    msg = kp.decode_datagram(wire)
    assert isinstance(msg, kp.FirewalledReq2)
    assert msg.tcp_port == 48620 and msg.connect_options == 0x01
    assert msg.user_hash == lab_user_hash(7, 0) == bytes.fromhex("0a91569cba0ea484aca9fe8a13706f8a")
    assert (msg.user_hash[5], msg.user_hash[14]) == (14, 111)
    assert kp.encode_datagram(msg) == wire


# --- hypothesis round trips ---------------------------------------------------------------------

ids = st.integers(min_value=0, max_value=kp.ID_MAX)
ips = st.integers(min_value=0, max_value=0xFFFFFFFF).map(kp.kad_to_ip)
u16s = st.integers(min_value=0, max_value=0xFFFF)
contacts = st.builds(KadContact, ids, ips, u16s, u16s, st.integers(1, 255))
names = st.one_of(st.integers(0, 255), st.binary(min_size=2, max_size=8), st.just(b""))


def _int_tag(name: int | bytes, t: int, bits: int) -> st.SearchStrategy[Tag]:
    return st.integers(0, (1 << bits) - 1).map(lambda v: Tag(name, t, v))


kad_tags = names.flatmap(
    lambda n: st.one_of(
        _int_tag(n, TagType.UINT8, 8),
        _int_tag(n, TagType.UINT16, 16),
        _int_tag(n, TagType.UINT32, 32),
        _int_tag(n, TagType.UINT64, 64),
        st.binary(max_size=40).map(lambda v: Tag(n, TagType.STRING, v)),
        st.binary(max_size=40).map(lambda v: Tag(n, TagType.BSOB, v)),
        st.binary(min_size=16, max_size=16).map(lambda v: Tag(n, TagType.HASH16, v)),
        st.floats(width=32, allow_nan=False).map(lambda v: Tag(n, TagType.FLOAT32, v)),
    )
)
tag_lists = st.lists(kad_tags, max_size=6).map(tuple)
messages = st.one_of(
    st.just(kp.BootstrapReq()),
    st.builds(
        kp.BootstrapRes, ids, u16s, st.integers(0, 255), st.lists(contacts, max_size=25).map(tuple)
    ),
    st.builds(kp.HelloReq, ids, u16s, st.integers(1, 255), tag_lists),
    st.builds(kp.HelloRes, ids, u16s, st.integers(1, 255), tag_lists),
    st.builds(kp.HelloResAck, ids, tag_lists),
    st.builds(kp.KadReq, st.integers(0, 255), ids, ids),
    st.builds(kp.KadRes, ids, st.lists(contacts, max_size=12).map(tuple)),
    st.builds(kp.SearchSourceReq, ids, u16s, st.integers(0, (1 << 64) - 1)),
    st.builds(
        kp.SearchRes,
        ids,
        ids,
        st.lists(st.builds(kp.SearchEntry, ids, tag_lists), max_size=5).map(tuple),
    ),
    st.builds(kp.PublishSourceReq, ids, ids, tag_lists),
    st.builds(kp.PublishRes, ids, st.integers(0, 255), st.none() | st.integers(0, 255)),
    st.just(kp.Ping()),
    st.builds(kp.Pong, u16s),
    st.builds(kp.FirewalledReq, u16s),
    st.builds(kp.FirewalledReq2, u16s, ids, st.integers(0, 255)),
)


@given(messages, st.sampled_from([None, True, False]))
@settings(max_examples=300)
def test_round_trip(msg: kp.KadMessage, pack: bool | None) -> None:
    assert kp.decode_datagram(kp.encode_datagram(msg, pack=pack)) == msg


@given(ids)
def test_id_round_trip(kad_id: int) -> None:
    assert kp.read_id(Reader(kp.encode_id(kad_id))) == kad_id
    assert kp.hash_to_id(kp.id_to_hash(kad_id)) == kad_id


# --- totality: random and mutated datagrams only ever give KadError -----------------------------


def _decode_total(data: bytes) -> None:
    with contextlib.suppress(KadError):
        kp.decode_datagram(data)


@given(
    st.sampled_from([0xE4, 0xE5]),
    st.sampled_from(
        [0x01, 0x09, 0x11, 0x19, 0x21, 0x22, 0x29, 0x34, 0x3B, 0x44, 0x4B, 0x50, 0x53, 0x60, 0x61]
    ),
    st.binary(max_size=300),
)
@settings(max_examples=500)
def test_random_payloads_are_total(protocol: int, opcode: int, payload: bytes) -> None:
    _decode_total(bytes([protocol, opcode]) + payload)


@given(messages, st.data())
@settings(max_examples=300)
def test_mutated_packets_are_total(msg: kp.KadMessage, data: st.DataObject) -> None:
    wire = bytearray(kp.encode_datagram(msg, pack=False))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "grow"]))
        if op == "flip" and len(wire) > 2:
            i = data.draw(st.integers(2, len(wire) - 1))
            wire[i] = data.draw(st.integers(0, 255))
        elif op == "cut":
            del wire[data.draw(st.integers(2, max(2, len(wire)))) :]
        else:
            wire += data.draw(st.binary(min_size=1, max_size=8))
    _decode_total(bytes(wire))
