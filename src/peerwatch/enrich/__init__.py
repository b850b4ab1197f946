"""Enrichment: GeoIP, network flags, jurisdictions and units (issue 4)."""
