"""`peerwatch leads` and `peerwatch target ...`: targets, their score and their links, explained."""

from __future__ import annotations

import typer

target_cli = typer.Typer(help="One target: its identity links, score, observations and claim.")
