"""Leads: targets, scores, claims and deconfliction, alerts, national operations (issue 4)."""
