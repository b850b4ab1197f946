"""The demo and the web app as subprocesses on loopback: for the tests that drive them over HTTP or
in a browser, and for scripts/screenshots.py. Everything listens on 127.0.0.1 only."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

#: The `peerwatch` command of this interpreter (the virtualenv's), whatever PATH says.
PEERWATCH = [sys.executable, "-m", "peerwatch.cli.main"]
_WEB = re.compile(r"^  web app: (.+)$")
_USER = re.compile(r"^  sign in as: (\S+)")
_PASSWORD = re.compile(r"^  password: (\S+)")


@dataclass(frozen=True)
class Credentials:
    where: str  # the URL when served, else the command that serves the home
    user: str
    password: str


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def credentials(lines: list[str]) -> Credentials | None:
    """The demo's printed web app line, user and password, once all three are there."""
    found: dict[str, str] = {}
    for line in lines:
        for key, pattern in (("where", _WEB), ("user", _USER), ("password", _PASSWORD)):
            m = pattern.match(line)
            if m:
                found[key] = m.group(1)
    if len(found) < 3:
        return None
    return Credentials(found["where"], found["user"], found["password"])


def amule_net(lab_net: str) -> str:
    """The demo's aMule peers' /24 for a test's lab /24: 127.0.8. -> 127.0.108. (never the
    interop tests' 127.0.15.)."""
    a, b, c, _ = lab_net.split(".")
    return f"{a}.{b}.{int(c) + 100}."


def demo_args(home: Path, lab_net: str, sensor_ip: str, *more: str) -> list[str]:
    return [
        *PEERWATCH,
        "--home",
        str(home),
        "demo",
        "--peers",
        "5",
        "--lab-net",
        lab_net,
        "--sensor-ip",
        sensor_ip,
        "--amule-net",
        amule_net(lab_net),
        *more,
    ]


def prepare_home(home: Path, lab_net: str, sensor_ip: str) -> tuple[Credentials, str]:
    """Run the whole demo without serving (`--no-serve`) in `home`: evidence, leads and the demo
    account are there afterwards. Returns the credentials and the demo's output."""
    done = subprocess.run(  # our own command, fixed arguments
        demo_args(home, lab_net, sensor_ip, "--no-serve"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"demo failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    found = credentials(done.stdout.splitlines())
    if found is None:
        raise AssertionError(f"demo printed no credentials:\n{done.stdout}")
    return found, done.stdout


class Lines:
    """A child's stdout, read line by line in a thread so that waiting has a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """The first line matching `pattern`, read before `timeout` seconds pass."""
        for line in self.lines:
            m = pattern.match(line)
            if m:
                return m
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                got = self._new.get(timeout=left)
            except queue.Empty:
                break
            if got is None:
                break
            self.lines.append(got)
            m = pattern.match(got)
            if m:
                return m
        text = "\n".join(self.lines[-40:])
        raise AssertionError(f"no line like {pattern.pattern!r} within {timeout} s:\n{text}")

    def drain(self, timeout: float = 10.0) -> list[str]:
        """Every line up to the end of the output (call after the child exited)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._new.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        return self.lines


def start(args: list[str]) -> subprocess.Popen[str]:
    """A child with stdout piped as text and stderr merged into it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(  # our own command, fixed arguments
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def interrupt(proc: subprocess.Popen[str], timeout: float = 60.0) -> int:
    """Ctrl-C (SIGINT) to the child; its exit status (killed and failed after `timeout`)."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise AssertionError(f"still running {timeout} s after SIGINT: killed") from None


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes whose command line contains `text` (as `pgrep -af TEXT` lists them)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        cmdline = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        if text in cmdline and int(entry.name) != os.getpid():
            found.append((int(entry.name), cmdline))
    return found


def wait_until_up(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "login", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer within {timeout} s")
        time.sleep(0.2)


@contextmanager
def served(home: Path, port: int) -> Iterator[str]:
    """`peerwatch --home HOME serve --port PORT` until the block ends (then Ctrl-C); its URL."""
    proc = start([*PEERWATCH, "--home", str(home), "serve", "--port", str(port)])
    lines = Lines(proc)
    url = f"http://127.0.0.1:{port}/"
    try:
        lines.wait_for(re.compile(r"peerwatch web app on "), 60)
        wait_until_up(url)
        yield url
    finally:
        if proc.poll() is None:
            interrupt(proc, 30)


_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def sign_in(client: httpx.Client, user: str, password: str) -> httpx.Response:
    """Sign in with the login form as a browser would (its CSRF double submit included)."""
    form = client.get("/login")
    m = _CSRF.search(form.text)
    if m is None:
        raise AssertionError("the sign-in form has no CSRF field")
    return client.post("/login", data={"name": user, "password": password, "csrf": m.group(1)})
