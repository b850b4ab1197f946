"""`peerwatch serve` for real: uvicorn on a loopback port, answering with its security headers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_serve_answers_on_loopback(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PEERWATCH_HOME": str(tmp_path / "home")}
    env.pop("PEERWATCH_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "peerwatch.cli.main", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/login", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
                assert time.monotonic() < deadline, "the server did not answer in 30 s"
                time.sleep(0.2)
        assert r.status_code == 200 and "Sign in" in r.text
        assert r.headers["content-security-policy"].startswith("default-src 'self'")
        assert "server" not in r.headers
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/me", timeout=2).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=10)
