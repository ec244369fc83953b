"""The transparency ledger as the outside world reads it: entries, proofs, the latest
signed checkpoint, a recipient's access log, and the sequencer that `serve` runs.

Who may read an entry's body
----------------------------
This module is the one place that decides it (`_body_visible`). The leaf hash, index,
kind and time of every entry, and every proof, are public: without the body *and* the
salt a leaf cannot be tested against guesses, so they tell nobody anything.

* A body that names a shipment (`access` and `event` entries) is shown only to that
  shipment's verified recipient (a valid recipient cookie for it). Access bodies name
  the data subject's pseudonym, the fields shown and to whom. Event bodies name no
  person, but they carry the tracking number, which is all the public tier asks for:
  publishing them would let anyone walk the log and collect every parcel's number,
  and with it the initials, towns and timeline of every recipient.
* A body that names a data subject but no shipment (consent, erasure) is shown to the
  verified recipient of a shipment of that subject.
* Bodies of `policy_change` and `key_rotation` entries about no subject are public.
* Everything else is withheld: `"body": null, "salt": null, "withheld": true`.

Erased entries have no body or salt left to show to anyone.

Proof sizes
-----------
Proofs are given only for tree sizes up to the latest signed checkpoint. A proof
against an unsigned size would be checked against a root the log has not committed to;
capped at the checkpoint, every inclusion proof is either against the signed root or
against a smaller tree that a consistency proof ties to it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, select

from parcelvault.adapters.db.tables import (
    access_records,
    ledger_entries,
    routes,
    shipments,
    tenants,
)
from parcelvault.domain.errors import FieldProblem, InvalidInput, NotFound
from parcelvault.ledger import log as ledger_log
from parcelvault.ledger.keys import SignerFile, load_signer, retired_verifiers
from parcelvault.ledger.note import NoteError, Signer, format_verifier_key
from parcelvault.services import tracking
from parcelvault.services.periodic import Periodic
from parcelvault.services.staff import REASONS
from parcelvault.services.vault import Vault

log = logging.getLogger("parcelvault.ledger")

MAX_INDEX = 2**63 - 1
"""The largest index or size a request may name (the columns are 64-bit signed)."""
PUBLIC_BODY_KINDS = frozenset({"policy_change", "key_rotation"})
SHIPMENT_KINDS = frozenset({"access", "event"})
ACCESS_LOG_LIMIT = 500
STAFF_ROLE_NAMES = {"support": "support agent", "admin": "administrator", "auditor": "auditor"}


# --- checkpoints and keys -----------------------------------------------------------


def latest_checkpoint(*, vault: Vault) -> ledger_log.SignedCheckpoint:
    with vault.engine.connect() as connection:
        latest = ledger_log.latest_checkpoint(connection)
    if latest is None:
        raise NotFound()
    return latest


def verifier_key(*, vault: Vault) -> str | None:
    """The log's public key as a C2SP verifier key string, or None if the signing key
    is missing or unusable (the reason is logged, never the key)."""
    try:
        signer = load_signer(vault.settings.key_dir)
    except (OSError, NoteError) as exc:
        log.warning("ledger signing key unavailable", extra={"error": type(exc).__name__})
        return None
    return format_verifier_key(signer.verifier)


@dataclass(frozen=True)
class RetiredKey:
    key: str
    first_size: int | None
    last_size: int | None


def retired_keys(*, vault: Vault) -> tuple[RetiredKey, ...]:
    """Earlier signing keys (after `ledger rotate-key`), with the checkpoint sizes each
    signed: what checks the checkpoints signed before a rotation."""
    try:
        found = retired_verifiers(vault.settings.key_dir)
    except (OSError, NoteError) as exc:
        log.warning("retired ledger keys unreadable", extra={"error": type(exc).__name__})
        return ()
    return tuple(RetiredKey(r.key, r.first_size, r.last_size) for r in found)


@dataclass(frozen=True)
class Transparency:
    checkpoint: ledger_log.SignedCheckpoint | None
    verifier_key: str | None
    tree_size: int
    retired_keys: tuple[RetiredKey, ...] = ()


def transparency(*, vault: Vault) -> Transparency:
    with vault.engine.connect() as connection:
        latest = ledger_log.latest_checkpoint(connection)
        tree_size = ledger_log.size(connection)
    return Transparency(latest, verifier_key(vault=vault), tree_size, retired_keys(vault=vault))


# --- entries ------------------------------------------------------------------------


@dataclass(frozen=True)
class EntryView:
    index: int
    kind: str
    leaf_hash: bytes
    created_at: datetime
    body: dict[str, Any] | None
    salt: bytes | None
    erased: bool
    withheld: bool


def verified_shipments(*, vault: Vault, cookies: Mapping[str, str]) -> frozenset[str]:
    """The shipments whose recipient cookie the request carries, valid and unexpired."""
    now = vault.clock()
    found = set()
    for name, token in cookies.items():
        if not name.startswith("pvr_"):
            continue
        shipment_id = tracking.read_token(vault.keyring.session_key, token, now)
        if shipment_id is not None and tracking.cookie_name(shipment_id) == name:
            found.add(shipment_id)
    return frozenset(found)


def _subjects_of(connection: Connection, shipment_ids: frozenset[str]) -> frozenset[str]:
    if not shipment_ids:
        return frozenset()
    query = select(shipments.c.subject_id).where(shipments.c.id.in_(sorted(shipment_ids)))
    return frozenset(connection.execute(query).scalars())


def _body_visible(
    connection: Connection,
    *,
    kind: str,
    body: dict[str, Any],
    verified: frozenset[str],
) -> bool:
    """The disclosure rule for entry bodies; see the module docstring."""
    shipment = body.get("shipment")
    if kind in SHIPMENT_KINDS or shipment is not None:
        return isinstance(shipment, str) and shipment in verified
    subject_id = body.get("subject")
    if subject_id is not None:
        return isinstance(subject_id, str) and subject_id in _subjects_of(connection, verified)
    return kind in PUBLIC_BODY_KINDS


def entry(*, vault: Vault, index: int, cookies: Mapping[str, str]) -> EntryView:
    """One sequenced entry, its body shown only to whom the rule above allows."""
    _require_index("index", index)
    verified = verified_shipments(vault=vault, cookies=cookies)
    with vault.engine.connect() as connection:
        row = connection.execute(
            select(ledger_entries).where(ledger_entries.c.idx == index)
        ).first()
        if row is None:
            raise NotFound()
        erased = row.body is None or row.salt is None
        body: dict[str, Any] | None = None
        if not erased:
            parsed = orjson.loads(row.body)
            if isinstance(parsed, dict) and _body_visible(
                connection,
                kind=row.kind,
                body=parsed,
                verified=verified,
            ):
                body = parsed
    return EntryView(
        index=row.idx,
        kind=row.kind,
        leaf_hash=row.leaf_hash,
        created_at=row.created_at,
        body=body,
        salt=row.salt if body is not None else None,
        erased=erased,
        withheld=not erased and body is None,
    )


# --- proofs -------------------------------------------------------------------------


@dataclass(frozen=True)
class InclusionProof:
    index: int
    size: int
    leaf_hash: bytes
    proof: list[bytes]
    root: bytes


@dataclass(frozen=True)
class ConsistencyProof:
    old_size: int
    new_size: int
    proof: list[bytes]
    old_root: bytes
    new_root: bytes


def _require_index(name: str, value: int) -> None:
    if not 0 <= value <= MAX_INDEX:
        raise InvalidInput([FieldProblem((name,), f"must be between 0 and {MAX_INDEX}")])


def _signed_size(connection: Connection) -> int:
    latest = ledger_log.latest_checkpoint(connection)
    return latest.size if latest is not None else 0


def _beyond_checkpoint(name: str, signed: int) -> FieldProblem:
    if signed == 0:
        return FieldProblem((name,), "no checkpoint has been signed yet")
    return FieldProblem(
        (name,), f"must not exceed the size of the latest signed checkpoint ({signed})"
    )


def inclusion(*, vault: Vault, index: int, size: int) -> InclusionProof:
    """The proof that leaf `index` is in the tree of `size` leaves, and that tree's
    root; `size` may not exceed the latest signed checkpoint."""
    _require_index("index", index)
    _require_index("size", size)
    with vault.engine.connect() as connection:
        signed = _signed_size(connection)
        problems = []
        if size > signed:
            problems.append(_beyond_checkpoint("size", signed))
        elif index >= size:
            problems.append(FieldProblem(("index",), "must be smaller than size"))
        if problems:
            raise InvalidInput(problems)
        leaf = connection.execute(
            select(ledger_entries.c.leaf_hash).where(ledger_entries.c.idx == index)
        ).scalar_one()
        proof = ledger_log.inclusion_proof(connection, index, size)
        root = ledger_log.root(connection, size)
    return InclusionProof(index, size, leaf, proof, root)


def consistency(*, vault: Vault, old_size: int, new_size: int) -> ConsistencyProof:
    """The proof that the tree of `old_size` leaves is a prefix of the tree of
    `new_size`, with both roots; `new_size` may not exceed the latest checkpoint."""
    _require_index("from", old_size)
    _require_index("to", new_size)
    with vault.engine.connect() as connection:
        signed = _signed_size(connection)
        problems = []
        if old_size == 0:
            problems.append(FieldProblem(("from",), "must be at least 1"))
        elif old_size > new_size:
            problems.append(FieldProblem(("from",), "must not exceed to"))
        if new_size > signed:
            problems.append(_beyond_checkpoint("to", signed))
        if problems:
            raise InvalidInput(problems)
        proof = ledger_log.consistency_proof(connection, old_size, new_size)
        old_root = ledger_log.root(connection, old_size)
        new_root = ledger_log.root(connection, new_size)
    return ConsistencyProof(old_size, new_size, proof, old_root, new_root)


# --- the recipient's access log ------------------------------------------------------


@dataclass(frozen=True)
class AccessLine:
    """One disclosure of the recipient's data, as the recipient is told about it.

    Staff appear under a pseudonym that stays the same for the same person (an HMAC
    of their id), never by name; tenants by their name; couriers by their route."""

    at: datetime
    tier: str
    actor: str
    fields: tuple[str, ...]
    field_labels: tuple[str, ...]
    purpose: str
    reason: str | None
    reason_label: str | None
    ledger_index: int | None
    signed_size: int
    """The size of the latest signed checkpoint when the log was read."""

    @property
    def entry_url(self) -> str | None:
        if self.ledger_index is None:
            return None
        return f"/api/v1/ledger/entries/{self.ledger_index}"

    @property
    def proof_url(self) -> str | None:
        """The inclusion proof against the latest signed checkpoint, once it covers
        the entry."""
        if self.ledger_index is None or self.ledger_index >= self.signed_size:
            return None
        return f"/api/v1/ledger/proof/inclusion?index={self.ledger_index}&size={self.signed_size}"


@dataclass(frozen=True)
class AccessLog:
    shipment_id: str
    lines: tuple[AccessLine, ...]
    truncated: bool


def staff_pseudonym(vault: Vault, role: str, staff_id: str) -> str:
    digest = hmac.new(
        vault.keyring.lookup_key, b"staff-pseudonym\x1f" + staff_id.encode(), hashlib.sha256
    ).hexdigest()
    return f"{STAFF_ROLE_NAMES.get(role, role)} #{digest[:4]}"


def _day(value: date) -> str:
    return f"{value.day} {value:%b %Y}"


def _actors(connection: Connection, vault: Vault, rows: list[Any]) -> dict[tuple[str, str], str]:
    """How each (actor kind, actor id) of the rows is named to the recipient."""
    tenant_ids = {int(r.actor_id) for r in rows if r.actor_kind == "tenant" and r.actor_id}
    route_ids = {r.actor_id for r in rows if r.actor_kind == "route" and r.actor_id}
    names: dict[int, str] = {}
    if tenant_ids:
        query = select(tenants.c.id, tenants.c.name).where(tenants.c.id.in_(sorted(tenant_ids)))
        names = {row.id: row.name for row in connection.execute(query)}
    route_names: dict[str, str] = {}
    if route_ids:
        query = (
            select(routes.c.id, routes.c.route_date, tenants.c.name)
            .join(tenants, tenants.c.id == routes.c.tenant_id)
            .where(routes.c.id.in_(sorted(route_ids)))
        )
        route_names = {
            row.id: f"courier on route of {_day(row.route_date)} for {row.name}"
            for row in connection.execute(query)
        }
    named: dict[tuple[str, str], str] = {}
    for row in rows:
        key = (row.actor_kind, row.actor_id or "")
        if key in named:
            continue
        if row.actor_kind == "staff" and row.actor_id:
            named[key] = staff_pseudonym(vault, row.tier, row.actor_id)
        elif row.actor_kind == "tenant" and row.actor_id:
            named[key] = names.get(int(row.actor_id), f"a {row.tier}")
        elif row.actor_kind == "route" and row.actor_id:
            named[key] = route_names.get(row.actor_id, "a courier")
        else:
            named[key] = row.tier
    return named


def access_log(*, vault: Vault, resolved: tracking.Resolved) -> AccessLog:
    """Who was shown this shipment's personal data, newest first. Only for its
    verified recipient: for anyone else the shipment does not exist."""
    if resolved.viewer.tier != "recipient":
        raise NotFound()
    policy = vault.policy
    with vault.engine.connect() as connection:
        rows = list(
            connection.execute(
                select(access_records)
                .where(access_records.c.shipment_id == resolved.shipment_id)
                .order_by(access_records.c.at.desc(), access_records.c.id.desc())
                .limit(ACCESS_LOG_LIMIT + 1)
            ).all()
        )
        truncated = len(rows) > ACCESS_LOG_LIMIT
        rows = rows[:ACCESS_LOG_LIMIT]
        signed = _signed_size(connection)
        actors = _actors(connection, vault, rows)
    lines = []
    for row in rows:
        fields = tuple(name for name in row.fields.split(",") if name)
        lines.append(
            AccessLine(
                at=row.at,
                tier=row.tier,
                actor=actors[row.actor_kind, row.actor_id or ""],
                fields=fields,
                field_labels=tuple(
                    policy.fields[name].label if name in policy.fields else name for name in fields
                ),
                purpose=row.purpose,
                reason=row.reason,
                reason_label=REASONS.get(row.reason) if row.reason else None,
                ledger_index=row.ledger_index,
                signed_size=signed,
            )
        )
    return AccessLog(resolved.shipment_id, tuple(lines), truncated)


def recipient_access_log(
    *, vault: Vault, raw_number: str, cookies: Mapping[str, str], tenant: str | None = None
) -> AccessLog:
    resolved = tracking.resolve(vault=vault, raw_number=raw_number, cookies=cookies, tenant=tenant)
    return access_log(vault=vault, resolved=resolved)


# --- the background sequencer ---------------------------------------------------------


PERIOD_SECONDS = 0.25
"""How often the sequencer looks for waiting entries. Frequent short appends hold the
database's write lock for a shorter time each than one long append a second, so API
writes that wait for it wait less (the batch API measured about a twentieth faster
than with 1 s); an idle look is one read of the partial indexes, without the lock."""


class Sequencer(Periodic):
    """Appends waiting entries to the log every `period` seconds and signs a checkpoint
    when the tree has grown and `checkpoint_interval_seconds` have passed since the
    latest one (by its stored time, so several processes together sign no more often).

    Any number of processes may run one: the log takes a lock for each append and
    each checkpoint. Errors are logged by type (no messages: they may quote data)
    and the next round tries again."""

    name = "ledger-sequencer"
    failure = "ledger sequencing failed"
    stall_seconds = 300.0  # an append of 50,000 entries takes about a second

    def __init__(self, vault: Vault, period: float = PERIOD_SECONDS) -> None:
        super().__init__(period)
        self.vault = vault
        self._signer_file = SignerFile(vault.settings.key_dir)
        self._signer_missing_logged = False

    def setup(self) -> None:
        try:
            with self.vault.writing():
                ledger_log.record_policy(
                    self.vault.engine, digest=self.vault.policy.digest, now=self.vault.clock()
                )
        except Exception as exc:  # the rounds still run; the next start tries again
            log.error("recording the policy failed", extra={"error": type(exc).__name__})

    def tick(self) -> None:
        vault = self.vault
        appended = ledger_log.sequence(vault.engine, now=vault.clock(), turn=vault.writing())
        if appended:
            log.debug("ledger entries sequenced", extra={"count": appended})
        if self._checkpoint_due():
            signer = self._load_signer()
            if signer is not None:
                with vault.writing():
                    signed = ledger_log.checkpoint(vault.engine, signer=signer, now=vault.clock())
                log.info("ledger checkpoint signed", extra={"size": signed.size})

    def _checkpoint_due(self) -> bool:
        with self.vault.engine.connect() as connection:
            tree_size = ledger_log.size(connection)
            latest = ledger_log.latest_checkpoint(connection)
        if latest is None:
            return tree_size > 0
        interval = timedelta(seconds=self.vault.settings.checkpoint_interval_seconds)
        due: bool = self.vault.clock() - latest.created_at >= interval
        return tree_size > latest.size and due

    def _load_signer(self) -> Signer | None:
        """The signing key, read again when its file changes (`ledger rotate-key`)."""
        try:
            signer = self._signer_file.get()
        except (OSError, NoteError) as exc:
            if not self._signer_missing_logged:
                log.warning(
                    "ledger signing key unavailable; no checkpoints are signed",
                    extra={"error": type(exc).__name__},
                )
                self._signer_missing_logged = True
            return None
        self._signer_missing_logged = False
        return signer
