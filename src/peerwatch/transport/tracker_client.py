"""Announce to HTTP (BEP 3/23/7) and UDP (BEP 15) trackers: asyncio drivers of the sans-IO codecs.

Tracker host names are not resolved (that would be traffic of its own and a way around the
egress policy): a tracker URL must name an IP address, as the lab's do.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
import urllib.parse
from dataclasses import dataclass

from peerwatch.errors import ProtocolError
from peerwatch.protocols.bittorrent import tracker_udp
from peerwatch.protocols.bittorrent.peer_address import PeerAddress
from peerwatch.protocols.bittorrent.tracker_http import (
    AnnounceRequest,
    HttpResponseParser,
    TrackerFailure,
    announce_url,
    http_request_bytes,
    parse_announce_response,
)
from peerwatch.transport.egress import EgressDeniedError, EgressPolicy


@dataclass(frozen=True, slots=True)
class TrackerAnswer:
    url: str
    peers: tuple[PeerAddress, ...]  # claims: addresses the tracker says have the torrent
    seeders: int | None
    leechers: int | None
    error: str | None  # failure reason, timeout, refusal; None when it answered
    raw_sha256: str | None = None


async def announce(
    url: str,
    req: AnnounceRequest,
    egress: EgressPolicy,
    *,
    timeout: float = 10.0,
    bind_ip: str | None = None,
    udp_retransmit: float = 2.0,
) -> TrackerAnswer:
    """Announce to one tracker; never raises for the tracker's faults (they are in `error`).

    `timeout` bounds the whole announce. It is an `asyncio.timeout` block, not `asyncio.wait_for`:
    on Python 3.11 wait_for drops a cancellation that arrives as the awaited operation completes
    (CPython gh-86296), and a tracker flooding us with datagrams makes that happen every time:
    the announce then ran for its whole BEP 15 retransmit schedule (minutes), whatever `timeout`.
    """
    try:
        if url.startswith(("http://", "https://")):
            if url.startswith("https://"):
                return TrackerAnswer(url, (), None, None, "https trackers are not supported yet")
            async with asyncio.timeout(timeout):
                return await _http(url, req, egress, bind_ip)
        if url.startswith("udp://"):
            async with asyncio.timeout(timeout):
                return await _udp(url, req, egress, bind_ip, udp_retransmit)
        return TrackerAnswer(url, (), None, None, "unsupported tracker scheme")
    except TimeoutError:
        return TrackerAnswer(url, (), None, None, f"no answer within {timeout:g} s")
    except (ProtocolError, EgressDeniedError, OSError) as exc:
        return TrackerAnswer(url, (), None, None, f"{type(exc).__name__}: {exc}")


async def _http(
    url: str, req: AnnounceRequest, egress: EgressPolicy, bind_ip: str | None
) -> TrackerAnswer:
    full = announce_url(url, req)
    host, port, request = http_request_bytes(full)
    egress.check(host.strip("[]"))
    reader, writer = await asyncio.open_connection(
        host.strip("[]"), port, local_addr=(bind_ip, 0) if bind_ip else None
    )
    try:
        writer.write(request)
        await writer.drain()
        parser = HttpResponseParser()
        response = None
        while response is None:
            data = await reader.read(65536)
            response = parser.feed(data) if data else parser.feed_eof()
    finally:
        writer.close()
    if response.status != 200:
        return TrackerAnswer(url, (), None, None, f"HTTP {response.status} {response.reason}")
    parsed = parse_announce_response(response.body)
    if isinstance(parsed, TrackerFailure):
        return TrackerAnswer(url, (), None, None, f"failure reason: {parsed.reason}")
    return TrackerAnswer(
        url,
        parsed.peers + parsed.peers6,
        parsed.complete,
        parsed.incomplete,
        None,
        hashlib.sha256(response.body).hexdigest(),
    )


#: Datagrams held for the announce loop; a tracker (or anyone spoofing it) that sends faster
#: than they are read loses the excess instead of growing our memory.
UDP_QUEUE_LIMIT = 256


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(UDP_QUEUE_LIMIT)
        self.dropped = 0

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            self.dropped += 1


async def _udp(
    url: str, req: AnnounceRequest, egress: EgressPolicy, bind_ip: str | None, retransmit: float
) -> TrackerAnswer:
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError as exc:
        # A torrent's own tracker list is the uploader's text: "udp://h:99999" or "udp://[::1"
        # is an unusable URL to record, not an exception that ends the sweep.
        return TrackerAnswer(url, (), None, None, f"unusable tracker URL: {exc}")
    if not port:
        return TrackerAnswer(url, (), None, None, "UDP tracker URL without a port")
    egress.check(host)
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        _UdpProtocol,
        remote_addr=(host, port),
        local_addr=(bind_ip, 0) if bind_ip else None,
    )
    try:
        client = tracker_udp.UdpTrackerClient(
            time.monotonic(),
            random.SystemRandom(),
            config=tracker_udp.UdpTrackerConfig(
                retransmit_base=retransmit, address_family=6 if ":" in host else 4
            ),
        )
        request_id = client.announce(req, time.monotonic())
        while True:
            for datagram in client.datagrams_to_send():
                transport.sendto(datagram)
            due = client.next_timer()
            now = time.monotonic()
            if due is not None and now >= due:
                # Before reading: a queued datagram is returned without waiting, so a flood
                # would otherwise starve the retransmit timer.
                events = client.on_timer(now)
                await asyncio.sleep(0)  # and the loop yields on this path too
            else:
                try:
                    async with asyncio.timeout(None if due is None else due - now):
                        data = await proto.queue.get()
                except TimeoutError:
                    events = client.on_timer(time.monotonic())
                else:
                    events = client.receive(data, time.monotonic())
            for ev in events:
                if getattr(ev, "request_id", None) != request_id:
                    continue
                if isinstance(ev, tracker_udp.Announced):
                    return TrackerAnswer(url, ev.peers, ev.seeders, ev.leechers, None)
                if isinstance(ev, tracker_udp.TrackerErrorReceived):
                    return TrackerAnswer(url, (), None, None, f"tracker error: {ev.message}")
                if isinstance(ev, tracker_udp.RequestFailed):
                    return TrackerAnswer(url, (), None, None, f"failed: {ev.reason}")
    finally:
        transport.close()
