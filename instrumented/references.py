"""The references people read out and type back: error references, profile and arm ids, sample references.

Crockford's base32 alphabet (no i, l, o, u, so a reference survives being read over the phone), 14 characters:
70 random bits. One format for every feature, so one check refuses a forged one wherever it is read back.
"""

from __future__ import annotations

import secrets

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
REFERENCE_LENGTH = 14


def new_reference() -> str:
    """A random, URL-safe, case-insensitive reference, e.g. ``7kq2m9x4d1h8vz``."""
    return "".join(secrets.choice(ALPHABET) for _ in range(REFERENCE_LENGTH))


def normalize_reference(value: object) -> str | None:
    """The canonical (lower-case) form of a reference typed by a person, or None when it cannot be one."""
    if not isinstance(value, str) or len(value) != REFERENCE_LENGTH:
        return None
    value = value.lower()
    return value if all(c in ALPHABET for c in value) else None


def is_reference(value: object) -> bool:
    """Whether ``value`` is a reference in its canonical form (what a stored value must hold)."""
    return isinstance(value, str) and normalize_reference(value) == value
