"""Keyed hashes (HMAC-SHA256) for equality lookups on personal data.

Subject ids are keyed hashes of a normalized e-mail address or phone number, so the
same person gets the same subject across shipments, and nobody without the lookup
key can test a guessed address against the database. Postcode checks hash the
postcode together with the shipment id, so equal postcodes on two shipments do not
produce equal hashes.
"""

from __future__ import annotations

import hmac
import re

ERASED_DIGEST = bytes(32)
"""Stands in for the postcode digest of an erased shipment; no postcode hashes to it."""


def normalize_email(address: str) -> str:
    return address.strip().lower()


def normalize_phone(number: str) -> str:
    digits = re.sub(r"[^\d+]", "", number.strip())
    return digits.replace("+", "", digits.count("+") - 1) if digits.count("+") > 1 else digits


def normalize_postcode(postcode: str) -> str:
    return re.sub(r"[\s\-]", "", postcode).upper()


def _mac(key: bytes, *parts: str) -> bytes:
    return hmac.digest(key, "\x1f".join(parts).encode(), "sha256")


def subject_id(key: bytes, *, email: str | None, phone: str | None) -> str | None:
    """The subject of a contact, preferring the e-mail address; None without either."""
    if email:
        return _mac(key, "email", normalize_email(email)).hex()
    if phone:
        return _mac(key, "phone", normalize_phone(phone)).hex()
    return None


def postcode_digest(key: bytes, *, record_id: str, postcode: str) -> bytes:
    return _mac(key, "postcode", record_id, normalize_postcode(postcode))


def digests_match(expected: bytes, candidate: bytes) -> bool:
    return hmac.compare_digest(expected, candidate)
