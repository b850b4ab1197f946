"""Hash lists: formats (one module each), import with provenance, and the compact match index."""
