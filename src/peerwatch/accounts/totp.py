"""TOTP second factor (RFC 6238: HMAC-SHA1, 6 digits, 30 s steps), with replay refused.

A code is accepted for the current step or one step either side (clock drift, RFC 6238 section 6)
and only for a step after the last accepted one (section 5.2: a code is used once).
"""

from __future__ import annotations

import hmac

import pyotp

STEP_SECONDS = 30
DRIFT_STEPS = 1


def new_secret() -> str:
    return pyotp.random_base32()  # 160 bits, RFC 4226 section 4's recommended length


def provisioning_uri(secret: str, account: str, issuer: str = "peerwatch") -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)


def code_at(secret: str, step: int) -> str:
    return pyotp.TOTP(secret).at(step * STEP_SECONDS)


def accepted_step(secret: str, code: str, now_ms: int, last_step: int | None) -> int | None:
    """The step `code` is valid for, or None (wrong, expired or already used)."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    now_step = now_ms // 1000 // STEP_SECONDS
    for step in range(now_step - DRIFT_STEPS, now_step + DRIFT_STEPS + 1):
        if last_step is not None and step <= last_step:
            continue
        if hmac.compare_digest(code_at(secret, step), code):
            return step
    return None
