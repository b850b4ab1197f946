"""A scripted DHT node on loopback for driver and sweep tests: it answers find_node at once and
get_peers with the peers it is given (or with no peers), and can hold its get_peers answers until
the test releases them, so that a test can put a lookup in a known state without timing."""

from __future__ import annotations

import asyncio
from typing import cast

from peerwatch.protocols.bittorrent import krpc
from peerwatch.protocols.bittorrent.krpc import FindNode, GetPeers, Peer, Ping, Response


class FakeDhtNode(asyncio.DatagramProtocol):
    def __init__(
        self, node_id: bytes, *, values: tuple[Peer, ...] = (), hold: asyncio.Event | None = None
    ) -> None:
        self.node_id = node_id
        self.values = values  # what get_peers answers (BEP 5 'values'); empty: no peers
        self.hold = hold  # get_peers answers wait for this event when given
        self.get_peers_received = 0
        self.addr: Peer = ("", 0)
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(
        cls,
        ip: str,
        node_id: bytes,
        *,
        values: tuple[Peer, ...] = (),
        hold: asyncio.Event | None = None,
    ) -> FakeDhtNode:
        node = cls(node_id, values=values, hold=hold)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: node, local_addr=(ip, 0))
        node.addr = cast(Peer, transport.get_extra_info("sockname")[:2])
        return node

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A datagram endpoint's transport (CPython's class does not subclass DatagramTransport).
        self._transport = cast(asyncio.DatagramTransport, transport)

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._transport is not None:
            self._transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        to = (str(addr[0]), int(addr[1]))
        msg = krpc.decode(data)
        if isinstance(msg, Ping | FindNode):
            self._send(Response(t=msg.t, node_id=self.node_id), to)
        elif isinstance(msg, GetPeers):
            self.get_peers_received += 1
            answer = Response(t=msg.t, node_id=self.node_id, values=self.values, token=b"tok")
            if self.hold is None:
                self._send(answer, to)
            else:
                task = asyncio.create_task(self._send_later(self.hold, answer, to))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _send_later(self, event: asyncio.Event, answer: Response, to: Peer) -> None:
        await event.wait()
        self._send(answer, to)

    def _send(self, msg: Response, to: Peer) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(krpc.encode(msg), to)
