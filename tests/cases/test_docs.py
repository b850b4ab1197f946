"""docs/case-package.md documents every field of case.json and manifest.json, and the shell steps
it gives a defence expert work on a real package."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from peerwatch.evidence.bundle import verify_bundle
from tests.cases.conftest import CGNAT, PARIS, Lab
from tests.cases.test_export import _export

DOC = Path(__file__).resolve().parents[2] / "docs" / "case-package.md"


def _keys(value: Any) -> set[str]:
    """Every object key in a JSON value, at any depth (keys of `sensors` are sensor ids)."""
    out: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            out.add(k)
            out |= _keys(v)
    elif isinstance(value, list):
        for v in value:
            out |= _keys(v)
    return out


def test_every_field_is_documented(lab: Lab) -> None:
    text = DOC.read_text()
    for ip, name in ((PARIS, "paris"), (CGNAT, "cgnat")):
        out = lab.tmp / name
        _export(lab, ip, out)
        doc = json.loads((out / "case.json").read_text())
        manifest = json.loads((out / "manifest.json").read_text())
        fields = _keys(doc) - set(doc["evidence"]["sensors"])
        fields |= _keys({k: v for k, v in manifest.items() if k != "files"})
        missing = sorted(k for k in fields if f"`{k}`" not in text)
        assert missing == [], f"case.json / manifest.json fields missing from the docs: {missing}"


MANIFEST_CHECK = (
    "jq -r '.files | to_entries[] | \"\\(.value)  \\(.key)\"' manifest.json | sha256sum -c"
)


def _sh(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a pipeline exactly as the docs give it."""
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, capture_output=True, text=True, check=False
    )


def test_the_documented_shell_steps_work(lab: Lab) -> None:
    for tool in ("jq", "sha256sum", "openssl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    text = DOC.read_text()
    assert MANIFEST_CHECK in text
    out = lab.tmp / "case"
    _export(lab, PARIS, out)
    files = _sh(MANIFEST_CHECK, out)
    assert files.returncode == 0, files.stdout + files.stderr
    listed = json.loads((out / "manifest.json").read_text())["files"]
    assert files.stdout.count(": OK") == len(listed)
    fingerprint = (
        "openssl pkey -pubin -in evidence/keys/SENSOR.pem -outform DER | tail -c 32 | sha256sum"
    )
    assert fingerprint.replace("SENSOR", "s1") in text
    for sensor, expected in verify_bundle(out / "evidence").key_fingerprints.items():
        done = _sh(fingerprint.replace("SENSOR", sensor), out)
        assert done.returncode == 0 and done.stdout.split()[0] == expected
    # A changed file is caught by the same pipeline.
    path = out / "case.json"
    path.write_text(path.read_text().replace("cases.csv", "other.csv"))
    again = _sh(MANIFEST_CHECK, out)
    assert again.returncode != 0 and "case.json: FAILED" in again.stdout
