"""Random tokens, their stored hashes, keyed pseudonyms and canonical JSON hashing."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import Any

TOKEN_BYTES = 32  # 256 bits: unguessable even at very high request rates


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    """Tokens are high-entropy, so a plain SHA-256 (no salt, no stretching) is enough to store."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def sha256_json(value: Any) -> str:
    return sha256_text(canonical_json(value))


def keyed_pseudonym(key: bytes | str, internal_id: str, length: int = 16) -> str:
    """HMAC-SHA256 of an internal id; without the key it cannot be linked back."""
    key_bytes = key.encode("utf-8") if isinstance(key, str) else key
    digest = hmac.new(key_bytes, internal_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:length]


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
