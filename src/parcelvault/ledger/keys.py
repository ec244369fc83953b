"""The log's checkpoint signing key: `ledger-signer.key` in the key folder, a C2SP
signer key string (`PRIVATE+KEY+<origin>+<key id>+<base64 seed>`), mode 0600. Its
name is the log's origin, the first line of every checkpoint."""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from parcelvault.ledger.note import (
    NoteError,
    Signer,
    Verifier,
    format_signer_key,
    format_verifier_key,
    generate_signer,
    parse_signer_key,
    parse_verifier_key,
)

SIGNER_FILE = "ledger-signer.key"


def default_origin() -> str:
    return f"parcelvault-{secrets.token_hex(4)}/ledger"


def create_signer(folder: Path, origin: str | None = None) -> Signer | None:
    """Write a new signing key unless one exists; returns it, or None if one existed."""
    path = folder / SIGNER_FILE
    if path.exists():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    signer = generate_signer(origin or default_origin())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(format_signer_key(signer) + "\n")
    return signer


def load_signer(folder: Path) -> Signer:
    path = folder / SIGNER_FILE
    if not path.exists():
        raise FileNotFoundError(f"missing {path}; run `parcelvault init --exist-ok`")
    if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(f"key file {path} is readable by others; chmod 600 it")
    return parse_signer_key(path.read_text().strip())


# --- rotation ------------------------------------------------------------------------
#
# `parcelvault ledger rotate-key` replaces the signing key with a new one under the same
# name (the log's origin), so checkpoints keep one origin and differ only in key id. The
# retired key's public half is kept in `RETIRED_FILE`, one line per key:
#
#     <verifier key> <first checkpoint size> <last checkpoint size> <retired at, ISO 8601>
#
# (the sizes of the checkpoints it signed; "-" if it signed none). The file holds only
# public keys; `ledger verify` and the transparency page read it so that checkpoints
# signed before a rotation still verify.

RETIRED_FILE = "ledger-retired-verifiers.txt"
STAGED_FILE = "ledger-signer.key.next"


@dataclass(frozen=True)
class RetiredVerifier:
    verifier: Verifier
    first_size: int | None
    last_size: int | None
    retired_at: datetime

    @property
    def key(self) -> str:
        return format_verifier_key(self.verifier)

    def line(self) -> str:
        first = "-" if self.first_size is None else str(self.first_size)
        last = "-" if self.last_size is None else str(self.last_size)
        return f"{self.key} {first} {last} {self.retired_at.isoformat()}"


def _size(text: str) -> int | None:
    return None if text == "-" else int(text)


def retired_verifiers(folder: Path) -> list[RetiredVerifier]:
    """The retired checkpoint keys, oldest first; raises NoteError on a malformed line."""
    path = folder / RETIRED_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        try:
            if len(parts) != 4:
                raise ValueError("expected: key, first size, last size, time")
            found.append(
                RetiredVerifier(
                    parse_verifier_key(parts[0]),
                    _size(parts[1]),
                    _size(parts[2]),
                    datetime.fromisoformat(parts[3]),
                )
            )
        except (ValueError, NoteError) as exc:
            raise NoteError(f"{path} line {number}: {exc}") from exc
    return found


def all_verifiers(folder: Path) -> list[Verifier]:
    """The current signing key's verifier (if the key is there) and every retired one."""
    found = [r.verifier for r in retired_verifiers(folder)]
    if (folder / SIGNER_FILE).exists():
        found.insert(0, load_signer(folder).verifier)
    return found


def signer_since(folder: Path) -> datetime | None:
    """When the current signing key took over: its rotation, else its file's mtime."""
    try:
        retired = retired_verifiers(folder)
    except NoteError:
        retired = []
    if retired:
        return retired[-1].retired_at
    try:
        return datetime.fromtimestamp((folder / SIGNER_FILE).stat().st_mtime, UTC)
    except OSError:
        return None


def stage_next_signer(folder: Path, current: Signer) -> Signer:
    """The key that will replace `current`: written to `STAGED_FILE` (0600) on first
    call, read back on later ones, so an interrupted rotation resumes with the same key."""
    path = folder / STAGED_FILE
    if path.exists():
        staged = parse_signer_key(path.read_text().strip())
        if staged.name != current.name:
            raise NoteError(f"{path} is for the log {staged.name}, not {current.name}")
        return staged
    staged = generate_signer(current.name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(format_signer_key(staged) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return staged


def complete_rotation(
    folder: Path, retiring: Signer, *, first_size: int | None, last_size: int | None, now: datetime
) -> Signer:
    """Record `retiring`'s public key as retired and put the staged key in its place;
    returns the new signer."""
    staged_path = folder / STAGED_FILE
    staged = parse_signer_key(staged_path.read_text().strip())
    known = {r.key for r in retired_verifiers(folder)}
    entry = RetiredVerifier(retiring.verifier, first_size, last_size, now)
    if entry.key not in known:
        path = folder / RETIRED_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            handle.write(entry.line() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    os.replace(staged_path, folder / SIGNER_FILE)
    return staged


class SignerFile:
    """The signing key as a long-running process holds it: read again whenever the file
    changes (after `ledger rotate-key`), so new checkpoints use the new key."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / SIGNER_FILE
        self.folder = folder
        self._stamp: tuple[int, int] | None = None
        self._signer: Signer | None = None

    def get(self) -> Signer:
        stat_result = self.path.stat()
        stamp = (stat_result.st_ino, stat_result.st_mtime_ns)
        if self._signer is None or stamp != self._stamp:
            self._signer = load_signer(self.folder)
            self._stamp = stamp
        return self._signer
