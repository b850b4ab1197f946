"""Hypothesis strategies for every modelled eD2k message (shared by the message tests)."""

from __future__ import annotations

from hypothesis import strategies as st

from peerwatch.protocols.ed2k import messages as m
from peerwatch.protocols.ed2k.tags import Tag

hashes = st.binary(min_size=16, max_size=16)
u16s = st.integers(0, 0xFFFF)
u32s = st.integers(0, 0xFFFFFFFF)
small_tags = st.lists(
    st.one_of(
        st.builds(Tag.integer, st.integers(0, 255), st.integers(0, 2**64 - 1)),
        st.builds(Tag.string, st.integers(0, 255), st.binary(max_size=30)),
    ),
    max_size=6,
).map(tuple)
hello_bodies = st.builds(
    m.HelloBody, hashes, u32s, u16s, small_tags, u32s, u16s, st.binary(max_size=8)
)


@st.composite
def part_status(draw: st.DrawFn) -> m.PartStatus:
    count = draw(st.integers(0, 40))
    return m.PartStatus(
        count, draw(st.binary(min_size=(count + 7) // 8, max_size=(count + 7) // 8))
    )


@st.composite
def request_parts(draw: st.DrawFn, cls: type[m.RequestParts]) -> m.RequestParts:
    limit = (1 << (8 * cls.WIDTH)) - 1
    pairs = tuple((draw(st.integers(0, limit)), draw(st.integers(0, limit))) for _ in range(3))
    return cls(draw(hashes), pairs)


@st.composite
def sending_part(draw: st.DrawFn, cls: type[m.SendingPart]) -> m.SendingPart:
    data = draw(st.binary(min_size=1, max_size=64))
    start = draw(st.integers(0, (1 << (8 * cls.WIDTH)) - 1 - len(data)))
    return cls(draw(hashes), start, data)


@st.composite
def compressed_part(draw: st.DrawFn, cls: type[m.CompressedPart]) -> m.CompressedPart:
    data = draw(st.binary(min_size=1, max_size=64))
    return cls(
        draw(hashes),
        draw(st.integers(0, (1 << (8 * cls.WIDTH)) - 1)),
        draw(st.integers(len(data), 0xFFFFFFFF)),
        data,
    )


@st.composite
def answer_sources(draw: st.DrawFn) -> m.AnswerSources2:
    version = draw(st.integers(1, 4))
    sources = draw(
        st.lists(
            st.builds(
                m.Source,
                u32s,
                u16s,
                u32s,
                u16s,
                hashes if version >= 2 else st.none(),
                st.integers(0, 255) if version >= 4 else st.none(),
                st.just(version),
            ),
            max_size=5,
        )
    )
    return m.AnswerSources2(version, draw(hashes), tuple(sources))


@st.composite
def multipacket(draw: st.DrawFn) -> m.MultiPacket:
    ops = draw(st.lists(st.sampled_from(sorted(m._MULTI_REQUESTS)), max_size=5))
    has_sx2 = m.EmuleOp.REQUESTSOURCES2 in ops
    return m.MultiPacket(
        draw(hashes),
        tuple(ops),
        draw(st.none() | st.integers(0, 2**64 - 1)),
        draw(st.integers(0, 255)) if has_sx2 else m.SOURCE_EXCHANGE2_VERSION,
        draw(u16s) if has_sx2 else 0,
    )


@st.composite
def multipacket_answer(draw: st.DrawFn) -> m.MultiPacketAnswer:
    order = draw(
        st.lists(
            st.sampled_from([m.Op.REQFILENAMEANSWER, m.Op.FILESTATUS, m.EmuleOp.AICHFILEHASHANS]),
            unique=True,
        )
    )
    name = draw(st.binary(max_size=30)) if m.Op.REQFILENAMEANSWER in order else None
    status = draw(part_status()) if m.Op.FILESTATUS in order else None
    aich = draw(st.binary(min_size=20, max_size=20)) if m.EmuleOp.AICHFILEHASHANS in order else None
    return m.MultiPacketAnswer(draw(hashes), name, status, aich, tuple(order))


messages: st.SearchStrategy[m.Message] = st.one_of(
    st.builds(m.Hello, hello_bodies),
    st.builds(m.HelloAnswer, hello_bodies),
    st.builds(m.EmuleInfo, st.integers(0, 255), st.integers(0, 255), small_tags),
    st.builds(m.EmuleInfoAnswer, st.integers(0, 255), st.integers(0, 255), small_tags),
    *(
        st.builds(cls, hashes)
        for cls in (
            m.SetReqFileId,
            m.FileReqAnsNoFil,
            m.HashSetRequest,
            m.StartUploadReq,
            m.EndOfDownload,
            m.RequestSources,
            m.AichFileHashReq,
        )
    ),
    st.just(m.AcceptUploadReq()),
    st.just(m.CancelTransfer()),
    st.just(m.OutOfPartReqs()),
    st.builds(m.RequestFileName, hashes, st.binary(max_size=20)),
    st.builds(m.ReqFileNameAnswer, hashes, st.binary(max_size=60)),
    st.builds(m.FileStatus, hashes, part_status()),
    st.builds(m.HashSetAnswer, hashes, st.lists(hashes, max_size=8).map(tuple)),
    st.builds(m.QueueRank, u32s),
    st.builds(m.QueueRanking, u16s, st.binary(max_size=10)),
    request_parts(m.RequestParts),
    request_parts(m.RequestParts64),
    sending_part(m.SendingPart),
    sending_part(m.SendingPart64),
    compressed_part(m.CompressedPart),
    compressed_part(m.CompressedPart64),
    st.builds(m.RequestSources2, hashes, st.integers(0, 255), u16s),
    answer_sources(),
    st.builds(m.AichFileHashAns, hashes, st.binary(min_size=20, max_size=20)),
    multipacket(),
    multipacket_answer(),
)
