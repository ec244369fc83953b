"""C2SP signed notes (c2sp.org/signed-note) with Ed25519, and tlog-checkpoint bodies.

Signed note format::

    <text: UTF-8, no control characters but newline, ending in a newline>
    <blank line>
    — <key name> <base64(4-byte big-endian key ID || signature)>
    ...

The text is separated from the signatures by the *last* blank line. Key names are
non-empty and contain neither Unicode spaces nor "+". For Ed25519 (signature type 0x01)
the signature covers the UTF-8 text and::

    key ID = SHA-256(name || 0x0A || 0x01 || 32-byte public key)[:4]

Key strings (as in golang.org/x/mod/sumdb/note)::

    verifier: <name>+<8 hex digits key ID>+base64(0x01 || public key)
    signer:   PRIVATE+KEY+<name>+<8 hex digits key ID>+base64(0x01 || 32-byte seed)

Checkpoint body (c2sp.org/tlog-checkpoint)::

    <origin>\\n<decimal tree size>\\n<base64 root hash>\\n[<extension line>\\n ...]
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "ED25519_TYPE",
    "MAX_SIGNATURES",
    "Checkpoint",
    "NoteError",
    "Signer",
    "Verifier",
    "ed25519_key_id",
    "format_checkpoint",
    "format_signer_key",
    "format_verifier_key",
    "generate_signer",
    "open_note",
    "parse_checkpoint",
    "parse_signer_key",
    "parse_verifier_key",
    "sign_note",
]

ED25519_TYPE = 0x01
MAX_SIGNATURES = 100  # the spec requires accepting at least 16
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"
_KEY_SIZE = 32
_ROOT_SIZE = 32
_MAX_TREE_SIZE = 2**64 - 1
_KEY_ID_PATTERN = re.compile(r"[0-9a-f]{8}")
_TREE_SIZE_PATTERN = re.compile(r"0|[1-9][0-9]*")


class NoteError(ValueError):
    """A note, key string or checkpoint is malformed or does not verify."""


# --------------------------------------------------------------------------- keys


def ed25519_key_id(name: str, public_key: bytes) -> int:
    """SHA-256(name || 0x0A || 0x01 || public key)[:4], as a big-endian uint32."""
    material = name.encode("utf-8") + b"\n" + bytes([ED25519_TYPE]) + public_key
    return int.from_bytes(hashlib.sha256(material).digest()[:4], "big")


@dataclass(frozen=True)
class Verifier:
    """An Ed25519 public key under a name; identified in notes by (name, key_id)."""

    name: str
    public_key: bytes
    key_id: int = field(init=False)

    def __post_init__(self) -> None:
        _require_key_name(self.name)
        if len(self.public_key) != _KEY_SIZE:
            raise NoteError(f"Ed25519 public key must be {_KEY_SIZE} bytes")
        object.__setattr__(self, "key_id", ed25519_key_id(self.name, self.public_key))

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True, repr=False)
class Signer:
    """An Ed25519 private key (32-byte seed) under a name. The repr hides the seed."""

    name: str
    seed: bytes

    def __post_init__(self) -> None:
        _require_key_name(self.name)
        if len(self.seed) != _KEY_SIZE:
            raise NoteError(f"Ed25519 seed must be {_KEY_SIZE} bytes")

    def __repr__(self) -> str:
        return f"Signer(name={self.name!r}, key_id={self.key_id:08x})"

    @property
    def verifier(self) -> Verifier:
        public = self._private_key().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return Verifier(self.name, public)

    @property
    def key_id(self) -> int:
        return self.verifier.key_id

    def sign(self, message: bytes) -> bytes:
        return self._private_key().sign(message)

    def _private_key(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)


def generate_signer(name: str) -> Signer:
    """A new random Ed25519 signer; see :func:`format_signer_key` to store it."""
    seed = Ed25519PrivateKey.generate().private_bytes_raw()
    return Signer(name, seed)


def format_verifier_key(verifier: Verifier) -> str:
    payload = base64.b64encode(bytes([ED25519_TYPE]) + verifier.public_key).decode("ascii")
    return f"{verifier.name}+{verifier.key_id:08x}+{payload}"


def format_signer_key(signer: Signer) -> str:
    payload = base64.b64encode(bytes([ED25519_TYPE]) + signer.seed).decode("ascii")
    return f"{PRIVATE_KEY_PREFIX}{signer.name}+{signer.key_id:08x}+{payload}"


def parse_verifier_key(text: str) -> Verifier:
    """Parse ``name+keyid+base64(0x01 || public key)``, checking the key ID matches."""
    name, key_id, key = _split_key_string(text, "verifier")
    verifier = Verifier(name, key)
    _require_matching_id(verifier.key_id, key_id, "verifier")
    return verifier


def parse_signer_key(text: str) -> Signer:
    """Parse ``PRIVATE+KEY+name+keyid+base64(0x01 || seed)``, checking the key ID matches
    the public key derived from the seed."""
    if not text.startswith(PRIVATE_KEY_PREFIX):
        raise NoteError(f"signer key must start with {PRIVATE_KEY_PREFIX!r}")
    name, key_id, seed = _split_key_string(text.removeprefix(PRIVATE_KEY_PREFIX), "signer")
    signer = Signer(name, seed)
    _require_matching_id(signer.key_id, key_id, "signer")
    return signer


def _split_key_string(text: str, kind: str) -> tuple[str, int, bytes]:
    parts = text.split("+", 2)  # names have no "+", base64 may
    if len(parts) != 3:
        raise NoteError(f"{kind} key must look like name+keyid+base64key")
    name, key_id, payload = parts
    _require_key_name(name)
    if not _KEY_ID_PATTERN.fullmatch(key_id):
        raise NoteError(f"{kind} key ID must be 8 lowercase hex digits, got {key_id!r}")
    raw = _strict_b64decode(payload, f"{kind} key")
    if len(raw) != 1 + _KEY_SIZE or raw[0] != ED25519_TYPE:
        raise NoteError(f"{kind} key must be 0x01 followed by {_KEY_SIZE} bytes (Ed25519)")
    return name, int(key_id, 16), raw[1:]


def _require_matching_id(computed: int, claimed: int, kind: str) -> None:
    if computed != claimed:
        raise NoteError(
            f"{kind} key ID {claimed:08x} does not match the key (expected {computed:08x})"
        )


def _require_key_name(name: str) -> None:
    if not name or "+" in name or any(c.isspace() for c in name):
        raise NoteError(f"invalid key name {name!r}: must be non-empty, without spaces or '+'")
    _require_note_characters(name, "key name")


# --------------------------------------------------------------------------- notes


def _require_note_characters(text: str, what: str) -> None:
    """Valid UTF-8 (no lone surrogates) and no ASCII control character except newline."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise NoteError(f"{what} is not valid UTF-8") from error
    for char in text:
        if char < "\x20" and char != "\n":
            raise NoteError(f"{what} contains control character {char!r}")


