"""What every command gets: the App built from the global options, and the consoles."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from peerwatch.app import App

# Piped output (files, CI logs, `| less`) gets wide lines instead of rich's 80-column default, so
# tables keep one observation per line; on a terminal rich follows the terminal's width.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
# Errors never wrap: a path cut in two cannot be pasted back, and a wrapped message splits greps.
err = Console(stderr=True, highlight=False, soft_wrap=True)


def app_of(ctx: typer.Context) -> App:
    root = ctx.find_root()
    obj = root.obj
    if not isinstance(obj, App):
        raise RuntimeError("global options were not parsed")  # a programming error, not the user's
    return obj
