"""Sans-IO protocol codecs and state machines: bytes and `now` in, events and bytes out."""
