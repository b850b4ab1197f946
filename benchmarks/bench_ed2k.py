"""eD2k benchmark: packets decoded per second on one core, and probes per second.

    python benchmarks/bench_ed2k.py [--smoke] [--out docs/benchmarks.md] [--no-amule]

Two measurements, each with a baseline taken in the same run:

1. Decoding: the packets a sensor receives from eMule/aMule peers, as one byte stream fed to
   `framing.PacketDecoder` in 64 KiB reads (what one socket read gives the probe) and each packet
   through `messages.decode`, single-threaded, in memory: HELLOANSWER (aMule-like tags),
   MULTIPACKETANSWER (name, part status, AICH hash), FILESTATUS (a 3-part and a 400-part bitmap),
   packed (0xD4, zlib) ANSWERSOURCES2 with 200 version-4 sources, and SENDINGPART (10,240-byte
   blocks, the size eMule and aMule cut an upload into). Baseline: the floor for any decoder of
   the same bytes, a minimal parse with `struct` (walk the 6-byte headers, slice each payload,
   inflate the packed ones with `zlib.decompress`, unpack the fixed fields of each opcode with one
   `struct.unpack_from`), with no checks and no objects.
2. Probes: one `Ed2kSweep` (HELLO, file request, answer; one observation per probe, appended to a
   SQLite evidence log) against real aMule peers, `AmuleLab(peers=5, net="127.0.21.",
   tcp_base=50620)` probed from `lab.sensor_ip` for every watched file of the lab (the obfuscated
   peer with its user hash), and against the in-process control peer of `lab.hostile_ed2k`
   (5 listening ports on 127.0.21.10, sharing 4 files of the same sizes), the same shape of
   sweep; probes per second, each probe's latency, and the control / aMule ratio. A last row
   gives the sensor's own capacity: the control on 100 ports, probed 100 at a time.

Only loopback addresses in 127.0.21.0/24 are used, only towards processes this script starts.
`--smoke` runs small sizes in seconds for CI and writes the section only when `--out` is given.
Without amuled (or with `--no-amule`) the aMule row is skipped, and the output says so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import struct
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peerwatch.evidence import record
from peerwatch.evidence.keys import load_or_create
from peerwatch.evidence.log import EvidenceLog, iter_records
from peerwatch.lab.amule import AmuleLab, amuled_available, amuled_version
from peerwatch.lab.hostile_ed2k import CONTROL, ControlFile, HostileEd2kConfig, HostileEd2kLab
from peerwatch.protocols.ed2k import messages as m
from peerwatch.protocols.ed2k.client import ClientIdentity
from peerwatch.protocols.ed2k.framing import HEADER_SIZE, PacketDecoder, Protocol, encode_packet
from peerwatch.sensors.ed2k import Ed2kFile, Ed2kPeer, Ed2kSweep, Ed2kSweepConfig
from peerwatch.storage.database import make_engine, migrate, sqlite_url
from peerwatch.transport.ed2k_probe import Ed2kProbeConfig
from peerwatch.transport.egress import EgressPolicy
from report import DEFAULT_PATH, machine_info, write_section

SEED = 20240721
NET = "127.0.21."  # every address of this benchmark (the test suite's hostile peers: 127.0.20.x)
TCP_BASE = 50620
CONTROL_SOURCE = f"{NET}201"  # where the sweeps of the control probe from
READ = 64 * 1024  # transport.wire_stream.READ_SIZE
MAX_STREAM = 64 << 20  # most bytes in one decode stream
BLOCK = 10_240  # aMule/eMule cut each requested block into packets of this many data bytes
#: The sensor's user hash for this benchmark: one per source address (aMule bans a second).
USER_HASH = bytes.fromhex("b3c1e2d4a50e66778899aabbccdd6f07")


def best_of(rounds: int, fn: Callable[[], object]) -> tuple[float, float]:
    """Shortest wall time and shortest thread CPU time of `rounds` calls of `fn`."""
    wall = cpu = float("inf")
    for _ in range(rounds):
        c0, t0 = time.thread_time(), time.perf_counter()
        fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.thread_time() - c0)
    return wall, cpu


# --- 1. decoding ---------------------------------------------------------------------------------


def packet_mix(rng: random.Random) -> dict[str, list[bytes]]:
    """One probe-and-download session's worth of packets per kind, as they come on the wire."""
    file_hash = rng.randbytes(16)
    peer = ClientIdentity(
        rng.randbytes(16),
        name="aMule user",
        tcp_port=4662,
        client_id=0,
        udp_port=4672,
        compat_client=3,
        version=(2, 3, 3),
        supports_crypt=True,
    )
    three = m.PartStatus.from_parts([True, False, True])
    many = m.PartStatus.from_parts([rng.random() < 0.7 for _ in range(400)])
    sources = tuple(
        m.Source(
            rng.randrange(1 << 24, 1 << 32),
            4662,
            0,
            0,
            rng.randbytes(16),
            rng.choice((0, 1, 3)),
            4,
        )
        for _ in range(200)
    )
    answer_sources = m.AnswerSources2(4, file_hash, sources)
    packed = _packed(answer_sources)
    data = rng.randbytes(BLOCK * 18)  # one 180 KiB block (EMBLOCKSIZE), in 18 packets
    return {
        "HELLOANSWER": [m.HelloAnswer(peer.hello().body).encode()],
        "MULTIPACKETANSWER": [
            m.MultiPacketAnswer(file_hash, b"benign-file.bin", three, rng.randbytes(20)).encode()
        ],
        "FILESTATUS (3 parts)": [m.FileStatus(file_hash, three).encode()],
        "FILESTATUS (400 parts)": [m.FileStatus(file_hash, many).encode()],
        "ANSWERSOURCES2 (packed, 200 sources)": [packed],
        "SENDINGPART (10,240 bytes)": [
            m.SendingPart(file_hash, 1_000_000 + i, data[i : i + BLOCK]).encode()
            for i in range(0, len(data), BLOCK)
        ],
    }


