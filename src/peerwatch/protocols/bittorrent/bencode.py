"""Typed access to fastbencode (BEP 3 bencoding), the one place that imports it.

fastbencode re-exports its functions from a compiled module without `as`, which `mypy --strict`
reads as "not exported": the ignores below are for that, and only here.
"""

from __future__ import annotations

from typing import Any, cast

import fastbencode


def bencode(value: Any) -> bytes:
    return bytes(fastbencode.bencode(value))  # type: ignore[attr-defined]


def bdecode(data: bytes) -> Any:
    """Decode strictly canonical bencode; raises ValueError (or a fastbencode error) otherwise."""
    return cast(Any, fastbencode.bdecode(data))  # type: ignore[attr-defined]
