"""The `peerwatch` command end to end, in-process, on SQLite in a temporary --home."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from pathlib import Path

import pytest

from peerwatch.cli.main import cli, run
from peerwatch.lab import content
from peerwatch.settings import SETTINGS

DOCS = Path(__file__).resolve().parents[2] / "docs"


def pw(home: Path, *args: str) -> int:
    return run(["--home", str(home), *args])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def vics(tmp_path: Path) -> tuple[Path, list[content.BenignFile]]:
    files = content.make_files(tmp_path / "c", 3, seed=5, max_size=20_000)
    path = tmp_path / "cases.json"
    path.write_text(content.vics_v2(files))
    return path, files


def test_help_is_useful(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"]) == 0
    text = capsys.readouterr().out
    for word in ("--home", "--database-url", "watchlist", "evidence", "observations", "demo"):
        assert word in text
    assert run(["watchlist", "import", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--skip-invalid" in text and "--kind" in text and "--list" in text


def test_import_lists_match_remove(
    home: Path, vics: tuple[Path, list[content.BenignFile]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, files = vics
    assert pw(home, "watchlist", "import", str(path), "--list", "cases") == 0
    assert "imported list cases version 1: 3 records, 9 hashes" in capsys.readouterr().out
    assert pw(home, "watchlist", "import", str(path), "--list", "cases") == 0
    assert "nothing changed" in capsys.readouterr().out
    assert pw(home, "watchlist", "lists", "--json") == 0
    (info,) = json.loads(capsys.readouterr().out)
    assert (info["name"], info["version"], info["hashes"]) == ("cases", 1, 9)
    assert pw(home, "watchlist", "match", files[1].sha256, "--json") == 0
    (m,) = json.loads(capsys.readouterr().out)
    assert (m["list"], m["kind"], m["location"]) == ("cases", "sha256", "record 2 (MediaID 2)")
    assert pw(home, "watchlist", "match", "00" * 20) == 1
    assert "no match" in capsys.readouterr().out
    assert pw(home, "watchlist", "stats") == 0
    assert re.search(r"9 hashes; match index: 9 entries", capsys.readouterr().out)
    assert pw(home, "watchlist", "remove", "--list", "cases") == 0
    assert pw(home, "watchlist", "remove", "--list", "cases") == 2


def test_bad_input_names_file_line_field_and_writes_nothing(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("md5,sha1,colour\n" + "a" * 32 + "," + "b" * 40 + ",red\n")
    assert pw(home, "watchlist", "import", str(bad)) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "line 1" in err and "colour" in err
    assert pw(home, "watchlist", "lists", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert pw(home, "watchlist", "match", "xyz") == 2
    assert "hash 1" in capsys.readouterr().err


def amuled_available() -> bool:
    from peerwatch.lab.amule import amuled_available as available

    return available()


def test_demo_then_verify_then_tamper(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.interop.conftest import require_lab_tools

    require_lab_tools(tracker=False)
    # Its own loopback /24, so that it never meets the interop tests' lab on 127.0.2.x; the
    # whole flow without serving the web app (tests/cli/test_demo_serve.py serves it).
    demo = ["demo", "--peers", "5", "--lab-net", "127.0.8.", "--sensor-ip", "127.0.3.30"]
    demo += ["--amule-net", "127.0.108."]
    assert pw(home, *demo, "--no-serve") == 0
    out = capsys.readouterr().out
    assert "peers holding watched content: 4, proven: 4" in out
    assert "peers holding only unwatched content proven: 0" in out
    if amuled_available() or os.environ.get("CI"):  # CI installs amuled: never skipped there
        # Seven aMule peers: six share watched files (one requires obfuscation), one does not.
        assert "aMule peers sharing watched files: 6, proven: 6; others proven: 0" in out
        assert re.search(r"verify-peer 127\.0\.108\.2:\d+ ed2k:[0-9a-f]{32}: 1 of 1 part", out)
    else:
        assert "no aMule peers" in out
    assert re.search(r"verify\.sh \(openssl only\): \d+ records checked, 0 problems", out)
    assert "lab stopped" in out
    assert "  sign in as: demo\n" in out and "serve --port 8470" in out
    assert pw(home, "evidence", "verify") == 0
    verified = capsys.readouterr().out
    count = int(re.search(r"sensor local: (\d+) records", verified).group(1))  # type: ignore[union-attr]
    assert count > 8

    assert pw(home, "observations", "--format", "jsonl") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == count and json.loads(lines[2])["seq"] == 3
    assert pw(home, "observations", "--format", "csv", "--ip", "127.0.8.1") == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("sensor,seq,observed") and len(rows) > 2

    bundle = home / "case"
    assert pw(home, "evidence", "export", "--out", str(bundle), "--since", "2020-01-01") == 0
    assert f"wrote {count} records from 1 sensor(s)" in capsys.readouterr().out
    key = home / "local.pem"
    assert pw(home, "evidence", "public-key") == 0
    key.write_text(capsys.readouterr().out)
    assert run(["evidence", "verify-bundle", str(bundle), "--public-key", str(key)]) == 0
    assert "OK" in capsys.readouterr().out

    db = sqlite3.connect(home / "peerwatch.db")
    db.execute(
        "UPDATE evidence_records SET record = replace(record, '127.0', '127.1') WHERE seq = 3"
    )
    db.commit()
    db.close()
    assert pw(home, "evidence", "verify") == 4
    err = capsys.readouterr().err
    assert "first bad record: sensor 'local' record 3" in err


def _command_paths() -> list[str]:
    import typer.main

    group = typer.main.get_command(cli)
    paths: list[str] = []

    def walk(cmd: object, prefix: str) -> None:
        commands = getattr(cmd, "commands", None)
        if commands is None:
            paths.append(prefix)
            return
        for name, sub in commands.items():
            walk(sub, f"{prefix} {name}".strip())

    walk(group, "")
    return paths


def test_every_command_and_setting_is_documented() -> None:
    cli_doc = (DOCS / "cli.md").read_text()
    paths = _command_paths()
    assert "watchlist import" in paths and "evidence verify-bundle" in paths
    missing = [p for p in paths if f"peerwatch {p}" not in cli_doc]
    assert missing == [], f"commands missing from docs/cli.md: {missing}"
    settings_doc = (DOCS / "settings.md").read_text()
    undocumented = [s.name for s in SETTINGS if f"`{s.env}`" not in settings_doc]
    assert undocumented == []
