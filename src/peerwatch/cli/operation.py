"""`peerwatch operation ...` and the claim commands of `peerwatch target`: deconfliction and
national operations."""

from __future__ import annotations

import typer

operation_cli = typer.Typer(help="National operations: frozen sets of leads, dispatched per unit.")
