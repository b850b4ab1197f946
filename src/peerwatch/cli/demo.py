"""`peerwatch demo`: the most complete flow that exists today, on benign generated data.

It grows with the project: the BitTorrent sensor and its lab swarm (issue 3), leads (issue 4) and
the web app (issue 5) take their place here as they land.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import typer
from rich.rule import Rule

from peerwatch.cli.context import app_of, out
from peerwatch.domain.hashes import HashKind
from peerwatch.errors import EvidenceError
from peerwatch.evidence import bundle
from peerwatch.evidence.log import RecordFilter
from peerwatch.evidence.record import Observation
from peerwatch.lab import content
from peerwatch.watchlist.index import MatchIndex


def demo(ctx: typer.Context) -> None:
    """Run the demo in --home: generate benign files and lists, import, match, sign, verify."""
    app = app_of(ctx)
    home = app.settings.home
    home.mkdir(parents=True, exist_ok=True)
    out.print(Rule("1. benign content and hash lists (random bytes, generated here)"))
    files = content.make_files(home / "content", 6, seed=7)
    lists = home / "lists"
    lists.mkdir(exist_ok=True)
    (lists / "demo-vics.json").write_text(content.vics_v2(files[:3], category=1))
    (lists / "demo.csv").write_text(content.csv_list(files[3:5], category="2"))
    torrent = content.torrent_v1(files[4:], "demo-set")
    (lists / "demo-set.torrent").write_bytes(torrent)
    btih = content.infohash_v1(torrent)
    for f in files:
        out.print(f"  {f.path.name}  {f.size:>7,} bytes  sha1 {f.sha1}")

    out.print(Rule("2. watchlist import (VICS 2.0, CSV, .torrent)"))
    for path, name in (
        (lists / "demo-vics.json", "demo-vics"),
        (lists / "demo.csv", "demo-csv"),
        (lists / "demo-set.torrent", "demo-torrents"),
    ):
        r = app.watchlist.import_files([path], list_name=name)
        state = "unchanged" if r.unchanged else f"version {r.version}"
        out.print(f"  {name}: {state}, {r.items} records, {r.hashes} hashes")

    out.print(Rule("3. match index"))
    index = MatchIndex.from_rows(app.watchlist.iter_active_hashes(), total=None, progress=None)
    out.print(f"  {len(index)} entries in {index.nbytes:,} bytes")
    for f in files:
        hit = index.contains(HashKind.SHA1, bytes.fromhex(f.sha1))
        out.print(f"  sha1 {f.sha1[:16]}...  watched: {hit}")
    out.print(
        f"  torrent infohash {btih}  watched: {index.contains(HashKind.BTIH, bytes.fromhex(btih))}"
    )

    out.print(Rule("4. evidence log (synthetic records: no peer is contacted yet)"))
    now = time.time_ns() // 1_000_000
    observations = [
        Observation(
            observed_ms=now + i,
            network="bittorrent",
            method="demo-synthetic",
            content_key=f"btih:{btih}",
            ip=f"127.0.1.{10 + i}",
            port=6881 + i,
            client="demo",
            outcome="synthetic",
            extra={"note": "written by the demo: no network was observed"},
        )
        for i in range(5)
    ]
    seqs = app.evidence.append(observations)
    out.print(
        f"  appended records {seqs[0]}..{seqs[-1]} for sensor {app.settings.sensor_id!r}, "
        "each hash-chained and Ed25519-signed"
    )

    out.print(Rule("5. export a bundle and verify it as a third party would"))
    target = home / "bundles" / f"demo-{now}"
    result = bundle.export_bundle(app.engine, target, RecordFilter(ip="127.0.1.12"))
    report = bundle.verify_bundle(target)
    out.print(
        f"  bundle {target}: {result.records} record(s), peerwatch verify-bundle: "
        + ("OK" if report.ok else f"FAILED {report.problems[0]}")
    )
    # Our own script by absolute path, run by bash from PATH as a user would run it.
    command = ["bash", str(target / "verify.sh")]
    script = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    out.print(f"  verify.sh (openssl only): {script.stdout.strip().splitlines()[-1]}")
    if not report.ok or script.returncode != 0:
        raise EvidenceError("the demo bundle did not verify")
    out.print(Rule())
    pw = _command_name()
    out.print(
        f"Done. Try:\n  {pw} --home {home} watchlist lists\n"
        f"  {pw} --home {home} observations\n"
        f"  {pw} --home {home} evidence verify\n"
        f"  {pw} evidence verify-bundle {target}"
    )


def _command_name() -> str:
    """How the user can run peerwatch again: as typed when it is not on PATH (e.g. .venv/bin)."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "peerwatch" and shutil.which("peerwatch") != str(argv0.resolve()):
        try:
            return str(argv0.resolve().relative_to(Path.cwd()))
        except ValueError:
            return str(argv0)
    return "peerwatch"


__all__ = ["demo"]
