"""The corpus: manifest format, procedural composition and rendering, captions, and ingest of real audio."""
