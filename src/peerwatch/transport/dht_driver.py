"""The asyncio driver of the sans-IO `DhtNode`: one UDP socket, one timer task.

It feeds every datagram to the node, calls `on_timer` when the node asks, sends what the node
queues, and hands lookup events to whoever started the lookup. Every destination goes through the
egress policy first: a DHT node can name any address, and a refused one is counted, not sent to.

A get_peers lookup can stream its claims: `get_peers(..., on_peers=callback)` calls `callback`
with each `PeersFound` as its reply arrives, so a sweep probes a claimed peer at once instead of
after the lookup's slowest node (a departed node among the closest costs a 2 s timeout, see
docs/benchmarks.md); the returned `LookupResult` still holds every claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from peerwatch.protocols.bittorrent.dht import (
    DhtConfig,
    DhtEvent,
    DhtNode,
    LookupDone,
    NodeAdded,
    PeersFound,
    SamplesReceived,
)
from peerwatch.protocols.bittorrent.krpc import Peer
from peerwatch.protocols.bittorrent.node_id import random_node_id
from peerwatch.transport.egress import EgressPolicy


@dataclass
class LookupResult:
    info_hash: bytes
    found: list[PeersFound] = field(default_factory=list)  # claims, with the node that made each
    samples: list[SamplesReceived] = field(default_factory=list)  # BEP 51 answers
    done: LookupDone | None = None

    @property
    def peers(self) -> set[Peer]:
        return {p for f in self.found for p in f.peers}


#: Called with each claim of a lookup as it arrives (`DhtDriver.get_peers(on_peers=...)`).
PeersCallback = Callable[[PeersFound], None]


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, driver: DhtDriver) -> None:
        self._driver = driver

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        host, port = addr[0], addr[1]
        if isinstance(host, str):
            self._driver._received(data, (host, int(port)))


class DhtDriver:
    """A running DHT node. `await start()`, then `await get_peers(...)`, then `close()`."""

    def __init__(
        self,
        bind: tuple[str, int],
        egress: EgressPolicy,
        *,
        config: DhtConfig | None = None,
        node_id: bytes | None = None,
    ) -> None:
        import random

        self._bind = bind
        self._egress = egress
        self._clock = time.monotonic
        config = config or DhtConfig()
        if (":" in bind[0]) is not config.ipv6:
            # BEP 32: a node serves the family of its socket; an IPv6 address means the IPv6 DHT.
            config = dataclasses.replace(config, ipv6=":" in bind[0])
        self.node = DhtNode(
            node_id or random_node_id(random.SystemRandom()), self._clock(), config=config
        )
        self._transport: asyncio.DatagramTransport | None = None
        self._lookups: dict[int, LookupResult] = {}
        self._waiters: dict[int, asyncio.Future[LookupResult]] = {}
        self._on_peers: dict[int, PeersCallback] = {}
        self._wake = asyncio.Event()
        self._table_grew = asyncio.Event()  # set when a node enters the routing table
        self._timer_task: asyncio.Task[None] | None = None
        # Exceptions the node raised on a datagram or a timer: the node's fuzzing says decode
        # never raises, so these would be our bugs; counted (and the last kept) rather than
        # allowed to kill the timer task or lose the datagram's dispatch silently.
        self.errors = 0
        self.last_error: str | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=self._bind
        )
        self._transport = transport
        self._timer_task = asyncio.create_task(self._timers())

    def close(self) -> None:
        if self._timer_task is not None:
            self._timer_task.cancel()
        if self._transport is not None:
            self._transport.close()
        for fut in self._waiters.values():
            if not fut.done():
                fut.cancel()

    async def bootstrap(self, nodes: Iterable[Peer], timeout: float = 10.0) -> int:
        """Fill the routing table from known nodes (the node looks up its own id through them).
        Returns the routing table's size once it holds as many nodes as it can, or at timeout."""
        v6 = self.node.config.ipv6
        # The node skips entry points of the other family (BEP 32), so they are not waited for.
        entry = [n for n in nodes if self._egress.allows(n[0]) and (":" in n[0]) is v6]
        self.node.bootstrap(entry, self._clock())
        self._flush()
        want = min(self.node.config.k, len(entry))
        deadline = self._clock() + timeout
        while len(self.node.routing) < want:
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            # Woken by the node's NodeAdded events rather than polled: a 10 ms poll was most of
            # a loopback bootstrap (docs/benchmarks.md). The 0.25 s cap re-checks regardless.
            self._table_grew.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(remaining, 0.25)):  # not wait_for: see `_wait`
                    await self._table_grew.wait()
        return len(self.node.routing)

    async def get_peers(
        self,
        info_hash: bytes,
        timeout: float = 30.0,
        *,
        on_peers: PeersCallback | None = None,
    ) -> LookupResult:
        """Run one get_peers lookup (BEP 5) to its end or `timeout`; the result holds every
        claim with the node that made it. `on_peers`, if given, is called with each claim as its
        reply arrives (from the event loop, before this returns); an exception it raises is
        counted in `errors`, not propagated, and does not stop the lookup."""
        lookup = self.node.get_peers(info_hash, self._clock())
        if on_peers is not None:
            self._on_peers[lookup] = on_peers
        try:
            return await self._wait(lookup, info_hash, timeout)
        finally:
            self._on_peers.pop(lookup, None)

    async def sample_infohashes(self, target: bytes, timeout: float = 30.0) -> LookupResult:
        """BEP 51: walk toward `target` asking each node for a sample of the infohashes it
        stores; `samples` of the result holds every answer with the node that gave it."""
        lookup = self.node.sample_infohashes(target, self._clock())
        return await self._wait(lookup, target, timeout)

    async def _wait(self, lookup: int, info_hash: bytes, timeout: float) -> LookupResult:
        result = self._lookups.setdefault(lookup, LookupResult(info_hash))
        fut: asyncio.Future[LookupResult] = asyncio.get_running_loop().create_future()
        self._waiters[lookup] = fut
        self._flush()
        try:
            # `asyncio.timeout`, not `wait_for`: on Python 3.11 wait_for drops a cancellation
            # that arrives as the awaited future completes (CPython gh-86296).
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            return result  # what was found so far; `done` stays None
        finally:
            self._waiters.pop(lookup, None)
            self._lookups.pop(lookup, None)

    def _received(self, data: bytes, addr: Peer) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        try:
            self._dispatch(self.node.receive(data, addr, self._clock()))
        except Exception as exc:  # see `errors`: one datagram must not break the node
            self._error(exc)

    def _error(self, exc: Exception) -> None:
        self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"

    async def _timers(self) -> None:
        while True:
            due = self.node.next_timer()
            wait = 1.0 if due is None else max(0.0, due - self._clock())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(wait, 1.0)):  # not wait_for: see `_wait`
                    await self._wake.wait()
            try:
                if due is not None and self._clock() >= due:
                    self._dispatch(self.node.on_timer(self._clock()))
                else:
                    self._flush()
            except Exception as exc:  # the timer task is the node's only clock: keep it alive
                self._error(exc)
                await asyncio.sleep(0.05)  # no busy loop if the fault repeats

    def _dispatch(self, events: list[DhtEvent]) -> None:
        for ev in events:
            if isinstance(ev, PeersFound):
                result = self._lookups.get(ev.lookup)
                if result is not None:
                    result.found.append(ev)
                    callback = self._on_peers.get(ev.lookup)
                    if callback is not None:
                        try:
                            callback(ev)
                        except Exception as exc:  # the caller's fault: the lookup goes on
                            self._error(exc)
            elif isinstance(ev, NodeAdded):
                self._table_grew.set()
            elif isinstance(ev, SamplesReceived):
                result = self._lookups.get(ev.lookup)
                if result is not None:
                    result.samples.append(ev)
            elif isinstance(ev, LookupDone):
                result = self._lookups.get(ev.lookup)
                if result is not None:
                    result.done = ev
                    fut = self._waiters.get(ev.lookup)
                    if fut is not None and not fut.done():
                        fut.set_result(result)
        self._flush()

    def _flush(self) -> None:
        assert self._transport is not None
        for data, addr in self.node.datagrams_to_send():
            if self._egress.allows(addr[0]):
                self._transport.sendto(data, addr)
            else:
                self._egress.denied += 1
        self._wake.set()  # the node may want an earlier timer now