def _require_note_text(text: str) -> None:
    _require_note_characters(text, "note text")
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")


def sign_note(text: str, *signers: Signer) -> str:
    """The signed note: ``text``, a blank line and one signature line per signer."""
    _require_note_text(text)
    if not signers:
        raise NoteError("sign_note needs at least one signer")
    message = text.encode("utf-8")
    lines = []
    for signer in signers:
        blob = signer.key_id.to_bytes(4, "big") + signer.sign(message)
        lines.append(f"{SIGNATURE_PREFIX}{signer.name} {base64.b64encode(blob).decode('ascii')}\n")
    return text + "\n" + "".join(lines)


@dataclass(frozen=True)
class _SignatureLine:
    name: str
    key_id: int
    signature: bytes


def _split_note(note: str) -> tuple[str, list[_SignatureLine]]:
    _require_note_characters(note, "note")
    separator = note.rfind("\n\n")
    if separator < 0:
        raise NoteError("note has no blank line before its signatures")
    text, block = note[: separator + 1], note[separator + 2 :]
    if not block or not block.endswith("\n"):
        raise NoteError("note must end with at least one newline-terminated signature line")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has more than {MAX_SIGNATURES} signatures")
    return text, [_parse_signature_line(line) for line in lines]


def _parse_signature_line(line: str) -> _SignatureLine:
    if not line.startswith(SIGNATURE_PREFIX):
        raise NoteError(f"signature line must start with an em dash and a space: {line!r}")
    name, space, encoded = line.removeprefix(SIGNATURE_PREFIX).partition(" ")
    if not space:
        raise NoteError(f"signature line needs a key name and a signature: {line!r}")
    _require_key_name(name)
    blob = _strict_b64decode(encoded, f"signature of {name}")
    if len(blob) < 5:
        raise NoteError(f"signature of {name} is too short")
    return _SignatureLine(name, int.from_bytes(blob[:4], "big"), blob[4:])