def _packed(msg: m.AnswerSources2) -> bytes:
    """The message as aMule sends it: zlib-packed (CPacket::PackPacket) when that is smaller."""
    out = encode_packet(Protocol.EMULE, msg.OPCODE, msg.payload(), pack=True)
    if out[0] != Protocol.PACKED:
        raise SystemExit("the sources did not compress: the mix would have no packed packet")
    return out


def decode_stream(stream: bytes) -> int:
    """What the probe does with what it reads: PacketDecoder in 64 KiB reads, then decode."""
    decoder = PacketDecoder()
    n = 0
    for i in range(0, len(stream), READ):
        for packet in decoder.feed(stream[i : i + READ]):
            m.decode(packet)
            n += 1
    return n


def frame_stream(stream: bytes) -> int:
    """PacketDecoder alone (framing and inflation, no message decode)."""
    decoder = PacketDecoder()
    n = 0
    for i in range(0, len(stream), READ):
        n += len(decoder.feed(stream[i : i + READ]))
    return n


_HEADER = struct.Struct("<BIB")
# The fixed fields at the start of each opcode's payload (hash, then ints): one unpack each.
_FIXED = {
    m.Op.HELLOANSWER: struct.Struct("<16sIHI"),  # user hash, client id, port, tag count
    m.EmuleOp.MULTIPACKETANSWER: struct.Struct("<16sB"),  # file hash, first sub-opcode
    m.Op.FILESTATUS: struct.Struct("<16sH"),  # file hash, part count
    m.EmuleOp.ANSWERSOURCES2: struct.Struct("<B16sH"),  # version, file hash, count
    m.Op.SENDINGPART: struct.Struct("<16sII"),  # file hash, start, end
}
_SOURCE_V4 = struct.Struct("<IHIH16sB")  # id, port, server ip, server port, user hash, crypt
# Value sizes of the tag types a HELLO carries (tags.py TagType): UINT32/16/8 and HASH16.
_TAG_SIZES = {0x03: 4, 0x08: 2, 0x09: 1, 0x01: 16}


