"""An acknowledged append survives `kill -9` of the writer, and the chain stays valid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from peerwatch.evidence.keys import load_or_create
from peerwatch.evidence.log import iter_records, sensor_keys
from peerwatch.evidence.verify import ChainReport, verify_stored
from peerwatch.storage.database import make_engine, migrate, sqlite_url

WRITER = """
import sys
from pathlib import Path
from peerwatch.evidence.keys import load_or_create
from peerwatch.evidence.log import EvidenceLog
from peerwatch.storage.database import make_engine, migrate, sqlite_url
from tests.evidence.helpers import observation

home = Path(sys.argv[1])
engine = make_engine(sqlite_url(home / "peerwatch.db"))
migrate(engine)
log = EvidenceLog(engine, load_or_create(home / "keys", "s"))
i = 0
while True:  # appends until killed; prints the last seq of each committed batch
    seqs = log.append([observation(i + k) for k in range(7)])
    i += 7
    print(seqs[-1], flush=True)
"""


def test_kill_9_after_acknowledgement_loses_nothing(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert proc.stdout is not None
    acked = 0
    for _ in range(40):
        line = proc.stdout.readline()
        assert line, "writer died"
        acked = int(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    engine = make_engine(sqlite_url(tmp_path / "peerwatch.db"))
    migrate(engine)
    key = load_or_create(tmp_path / "keys", "s")
    items = list(
        verify_stored(iter_records(engine), {"s": key.private.public_key()}, sensor_keys(engine))
    )
    problems = [x for x in items if not isinstance(x, ChainReport)]
    reports = [x for x in items if isinstance(x, ChainReport)]
    assert problems == []
    assert reports[0].last_seq is not None and reports[0].last_seq >= acked >= 7 * 40
    assert reports[0].checked == reports[0].last_seq
