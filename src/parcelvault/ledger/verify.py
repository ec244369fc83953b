"""Standalone verifier for parcelvault transparency log proof bundles.

Needs only the Python standard library and the `cryptography` package, and nothing else
of parcelvault: copy this one file and run

    python verify.py BUNDLE --key VERIFIER_KEY          (or: python -m parcelvault.ledger.verify)

It prints "OK: ..." and exits 0 when the bundle proves its entry, or prints the reason
and exits 1. VERIFIER_KEY is the log's public key, `<name>+<key id>+<base64 key>`, as
printed by `parcelvault ledger key` and shown on /transparency.

Bundle (c2sp.org/tlog-proof@v1; the "extra" line carries the entry)::

    c2sp.org/tlog-proof@v1
    extra <base64 of {"body":"<base64>","kind":"<kind>","salt":"<base64>"}>
    index <leaf index>
    <base64 inclusion proof hash, one per line, from the leaf's sibling up>
    <empty line>
    <checkpoint: origin, tree size, base64 root hash, then an empty line and
     signature lines "— <key name> <base64(4-byte key id || Ed25519 signature)>">

Checks: (1) the checkpoint carries a valid Ed25519 signature by the given key, whose name
is the checkpoint's origin (C2SP signed-note and tlog-checkpoint); (2) the leaf hash,
recomputed from the entry as

    SHA-256(0x00 || "parcelvault-ledger/v1\\n" || kind || "\\n" || SHA-256(salt || body))

is at the given index of the signed tree (RFC 9162 section 2.1.3.2).
"""

import argparse
import base64
import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PROOF_HEADER = "c2sp.org/tlog-proof@v1"
LEAF_PREFIX = b"parcelvault-ledger/v1\n"
SIGNATURE_PREFIX = "\u2014 "  # an em dash and a space
ED25519 = 1
SALT_BYTES = 16
HASH_BYTES = 32
MAX_PROOF_HASHES = 64
MAX_SIGNATURES = 100
MAX_TREE_SIZE = 2**64 - 1
KIND_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyz_")
DIGITS = frozenset("0123456789")


class VerificationError(Exception):
    """The bundle, the key or the proof is malformed or does not verify."""


def b64decode(text: str, what: str) -> bytes:
    """Standard padded base64, rejecting any other character or non-canonical form."""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as error:  # binascii.Error is a ValueError
        raise VerificationError(f"{what} is not valid base64") from error
    if base64.b64encode(raw).decode("ascii") != text:
        raise VerificationError(f"{what} is not canonical base64")
    return raw


def check_key_name(name: str) -> None:
    if not name or "+" in name or any(char.isspace() or char < " " for char in name):
        raise VerificationError(f"invalid key name {name!r}")


def parse_decimal(text: str, what: str) -> int:
    if not text or not set(text) <= DIGITS or (text[0] == "0" and text != "0"):
        raise VerificationError(f"{what} must be decimal without leading zeros: {text!r}")
    return int(text)


# --------------------------------------------------------------------------- the key


def key_id(name: str, public_key: bytes) -> bytes:
    """The C2SP key ID: the first 4 bytes of SHA-256(name || 0x0A || 0x01 || public key)."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ED25519]) + public_key).digest()[:4]


def parse_key(text: str) -> tuple[str, bytes, bytes]:
    """`name+keyid+base64(0x01 || 32-byte Ed25519 public key)` -> (name, key id, key)."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise VerificationError("the key must look like name+keyid+base64key")
    name, id_text, payload = parts
    check_key_name(name)
    if len(id_text) != 8 or not set(id_text) <= set("0123456789abcdef"):
        raise VerificationError("the key ID must be 8 lowercase hex digits")
    raw = b64decode(payload, "the key")
    if len(raw) != 33 or raw[0] != ED25519:
        raise VerificationError("the key must be 0x01 followed by a 32-byte Ed25519 key")
    public_key = raw[1:]
    if key_id(name, public_key) != bytes.fromhex(id_text):
        raise VerificationError("the key ID does not match the key")
    return name, bytes.fromhex(id_text), public_key


# --------------------------------------------------------------------------- the signed note


def open_note(note: str, key: tuple[str, bytes, bytes]) -> str:
    """Verify a C2SP signed note against one key; return its text (signatures removed).

    Signatures by other keys are ignored; a signature by this key (same name and key ID)
    that does not verify rejects the note, and so does a note this key did not sign.
    """
    name, wanted_id, public_key = key
    if any(char < " " and char != "\n" for char in note):
        raise VerificationError("the checkpoint contains a control character")
    separator = note.rfind("\n\n")
    if separator < 0:
        raise VerificationError("the checkpoint has no empty line before its signatures")
    text, block = note[: separator + 1], note[separator + 2 :]
    if not block.endswith("\n"):
        raise VerificationError("the checkpoint must end with newline-terminated signatures")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise VerificationError(f"the checkpoint has more than {MAX_SIGNATURES} signatures")
    verified = False
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise VerificationError(f"signature line must start with an em dash: {line!r}")
        signer, space, encoded = line.removeprefix(SIGNATURE_PREFIX).partition(" ")
        if not space:
            raise VerificationError(f"signature line needs a name and a signature: {line!r}")
        check_key_name(signer)
        blob = b64decode(encoded, f"the signature of {signer}")
        if len(blob) < 5:
            raise VerificationError(f"the signature of {signer} is too short")
        if signer != name or blob[:4] != wanted_id:
            continue  # another key's signature, e.g. a witness's
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(blob[4:], text.encode("utf-8"))
        except InvalidSignature as error:
            raise VerificationError(f"the signature of {name} does not verify") from error
        verified = True
    if not verified:
        raise VerificationError(f"the checkpoint is not signed by the key {name}+{wanted_id.hex()}")
    return text


