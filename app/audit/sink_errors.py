"""What every ledger-checkpoint sink shares (anchor.py, s3sink.py), in a module of its own so
the sinks do not import each other."""

from __future__ import annotations

PUBLIC_KEY_FILE = "ledger-public-key.pem"


class AnchorError(Exception):
    """The sink or the key cannot be used (a message for the operator)."""
