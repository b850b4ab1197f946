"""`peerwatch sense ed2k` argument handling, without peers (real peers: tests/interop)."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerwatch.cli.main import run


def _sense(tmp_path: Path, *args: str) -> int:
    return run(["--home", str(tmp_path / "home"), "sense", "ed2k", *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--peer", "nothex@127.0.0.1:4662", "--ed2k", "00" * 16], "user hash"),
        (["--peer", "127.0.0.1:99999", "--ed2k", "00" * 16], "out of range"),
        (["--peer", "127.0.0.1:4662", "--ed2k", "abcd"], "32 hex digits"),
        (["--peer", "127.0.0.1:4662"], "no eD2k hash"),
        (["--peer", "127.0.0.1:4662", "--ed2k", "00" * 16, "--obfuscation", "x"], "auto"),
    ],
)
def test_bad_arguments_are_input_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = _sense(tmp_path, *args)
    captured = capsys.readouterr()
    assert code != 0
    assert message in captured.out + captured.err


def test_outside_loopback_is_not_contacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _sense(tmp_path, "--peer", "192.0.2.1:4662", "--ed2k", "00" * 16)
    out = capsys.readouterr().out
    assert code == 0
    assert "1 peer(s) outside the allowed networks were not contacted" in out
    # The user hash was created, once, even though nothing was probed.
    assert len((tmp_path / "home" / "keys" / "ed2k-userhash").read_text().strip()) == 32