def open_note(note: str | bytes, verifiers: Iterable[Verifier]) -> tuple[str, list[str]]:
    """Verify a signed note; return its text and the names of the keys that signed it.

    Following the spec: signatures whose (name, key ID) matches no given verifier are
    ignored; a signature from a known key that fails to verify rejects the whole note;
    the note is rejected unless at least one known key's signature verifies.
    """
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as error:
            raise NoteError("note is not valid UTF-8") from error
    known = _index_verifiers(verifiers)
    text, signatures = _split_note(note)
    message = text.encode("utf-8")
    signed_by: list[str] = []
    unknown: list[str] = []
    for line in signatures:
        verifier = known.get((line.name, line.key_id))
        if verifier is None:
            unknown.append(f"{line.name}+{line.key_id:08x}")
            continue
        if not verifier.verify(message, line.signature):
            raise NoteError(f"invalid signature from known key {line.name}+{line.key_id:08x}")
        if line.name not in signed_by:
            signed_by.append(line.name)
    if not signed_by:
        raise NoteError(
            "note has no signature from a known key"
            + (f" (unknown keys: {', '.join(unknown)})" if unknown else "")
        )
    return text, signed_by


def _index_verifiers(verifiers: Iterable[Verifier]) -> dict[tuple[str, int], Verifier]:
    known: dict[tuple[str, int], Verifier] = {}
    for verifier in verifiers:
        key = (verifier.name, verifier.key_id)
        if known.setdefault(key, verifier) != verifier:
            raise NoteError(f"two different verifier keys share {verifier.name}+{key[1]:08x}")
    return known


def _strict_b64decode(text: str, what: str) -> bytes:
    """Standard base64 with padding; rejects other characters and non-canonical forms."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise NoteError(f"{what} is not valid base64") from error
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteError(f"{what} is not canonical base64")
    return raw


# --------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()


def format_checkpoint(origin: str, size: int, root: bytes, extensions: Iterable[str] = ()) -> str:
    """The checkpoint note text; validated by the same rules as :func:`parse_checkpoint`."""
    lines = [origin, str(size), base64.b64encode(root).decode("ascii"), *extensions]
    if any("\n" in line for line in lines):
        raise NoteError("checkpoint lines must not contain newlines")
    text = "".join(f"{line}\n" for line in lines)
    parse_checkpoint(text)
    return text


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse checkpoint note text (the part before the signatures)."""
    _require_note_text(text)
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise NoteError("checkpoint needs an origin, a tree size and a root hash")
    origin, size_text, root_text, *extensions = lines
    if not origin:
        raise NoteError("checkpoint origin must not be empty")
    if not _TREE_SIZE_PATTERN.fullmatch(size_text):
        raise NoteError(
            f"checkpoint tree size must be decimal without leading zeros: {size_text!r}"
        )
    size = int(size_text)
    if size > _MAX_TREE_SIZE:
        raise NoteError("checkpoint tree size does not fit in 64 bits")
    root = _strict_b64decode(root_text, "checkpoint root hash")
    if len(root) != _ROOT_SIZE:
        raise NoteError(f"checkpoint root hash must be {_ROOT_SIZE} bytes, got {len(root)}")
    if any(not line for line in extensions):
        raise NoteError("checkpoint extension lines must not be empty")
    return Checkpoint(origin, size, root, tuple(extensions))
