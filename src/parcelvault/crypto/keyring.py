"""The key folder and the per-subject data keys.

The key folder holds three secrets, each a file of base64 text, mode 0600:

- ``kek.key``: the key-encryption key; it wraps every data subject's data key;
- ``lookup.key``: the HMAC key of subject ids and postcode digests;
- ``session.key``: the HMAC key that signs recipient-verification cookies.

A data key is 32 random bytes, used with AES-256-GCM for every personal field of its
subject. It is stored only wrapped: ``0x01 || nonce || AES-GCM(kek, data key)`` with
the subject id as associated data, so a wrapped key moved to another subject fails.
Destroying a subject's wrapped key makes all of its sealed fields unreadable.
"""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from parcelvault.crypto.sealing import NONCE_BYTES, SealError

KEY_NAMES = ("kek", "lookup", "session")
WRAP_VERSION = b"\x01"


class KeyFolderError(Exception):
    pass


def _path(folder: Path, name: str) -> Path:
    return folder / f"{name}.key"


def create_key_folder(folder: Path) -> list[Path]:
    """Write fresh keys; refuses if any key file exists, so nothing is ever overwritten."""
    existing = [p for p in (_path(folder, n) for n in KEY_NAMES) if p.exists()]
    if existing:
        names = ", ".join(str(p) for p in existing)
        raise KeyFolderError(f"refusing to overwrite existing keys: {names}")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    written = []
    for name in KEY_NAMES:
        path = _path(folder, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(os.urandom(32)).decode() + "\n")
        written.append(path)
    return written


def key_folder_exists(folder: Path) -> bool:
    return any(_path(folder, n).exists() for n in KEY_NAMES)


def _read_key(folder: Path, name: str) -> bytes:
    path = _path(folder, name)
    try:
        mode = path.stat().st_mode
        raw = base64.b64decode(path.read_text().strip(), validate=True)
    except FileNotFoundError as exc:
        raise KeyFolderError(f"missing key file {path}; run `parcelvault init`") from exc
    except ValueError as exc:
        raise KeyFolderError(f"key file {path} is not base64") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFolderError(f"key file {path} is readable by others; chmod 600 it")
    if len(raw) != 32:
        raise KeyFolderError(f"key file {path} must hold 32 bytes")
    return raw


@dataclass(frozen=True)
class Keys:
    kek: bytes
    lookup: bytes
    session: bytes

    @classmethod
    def load(cls, folder: Path) -> Keys:
        return cls(*(_read_key(folder, name) for name in KEY_NAMES))


class Keyring:
    def __init__(self, keys: Keys) -> None:
        self._kek = AESGCM(keys.kek)
        self.lookup_key = keys.lookup
        self.session_key = keys.session

    @staticmethod
    def new_data_key() -> bytes:
        return AESGCM.generate_key(bit_length=256)

    def wrap(self, data_key: bytes, subject_id: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return WRAP_VERSION + nonce + self._kek.encrypt(nonce, data_key, subject_id.encode())

    def seal_secret(self, secret: bytes, purpose: str) -> bytes:
        """Seal a service secret (e.g. a staff TOTP seed) under the key-encryption key."""
        return self.wrap(secret, f"secret:{purpose}")

    def open_secret(self, sealed: bytes, purpose: str) -> bytes:
        if sealed[:1] != WRAP_VERSION:
            raise SealError("unknown sealed-secret format")
        try:
            return self._kek.decrypt(
                sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :], f"secret:{purpose}".encode()
            )
        except InvalidTag as exc:
            raise SealError("secret failed to open") from exc

    def unwrap(self, wrapped: bytes, subject_id: str) -> AESGCM:
        if wrapped[:1] != WRAP_VERSION:
            raise SealError("unknown wrapped-key format")
        try:
            key = self._kek.decrypt(
                wrapped[1 : 1 + NONCE_BYTES], wrapped[1 + NONCE_BYTES :], subject_id.encode()
            )
        except InvalidTag as exc:
            raise SealError("data key failed to unwrap") from exc
        return AESGCM(key)
