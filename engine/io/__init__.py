"""Files: atomic writes, weights-only checkpoint loading, cache and config paths."""