def parse_checkpoint(text: str) -> tuple[str, int, bytes]:
    """c2sp.org/tlog-checkpoint: origin, tree size, base64 root, extension lines."""
    if not text.endswith("\n"):
        raise VerificationError("the checkpoint text must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise VerificationError("the checkpoint needs an origin, a tree size and a root hash")
    origin, size_text, root_text, *extensions = lines
    if not origin:
        raise VerificationError("the checkpoint origin is empty")
    size = parse_decimal(size_text, "the checkpoint tree size")
    if size > MAX_TREE_SIZE:
        raise VerificationError("the checkpoint tree size does not fit in 64 bits")
    root = b64decode(root_text, "the checkpoint root hash")
    if len(root) != HASH_BYTES:
        raise VerificationError(f"the checkpoint root hash is not {HASH_BYTES} bytes")
    if any(not line for line in extensions):
        raise VerificationError("the checkpoint has an empty extension line")
    return origin, size, root


# --------------------------------------------------------------------------- the bundle


def parse_bundle(text: str) -> tuple[str, bytes, bytes, int, list[bytes], str]:
    """-> (kind, salt, body, index, proof hashes, checkpoint note)."""
    head, blank, note = text.partition("\n\n")
    if not blank or not note:
        raise VerificationError("the bundle has no empty line followed by a checkpoint")
    lines = head.split("\n")
    if lines[0] != PROOF_HEADER:
        raise VerificationError(f"the bundle must start with the line {PROOF_HEADER}")
    if len(lines) < 2 or not lines[1].startswith("extra "):
        raise VerificationError("the bundle has no 'extra' line, so it does not carry the entry")
    try:
        entry = json.loads(b64decode(lines[1].removeprefix("extra "), "the extra data"))
    except ValueError as error:  # also UnicodeDecodeError
        raise VerificationError("the extra data is not JSON") from error
    if not isinstance(entry, dict) or sorted(entry) != ["body", "kind", "salt"]:
        raise VerificationError("the extra data must be a JSON object with body, kind and salt")
    if not all(isinstance(value, str) for value in entry.values()):
        raise VerificationError("body, kind and salt must be strings")
    kind = entry["kind"]
    if not kind or not set(kind) <= KIND_LETTERS:
        raise VerificationError(f"invalid entry kind {kind!r}")
    salt = b64decode(entry["salt"], "the entry salt")
    if len(salt) != SALT_BYTES:
        raise VerificationError(f"the entry salt is not {SALT_BYTES} bytes")
    body = b64decode(entry["body"], "the entry body")
    if len(lines) < 3 or not lines[2].startswith("index "):
        raise VerificationError("the bundle has no 'index' line after the 'extra' line")
    index = parse_decimal(lines[2].removeprefix("index "), "the index")
    if len(lines) - 3 > MAX_PROOF_HASHES:
        raise VerificationError(f"the inclusion proof has more than {MAX_PROOF_HASHES} hashes")
    proof = [b64decode(line, f"proof hash {n}") for n, line in enumerate(lines[3:], start=1)]
    if any(len(item) != HASH_BYTES for item in proof):
        raise VerificationError(f"a proof hash is not {HASH_BYTES} bytes")
    return kind, salt, body, index, proof, note


def leaf_hash(kind: str, salt: bytes, body: bytes) -> bytes:
    data = LEAF_PREFIX + kind.encode("utf-8") + b"\n" + hashlib.sha256(salt + body).digest()
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


# --------------------------------------------------------------------------- the proof


def verify_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> None:
    """RFC 9162 section 2.1.3.2: is the leaf hash at `index` of the tree of `size` leaves
    whose root is `root`? Raises VerificationError if not."""
    if not 0 <= index < size:
        raise VerificationError(f"index {index} is not inside a tree of size {size}")
    if len(leaf) != HASH_BYTES or any(len(item) != HASH_BYTES for item in proof):
        raise VerificationError(f"hashes must be {HASH_BYTES} bytes")
    fn, sn, result = index, size - 1, leaf
    for element in proof:
        if sn == 0:
            raise VerificationError("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            result = node_hash(element, result)
            while fn & 1 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            result = node_hash(result, element)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise VerificationError("the inclusion proof is too short")
    if result != root:
        raise VerificationError("the inclusion proof does not lead to the signed root")


def verify_bundle(text: str, key_text: str) -> str:
    """Verify a bundle against the log's verifier key; return a one-line summary."""
    key = parse_key(key_text)
    kind, salt, body, index, proof, note = parse_bundle(text)
    origin, size, root = parse_checkpoint(open_note(note, key))
    if origin != key[0]:
        raise VerificationError(f"the checkpoint is for the log {origin}, not {key[0]}")
    verify_inclusion(leaf_hash(kind, salt, body), index, size, proof, root)
    return f"entry {index} ({kind}) is in the log {origin} of {size} entries"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Verify a parcelvault ledger proof bundle.")
    parser.add_argument("bundle", help="the bundle file, or - for standard input")
    parser.add_argument("--key", required=True, help="the log's verifier key")
    args = parser.parse_args(argv)
    try:
        if args.bundle == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(args.bundle, "rb") as handle:
                raw = handle.read(1024 * 1024 + 1)
        if len(raw) > 1024 * 1024:
            raise VerificationError("the bundle is larger than 1 MiB")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise VerificationError("the bundle is not UTF-8 text") from error
        summary = verify_bundle(text, args.key)
    except OSError as error:
        print(f"FAILED: cannot read {args.bundle}: {error.strerror}")
        return 1
    except VerificationError as error:
        print(f"FAILED: {error}")
        return 1
    print(f"OK: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
