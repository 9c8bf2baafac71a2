"""Cross-cutting pieces: errors, tokens and hashing, canonical JSON."""
