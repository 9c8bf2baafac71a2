"""The staff second factor: time-based one-time codes (RFC 6238, pyotp).

Storage choice: the base32 secret is stored **encrypted** (Fernet: AES-128-CBC + HMAC-SHA256,
from `cryptography`) under a key derived with HKDF-SHA256 from WELLPANEL_SECRET_KEY, so a copy of
the database or a backup alone does not give anyone the second factor. The secret is shown once
at enrollment (as a provisioning URI), never logged, audited or exported. Changing
WELLPANEL_SECRET_KEY makes the stored secrets unreadable: members then enroll again.

Replay: a code is accepted for its own 30-second step and one step either side (clock drift),
and only for a step later than the last one accepted, so the same code never works twice.
"""

from __future__ import annotations

import base64
import hmac
from datetime import datetime

import pyotp
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ISSUER = "wellpanel"
DRIFT_STEPS = 1  # accept the neighbouring 30-second steps too (phones' clocks drift)


def _fernet(secret_key: str) -> Fernet:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"wellpanel staff totp secret").derive(secret_key.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(key))


def new_secret() -> str:
    return pyotp.random_base32()


def seal(secret: str, secret_key: str) -> str:
    return _fernet(secret_key).encrypt(secret.encode("ascii")).decode("ascii")


def unseal(sealed: str, secret_key: str) -> str | None:
    """The secret, or None when it cannot be read (WELLPANEL_SECRET_KEY changed)."""
    try:
        return _fernet(secret_key).decrypt(sealed.encode("ascii")).decode("ascii")
    except (InvalidToken, ValueError):
        return None


def provisioning_uri(secret: str, account: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=ISSUER)


def matching_step(secret: str, code: str, *, now: datetime, after: int | None) -> int | None:
    """The time step `code` belongs to (within the drift), if it is later than `after`."""
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if (after is None or step > after) and hmac.compare_digest(
                totp.generate_otp(step), code):
            return step
    return None
