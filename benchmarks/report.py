"""Shared by the benchmarks: machine description and their sections of docs/benchmarks.md.

Each benchmark owns one section of the file, between `<!-- bench:NAME:start -->` and
`<!-- bench:NAME:end -->`; writing a section replaces only that section and keeps the others.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"

_HEADER = """# Benchmarks

Written by the scripts in `benchmarks/`; each script replaces only its own section. Every
benchmark uses generated random data with a fixed seed, never real hash lists.
"""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _memory_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return f"{kib / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return "unknown"


def machine_info() -> str:
    """A short markdown list describing this machine and the software versions, with the date."""
    uname = platform.uname()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "\n".join(
        [
            f"- date: {when}",
            f"- CPU: {_cpu_model()} ({uname.machine}), {os.cpu_count()} logical CPUs",
            f"- memory: {_memory_total()}",
            f"- OS: {uname.system} {uname.release}",
            f"- Python {platform.python_version()} ({sys.implementation.name}), "
            f"numpy {np.__version__}",
        ]
    )


def _markers(name: str) -> tuple[str, str]:
    if not re.fullmatch(r"[a-z0-9_-]+", name):
        raise ValueError(f"section name {name!r}: use lowercase letters, digits, '-' and '_'")
    return f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"


def write_section(name: str, markdown: str, path: Path = DEFAULT_PATH) -> None:
    """Put `markdown` in section `name` of `path`, creating the file or appending the section."""
    start, end = _markers(name)
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else _HEADER
    begin = text.find(start)
    if begin >= 0:
        finish = text.find(end, begin)
        if finish < 0:
            raise ValueError(f"{path}: {start} has no matching {end}")
        text = text[:begin] + block + text[finish + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
