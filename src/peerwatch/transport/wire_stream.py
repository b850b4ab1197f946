"""One TCP stream to a peer, plain or behind MSE/PE: what the probe, PEX and download share.

`WireStream` writes our first bytes (the BEP 3 handshake, or the MSE start with the handshake as
its initial payload), encrypts what we send once MSE is established, decrypts what we receive,
answers MSE's own step on the way, and hashes every byte in both directions (`Exchange`) so that
each observation carries a digest of the raw exchange. The protocol logic stays in the sans-IO
machines; this is only the plumbing between them and the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os

from peerwatch.protocols.bittorrent import mse

READ_SIZE = 64 * 1024  # one read from the socket


class Exchange:
    """Hash of the raw bytes in both directions: b'>' + len + bytes for ours, b'<' for theirs."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def sent(self, data: bytes) -> None:
        self._h.update(b">" + len(data).to_bytes(4, "big") + data)

    def received(self, data: bytes) -> None:
        self._h.update(b"<" + len(data).to_bytes(4, "big") + data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


async def open_stream(
    ip: str, port: int, *, bind_ip: str | None, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """TCP connect within `timeout`; raises TimeoutError or OSError.

    `asyncio.timeout`, not `wait_for`: on Python 3.11 wait_for can lose a cancellation that
    arrives as the awaited operation completes (CPython gh-86296)."""
    async with asyncio.timeout(timeout):
        return await asyncio.open_connection(ip, port, local_addr=(bind_ip, 0) if bind_ip else None)


async def close_stream(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(TimeoutError, OSError):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


class WireStream:
    """The byte path between a `PeerConnection` and its socket, with optional MSE (RC4)."""

    def __init__(
        self,
        writer: asyncio.StreamWriter,
        exchange: Exchange,
        *,
        info_hash: bytes,
        handshake: bytes,
        use_mse: bool,
    ) -> None:
        self._writer = writer
        self._exchange = exchange
        self._crypt: mse.MseInitiator | None = None
        self.established = not use_mse  # plaintext may be sent (or encrypted) from now on
        if use_mse:
            self._crypt = mse.MseInitiator(
                info_hash, os.urandom, crypto_provide=mse.CRYPTO_RC4, initial_payload=handshake
            )
            first = self._crypt.start()
            exchange.sent(first)
            writer.write(first)
        else:
            self.send(handshake)

    def send(self, data: bytes) -> None:
        """Write peer wire bytes (encrypted once MSE is established)."""
        self._exchange.sent(data)
        crypt = self._crypt
        self._writer.write(crypt.encrypt(data) if crypt is not None and self.established else data)

    def unwrap(self, data: bytes) -> bytes:
        """Peer wire bytes in what the socket gave (b"" while MSE is still negotiating).
        Raises `mse.MseError` when the peer breaks MSE."""
        self._exchange.received(data)
        if self._crypt is None:
            return data
        events, plain = self._crypt.receive(data)
        for ev in events:
            if isinstance(ev, mse.MseOutgoing):
                self._exchange.sent(ev.data)
                self._writer.write(ev.data)
            elif isinstance(ev, mse.MseEstablished):
                self.established = True
        return plain
