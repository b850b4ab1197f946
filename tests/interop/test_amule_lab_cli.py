"""`peerwatch lab up --amule N` / `lab status` / `lab down`: real amuled daemons started in the
background by one command, listed by another, stopped by a third (issue 7, the lab for humans)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from peerwatch.cli.main import run
from peerwatch.lab import amule
from tests.interop.test_ed2k_lab import require_amuled


def test_lab_up_status_down_with_amule_peers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_amuled()
    home, folder = tmp_path / "home", tmp_path / "lab"
    base = ["--home", str(home), "lab"]
    assert run([*base, "up", "--peers", "0", "--amule", "2", "--dir", str(folder)]) == 0
    state = json.loads((folder / "amule" / amule.STATE_FILE).read_text())
    pids = [p["pid"] for p in state["peers"]] + [state["services"]["ed2k-server"]]
    try:
        up = capsys.readouterr().out
        assert "2 aMule peers on 127.0.15.1-2" in up
        assert "logged into the lab eD2k server 127.0.15.240:4661" in up
        assert str(folder / "amule" / "watchlist-ed2k.txt") in up
        # The daemons outlive the command that started them.
        assert all(amule.pid_running(pid) for pid in pids)
        # A second lab in the same folder is refused, and nothing more is started.
        assert run([*base, "up", "--peers", "0", "--amule", "1", "--dir", str(folder)]) != 0
        assert "already running" in capsys.readouterr().err

        assert run([*base, "status", "--dir", str(folder)]) == 0
        status = capsys.readouterr().out
        for p in state["peers"]:
            assert p["user_hash"] in status and f"{p['ip']}:{p['tcp_port']}" in status
        assert "obfuscation" not in status  # roles 0 and 1: multi, exact
        assert "lab eD2k server 127.0.15.240:4661: running" in status

        # The sensor finds both peers through the lab server alone, and proves them.
        assert run(["--home", str(home), "watchlist", "import", state["watchlist"]]) == 0
        sense = ["--home", str(home), "sense", "ed2k", "--bind", "127.0.15.200"]
        assert run([*sense, "--server", "127.0.15.240:4661"]) == 0
        found = capsys.readouterr().out
        assert "servers: 1 asked" in found
        for p in state["peers"]:
            assert f"{p['ip']}:{p['tcp_port']}" in found  # proven: listed under possession
    finally:
        assert run([*base, "down", "--dir", str(folder)]) == 0
    assert "stopped 3 lab processes" in capsys.readouterr().out
    assert not any(amule.pid_running(pid) for pid in pids)
    assert not (folder / "amule" / amule.STATE_FILE).exists()
    assert run([*base, "status", "--dir", str(folder)]) == 1
    assert all(not Path(f"/proc/{pid}").exists() or _zombie(pid) for pid in pids)


def _zombie(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
