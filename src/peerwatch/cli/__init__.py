"""Command line: one module per command group; parse, call the app, render (house rule 8)."""
