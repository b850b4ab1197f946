"""BitTorrent codecs: sans-IO, bytes in, values or events out (house rule 1)."""
