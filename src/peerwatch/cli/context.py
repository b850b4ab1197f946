"""What every command gets: the App built from the global options, and the consoles."""

from __future__ import annotations

import typer
from rich.console import Console

from peerwatch.app import App

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


def app_of(ctx: typer.Context) -> App:
    root = ctx.find_root()
    obj = root.obj
    if not isinstance(obj, App):
        raise RuntimeError("global options were not parsed")  # a programming error, not the user's
    return obj
