"""The key folder and the per-subject data keys.

The key folder holds three secrets, each a file of base64 text, mode 0600:

- ``kek.key``: the key-encryption key; it wraps every data subject's data key. After
  `parcelvault keys rotate`, newer ones sit beside it as ``kek-2.key``, ``kek-3.key``...;
  the highest number wraps new keys, older ones only unwrap until rotation finishes;
- ``lookup.key``: the HMAC key of subject ids and postcode digests;
- ``session.key``: the HMAC key that signs recipient-verification cookies.

A data key is 32 random bytes, used with AES-256-GCM for every personal field of its
subject. It is stored only wrapped, in the key store (`crypto.keystore`):
``0x02 || kek id (2 bytes, big-endian) || nonce || AES-GCM(kek, data key)`` with the
subject id as associated data, so a wrapped key moved to another subject fails
(``0x01 || nonce || ...`` is the older form, always under ``kek.key``). Destroying a
subject's wrapped key makes all of its sealed fields unreadable.
"""

from __future__ import annotations

import base64
import os
import re
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from parcelvault.crypto.randomness import RandomBytes
from parcelvault.crypto.sealing import NONCE_BYTES, SealError

KEY_NAMES = ("kek", "lookup", "session")
WRAP_V1 = b"\x01"
WRAP_V2 = b"\x02"
_KEK_FILE = re.compile(r"^kek-(\d{1,5})\.key$")
KEK_REFRESH_SECONDS = 1.0
"""How often a running keyring looks for a newer key-encryption key before wrapping."""
DATA_KEY_BYTES = 32


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


def kek_ids(folder: Path) -> list[int]:
    """The ids of the key-encryption keys in the folder, oldest first."""
    found = [1] if _path(folder, "kek").exists() else []
    for path in folder.glob("kek-*.key"):
        match = _KEK_FILE.match(path.name)
        if match and int(match.group(1)) > 1:
            found.append(int(match.group(1)))
    return sorted(found)


def _kek_name(kek_id: int) -> str:
    return "kek" if kek_id == 1 else f"kek-{kek_id}"


def kek_path(folder: Path, kek_id: int) -> Path:
    return _path(folder, _kek_name(kek_id))


def add_kek(folder: Path) -> int:
    """Write a new key-encryption key with the next id; returns the id."""
    new_id = max(kek_ids(folder), default=0) + 1
    # Written under a temporary name and linked into place, so a running service that
    # looks at the folder meanwhile never reads a half-written key.
    temporary = folder / f".kek-{new_id}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(os.urandom(32)).decode() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temporary, kek_path(folder, new_id))
    finally:
        temporary.unlink(missing_ok=True)
    return new_id


@dataclass(frozen=True)
class Keys:
    kek: bytes
    lookup: bytes
    session: bytes
    older_keks: tuple[tuple[int, bytes], ...] = ()
    kek_id: int = 1

    @classmethod
    def load(cls, folder: Path) -> Keys:
        ids = kek_ids(folder)
        if not ids:
            raise KeyFolderError(f"missing key file {_path(folder, 'kek')}; run `parcelvault init`")
        keks = {i: _read_key(folder, _kek_name(i)) for i in ids}
        active = ids[-1]
        return cls(
            kek=keks[active],
            lookup=_read_key(folder, "lookup"),
            session=_read_key(folder, "session"),
            older_keks=tuple((i, keks[i]) for i in ids[:-1]),
            kek_id=active,
        )


