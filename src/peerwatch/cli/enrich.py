"""`peerwatch geoip|netflags|jurisdictions|units ...`: where an address is and whose case it is."""

from __future__ import annotations

import typer

geoip_cli = typer.Typer(help="GeoIP and ASN databases (MaxMind DB format).")
netflags_cli = typer.Typer(help="Network flag lists: Tor exits, VPN/hosting and CGNAT/mobile ASNs.")
jurisdictions_cli = typer.Typer(help="Jurisdictions (GeoJSON polygons or subdivision codes).")
units_cli = typer.Typer(help="Police units and the jurisdictions each one covers.")