def _floor_tags(payload: bytes, pos: int, count: int) -> None:
    """Walk a tag list as briefly as possible: the types `packet_mix` HELLOs hold."""
    for _ in range(count):
        t = payload[pos]
        if t & 0x80:
            t &= 0x7F
            pos += 2
        else:
            pos += 3 + int.from_bytes(payload[pos + 1 : pos + 3], "little")
        if 0x11 <= t <= 0x20:  # STR1..STR16
            value = payload[pos : pos + t - 0x10]
            pos += t - 0x10
        elif t == 0x02:  # STRING
            size = int.from_bytes(payload[pos : pos + 2], "little")
            value = payload[pos + 2 : pos + 2 + size]
            pos += 2 + size
        else:
            size = _TAG_SIZES[t]
            value = payload[pos : pos + size]
            pos += size
        del value


def struct_floor(stream: bytes) -> int:
    """The baseline: headers walked with struct, payloads sliced, packed ones inflated, each
    opcode's fixed fields unpacked once, a HELLO's tags walked and each source unpacked;
    nothing checked, nothing built."""
    n = 0
    pos = 0
    end = len(stream)
    unpack_header = _HEADER.unpack_from
    while pos < end:
        prot, length, opcode = unpack_header(stream, pos)
        payload = stream[pos + HEADER_SIZE : pos + HEADER_SIZE + length - 1]
        pos += HEADER_SIZE + length - 1
        if prot == Protocol.PACKED:
            payload = zlib.decompress(payload)
        fixed = _FIXED.get(opcode)
        if fixed is not None:
            fields = fixed.unpack_from(payload)
            if opcode == m.Op.HELLOANSWER and prot == Protocol.EDONKEY:
                _floor_tags(payload, fixed.size, fields[3])
            elif opcode == m.EmuleOp.ANSWERSOURCES2 and prot != Protocol.EDONKEY:
                list(_SOURCE_V4.iter_unpack(payload[fixed.size :]))
        n += 1
    return n


@dataclass
class DecodeRow:
    what: str
    packets: int
    mean_bytes: float
    ours: float  # packets/s, PacketDecoder + messages.decode, wall clock
    ours_cpu: float  # the same, thread CPU time
    framing: float  # packets/s, PacketDecoder alone
    floor: float  # packets/s, struct floor


