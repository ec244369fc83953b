"""The log's checkpoint signing key: `ledger-signer.key` in the key folder, a C2SP
signer key string (`PRIVATE+KEY+<origin>+<key id>+<base64 seed>`), mode 0600. Its
name is the log's origin, the first line of every checkpoint."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from parcelvault.ledger.note import Signer, format_signer_key, generate_signer, parse_signer_key

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
