"""peerwatch: open, verifiable watch of P2P networks for known hashes (hashes and metadata only)."""

__version__ = "0.1.0"
