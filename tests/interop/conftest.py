"""Real peers on loopback: a lab swarm of libtorrent processes and Debian's opentracker.

Without libtorrent or opentracker installed these tests skip with the reason locally; in CI (CI
set) they fail instead, since .ci/run installs both.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from peerwatch.lab.swarm import Lab


def require_lab_tools(tracker: bool = True) -> None:
    missing = []
    if importlib.util.find_spec("libtorrent") is None:
        missing.append("libtorrent (pip extra 'lab')")
    if tracker and shutil.which("opentracker") is None:
        missing.append("opentracker (Debian package)")
    if missing:
        reason = "lab tools not installed: " + ", ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI must run the interop tests)")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A running lab of 20 real peers (four of each role) and a tracker, shared by the session."""
    require_lab_tools()
    swarm = Lab(Path(tmp_path_factory.mktemp("lab")), peers=20)
    swarm.start()
    try:
        yield swarm
    finally:
        swarm.stop()