class Keyring:
    """The keys of one key folder. With `folder` (see `from_folder`) it follows the folder
    while a service runs: a newer key-encryption key written by `parcelvault keys rotate`
    becomes the one that wraps new keys within `KEK_REFRESH_SECONDS`, and a wrapped key
    naming a key-encryption key it has not loaded makes it read the folder again.
    Key-encryption keys once loaded are never forgotten by a running keyring."""

    def __init__(self, keys: Keys, folder: Path | None = None) -> None:
        self.kek_id = keys.kek_id
        keks = {keys.kek_id: AESGCM(keys.kek)}
        keks.update({i: AESGCM(k) for i, k in keys.older_keks})
        self._keks = keks
        self._kek = keks[keys.kek_id]
        self.lookup_key = keys.lookup
        self.session_key = keys.session
        self.folder = folder
        self._checked_at = time.monotonic()
        self._reload_lock = threading.Lock()

    @classmethod
    def from_folder(cls, folder: Path) -> Keyring:
        return cls(Keys.load(folder), folder)

    def reload(self) -> bool:
        """Learn key-encryption keys written to the folder since it was loaded and
        switch to the newest; returns whether anything changed."""
        if self.folder is None:
            return False
        with self._reload_lock:
            self._checked_at = time.monotonic()
            unseen = [i for i in kek_ids(self.folder) if i not in self._keks]
            if not unseen:
                return False
            keks = dict(self._keks)
            for kek_id in unseen:
                keks[kek_id] = AESGCM(_read_key(self.folder, _kek_name(kek_id)))
            newest = max(keks)
            self._keks = keks
            self._kek, self.kek_id = keks[newest], newest
            return True

    def _follow_folder(self) -> None:
        if self.folder is not None and time.monotonic() - self._checked_at >= KEK_REFRESH_SECONDS:
            try:
                self.reload()
            except (OSError, KeyFolderError):
                # Keep wrapping with the key in hand; an unreadable new file is reported
                # by `keys status` and by the next unwrap that needs it.
                self._checked_at = time.monotonic()

    @property
    def kek_ids(self) -> list[int]:
        return sorted(self._keks)

    @staticmethod
    def new_data_key(random_bytes: RandomBytes = os.urandom) -> bytes:
        """A 256-bit AES-GCM data key."""
        return random_bytes(DATA_KEY_BYTES)

    def wrap(
        self, data_key: bytes, subject_id: str, random_bytes: RandomBytes = os.urandom
    ) -> bytes:
        self._follow_folder()
        kek_id, kek = self.kek_id, self._keks[self.kek_id]
        nonce = random_bytes(NONCE_BYTES)
        return (
            WRAP_V2
            + kek_id.to_bytes(2, "big")
            + nonce
            + kek.encrypt(nonce, data_key, subject_id.encode())
        )

    @staticmethod
    def wrapped_by(wrapped: bytes) -> int:
        """The id of the key-encryption key that wrapped `wrapped`."""
        if wrapped[:1] == WRAP_V1:
            return 1
        if wrapped[:1] == WRAP_V2 and len(wrapped) > 3:
            return int.from_bytes(wrapped[1:3], "big")
        raise SealError("unknown wrapped-key format")

    def unwrap_key(self, wrapped: bytes, subject_id: str) -> bytes:
        kek_id = self.wrapped_by(wrapped)
        body = wrapped[1:] if wrapped[:1] == WRAP_V1 else wrapped[3:]
        kek = self._keks.get(kek_id)
        if kek is None:
            try:
                self.reload()
            except (OSError, KeyFolderError) as exc:
                raise SealError(f"key-encryption key {kek_id} cannot be loaded") from exc
            kek = self._keks.get(kek_id)
        if kek is None:
            raise SealError(f"key-encryption key {kek_id} is not in the key folder")
        try:
            return kek.decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], subject_id.encode())
        except InvalidTag as exc:
            raise SealError("data key failed to unwrap") from exc

    def unwrap(self, wrapped: bytes, subject_id: str) -> AESGCM:
        return AESGCM(self.unwrap_key(wrapped, subject_id))

    def rewrap(self, wrapped: bytes, subject_id: str) -> bytes:
        """The same data key wrapped by the newest key-encryption key."""
        return self.wrap(self.unwrap_key(wrapped, subject_id), subject_id)

    def rewrap_many(self, items: Sequence[tuple[str, bytes]], kek_id: int) -> list[bytes]:
        """Re-wrap many (subject id, wrapped key) pairs under key-encryption key `kek_id`
        (the rotation's hot loop: one nonce draw for the whole batch, no per-key
        lookups). Raises SealError naming nothing personal if any key fails."""
        target = self._keks.get(kek_id)
        if target is None:
            self.reload()
            target = self._keks.get(kek_id)
        if target is None:
            raise SealError(f"key-encryption key {kek_id} is not in the key folder")
        header = WRAP_V2 + kek_id.to_bytes(2, "big")
        nonces = os.urandom(NONCE_BYTES * len(items))
        keks = self._keks
        out: list[bytes] = []
        append = out.append
        start = 0
        for subject_id, wrapped in items:
            associated = subject_id.encode()
            if wrapped[:1] == WRAP_V2 and len(wrapped) > 3 + NONCE_BYTES:
                kek = keks.get(int.from_bytes(wrapped[1:3], "big"))
                body = wrapped[3:]
            else:
                kek, body = None, b""
            if kek is None:
                data_key = self.unwrap_key(wrapped, subject_id)
            else:
                try:
                    data_key = kek.decrypt(body[:NONCE_BYTES], body[NONCE_BYTES:], associated)
                except InvalidTag as exc:
                    raise SealError("data key failed to unwrap") from exc
            nonce = nonces[start : start + NONCE_BYTES]
            start += NONCE_BYTES
            append(header + nonce + target.encrypt(nonce, data_key, associated))
        return out

    def seal_secret(self, secret: bytes, purpose: str) -> bytes:
        """Seal a service secret (e.g. a staff TOTP seed) under the key-encryption key."""
        return self.wrap(secret, f"secret:{purpose}")

    def open_secret(self, sealed: bytes, purpose: str) -> bytes:
        try:
            return self.unwrap_key(sealed, f"secret:{purpose}")
        except SealError as exc:
            raise SealError("secret failed to open") from exc

    def reseal_secret(self, sealed: bytes, purpose: str) -> bytes:
        """The same secret sealed under the newest key-encryption key."""
        return self.seal_secret(self.open_secret(sealed, purpose), purpose)
