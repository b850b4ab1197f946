"""Sensors: sweeps, probes and single-source verification, turning protocol events into
observations for the evidence log."""
