"""Offline proof bundles: one ledger entry, its inclusion proof and a signed checkpoint.

A bundle is a c2sp.org/tlog-proof@v1 proof whose "extra" line carries the entry itself,
so that the verifier recomputes the leaf hash from the content instead of trusting it::

    c2sp.org/tlog-proof@v1
    extra <base64 of the entry JSON>
    index <leaf index, decimal without leading zeros>
    <base64 SHA-256 proof hash, from the leaf's sibling up to the root's child>
    ...
    <empty line>
    <the checkpoint signed note, verbatim>

The entry JSON is ``{"body":"<base64>","kind":"<kind>","salt":"<base64>"}`` (sorted keys,
no spaces; body and salt in standard padded base64). The extra data is not signed: it is
trusted only because the leaf hash recomputed from it is proven to be in the tree whose
root the log signed. `parcelvault.ledger.verify` checks the same format with no
dependency on this package.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from sqlalchemy import Connection, select

from parcelvault.adapters.db.tables import events, ledger_entries, tenants
from parcelvault.ledger import log, merkle
from parcelvault.ledger.note import NoteError, Verifier, open_note, parse_checkpoint

PROOF_HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES = 64
MAX_BUNDLE_BYTES = 1024 * 1024
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


class BundleError(ValueError):
    """A bundle cannot be made, is malformed, or does not verify."""


@dataclass(frozen=True)
class Entry:
    kind: str
    salt: bytes
    body: bytes

    def leaf_hash(self) -> bytes:
        return log.entry_leaf_hash(self.kind, self.salt, self.body)


@dataclass(frozen=True)
class Bundle:
    index: int
    proof: tuple[bytes, ...]
    checkpoint: str
    entry: Entry


@dataclass(frozen=True)
class Verified:
    index: int
    kind: str
    origin: str
    size: int
    root: bytes


# --------------------------------------------------------------------------- format


def format_bundle(bundle: Bundle) -> str:
    extra = orjson.dumps(
        {
            "body": base64.b64encode(bundle.entry.body).decode("ascii"),
            "kind": bundle.entry.kind,
            "salt": base64.b64encode(bundle.entry.salt).decode("ascii"),
        },
        option=orjson.OPT_SORT_KEYS,
    )
    lines = [
        PROOF_HEADER,
        f"extra {base64.b64encode(extra).decode('ascii')}",
        f"index {bundle.index}",
        *(base64.b64encode(item).decode("ascii") for item in bundle.proof),
    ]
    return "\n".join(lines) + "\n\n" + bundle.checkpoint


def parse_bundle(text: str) -> Bundle:
    """Parse a bundle; checks its form only (see :func:`verify_bundle`)."""
    head, blank, note = text.partition("\n\n")
    if not blank or not note:
        raise BundleError("bundle has no empty line followed by a checkpoint")
    lines = head.split("\n")
    if lines[0] != PROOF_HEADER:
        raise BundleError(f"bundle must start with the line {PROOF_HEADER}")
    if len(lines) < 2 or not lines[1].startswith("extra "):
        raise BundleError("bundle has no 'extra' line, so it does not carry the entry")
    entry = _parse_entry(_b64(lines[1].removeprefix("extra "), "extra data"))
    if len(lines) < 3 or not lines[2].startswith("index "):
        raise BundleError("bundle has no 'index' line after the 'extra' line")
    index_text = lines[2].removeprefix("index ")
    if not _DECIMAL.fullmatch(index_text):
        raise BundleError(f"bundle index must be a decimal number: {index_text!r}")
    hashes = lines[3:]
    if len(hashes) > MAX_PROOF_HASHES:
        raise BundleError(f"inclusion proof has more than {MAX_PROOF_HASHES} hashes")
    proof = []
    for number, line in enumerate(hashes, start=1):
        value = _b64(line, f"proof hash {number}")
        if len(value) != merkle.HASH_SIZE:
            raise BundleError(f"proof hash {number} is not {merkle.HASH_SIZE} bytes")
        proof.append(value)
    return Bundle(int(index_text), tuple(proof), note, entry)


def _parse_entry(raw: bytes) -> Entry:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as error:
        raise BundleError("extra data is not JSON") from error
    if not isinstance(data, dict) or sorted(data) != ["body", "kind", "salt"]:
        raise BundleError("extra data must be a JSON object with body, kind and salt")
    if not all(isinstance(value, str) for value in data.values()):
        raise BundleError("body, kind and salt in the extra data must be strings")
    if data["kind"] not in log.KINDS:
        raise BundleError(f"unknown entry kind {data['kind']!r}")
    salt = _b64(data["salt"], "entry salt")
    if len(salt) != log.SALT_BYTES:
        raise BundleError(f"entry salt must be {log.SALT_BYTES} bytes")
    return Entry(data["kind"], salt, _b64(data["body"], "entry body"))


def _b64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise BundleError(f"{what} is not valid base64") from error
    if base64.b64encode(raw).decode("ascii") != text:
        raise BundleError(f"{what} is not canonical base64")
    return raw


# --------------------------------------------------------------------------- verify


def verify_bundle(text: str | bytes, verifiers: Sequence[Verifier]) -> Verified:
    """Check a bundle with no database: the checkpoint is signed by one of `verifiers`
    named after its origin, and the leaf recomputed from the entry is in its tree."""
    if isinstance(text, bytes):
        if len(text) > MAX_BUNDLE_BYTES:
            raise BundleError(f"bundle is larger than {MAX_BUNDLE_BYTES} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            raise BundleError("bundle is not UTF-8 text") from error
    bundle = parse_bundle(text)
    try:
        note_text, signed_by = open_note(bundle.checkpoint, verifiers)
        checkpoint = parse_checkpoint(note_text)
    except NoteError as error:
        raise BundleError(f"checkpoint: {error}") from error
    if checkpoint.origin not in signed_by:
        raise BundleError(f"checkpoint of {checkpoint.origin} is not signed by a key of that name")
    try:
        merkle.verify_inclusion(
            bundle.entry.leaf_hash(), bundle.index, checkpoint.size, bundle.proof, checkpoint.root
        )
    except merkle.ProofError as error:
        raise BundleError(
            f"entry {bundle.index} is not proven in the checkpoint: {error}"
        ) from error
    return Verified(
        bundle.index, bundle.entry.kind, checkpoint.origin, checkpoint.size, checkpoint.root
    )


# --------------------------------------------------------------------------- make


def make_bundle(connection: Connection, index: int) -> Bundle:
    """The bundle for entry `index` against the latest checkpoint, which must cover it."""
    row = connection.execute(select(ledger_entries).where(ledger_entries.c.idx == index)).first()
    if row is None:
        raise BundleError(f"the log has no entry {index}")
    if row.body is None or row.salt is None:
        raise BundleError(f"entry {index} was erased: its content can no longer be proven")
    latest = log.latest_checkpoint(connection)
    if latest is None or latest.size <= index:
        covered = 0 if latest is None else latest.size
        raise BundleError(
            f"entry {index} is not covered by a checkpoint yet (the latest covers {covered} "
            "entries); run `parcelvault ledger checkpoint` first"
        )
    entry = Entry(row.kind, row.salt, row.body)
    if entry.leaf_hash() != row.leaf_hash:
        raise BundleError(
            f"entry {index} does not hash to its leaf; run `parcelvault ledger verify`"
        )
    try:
        proof = log.inclusion_proof(connection, index, latest.size)
        merkle.verify_inclusion(row.leaf_hash, index, latest.size, proof, latest.root)
    except (log.LedgerError, merkle.ProofError) as error:
        raise BundleError(
            f"the stored tree does not prove entry {index} ({error}); "
            "run `parcelvault ledger verify`"
        ) from error
    return Bundle(index, tuple(proof), latest.note, entry)


def event_index(connection: Connection, *, tenant: str, event_id: str) -> int:
    """The log index of a tenant's scan event."""
    tenant_id = connection.execute(select(tenants.c.id).where(tenants.c.name == tenant)).scalar()
    if tenant_id is None:
        raise BundleError(f"there is no tenant named {tenant!r}")
    found = connection.execute(
        select(events.c.ledger_index).where(
            events.c.tenant_id == tenant_id, events.c.event_id == event_id
        )
    ).scalar()
    if found is None:
        raise BundleError(
            f"event {event_id!r} of {tenant} is not in the log; if it exists, "
            "run `parcelvault ledger sequence` first"
        )
    return int(found)


def require_kind(connection: Connection, index: int, kind: str) -> None:
    found = connection.execute(
        select(ledger_entries.c.kind).where(ledger_entries.c.idx == index)
    ).scalar()
    if found is None:
        raise BundleError(f"the log has no entry {index}")
    if found != kind:
        raise BundleError(f"entry {index} is not of the kind {kind} (it is {found})")
