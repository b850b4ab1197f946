"""The shared département boundaries (DESIGN.md, "Shared data"): found where the lab finds them;
missing, a test skips locally with the reason and fails under CI, where every test must run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from peerwatch.lab.geography import shared_boundaries, shared_data_dirs

OVERSEAS_NAME = "fr-departements-with-overseas.geojson"
SIMPLIFIED_NAME = "fr-departements-simplified.geojson"


def boundaries_path(name: str = OVERSEAS_NAME) -> Path:
    """The path the file would have (for module constants); `require_boundaries` checks it."""
    found = shared_boundaries(name)
    return found if found is not None else shared_data_dirs()[0] / name


def require_boundaries(name: str = OVERSEAS_NAME) -> Path:
    found = shared_boundaries(name)
    if found is not None:
        return found
    where = ", ".join(str(d) for d in shared_data_dirs())
    reason = f"shared boundaries file {name} not found in {where} (set PEERWATCH_SHARED_DATA)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
