"""The evidence log: canonical observation records, hash chain, Ed25519 signatures, verify,
bundles."""
