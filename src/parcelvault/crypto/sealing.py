"""Field sealing with AES-256-GCM.

Sealed value layout: ``0x01 || nonce (12 bytes) || ciphertext+tag``. The associated
data binds a ciphertext to its data subject, record and field
(``subject|record_id|field``), so a ciphertext copied into another row, field or
subject fails to open instead of being shown as someone else's data.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from parcelvault.crypto.randomness import RandomBytes

VERSION = b"\x01"
NONCE_BYTES = 12


class SealError(Exception):
    """A sealed value did not open: wrong key, wrong place, or altered bytes."""


def associated_data(subject_id: str, record_id: str, field: str) -> bytes:
    return f"{subject_id}|{record_id}|{field}".encode()


def seal(
    cipher: AESGCM, plaintext: str, ad: bytes, random_bytes: RandomBytes = os.urandom
) -> bytes:
    nonce = random_bytes(NONCE_BYTES)
    return VERSION + nonce + cipher.encrypt(nonce, plaintext.encode(), ad)


def open_sealed(cipher: AESGCM, sealed: bytes, ad: bytes) -> str:
    if sealed[:1] != VERSION or len(sealed) < 1 + NONCE_BYTES + 16:
        raise SealError("unknown sealed-value format")
    try:
        plain = cipher.decrypt(sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :], ad)
    except InvalidTag as exc:
        raise SealError("sealed value failed authentication") from exc
    return plain.decode()


def open_records(
    cipher: AESGCM, subject_id: str, rows: Iterable[Any]
) -> tuple[dict[str, dict[str, str]], list[tuple[str, str]]]:
    """Open sealed rows (with `record_id`, `field`, `value`) of one subject into
    record id -> field -> value; also the (record id, field) of each row that failed to
    open, for the caller to report (a failure names no value)."""
    opened: dict[str, dict[str, str]] = {}
    failed: list[tuple[str, str]] = []
    for row in rows:
        ad = associated_data(subject_id, row.record_id, row.field)
        try:
            opened.setdefault(row.record_id, {})[row.field] = open_sealed(cipher, row.value, ad)
        except SealError:
            failed.append((row.record_id, row.field))
    return opened, failed