def decode_bench(packets: int, rounds: int, seed: int = SEED) -> list[DecodeRow]:
    """Each stream holds about `packets` packets (at most `MAX_STREAM` bytes)."""
    rng = random.Random(seed)
    mix = packet_mix(rng)
    # The realistic stream: sessions of every kind in the order a probe and a download meet
    # them (hello, file answer, statuses, sources, then one block's packets).
    session = b"".join(p for kind in mix.values() for p in kind)
    per_session = sum(map(len, mix.values()))
    streams = {
        "mixed (sessions of " + _session_words(mix) + ")": session
        * max(1, min(packets // per_session, MAX_STREAM // len(session)))
    }
    for kind, kind_packets in mix.items():
        one = b"".join(kind_packets)
        copies = max(1, min(packets // len(kind_packets), MAX_STREAM // len(one)))
        streams[kind + " only"] = one * copies
    rows = []
    for what, stream in streams.items():
        n = struct_floor(stream)
        if decode_stream(stream) != n or frame_stream(stream) != n:
            raise SystemExit(f"{what}: the decoders disagree on the packet count")
        wall, cpu = best_of(rounds, partial(decode_stream, stream))
        framing, _ = best_of(rounds, partial(frame_stream, stream))
        floor, _ = best_of(rounds, partial(struct_floor, stream))
        rows.append(DecodeRow(what, n, len(stream) / n, n / wall, n / cpu, n / framing, n / floor))
    return rows


def _session_words(mix: dict[str, list[bytes]]) -> str:
    return ", ".join(f"{len(v)} {k}" for k, v in mix.items())


# --- 2. probes -----------------------------------------------------------------------------------


@dataclass
class ProbeRow:
    against: str
    peers: int
    files: int
    concurrency: int
    seconds: list[float]  # one per sweep
    probes: int
    outcomes: Counter[str]
    expected: Counter[str]  # what the peers share decides every outcome
    latencies_ms: list[int]  # each probe's duration, from its observation
    loop_lag: float = 0.0  # the longest the sensor's event loop was late for a 10 ms timer

    @property
    def rate(self) -> float:
        """Probes per second of the median sweep."""
        return self.probes / len(self.seconds) / statistics.median(self.seconds)

    @property
    def overall_rate(self) -> float:
        """Probes per second over every sweep."""
        return self.probes / sum(self.seconds)


async def _sweeps(
    against: str,
    peers: list[Ed2kPeer],
    files: list[Ed2kFile],
    bind_ip: str,
    sweeps: int,
    workdir: Path,
    concurrency: int = 8,
) -> ProbeRow:
    """`sweeps` sweeps of one `Ed2kSweep` (one sensor, one user hash) with a SQLite evidence
    log; the outcomes and each probe's duration are read back from the log."""
    name = "".join(c if c.isalnum() else "-" for c in against)
    engine = make_engine(sqlite_url(workdir / f"{name}.db"))
    migrate(engine)
    log = EvidenceLog(engine, load_or_create(workdir / "keys", name))
    probe = Ed2kProbeConfig(ClientIdentity(USER_HASH, supports_crypt=True), bind_ip=bind_ip)
    sweep = Ed2kSweep(Ed2kSweepConfig(probe, concurrency=concurrency), log, EgressPolicy())
    seconds = []
    lag = [0.0]

    async def watch_loop() -> None:
        # How late a 10 ms timer fires: shows whether a slow probe waited for the peer or for
        # our own event loop.
        while True:
            t = time.perf_counter()
            await asyncio.sleep(0.01)
            lag[0] = max(lag[0], time.perf_counter() - t - 0.01)

    watcher = asyncio.create_task(watch_loop())
    for _ in range(sweeps):
        t0 = time.perf_counter()
        await sweep.sweep(peers, files)
        seconds.append(time.perf_counter() - t0)
    watcher.cancel()
    observations = [record.decode(r.record).observation for r in iter_records(engine)]
    engine.dispose()
    latencies = [o.extra["duration_ms"] for o in observations]
    return ProbeRow(
        against,
        len(peers),
        len(files),
        concurrency,
        seconds,
        len(observations),
        Counter(o.outcome or "none" for o in observations),
        Counter(),
        [d for d in latencies if isinstance(d, int)],
        lag[0],
    )


def amule_probes(sweeps: int, workdir: Path) -> tuple[ProbeRow, AmuleLab]:
    lab = AmuleLab(workdir / "amule", peers=5, net=NET, tcp_base=TCP_BASE)
    lab.start()
    try:
        files = [Ed2kFile(f.ed2k, f.size) for f in lab.files.values() if f.watched]
        peers = [
            Ed2kPeer(p.ip, p.tcp_port, p.user_hash if p.requires_obfuscation else None)
            for p in lab.peers
        ]
        row = asyncio.run(_sweeps("aMule", peers, files, lab.sensor_ip, sweeps, workdir))
    finally:
        lab.stop()
    shared = sweeps * sum(1 for p in lab.peers for k in p.shares if lab.files[k].watched)
    row.expected = +Counter({"possession": shared, "no-file": row.probes - shared})
    return row, lab


def control_probes(sweeps: int, ports: int, workdir: Path) -> ProbeRow:
    """The in-process control on `ports` ports, the lab's 4 file sizes, all ports at once."""
    rng = random.Random(SEED + 1)
    shared = tuple(
        ControlFile(rng.randbytes(16), size, f"benign-{i}.bin")
        for i, size in enumerate((25_000_000, 9_728_000, 300_000, 1_234_567))
    )
    config = HostileEd2kConfig(net=NET, kinds=(CONTROL,), control_files=shared, control_ports=ports)

    async def run() -> ProbeRow:
        async with HostileEd2kLab(config) as lab:
            peers = [Ed2kPeer(ip, port) for ip, port in lab.control_peers]
            files = [Ed2kFile(f.file_hash, f.size) for f in shared]
            against = "in-process control" + (f" ({ports} ports)" if ports != 5 else "")
            return await _sweeps(
                against, peers, files, CONTROL_SOURCE, sweeps, workdir, max(8, ports)
            )

    row = asyncio.run(run())
    row.expected = Counter({"possession": row.probes})
    return row


# --- report --------------------------------------------------------------------------------------


def render(
    decode_rows: list[DecodeRow],
    rounds: int,
    load: tuple[float, float],
    probe_rows: list[ProbeRow],
    amule_note: str,
    command: str,
) -> str:
    lines = [
        "## eD2k: packets decoded, probes",
        "",
        f"`{command}` (seed {SEED}).",
        "",
        machine_info(),
        "",
        "### Packets decoded per second, one core",
        "",
        "One byte stream fed to `framing.PacketDecoder` in 64 KiB reads, as the probe's socket "
        "gives it, and every packet through `messages.decode` (the sans-IO decoders, no socket), "
        f"single-threaded, best of {rounds} rounds; the mixed stream repeats one probe-and-"
        "download session (the packets a sensor meets, in order). Baseline, the floor for the "
        "same bytes: a minimal `struct` parse (headers walked, payloads sliced, packed ones "
        "inflated with `zlib.decompress`, each opcode's fixed fields unpacked once, a HELLO's "
        "tags walked, each source unpacked with `iter_unpack`; no checks, no objects). "
        "*framing alone*: `PacketDecoder` without `messages.decode`. The machine's 1-minute "
        f"load average was {load[0]:.1f} when this part began and {load[1]:.1f} when it ended "
        "(2 logical CPUs, shared with other work); the CPU-time column is what the core did.",
        "",
        "| stream | packets | mean bytes | decoded/s | decoded/s (CPU time) | framing alone/s "
        "| struct floor/s | decoded / floor |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in decode_rows:
        lines.append(
            f"| {r.what} | {r.packets:,} | {r.mean_bytes:,.0f} | {r.ours:,.0f} | "
            f"{r.ours_cpu:,.0f} | {r.framing:,.0f} | {r.floor:,.0f} | {r.ours / r.floor:.2f} |"
        )
    lines += [
        "",
        "### Probes per second",
        "",
        "One `Ed2kSweep` per round (default concurrency 8: the 5 peers at once, each peer's "
        "files one after the other, each probe its own TCP connection: HELLO, the file request "
        "in one write, the answer), every observation appended to a SQLite evidence log "
        "(signed, hash-chained) within the timed sweep. aMule: "
        + amule_note
        + " In-process control: `lab.hostile_ed2k`'s control peer (HELLOANSWER, then "
        "MULTIPACKETANSWER with name and complete status) on 5 ports of 127.0.21.10, in the "
        "sensor's own event loop, sharing 4 files of the same sizes: the same shape of sweep, "
        "so the ratio compares the peers. The last row is the sensor's own capacity: the "
        "control on more ports, probed with that many at once. *probe ms*: each probe's "
        "duration (TCP connect to answer), from its observation.",
        "",
        "| against | peers x files, concurrency | sweeps | probes | median sweep, s | probes/s "
        "(median sweep) | probes/s (all sweeps) | probe ms: median, p90, max | outcomes "
        "| as the shares say |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for p in probe_rows:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(p.outcomes.items()))
        lat = sorted(p.latencies_ms)
        p90 = lat[min(len(lat) - 1, int(len(lat) * 0.9))]
        lines.append(
            f"| {p.against} | {p.peers} x {p.files}, {p.concurrency} | {len(p.seconds)} | "
            f"{p.probes} | {statistics.median(p.seconds):.3f} | {p.rate:,.0f} | "
            f"{p.overall_rate:,.0f} | {statistics.median(lat):,.0f}, {p90:,}, {lat[-1]:,} | "
            f"{outcomes} | "
            f"{'yes' if p.outcomes == p.expected else 'NO: expected ' + str(dict(p.expected))} |"
        )
    amule = next((p for p in probe_rows if p.against == "aMule"), None)
    control = next((p for p in probe_rows if p.against == "in-process control"), None)
    if amule is not None and control is not None:
        lines += [
            "",
            f"Ratio in-process control / aMule: **{control.rate / amule.rate:.1f}x** probes/s "
            f"(median sweep; {control.overall_rate / amule.overall_rate:.1f}x over all sweeps). "
            "The difference is aMule's time to answer: its median probe took "
            f"{statistics.median(amule.latencies_ms):,.0f} ms against "
            f"{statistics.median(control.latencies_ms):,.0f} ms, and the sensor's event loop "
            f"was never more than {amule.loop_lag * 1000:.0f} ms late during the aMule sweeps, "
            f"so its slow probes (up to {max(amule.latencies_ms):,} ms) waited for aMule, not "
            "for the sensor.",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes for CI (seconds)")
    parser.add_argument("--out", type=Path, default=None, help=f"default {DEFAULT_PATH}")
    parser.add_argument("--packets", type=int, help="packets in each decode stream (about)")
    parser.add_argument("--rounds", type=int, help="decode rounds (best of)")
    parser.add_argument("--sweeps", type=int, help="timed sweeps per side")
    parser.add_argument("--no-amule", action="store_true", help="skip the real aMule peers")
    args = parser.parse_args()
    smoke: bool = args.smoke
    packets = args.packets or (500 if smoke else 50_000)
    rounds = args.rounds or (1 if smoke else 3)
    sweeps = args.sweeps or (2 if smoke else 10)
    capacity_ports = 10 if smoke else 100
    out: Path | None = args.out if args.out is not None or smoke else DEFAULT_PATH

    print(f"decode: about {packets:,} packets per stream, best of {rounds}", flush=True)
    load_before = os.getloadavg()[0]
    decode_rows = decode_bench(packets, rounds)
    load = (load_before, os.getloadavg()[0])
    for r in decode_rows:
        print(f"  {r.what}: {r.ours:,.0f}/s (floor {r.floor:,.0f}/s)", flush=True)

    probe_rows: list[ProbeRow] = []
    with tempfile.TemporaryDirectory(prefix="bench-ed2k-") as tmp:
        workdir = Path(tmp)
        if args.no_amule:
            amule_note = "skipped (--no-amule)."
        elif not amuled_available():
            amule_note = "skipped (amuled is not installed: Debian package amule-daemon)."
        else:
            print(f"aMule: 5 amuled peers on {NET}x, {sweeps} sweeps", flush=True)
            row, lab = amule_probes(sweeps, workdir)
            probe_rows.append(row)
            roles = ", ".join(p.role for p in lab.peers)
            amule_note = (
                f"5 amuled ({amuled_version()}) on {NET}1-5 (roles {roles}; one requires "
                f"obfuscation and is probed with its user hash), probed from {lab.sensor_ip} for "
                f"the lab's {row.files} watched files; the lab's start-up (hashing) is not timed."
            )
        if not probe_rows:
            print(f"aMule: {amule_note}", flush=True)
        print(f"in-process control: {sweeps} sweeps", flush=True)
        probe_rows.append(control_probes(sweeps, 5, workdir))
        print(f"in-process control, {capacity_ports} ports: {sweeps} sweeps", flush=True)
        probe_rows.append(control_probes(sweeps, capacity_ports, workdir))
    for p in probe_rows:
        print(f"  {p.against}: {p.rate:,.0f} probes/s {dict(p.outcomes)}", flush=True)

    command = "python benchmarks/bench_ed2k.py" + (" --smoke" if smoke else "")
    text = render(decode_rows, rounds, load, probe_rows, amule_note, command)
    print(text)
    if out is not None:
        write_section("ed2k", text, out)
        print(f"wrote section 'ed2k' of {out}")


if __name__ == "__main__":
    main()
