"""`peerwatch sense bittorrent --discover`: what it refuses before touching the network.

The whole command against real peers is in tests/interop/test_discovery.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from peerwatch.cli.main import run


def pw(home: Path, *args: str) -> int:
    return run(["--home", str(home), *args])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give at least one --dht-node"),
        (("--dht-node", "127.0.11.1:6881", "--infohash", "ab" * 20), "takes no --infohash"),
        (("--dht-node", "127.0.11.1:6881", "--walks", "0"), "must be at least 1"),
        (("--dht-node", "nonsense"), "is not HOST:PORT"),
    ],
)
def test_discover_refuses_bad_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    assert pw(tmp_path / "home", "sense", "bittorrent", "--discover", *args) == 2
    assert message in capsys.readouterr().err


def test_discover_is_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["sense", "bittorrent", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--discover" in text and "--walks" in text and "--peers-per-torrent" in text
