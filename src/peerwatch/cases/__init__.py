"""Case packages: one target's report (PDF), data (JSON) and evidence bundle, with a manifest."""
