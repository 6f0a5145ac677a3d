"""Bearer secrets, for people (``fw_``) and robots (``fwr_``): minted and hashed in one place.

A secret is 256 random bits, shown once when it is issued; only its SHA-256 is stored. With
that much randomness a fast hash is enough, and a leaked table leaks no credential.
"""

from __future__ import annotations

import hashlib
import secrets


def new_secret(prefix: str) -> str:
    """A fresh secret: ``prefix`` (which says whose it is) and 256 random bits."""
    return prefix + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    """What is stored of a secret, and what a presented one is looked up by."""
    return hashlib.sha256(secret.encode()).hexdigest()
